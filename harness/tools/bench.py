"""Speed measurement: one training step of the harness against a matrix-multiply peak measured in
the same process, and against a straightforward reference implementation of the same model.

The reference is what a first M2 implementation looks like: batches from a DataLoader over the
images on the host, copied to the device each step, and the exact estimator as a Python loop over
the classes (`harness.tools.reference`). Both train the same network with the same optimiser.
"""

from __future__ import annotations

import functools
import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from harness.config.variants import Variant
from harness.families.m2 import M2
from harness.tools.reference import reference_exact_loss
from harness.training.data import Splits
from harness.training.step import make_optimizer
from harness.training.trainer import Trainer, synchronize


@dataclass
class Timing:
    name: str
    seconds: float  # median seconds per call
    rows: int  # training rows per call (labelled + unlabelled)
    flops: int  # floating-point operations per call

    @property
    def rows_per_sec(self) -> float:
        return self.rows / self.seconds

    @property
    def flop_rate(self) -> float:
        return self.flops / self.seconds


def time_call(
    fn: Callable[[], object], device: torch.device, repeats: int = 20, warmup: int = 3
) -> float:
    """Median seconds of `fn`, the device synchronised around each call."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def matmul_peak(
    device: torch.device,
    size: int = 2048,
    dtype: torch.dtype = torch.float32,
    call_seconds: float = 0.05,
) -> float:
    """FLOP/s of a large square matrix product on `device`: the yardstick for a step's rate.
    The side doubles from 256 until one product takes `call_seconds` or the side is `size`, so
    a precision the device runs slowly (bf16 on a CPU without bf16 instructions) is measured in
    about a second instead of minutes."""
    side = 256
    while True:
        a, b = (torch.randn(side, side, device=device, dtype=dtype) for _ in range(2))
        product = functools.partial(torch.matmul, a, b)
        # the median of three calls: one call slowed by another process would stop it early,
        # on a side too small to reach the device's rate
        if side >= size or time_call(product, device, repeats=3, warmup=1) >= call_seconds:
            break
        side *= 2
    seconds = time_call(product, device, repeats=10, warmup=2)
    return 2 * side**3 / seconds


def slow_precision(device: torch.device, peaks: dict[str, float]) -> str | None:
    """Why bf16 is not worth timing here, or None: on a CPU whose bf16 products run at under a
    quarter of its fp32 rate (no bf16 instructions: emulated, 16-25x slower per step), a bf16
    measurement says nothing a GPU run needs and takes minutes."""
    ratio = peaks["bf16"] / peaks["fp32"]
    if device.type == "cpu" and ratio < 0.25:
        return f"not run: this CPU multiplies bf16 at {ratio:.0%} of its fp32 rate (emulated)"
    return None


def check_fixed_batches(variant: Variant) -> None:
    """A benchmark times steps of one size (labelled and unlabelled rows together); refuse the
    alternating batch rule, whose labelled and unlabelled steps differ."""
    if variant.batch_rule == "alternating":
        raise ValueError(
            f"m2h bench times steps of one size; {variant.name} alternates labelled and "
            "unlabelled steps (batch_rule=alternating): bench it with --set batch_rule=fixed"
        )


def harness_step(trainer: Trainer) -> Callable[[], None]:
    """One training step exactly as the trainer runs it (batch indices drawn on the device)."""
    order_u, order_l = trainer.epoch_order()
    steps = itertools.cycle(trainer.plan)

    def step() -> None:
        rows_u, rows_l = next(steps)
        trainer.train_step(order_u[..., rows_u], order_l[..., rows_l])

    return step


def reference_step(variant: Variant, splits: Splits, device: torch.device) -> Callable[[], None]:
    """One step of the plain implementation: DataLoader batches from the host, a per-class loop."""
    torch.manual_seed(variant.seed)
    model = M2.from_variant(variant).to(device)
    optimizer = make_optimizer(variant, model.parameters(), fused=False)
    cpu_x, cpu_y = splits.train_x.cpu(), splits.train_y.cpu()
    labelled = DataLoader(
        TensorDataset(cpu_x[: variant.labels], cpu_y[: variant.labels]),
        batch_size=min(variant.labelled_batch_size, variant.labels),
        shuffle=True,
    )
    unlabelled = DataLoader(
        TensorDataset(cpu_x[variant.labels :]),
        batch_size=variant.batch_size,
        shuffle=True,
        drop_last=True,
    )
    batches = zip(itertools.cycle(labelled), itertools.cycle(unlabelled), strict=False)

    def step() -> None:
        (x_l, y_l), (x_u,) = next(batches)
        loss = reference_exact_loss(
            model, x_l.to(device), y_l.to(device), x_u.to(device), alpha=1.0
        )["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def measure(
    name: str, step: Callable[[], None], rows: int, device: torch.device, repeats: int = 20
) -> Timing:
    return Timing(name, time_call(step, device, repeats), rows, count_flops(step))


def side_by_side(
    variant: Variant, splits: Splits, device: torch.device, repeats: int = 30
) -> tuple[float, Timing, Timing]:
    """The matmul peak, then the harness's exact step and the reference's, in one process."""
    check_fixed_batches(variant)
    peak = matmul_peak(device)
    trainer = Trainer(variant, splits, device, progress=False)
    rows = trainer.batch_size + trainer.labelled_batch
    ours = measure("harness (fused, data on device)", harness_step(trainer), rows, device, repeats)
    theirs = measure(
        "reference (DataLoader, loop over classes)",
        reference_step(variant, splits, device),
        rows,
        device,
        repeats,
    )
    return peak, ours, theirs


def stacked_side_by_side(
    variant: Variant, splits: Splits, device: torch.device, seeds: int, repeats: int = 30
) -> tuple[float, Timing, Timing]:
    """The matmul peak, then one seed's step alone and `seeds` seeds' stacked step, in one
    process; the stacked Timing counts the rows of every seed."""
    check_fixed_batches(variant)
    peak = matmul_peak(device)
    trainer = Trainer(variant, splits, device, progress=False)
    rows = trainer.batch_size + trainer.labelled_batch
    alone = measure("one seed alone", harness_step(trainer), rows, device, repeats)
    stack = Trainer(variant, splits, device, progress=False, seeds=range(seeds))
    stacked = measure(f"{seeds} seeds stacked", harness_step(stack), seeds * rows, device, repeats)
    return peak, alone, stacked
