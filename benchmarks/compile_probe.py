"""Eager against torch.compile'd M2 loss, side by side in one process, for each estimator:
    python benchmarks/compile_probe.py [cpu|cuda]
Prints ms per training step, the fraction of the matmul peak, and the compiled/eager ratio."""

from __future__ import annotations

import sys

import torch

import harness.trainer as trainer_module
from harness.bench import count_flops, harness_step, matmul_peak, synthetic_splits, time_call
from harness.loss import m2_loss
from harness.trainer import Trainer
from harness.variants import create_variant


def main(device_name: str = "cpu") -> None:
    device = torch.device(device_name)
    splits, peak = synthetic_splits(device), matmul_peak(device)
    compiled = torch.compile(m2_loss)
    for name in ["tutorial-gumbel", "gumbel-st", "exact"]:
        timings = {}
        for label, loss in [("eager", m2_loss), ("compiled", compiled)]:
            trainer_module.m2_loss = loss  # the trainer's step calls the loss by this name
            step = harness_step(Trainer(create_variant(name), splits, device, progress=False))
            flops = count_flops(step)
            timings[label] = time_call(step, device, repeats=30, warmup=3)
            print(
                f"{name:16} {label:8} {1e3 * timings[label]:7.2f} ms/step "
                f"({flops / timings[label] / peak:.0%} of a {peak / 1e9:.0f} GFLOP/s peak)"
            )
        trainer_module.m2_loss = m2_loss
        print(f"{name:16} compiled/eager time: {timings['compiled'] / timings['eager']:.2f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
