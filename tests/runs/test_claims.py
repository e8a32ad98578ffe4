"""A run is trained once, even when two ablations want it at the same time: claims taken before
training, respected while their process lives, taken over when it dies; SQLite stores created
by processes that start together."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.config.ablations import Cell, load_ablation
from harness.config.variants import create_variant
from harness.experiments.jobs import Job, Setting, run_job
from harness.runs.claims import Claim, claim_path, holder
from harness.runs.runner import RunSite

QUICK = ["--epochs", "1", "--max-steps", "5", "--no-track", "--seeds", "0"]
HOLD = """
import sys, time
from pathlib import Path
from harness.runs.claims import Claim
claim = Claim(Path(sys.argv[1]))
assert claim.acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_claim_is_held_by_one_process_and_says_by_whom(tmp_path):
    variant = create_variant("exact", {"seed": 3})
    path = claim_path(tmp_path / "runs", variant, None)
    assert path.parent.name == ".claims" and path.name.endswith("-s3.lock")
    first, second = Claim(path), Claim(path)
    assert holder(path) is None
    assert first.acquire()
    assert not second.acquire()  # another holder (a lock of its own) is refused at once
    who = holder(path)
    assert who.pid == os.getpid() and who.describe().startswith(f"pid {os.getpid()} on this")
    first.release()
    assert holder(path) is None and second.acquire()
    second.release()


def test_a_claim_whose_process_died_is_taken_over(tmp_path):
    path = tmp_path / ".claims" / "run.lock"
    path.parent.mkdir()
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline().strip() == b"held"
        assert holder(path).pid == child.pid
        assert not Claim(path).acquire()  # respected while its process lives
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert holder(path) is None  # the note it left names no holder: its lock went with it
    claim = Claim(path)
    assert claim.acquire()
    claim.release()


def _setting(tmp_path: Path, wait: bool = False) -> Setting:
    return Setting(
        experiment="x",
        parent=None,
        tracking_uri=None,
        store=None,
        site=RunSite(download=False, device="cpu", max_steps=2),
        checkpoint_dir=str(tmp_path / "ckpt"),
        records_dir=str(tmp_path / "runs"),
        threads=1,
        wait_for_claims=wait,
    )


def test_a_run_claimed_by_a_live_process_is_left_to_it(tmp_path):
    variant = create_variant("exact", {"epochs": 1})
    job = Job(Cell("exact", "exact", {}), (variant,), ({},))
    claim = Claim(claim_path(tmp_path / "runs", variant, 2))
    assert claim.acquire()
    try:
        (outcome,) = run_job(job, _setting(tmp_path))
        expected = f"being trained by {holder(claim.path).describe()}"
    finally:
        claim.release()
    assert outcome.status == "claimed" and outcome.detail == expected
    assert expected.startswith(f"being trained by pid {os.getpid()} on this machine since")
    assert not (tmp_path / "ckpt").exists()  # nothing trained, nothing written


def m2h(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "harness", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.e2e
def test_two_ablations_started_together_train_each_shared_run_once(tmp_path, data_root):
    """The issue's probe: two `m2h ablate quickstart` at once in one folder, and a third
    ablation sharing two of its cells: every run is trained once in all (counted by the
    trainings each process reports), and every table is complete."""
    other = tmp_path / "other.toml"
    other.write_text(
        'variants = ["exact", "gumbel-0.5"]\ncontrols = ["supervised-only"]\nseeds = [0]\n'
        "epochs = 3\n[set]\nlabels = 100\n"
    )
    out = ["--out", str(tmp_path / "results")]
    commands = [["ablate", "quickstart", *QUICK, *out]] * 2 + [["ablate", str(other), *QUICK, *out]]
    procs = [m2h(*c, cwd=tmp_path) for c in commands]
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    trained = [line for text in outputs for line in text.splitlines() if ": finished test" in line]
    # quickstart: exact, gumbel-st, the control; other: exact and the control shared, gumbel-0.5
    assert len(trained) == 4, outputs
    assert len({line.split(":")[0].strip() for line in trained}) == 4
    assert len(list((tmp_path / "results" / "runs").glob("*.json"))) == 4
    for name in ("quickstart", str(other)):
        table = subprocess.run(
            [
                sys.executable,
                "-m",
                "harness",
                "table",
                name,
                *out,
                "--epochs",
                "1",
                "--max-steps",
                "5",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert (
            table.returncode == 0 and "runs the ablation file plans have finished" in table.stdout
        )


@pytest.mark.e2e
def test_an_ablation_killed_mid_run_is_taken_over_and_resumes(tmp_path, data_root):
    out = ["--out", str(tmp_path / "results")]
    args = ["ablate", "quickstart", "--epochs", "3", "--max-steps", "40", "--no-track"]
    args += ["--seeds", "0", *out]
    first = m2h(*args, cwd=tmp_path)
    ablation = load_ablation("quickstart")
    variant = ablation.variant(ablation.cells()[0], 0, 3)
    claim = claim_path(tmp_path / "results" / "runs", variant, 40)
    checkpoints = tmp_path / "checkpoints" / "ablations"
    deadline = time.time() + 300
    while not list(checkpoints.glob(f"{variant.name}-*.pt")) and time.time() < deadline:
        time.sleep(0.5)
    assert holder(claim).pid == first.pid
    first.send_signal(signal.SIGKILL)
    first.wait()
    again = m2h(*args, cwd=tmp_path)
    text = again.communicate(timeout=900)[0]
    assert again.returncode == 0, text
    assert "resuming from" in text and "after epoch 1 of 3" in text
    assert len(list((tmp_path / "results" / "runs").glob("*.json"))) == 3


def test_two_searches_started_together_on_a_fresh_sqlite_store_both_open_it(tmp_path):
    """Both processes open the study (the schema is created once), at once, three times."""
    script = (
        "import sys\nfrom harness.experiments.search import SearchSpec, load_study\n"
        "spec = SearchSpec(variant='exact', study='bar', storage=sys.argv[1], space={}, "
        "trials=1)\nprint(load_study(spec).study_name)\n"
    )
    for attempt in range(3):
        storage = f"sqlite:///{tmp_path / f'optuna-{attempt}.db'}"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", script, storage], stdout=subprocess.PIPE, text=True
            )
            for _ in range(2)
        ]
        assert [p.communicate(timeout=120)[0].strip() for p in procs] == ["bar", "bar"]
        assert [p.returncode for p in procs] == [0, 0]
