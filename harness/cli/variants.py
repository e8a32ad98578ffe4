"""`m2h list` and `m2h show`: the registered variants, and every setting of one, grouped into
the shared settings and its family's own."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from harness.cli.common import (
    text_table,
)
from harness.config.datasets import DATASETS
from harness.config.families import FAMILIES
from harness.config.knobs import SHARED_PARTS
from harness.config.networks import NETWORKS
from harness.config.variants import (
    applicable_params,
    get_variant,
    list_variants,
    round_float,
    settings_by_part,
)

if TYPE_CHECKING:
    pass


LIST_COLUMNS = (
    "family",
    "estimator",
    "y_term",
    "temperature",
    "temperature_schedule",
    "alpha",
    "alpha_scaling",
    "alpha_schedule",
    "hidden",
    "activation",
    "z_dim",
    "lr",
    "batch_size",
    "labelled_batch_size",
    "epochs",
)


def _shown(value: Any) -> str:
    return str(round_float(value))


def cmd_list(args: argparse.Namespace) -> int:
    rows = [
        {"name": v.name, **{c: _shown(getattr(v, c)) for c in LIST_COLUMNS}}
        for v in list_variants()
    ]
    print(text_table(rows))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    variant = get_variant(args.name)
    settings = variant.params() if args.all else applicable_params(variant)
    print(f"{variant.name}: {variant.description}\n")
    width = max(len(k) for k in settings)
    for key in ("name", "family"):
        print(f"  {key.ljust(width)}  {settings[key]}")
    for part, chosen in settings_by_part(settings).items():
        whose = "shared" if part in SHARED_PARTS else f"family {variant.family}'s own"
        print(f"\n{part} ({whose}):")
        for key, value in chosen.items():
            if key != "family":
                print(f"  {key.ljust(width)}  {_shown(value)}")
    if variant.batch_norm or variant.dropout:
        print(f"\n  batch_norm and dropout reach: {variant.regularised.replace(',', ', ')}")
    left_out = len(variant.params()) - len(settings)
    if left_out:
        print(
            f"\n({left_out} settings that do not apply to this variant left out; "
            f"`m2h show {variant.name} --all` lists every one)"
        )
    for names, what in (
        (FAMILIES, "families that family can name (`--set family=adgm`)"),
        (DATASETS, "datasets that dataset can name (`--set dataset=fashion-mnist`)"),
        (NETWORKS, "networks that classifier_net, encoder_net and decoder_net can name"),
    ):
        print(f"\n{what}:")
        width = max(len(name) for name in names)
        for name, description in names.items():
            print(f"  {name.ljust(width)}  {description}")
    return 0


def add_parsers(sub: Any) -> None:
    """The `list` and `show` subcommands."""
    sub.add_parser("list", help="the registered variants and their knobs").set_defaults(
        func=cmd_list
    )
    show = sub.add_parser("show", help="every setting of one variant")
    show.add_argument("name")
    show.add_argument("--all", action="store_true", help="also the settings that do not apply")
    show.set_defaults(func=cmd_show)
