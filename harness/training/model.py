"""The M2 networks: classifier q(y|x), Gaussian encoder q(z|x,y), Bernoulli decoder p(x|y,z).

The first layers of the encoder and decoder are split into an x (or z) part and a y part,
W [x; y] = W_x x + W_y y, so that the x part can be computed once per image and shared by all
K values of y when the exact estimator marginalises over the classes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from harness.config.variants import NUM_CLASSES, Variant

ACTIVATIONS = {"relu": nn.ReLU, "softplus": nn.Softplus}


class M2(nn.Module):
    def __init__(
        self,
        x_dim: int = 784,
        num_classes: int = NUM_CLASSES,
        hidden: int = 512,
        z_dim: int = 64,
        activation: str = "relu",
        init_std: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.act = ACTIVATIONS[activation]()
        self.classifier = nn.Sequential(
            nn.Linear(x_dim, hidden), ACTIVATIONS[activation](), nn.Linear(hidden, num_classes)
        )
        self.enc_x = nn.Linear(x_dim, hidden)
        self.enc_y = nn.Linear(num_classes, hidden, bias=False)
        self.enc_loc = nn.Linear(hidden, z_dim)
        self.enc_logvar = nn.Linear(hidden, z_dim)
        self.dec_z = nn.Linear(z_dim, hidden)
        self.dec_y = nn.Linear(num_classes, hidden, bias=False)
        self.dec_out = nn.Linear(hidden, x_dim)
        if init_std > 0:
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, std=init_std)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)

    @classmethod
    def from_variant(cls, variant: Variant) -> M2:
        return cls(
            hidden=variant.hidden,
            z_dim=variant.z_dim,
            activation=variant.activation,
            init_std=variant.init_std,
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
        """Bernoulli logits of p(x|y,z)."""
        return self.dec_out(self.act(self.dec_z(z) + self.dec_y(y)))

    @torch.no_grad()
    def predict(self, x: Tensor, chunk: int = 10_000) -> Tensor:
        """Most probable class under q(y|x), in chunks."""
        return torch.cat([self.classify(part).argmax(-1) for part in x.split(chunk)])
