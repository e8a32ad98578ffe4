"""The M2 family (Kingma et al. 2014): its networks, its objective (eqs. 6-9) and its figures.

The networks: classifier q(y|x), Gaussian encoder q(z|x,y), decoder p(x|y,z) (Bernoulli logits,
or a Gaussian's means and log-variances: `likelihood`). The first layers of the encoder and
decoder are split into an x (or z) part and a y part, W [x; y] = W_x x + W_y y, so that the x
part is computed once per image and shared by all K values of y when the exact estimator
marginalises over the classes.

The objective makes a single encoder call and a single decoder call per step, whatever the
estimator: the labelled rows and the unlabelled rows (B*K of them for the exact estimator, one per
image for Gumbel) are stacked into one batch, so there is no Python loop over classes. The
estimators (exact, Gumbel-softmax, straight-through, supervised alone) are M2's own settings.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.config.families import UNREAD
from harness.config.variants import NUM_CLASSES, Variant
from harness.training.distributions import (
    LIKELIHOOD_OUTPUTS,
    decoder_log_prob,
    gaussian_kl,
    gumbel_softmax_log,
    log_prob_of_sample_class,
)
from harness.training.family import Family, ImageGrid, register_family
from harness.training.networks import ACTIVATIONS, NetworkSpec, build_network, square_side


class M2(nn.Module):
    """The three networks, from registered parts (training/networks.py). With one hidden layer
    each (the defaults) they are the tutorial's, parameter for parameter and in the order
    they are drawn, so a seed gives the same initial weights it always gave."""

    def __init__(
        self,
        x_dim: int = 784,
        num_classes: int = NUM_CLASSES,
        hidden: int = 512,
        z_dim: int = 64,
        activation: str = "relu",
        init_std: float = 0.0,
        *,
        classifier_net: str = "mlp",
        classifier: NetworkSpec | None = None,
        encoder_net: str = "mlp",
        encoder: NetworkSpec | None = None,
        decoder_net: str = "mlp",
        decoder: NetworkSpec | None = None,
        likelihood: str = "bernoulli",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.likelihood = likelihood
        self.act = ACTIVATIONS[activation]()
        one_layer = NetworkSpec(hidden=(hidden,), activation=activation)
        classifier, encoder, decoder = (s or one_layer for s in (classifier, encoder, decoder))
        self.classifier = build_network(classifier_net, x_dim, num_classes, classifier)
        # q(z|x,y): the x part (all its layers but the last hidden one, where y joins), then
        # act(x part + W_y y), then the mean and log-variance
        width = encoder.hidden[-1]
        self.enc_x = build_network(encoder_net, x_dim, width, _drop_last(encoder))
        self.enc_y = nn.Linear(num_classes, width, bias=False)
        self.enc_loc = nn.Linear(width, z_dim)
        self.enc_logvar = nn.Linear(width, z_dim)
        # p(x|y,z): act(W_z z + W_y y + b), then the decoder's other hidden layers
        width = decoder.hidden[0]
        self.dec_z = nn.Linear(z_dim, width)
        self.dec_y = nn.Linear(num_classes, width, bias=False)
        outputs = x_dim * LIKELIHOOD_OUTPUTS[likelihood]
        after_merge = NetworkSpec(decoder.hidden[1:], activation, dropout=decoder.dropout)
        self.dec_out = build_network(decoder_net, width, outputs, after_merge)
        if init_std > 0:
            for module in self.modules():
                if isinstance(module, nn.Linear | nn.Conv2d):
                    nn.init.normal_(module.weight, std=init_std)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)

    @classmethod
    def from_variant(cls, variant: Variant, x_dim: int = 784) -> M2:
        """`variant`'s networks for data of `x_dim` dimensions (the pixels, or M1's features)."""

        reach = variant.regularised.split(",")

        def spec(layers: int, width: int, network: str) -> NetworkSpec:
            return NetworkSpec(
                hidden=(width or variant.hidden,) * layers,
                activation=variant.activation,
                batch_norm=variant.batch_norm and network in reach,
                dropout=variant.dropout if network in reach else 0.0,
            )

        return cls(
            x_dim=x_dim,
            hidden=variant.hidden,
            z_dim=variant.z_dim,
            activation=variant.activation,
            init_std=variant.init_std,
            classifier_net=variant.classifier_net,
            classifier=spec(variant.classifier_layers, variant.classifier_hidden, "classifier"),
            encoder_net=variant.encoder_net,
            encoder=spec(variant.encoder_layers, variant.encoder_hidden, "encoder"),
            decoder_net=variant.decoder_net,
            decoder=spec(variant.decoder_layers, variant.decoder_hidden, "decoder"),
            likelihood=variant.likelihood,
        )

    def classify(self, x: Tensor) -> Tensor:
        """Logits of q(y|x)."""
        return self.classifier(x)

    def encoder_x_part(self, x: Tensor) -> Tensor:
        """W_x x + b of the encoder's first layer: computed once per image."""
        return self.enc_x(x)

    def encode(self, x_part: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z|x,y) from the encoder's x part and a (soft) one-hot y."""
        h = self.act(x_part + self.enc_y(y))
        return self.enc_loc(h), self.enc_logvar(h)

    def decode(self, z: Tensor, y: Tensor) -> Tensor:
        """p(x|y,z)'s parameters: Bernoulli logits, or Gaussian means then log-variances."""
        return self.dec_out(self.act(self.dec_z(z) + self.dec_y(y)))


def _drop_last(spec: NetworkSpec) -> NetworkSpec:
    """The x part of the encoder: its hidden layers before the one where y joins."""
    return NetworkSpec(spec.hidden[:-1], spec.activation, spec.batch_norm, spec.dropout)


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

    return weighted_terms(labelled, unlabelled, classification, alpha, weighting, n_l, n_u)


def weighted_terms(
    labelled: Tensor,
    unlabelled: Tensor,
    classification: Tensor,
    alpha: float,
    weighting: str,
    n_l: int,
    n_u: int,
) -> dict[str, Tensor]:
    """The three means and the loss w_l L + w_u U + alpha w_l CE (`term_weights`' w)."""
    w_l, w_u = term_weights(weighting, n_l, n_u)
    return {
        "loss": w_l * labelled + w_u * unlabelled + alpha * w_l * classification,
        "labelled": labelled,
        "unlabelled": unlabelled,
        "classification": classification,
    }


def objective_settings(variant: Variant) -> dict[str, Any]:
    """The settings of `variant` that m2_loss reads."""
    return {
        "estimator": variant.estimator,
        "y_term": variant.y_term,
        "weighting": variant.term_weighting,
    }


def classify(model: M2, x: Tensor) -> Tensor:
    """Logits of q(y|x)."""
    return model.classify(x)


@torch.no_grad()
def analogies(model: M2, x: Tensor, rows: int = 8) -> ImageGrid:
    """Each row: a test image, then its style z (the mean of q(z|x,y) at the predicted y)
    decoded with every class y, as in Kingma et al. 2014, Figure 1."""
    x = x[:rows]
    K = model.num_classes
    y_pred = F.one_hot(model.classify(x).argmax(-1), K).to(x.dtype)
    z, _ = model.encode(model.encoder_x_part(x), y_pred)
    y_all = torch.eye(K, dtype=x.dtype, device=x.device)
    decoded = torch.sigmoid(model.decode(z.repeat_interleave(K, 0), y_all.repeat(rows, 1)))
    return ImageGrid(
        "test image, then its style with each y",
        ("x", *map(str, range(K))),
        torch.cat([x[:, None], decoded.view(rows, K, -1)], dim=1),
    )


def image_grids(model: M2, test_x: Tensor) -> dict[str, ImageGrid]:
    """The analogies, where M2 models the pixels of square grey-level images (not M1's
    real-valued features)."""
    if model.likelihood != "bernoulli" or square_side(test_x.shape[1]) is None:
        return {}
    return {"analogies.png": analogies(model, test_x)}


FAMILY = register_family(
    Family(
        name="m2",
        build=M2.from_variant,
        objective=m2_loss,
        objective_settings=objective_settings,
        classify=classify,
        unread=UNREAD["m2"],
        image_grids=image_grids,
    )
)
