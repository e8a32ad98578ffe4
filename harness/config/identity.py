"""The keys that name what the harness runs, each in one place, with what it identifies.

- cell key: a cell of any ablation (every setting that changes what a run does, but the seed, with
  the step cap); runs of one cell in two ablations share it, so a finished run is found and
  reused whichever ablation lists it.
- record key: one run (the cell key and the seed); a record's file name is its variant's name and
  its record key, and claims, MLflow tags (`m2h.record_key`) and the Slurm ledger use it.
- run key: a run's checkpoint (the settings it can resume on: all but the epoch budget and the
  stop rule, with the step cap), so a longer budget continues a shorter run's checkpoint.
- ablation key: one ablation grid at one budget, the MLflow parent run that holds its runs.
- job key: a job of one or more runs (their record keys), in the Slurm ledger.
- twin key: one run whatever its variant's name (a cell named differently in two ablations, with
  every setting alike, is one run; a label seed equal to the run's seed is no setting).
- M1 key: one trained M1 (its settings, `config/m1.py`), shared by every M1+M2 run that reads it:
  its weights, record, claim and MLflow run (tag `m1_key`) are named by it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from harness.config.m1 import M1Settings
from harness.config.variants import Variant, applicable_params, resumable_settings

if TYPE_CHECKING:
    from harness.config.ablations import Ablation


def _digest(payload: object) -> str:
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def _changed_settings(variant: Variant, leave_out: str) -> dict[str, object]:
    """The settings that change what `variant` does and differ from their defaults, but one."""
    defaults = Variant().params()
    return {
        k: v
        for k, v in applicable_params(variant).items()
        if k != leave_out and v != defaults.get(k, object())
    }


def cell_key(variant: Variant, max_steps: int | None) -> str:
    """What makes two runs the same cell: every setting that changes what the run does but the
    seed (the epoch budget and the stop rule included), and the step cap. A setting that has no
    effect on this variant (a warm-up length under a constant alpha, a temperature under exact
    marginalisation) does not split a cell from its twin. Settings at their default value are
    left out of the hash, so a setting added to `Variant` later leaves the committed records'
    keys as they are."""
    return _digest([_changed_settings(variant, "seed"), max_steps])


def twin_key(variant: Variant, max_steps: int | None) -> str:
    """One run whatever its variant is called: every setting that changes what it does, its
    seed and the step cap, but not the variant's name. Two cells of different names with this
    key in common are the same run (records.adopt_twin: trained once, recorded under both). A
    label seed equal to the seed is the run without one (the same labelled subset)."""
    settings = _changed_settings(variant, "name")
    if variant.label_seed == variant.seed:
        settings.pop("label_seed")
    return _digest([settings, max_steps])


def record_key(variant: Variant, max_steps: int | None) -> str:
    """One run: its cell key and its seed."""
    return f"{cell_key(variant, max_steps)}-s{variant.seed}"


def record_name(variant: Variant, max_steps: int | None) -> str:
    """A run record's file name, without its suffix: the variant's name and the record key."""
    return f"{variant.name}-{record_key(variant, max_steps)}"


def run_key(variant: Variant, max_steps: int | None) -> str:
    """A stable name for a run's checkpoint: the variant and a hash of what it can resume on."""
    settings = resumable_settings(variant.params())
    return f"{variant.name}-{_digest([settings, max_steps])}"


def ablation_key(ablation: Ablation, epochs: int, max_steps: int | None) -> str:
    """One parent run per ablation grid and budget; seeds may be added to it later."""
    return _digest(
        [
            ablation.name,
            ablation.settings,
            ablation.axes,
            ablation.variants,
            ablation.controls,
            epochs,
            max_steps,
        ]
    )


def job_key(record_keys: Sequence[str]) -> str:
    """A job of several runs (a stack): their record keys."""
    return ",".join(record_keys)


def m1_key(settings: M1Settings) -> str:
    """One trained M1: "m1-" and a hash of its settings."""
    return f"m1-{_digest(settings.params())}"
