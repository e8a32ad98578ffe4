"""Log densities and divergences the families' objectives (and M1's) are written with, as small
pure functions summed over the last dimension."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.training.softplus import softplus

# a decoder's outputs per data dimension, by likelihood: a Bernoulli logit, or a Gaussian's
# mean and log-variance (its variance learned, per dimension and per row)
LIKELIHOOD_OUTPUTS = {"bernoulli": 1, "gaussian": 2}


def gaussian_kl(loc: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(loc, exp(logvar)) || N(0, I)), summed over the last dimension."""
    return 0.5 * (loc.square() + logvar.exp() - 1.0 - logvar).sum(-1)


def bernoulli_log_prob(logits: Tensor, x: Tensor) -> Tensor:
    """log p(x) under Bernoulli(sigmoid(logits)), summed over the last dimension:
    sum_d x_d l_d - softplus(l_d). x broadcasts against the logits (one image for its K rows)
    without being copied, and every op has a vmap batching rule (PyTorch's fused
    binary_cross_entropy_with_logits has none, and falls back to a slow decomposition); softplus
    is softplus.py's, vectorised on the CPU."""
    return (logits * x).sum(-1) - softplus(logits).sum(-1)


def gaussian_log_prob(loc: Tensor, logvar: Tensor, x: Tensor) -> Tensor:
    """log N(x; loc, diag(exp(logvar))), summed over the last dimension:
    -1/2 sum_d [log 2 pi + logvar_d + (x_d - loc_d)^2 exp(-logvar_d)]."""
    return -0.5 * (math.log(2 * math.pi) + logvar + (x - loc).square() * (-logvar).exp()).sum(-1)


def decoder_log_prob(likelihood: str, output: Tensor, x: Tensor) -> Tensor:
    """log p(x|y,z) from the decoder's `output` (LIKELIHOOD_OUTPUTS values per dimension
    of x: a Bernoulli logit, or the Gaussian's means then its log-variances), summed over the
    last dimension."""
    if likelihood == "gaussian":
        loc, logvar = output.chunk(2, dim=-1)
        return gaussian_log_prob(loc, logvar, x)
    return bernoulli_log_prob(output, x)


def gumbel_softmax_log(
    logits: Tensor, temperature: float | Tensor, generator: torch.Generator | None
) -> Tensor:
    """log of a relaxed one-hot sample: log_softmax((logits + Gumbel noise) / temperature)."""
    gumbel = -torch.empty_like(logits).exponential_(generator=generator).log()
    return F.log_softmax((logits + gumbel) / temperature, dim=-1)


def log_prob_of_sample_class(log_q: Tensor, y_sample: Tensor) -> Tensor:
    """log q(argmax y~ | x): the categorical log-probability of a relaxed sample's class, which
    is how Pixyz (and so the reference tutorial) scores a RelaxedCategorical sample."""
    return log_q.gather(-1, y_sample.argmax(-1, keepdim=True)).squeeze(-1)
