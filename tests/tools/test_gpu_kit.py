"""The GPU kit, dry-run on the CPU with a token budget, so it cannot rot while no GPU comes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest

from harness.tools.gpu_kit import pack


@pytest.mark.e2e
def test_the_gpu_kit_runs_its_whole_checklist_on_the_cpu(tmp_path, data_root):
    carry = tmp_path / "carry"
    archive = pack(carry, data_root, level=0)
    assert archive.stat().st_size < 48 * 2**20  # with the code, inside the 64 MiB carry
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "M2_DATA_ROOT"}  # data from the carry
    kit = [
        sys.executable,
        "-m",
        "harness.tools.gpu_kit",
        "run",
        "--budget",
        "tiny",
        "--device",
        "cpu",
    ]
    done = subprocess.run(
        [*kit, "--carry", str(carry), "--out", str(out), "--time-limit", "900"],
        capture_output=True,
        text=True,
        timeout=1200,
        env={**env, "M2H_GIT_COMMIT": "f" * 40},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == [
        "accuracy.json",
        "bench.json",
        "cuda-tests.xml",
        "env.json",
        "kit.log",
        "records.tar.gz",
    ]  # at most 8 files come back from the device
    assert json.loads((out / "env.json").read_text())["git_commit"] == "f" * 40
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert {r["variant"] for r in rows} >= {"exact", "gumbel-st", "supervised-only"}
    assert {r["mode"] for r in rows} >= {"eager", "bf16", "stacked"}
    assert all(r["rows_per_sec"] > 0 and r["peak_fraction"] > 0 for r in rows)
    assert "skipped" in (out / "cuda-tests.xml").read_text()  # no CUDA here: all skipped
    accuracy = json.loads((out / "accuracy.json").read_text())
    assert accuracy["to_90"][0]["epochs_run"] == 1 and len(accuracy["bf16_vs_fp32"]) == 2
    with tarfile.open(out / "records.tar.gz") as tar:
        names = tar.getnames()
        assert len(names) == 12  # labels: 12 cells, seed 0
        record = json.load(tar.extractfile(names[0]))
    assert record["made"]["git_commit"] == "f" * 40 and record["max_steps"] == 2


def test_packing_no_data_is_an_error_not_an_empty_archive(tmp_path):
    with pytest.raises(FileNotFoundError, match="no raw dataset files"):
        pack(tmp_path / "carry", tmp_path / "empty")
