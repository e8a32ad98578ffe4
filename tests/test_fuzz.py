"""Every loader against a few hundred random, truncated, bit-flipped and mutated files: each
either reads the file or refuses it with its own error in one line naming the file, never
another exception, and never a write (issue 54)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from harness.config.ablations import AblationError, load_ablation
from harness.config.variants import VariantError, create_variant, load_user_variants
from harness.runs.records import RecordError, make_record, read_record, write_record
from harness.training.checkpoint import CheckpointError, load_checkpoint, load_tensor_file
from tests.runs.test_records import MACHINE, TWO_CELLS
from tests.training.test_checkpoint import plain_state
from tests.training.test_stopping import history

CASES = 60  # files per kind of damage, per loader


def damaged(whole: bytes, rng: random.Random) -> list[bytes]:
    """Random bytes, truncations and bit flips of `whole`, CASES of each."""
    files = [rng.randbytes(rng.randrange(0, 4096)) for _ in range(CASES)]
    files += [whole[: rng.randrange(0, len(whole))] for _ in range(CASES)]
    for _ in range(CASES):
        flipped = bytearray(whole)
        for _ in range(rng.randrange(1, 8)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        files.append(bytes(flipped))
    return files


def check_each(
    tmp_path: Path,
    files: list[bytes],
    suffix: str,
    load: Callable[[Path], object],
    error: type | tuple[type, ...],
) -> int:
    """Load every file; each refusal must be `error`, one line naming the file. The count of
    refusals (most files must be refused: a loader that accepts anything fails here)."""
    refused = 0
    for k, content in enumerate(files):
        path = tmp_path / f"case-{k}{suffix}"
        path.write_bytes(content)
        before = sorted(tmp_path.iterdir())
        try:
            load(path)
        except error as err:
            refused += 1
            assert "\n" not in str(err) and str(path) in str(err), (k, str(err))
        assert sorted(tmp_path.iterdir()) == before  # a loader writes nothing
        path.unlink()
    return refused


def test_the_checkpoint_loader_refuses_every_damaged_file_in_one_line(tmp_path):
    source = tmp_path / "good" / "run.pt"
    source.parent.mkdir()
    torch.save(plain_state(), source)
    files = damaged(source.read_bytes(), random.Random(0))
    files += [torch_bytes(tmp_path, value) for value in odd_values()]
    work = tmp_path / "cases"
    work.mkdir()
    refused = check_each(work, files, ".pt", load_checkpoint, CheckpointError)
    assert refused >= 2 * CASES  # all random and truncated files at least


def test_the_m1_encoder_loader_refuses_every_damaged_file_in_one_line(tmp_path):
    source = tmp_path / "m1.pt"
    torch.save({"encoder": {"w": torch.ones(4, 4)}}, source)
    files = damaged(source.read_bytes(), random.Random(1))
    work = tmp_path / "cases"
    work.mkdir()

    def load(path: Path) -> object:
        return load_tensor_file(path, {"encoder": dict}, "M1 encoder", "train it again")

    assert check_each(work, files, ".pt", load, CheckpointError) >= 2 * CASES


def test_the_record_reader_refuses_every_damaged_or_mutated_record_in_one_line(tmp_path):
    variant = create_variant("exact", {"epochs": 3})
    good = write_record(tmp_path / "good", make_record(variant, history([30.0, 20.0]), MACHINE))
    rng = random.Random(2)
    files = damaged(good.read_bytes(), rng)
    record = json.loads(good.read_text())
    files += [json.dumps(mutated(record, rng)).encode() for _ in range(4 * CASES)]
    files += [json.dumps(value).encode() for value in odd_values()]
    work = tmp_path / "cases"
    work.mkdir()
    refused = check_each(work, files, ".json", read_record, RecordError)
    assert refused >= 3 * CASES


@pytest.mark.parametrize(
    ("source", "suffix", "load", "error"),
    [
        (TWO_CELLS, ".toml", load_ablation, (AblationError, VariantError)),
        ('[mine]\nbase = "exact"\n[mine.set]\nlabels = 600\n', ".toml", None, VariantError),
    ],
    ids=["ablation", "variants"],
)
def test_the_toml_readers_refuse_every_damaged_file_in_one_line(
    tmp_path, source, suffix, load, error
):
    rng = random.Random(3)
    files = damaged(source.encode(), rng)
    work = tmp_path / "cases"
    work.mkdir()

    def read(path: Path) -> object:
        if load is not None:
            return load(str(path))
        return load_user_variants(path)

    assert check_each(work, files, suffix, read, error) >= CASES


def odd_values() -> list[object]:
    """Values that are well-formed files of the wrong shape."""
    return [[], [1, 2], 3, "text", None, {"format": 1}, {}, {"epochs": "x"}]


def torch_bytes(tmp_path: Path, value: object) -> bytes:
    path = tmp_path / "odd.pt"
    torch.save(value, path)
    return path.read_bytes()


def mutated(record: dict, rng: random.Random) -> dict:
    """`record` with one value somewhere replaced by a value of another kind, or removed."""
    copy = json.loads(json.dumps(record))
    node, key = copy, None
    while True:  # walk down to a random leaf or branch
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = rng.choice(keys)
        child = node[key]
        if not isinstance(child, dict | list) or rng.random() < 0.3:
            break
        node = child
    if key is None:
        return {"format": record["format"]}
    choice = rng.randrange(7)
    if choice == 0 and isinstance(node, dict):
        del node[key]
    else:
        node[key] = [float("nan"), -1, 10**30, "x", None, [], {}][choice]
    return copy
