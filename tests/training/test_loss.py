from __future__ import annotations

import math

import pytest
import torch

from harness.families.m2 import M2, m2_loss
from harness.tools.reference import reference_exact_loss

ESTIMATORS = ["exact", "gumbel", "gumbel-st", "supervised"]


def _batch(n_l=6, n_u=9, x_dim=784, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.rand(n_l, x_dim, generator=g),
        torch.randint(0, 10, (n_l,), generator=g),
        torch.rand(n_u, x_dim, generator=g),
    )


def test_fused_exact_equals_loop_over_classes():
    torch.manual_seed(0)
    model = M2(hidden=64, z_dim=8)
    x_l, y_l, x_u = _batch()
    fused = m2_loss(
        model,
        x_l,
        y_l,
        x_u,
        estimator="exact",
        alpha=3.0,
        generator=torch.Generator().manual_seed(7),
    )
    looped = reference_exact_loss(
        model, x_l, y_l, x_u, alpha=3.0, generator=torch.Generator().manual_seed(7)
    )
    for term in fused:
        torch.testing.assert_close(fused[term], looped[term], rtol=1e-5, atol=1e-5)
    fused["loss"].backward()
    fused_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    looped["loss"].backward()
    for a, b in zip(fused_grads, [p.grad for p in model.parameters()], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _hand_model() -> M2:
    """x_dim=2, K=2, hidden=1, z=1 with weights set so every quantity is hand-computable:
    loc = 1 (y=0) or 2 (y=1), logvar = 0, decoder logits [h, -h] with h = 1 or 3 (z unused),
    q(y|x) = [1/4, 3/4] for every x."""
    model = M2(x_dim=2, num_classes=2, hidden=1, z_dim=1)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.classifier[2].bias.copy_(torch.tensor([0.0, math.log(3.0)]))
        model.enc_y.weight.copy_(torch.tensor([[1.0, 2.0]]))
        model.enc_loc.weight.fill_(1.0)
        model.dec_y.weight.copy_(torch.tensor([[1.0, 3.0]]))
        model.dec_out.weight.copy_(torch.tensor([[1.0], [-1.0]]))
    return model


def test_loss_matches_hand_computation():
    model = _hand_model()
    x_l, y_l = torch.tensor([[1.0, 0.0]]), torch.tensor([1])
    x_u = torch.tensor([[0.0, 1.0]])

    def softplus(v):
        return math.log1p(math.exp(v))

    def neg_elbo(x, y):  # -log p(x|y,z) - log p(y) + KL(q(z|x,y) || p(z))
        h, loc = (1.0, 1.0) if y == 0 else (3.0, 2.0)
        log_px = x[0] * h - softplus(h) + x[1] * (-h) - softplus(-h)
        return -log_px + math.log(2) + 0.5 * loc**2

    q = [0.25, 0.75]
    labelled = neg_elbo([1.0, 0.0], 1)
    unlabelled = sum(q[y] * neg_elbo([0.0, 1.0], y) for y in range(2)) + sum(
        p * math.log(p) for p in q
    )
    classification = -math.log(0.75)
    terms = m2_loss(model, x_l, y_l, x_u, estimator="exact", alpha=2.0)
    assert terms["labelled"].item() == pytest.approx(labelled, rel=1e-6)
    assert terms["unlabelled"].item() == pytest.approx(unlabelled, rel=1e-6)
    assert terms["classification"].item() == pytest.approx(classification, rel=1e-6)
    assert terms["loss"].item() == pytest.approx(
        labelled + unlabelled + 2.0 * classification, rel=1e-6
    )


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_gradients_reach_every_network(estimator):
    torch.manual_seed(0)
    model = M2(hidden=32, z_dim=4)
    x_l, y_l, x_u = _batch()
    m2_loss(model, x_l, y_l, x_u, estimator=estimator, alpha=1.0, temperature=0.5)[
        "loss"
    ].backward()
    for name, p in model.named_parameters():
        reached = p.grad is not None and p.grad.abs().sum() > 0
        if estimator == "supervised":
            assert reached == name.startswith("classifier"), name
        else:
            assert reached, f"{name} gets no gradient under {estimator}"


def test_classifier_learns_from_unlabelled_data_under_every_estimator():
    torch.manual_seed(0)
    model = M2(hidden=32, z_dim=4)
    x_l, y_l, x_u = _batch()
    for estimator in ["exact", "gumbel", "gumbel-st"]:
        model.zero_grad()
        m2_loss(model, x_l, y_l, x_u, estimator=estimator, alpha=0.0)["unlabelled"].backward()
        assert model.classifier[0].weight.grad.abs().sum() > 0, estimator


def test_gumbel_approaches_exact_as_temperature_falls():
    """With the same Gumbel noise, the relaxed estimate tends to the hard one-hot sample's as
    tau -> 0, and the hard sample is an unbiased estimate of the exact marginalisation."""
    torch.manual_seed(0)
    model = M2(hidden=32, z_dim=4, init_std=0.3).double()
    with torch.no_grad():
        model.enc_logvar.bias.fill_(-60.0)  # z is its mean: only the sampling of y is random
        model.enc_logvar.weight.zero_()
    _, _, x_u = _batch(n_u=4, seed=1)
    x_u = x_u.double().repeat(1000, 1)
    no_l = (x_u[:0], torch.zeros(0, dtype=torch.long))

    def unlabelled(estimator, tau=1.0):
        return m2_loss(
            model,
            *no_l,
            x_u,
            estimator=estimator,
            alpha=0.0,
            temperature=tau,
            generator=torch.Generator().manual_seed(1),
        )["unlabelled"].item()

    with torch.no_grad():
        exact, hard = unlabelled("exact"), unlabelled("gumbel-st")
        gaps = [abs(unlabelled("gumbel", tau) - hard) for tau in [3.0, 1.0, 0.3, 0.1, 0.03]]
    assert gaps == sorted(gaps, reverse=True), gaps
    assert gaps[-1] < 1e-2 * gaps[0], gaps
    assert abs(hard - exact) < 0.1 * gaps[0], (hard, exact, gaps)


def test_sampled_y_term_differs_from_analytic_but_shares_the_rest():
    torch.manual_seed(0)
    model = M2(hidden=32, z_dim=4)
    x_l, y_l, x_u = _batch()
    kw = dict(estimator="gumbel", alpha=1.0, temperature=0.5)
    analytic = m2_loss(
        model, x_l, y_l, x_u, y_term="analytic", generator=torch.Generator().manual_seed(3), **kw
    )
    sampled = m2_loss(
        model, x_l, y_l, x_u, y_term="sampled", generator=torch.Generator().manual_seed(3), **kw
    )
    assert analytic["labelled"].item() == sampled["labelled"].item()
    assert analytic["unlabelled"].item() != pytest.approx(sampled["unlabelled"].item())
    assert torch.isfinite(sampled["loss"])


def test_per_row_weighting_weighs_every_image_the_same():
    torch.manual_seed(0)
    model = M2(hidden=16, z_dim=4)
    x_l, y_l, x_u = _batch(n_l=2, n_u=6)
    kw = dict(estimator="exact", alpha=5.0)
    per_batch = m2_loss(model, x_l, y_l, x_u, generator=torch.Generator().manual_seed(0), **kw)
    per_row = m2_loss(
        model, x_l, y_l, x_u, generator=torch.Generator().manual_seed(0), weighting="per-row", **kw
    )
    for term in ("labelled", "unlabelled", "classification"):  # the reported means agree
        assert per_row[term].item() == pytest.approx(per_batch[term].item())
    expected = (
        2 * per_batch["labelled"]
        + 6 * per_batch["unlabelled"]
        + 5.0 * 2 * per_batch["classification"]
    ) / 8
    assert per_row["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
