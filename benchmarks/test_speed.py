"""Speed of the harness (pytest-benchmark; outside the default test run): `nox -s bench` or
`pytest benchmarks --benchmark-only`. Each benchmark records rows/s and the achieved FLOP rate as
a fraction of a matrix-multiply peak measured in the same run on the same device."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import harness.training.distributions as distributions
from harness.config.variants import create_variant
from harness.families.m2 import FAMILY, M2, m2_loss
from harness.tools.bench import count_flops, harness_step, matmul_peak
from harness.tools.reference import reference_exact_loss
from harness.training.data import synthetic_splits
from harness.training.family import predict
from harness.training.networks import ACTIVATIONS
from harness.training.trainer import Trainer, synchronize

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
ESTIMATOR_VARIANTS = {
    "exact": "exact",
    "gumbel": "gumbel-0.5",
    "gumbel-st": "gumbel-st",
    "tutorial": "tutorial-gumbel",
}


@pytest.fixture(scope="module", params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture(scope="module")
def peak(device):
    return matmul_peak(device)


@pytest.fixture(scope="module")
def splits(device):
    return synthetic_splits(device)


def _record(benchmark, fn, device, rows, peak, seeds=1):
    def timed():
        fn()
        synchronize(device)

    benchmark.pedantic(timed, rounds=30, warmup_rounds=3, iterations=1)
    seconds = benchmark.stats.stats.median
    flops = count_flops(fn)
    benchmark.extra_info.update(
        device=str(device),
        rows_per_sec=rows / seconds,
        rows_per_sec_per_seed=rows / seconds / seeds,
        gflop_per_sec=flops / seconds / 1e9,
        matmul_peak_gflop_per_sec=peak / 1e9,
        fraction_of_peak=flops / seconds / peak,
    )


@pytest.mark.parametrize("estimator", list(ESTIMATOR_VARIANTS))
def test_training_step(benchmark, estimator, device, splits, peak):
    trainer = Trainer(create_variant(ESTIMATOR_VARIANTS[estimator]), splits, device, progress=False)
    rows = trainer.batch_size + trainer.labelled_batch
    _record(benchmark, harness_step(trainer), device, rows, peak)


@pytest.mark.parametrize("option", ["bf16", "compile"])
@pytest.mark.parametrize("estimator", ["exact", "tutorial"])
def test_training_step_with_a_speed_option(benchmark, option, estimator, device, splits, peak):
    """bf16 autocast, or torch.compile of the loss: compare with test_training_step."""
    trainer = Trainer(
        create_variant(ESTIMATOR_VARIANTS[estimator]),
        splits,
        device,
        progress=False,
        precision="bf16" if option == "bf16" else "fp32",
        compile=option == "compile",
    )
    rows = trainer.batch_size + trainer.labelled_batch
    _record(benchmark, harness_step(trainer), device, rows, peak)


@pytest.mark.parametrize("softplus", ["torch", "harness"])
@pytest.mark.parametrize("variant", ["exact", "paper-exact", "m1m2-paper"])
def test_softplus_step(benchmark, variant, softplus, device, splits, peak, monkeypatch):
    """A step with torch's softplus (nn.Softplus, F.softplus) against the harness's
    (softplus.py), side by side in one run: exact (ReLU units; softplus in the Bernoulli
    likelihood only), paper-exact (softplus units, 1 + 499 rows at 100 labels, on pixels) and
    m1m2-paper (the same on 12 generated features, as many as the committed M1 keeps; Gaussian
    likelihood)."""
    if softplus == "torch":
        monkeypatch.setitem(ACTIVATIONS, "softplus", nn.Softplus)
        monkeypatch.setattr(distributions, "softplus", F.softplus)
    if variant == "m1m2-paper":
        features = {k: getattr(splits, k)[:, :12] for k in ("train_x", "val_x", "test_x")}
        splits = replace(splits, **features, train_std=torch.full_like(features["train_x"], 0.1))
    trainer = Trainer(create_variant(variant), splits, device, progress=False)
    rows = trainer.batch_size + trainer.labelled_batch
    _record(benchmark, harness_step(trainer), device, rows, peak)


@pytest.mark.parametrize("seeds", [4, 8])
@pytest.mark.parametrize("estimator", ["exact", "tutorial"])
def test_stacked_training_step(benchmark, estimator, seeds, device, splits, peak):
    """Several seeds in one step (harness.training.stacked): rows/s in all and per seed."""
    variant = create_variant(ESTIMATOR_VARIANTS[estimator])
    trainer = Trainer(variant, splits, device, progress=False, seeds=range(seeds))
    rows = seeds * (trainer.batch_size + trainer.labelled_batch)
    _record(benchmark, harness_step(trainer), device, rows, peak, seeds)


@pytest.mark.parametrize("implementation", ["fused", "loop"])
def test_exact_loss_fused_against_a_loop_over_classes(
    benchmark, implementation, device, splits, peak
):
    torch.manual_seed(0)
    model = M2().to(device)
    x_l, y_l, x_u = splits.train_x[:100], splits.train_y[:100], splits.train_x[100:228]

    def loss_and_grad():
        if implementation == "fused":
            loss = m2_loss(model, x_l, y_l, x_u, estimator="exact", alpha=1.0)["loss"]
        else:
            loss = reference_exact_loss(model, x_l, y_l, x_u, alpha=1.0)["loss"]
        model.zero_grad(set_to_none=True)
        loss.backward()

    _record(benchmark, loss_and_grad, device, len(x_l) + len(x_u), peak)


def test_evaluation_of_the_test_set(benchmark, device, splits, peak):
    model = M2().to(device)
    test_x = splits.test_x
    _record(benchmark, lambda: predict(FAMILY, model, test_x), device, len(test_x), peak)
