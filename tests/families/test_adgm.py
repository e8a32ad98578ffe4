"""The ADGM's and the SDGM's fused objective (harness/families/adgm.py) against the same
equations written plainly: a per-class loop over the unlabelled images, torch.distributions'
densities and KL, and the same noise, in float64; and their variants' recipe as the modules
say."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from harness.config.variants import get_variant
from harness.families.adgm import ADGM, adgm_loss
from harness.training.family import get_family


def _normal(loc_logvar: tuple[torch.Tensor, torch.Tensor]) -> Normal:
    loc, logvar = loc_logvar
    return Normal(loc, (0.5 * logvar).exp())


def plain_adgm_exact(model, x_l, y_l, x_u, alpha, eps_a, eps_z):
    """L, U and the classification term, one class at a time."""
    K, n_l = model.num_classes, len(x_l)
    x = torch.cat([x_l, x_u])
    q_a = _normal(model.aux_encode(x))
    a = q_a.loc + q_a.scale * eps_a
    log_qa = q_a.log_prob(a).sum(-1)

    def neg_elbo(x, a, log_qa, y, noise):
        y = F.one_hot(y, K).to(x.dtype)
        q_z = _normal(model.encode(model.encoder_xa_part(x, a), y))
        z = q_z.loc + q_z.scale * noise
        logits = model.decode(z, y, a)
        log_px = -F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        p_a = _normal(model.aux_decode(model.aux_decoder_x_part(x), z, y))
        kl_z = kl_divergence(q_z, Normal(torch.zeros_like(z), torch.ones_like(z))).sum(-1)
        return -log_px.sum(-1) + math.log(K) + kl_z - p_a.log_prob(a).sum(-1) + log_qa

    labelled = neg_elbo(x_l, a[:n_l], log_qa[:n_l], y_l, eps_z[:n_l]).mean()
    q_y = F.softmax(model.classify(x_u, a[n_l:]), dim=-1)
    unlabelled = (q_y * q_y.log()).sum(-1)
    for y in range(K):
        every = torch.full((len(x_u),), y)
        unlabelled = unlabelled + q_y[:, y] * neg_elbo(
            x_u, a[n_l:], log_qa[n_l:], every, eps_z[n_l + y :: K]
        )
    classification = F.cross_entropy(model.classify(x_l, a[:n_l]), y_l)
    return {
        "loss": labelled + unlabelled.mean() + alpha * classification,
        "labelled": labelled,
        "unlabelled": unlabelled.mean(),
        "classification": classification,
    }


@pytest.mark.parametrize("skip", [False, True], ids=["adgm", "sdgm"])
def test_the_fused_exact_objective_is_the_per_class_equations(skip):
    torch.manual_seed(0)
    sizes = {"inference": (8, 7), "generation": (6, 9), "skip": skip}
    model = ADGM(x_dim=12, num_classes=3, a_dim=4, z_dim=5, **sizes)
    model = model.double()
    x_l, x_u = torch.rand(4, 12, dtype=torch.float64), torch.rand(5, 12, dtype=torch.float64)
    y_l = torch.tensor([0, 2, 1, 2])
    fused = adgm_loss(
        model, x_l, y_l, x_u, estimator="exact", alpha=0.7,
        generator=torch.Generator().manual_seed(3),
    )  # fmt: skip
    noise = torch.Generator().manual_seed(3)  # the same draws in the same order: a, then z
    eps_a = torch.randn(9, 4, generator=noise, dtype=torch.float64)
    eps_z = torch.randn(4 + 5 * 3, 5, generator=noise, dtype=torch.float64)
    plain = plain_adgm_exact(model, x_l, y_l, x_u, 0.7, eps_a, eps_z)
    for term, value in plain.items():
        assert fused[term].item() == pytest.approx(value.item(), rel=1e-12), term
    grads = torch.autograd.grad(fused["loss"], list(model.parameters()))
    plain_grads = torch.autograd.grad(plain["loss"], list(model.parameters()))
    for mine, theirs in zip(grads, plain_grads, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["adgm", "sdgm"])
def test_the_variants_are_the_authors_recipe_where_the_harness_has_the_knob(name):
    variant = get_variant(name)
    model = get_family(name).build(variant, 784)
    assert (model.aux_dec_x is None, model.dec_a is not None) == (name == "sdgm",) * 2
    assert (model.a_dim, model.enc_z.out_features // 2) == (100, 100)
    assert [m.out_features for m in model.aux_encoder if isinstance(m, torch.nn.Linear)] == [
        500, 500, 200,
    ]  # fmt: skip
    assert (variant.lr, variant.batch_size, variant.labelled_batch_size) == (3e-4, 100, 100)
    assert (variant.alpha, variant.alpha_scaling, variant.validation) == (0.1, "paper", 10_000)
    schedule = (variant.lr_decay, variant.lr_decay_every, variant.lr_min)
    assert schedule == (0.75, 200, 3e-5)  # x0.75 every 200 epochs, floor 3e-5
    assert (variant.clip_norm, variant.clip_value, variant.weight_decay) == (5.0, 1.0, 2e-5)
    assert (variant.binarize, variant.eval_samples) == (True, 100)


def test_the_supervised_estimator_is_refused_for_the_adgm():
    with pytest.raises(ValueError, match="supervised-only control"):
        ADGM.from_variant(get_variant("adgm").replace(estimator="supervised"))


def test_classifying_with_draws_of_a_averages_q_y_over_them_the_same_every_time():
    from harness.families.adgm import EVAL_SEED, classify

    torch.manual_seed(0)
    model = ADGM(x_dim=6, a_dim=3, z_dim=2, inference=(8,), generation=(8,), eval_samples=4)
    x = torch.rand(5, 6)
    logits = classify(model, x)
    assert torch.equal(logits, classify(model, x))  # the same draws each evaluation
    a_loc, a_logvar = model.aux_encode(x)
    generator = torch.Generator().manual_seed(EVAL_SEED)
    draws = [a_loc + (0.5 * a_logvar).exp() * torch.randn(a_loc.shape, generator=generator)
             for _ in range(4)]  # fmt: skip
    mean = torch.stack([model.classify(x, a).softmax(-1) for a in draws]).mean(0)
    assert torch.allclose(logits.exp(), mean, atol=1e-6)
    model.eval_samples = 0
    assert torch.equal(classify(model, x), model.classify(x, a_loc))  # at the mean of q(a|x)
