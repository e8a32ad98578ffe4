"""The auxiliary deep generative model (ADGM, Maaløe et al. 2016): M2 with an auxiliary latent
variable a that makes the inference model q(a, y, z|x) richer while the generative model of x
stays M2's.

Inference: q(a|x), q(y|a,x), q(z|a,y,x); generation: p(z) p(y) p(x|y,z) p(a|x,y,z), as the
paper's ADGM (and wohlert/semi-supervised-pytorch's `AuxiliaryDeepGenerativeModel`) has them.
With one sample a ~ q(a|x) per image and z ~ q(z|a,y,x) per row,

  L(x,y)   = -[log p(x|y,z) + log p(y) - KL(q(z|a,y,x) || p(z)) + log p(a|x,y,z) - log q(a|x)]
  U(x)     = sum_y q(y|a,x) L(x,y; a) - H(q(y|a,x))       (exact: a drawn once, outside the sum)
  loss     = w_l mean_l L(x,y) + w_u mean_u U(x) + alpha w_l mean_l[-log q(y|a,x)]

the KL of z analytic as M2's, a's two densities sampled. Gumbel and straight-through replace the
sum over y by one relaxed sample of q(y|a,x), as for M2 (m2.py's `unlabelled_rows` and
`unlabelled_bound`, shared). The step is fused as M2's: the labelled rows and every unlabelled
image's K rows go through each network once; the parts of the networks that read x (and a) are
computed once per image, and y and z join at the layer where they meet (the encoder's last hidden
layer; the first layer of p(a|x,y,z) and of p(x|y,z)).

Settings it reads: `hidden` units in `encoder_layers` hidden layers for q(a|x), q(y|a,x) and
q(z|a,y,x) and `decoder_layers` (of `decoder_hidden`, else `hidden`) for p(a|x,y,z) and p(x|y,z);
a has `z_dim` dimensions, as z (100 and 100 in the authors' recipe). A class is predicted at the
mean of q(a|x) (the authors average q(y|a,x) over 100 samples of a).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.config.families import UNREAD
from harness.config.variants import NUM_CLASSES, Variant
from harness.families.m2 import (
    objective_settings,
    unlabelled_bound,
    unlabelled_rows,
    weighted_terms,
)
from harness.training.distributions import (
    LIKELIHOOD_OUTPUTS,
    decoder_log_prob,
    gaussian_kl,
    gaussian_log_prob,
)
from harness.training.family import Family, register_family
from harness.training.networks import ACTIVATIONS, NetworkSpec, mlp


class ADGM(nn.Module):
    """The five networks of the ADGM for rows of `x_dim` values; with `skip`, the SDGM's
    (sdgm.py): p(a|y,z) in place of p(a|x,y,z), and p(x|a,y,z) in place of p(x|y,z)."""

    def __init__(
        self,
        x_dim: int = 784,
        num_classes: int = NUM_CLASSES,
        a_dim: int = 100,
        z_dim: int = 100,
        inference: tuple[int, ...] = (500, 500),
        generation: tuple[int, ...] = (500, 500),
        activation: str = "relu",
        likelihood: str = "bernoulli",
        skip: bool = False,
        eval_samples: int = 0,
    ) -> None:
        super().__init__()
        self.num_classes, self.likelihood, self.a_dim = num_classes, likelihood, a_dim
        self.eval_samples = eval_samples  # draws of a when classifying (0: its mean)
        self.act = ACTIVATIONS[activation]()
        q = NetworkSpec(inference, activation)
        self.aux_encoder = mlp(x_dim, 2 * a_dim, q)  # q(a|x): mean, log-variance
        self.classifier = mlp(x_dim + a_dim, num_classes, q)  # q(y|a,x)
        # q(z|a,y,x): [x; a] through the hidden layers before the last, where y joins
        width = inference[-1]
        self.enc_xa = mlp(x_dim + a_dim, width, NetworkSpec(inference[:-1], activation))
        self.enc_y = nn.Linear(num_classes, width, bias=False)
        self.enc_z = nn.Linear(width, 2 * z_dim)
        # p(a|x,y,z) and p(x|y,z), or p(a|y,z) and p(x|a,y,z): what they read meets at their
        # first hidden layer (x there once per image, a once per image)
        width = generation[0]
        rest = NetworkSpec(generation[1:], activation)
        self.aux_dec_x = None if skip else nn.Linear(x_dim, width)
        self.aux_dec_zy = nn.Linear(z_dim + num_classes, width, bias=skip)
        self.aux_dec_out = mlp(width, 2 * a_dim, rest)
        self.dec_zy = nn.Linear(z_dim + num_classes, width)
        self.dec_a = nn.Linear(a_dim, width, bias=False) if skip else None
        self.dec_out = mlp(width, x_dim * LIKELIHOOD_OUTPUTS[likelihood], rest)

    @classmethod
    def from_variant(cls, variant: Variant, x_dim: int = 784, skip: bool = False) -> ADGM:
        if variant.estimator == "supervised":
            raise ValueError(
                "estimator=supervised trains a classifier alone: that is M2's supervised-only "
                f"control (family m2), not an {variant.family.upper()}"
            )
        return cls(
            x_dim=x_dim,
            a_dim=variant.z_dim,
            z_dim=variant.z_dim,
            inference=(variant.encoder_hidden or variant.hidden,) * variant.encoder_layers,
            generation=(variant.decoder_hidden or variant.hidden,) * variant.decoder_layers,
            activation=variant.activation,
            likelihood=variant.likelihood,
            skip=skip,
            eval_samples=variant.eval_samples,
        )

    def aux_encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(a|x)."""
        loc, logvar = self.aux_encoder(x).chunk(2, dim=-1)
        return loc, logvar

    def classify(self, x: Tensor, a: Tensor) -> Tensor:
        """Logits of q(y|a,x)."""
        return self.classifier(torch.cat([x, a], dim=-1))

    def encoder_xa_part(self, x: Tensor, a: Tensor) -> Tensor:
        """The part of q(z|a,y,x) that reads x and a: once per image."""
        return self.enc_xa(torch.cat([x, a], dim=-1))

    def encode(self, xa_part: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z|a,y,x)."""
        loc, logvar = self.enc_z(self.act(xa_part + self.enc_y(y))).chunk(2, dim=-1)
        return loc, logvar

    def aux_decoder_x_part(self, x: Tensor) -> Tensor:
        """The part of p(a|x,y,z)'s first layer that reads x: once per image (none, width 0,
        for the SDGM's p(a|y,z))."""
        return x[:, :0] if self.aux_dec_x is None else self.aux_dec_x(x)

    def aux_decode(self, x_part: Tensor, z: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of p(a|x,y,z) (SDGM: p(a|y,z))."""
        h = self.aux_dec_zy(torch.cat([z, y], dim=-1))
        h = self.act(h if self.aux_dec_x is None else h + x_part)
        loc, logvar = self.aux_dec_out(h).chunk(2, dim=-1)
        return loc, logvar

    def decode(self, z: Tensor, y: Tensor, a: Tensor) -> Tensor:
        """p(x|y,z)'s parameters (SDGM: p(x|a,y,z)'s): Bernoulli logits, or Gaussian means then
        log-variances."""
        h = self.dec_zy(torch.cat([z, y], dim=-1))
        return self.dec_out(self.act(h if self.dec_a is None else h + self.dec_a(a)))


def _sample(loc: Tensor, logvar: Tensor, generator: torch.Generator | None) -> Tensor:
    """loc + exp(logvar / 2) * eps, eps ~ N(0, I) (the reparameterisation)."""
    noise = torch.randn(loc.shape, generator=generator, device=loc.device, dtype=loc.dtype)
    return loc + (0.5 * logvar).exp() * noise


def adgm_loss(
    model: ADGM,
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
    """Per-batch means of the ADGM's terms and the loss to minimise (the equations at the top
    of this module; `weighting` as m2_loss's)."""
    K = model.num_classes
    n_l, n_u = len(x_l), len(x_u)
    x_all = torch.cat([x_l, x_u])
    dtype = x_all.dtype
    a_loc, a_logvar = (t.to(dtype) for t in model.aux_encode(x_all))
    a = _sample(a_loc, a_logvar, generator)
    log_qa = gaussian_log_prob(a_loc, a_logvar, a)
    logits_y = model.classify(x_all, a).to(dtype)
    zero = logits_y.new_zeros(())
    classification = F.cross_entropy(logits_y[:n_l], y_l) if n_l else zero

    # what each image's rows share: its a, log q(a|x), and the parts of q(z|a,y,x) and
    # p(a|x,y,z) that read x (and a), side by side so that one repeat lines them up
    shared = [a, log_qa[:, None], model.encoder_xa_part(x_all, a), model.aux_decoder_x_part(x_all)]
    per_image = torch.cat(shared, dim=-1)
    y_u, per_image_u, rows_per_image = unlabelled_rows(
        estimator, logits_y[n_l:], per_image[n_l:], K, temperature, generator
    )
    y_rows = torch.cat([F.one_hot(y_l, K).to(dtype), y_u])
    a_rows, log_qa_rows, enc_part, aux_part = torch.cat([per_image[:n_l], per_image_u]).split(
        [part.shape[-1] for part in shared], dim=-1
    )
    z_loc, z_logvar = (t.to(dtype) for t in model.encode(enc_part, y_rows))
    z = _sample(z_loc, z_logvar, generator)
    pa_loc, pa_logvar = (t.to(dtype) for t in model.aux_decode(aux_part, z, y_rows))
    decoded = model.decode(z, y_rows, a_rows).to(dtype)

    log_px_given_yz = torch.cat(  # an unlabelled image broadcast against its rows, not copied
        [
            decoder_log_prob(model.likelihood, decoded[:n_l], x_l),
            decoder_log_prob(
                model.likelihood, decoded[n_l:].view(n_u, rows_per_image, -1), x_u[:, None]
            ).flatten(),
        ]
    )
    neg_elbo = (
        -log_px_given_yz
        + math.log(K)  # -log p(y), p(y) uniform
        + gaussian_kl(z_loc, z_logvar)
        - gaussian_log_prob(pa_loc, pa_logvar, a_rows)
        + log_qa_rows[:, 0]
    )
    labelled = neg_elbo[:n_l].mean() if n_l else zero
    unlabelled = zero
    if n_u:
        log_q_u = F.log_softmax(logits_y[n_l:], dim=-1)
        by_image = neg_elbo[n_l:].view(n_u, rows_per_image)
        unlabelled = unlabelled_bound(estimator, y_term, by_image, log_q_u, y_u).mean()
    return weighted_terms(labelled, unlabelled, classification, alpha, weighting, n_l, n_u)


EVAL_SEED = 0  # the draws of a when classifying: the same every evaluation, so reruns agree


def classify(model: ADGM, x: Tensor) -> Tensor:
    """Logits of q(y|a,x) at the mean of q(a|x); with `model.eval_samples` = K, of the mean
    over K draws a_k ~ q(a|x) of q(y|a_k,x), as the authors classify (their 100 samples):
    log (1/K) sum_k q(y|a_k,x), drawn one at a time (K copies of the test set would not fit)."""
    a_loc, a_logvar = model.aux_encode(x)
    if not model.eval_samples:
        return model.classify(x, a_loc)
    generator = torch.Generator(x.device).manual_seed(EVAL_SEED)
    probs = torch.zeros(len(x), model.num_classes, device=x.device, dtype=x.dtype)
    for _ in range(model.eval_samples):
        eps = torch.randn(a_loc.shape, generator=generator, device=x.device, dtype=a_loc.dtype)
        probs += model.classify(x, a_loc + (0.5 * a_logvar).exp() * eps).softmax(-1)
    return (probs / model.eval_samples).log()


FAMILY = register_family(
    Family(
        name="adgm",
        build=ADGM.from_variant,
        objective=adgm_loss,
        objective_settings=objective_settings,
        classify=classify,
        unread=UNREAD["adgm"],
    )
)
