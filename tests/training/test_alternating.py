"""Pyro's SS-VAE loop: labelled and unlabelled images in steps of their own (batch_rule
alternating), each step's loss the sum over its images (term_weighting sum)."""

from __future__ import annotations

import pytest
import torch

from harness.config.variants import VariantError, create_variant
from harness.families.m2 import M2, m2_loss
from harness.training.data import synthetic_splits
from harness.training.trainer import Trainer, epoch_plan


def _labelled_steps(plan):
    return [(i, s.start, s.stop) for i, (_, s) in enumerate(plan) if s.stop > s.start]


@pytest.mark.parametrize(
    ("labels", "steps", "labelled"),
    [
        (100, 250, [(1, 0, 100)]),  # Pyro: one labelled batch, the epoch's second step
        (600, 250, [(1, 0, 200), (84, 200, 400), (167, 400, 600)]),  # every int(50000/600)
        (3000, 250, [(1 + 16 * k, 200 * k, 200 * k + 200) for k in range(15)]),
    ],
)
def test_the_labelled_steps_fall_where_pyros_loop_puts_them(labels, steps, labelled):
    variant = create_variant("pyro-m2", {"labels": labels})
    plan = epoch_plan(variant, 50_000 - labels, labels, 200, min(200, labels))
    assert len(plan) == steps
    assert _labelled_steps(plan) == labelled
    unlabelled = [s for s, _ in plan if s.stop > s.start]
    assert [(s.start, s.stop) for s in unlabelled] == [
        (200 * k, 200 * k + 200) for k in range(len(unlabelled))
    ]  # each unlabelled image once, in order of the epoch's permutation


def test_the_fixed_plan_is_the_steps_batches():
    plan = epoch_plan(create_variant("exact"), 1000, 100, 128, 100)
    assert plan == [
        (slice(128 * i, 128 * i + 128), slice(100 * i, 100 * i + 100)) for i in range(7)
    ]


def _batch(n_l: int, n_u: int):
    g = torch.Generator().manual_seed(0)
    return (
        torch.rand(n_l, 784, generator=g),
        torch.arange(n_l) % 10,
        torch.rand(n_u, 784, generator=g),
    )


def test_the_summed_loss_of_a_step_of_one_kind_is_its_sums():
    torch.manual_seed(0)
    model = M2(hidden=16, z_dim=4)
    x_l, y_l, x_u = _batch(4, 6)
    kw = dict(estimator="exact", alpha=46.0)
    both = m2_loss(model, x_l, y_l, x_u, generator=torch.Generator().manual_seed(1), **kw)
    summed = m2_loss(
        model, x_l, y_l, x_u, generator=torch.Generator().manual_seed(1), weighting="sum", **kw
    )
    expected = 4 * both["labelled"] + 6 * both["unlabelled"] + 46.0 * 4 * both["classification"]
    assert summed["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    empty = x_u[:0]
    labelled_only = m2_loss(model, x_l, y_l, empty, weighting="sum", **kw)
    assert labelled_only["unlabelled"].item() == 0.0
    assert torch.isfinite(labelled_only["loss"])
    # the labelled ELBO never reaches q(y|x): the classifier's gradient is the classification's
    grads = torch.autograd.grad(labelled_only["loss"], list(model.classifier.parameters()))
    ce = torch.nn.functional.cross_entropy(model.classify(x_l), y_l, reduction="sum") * 46.0
    for ours, theirs in zip(
        grads, torch.autograd.grad(ce, list(model.classifier.parameters())), strict=True
    ):
        torch.testing.assert_close(ours, theirs)
    unlabelled_only = m2_loss(model, x_l[:0], y_l[:0], x_u, weighting="sum", **kw)
    assert unlabelled_only["labelled"].item() == 0.0
    assert unlabelled_only["classification"].item() == 0.0
    assert torch.isfinite(unlabelled_only["loss"])


def test_an_alternating_epoch_reports_each_term_over_its_own_steps():
    splits = synthetic_splits(torch.device("cpu"), train=4_100, test=200, validation=100)
    variant = create_variant("pyro-m2", {"validation": 100, "labelled_batch_size": 50})
    trainer = Trainer(variant, splits, "cpu", progress=False)
    assert trainer.full_steps_per_epoch == 4_000 // 200 + 2  # 20 unlabelled, 2 labelled
    seen = []

    def fake_step(idx_u, idx_l, before_update=None):  # terms: loss, labelled, unlabelled, CE
        seen.append((idx_u.numel(), idx_l.numel()))
        return torch.tensor([[4.0, 2.0, 0.0, 1.0]] if idx_l.numel() else [[40.0, 0.0, 30.0, 0.0]])

    trainer.train_step = fake_step  # type: ignore[method-assign]
    (report,) = trainer.run_epoch()
    assert sorted(set(seen)) == [(0, 50), (200, 0)] and seen.count((0, 50)) == 2
    # the loss over all 22 steps; the labelled and classification terms over the 2 labelled
    # steps, the unlabelled term over the 20 unlabelled ones
    assert report.losses == pytest.approx(
        {
            "loss": (2 * 4.0 + 20 * 40.0) / 22,
            "labelled": 2.0,
            "unlabelled": 30.0,
            "classification": 1.0,
        }
    )
    assert report.samples_per_sec * report.epoch_seconds == pytest.approx(4_000 + 100)


def test_the_alternating_rule_is_refused_where_it_cannot_run():
    with pytest.raises(VariantError, match="supervised-only control has nothing to learn"):
        create_variant("supervised-only", {"batch_rule": "alternating"})
    splits = synthetic_splits(torch.device("cpu"), train=2_000, test=100, validation=100)
    with pytest.raises(ValueError, match="CUDA graphs replay one batch shape"):
        Trainer(create_variant("pyro-m2", {"validation": 100}), splits, "cpu", cuda_graphs=True)
