"""Pinned golden runs: a tiny fixed problem trained a few steps by each estimator and loop, its
losses and predictions kept to the last bit, so that a change which moves any number is seen.

Floating point depends on the kernels the CPU runs (PyTorch picks them by instruction set, and
the BLAS by the processor), so each machine kind has its own pins, keyed by `numerics_key()`
(the instruction set torch uses, the processor's vendor and model). `tests/training/test_golden.py`
compares this machine's runs with its pins, where there are some, and a change that moves them is
a numerics change: bump `NUMERICS_VERSION` (records name the version they ran under) and write the
pins again:

    python -m harness.tools.golden --write     # this machine kind's pins, in tests/golden_runs.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from harness.config.variants import create_variant
from harness.runs.provenance import cpu_model, cpu_vendor
from harness.training.data import synthetic_splits
from harness.training.numerics import NUMERICS_VERSION
from harness.training.trainer import Trainer

PINS = Path(__file__).resolve().parents[2] / "tests" / "golden_runs.json"
# every estimator and loop, on networks small enough that all of them train in a few seconds
TINY = {"hidden": 32, "z_dim": 8, "validation": 100, "patience": 0, "epochs": 2}
CASES: dict[str, dict[str, Any]] = {
    "exact": {"labelled_batch_size": 50, "batch_size": 64},
    "tutorial-gumbel": {"labelled_batch_size": 50, "batch_size": 64},
    "gumbel-st": {"labelled_batch_size": 50, "batch_size": 64},
    "gumbel-anneal": {"labelled_batch_size": 50, "batch_size": 64, "anneal_every": 2},
    "supervised-only": {"labelled_batch_size": 50, "batch_size": 64},
    "paper-exact": {},
    "pyro-m2": {"batch_size": 64},
}
STEPS = 6  # per epoch


def numerics_key() -> str:
    """What decides this machine's floating point: torch's CPU instruction set, the vendor and
    the processor's model (the BLAS picks kernels by model too, so a pin holds where all three
    agree)."""
    return f"{torch.backends.cpu.get_cpu_capability()}/{cpu_vendor()}/{cpu_model()}"


def golden_run(name: str) -> dict[str, Any]:
    """`name` with the TINY settings and its CASES overrides, trained STEPS steps an epoch for two
    epochs on one thread: each epoch's loss terms and accuracies as exact hexadecimal floats, and
    a digest of the last epoch's test predictions."""
    torch.set_num_threads(1)
    splits = synthetic_splits(torch.device("cpu"), train=1_100, test=200, validation=100)
    variant = create_variant(name, {**TINY, **CASES[name]})
    trainer = Trainer(variant, splits, "cpu", max_steps=STEPS, progress=False)
    epochs = []
    for _ in range(variant.epochs):
        (report,) = trainer.run_epoch()
        epochs.append(
            {
                **{term: float(value).hex() for term, value in report.losses.items()},
                "test_accuracy": float(report.test_accuracy).hex(),
                "val_accuracy": float(report.val_accuracy or 0.0).hex(),
            }
        )
    predicted = trainer.stepper.predictions(splits.test_x).numpy().tobytes()
    return {"epochs": epochs, "predictions": hashlib.sha1(predicted).hexdigest()}


def golden_runs() -> dict[str, Any]:
    return {name: golden_run(name) for name in CASES}


def read_pins(path: Path = PINS) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {"numerics_version": 0, "pins": {}}


def write_pins(path: Path = PINS) -> Path:
    """This machine kind's golden runs into `path` under the current NUMERICS_VERSION (other
    kinds' pins are kept only if they were written under the same version)."""
    pins = read_pins(path)
    kept = pins["pins"] if pins["numerics_version"] == NUMERICS_VERSION else {}
    kept[numerics_key()] = golden_runs()
    body = {"numerics_version": NUMERICS_VERSION, "pins": dict(sorted(kept.items()))}
    path.write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.tools.golden", description=__doc__)
    parser.add_argument("--write", action="store_true", help="write this machine kind's pins")
    args = parser.parse_args(argv)
    if args.write:
        print(f"wrote the golden runs of {numerics_key()} to {write_pins()}")
    else:
        print(json.dumps({numerics_key(): golden_runs()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
