"""Loading a checkpoint runs no code: only tensors and plain containers are read; a planted,
truncated or foreign file is refused in one line naming it, at every place that reads
checkpoints, and is never overwritten; two writers of one file never collide."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from harness.cli.main import main
from harness.config.variants import create_variant
from harness.files import write_atomically
from harness.runs.runner import checkpoint_path
from harness.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from harness.training.trainer import Trainer


class Planted:
    """Unpickling this object calls Path.touch(marker): code a checkpoint must never run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def plant(path: Path, marker: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"variant": {}, "epoch": 1, "payload": Planted(marker)}, path)
    return path.read_bytes()


def plain_state(**changes) -> dict:
    state = {
        "variant": {"name": "exact"},
        "model": {"w": torch.zeros(2)},
        "optimizer": {"state": {}, "param_groups": []},
        "generator": torch.zeros(8, dtype=torch.uint8),
        "epoch": 1,
        "step": 4,
        "history": [{"epoch": 1, "test_error": 20.0}],
    }
    return {**state, **changes}


def test_a_plain_checkpoint_reads_back(tmp_path):
    save_checkpoint(tmp_path / "a.pt", plain_state())
    state = load_checkpoint(tmp_path / "a.pt")
    assert state["epoch"] == 1 and torch.equal(state["model"]["w"], torch.zeros(2))


def test_a_trainers_checkpoint_is_plain(generated, tmp_path):
    """What the trainer saves loads with weights_only=True (no pickled object in it)."""
    variant = create_variant("exact", {"epochs": 1, "labels": 100, "validation": 200})
    Trainer(variant, generated, "cpu", max_steps=2, progress=False).fit(
        checkpoints=[tmp_path / "t.pt"]
    )
    state = torch.load(tmp_path / "t.pt", weights_only=True)
    assert state["epoch"] == 1 and isinstance(state["history"][0], dict)
    assert load_checkpoint(tmp_path / "t.pt")["step"] == 2


def test_a_planted_file_is_refused_and_its_code_never_runs(tmp_path):
    marker = tmp_path / "ran"
    plant(tmp_path / "bad.pt", marker)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "bad.pt")
    assert not marker.exists()
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "bad.pt") in message
    assert "could run code" in message and "afresh" in message


def test_a_truncated_and_a_foreign_checkpoint_each_get_one_line(tmp_path):
    save_checkpoint(tmp_path / "cut.pt", plain_state())
    whole = (tmp_path / "cut.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pt: not a readable checkpoint \(truncated"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"weights": torch.ones(3)}, tmp_path / "other.pt")  # another program's
    with pytest.raises(CheckpointError, match=r"other\.pt: not an m2h checkpoint \(missing or"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint at all\n")
    with pytest.raises(CheckpointError, match=r"text\.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "text.pt")


def test_two_writers_of_one_file_never_collide(tmp_path):
    target, errors = tmp_path / "record.json", []

    def write(text: str) -> None:
        try:
            for _ in range(100):
                write_atomically(target, lambda tmp: tmp.write_text(text))
        except Exception as err:  # pragma: no cover - the failure this test looks for
            errors.append(err)

    writers = [threading.Thread(target=write, args=(c * 1000,)) for c in "ab"]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    assert errors == []
    assert target.read_text() in ("a" * 1000, "b" * 1000)
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]  # no temporary left


QUICK = ["run", "exact", "--no-track", "--max-steps", "2", "--epochs", "2"]


@pytest.mark.e2e
@pytest.mark.parametrize("resume", [True, False], ids=["resume", "fresh"])
def test_m2h_run_refuses_a_planted_checkpoint_in_one_line(mnist, capsys, resume):
    """The probe of the issue: a planted file where the run's checkpoint lives; with --resume
    and without, the command runs no code, prints one line naming the file and overwrites
    nothing."""
    variant = create_variant("exact", {"epochs": 2})
    path = checkpoint_path(Path("checkpoints") / "runs", variant, 2)
    marker = Path("ran").resolve()
    planted = plant(path, marker)
    assert main(QUICK + (["--resume"] if resume else [])) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "could run code" in err
    assert not marker.exists() and path.read_bytes() == planted


@pytest.mark.e2e
def test_an_ablation_refuses_a_planted_checkpoint_when_planning_and_running(
    mnist, tmp_path, capsys
):
    ablation = tmp_path / "tiny.toml"
    ablation.write_text('variants = ["exact"]\nseeds = [0]\nepochs = 1\n[set]\nlabels = 100\n')
    from harness.config.ablations import load_ablation

    variant = load_ablation(str(ablation)).variant(load_ablation(str(ablation)).cells()[0], 0)
    path = checkpoint_path(Path("checkpoints") / "ablations", variant, 2)
    marker = Path("ran").resolve()
    planted = plant(path, marker)
    common = [str(ablation), "--no-track", "--max-steps", "2", "--out", str(tmp_path / "res")]
    assert main(["ablate", *common, "--stack"]) == 1  # planning reads the checkpoint's epoch
    assert "could run code" in capsys.readouterr().err
    assert main(["ablate", *common]) == 1  # the run itself, resuming
    assert "could run code" in capsys.readouterr().out
    assert main(["status", str(ablation), "--out", str(tmp_path / "res")]) == 0
    assert not marker.exists() and path.read_bytes() == planted


def test_a_slurm_folder_others_can_write_is_refused_before_any_job_is_pickled(tmp_path):
    pytest.importorskip("submitit")
    from harness.experiments.launchers import check_owner_only

    shared = tmp_path / "submitit"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(PermissionError, match=r"writable by its group or by others \(drwxrwxrwx"):
        check_owner_only(shared)
    shared.chmod(0o755)
    check_owner_only(shared)  # only its owner writes: fine
    check_owner_only(tmp_path / "new")
    assert (tmp_path / "new").stat().st_mode & 0o077 == 0  # made private


def test_a_fresh_start_names_the_closest_few_checkpoints_of_other_settings(tmp_path):
    """Issue 53: the line listed every earlier checkpoint of the variant; it names the closest
    few (the fewest settings apart) and counts the rest."""
    from harness.runs.runner import CHECKPOINTS_NAMED, resume_note

    variant = create_variant("exact")
    others = [{"lr": 5e-4}, {"lr": 2e-4, "z_dim": 32}, {"lr": 3e-4, "z_dim": 16, "hidden": 256}]
    others += [{"lr": lr, "z_dim": 8, "hidden": 128, "alpha": 0.5} for lr in (1e-4, 2e-3)]
    for k, changes in enumerate(others):
        state = plain_state(variant=variant.replace(**changes).params())
        save_checkpoint(tmp_path / f"exact-{k}.pt", state)
    note = resume_note(variant, tmp_path / "exact-new.pt", resume=True, resumed=False, epoch=0)
    assert note.count("differs in") == CHECKPOINTS_NAMED == 3
    assert "exact-0.pt (differs in lr)" in note and "exact-3.pt" not in note
    assert note.endswith("; and 2 more of exact")
