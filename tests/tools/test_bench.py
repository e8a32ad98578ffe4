from __future__ import annotations

import pytest
import torch

from harness.cli.main import main
from harness.config.variants import create_variant
from harness.tools.bench import (
    count_flops,
    harness_step,
    reference_step,
    side_by_side,
    stacked_side_by_side,
)
from harness.training.data import synthetic_splits
from harness.training.trainer import Trainer


def test_synthetic_splits_have_mnist_shapes_and_balanced_labels():
    splits = synthetic_splits(torch.device("cpu"), train=1000, test=100)
    assert splits.train_x.shape == (1000, 784) and splits.test_x.shape == (100, 784)
    assert torch.bincount(splits.train_y).tolist() == [100] * 10


def test_fused_step_does_less_arithmetic_than_the_loop_over_classes():
    """The fused exact step computes the encoder's x half once per image, not once per class."""
    device = torch.device("cpu")
    splits = synthetic_splits(device, train=2000, test=100)
    variant = create_variant("exact")
    fused = count_flops(harness_step(Trainer(variant, splits, device, progress=False)))
    looped = count_flops(reference_step(variant, splits, device))
    # the loop's extra work: the encoder's x half (128 x 784 -> 512) for 9 more classes, forward
    # and weight gradient (the images need no gradient)
    x_part_per_class = 2 * (2 * 128 * 784 * 512) * 9
    assert looped - fused == pytest.approx(x_part_per_class, rel=0.02)


def test_side_by_side_and_the_bench_command(capsys, data_root, monkeypatch):
    from harness.experiments import machine

    monkeypatch.setattr(machine, "load", lambda: 0.0)  # a quiet machine: the ratio is printed
    device = torch.device("cpu")
    splits = synthetic_splits(device, train=2000, test=100)
    peak, ours, theirs = side_by_side(create_variant("exact"), splits, device, repeats=2)
    assert peak > 0 and ours.rows == theirs.rows == 228
    assert ours.flops < theirs.flops and ours.seconds > 0 and theirs.seconds > 0
    assert main(["bench", "exact", "--repeats", "2", "--data-root", str(data_root)]) == 0
    out = capsys.readouterr().out
    assert "matmul peak" in out and "speed-up of the harness over the reference:" in out
    assert main(["bench", "gumbel-st", "--repeats", "2"]) == 1
    monkeypatch.setattr(machine, "load", lambda: 5.0)  # a busy one: no misleading ratio
    assert main(["bench", "exact", "--repeats", "2", "--data-root", str(data_root)]) == 0
    out = capsys.readouterr().out
    assert "no ratio: the machine is busy" in out and "speed-up" not in out


def test_stacked_side_by_side_counts_every_seeds_work(capsys, data_root, monkeypatch):
    from harness.experiments import machine

    monkeypatch.setattr(machine, "load", lambda: 0.0)
    device = torch.device("cpu")
    splits = synthetic_splits(device, train=2000, test=100)
    variant = create_variant("tutorial-gumbel")
    _, alone, stacked = stacked_side_by_side(variant, splits, device, seeds=3, repeats=2)
    assert stacked.rows == 3 * alone.rows == 3 * 228
    assert stacked.flops == pytest.approx(3 * alone.flops, rel=0.01)
    args = ["bench", "tutorial-gumbel", "--seeds", "2", "--repeats", "2"]
    assert main([*args, "--data-root", str(data_root)]) == 0
    assert "rows/s per seed" in capsys.readouterr().out
    assert main(["bench", "exact", "--seeds", "1"]) == 1
    assert "--seeds must be >= 2" in capsys.readouterr().err
