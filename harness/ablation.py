"""Named ablations: a declarative TOML file expanded into a grid of cells, each run per seed as a
child MLflow run under one parent run, skipping cells the store already holds as finished.

An ablation file (`ablations/NAME.toml`) says:
  description  one line
  variants     registered variants, each crossed with every combination of `axes`
  controls     registered variants run beside them (crossed with the `labels`/`dataset` axes only)
  seeds        default seeds; epochs  default epoch budget
  [set]        settings applied to every cell; [axes]  settings swept (cartesian product)
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import os
import tomllib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from harness.runner import checkpoint_path, run_key
from harness.variants import Variant, create_variant, get_variant, parse_value

ABLATIONS_DIR = Path(__file__).resolve().parents[1] / "ablations"
CONTROL_AXES = ("labels", "dataset")


class AblationError(ValueError):
    """An ablation that cannot be found or read."""


@dataclass(frozen=True)
class Cell:
    name: str  # e.g. "exact[labels=600]"
    variant: str
    overrides: dict[str, Any]
    control: bool = False


@dataclass(frozen=True)
class Ablation:
    name: str
    description: str
    variants: list[str]
    controls: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    epochs: int = 10
    settings: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, list[Any]] = field(default_factory=dict)

    def cells(self) -> list[Cell]:
        cells = []
        for names, axes, control in [
            (self.variants, self.axes, False),
            (self.controls, {k: v for k, v in self.axes.items() if k in CONTROL_AXES}, True),
        ]:
            for name in names:
                for values in itertools.product(*axes.values()):
                    swept = dict(zip(axes, values, strict=True))
                    label = ",".join(f"{k}={v}" for k, v in swept.items())
                    cells.append(
                        Cell(
                            f"{name}[{label}]" if label else name,
                            name,
                            {**self.settings, **swept},
                            control,
                        )
                    )
        return cells

    def variant(self, cell: Cell, seed: int, epochs: int | None = None) -> Variant:
        return create_variant(
            cell.variant, {**cell.overrides, "seed": seed, "epochs": epochs or self.epochs}
        )


def available(directory: Path = ABLATIONS_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.toml"))


def load_ablation(name: str, directory: Path = ABLATIONS_DIR) -> Ablation:
    """Read `ablations/NAME.toml` (or a path to a .toml file) and check every name in it."""
    path = Path(name) if name.endswith(".toml") else directory / f"{name}.toml"
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
    except tomllib.TOMLDecodeError as err:
        raise AblationError(f"{path} is not valid TOML: {err}") from None
    unknown = set(spec) - {"description", "variants", "controls", "seeds", "epochs", "set", "axes"}
    if unknown:
        raise AblationError(f"{path}: unknown keys {', '.join(sorted(unknown))}")
    ablation = Ablation(
        name=path.stem,
        description=spec.get("description", ""),
        variants=list(spec.get("variants", [])),
        controls=list(spec.get("controls", [])),
        seeds=list(spec.get("seeds", [0])),
        epochs=int(spec.get("epochs", 10)),
        settings=dict(spec.get("set", {})),
        axes={k: list(v) for k, v in spec.get("axes", {}).items()},
    )
    if not ablation.variants:
        raise AblationError(f"{path}: no variants")
    for name_ in ablation.variants + ablation.controls:
        get_variant(name_)
    for key, values in ablation.axes.items():
        if not values:
            raise AblationError(f"{path}: axis {key!r} is empty")
        parse_value(key, str(values[0]))  # an unknown setting fails here, with a did-you-mean
    for cell in ablation.cells():  # every cell must be a valid variant
        ablation.variant(cell, ablation.seeds[0])
    return ablation


def cell_key(variant: Variant, max_steps: int | None) -> str:
    """What makes two runs the same cell of an ablation: every setting, the epoch count and the
    step cap."""
    return f"{run_key(variant, max_steps)}-e{variant.epochs}"


def ablation_key(ablation: Ablation, epochs: int, max_steps: int | None) -> str:
    """One parent run per ablation grid and budget; seeds may be added to it later."""
    payload = json.dumps(
        [
            ablation.name,
            ablation.settings,
            ablation.axes,
            ablation.variants,
            ablation.controls,
            epochs,
            max_steps,
        ],
        sort_keys=True,
    )
    return hashlib.sha1(payload.encode()).hexdigest()[:12]


@dataclass
class CellOutcome:
    cell: str
    seed: int
    status: str  # finished, skipped, failed
    detail: str = ""


def _run_job(job: dict[str, Any]) -> list[CellOutcome]:
    """Run one cell for one seed, or for several seeds stacked in one process; in a worker
    process when --jobs > 1."""
    from harness.runner import RunOptions, run_stacked, run_variant
    from harness.tracking import Tracker

    if job.get("threads"):
        import torch

        torch.set_num_threads(job["threads"])
    variants = [Variant(**params) for params in job["variants"]]
    tags = {v.seed: t for v, t in zip(variants, job["tags"], strict=True)}
    options = RunOptions(
        data_root=job["data_root"],
        download=job["download"],
        device=job["device"],
        max_steps=job["max_steps"],
        progress=False,
        tracker=Tracker(job["tracking_uri"], job["experiment"], store=job.get("store")),
        parent_run_id=job["parent"],
        checkpoint_dir=job["checkpoint_dir"],
        resume=True,
    )
    try:
        if len(variants) == 1:
            (v,) = variants
            results = [
                run_variant(v, options, run_name=f"{job['cell']} seed {v.seed}", tags=tags[v.seed])
            ]
        else:
            results = run_stacked(
                variants[0],
                [v.seed for v in variants],
                options,
                run_name=lambda v: f"{job['cell']} seed {v.seed}",
                tags=lambda v: tags[v.seed],
            )
    except Exception as err:  # a failed cell is logged FAILED; the ablation goes on
        reason = f"{type(err).__name__}: {err}"
        return [CellOutcome(job["cell"], v.seed, "failed", reason) for v in variants]
    return [
        CellOutcome(
            job["cell"],
            r.variant.seed,
            "finished",
            f"test error {r.final.test_error:.2f}%, {r.final.samples_per_sec:,.0f} rows/s",
        )
        for r in results
    ]


def _stacks(variants: list[Variant], checkpoint_dir: Path, max_steps: int | None) -> list[list]:
    """The seeds of one cell grouped into stacks that can train together: those at the same
    checkpointed epoch (0: no checkpoint yet)."""
    from harness.checkpoint import load_checkpoint

    groups: dict[int, list[Variant]] = {}
    for variant in variants:
        path = checkpoint_path(checkpoint_dir, variant, max_steps)
        epoch = load_checkpoint(path)["epoch"] if path.exists() else 0
        groups.setdefault(epoch, []).append(variant)
    return list(groups.values())


def run_ablation(
    ablation: Ablation,
    *,
    tracking_uri: str | None = None,
    seeds: Sequence[int] | None = None,
    epochs: int | None = None,
    max_steps: int | None = None,
    device: str | None = None,
    data_root: str | None = None,
    download: bool = True,
    jobs: int = 1,
    stack: bool = False,
    checkpoint_dir: str | Path = "checkpoints",
    echo: Any = print,
) -> list[CellOutcome]:
    """Run every cell and seed not already FINISHED in the store, under one parent run; with
    `stack`, the seeds of a cell train at once in one process (`StackedTrainer`)."""
    from harness.data import ensure_dataset
    from harness.runner import ensure_writable
    from harness.tracking import Tracker, local_server

    seeds = list(seeds or ablation.seeds)
    epochs = epochs or ablation.epochs
    for dataset in {ablation.variant(cell, seeds[0]).dataset for cell in ablation.cells()}:
        ensure_dataset(dataset, data_root, download)  # bad data fails here, before any write
    ensure_writable(Path(checkpoint_dir), "checkpoint folder")
    tracker = Tracker(tracking_uri, ablation.name)

    key = ablation_key(ablation, epochs, max_steps)
    parent = tracker.find_run({"m2h.ablation_key": key, "m2h.role": "ablation"})
    done = (
        {run.data.tags.get("m2h.cell_key") for run in tracker.child_runs(parent, status="FINISHED")}
        if parent
        else set()
    )
    cell_folder = Path(checkpoint_dir) / ablation.name
    todo, outcomes, runs = [], [], 0
    for cell in ablation.cells():
        pending = []
        for seed in seeds:
            variant = ablation.variant(cell, seed, epochs)
            if cell_key(variant, max_steps) in done:
                outcomes.append(CellOutcome(cell.name, seed, "skipped", "already finished"))
            else:
                pending.append(variant)
        groups = _stacks(pending, cell_folder, max_steps) if stack else [[v] for v in pending]
        for group in groups:
            todo.append(
                {
                    "cell": cell.name,
                    "variants": [v.params() | {"description": v.description} for v in group],
                    "tags": [
                        {
                            "m2h.cell_key": cell_key(v, max_steps),
                            "cell": cell.name,
                            "ablation": ablation.name,
                            "control": str(cell.control).lower(),
                        }
                        for v in group
                    ],
                }
            )
        runs += len(pending)
    echo(
        f"ablation {ablation.name}: {len(ablation.cells())} cells x {len(seeds)} seeds, "
        f"{runs} to run"
        + (f" in {len(todo)} stacks" if stack else "")
        + f", {len(outcomes)} already finished"
    )

    tags = {
        "m2h.ablation_key": key,
        "m2h.role": "ablation",
        "ablation": ablation.name,
        "epochs": str(epochs),
        "max_steps": str(max_steps or "none"),
    }
    with tracker.run(f"{ablation.name} (ablation)", tags, run_id=parent) as parent_id:
        tracker.client.set_tag(parent_id, "jobs", str(jobs))  # this invocation's
        tracker.client.log_dict(
            parent_id,
            {"description": ablation.description, "cells": [c.name for c in ablation.cells()]},
            "ablation.json",
        )
        common = {
            "experiment": ablation.name,
            "parent": parent_id,
            "data_root": data_root,
            "download": download,
            "device": device,
            "max_steps": max_steps,
            "checkpoint_dir": str(cell_folder),
        }
        if jobs <= 1 or len(todo) <= 1:
            for job in todo:
                for outcome in _run_job({**job, **common, "tracking_uri": tracker.uri}):
                    echo(f"  {outcome.cell} seed {outcome.seed}: {outcome.status} {outcome.detail}")
                    outcomes.append(outcome)
        else:
            threads = max(1, (os.cpu_count() or 1) // jobs)
            with (
                local_server(tracker.uri) as uri,
                ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool,
            ):
                futures = [
                    pool.submit(
                        _run_job,
                        {
                            **job,
                            **common,
                            "tracking_uri": uri,
                            "store": tracker.uri,
                            "threads": threads,
                        },
                    )
                    for job in todo
                ]
                for future in as_completed(futures):
                    for outcome in future.result():
                        echo(
                            f"  {outcome.cell} seed {outcome.seed}: {outcome.status} "
                            f"{outcome.detail}"
                        )
                        outcomes.append(outcome)
    return outcomes
