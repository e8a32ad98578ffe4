"""The M2 networks: classifier q(y|x), Gaussian encoder q(z|x,y), decoder p(x|y,z) (Bernoulli
logits, or a Gaussian's means and log-variances: `likelihood`).

The first layers of the encoder and decoder are split into an x (or z) part and a y part,
W [x; y] = W_x x + W_y y, so that the x part can be computed once per image and shared by all
K values of y when the exact estimator marginalises over the classes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from harness.config.variants import NUM_CLASSES, Variant
from harness.training.networks import ACTIVATIONS, NetworkSpec, build_network, mlp

# the decoder's outputs per data dimension, by likelihood: a Bernoulli logit, or a Gaussian's
# mean and log-variance (its variance learned, per dimension and per row)
LIKELIHOOD_OUTPUTS = {"bernoulli": 1, "gaussian": 2}


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
        self.dec_out = mlp(width, outputs, NetworkSpec(decoder.hidden[1:], activation))
        if init_std > 0:
            for module in self.modules():
                if isinstance(module, nn.Linear | nn.Conv2d):
                    nn.init.normal_(module.weight, std=init_std)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)

    @classmethod
    def from_variant(cls, variant: Variant, x_dim: int = 784) -> M2:
        """`variant`'s networks for data of `x_dim` dimensions (the pixels, or M1's features)."""

        def spec(layers: int, width: int, regularised: bool = True) -> NetworkSpec:
            return NetworkSpec(
                hidden=(width or variant.hidden,) * layers,
                activation=variant.activation,
                batch_norm=variant.batch_norm and regularised,
                dropout=variant.dropout if regularised else 0.0,
            )

        return cls(
            x_dim=x_dim,
            hidden=variant.hidden,
            z_dim=variant.z_dim,
            activation=variant.activation,
            init_std=variant.init_std,
            classifier_net=variant.classifier_net,
            classifier=spec(variant.classifier_layers, variant.classifier_hidden),
            encoder_net=variant.encoder_net,
            encoder=spec(variant.encoder_layers, variant.encoder_hidden),
            decoder=spec(variant.decoder_layers, variant.decoder_hidden, regularised=False),
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

    @torch.no_grad()
    def predict(self, x: Tensor, chunk: int = 10_000) -> Tensor:
        """Most probable class under q(y|x), in chunks."""
        return torch.cat([self.classify(part).argmax(-1) for part in x.split(chunk)])


def _drop_last(spec: NetworkSpec) -> NetworkSpec:
    """The x part of the encoder: its hidden layers before the one where y joins."""
    return NetworkSpec(spec.hidden[:-1], spec.activation, spec.batch_norm, spec.dropout)
