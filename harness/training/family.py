"""A model family as the training layer sees it, and the registry that names the families.

The step, the stacked step, the trainer and the figures reach a model only through its `Family`
and import no family module: a family is one module (`harness/families/m2.py` is the first) that
builds its networks for a variant and the width of the data, computes its objective as the named
`TERMS`, classifies, and says which image grids its figures add. It registers itself with
`register_family` when imported (`m2h --variants FILE` imports a researcher's); `get_family`
finds a family by the variant's `family`, importing the harness's own (`BUILT_IN`, by module
name) and those a package installs under the entry-point group `m2_harness.families` when a
name is not registered yet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

import torch
from torch import Tensor, nn

from harness.config.families import FAMILIES, name_family
from harness.config.variants import Variant

# the loss terms every family reports, each a mean over its rows; "loss" is what is minimised
TERMS = ("loss", "labelled", "unlabelled", "classification")
ENTRY_POINTS = "m2_harness.families"
# the harness's families and their modules (named, not imported: they import this one)
BUILT_IN = {
    "m2": "harness.families.m2",
    "adgm": "harness.families.adgm",
    "sdgm": "harness.families.sdgm",
}


@dataclass(frozen=True)
class ImageGrid:
    """Images a figure shows as a grid: `images` [rows, columns, pixels] in [0, 1], a label per
    column and a title."""

    title: str
    columns: tuple[str, ...]
    images: Tensor


def no_image_grids(model: Any, x: Tensor) -> dict[str, ImageGrid]:
    """A family whose figures add no image grid."""
    return {}


@dataclass(frozen=True)
class Family:
    """What a model family gives the trainer (each function takes the family's own model):

    - `build(variant, x_dim)`: its networks for rows of x_dim values;
    - `objective(model, x_l, y_l, x_u, *, alpha, temperature, generator, **settings)`: the loss
      on labelled rows x_l of classes y_l and unlabelled rows x_u, at this step's alpha and
      temperature, drawing its noise from `generator`: the TERMS by name;
    - `objective_settings(variant)`: the `settings` the objective reads off a variant;
    - `classify(model, x)`: the logits of q(y|x);
    - `image_grids(model, test_x)`: the image grids its run figures add, by file name;
    - `unread`: the variant's settings it does not read (refused away from their defaults, and
      left out of `m2h show`)."""

    name: str
    build: Callable[[Variant, int], nn.Module]
    objective: Callable[..., dict[str, Tensor]]
    objective_settings: Callable[[Variant], dict[str, Any]]
    classify: Callable[[Any, Tensor], Tensor]
    image_grids: Callable[[Any, Tensor], dict[str, ImageGrid]] = no_image_grids
    description: str = ""
    unread: frozenset[str] = frozenset()  # the variant's settings it does not read


REGISTERED: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Register `family` under its name, so that a variant's `family` can name it."""
    REGISTERED[family.name] = family
    name_family(
        family.name, family.description or FAMILIES.get(family.name, family.name), family.unread
    )
    return family


def _load_installed(name: str | None = None) -> None:
    """Import the built-in and the installed families' modules (the one called `name`, or all):
    each registers its family."""
    for family, module in BUILT_IN.items():
        if name in (None, family):  # registered again if a registry was reset since its import
            register_family(import_module(module).FAMILY)
    for entry in entry_points(group=ENTRY_POINTS):
        if name in (None, entry.name):
            entry.load()


def get_family(name: str) -> Family:
    if name not in REGISTERED:
        _load_installed(name)
    if name not in REGISTERED:
        raise ValueError(
            f"family {name!r} is not registered (registered: {', '.join(list_families())}): "
            f"a family registers when its module is imported (m2h --variants FILE) or is "
            f"installed under the entry-point group {ENTRY_POINTS!r}"
        )
    return REGISTERED[name]


def list_families() -> list[str]:
    """The registered and the installed families, by name."""
    _load_installed()
    return sorted(REGISTERED)


@torch.no_grad()
def predict(family: Family, model: nn.Module, x: Tensor, chunk: int = 10_000) -> Tensor:
    """Most probable class under the family's q(y|x), in chunks."""
    return torch.cat([family.classify(model, part).argmax(-1) for part in x.split(chunk)])
