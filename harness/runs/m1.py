"""M1, trained once and reused: the artifact every M1+M2 run reads its features from.

An M1 is named by its settings (`identity.m1_key`) and lives in the M1 folder (`m1_folder`:
$M2H_M1_DIR, else `m1/` beside the run records, so `results/m1/` for the ablations and
`m2h run`) as two files: `<key>.pt`, the encoder's weights (all M2 needs), and `<key>.json`,
its record (settings, provenance, outcome and one line per epoch, as a run record). A run that
finds both reuses them, in any ablation and on any machine that has them; one that does not
claims the key (a lock, so two processes never train it twice: the second waits and reuses it),
trains M1 to its stop rule (resuming from `<key>.train.pt` if a process was cut off), then
writes the pair and removes the training checkpoint.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from harness.config.identity import m1_key
from harness.config.m1 import M1Settings, m1_settings
from harness.config.variants import Variant, round_float
from harness.files import FileFormatError, ensure_writable, read_json, write_atomically
from harness.runs.claims import Claim, holder
from harness.training.checkpoint import CheckpointError, load_tensor_file, save_tensor_file
from harness.training.data import Splits
from harness.training.m1 import M1, M1Epoch, M1Training, m1_outcome

M1_DIR_ENV = "M2H_M1_DIR"
FORMAT = 1


def m1_folder(records_dir: str | Path | None) -> Path:
    """Where M1s are kept: $M2H_M1_DIR, else `m1/` beside the records folder, else
    ./results/m1."""
    if os.environ.get(M1_DIR_ENV):
        return Path(os.environ[M1_DIR_ENV])
    return Path(records_dir).parent / "m1" if records_dir is not None else Path("results/m1")


@dataclass(frozen=True)
class TrainedM1:
    key: str
    record: dict[str, Any]  # as <key>.json holds it
    model: M1  # the encoder is M1's; the decoder is not kept

    def describe(self) -> str:
        o = self.record["outcome"]
        ended = "stop rule" if o["stopped_by"] == "patience" else "epoch budget"
        val = o["best_val_neg_elbo"]
        best = "" if val is None else f", validation -ELBO {val:.2f} at epoch {o['best_epoch']}"
        return f"{o['epochs_run']} epochs ({ended}){best}, {o['train_seconds']:.0f} s training"


def ensure_m1(
    variant: Variant,
    splits: Splits,
    device: torch.device,
    folder: Path,
    made_by: dict[str, Any],
    announce: Callable[[str], Any] = print,
) -> TrainedM1:
    """The M1 `variant` reads: loaded from `folder` when it is there, else trained on the
    training split of `splits` (never its validation or test images) and stored."""
    settings = m1_settings(variant)
    key = m1_key(settings)
    found = _load(folder, key, settings, device)
    if found is not None:
        announce(f"M1 {key}: reused from {folder / key}.pt ({found.describe()})")
        return found
    ensure_writable(folder, "M1 folder")
    claim = Claim(folder / ".claims" / f"{key}.lock")
    if not claim.acquire():
        who = holder(claim.path)
        announce(f"M1 {key} is being trained by {who.describe() if who else 'another process'}")
        claim.acquire(wait=True)
    try:
        found = _load(folder, key, settings, device)
        if found is not None:
            announce(f"M1 {key}: trained meanwhile by another process ({found.describe()})")
            return found
        return _train(settings, key, splits, device, folder, made_by, announce)
    finally:
        claim.release()


def _train(
    settings: M1Settings,
    key: str,
    splits: Splits,
    device: torch.device,
    folder: Path,
    made_by: dict[str, Any],
    announce: Callable[[str], Any],
) -> TrainedM1:
    checkpoint = folder / f"{key}.train.pt"
    training = M1Training(settings, splits.train_x, splits.val_x, device, checkpoint, made_by)
    where = f"resuming after epoch {len(training.history)}" if training.history else "training"
    announce(
        f"M1 {key}: {where} on {len(splits.train_x):,} training images (no labels; the "
        f"{len(splits.val_x):,} validation images decide when it stops)"
    )

    def report(e: M1Epoch) -> None:
        val = "" if e.val_neg_elbo is None else f"  validation -ELBO {e.val_neg_elbo:.2f}"
        announce(
            f"M1 {key} epoch {e.epoch:>3}/{settings.epochs}  -ELBO {e.train_neg_elbo:.2f}{val}"
            f"  {e.epoch_seconds:.1f} s"
        )

    history = training.fit(report)
    record = {
        "format": FORMAT,
        "kind": "m1",
        "key": key,
        "settings": settings.params(),
        "made": {
            **{k: made_by.get(k) for k in ("git_commit", "git_dirty", "device_name")},
            "host": platform.node(),
            "threads": torch.get_num_threads(),
            "finished": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "segments": training.all_segments(),
        },
        "outcome": m1_outcome(settings, history),
        "weights": "the encoder after the last epoch",
        "epochs": [_epoch_line(h) for h in history],
    }
    encoder = {k: v.cpu() for k, v in training.model.encoder.state_dict().items()}
    save_tensor_file(folder / f"{key}.pt", {"encoder": encoder}, "M1 encoder")
    write_atomically(folder / f"{key}.json", lambda tmp: tmp.write_text(_record_text(record)))
    checkpoint.unlink(missing_ok=True)
    trained = TrainedM1(key, record, training.model.eval())
    announce(f"M1 {key}: trained, {trained.describe()}; kept in {folder / key}.pt")
    return trained


def _epoch_line(epoch: M1Epoch) -> dict[str, Any]:
    """An epoch as the record stores it, its figures to 6 significant digits (as run records)."""
    return {k: round_float(v, 6) for k, v in asdict(epoch).items()}


def _record_text(record: dict[str, Any]) -> str:
    """The record as JSON, one line per epoch (so a diff reads by epoch)."""
    head = {k: v for k, v in record.items() if k != "epochs"}
    text = json.dumps(head, indent=1)[:-2] + ',\n "epochs": [\n'
    text += ",\n".join("  " + json.dumps(e) for e in record["epochs"])
    return text + "\n ]\n}\n"


def read_m1_record(folder: Path, key: str) -> dict[str, Any] | None:
    """The record of M1 `key` in `folder`, None when it is not there."""
    path = folder / f"{key}.json"
    if not path.exists():
        return None
    remedy = "delete or move it (and its .pt) to train this M1 again"
    record = read_json(path, "M1 record", remedy)
    if not isinstance(record, dict):
        kind = type(record).__name__
        raise FileFormatError(f"{path} is not an M1 record (a JSON {kind}); {remedy}")
    return record


def _load(folder: Path, key: str, settings: M1Settings, device: torch.device) -> TrainedM1 | None:
    weights, record = folder / f"{key}.pt", read_m1_record(folder, key)
    if record is None or not weights.exists():
        return None
    if record.get("settings") != settings.params():
        raise ValueError(
            f"{folder / key}.json is of another M1 (its settings differ from its name's)"
        )
    model = M1(settings)
    remedy = "delete or move it (and its .json) to train this M1 again"
    state = load_tensor_file(weights, {"encoder": dict}, "M1 encoder", remedy)
    try:
        model.encoder.load_state_dict(state["encoder"])
    except (RuntimeError, TypeError, ValueError):
        raise CheckpointError(
            f"{weights}: not the encoder of the M1 its record names (its tensors differ); {remedy}"
        ) from None
    return TrainedM1(key, record, model.to(device).eval())
