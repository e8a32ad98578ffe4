"""The ADGM's and the SDGM's objective checked against Pyro, as M2's is
(tests/training/test_pyro.py).

A Pyro model p(y) p(z) p(a|x,y,z) p(x|y,z) (SDGM: p(a|y,z) p(x|a,y,z)) and guide q(a|x)
q(y|a,x) q(z|a,y,x) are written around the harness's own modules, fed the noise the harness
drew, and compared in float64 with its fused loss (weighting sum: Pyro's losses are sums over
the rows):
- the labelled term against `Trace_ELBO` with y observed, a and z sampled;
- the unlabelled term of exact marginalisation against `TraceEnum_ELBO` with y enumerated in
  parallel beneath the sampled a (the authors' "a sampled once, outside the sum");
- the classification term against an auxiliary loss, an observed y under q(y|a,x) at the same a;
- and the gradients of every parameter of the whole loss.
Pyro scores z by its sample where the harness takes the KL of z analytically, the one known
difference, so each side's correction sum q(y|a,x) [KL(q(z) || p(z)) - (log q(z) - log p(z))] is
added, computed with torch.distributions.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from harness.families.adgm import ADGM, adgm_loss

pyro = pytest.importorskip("pyro")
dist = pyro.distributions
from pyro.infer import Trace_ELBO, TraceEnum_ELBO  # noqa: E402
from pyro.infer.enum import config_enumerate  # noqa: E402

from tests.training.test_pyro import GivenNoiseNormal  # noqa: E402

K, N_L, N_U, A, Z = 4, 5, 6, 3, 2
ALPHA = 11.0


def _scale(logvar: torch.Tensor) -> torch.Tensor:
    return (0.5 * logvar).exp()


def pyro_losses(model: ADGM, x_l, y_l, x_u, eps_a, eps_z_l, eps_z_u):
    """Pyro's labelled, unlabelled and auxiliary losses (sums over the rows)."""
    y_onehot = F.one_hot(y_l, K).to(x_l.dtype)

    def p_model(x, y=None):
        with pyro.plate("data", len(x)):
            y = pyro.sample(
                "y", dist.OneHotCategorical(logits=torch.zeros(K, dtype=x.dtype)), obs=y
            )
            z = pyro.sample("z", dist.Normal(torch.zeros(Z, dtype=x.dtype), 1.0).to_event(1))
            y = y.expand((*z.shape[:-1], K))  # y enumerated: (K, 1, K) beside z's (K, n, Z)
            loc, logvar = model.aux_decode(model.aux_decoder_x_part(x), z, y)
            a = pyro.sample("a", dist.Normal(loc, _scale(logvar)).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=model.decode(z, y, a)).to_event(1), obs=x)

    def guide(x, y=None, eps_a=None, eps_z=None):
        with pyro.plate("data", len(x)):
            a_loc, a_logvar = model.aux_encode(x)
            a = pyro.sample("a", GivenNoiseNormal(a_loc, _scale(a_logvar), eps_a).to_event(1))
            if y is None:
                y = pyro.sample("y", dist.OneHotCategorical(logits=model.classify(x, a)))
            loc, logvar = model.encode(model.encoder_xa_part(x, a), y)
            pyro.sample("z", GivenNoiseNormal(loc, _scale(logvar), eps_z).to_event(1))

    def aux_model(x, y):
        a_loc, a_logvar = model.aux_encode(x)
        a = a_loc + _scale(a_logvar) * eps_a[:N_L]
        with pyro.plate("data", len(x)), pyro.poutine.scale(scale=ALPHA):
            pyro.sample("y_aux", dist.OneHotCategorical(logits=model.classify(x, a)), obs=y)

    def no_guide(x, y):
        pass

    labelled = Trace_ELBO().differentiable_loss(
        p_model, lambda x, y: guide(x, y, eps_a[:N_L], eps_z_l), x_l, y_onehot
    )
    unlabelled = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(
        p_model, config_enumerate(lambda x: guide(x, None, eps_a[N_L:], eps_z_u)), x_u
    )
    auxiliary = Trace_ELBO().differentiable_loss(aux_model, no_guide, x_l, y_onehot)
    return labelled, unlabelled, auxiliary


def kl_corrections(model: ADGM, x_l, y_l, x_u, eps_a, eps_z_l, eps_z_u):
    """The labelled and unlabelled sums of [KL - sampled log q(z) / p(z)] (weighted by
    q(y|a,x) over the classes for the unlabelled images)."""
    a_loc, a_logvar = model.aux_encode(torch.cat([x_l, x_u]))
    a = a_loc + _scale(a_logvar) * eps_a

    def gap(x, a, y, eps):
        loc, logvar = model.encode(model.encoder_xa_part(x, a), y)
        q, p = Normal(loc, _scale(logvar)), Normal(0.0, 1.0)
        z = loc + q.scale * eps
        return kl_divergence(q, p).sum(-1) - (q.log_prob(z) - p.log_prob(z)).sum(-1)

    labelled = gap(x_l, a[:N_L], F.one_hot(y_l, K).to(x_l.dtype), eps_z_l).sum()
    every_y = torch.eye(K, dtype=x_u.dtype)[:, None, :].expand(K, N_U, K)
    q_y = model.classify(x_u, a[N_L:]).softmax(-1).T  # (K, n)
    unlabelled = (q_y * gap(x_u, a[N_L:], every_y, eps_z_u)).sum()
    return labelled, unlabelled


@pytest.mark.parametrize("skip", [False, True], ids=["adgm", "sdgm"])
def test_the_objective_equals_pyros_elbos_with_y_enumerated(skip, generated):
    pyro.clear_param_store()
    pyro.enable_validation(False)  # intensities in [0, 1], as the harness's Bernoulli takes them
    x = generated.train_x[: N_L + N_U, :20].double()
    y = generated.train_y[: N_L + N_U] % K
    x_l, y_l, x_u = x[:N_L], y[:N_L], x[N_L:]
    torch.manual_seed(0)
    sizes = {"inference": (8, 7), "generation": (6, 9), "skip": skip}
    model = ADGM(x_dim=20, num_classes=K, a_dim=A, z_dim=Z, **sizes)
    model = model.double()
    with torch.no_grad():  # a sharp q(y|a,x): the entropy term is far from log K
        model.classifier[-1].weight.mul_(40.0)
        model.classifier[-1].bias.normal_(0.0, 10.0)
    a_loc, _ = model.aux_encode(x_u)
    log_q = model.classify(x_u, a_loc).log_softmax(-1)
    assert (-(log_q.exp() * log_q).sum(-1)).max() < 0.5 * math.log(K)

    ours = adgm_loss(
        model, x_l, y_l, x_u, estimator="exact", alpha=ALPHA, weighting="sum",
        generator=torch.Generator().manual_seed(3),
    )  # fmt: skip
    noise = torch.Generator().manual_seed(3)  # the harness's draws: a for every image, then z
    eps_a = torch.randn(N_L + N_U, A, generator=noise, dtype=x.dtype)
    eps_z = torch.randn(N_L + N_U * K, Z, generator=noise, dtype=x.dtype)
    eps_z_l, eps_z_u = eps_z[:N_L], eps_z[N_L:].view(N_U, K, Z).transpose(0, 1)  # (K, n, Z)
    noise = (x_l, y_l, x_u, eps_a, eps_z_l, eps_z_u)
    labelled, unlabelled, auxiliary = pyro_losses(model, *noise)
    fix_l, fix_u = kl_corrections(model, *noise)

    assert ours["labelled"].item() * N_L == pytest.approx((labelled + fix_l).item(), rel=1e-12)
    assert ours["unlabelled"].item() * N_U == pytest.approx((unlabelled + fix_u).item(), rel=1e-12)
    assert ALPHA * N_L * ours["classification"].item() == pytest.approx(auxiliary.item(), rel=1e-12)

    theirs = labelled + fix_l + unlabelled + fix_u + auxiliary
    assert ours["loss"].item() == pytest.approx(theirs.item(), rel=1e-12)
    params = list(model.parameters())
    grads_ours = torch.autograd.grad(ours["loss"], params)
    grads_theirs = torch.autograd.grad(theirs, params)
    for (name, _), a, b in zip(model.named_parameters(), grads_ours, grads_theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=name)
