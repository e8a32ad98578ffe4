"""The M2 objective checked against an implementation this project did not write: Pyro.

A Pyro model and guide are written around the very same torch modules as the harness's M2 (the
split first layers give Pyro's concatenated inputs: W [x; y] = W_x x + W_y y), fed the same
reparameterisation noise, and compared in float64 with the harness's fused loss:
- the labelled term L(x, y) against `TraceMeanField_ELBO` (which takes the Gaussian KL of z
  analytically, as the harness does);
- the unlabelled term U(x) of exact marginalisation against `TraceEnum_ELBO` with y enumerated in
  parallel, as Pyro's `examples/vae/ss_vae_M2.py`, plus the one known difference: Pyro scores z
  by its sample (log q(z) - log p(z)), the harness by the analytic KL, so
  n_u U = TraceEnum loss + sum_u sum_y q(y|x) [KL(q(z|x,y) || p(z)) - (log q(z) - log p(z))],
  the correction computed here with torch.distributions;
- the classification term against Pyro's auxiliary loss (an observed y under q(y|x), scaled by
  alpha), divided by the labelled rows;
- and the gradients of every network parameter of the whole loss.
The classifier is sharpened (its last layer scaled up) so that q(y|x) is far from uniform and the
entropy term matters. Parametrized over the registry's variants that marginalise exactly (Pyro's
enumeration is that estimator), which covers its networks (ReLU and softplus, 512 and 500 units).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from harness.config.variants import get_variant, list_variants
from harness.families.m2 import M2, m2_loss

pyro = pytest.importorskip("pyro")
dist = pyro.distributions
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO  # noqa: E402
from pyro.infer.enum import config_enumerate  # noqa: E402

K, N_L, N_U = 10, 6, 5
ALPHA = 37.0
EXACT = [v.name for v in list_variants() if v.estimator == "exact"]


class GivenNoiseNormal(dist.Normal):
    """A Normal whose reparameterised sample is loc + scale * eps for the noise the harness drew
    (the KL and log-density are Normal's own)."""

    def __init__(self, loc, scale, eps):
        super().__init__(loc, scale)
        self.eps = eps

    def rsample(self, sample_shape=torch.Size()):  # noqa: B008 (torch's own signature)
        return self.loc + self.scale * self.eps

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape)
        return GivenNoiseNormal(
            self.loc.expand(shape), self.scale.expand(shape), self.eps.expand(shape)
        )


def pyro_terms(model: M2, x_l, y_l, x_u, eps_l, eps_u):
    """Pyro's losses (sums over rows) for the labelled, unlabelled and auxiliary parts."""
    y_onehot = torch.nn.functional.one_hot(y_l, K).to(x_l.dtype)
    prior_y = torch.zeros(K, dtype=x_l.dtype)

    def p_model(x, y=None):
        with pyro.plate("data", len(x)):
            y = pyro.sample("y", dist.OneHotCategorical(logits=prior_y), obs=y)
            zeros = torch.zeros(model.enc_loc.out_features, dtype=x.dtype)
            z = pyro.sample("z", dist.Normal(zeros, 1.0).to_event(1))
            out = model.decode(z, y)
            if model.likelihood == "gaussian":  # M1+M2: a mean and a log-variance per feature
                loc, logvar = out.chunk(2, dim=-1)
                likelihood = dist.Normal(loc, (0.5 * logvar).exp())
            else:
                likelihood = dist.Bernoulli(logits=out)
            pyro.sample("x", likelihood.to_event(1), obs=x)

    def q_labelled(x, y):
        with pyro.plate("data", len(x)):
            loc, logvar = model.encode(model.encoder_x_part(x), y)
            pyro.sample("z", GivenNoiseNormal(loc, (0.5 * logvar).exp(), eps_l).to_event(1))

    @config_enumerate
    def q_unlabelled(x, y=None):
        with pyro.plate("data", len(x)):
            y = pyro.sample("y", dist.OneHotCategorical(logits=model.classify(x)))
            loc, logvar = model.encode(model.encoder_x_part(x), y)  # (K, n, z): y enumerated
            pyro.sample("z", GivenNoiseNormal(loc, (0.5 * logvar).exp(), eps_u).to_event(1))

    def aux_model(x, y):
        with pyro.plate("data", len(x)), pyro.poutine.scale(scale=ALPHA):
            pyro.sample("y_aux", dist.OneHotCategorical(logits=model.classify(x)), obs=y)

    def aux_guide(x, y):
        pass

    labelled = TraceMeanField_ELBO().differentiable_loss(p_model, q_labelled, x_l, y_onehot)
    unlabelled = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(p_model, q_unlabelled, x_u)
    auxiliary = Trace_ELBO().differentiable_loss(aux_model, aux_guide, x_l, y_onehot)
    return labelled, unlabelled, auxiliary


def kl_correction(model: M2, x_u, eps_u):
    """sum_u sum_y q(y|x) [KL(q(z|x,y) || p(z)) - (log q(z_y) - log p(z_y))]."""
    y = torch.eye(K, dtype=x_u.dtype)[:, None, :].expand(K, len(x_u), K)
    loc, logvar = model.encode(model.encoder_x_part(x_u), y)
    q, p = Normal(loc, (0.5 * logvar).exp()), Normal(0.0, 1.0)
    z = loc + q.scale * eps_u
    gap = kl_divergence(q, p).sum(-1) - (q.log_prob(z) - p.log_prob(z)).sum(-1)  # (K, n)
    q_y = model.classify(x_u).softmax(-1).T
    return (q_y * gap).sum()


def build(name: str, x_dim: int) -> M2:
    variant = get_variant(name)
    torch.manual_seed(0)
    model = M2(
        x_dim,
        K,
        variant.hidden,
        variant.z_dim,
        variant.activation,
        variant.init_std,
        likelihood=variant.likelihood,
    )
    model = model.double()
    with torch.no_grad():  # a sharp q(y|x): the entropy term is far from log K
        model.classifier[-1].weight.mul_(40.0)
        model.classifier[-1].bias.normal_(0.0, 10.0)
    return model


def check_against_pyro(name: str, x: torch.Tensor, y: torch.Tensor) -> None:
    pyro.clear_param_store()
    pyro.enable_validation(False)  # intensities in [0, 1], as the harness's Bernoulli takes them
    x_l, y_l, x_u = x[:N_L], y[:N_L], x[N_L : N_L + N_U]
    model = build(name, x.shape[1])
    log_q = model.classify(x_u).log_softmax(-1)
    entropy = -(log_q.exp() * log_q).sum(-1)
    assert entropy.max() < 0.5 * math.log(K)  # far from uniform (log K)

    generator = torch.Generator().manual_seed(3)
    ours = m2_loss(model, x_l, y_l, x_u, estimator="exact", alpha=ALPHA, generator=generator)
    # the noise the harness drew: n_l labelled rows, then each unlabelled image's K rows
    eps = torch.randn(
        (N_L + N_U * K, model.enc_loc.out_features),
        generator=torch.Generator().manual_seed(3),
        dtype=x.dtype,
    )
    eps_l, eps_u = eps[:N_L], eps[N_L:].view(N_U, K, -1).transpose(0, 1)  # Pyro's (K, n, z)
    labelled, unlabelled, auxiliary = pyro_terms(model, x_l, y_l, x_u, eps_l, eps_u)
    correction = kl_correction(model, x_u, eps_u)

    assert ours["labelled"].item() * N_L == pytest.approx(labelled.item(), rel=1e-12)
    unlabelled_corrected = (unlabelled + correction).item()
    assert ours["unlabelled"].item() * N_U == pytest.approx(unlabelled_corrected, rel=1e-12)
    classification = auxiliary.item() / N_L
    assert ALPHA * ours["classification"].item() == pytest.approx(classification, rel=1e-12)

    theirs = labelled / N_L + (unlabelled + correction) / N_U + auxiliary / N_L
    params = [p for p in model.parameters()]
    grads_ours = torch.autograd.grad(ours["loss"], params)
    grads_theirs = torch.autograd.grad(theirs, params)
    names = [n for n, _ in model.named_parameters()]
    for pname, a, b in zip(names, grads_ours, grads_theirs, strict=True):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12), pname


@pytest.mark.parametrize("name", EXACT)
def test_the_loss_equals_pyros_enumerated_elbo_on_generated_rows(name, generated):
    x = generated.train_x[: N_L + N_U].double()
    y = generated.train_y[: N_L + N_U]
    check_against_pyro(name, x, y)


@pytest.mark.e2e
@pytest.mark.parametrize("name", EXACT)
def test_the_loss_equals_pyros_enumerated_elbo_on_mnist_rows(name, mnist):
    x = mnist.train_x[: N_L + N_U].double()
    y = mnist.train_y[: N_L + N_U]
    check_against_pyro(name, x, y)


def test_pyros_own_steps_are_pyro_m2s_summed_steps(generated):
    """pyro-m2's loop (labelled and unlabelled images in steps of their own, each step's loss the
    sum over its images): a labelled step's loss is Pyro's labelled ELBO plus its auxiliary loss,
    an unlabelled step's Pyro's enumerated ELBO (plus the KL correction), gradients included."""
    pyro.clear_param_store()
    pyro.enable_validation(False)
    x, y = generated.train_x[: N_L + N_U].double(), generated.train_y[: N_L + N_U]
    x_l, y_l, x_u = x[:N_L], y[:N_L], x[N_L : N_L + N_U]
    model = build("pyro-m2", x.shape[1])
    z_dim = model.enc_loc.out_features
    options = dict(estimator="exact", alpha=ALPHA, weighting="sum")
    labelled_step = m2_loss(
        model, x_l, y_l, x_u[:0], generator=torch.Generator().manual_seed(3), **options
    )
    unlabelled_step = m2_loss(
        model, x_l[:0], y_l[:0], x_u, generator=torch.Generator().manual_seed(4), **options
    )
    eps_l = torch.randn((N_L, z_dim), generator=torch.Generator().manual_seed(3), dtype=x.dtype)
    eps_u = (
        torch.randn((N_U * K, z_dim), generator=torch.Generator().manual_seed(4), dtype=x.dtype)
        .view(N_U, K, -1)
        .transpose(0, 1)
    )
    labelled, unlabelled, auxiliary = pyro_terms(model, x_l, y_l, x_u, eps_l, eps_u)
    theirs_l, theirs_u = labelled + auxiliary, unlabelled + kl_correction(model, x_u, eps_u)
    params = list(model.parameters())
    for ours, theirs in [(labelled_step["loss"], theirs_l), (unlabelled_step["loss"], theirs_u)]:
        assert ours.item() == pytest.approx(theirs.item(), rel=1e-12)
        ours_g = torch.autograd.grad(ours, params, allow_unused=True)
        theirs_g = torch.autograd.grad(theirs, params, allow_unused=True)
        # sums, not means: a step's gradients reach hundreds, and the saturated classifier's
        # are about 1e-8 with rounding of 1e-12 beside them; so the tolerance is the step's
        scale = max(g.abs().max().item() for g in theirs_g if g is not None)
        for a, b in zip(ours_g, theirs_g, strict=True):
            if a is None or b is None:  # a part the step does not reach, on either side
                assert (a if b is None else b) is None or torch.all((a if b is None else b) == 0)
                continue
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-12 * scale)
