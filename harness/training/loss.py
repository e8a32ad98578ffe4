"""The M2 objective (Kingma et al. 2014, eqs. 6-9) as small pure functions and one fused step.

Every estimator makes a single encoder call and a single decoder call per step: the labelled rows
and the unlabelled rows (B*K of them for the exact estimator, one per image for Gumbel) are stacked
into one batch, so there is no Python loop over classes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.training.model import M2
from harness.training.softplus import softplus

TERMS = ("loss", "labelled", "unlabelled", "classification")


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
    """log p(x|y,z) from the decoder's `output` (model.LIKELIHOOD_OUTPUTS values per dimension
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


def unlabelled_rows(
    estimator: str,
    logits_u: Tensor,
    x_part_u: Tensor,
    K: int,
    temperature: float | Tensor,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor, int]:
    """The y rows the unlabelled images go through the encoder and decoder with, their images'
    encoder halves lined up with them, and the rows per image: exact pairs every image with each
    one-hot y (K rows); Gumbel draws one relaxed y~ (straight-through: the hard one-hot forward,
    the relaxed gradient backward)."""
    if estimator == "exact":
        y_u = torch.eye(K, dtype=logits_u.dtype, device=logits_u.device).repeat(len(logits_u), 1)
        return y_u, x_part_u.repeat_interleave(K, dim=0), K
    y_u = gumbel_softmax_log(logits_u, temperature, generator).exp()
    if estimator == "gumbel-st":
        y_u = F.one_hot(y_u.argmax(-1), K).to(y_u.dtype) - y_u.detach() + y_u
    return y_u, x_part_u, 1


def unlabelled_bound(
    estimator: str, y_term: str, neg_elbo_given_y: Tensor, log_q: Tensor, y_rows: Tensor
) -> Tensor:
    """U(x) per unlabelled image from -ELBO(x, y) of each of its y rows ([n, rows]): exact,
    sum_y q(y|x) L(x,y) - H(q(y|x)); Gumbel's one sample y~, L(x,y~) - H(q(y|x)) (analytic)
    or L(x,y~) + log q(argmax y~|x) (sampled)."""
    if estimator == "exact":
        q = log_q.exp()
        return (q * neg_elbo_given_y).sum(-1) + (q * log_q).sum(-1)
    if y_term == "sampled":
        return neg_elbo_given_y[:, 0] + log_prob_of_sample_class(log_q, y_rows)
    return neg_elbo_given_y[:, 0] + (log_q.exp() * log_q).sum(-1)


def term_weights(weighting: str, n_l: int, n_u: int) -> tuple[float, float]:
    """The weights of the labelled and the unlabelled means in the loss (m2_loss says which)."""
    if weighting == "per-row":
        return n_l / (n_l + n_u), n_u / (n_l + n_u)
    if weighting == "sum":
        return float(n_l), float(n_u)
    return 1.0, 1.0


def m2_loss(
    model: M2,
    x_l: Tensor,
    y_l: Tensor,
    x_u: Tensor,
    *,
    estimator: str,
    alpha: float,
    temperature: float = 1.0,
    y_term: str = "analytic",
    generator: torch.Generator | None = None,
    weighting: str = "per-batch",
) -> dict[str, Tensor]:
    """Per-batch means of the M2 terms and the total loss to minimise.

    L(x,y) = -E_q(z|x,y)[log p(x|y,z) + log p(y) + log p(z) - log q(z|x,y)]        (labelled)
    U(x)   = sum_y q(y|x) L(x,y) - H(q(y|x))                                     (unlabelled, exact)
    loss   = w_l mean_l L(x,y) + w_u mean_u U(x) + alpha w_l mean_l[-log q(y|x)]
    with w_l = w_u = 1 (per-batch, the tutorial); the rows' shares n_l/n and n_u/n of the batch
    (per-row: the paper's sum over images divided by the batch size, so every image weighs the
    same); or the rows' counts n_l and n_u (sum: the sums over the batch, as Pyro's ELBO). A batch
    may hold no labelled or no unlabelled rows (batch_rule alternating): its absent terms are 0.
    Gumbel replaces the sum over y by one relaxed sample y~: U ~ L(x,y~) - H(q(y|x)) (analytic) or
    U ~ L(x,y~) + log q(argmax y~|x) (sampled, as the Pixyz tutorial scores the sample).
    """
    K = model.num_classes
    n_l, n_u = len(x_l), len(x_u)
    x_all = torch.cat([x_l, x_u])
    dtype = x_all.dtype  # the loss in the images' precision, also under bf16 autocast
    logits_y = model.classify(x_all).to(dtype)
    zero = logits_y.new_zeros(())
    classification = F.cross_entropy(logits_y[:n_l], y_l) if n_l else zero
    if estimator == "supervised":
        return {
            "loss": alpha * classification,
            "labelled": zero,
            "unlabelled": zero,
            "classification": classification,
        }

    logits_u = logits_y[n_l:]
    log_q_u = F.log_softmax(logits_u, dim=-1)
    x_part = model.encoder_x_part(x_all)
    y_onehot_l = F.one_hot(y_l, K).to(x_l.dtype)
    y_u, x_part_u, per_image = unlabelled_rows(
        estimator, logits_u, x_part[n_l:], K, temperature, generator
    )

    y_rows = torch.cat([y_onehot_l, y_u])
    loc, logvar = (t.to(dtype) for t in model.encode(torch.cat([x_part[:n_l], x_part_u]), y_rows))
    z = loc + (0.5 * logvar).exp() * torch.randn(
        loc.shape, generator=generator, device=loc.device, dtype=loc.dtype
    )
    decoded = model.decode(z, y_rows).to(dtype)

    log_py = -math.log(K)
    kl_z = gaussian_kl(loc, logvar)
    log_px_given_yz_l = decoder_log_prob(model.likelihood, decoded[:n_l], x_l)
    neg_elbo_l = -log_px_given_yz_l - log_py + kl_z[:n_l]
    labelled = neg_elbo_l.mean() if n_l else zero
    unlabelled = zero
    if n_u:
        log_px_given_yz_u = decoder_log_prob(
            model.likelihood, decoded[n_l:].view(n_u, per_image, -1), x_u[:, None]
        )
        neg_elbo_u_given_y = -log_px_given_yz_u - log_py + kl_z[n_l:].view(n_u, per_image)
        unlabelled = unlabelled_bound(estimator, y_term, neg_elbo_u_given_y, log_q_u, y_u).mean()

    w_l, w_u = term_weights(weighting, n_l, n_u)
    return {
        "loss": w_l * labelled + w_u * unlabelled + alpha * w_l * classification,
        "labelled": labelled,
        "unlabelled": unlabelled,
        "classification": classification,
    }
