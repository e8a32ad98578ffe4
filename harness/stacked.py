"""Several seeds of one variant trained at once, in one process and one step.

The seeds' parameters are stacked along a leading axis and the fused loss is vectorised over it
with `torch.func.vmap`, so every matrix product of a step is S times larger: small M2 models fill
a large GPU, and on the CPU the per-operation overhead is paid once for S seeds. Each seed keeps
its own initialisation, labelled images and batch order. Adam is element-wise, so one fused Adam
over the stacked parameters is S independent Adams. The Gaussian and Gumbel noise come from one
generator (vmap's randomness="different": every seed its own draws), so a seed trained in a stack
is another random draw of the same training as that seed alone, not a copy of it.

A stack saves one ordinary checkpoint per seed (the format `Trainer` reads), so a stacked run
resumes from its seeds' checkpoints and each seed can be continued on its own.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from harness.checkpoint import load_checkpoint, save_checkpoint
from harness.data import Splits
from harness.loss import TERMS, m2_loss
from harness.model import M2
from harness.stopping import should_stop
from harness.trainer import EpochReport, Trainer, check_resumable, labelled_split, make_optimizer
from harness.variants import Variant


class LossTerms(nn.Module):
    """m2_loss as a module call (the terms stacked in TERMS order), so that
    torch.func.functional_call can run it with any seed's parameters."""

    def __init__(self, model: M2) -> None:
        super().__init__()
        self.model = model

    def forward(self, x_l: Tensor, y_l: Tensor, x_u: Tensor, options: dict[str, Any]) -> Tensor:
        terms = m2_loss(self.model, x_l, y_l, x_u, **options)
        return torch.stack([terms[t] for t in TERMS])


class StackedTrainer(Trainer):
    """`Trainer` for the seeds `seeds` of `variant` at once; `variant.seed` is not used. An epoch
    returns one report per seed, in the order of `seeds`."""

    randomness = "different"  # vmap's: "same" gives every seed the same noise draws (tests)

    def __init__(
        self,
        variant: Variant,
        seeds: Sequence[int],
        splits: Splits,
        device: torch.device | str | None = None,
        max_steps: int | None = None,
        progress: bool = True,
        *,
        precision: str = "fp32",
    ) -> None:
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"a stack needs distinct seeds, got {list(seeds)}")
        self.seeds = tuple(seeds)
        self.variants = [variant.replace(seed=seed) for seed in self.seeds]
        super().__init__(self.variants[0], splits, device, max_steps, progress, precision=precision)
        self.history: list[list[EpochReport]] = []  # per epoch, one report per seed
        # the stop rule ends seeds one by one: a seed that ended keeps its epoch and its state
        # then (its parameters go on being updated in the stack, unread)
        self.ended: list[int | None] = [None] * len(self.seeds)
        self.ended_states: dict[int, dict[str, Any]] = {}

    def _build_model(self) -> tuple[LossTerms, torch.optim.Optimizer, torch.Generator]:
        models = []
        for seed in self.seeds:  # each seed initialised as it would be alone
            torch.manual_seed(seed)
            models.append(M2.from_variant(self.variant).to(self.device))
        params, _ = stack_module_state(models)
        self.params = {f"model.{name}": value for name, value in params.items()}
        generator = torch.Generator(self.device).manual_seed(self.seeds[0])
        template = LossTerms(copy.deepcopy(models[0]).to("meta"))
        return template, make_optimizer(self.variant, self.params.values()), generator

    def _split_data(self) -> tuple[Tensor, Tensor, Tensor]:
        parts = [labelled_split(self.splits, v.labels, v.seed, self.device) for v in self.variants]
        x_l, y_l, x_u = (torch.stack(part) for part in zip(*parts, strict=True))
        return x_l, y_l, x_u

    def epoch_order(self) -> tuple[Tensor, Tensor]:
        orders = [super(StackedTrainer, self).epoch_order() for _ in self.seeds]
        order_u, order_l = (torch.stack(part) for part in zip(*orders, strict=True))
        return order_u, order_l

    def _seed_at(self, where: tuple[int, ...]) -> int | None:
        return self.seeds[where[0]]

    def forward_backward(self, idx_u: Tensor, idx_l: Tensor) -> Tensor:
        """The loss terms of every seed on its own batch ([S, len(TERMS)]) and their gradients."""
        rows = torch.arange(len(self.seeds), device=self.device)[:, None]
        options = self.options_now()

        def seed_terms(params: dict[str, Tensor], x_l: Tensor, y_l: Tensor, x_u: Tensor) -> Tensor:
            return functional_call(self.model, params, (x_l, y_l, x_u, options))

        with self.autocast():
            terms = vmap(seed_terms, randomness=self.randomness)(
                self.params, self.x_l[rows, idx_l], self.y_l[rows, idx_l], self.x_u[rows, idx_u]
            )
        self.optimizer.zero_grad(set_to_none=True)
        terms[:, TERMS.index("loss")].sum().backward()  # seeds share no parameter
        return terms.detach()

    @torch.no_grad()
    def accuracies(self, x: Tensor, y: Tensor, chunk: int = 10_000) -> list[float]:
        """Each seed's accuracy of q(y|x) on (x, y)."""
        prefix = "model.classifier."
        classifier = {k[len(prefix) :]: v for k, v in self.params.items() if k.startswith(prefix)}

        def predict(params: dict[str, Tensor], part: Tensor) -> Tensor:
            return functional_call(self.model.model.classifier, params, (part,)).argmax(-1)

        predicted = torch.cat(
            [vmap(predict, in_dims=(0, None))(classifier, part) for part in x.split(chunk)], dim=1
        )
        return (predicted == y).float().mean(dim=1).tolist()

    def run_epoch(self) -> list[EpochReport]:  # type: ignore[override]
        """One epoch of every seed; samples_per_sec in each report is that seed's rows/s (the
        stack's total is len(seeds) times it)."""
        means, seconds = self._train_epoch()
        test = self.accuracies(self.splits.test_x, self.splits.test_y)
        val = (
            self.accuracies(self.splits.val_x, self.splits.val_y)
            if len(self.splits.val_x)
            else [None] * len(self.seeds)
        )
        reports = [
            self._report(m, t, v, seconds)
            for m, t, v in zip(means.tolist(), test, val, strict=True)
        ]
        self.history.append(reports)
        return reports

    def seed_history(self, i: int) -> list[EpochReport]:
        """Seed i's reports, up to the epoch the stop rule ended it."""
        return [reports[i] for reports in self.history[: self.ended[i]]]

    def seed_finished(self, i: int) -> bool:
        v = self.variants[i]
        history = self.seed_history(i)
        return self.epoch >= v.epochs or should_stop(history, v.patience, v.min_delta)

    def finished(self) -> bool:
        return all(self.seed_finished(i) for i in range(len(self.seeds)))

    def fit(  # type: ignore[override]
        self,
        on_epoch_end: Iterable[Callable[[list[EpochReport | None]], Any]] = (),
        checkpoints: Sequence[str | Path] | None = None,
    ) -> list[list[EpochReport]]:
        """Train until every seed has ended, by the stop rule or the epoch budget; after every
        epoch save the checkpoint of each seed still training (if paths are given, one per
        seed), then call each callback with the seeds' reports (None for a seed that ended
        before this epoch)."""
        callbacks = list(on_epoch_end)
        while not self.finished():
            live = [i for i, end in enumerate(self.ended) if end is None]
            reports = self.run_epoch()
            for i in live:
                if checkpoints:
                    save_checkpoint(checkpoints[i], self.seed_state_dict(i))
                if self.seed_finished(i):
                    self.ended_states[i] = self.seed_state_dict(i)
                    self.ended[i] = self.epoch
            shown = [r if i in live else None for i, r in enumerate(reports)]
            for callback in callbacks:
                callback(shown)
        return self.history

    def seed_state_dict(self, i: int) -> dict[str, Any]:
        """Seed i's checkpoint, in the format of `Trainer.state_dict` (the stack's generator)."""
        optimizer = self.optimizer.state_dict()
        optimizer["state"] = {
            index: {k: v if k == "step" else v[i].clone() for k, v in state.items()}
            for index, state in optimizer["state"].items()
        }
        prefix = len("model.")
        return {
            "variant": self.variants[i].params(),
            "model": {k[prefix:]: v[i].detach().clone() for k, v in self.params.items()},
            "optimizer": optimizer,
            "generator": self.generator.get_state(),
            "epoch": self.epoch,
            "step": self.step,
            "history": [asdict(r) for r in self.seed_history(i)],
        }

    def load_seed_states(self, states: Sequence[dict[str, Any]]) -> None:
        """Continue from one checkpoint per seed, all at the same epoch."""
        for variant, state in zip(self.variants, states, strict=True):
            check_resumable(variant, state)
        if len({(s["epoch"], s["step"]) for s in states}) != 1:
            epochs = ", ".join(
                f"seed {v.seed}: {s['epoch']}" for v, s in zip(self.variants, states, strict=True)
            )
            raise ValueError(f"the seeds' checkpoints are at different epochs ({epochs})")
        with torch.no_grad():
            for name, value in self.params.items():
                value.copy_(torch.stack([s["model"][name[len("model.") :]] for s in states]))
        optimizer = copy.deepcopy(states[0]["optimizer"])
        for index, state in optimizer["state"].items():
            for k in state:
                if k != "step":
                    state[k] = torch.stack([s["optimizer"]["state"][index][k] for s in states])
        self.optimizer.load_state_dict(optimizer)
        self.generator.set_state(states[0]["generator"])
        self.epoch, self.step = states[0]["epoch"], states[0]["step"]
        histories = [[EpochReport(**r) for r in s["history"]] for s in states]
        self.history = [list(reports) for reports in zip(*histories, strict=True)]
        for i, state in enumerate(states):  # seeds the stop rule had ended stay ended
            if self.seed_finished(i):
                self.ended[i], self.ended_states[i] = self.epoch, state

    def resume_from_seeds(self, paths: Sequence[str | Path]) -> bool:
        """Load the seeds' checkpoints; True when they were loaded, False when none exists."""
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

    def seed_trainer(self, i: int) -> Trainer:
        """A plain `Trainer` holding seed i's model, optimiser state and history (as they were
        when the seed ended; for figures, or to continue that seed alone)."""
        single = Trainer(self.variants[i], self.splits, self.device, progress=False)
        single.load_state_dict(self.ended_states.get(i) or self.seed_state_dict(i))
        return single
