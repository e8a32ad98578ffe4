"""The one trainer every M2 variant shares.

An epoch is one pass over the unlabelled images in a seeded random order, with the labelled images
cycled beside them; all data stay on the training device and batches are drawn by index. Losses
are summed on the device (no host sync per step on CUDA) and reported once per epoch, with test
accuracy and throughput (labelled plus unlabelled rows per second, timed with the device
synchronised). This module needs neither mlflow nor optuna.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from harness.checkpoint import load_checkpoint, save_checkpoint
from harness.data import Splits, balanced_label_subset
from harness.loss import TERMS, m2_loss
from harness.model import M2
from harness.schedules import alpha_ramp, alpha_scale, temperature_at
from harness.stopping import outcome, should_stop
from harness.variants import NUM_CLASSES, Variant, resumable_settings


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite."""

    def __init__(self, step: int, term: str, value: float, seed: int | None = None) -> None:
        where = f" (seed {seed})" if seed is not None else ""
        super().__init__(f"loss term {term!r} is {value} at step {step}{where}; training stopped")
        self.step, self.term, self.seed = step, term, seed


@dataclass
class EpochReport:
    epoch: int  # 1-based
    steps: int
    losses: dict[str, float]  # mean of each term over the epoch's steps
    test_accuracy: float  # 0-1
    test_error: float  # percent, as the paper reports it
    val_accuracy: float | None
    samples_per_sec: float  # labelled + unlabelled training rows per second
    epoch_seconds: float
    temperature: float
    alpha: float
    eval_seconds: float = 0.0  # evaluating the test and validation images after the epoch

    def metrics(self) -> dict[str, float]:
        """Flat metric names for logging."""
        out = {
            f"train_{term}" if term != "loss" else "train_loss": value
            for term, value in self.losses.items()
        }
        out.update(
            test_accuracy=self.test_accuracy,
            test_error=self.test_error,
            samples_per_sec=self.samples_per_sec,
            epoch_seconds=self.epoch_seconds,
            eval_seconds=self.eval_seconds,
            temperature=self.temperature,
            alpha=self.alpha,
        )
        if self.val_accuracy is not None:
            out["val_accuracy"] = self.val_accuracy
            out["val_error"] = 100.0 * (1.0 - self.val_accuracy)
        return out


def run_summary(variant: Variant, reports: list[EpochReport]) -> dict[str, Any]:
    """The figures a run ends with (`stopping.outcome`: the selected, final and test-selected
    test errors, how it ended, its time and time to accuracy) and its last throughput."""
    return {
        **outcome(reports, variant.epochs, variant.patience, variant.min_delta),
        "final_samples_per_sec": reports[-1].samples_per_sec,
    }


def resolve_device(name: str | None = None) -> torch.device:
    """`None`/"auto": CUDA when present, else the CPU."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here")
    return device


def make_optimizer(
    variant: Variant,
    params: Iterable[torch.nn.Parameter],
    fused: bool = True,
    capturable: bool = False,
) -> torch.optim.Optimizer:
    """Adam or AdamW; `fused` runs the whole update in one kernel per step (CPU and CUDA)
    instead of a handful of element-wise ops per parameter; `capturable` keeps its step count on
    the device, so the update can be captured in a CUDA graph."""
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[variant.optimizer]
    return cls(params, lr=variant.lr, fused=fused, capturable=capturable)


def batch_sizes(variant: Variant, n_unlabelled: int, n_labelled: int) -> tuple[int, int]:
    """(unlabelled, labelled) rows per step. fixed: the variant's sizes (labelled at most the
    label count); paper: Kingma et al.'s code, 100 minibatches an epoch at 100 labels, else 200,
    each with an equal share of the labelled and of the unlabelled images (1 + 499 at 100 labels,
    3 + 247 at 600, 15 + 235 at 3000 on 50,000 training images)."""
    if variant.batch_rule == "paper":
        batches = 100 if n_labelled == 100 else 200
        return max(1, n_unlabelled // batches), max(1, n_labelled // batches)
    return variant.batch_size, min(variant.labelled_batch_size, n_labelled)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


PRECISIONS = ("fp32", "bf16")


def settings_differing(variant: Variant, state: dict[str, Any]) -> list[str]:
    """The settings a checkpoint `state` would need to share with `variant` to be continued
    (all but the epoch budget and the stop rule) and does not, by name."""
    ours, theirs = resumable_settings(variant.params()), resumable_settings(state["variant"])
    return sorted(k for k in ours if ours[k] != theirs.get(k))


def check_resumable(variant: Variant, state: dict[str, Any]) -> None:
    """Raise ValueError unless checkpoint `state` is of `variant` (any epoch budget)."""
    changed = settings_differing(variant, state)
    if changed:
        raise ValueError(f"checkpoint is of another variant (differs in {', '.join(changed)})")


def labelled_split(
    splits: Splits, labels: int, seed: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_l, y_l, x_u): `labels` training images balanced over the classes and drawn with `seed`,
    their classes, and the other training images (unlabelled)."""
    labelled = balanced_label_subset(splits.train_y, labels, NUM_CLASSES, seed)
    is_labelled = torch.zeros(len(splits.train_y), dtype=torch.bool)
    is_labelled[labelled] = True
    labelled, unlabelled = labelled.to(device), (~is_labelled).nonzero().flatten().to(device)
    return splits.train_x[labelled], splits.train_y[labelled], splits.train_x[unlabelled]


class NonFiniteWatch:
    """Which loss term first went NaN or infinite, at which step, kept on the device (seeing
    the terms costs no host sync; `raise_if_any` reads them back)."""

    def __init__(self, seed_at: Callable[[tuple[int, ...]], int | None]) -> None:
        self.seed_at = seed_at
        self.first_bad: torch.Tensor | None = None  # per term (per seed and term): step or -1
        self.bad_values: torch.Tensor | None = None

    def see(self, values: torch.Tensor, step: int) -> None:
        if self.first_bad is None:
            self.first_bad = torch.full(values.shape, -1, dtype=torch.long, device=values.device)
            self.bad_values = torch.zeros_like(values)
        bad = ~torch.isfinite(values) & (self.first_bad < 0)
        self.first_bad = torch.where(bad, step, self.first_bad)
        self.bad_values = torch.where(bad, values, self.bad_values)

    def raise_if_any(self) -> None:
        if self.first_bad is None:
            return
        found = (self.first_bad >= 0).nonzero().tolist()
        if found:
            where = tuple(min(found, key=lambda index: self.first_bad[tuple(index)].item()))
            raise NonFiniteLossError(
                int(self.first_bad[where]),
                TERMS[where[-1]],
                float(self.bad_values[where]),
                self.seed_at(where),
            )


class Trainer:
    def __init__(
        self,
        variant: Variant,
        splits: Splits,
        device: torch.device | str | None = None,
        max_steps: int | None = None,
        progress: bool = True,
        *,
        precision: str = "fp32",
        compile: bool = False,
        cuda_graphs: bool = False,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
        self.precision, self.compiled = precision, compile
        self.loss_fn = torch.compile(m2_loss) if compile else m2_loss
        self.variant = variant
        self.device = resolve_device(device) if not isinstance(device, torch.device) else device
        if cuda_graphs and self.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device; this run is on {self.device}")
        self.cuda_graphs = cuda_graphs
        self.graphed: Any = None  # the captured step (graphs.py), made at the first step
        self.progress = progress
        self.splits = splits
        self.model, self.optimizer, self.generator = self._build_model()
        self.x_l, self.y_l, self.x_u = self._split_data()

        n_labelled, n_unlabelled = self.x_l.shape[-2], self.x_u.shape[-2]
        self.batch_size, self.labelled_batch = batch_sizes(variant, n_unlabelled, n_labelled)
        self.full_steps_per_epoch = max(1, n_unlabelled // self.batch_size)
        self.steps_per_epoch = min(
            self.full_steps_per_epoch, max_steps or self.full_steps_per_epoch
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
        self.history: list[EpochReport] = []

    def _build_model(self) -> tuple[M2, torch.optim.Optimizer, torch.Generator]:
        torch.manual_seed(self.variant.seed)
        model = M2.from_variant(self.variant).to(self.device)
        generator = torch.Generator(self.device).manual_seed(self.variant.seed)
        optimizer = make_optimizer(self.variant, model.parameters(), capturable=self.cuda_graphs)
        return model, optimizer, generator

    def _split_data(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return labelled_split(self.splits, self.variant.labels, self.variant.seed, self.device)

    def alpha_at(self, step: int) -> float:
        return self.alpha_full * alpha_ramp(self.variant, step, self.full_steps_per_epoch)

    def epoch_order(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Unlabelled indices in a fresh random order; labelled ones cycled to cover the epoch."""
        g, dev = self.generator, self.device
        n_l = self.x_l.shape[-2]
        order_u = torch.randperm(self.x_u.shape[-2], generator=g, device=dev)
        cycles = math.ceil(self.steps_per_epoch * self.labelled_batch / n_l)
        order_l = torch.cat([torch.randperm(n_l, generator=g, device=dev) for _ in range(cycles)])
        return order_u, order_l

    def autocast(self) -> torch.autocast:
        """bf16 matrix products in the forward and backward passes (the loss itself in float32),
        or nothing."""
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"
        )

    def loss_options(self, alpha: Any, temperature: Any) -> dict[str, Any]:
        """m2_loss's settings, with alpha and the temperature as given (floats, or 0-d tensors
        when compiled or graphed, so that a changing value is an input, not a recompilation or
        a constant baked into the graph)."""
        v = self.variant
        return {
            "estimator": v.estimator,
            "alpha": alpha,
            "temperature": temperature,
            "y_term": v.y_term,
            "generator": self.generator,
            "per_row": v.term_weighting == "per-row",
        }

    def options_now(self) -> dict[str, Any]:
        """loss_options at this step."""
        scalar = torch.tensor if self.compiled else float
        alpha, temperature = self.alpha_at(self.step), temperature_at(self.variant, self.step)
        return self.loss_options(scalar(alpha), scalar(temperature))

    def forward_backward(self, idx_u: torch.Tensor, idx_l: torch.Tensor) -> torch.Tensor:
        """The loss terms on one batch drawn by index, at this step's alpha and temperature,
        and their gradients; returns the terms stacked in TERMS order (no host sync)."""
        with self.autocast():
            terms = self.loss_fn(
                self.model,
                self.x_l[idx_l],
                self.y_l[idx_l],
                self.x_u[idx_u],
                **self.options_now(),
            )
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        return torch.stack([terms[t].detach() for t in TERMS])

    def train_step(
        self,
        idx_u: torch.Tensor,
        idx_l: torch.Tensor,
        before_update: Callable[[torch.Tensor], Any] | None = None,
    ) -> torch.Tensor:
        """One optimisation step on a batch drawn by index; returns the loss terms stacked in
        TERMS order (no host sync). `before_update` sees the terms before the eager step's
        update (the NaN watch: a bad step is never applied). With CUDA graphs, forward,
        backward and the update are one replay of the captured step (captured at the first
        call, after any resume), and the watch sees the terms after it."""
        if self.cuda_graphs:
            if self.graphed is None:
                from harness.graphs import GraphedStep

                self.graphed = GraphedStep(self)
            alpha, temperature = self.alpha_at(self.step), temperature_at(self.variant, self.step)
            values = self.graphed(idx_u, idx_l, alpha, temperature)
        else:
            values = self.forward_backward(idx_u, idx_l)
        if before_update is not None:
            before_update(values)
        if not self.cuda_graphs:
            self.optimizer.step()
        return values

    def _seed_at(self, where: tuple[int, ...]) -> int | None:
        """The seed an index into the stacked loss terms belongs to (None: a single seed)."""
        return None

    def _train_epoch(self) -> tuple[torch.Tensor, float]:
        """One pass over the unlabelled images: the mean of each loss term, and the seconds."""
        B, B_l = self.batch_size, self.labelled_batch
        self.model.train()
        order_u, order_l = self.epoch_order()
        watch = NonFiniteWatch(self._seed_at)
        sums = None
        synchronize(self.device)
        start = time.perf_counter()
        for i in tqdm(
            range(self.steps_per_epoch),
            desc=f"epoch {self.epoch + 1}",
            leave=False,
            disable=None if self.progress else True,
        ):
            idx_u, idx_l = order_u[..., i * B : (i + 1) * B], order_l[..., i * B_l : (i + 1) * B_l]
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
        return sums / self.steps_per_epoch, seconds

    def _report(
        self, means: list[float], test_accuracy: float, val_accuracy: float | None, seconds: float
    ) -> EpochReport:
        return EpochReport(
            epoch=self.epoch,
            steps=self.steps_per_epoch,
            losses=dict(zip(TERMS, means, strict=True)),
            test_accuracy=test_accuracy,
            test_error=100.0 * (1.0 - test_accuracy),
            val_accuracy=val_accuracy,
            samples_per_sec=self.steps_per_epoch
            * (self.batch_size + self.labelled_batch)
            / seconds,
            epoch_seconds=seconds,
            temperature=temperature_at(self.variant, self.step - 1),
            alpha=self.alpha_at(self.step - 1),
        )

    def run_epoch(self) -> EpochReport:
        means, seconds = self._train_epoch()
        start = time.perf_counter()
        test_accuracy = self.accuracy(self.splits.test_x, self.splits.test_y)
        val_accuracy = (
            self.accuracy(self.splits.val_x, self.splits.val_y) if len(self.splits.val_x) else None
        )
        report = self._report(means.tolist(), test_accuracy, val_accuracy, seconds)
        report.eval_seconds = time.perf_counter() - start
        self.history.append(report)
        return report

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        self.model.eval()
        return (self.model.predict(x) == y).float().mean().item()

    def fit(
        self,
        on_epoch_end: Iterable[Callable[[EpochReport], Any]] = (),
        checkpoint: str | Path | None = None,
    ) -> list[EpochReport]:
        """Train until the stop rule ends the run or `variant.epochs` is reached; after every
        epoch save the checkpoint (if a path is given), then call each callback. Returns the
        reports of all epochs so far."""
        callbacks = list(on_epoch_end)
        while not self.finished():
            report = self.run_epoch()
            if checkpoint is not None:
                save_checkpoint(checkpoint, self.state_dict())
            for callback in callbacks:
                callback(report)
        return self.history

    def finished(self) -> bool:
        """The epoch budget is spent, or the stop rule says stop."""
        v = self.variant
        return self.epoch >= v.epochs or should_stop(self.history, v.patience, v.min_delta)

    def state_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant.params(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "epoch": self.epoch,
            "step": self.step,
            "history": [asdict(r) for r in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_resumable(self.variant, state)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.history = [EpochReport(**r) for r in state["history"]]

    def resume_from(self, path: str | Path) -> bool:
        """Load `path` if it exists; True when a checkpoint was loaded."""
        if not Path(path).exists():
            return False
        self.load_state_dict(load_checkpoint(path))
        return True
