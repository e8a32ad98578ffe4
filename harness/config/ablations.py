"""The ablation file's schema: a declarative TOML file read into a grid of cells.

An ablation file (`ablations/NAME.toml`) says:
  description  one line
  variants     registered variants, each crossed with every combination of `axes`
  controls     registered variants run beside them (crossed with the `labels`/`dataset` axes only)
  seeds        default seeds; epochs  default epoch budget (the most a run trains)
  [seeds_by_variant]  seeds for some variants or controls instead of `seeds` (gumbel-st = [0, 1])
  reference    what every cell is compared with, paired by seed, at the same problem settings
               (labels, dataset): a variant (by default the first of `variants`), or settings
               of the axes ({ y_term = "analytic" }: each cell against its twin with those)
  [set]        settings applied to every cell (the stop rule too: validation, patience,
               min_delta); [axes]  settings swept (cartesian product)
  [set_by_variant.NAME]  settings for one variant's cells on top of [set], `epochs` (its own
               budget) included: a variant that needs another stop rule than the others
               (m1m2-reimpl's 50 epochs of patience) keeps its cells, and their records, one
               with every other ablation that runs them
  numerics     the numerics versions besides this code's (training/numerics.py) whose records
               it reuses ([0]; "unknown" for a commit not in this history): a record of any
               other is refused in one line rather than reused or trained over

Every finished run leaves a record in `<results>/runs/` (records.py); a run whose record is
there already, made by this ablation or by any other that lists the same cell, is not trained
again.
"""

from __future__ import annotations

import difflib
import itertools
import json
import tomllib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config.names import InvalidNameError, check_name
from harness.config.variants import (
    Variant,
    VariantError,
    create_variant,
    get_variant,
    parse_value,
)

ABLATIONS_DIR = Path(__file__).resolve().parents[2] / "ablations"
CONTROL_AXES = ("labels", "dataset")


class AblationError(ValueError):
    """An ablation that cannot be found or read."""


@dataclass(frozen=True)
class Cell:
    name: str  # e.g. "exact[labels=600]"
    variant: str
    overrides: dict[str, Any]
    control: bool = False

    @property
    def title(self) -> str:
        """The cell's name with what differs first, each value before its setting, so that a
        name the UI cuts short (a group's, "Group: 1000 la...") still tells cells apart:
        "1000 labels · exact" for exact[labels=1000]."""
        variant, _, swept = self.name.partition("[")
        values = [
            " ".join(kv.split("=", 1)[::-1]) for kv in filter(None, swept.rstrip("]").split(","))
        ]
        return " · ".join([*values, variant])

    def run_name(self, seed: int) -> str:
        """A run's name in MLflow: "100 labels · exact · seed 0"."""
        return f"{self.title} · seed {seed}"


@dataclass(frozen=True)
class Ablation:
    name: str
    description: str
    variants: list[str]
    controls: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    epochs: int = 10
    max_steps: int | None = None  # a step cap per epoch its runs train and are tabled at
    settings: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, list[Any]] = field(default_factory=dict)
    seeds_by_variant: dict[str, list[int]] = field(default_factory=dict)
    settings_by_variant: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the variant compared against ("": the first of `variants`), or axis settings
    reference: str | dict[str, Any] = ""
    # numerics versions besides this code's whose records the ablation reuses ("unknown": made
    # at a commit not in this history, without a version of its own)
    numerics: list[int | str] = field(default_factory=list)
    source: Path | None = field(default=None, compare=False)  # the file it was read from

    def seeds_of(self, cell: Cell, seeds: Sequence[int] | None = None) -> list[int]:
        """The seeds `cell` runs: `seeds` when given (the command line's), else its variant's
        own seeds if the file names them, else the file's."""
        if seeds:
            return list(seeds)
        return list(self.seeds_by_variant.get(cell.variant, self.seeds))

    def epochs_of(self, cell: Cell, epochs: int | None = None) -> int:
        """`cell`'s epoch budget: `epochs` where it is not the file's (a command line's
        --epochs, for every cell), else its variant's own in [set_by_variant], else the
        file's."""
        if epochs and epochs != self.epochs:
            return epochs
        return int(self.settings_by_variant.get(cell.variant, {}).get("epochs", self.epochs))

    def cells(self) -> list[Cell]:
        cells = []
        for names, axes, control in [
            (self.variants, self.axes, False),
            (self.controls, {k: v for k, v in self.axes.items() if k in CONTROL_AXES}, True),
        ]:
            for name in names:
                own = {
                    k: v
                    for k, v in self.settings_by_variant.get(name, {}).items()
                    if k != "epochs"  # a budget, not a setting of the cell (epochs_of)
                }
                for values in itertools.product(*axes.values()):
                    swept = dict(zip(axes, values, strict=True))
                    label = ",".join(f"{k}={v}" for k, v in swept.items())
                    cells.append(
                        Cell(
                            f"{name}[{label}]" if label else name,
                            name,
                            {**self.settings, **own, **swept},
                            control,
                        )
                    )
        return cells

    def pick(self, names: Sequence[str]) -> list[Cell]:
        """The cells named (as `cells()` names them: "exact[alpha=0.1]"), in the file's order;
        an AblationError naming the closest cell for a name that is none of them."""
        cells = self.cells()
        known = [c.name for c in cells]
        for name in names:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                listed = f"its cells: {', '.join(known)}"
                hint = f" (did you mean {close[0]!r}?)" if close else f" ({listed})"
                raise AblationError(f"{name!r} is no cell of ablation {self.name!r}{hint}")
        return [c for c in cells if c.name in names]

    def is_reference(self, cell: Cell) -> bool:
        if isinstance(self.reference, dict):
            return all(cell.overrides.get(k) == v for k, v in self.reference.items())
        return cell.variant == (self.reference or self.variants[0])

    def reference_of(self, cell: Cell) -> Cell | None:
        """The cell `cell` is compared with: a reference cell at the same problem settings
        (labels, dataset), the one that shares most with it (its variant, then its other
        swept settings), the first in the file's order on a tie; None for a reference cell
        itself, or where none is at its problem settings."""
        if self.is_reference(cell):
            return None

        def shared(other: Cell) -> int:
            same = sum(cell.overrides.get(k) == other.overrides.get(k) for k in self.axes)
            return 2 * len(self.axes) * (other.variant == cell.variant) + same

        candidates = [
            other
            for other in self.cells()
            if self.is_reference(other)
            and all(cell.overrides.get(k) == other.overrides.get(k) for k in CONTROL_AXES)
        ]
        return max(candidates, key=shared, default=None)  # max keeps the first on a tie

    def variant(self, cell: Cell, seed: int, epochs: int | None = None) -> Variant:
        return create_variant(
            cell.variant, {**cell.overrides, "seed": seed, "epochs": self.epochs_of(cell, epochs)}
        )


def search_path(directory: Path | None = None) -> list[Path]:
    """Where ablation files are looked for: `directory` when given, else `./ablations` of the
    folder m2h runs in (the files a user edits there), then the package's own."""
    if directory is not None:
        return [directory]
    local = Path.cwd() / "ablations"
    return [local, ABLATIONS_DIR] if local.resolve() != ABLATIONS_DIR else [ABLATIONS_DIR]


def available(directory: Path | None = None) -> list[str]:
    return sorted({p.stem for folder in search_path(directory) for p in folder.glob("*.toml")})


def ablation_file(name: str, directory: Path | None = None) -> Path:
    """The file `name` reads: a path to a .toml file, or NAME.toml in the first folder of
    `search_path` that has one (a missing one is named by the first folder)."""
    if name.endswith(".toml"):
        return Path(name)
    candidates = [folder / f"{name}.toml" for folder in search_path(directory)]
    return next((c for c in candidates if c.exists()), candidates[-1])


def load_ablation(name: str, directory: Path | None = None) -> Ablation:
    """Read the ablation file `name` (`ablation_file`) and check every name in it."""
    path = ablation_file(name, directory)
    try:
        check_name(path.stem, "ablation")  # it names the tables, plots and MLflow runs
    except InvalidNameError as err:
        raise AblationError(str(err)) from None
    if not path.exists():
        known = available(directory)
        hint = difflib.get_close_matches(name, known, n=1)
        raise AblationError(
            f"unknown ablation {name!r}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
            + f"; known: {', '.join(known)}"
        )
    try:
        spec = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise AblationError(f"{path} is not valid TOML: {err}") from None
    try:
        return _checked(path, spec)
    except (AblationError, VariantError) as err:
        if str(path) in str(err):
            raise
        raise type(err)(f"{path}: {err}") from None
    except (TypeError, ValueError, AttributeError) as err:  # a value of the wrong kind
        raise AblationError(f"{path}: a value of the wrong kind ({err})") from None


def _checked(path: Path, spec: dict[str, Any]) -> Ablation:
    """The ablation `spec` (read from `path`) describes, every name and setting in it checked."""
    keys = {"description", "variants", "controls", "seeds", "epochs", "set", "axes", "reference"}
    keys |= {"max_steps", "numerics"}
    unknown = set(spec) - keys - {"seeds_by_variant", "set_by_variant"}
    if unknown:
        raise AblationError(f"{path}: unknown keys {', '.join(sorted(unknown))}")
    ablation = Ablation(
        source=path.resolve(),
        name=path.stem,
        description=spec.get("description", ""),
        variants=list(spec.get("variants", [])),
        controls=list(spec.get("controls", [])),
        seeds=list(spec.get("seeds", [0])),
        epochs=int(spec.get("epochs", 10)),
        max_steps=spec.get("max_steps"),
        settings=dict(spec.get("set", {})),
        axes={k: list(v) for k, v in spec.get("axes", {}).items()},
        seeds_by_variant={k: list(v) for k, v in spec.get("seeds_by_variant", {}).items()},
        settings_by_variant={k: dict(v) for k, v in spec.get("set_by_variant", {}).items()},
        reference=spec.get("reference", ""),
        numerics=list(spec.get("numerics", [])),
    )
    if not ablation.variants:
        raise AblationError(f"{path}: no variants")
    steps = ablation.max_steps
    if steps is not None and not (type(steps) is int and steps >= 1):
        raise AblationError(f"{path}: max_steps must be a whole number >= 1, got {steps!r}")
    for version in ablation.numerics:
        if not (type(version) is int and version >= 0) and version != "unknown":
            raise AblationError(
                f'{path}: numerics lists numerics versions (whole numbers >= 0, or "unknown"),'
                f" got {version!r}"
            )
    if isinstance(ablation.reference, dict):
        for key, value in ablation.reference.items():
            if value not in ablation.axes.get(key, []):
                raise AblationError(
                    f"{path}: reference {key} = {value!r} is not a value of its axis {key!r}"
                )
    elif not isinstance(ablation.reference, str):
        raise AblationError(f"{path}: reference must be a variant's name or a table of settings")
    elif ablation.reference and ablation.reference not in ablation.variants + ablation.controls:
        raise AblationError(
            f"{path}: reference {ablation.reference!r} is not one of its variants or controls"
        )
    named: list[tuple[str, Collection[str]]] = [
        ("seeds_by_variant", ablation.seeds_by_variant.keys()),
        ("set_by_variant", ablation.settings_by_variant.keys()),
    ]
    for table, names in named:
        strays = set(names) - set(ablation.variants + ablation.controls)
        if strays:
            raise AblationError(
                f"{path}: {table} names {', '.join(sorted(strays))}, "
                "which the ablation does not list"
            )
    for name_, own in ablation.settings_by_variant.items():
        swept = sorted(set(own) & set(ablation.axes))
        if swept:
            raise AblationError(
                f"{path}: set_by_variant.{name_} sets {', '.join(swept)}, which is swept: "
                "one or the other"
            )
    for name_ in ablation.variants + ablation.controls:
        get_variant(name_)
    for key, values in ablation.axes.items():
        if not values:
            raise AblationError(f"{path}: axis {key!r} is empty")
        parse_value(key, str(values[0]))  # an unknown setting fails here, with a did-you-mean
    for cell in ablation.cells():  # every cell must be a valid variant
        ablation.variant(cell, ablation.seeds[0])
    return ablation


def find_cell(spec: str, ablation_name: str | None, where: dict[str, Any]) -> tuple[Ablation, Cell]:
    """The ablation and cell that `spec` names: ABLATION:CELL, or CELL of `ablation_name`; CELL
    is a cell's name or a variant with one cell there that has every setting in `where`."""
    found, _, cell_name = spec.rpartition(":") if ":" in spec else ("", "", spec)
    name = found or ablation_name
    if not name:
        raise AblationError(f"{spec!r} names no ablation: write ABLATION:{spec} or --ablation NAME")
    ablation = load_ablation(name)
    cells = ablation.cells()
    named = [c for c in cells if c.name == cell_name] or [
        c
        for c in cells
        if c.variant == cell_name and all(c.overrides.get(k) == v for k, v in where.items())
    ]
    if len(named) != 1:
        known = ", ".join(c.name for c in cells)
        what = "several cells" if named else "no cell"
        raise AblationError(f"{cell_name!r} is {what} of ablation {name!r} ({known})")
    return ablation, named[0]


def sweep_spec(
    base: str,
    sweep: Sequence[str],
    settings: dict[str, Any],
    seeds: Sequence[int] | None,
    epochs: int | None,
    max_steps: int | None = None,
) -> tuple[str, str]:
    """An ad-hoc sweep from the command line (`--base gumbel-0.5 --sweep temperature=0.2,1.0
    z_dim=32,128`) as an ablation file: (the name it gets unless the user names it, its TOML),
    with its budget (epochs, step cap), so later commands need no budget flag.
    Each value is parsed and checked as `--set` checks it; a key swept twice is refused."""
    axes: dict[str, list[Any]] = {}
    for spec in sweep:
        key, sep, text = spec.partition("=")
        key = key.strip()
        if not sep or not text:
            raise AblationError(f"a --sweep entry is key=a,b,...; got {spec!r}")
        if key in axes:
            raise AblationError(f"{key} is swept twice: give its values once, comma-separated")
        if key in settings:
            raise AblationError(f"{key} is both swept and --set: one or the other")
        axes[key] = [parse_value(key, part.strip()) for part in text.split(",")]
    if not axes:
        raise AblationError("--sweep needs at least one key=a,b,...")
    get_variant(base)  # an unknown base fails here, with a did-you-mean
    name = "-".join([base, *axes])
    lines = [
        f"description = {json.dumps(f'ad-hoc sweep of {base} over ' + ', '.join(axes))}",
        f"variants = {json.dumps([base])}",
        f"seeds = {json.dumps(list(seeds or [0]))}",
        *([f"epochs = {epochs}"] if epochs else []),
        *([f"max_steps = {max_steps}"] if max_steps else []),
        "",
        "[set]",
        *(f"{k} = {json.dumps(v)}" for k, v in settings.items()),
        "",
        "[axes]",
        *(f"{k} = {json.dumps(v)}" for k, v in axes.items()),
    ]
    return name, "\n".join(lines) + "\n"
