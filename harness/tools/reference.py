"""A plain, unfused M2 loss: one encoder and one decoder call per class, inputs concatenated.

It is the yardstick the fused loss is tested against and benchmarked beside; it draws the same
noise in the same order as `harness.families.m2.m2_loss`, so the two agree to rounding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.families.m2 import M2
from harness.training.distributions import bernoulli_log_prob, gaussian_kl


def reference_exact_loss(
    model: M2,
    x_l: Tensor,
    y_l: Tensor,
    x_u: Tensor,
    *,
    alpha: float,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    K, n_l, n_u = model.num_classes, len(x_l), len(x_u)
    eps = torch.randn(
        (n_l + n_u * K, model.enc_loc.out_features),
        generator=generator,
        device=x_l.device,
        dtype=x_l.dtype,
    )

    def neg_elbo(x: Tensor, y_onehot: Tensor, noise: Tensor) -> Tensor:
        loc, logvar = model.encode(model.encoder_x_part(x), y_onehot)
        z = loc + (0.5 * logvar).exp() * noise
        log_px_given_yz = bernoulli_log_prob(model.decode(z, y_onehot), x)
        return -log_px_given_yz + math.log(K) + gaussian_kl(loc, logvar)

    labelled = neg_elbo(x_l, F.one_hot(y_l, K).to(x_l.dtype), eps[:n_l]).mean()
    q_u = F.softmax(model.classify(x_u), dim=-1)
    neg_elbo_u = (q_u * q_u.log()).sum(-1)  # -H(q(y|x))
    for y in range(K):
        y_onehot = F.one_hot(torch.full((n_u,), y, device=x_u.device), K).to(x_u.dtype)
        noise = eps[n_l + y :: K]
        neg_elbo_u = neg_elbo_u + q_u[:, y] * neg_elbo(x_u, y_onehot, noise)
    classification = F.cross_entropy(model.classify(x_l), y_l)
    unlabelled = neg_elbo_u.mean()
    return {
        "loss": labelled + unlabelled + alpha * classification,
        "labelled": labelled,
        "unlabelled": unlabelled,
        "classification": classification,
    }
