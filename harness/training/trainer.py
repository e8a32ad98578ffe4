"""The one trainer every variant of every family shares: one loop, for one seed or several
stacked.

An epoch is one pass over the unlabelled images in a seeded random order, with the labelled images
cycled beside them; all data stay on the training device and batches are drawn by index. What is
trained is a step object (step.py: `OneSeed`, or `stacked.StackedSeeds` for several seeds at once),
which reaches the model only through its family (family.py); the loop sets alpha and the
temperature, watches for NaN, keeps every seed's history and applies the stop rule to each seed on
its own. Losses are summed on the device (no host sync per step on CUDA) and reported once per epoch
and seed, with test accuracy and throughput (labelled plus unlabelled rows per second, timed with
the device synchronised). This module needs neither mlflow nor optuna.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from harness.config.variants import NUM_CLASSES, Variant, resumable_settings
from harness.training.checkpoint import load_checkpoint, save_checkpoint
from harness.training.data import Splits
from harness.training.family import TERMS, get_family
from harness.training.progress import Progress, epoch_label, epoch_steps
from harness.training.reports import EpochReport
from harness.training.schedules import alpha_ramp, alpha_scale, lr_at, temperature_at
from harness.training.step import Batch, OneSeed, TrainingStep
from harness.training.stopping import should_stop


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite."""

    def __init__(self, step: int, term: str, value: float, seed: int | None = None) -> None:
        where = f" (seed {seed})" if seed is not None else ""
        super().__init__(f"loss term {term!r} is {value} at step {step}{where}; training stopped")
        self.step, self.term, self.seed = step, term, seed


def resolve_device(name: str | None = None) -> torch.device:
    """`None`/"auto": CUDA when present, else the CPU."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here")
    return device


def batch_sizes(variant: Variant, n_unlabelled: int, n_labelled: int) -> tuple[int, int]:
    """(unlabelled, labelled) rows per step. fixed: the variant's sizes (labelled at most the
    label count); paper: Kingma et al.'s code, 100 minibatches an epoch at 100 labels, else 200,
    each with an equal share of the labelled and of the unlabelled images (1 + 499 at 100 labels,
    3 + 247 at 600, 15 + 235 at 3000 on 50,000 training images)."""
    if variant.batch_rule == "paper":
        batches = 100 if n_labelled == 100 else 200
        return max(1, n_unlabelled // batches), max(1, n_labelled // batches)
    return variant.batch_size, min(variant.labelled_batch_size, n_labelled)


def epoch_plan(
    variant: Variant, n_unlabelled: int, n_labelled: int, batch: int, labelled_batch: int
) -> list[tuple[slice, slice]]:
    """Each step of an epoch as the slices of the epoch's unlabelled and labelled orders it
    takes. fixed and paper: every step `batch` unlabelled and `labelled_batch` labelled rows,
    n_unlabelled // batch steps. alternating (Pyro's SS-VAE loop): the n_unlabelled // batch
    unlabelled steps and the labelled images once, in ceil(n_labelled / labelled_batch) steps of
    their own (the last may be smaller), step i labelled where i % max(2, n_total // n_labelled)
    == 1 until they are used up, as Pyro's `run_inference_for_epoch` places them."""
    unlabelled_steps = max(1, n_unlabelled // batch)
    if variant.batch_rule != "alternating":
        return [
            (slice(i * batch, (i + 1) * batch), slice(i * labelled_batch, (i + 1) * labelled_batch))
            for i in range(unlabelled_steps)
        ]
    labelled_steps = math.ceil(n_labelled / labelled_batch)
    every = max(2, (n_unlabelled + n_labelled) // n_labelled)
    none = slice(0, 0)
    plan, done_u, done_l = [], 0, 0
    for i in range(unlabelled_steps + labelled_steps):
        if (i % every == 1 and done_l < labelled_steps) or done_u == unlabelled_steps:
            start = done_l * labelled_batch
            plan.append((none, slice(start, min(start + labelled_batch, n_labelled))))
            done_l += 1
        else:
            plan.append((slice(done_u * batch, (done_u + 1) * batch), none))
            done_u += 1
    return plan


def scores(predicted: torch.Tensor, y: torch.Tensor) -> tuple[list[float], list[list[float]]]:
    """Each seed's accuracy (0-1) of its predictions `predicted` ([S, n]) of the classes `y`,
    and its error per class (percent of each class's rows misclassified; NaN for a class with
    no rows)."""
    correct = (predicted == y).float()
    per_class = torch.zeros(len(correct), NUM_CLASSES, device=correct.device)
    per_class.index_add_(1, y, correct)
    rows = torch.bincount(y, minlength=NUM_CLASSES).to(per_class.dtype)
    class_errors = 100.0 * (1.0 - per_class / rows)
    return correct.mean(dim=1).tolist(), class_errors.tolist()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def settings_differing(variant: Variant, state: dict[str, Any]) -> list[str]:
    """The settings a checkpoint `state` would need to share with `variant` to be continued
    (all but the epoch budget and the stop rule) and does not, by name."""
    ours, theirs = resumable_settings(variant.params()), resumable_settings(state["variant"])
    return sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))


def check_resumable(variant: Variant, state: dict[str, Any]) -> None:
    """Raise ValueError unless checkpoint `state` is of `variant` (any epoch budget)."""
    changed = settings_differing(variant, state)
    if changed:
        raise ValueError(f"checkpoint is of another variant (differs in {', '.join(changed)})")


class NonFiniteWatch:
    """Which loss term first went NaN or infinite, at which step, kept on the device (seeing
    the terms costs no host sync; `raise_if_any` reads them back)."""

    def __init__(self, seed_at: Callable[[tuple[int, ...]], int | None]) -> None:
        self.seed_at = seed_at
        self.first_bad: torch.Tensor | None = None  # per term (per seed and term): step or -1
        self.bad_values: torch.Tensor | None = None

    def see(self, values: torch.Tensor, step: int) -> None:
        if self.first_bad is None or self.bad_values is None:
            self.first_bad = torch.full(values.shape, -1, dtype=torch.long, device=values.device)
            self.bad_values = torch.zeros_like(values)
        bad = ~torch.isfinite(values) & (self.first_bad < 0)
        self.first_bad = torch.where(bad, step, self.first_bad)
        self.bad_values = torch.where(bad, values, self.bad_values)

    def raise_if_any(self) -> None:
        first_bad, bad_values = self.first_bad, self.bad_values
        if first_bad is None or bad_values is None:
            return
        found = (first_bad >= 0).nonzero().tolist()
        if found:
            where = tuple(min(found, key=lambda index: first_bad[tuple(index)].item()))
            raise NonFiniteLossError(
                int(first_bad[where]),
                TERMS[where[-1]],
                float(bad_values[where]),
                self.seed_at(where),
            )


EpochCallback = Callable[[list[EpochReport | None]], Any]


class Trainer:
    """Trains the seeds `seeds` of `variant` (default: its own seed alone) in one loop: one seed
    with `OneSeed` (eager, compiled or as a CUDA graph), several at once with `StackedSeeds`
    (eager). Each epoch gives one report per seed; the stop rule ends each seed on its own."""

    def __init__(
        self,
        variant: Variant,
        splits: Splits,
        device: torch.device | str | None = None,
        max_steps: int | None = None,
        progress: Progress = True,
        *,
        seeds: Sequence[int] | None = None,
        precision: str = "fp32",
        compile: bool = False,
        cuda_graphs: bool = False,
        made_by: dict[str, Any] | None = None,
    ) -> None:
        self.seeds = (variant.seed,) if seeds is None else tuple(seeds)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"a stack needs distinct seeds, got {list(self.seeds)}")
        if len(self.seeds) > 1 and (compile or cuda_graphs):
            raise ValueError("compile and CUDA graphs are for one seed; stacked seeds run eagerly")
        self.variants = [variant.replace(seed=seed) for seed in self.seeds]
        self.variant = self.variants[0]
        self.device = resolve_device(device) if not isinstance(device, torch.device) else device
        self.precision, self.compiled, self.cuda_graphs = precision, compile, cuda_graphs
        self.progress = progress
        self.splits = splits
        self.stepper = self._make_step()

        n_labelled, n_unlabelled = self.stepper.n_labelled, self.stepper.n_unlabelled
        self.batch_size, self.labelled_batch = batch_sizes(variant, n_unlabelled, n_labelled)
        plan = epoch_plan(variant, n_unlabelled, n_labelled, self.batch_size, self.labelled_batch)
        self.full_steps_per_epoch = len(plan)
        self.steps_per_epoch = min(
            self.full_steps_per_epoch, max_steps or self.full_steps_per_epoch
        )
        self.plan = plan[: self.steps_per_epoch]
        # the steps each loss term is averaged over: all for the total; for the labelled and
        # classification terms the steps with labelled rows, for the unlabelled term the steps
        # with unlabelled rows (all of them, unless the batch rule alternates)
        labelled = sum(rows_l.stop > rows_l.start for _, rows_l in self.plan)
        unlabelled = sum(rows_u.stop > rows_u.start for rows_u, _ in self.plan)
        per_term = {"loss": len(self.plan), "unlabelled": unlabelled}
        self.term_steps = torch.tensor(
            [float(max(1, per_term.get(term, labelled))) for term in TERMS], dtype=torch.float32
        )
        # training rows an epoch (labelled + unlabelled), for rows/s
        self.rows_per_epoch = sum(
            rows_u.stop - rows_u.start + rows_l.stop - rows_l.start for rows_u, rows_l in self.plan
        )
        self.alpha_full = alpha_scale(
            variant,
            self.full_steps_per_epoch,
            math.ceil(n_labelled / self.labelled_batch),
            n_labelled,
            n_labelled + n_unlabelled,
        )
        # the NaN check reads the device: every step on the CPU (where that costs nothing), at
        # the end of each epoch on a GPU (no host sync inside an epoch)
        self.check_every = 1 if self.device.type == "cpu" else self.steps_per_epoch
        self.epoch = 0
        self.step = 0
        self.history: list[list[EpochReport]] = []  # per epoch, one report per seed
        # the stop rule ends seeds one by one: a seed that ended keeps its epoch and its state
        # then (in a stack its parameters go on being updated, unread)
        self.ended: list[int | None] = [None] * len(self.seeds)
        self.ended_states: dict[int, dict[str, Any]] = {}
        # provenance: what this process trains under (commit, machine), and each seed's
        # segments from the processes before it (a resumed checkpoint's); `seed_segments`
        self.made_by = dict(made_by or {})
        self.first_epoch = 1  # this process's first epoch
        self.past_segments: list[list[dict[str, Any]]] = [[] for _ in self.seeds]

    def _make_step(self) -> TrainingStep:
        if len(self.seeds) == 1:
            return OneSeed(
                self.variant,
                self.splits,
                self.device,
                precision=self.precision,
                compile=self.compiled,
                cuda_graphs=self.cuda_graphs,
            )
        from harness.training.stacked import StackedSeeds

        return StackedSeeds(
            self.variant, self.seeds, self.splits, self.device, precision=self.precision
        )

    def alpha_at(self, step: int) -> float:
        return self.alpha_full * alpha_ramp(self.variant, step, self.full_steps_per_epoch)

    def epoch_order(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each seed's batch order for an epoch (step.py's `epoch_order`), its labelled order
        long enough for the epoch's plan."""
        if self.variant.batch_rule != "alternating":
            return self.stepper.epoch_order(self.steps_per_epoch, self.labelled_batch)
        labelled_rows = max(rows_l.stop for _, rows_l in self.plan)
        steps = max(1, math.ceil(labelled_rows / self.labelled_batch))
        return self.stepper.epoch_order(steps, self.labelled_batch)

    def batch(self, idx_u: torch.Tensor, idx_l: torch.Tensor) -> Batch:
        """The step's input: a batch drawn by index, at this step's alpha and temperature."""
        temperature = temperature_at(self.variant, self.step)
        return Batch(idx_u, idx_l, self.alpha_at(self.step), temperature)

    def forward_backward(self, idx_u: torch.Tensor, idx_l: torch.Tensor) -> torch.Tensor:
        """The loss terms on one batch drawn by index, [seeds, len(TERMS)], and their
        gradients; no update."""
        return self.stepper.forward_backward(self.batch(idx_u, idx_l))

    def train_step(
        self,
        idx_u: torch.Tensor,
        idx_l: torch.Tensor,
        before_update: Callable[[torch.Tensor], Any] | None = None,
    ) -> torch.Tensor:
        """One optimisation step on a batch drawn by index; returns the loss terms,
        [seeds, len(TERMS)] (no host sync)."""
        return self.stepper.train(self.batch(idx_u, idx_l), before_update)

    def _seed_at(self, where: tuple[int, ...]) -> int | None:
        """The seed an index into the loss terms belongs to (None: one seed alone)."""
        return self.seeds[where[0]] if len(self.seeds) > 1 else None

    def _train_epoch(self) -> tuple[torch.Tensor, float]:
        """One pass over the unlabelled images: the mean of each seed's loss terms, and the
        seconds."""
        order_u, order_l = self.epoch_order()
        if self.variant.lr_decay_every:  # the epoch's learning rate, from the epochs done
            for group in self.stepper.optimizer.param_groups:
                group["lr"] = lr_at(self.variant, self.epoch)
        watch = NonFiniteWatch(self._seed_at)
        sums = None
        synchronize(self.device)
        start = time.perf_counter()
        label = epoch_label(self.epoch + 1, self.variant.epochs)
        for i in epoch_steps(self.steps_per_epoch, label, self.progress):
            rows_u, rows_l = self.plan[i]
            idx_u, idx_l = order_u[..., rows_u], order_l[..., rows_l]
            check = (i + 1) % self.check_every == 0

            def before_update(values: torch.Tensor, check: bool = check) -> None:
                watch.see(values, self.step)
                if check:
                    watch.raise_if_any()

            values = self.train_step(idx_u, idx_l, before_update)
            sums = values if sums is None else sums + values
            self.step += 1
        synchronize(self.device)
        seconds = time.perf_counter() - start
        watch.raise_if_any()
        self.epoch += 1
        assert sums is not None  # an epoch has at least one step
        return sums / self.term_steps.to(sums.device), seconds

    def _report(
        self,
        means: list[float],
        test_accuracy: float,
        val_accuracy: float | None,
        seconds: float,
        eval_seconds: float,
        test_class_errors: list[float] | None = None,
    ) -> EpochReport:
        return EpochReport(
            epoch=self.epoch,
            steps=self.steps_per_epoch,
            losses=dict(zip(TERMS, means, strict=True)),
            test_accuracy=test_accuracy,
            test_error=100.0 * (1.0 - test_accuracy),
            val_accuracy=val_accuracy,
            samples_per_sec=self.rows_per_epoch / seconds,
            epoch_seconds=seconds,
            temperature=temperature_at(self.variant, self.step - 1),
            alpha=self.alpha_at(self.step - 1),
            eval_seconds=eval_seconds,
            test_class_errors=test_class_errors,
        )

    def run_epoch(self) -> list[EpochReport]:
        """One epoch of every seed, a report each in the order of `seeds`; samples_per_sec in
        each is that seed's rows/s (a stack's total is len(seeds) times it)."""
        means, seconds = self._train_epoch()
        start = time.perf_counter()
        test, class_errors = scores(
            self.stepper.predictions(self.splits.test_x), self.splits.test_y
        )
        val = (
            scores(self.stepper.predictions(self.splits.val_x), self.splits.val_y)[0]
            if len(self.splits.val_x)
            else [None] * len(self.seeds)
        )
        eval_seconds = time.perf_counter() - start
        reports = [
            self._report(m, t, v, seconds, eval_seconds, c)
            for m, t, v, c in zip(means.tolist(), test, val, class_errors, strict=True)
        ]
        self.history.append(reports)
        return reports

    def seed_history(self, i: int) -> list[EpochReport]:
        """Seed i's reports, up to the epoch the stop rule ended it."""
        return [reports[i] for reports in self.history[: self.ended[i]]]

    def seed_finished(self, i: int) -> bool:
        """Seed i's epoch budget is spent, or the stop rule says stop."""
        v = self.variants[i]
        return self.epoch >= v.epochs or should_stop(self.seed_history(i), v.patience, v.min_delta)

    def finished(self) -> bool:
        return all(self.seed_finished(i) for i in range(len(self.seeds)))

    def fit(
        self,
        on_epoch_end: Iterable[EpochCallback] = (),
        checkpoints: Sequence[str | Path] | None = None,
    ) -> list[list[EpochReport]]:
        """Train until every seed has ended, by the stop rule or the epoch budget; after every
        epoch save the checkpoint of each seed still training (if paths are given, one per
        seed), then call each callback with the seeds' reports (None for a seed that ended
        before this epoch). Returns each seed's reports."""
        callbacks = list(on_epoch_end)
        while not self.finished():
            live = [i for i, end in enumerate(self.ended) if end is None]
            reports = self.run_epoch()
            for i in live:
                finished = self.seed_finished(i)
                if not (checkpoints or finished):
                    continue  # nothing to save or keep: no state to build
                state = self.seed_state_dict(i)
                if checkpoints:
                    save_checkpoint(checkpoints[i], state)
                if finished:
                    self.ended[i], self.ended_states[i] = self.epoch, copy.deepcopy(state)
            shown = [r if i in live else None for i, r in enumerate(reports)]
            for callback in callbacks:
                callback(shown)
        return [self.seed_history(i) for i in range(len(self.seeds))]

    def seed_state_dict(self, i: int) -> dict[str, Any]:
        """Seed i's checkpoint (the same whether it trained alone or in a stack)."""
        return {
            "variant": self.variants[i].params(),
            **self.stepper.seed_state(i),
            "epoch": self.epoch,
            "step": self.step,
            "history": [asdict(r) for r in self.seed_history(i)],
            "segments": self.seed_segments(i),
        }

    def seed_segments(self, i: int) -> list[dict[str, Any]]:
        """Where seed i trained: the segments of the processes before this one, then this
        process's (its provenance and the first and last epoch it trained), if it trained any."""
        last = len(self.seed_history(i))
        mine = [{**self.made_by, "epochs": [self.first_epoch, last]}]
        return self.past_segments[i] + (mine if last >= self.first_epoch else [])

    def load_seed_states(self, states: Sequence[dict[str, Any]]) -> None:
        """Continue from one checkpoint per seed, all at the same epoch."""
        for variant, state in zip(self.variants, states, strict=True):
            check_resumable(variant, state)
        if len({(s["epoch"], s["step"]) for s in states}) != 1:
            epochs = ", ".join(
                f"seed {v.seed}: {s['epoch']}" for v, s in zip(self.variants, states, strict=True)
            )
            raise ValueError(f"the seeds' checkpoints are at different epochs ({epochs})")
        self.stepper.load_seed_states(states)
        self.epoch, self.step = states[0]["epoch"], states[0]["step"]
        self.first_epoch = self.epoch + 1
        self.past_segments = [
            s.get("segments") or [{"git_commit": "unknown", "epochs": [1, s["epoch"]]}]
            for s in states
        ]
        histories = [[EpochReport(**r) for r in s["history"]] for s in states]
        self.history = [list(reports) for reports in zip(*histories, strict=True)]
        for i, state in enumerate(states):  # seeds the stop rule had ended stay ended
            if self.seed_finished(i):
                self.ended[i], self.ended_states[i] = self.epoch, state

    def resume_from(self, paths: Sequence[str | Path]) -> bool:
        """Load the seeds' checkpoints (one path per seed); True when they were loaded, False
        when none exists."""
        present = [Path(p).exists() for p in paths]
        if not any(present):
            return False
        if not all(present):
            have = ", ".join(str(s) for s, p in zip(self.seeds, present, strict=True) if p)
            lack = ", ".join(str(s) for s, p in zip(self.seeds, present, strict=True) if not p)
            raise ValueError(
                f"seeds {have} have checkpoints and seeds {lack} do not: a stack resumes only "
                f"as a whole; resume seeds {have} apart (or in their own stack)"
            )
        self.load_seed_states([load_checkpoint(p) for p in paths])
        return True

    def seed_model(self, i: int) -> torch.nn.Module:
        """A copy of seed i's model as it was when the seed ended (or now, if it has not)."""
        state = self.ended_states.get(i) or self.seed_state_dict(i)
        family = get_family(self.variants[i].family)
        model = family.build(self.variants[i], self.splits.train_x.shape[1]).to(self.device)
        model.load_state_dict(state["model"])
        return model.eval()
