"""The names of the networks a variant can choose for its classifier q(y|x) and for the part of
its encoder q(z|x,y) that reads the image, with what each is. The builders are in
`harness.training.networks` (they need torch; this layer does not): registering a network there
(`@register_network`) names it here too, so a variant naming it is checked before anything
runs."""

from __future__ import annotations

NETWORKS: dict[str, str] = {
    "mlp": "fully connected: `*_layers` hidden layers of `*_hidden` units (default `hidden`), "
    "the variant's activation, optional batch norm and dropout",
    "cnn": "a small CNN on the 28x28 image: two 3x3 convolutions of stride 2 (32 and 64 "
    "channels, the activation, optional batch norm), then the MLP above on their features",
}


def name_network(name: str, description: str) -> None:
    """Make `name` a network variants may choose (its builder registers it in training)."""
    NETWORKS[name] = description
