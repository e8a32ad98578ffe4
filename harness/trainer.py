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
from harness.variants import NUM_CLASSES, Variant, resumable_settings


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite."""

    def __init__(self, step: int, term: str, value: float) -> None:
        super().__init__(f"loss term {term!r} is {value} at step {step}; training stopped")
        self.step, self.term = step, term


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
            temperature=self.temperature,
            alpha=self.alpha,
        )
        if self.val_accuracy is not None:
            out["val_accuracy"] = self.val_accuracy
        return out


def run_summary(reports: list[EpochReport]) -> dict[str, float]:
    """The figures a run ends with: last and best test accuracy, throughput, training time."""
    last = reports[-1]
    return {
        "final_test_accuracy": last.test_accuracy,
        "final_test_error": last.test_error,
        "best_test_accuracy": max(r.test_accuracy for r in reports),
        "final_samples_per_sec": last.samples_per_sec,
        "train_seconds": sum(r.epoch_seconds for r in reports),
        "epochs_done": last.epoch,
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
    variant: Variant, params: Iterable[torch.nn.Parameter], fused: bool = True
) -> torch.optim.Optimizer:
    """Adam or AdamW; `fused` runs the whole update in one kernel per step (CPU and CUDA)
    instead of a handful of element-wise ops per parameter."""
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[variant.optimizer]
    return cls(params, lr=variant.lr, fused=fused)


def batch_sizes(variant: Variant, n_unlabelled: int, n_labelled: int) -> tuple[int, int]:
    """(unlabelled, labelled) rows per step. fixed: the variant's sizes (labelled at most the
    label count); paper: Kingma et al.'s code, 100 minibatches an epoch at 100 labels, else 200,
    each with an equal share of the labelled and of the unlabelled images (1 + 499 at 100 labels,
    3 + 247 at 600, 15 + 235 at 3000 on 50,000 training images)."""
    if variant.batch_rule == "paper":
        batches = 100 if n_labelled == 100 else 200
        return max(1, n_unlabelled // batches), max(1, n_labelled // batches)
    return variant.batch_size, min(variant.labelled_batch_size, n_labelled)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Trainer:
    def __init__(
        self,
        variant: Variant,
        splits: Splits,
        device: torch.device | str | None = None,
        max_steps: int | None = None,
        progress: bool = True,
    ) -> None:
        self.variant = variant
        self.device = resolve_device(device) if not isinstance(device, torch.device) else device
        self.progress = progress
        torch.manual_seed(variant.seed)
        self.model = M2.from_variant(variant).to(self.device)
        self.optimizer = make_optimizer(variant, self.model.parameters())
        self.generator = torch.Generator(self.device).manual_seed(variant.seed)
        self.splits = splits

        labelled = balanced_label_subset(splits.train_y, variant.labels, NUM_CLASSES, variant.seed)
        is_labelled = torch.zeros(len(splits.train_y), dtype=torch.bool)
        is_labelled[labelled] = True
        labelled, unlabelled = labelled.to(self.device), (~is_labelled).nonzero().flatten()
        self.x_l, self.y_l = splits.train_x[labelled], splits.train_y[labelled]
        self.x_u = splits.train_x[unlabelled.to(self.device)]

        self.batch_size, self.labelled_batch = batch_sizes(variant, len(self.x_u), len(self.x_l))
        self.full_steps_per_epoch = max(1, len(self.x_u) // self.batch_size)
        self.steps_per_epoch = min(
            self.full_steps_per_epoch, max_steps or self.full_steps_per_epoch
        )
        self.alpha_full = alpha_scale(
            variant,
            self.full_steps_per_epoch,
            math.ceil(len(self.x_l) / self.labelled_batch),
            len(self.x_l),
            len(self.x_l) + len(self.x_u),
        )
        self.check_every = 1 if self.device.type == "cpu" else 50  # host syncs for the NaN check
        self.epoch = 0
        self.step = 0
        self.history: list[EpochReport] = []

    def alpha_at(self, step: int) -> float:
        return self.alpha_full * alpha_ramp(self.variant, step, self.full_steps_per_epoch)

    def _epoch_order(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Unlabelled indices in a fresh random order; labelled ones cycled to cover the epoch."""
        g, dev = self.generator, self.device
        order_u = torch.randperm(len(self.x_u), generator=g, device=dev)
        cycles = math.ceil(self.steps_per_epoch * self.labelled_batch / len(self.x_l))
        order_l = torch.cat(
            [torch.randperm(len(self.x_l), generator=g, device=dev) for _ in range(cycles)]
        )
        return order_u, order_l

    def backward(self, idx_u: torch.Tensor, idx_l: torch.Tensor) -> torch.Tensor:
        """The loss terms on one batch drawn by index, at this step's alpha and temperature,
        and their gradients; returns the terms stacked in TERMS order (no host sync)."""
        v = self.variant
        terms = m2_loss(
            self.model,
            self.x_l[idx_l],
            self.y_l[idx_l],
            self.x_u[idx_u],
            estimator=v.estimator,
            alpha=self.alpha_at(self.step),
            temperature=temperature_at(v, self.step),
            y_term=v.y_term,
            generator=self.generator,
            per_row=v.term_weighting == "per-row",
        )
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        return torch.stack([terms[t].detach() for t in TERMS])

    def _raise_if_nonfinite(self, first_bad: torch.Tensor, bad_values: torch.Tensor) -> None:
        found = (first_bad >= 0).nonzero().flatten().tolist()
        if found:
            term = min(found, key=lambda i: first_bad[i].item())
            raise NonFiniteLossError(int(first_bad[term]), TERMS[term], float(bad_values[term]))

    def run_epoch(self) -> EpochReport:
        v, B, B_l = self.variant, self.batch_size, self.labelled_batch
        self.model.train()
        order_u, order_l = self._epoch_order()
        sums = torch.zeros(len(TERMS), device=self.device)
        first_bad = torch.full((len(TERMS),), -1, dtype=torch.long, device=self.device)
        bad_values = torch.zeros(len(TERMS), device=self.device)
        _synchronize(self.device)
        start = time.perf_counter()
        for i in tqdm(
            range(self.steps_per_epoch),
            desc=f"epoch {self.epoch + 1}",
            leave=False,
            disable=None if self.progress else True,
        ):
            idx_u, idx_l = order_u[i * B : (i + 1) * B], order_l[i * B_l : (i + 1) * B_l]
            values = self.backward(idx_u, idx_l)
            bad = ~torch.isfinite(values) & (first_bad < 0)
            first_bad = torch.where(bad, self.step, first_bad)
            bad_values = torch.where(bad, values, bad_values)
            if (i + 1) % self.check_every == 0:
                self._raise_if_nonfinite(first_bad, bad_values)
            self.optimizer.step()
            sums += values
            self.step += 1
        _synchronize(self.device)
        seconds = time.perf_counter() - start
        self._raise_if_nonfinite(first_bad, bad_values)
        self.epoch += 1

        test_accuracy = self.accuracy(self.splits.test_x, self.splits.test_y)
        val_accuracy = (
            self.accuracy(self.splits.val_x, self.splits.val_y) if len(self.splits.val_x) else None
        )
        means = (sums / self.steps_per_epoch).tolist()
        report = EpochReport(
            epoch=self.epoch,
            steps=self.steps_per_epoch,
            losses=dict(zip(TERMS, means, strict=True)),
            test_accuracy=test_accuracy,
            test_error=100.0 * (1.0 - test_accuracy),
            val_accuracy=val_accuracy,
            samples_per_sec=self.steps_per_epoch * (B + B_l) / seconds,
            epoch_seconds=seconds,
            temperature=temperature_at(v, self.step - 1),
            alpha=self.alpha_at(self.step - 1),
        )
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
        """Train until `variant.epochs`; after every epoch save the checkpoint (if a path is
        given), then call each callback. Returns the reports of all epochs so far."""
        callbacks = list(on_epoch_end)
        while self.epoch < self.variant.epochs:
            report = self.run_epoch()
            if checkpoint is not None:
                save_checkpoint(checkpoint, self.state_dict())
            for callback in callbacks:
                callback(report)
        return self.history

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
        ours = resumable_settings(self.variant.params())
        theirs = resumable_settings(state["variant"])
        if ours != theirs:
            changed = sorted(k for k in ours if ours[k] != theirs.get(k))
            raise ValueError(f"checkpoint is of another variant (differs in {', '.join(changed)})")
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
