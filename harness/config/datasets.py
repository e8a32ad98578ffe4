"""The names of the datasets a variant can choose (`dataset`), with what each is. The datasets
themselves (their shapes, files and readers) are in `harness.training.data` (they need torch;
this layer does not): registering one there (`register_dataset`) names it here too, so a variant
naming it is checked before anything runs."""

from __future__ import annotations

DATASETS: dict[str, str] = {
    "mnist": "MNIST digits, 28x28 grey levels, 60,000 training and 10,000 test images",
    "fashion-mnist": "Fashion-MNIST clothes, 28x28 grey levels, 60,000 training and 10,000 "
    "test images",
}


def name_dataset(name: str, description: str) -> None:
    """Make `name` a dataset variants may choose (its descriptor registers it in training)."""
    DATASETS[name] = description
