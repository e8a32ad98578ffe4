"""The networks M2 is built from, registered by name as timm registers models: a builder takes
the input and output sizes and a `NetworkSpec` and returns the module. A variant chooses the
classifier's and the encoder's x-reading network by name (`classifier_net`, `encoder_net`);
`@register_network` adds one (a user's module, loaded with `--variants FILE`, may)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from harness.config.networks import name_network
from harness.training.softplus import Softplus

ACTIVATIONS = {"relu": nn.ReLU, "softplus": Softplus}


def square_side(pixels: int) -> int | None:
    """The side of a square grey-level image of `pixels` values (784: 28), else None."""
    side = math.isqrt(pixels)
    return side if side * side == pixels else None


@dataclass(frozen=True)
class NetworkSpec:
    """What a builder is told: hidden widths, activation, batch norm and dropout."""

    hidden: tuple[int, ...]
    activation: str = "relu"
    batch_norm: bool = False
    dropout: float = 0.0


Builder = Callable[[int, int, NetworkSpec], nn.Module]
BUILDERS: dict[str, Builder] = {}


def register_network(fn: Builder | None = None, *, description: str = "") -> Any:
    """Register a network builder under its function's name (dashes for underscores), so that
    `classifier_net` and `encoder_net` can name it; `description` for `m2h show`."""
    if fn is None:
        return lambda f: register_network(f, description=description)
    name = fn.__name__.replace("_", "-")
    BUILDERS[name] = fn
    name_network(name, description or " ".join((fn.__doc__ or name).split()))
    return fn


def build_network(name: str, in_dim: int, out_dim: int, spec: NetworkSpec) -> nn.Module:
    return BUILDERS[name](in_dim, out_dim, spec)


def _hidden_layers(in_dim: int, spec: NetworkSpec) -> tuple[list[nn.Module], int]:
    layers: list[nn.Module] = []
    for width in spec.hidden:
        layers.append(nn.Linear(in_dim, width))
        if spec.batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(ACTIVATIONS[spec.activation]())
        if spec.dropout:
            layers.append(nn.Dropout(spec.dropout))
        in_dim = width
    return layers, in_dim


@register_network
def mlp(in_dim: int, out_dim: int, spec: NetworkSpec) -> nn.Module:
    """Fully connected: hidden layers (Linear, batch norm, activation, dropout), then a Linear
    to `out_dim`; with no hidden layers, that Linear alone."""
    layers, width = _hidden_layers(in_dim, spec)
    if not layers:
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(*layers, nn.Linear(width, out_dim))


class _Image(nn.Module):
    def __init__(self, side: int) -> None:
        super().__init__()
        self.side = side

    def forward(self, x: Tensor) -> Tensor:
        return x.view(-1, 1, self.side, self.side)


@register_network
def cnn(in_dim: int, out_dim: int, spec: NetworkSpec) -> nn.Module:
    """A small CNN on a square grey-level image (28x28 for MNIST): two 3x3 convolutions of
    stride 2 (32 and 64 channels, each with optional batch norm and the activation), flattened,
    then `mlp` on the features."""
    side = square_side(in_dim)
    if side is None:
        raise ValueError(f"cnn reads square grey-level images (784 inputs: 28x28), got {in_dim}")
    layers: list[nn.Module] = [_Image(side)]
    channels = 1
    for out_channels in (32, 64):
        layers.append(nn.Conv2d(channels, out_channels, 3, stride=2, padding=1))
        if spec.batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(ACTIVATIONS[spec.activation]())
        channels = out_channels
    layers.append(nn.Flatten())
    after = math.ceil(side / 4)  # each padded stride-2 convolution halves the side, rounding up
    return nn.Sequential(*layers, mlp(64 * after * after, out_dim, spec))
