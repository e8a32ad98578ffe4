"""Rows/s of a checkpointed run's next steps with PyTorch's default arithmetic and with subnormal
floats flushed to zero (`torch.set_flush_denormal(True)`), side by side in one process, and of the
same variant freshly initialised: late in training some values fall below about 1e-38, where a
CPU computes far slower.

M2_DATA_ROOT=../shared/data python benchmarks/subnormals.py results/checkpoints/NAME.pt [--steps 10]
"""

from __future__ import annotations

import argparse
import time

import torch

from harness.config.variants import Variant
from harness.training.data import load_splits, resolve_data_root
from harness.training.trainer import Trainer


def rows_per_second(trainer: Trainer, steps: int) -> float:
    order_u, order_l = trainer.epoch_order()
    start = time.perf_counter()
    for rows_u, rows_l in trainer.plan[:steps]:
        trainer.train_step(order_u[rows_u], order_l[rows_l])
    rows = sum(u.stop - u.start + lab.stop - lab.start for u, lab in trainer.plan[:steps])
    return rows / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    state = torch.load(args.checkpoint, weights_only=False, map_location="cpu")
    variant = Variant(**state["variant"])
    splits = load_splits(variant.dataset, resolve_data_root(None), "cpu", variant.validation)
    trained = Trainer(variant, splits, "cpu", progress=False)
    trained.stepper.load_seed_states([{k: state[k] for k in ("model", "optimizer", "generator")}])
    fresh = Trainer(variant, splits, "cpu", progress=False)
    print(f"{variant.name}, one thread, {args.steps} steps each")
    for name, trainer in ((f"after epoch {state['epoch']}", trained), ("fresh", fresh)):
        speeds = []
        for flush in (False, True):
            torch.set_flush_denormal(flush)
            speeds.append(rows_per_second(trainer, args.steps))
        print(
            f"  {name}: {speeds[0]:,.0f} rows/s as is, {speeds[1]:,.0f} flushed "
            f"({speeds[1] / speeds[0]:.1f}x)"
        )


if __name__ == "__main__":
    main()
