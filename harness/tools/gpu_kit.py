"""The GPU checklist in one command, for the few sessions lent a GPU (the `device` tool).

Everything is written and dry-run on the CPU beforehand (tests/tools/test_gpu_kit.py), so a session
that gets a GPU spends its minutes running, not writing. Prepare the carried folder here, commit,
then run on the GPU machine (`$OUT` comes back; at most 8 files):

    python -m harness.tools.gpu_kit pack --carry gpu-carry          # the data, compressed, here
    M2H_GIT_COMMIT=<HEAD> PYTHONPATH=. \
        python -m harness.tools.gpu_kit run --carry gpu-carry --out $OUT

What `run` does, each step within its share of `--time-limit`, writing as it goes:
  1. env.json       the device, torch and CUDA versions, the commit, the matmul peak
  2. cuda-tests.xml the CUDA tests (tests/training/test_cuda.py), as JUnit XML; their output in
                    kit.log
  3. bench.json     rows/s and fraction of the matmul peak for each estimator, eager against CUDA
                    graphs, bf16 and compile; exact with 1/4/16/64 stacked seeds
  4. accuracy.json  the seconds and epochs `exact` takes to 90% test accuracy at 100 labels
                    (eager and CUDA graphs); bf16 against fp32 on the same seeds
  5. records.tar.gz run records of the `labels` campaign with stacked seeds, to the stop rule
                    (merge them here with `tar xzf records.tar.gz -C results/runs`)
  and kit.log, everything printed. mlflow and optuna are not needed there: results travel as
run records. With `--budget tiny` every step runs a token amount (the CPU dry run).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

DATASETS = ("MNIST", "FashionMNIST")
ESTIMATORS = ("exact", "gumbel-0.5", "gumbel-st", "tutorial-gumbel", "supervised-only")
MODES = ("eager", "cuda_graphs", "bf16", "compile")
STEPS = ("env", "tests", "bench", "accuracy", "campaign")
BUDGETS: dict[str, dict[str, Any]] = {
    # repeats per timing, stacked seed counts, max epochs to 90%, bf16 check, campaign budget
    "full": {
        "repeats": 30,
        "stacks": (1, 4, 16, 64),
        "to_90": 40,
        "bf16_epochs": 10,
        "bf16_seeds": (0, 1),
        "campaign": [],
    },
    "tiny": {
        "repeats": 2,
        "stacks": (1, 2),
        "to_90": 1,
        "bf16_epochs": 1,
        "bf16_seeds": (0,),
        "campaign": ["--seeds", "0", "--epochs", "1", "--max-steps", "2"],
        "max_steps": 2,
    },
}
SHARES = {"tests": 0.15, "bench": 0.2, "accuracy": 0.2, "campaign": 0.45}  # of --time-limit


class Log:
    """Print to the terminal and to kit.log at once."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("a")

    def __call__(self, *parts: Any) -> None:
        line = " ".join(str(p) for p in parts)
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()


def pack(carry: Path, data_root: Path, level: int = 6) -> Path:
    """The datasets' raw files from `data_root`, xz-compressed into `carry`/data.tar.xz (the
    folder the device call carries; gitignored)."""
    carry.mkdir(parents=True, exist_ok=True)
    archive = carry / "data.tar.xz"
    files = [
        (path, f"{name}/raw/{path.name}")
        for name in DATASETS
        for path in sorted((data_root / name / "raw").glob("*-ubyte"))
    ]
    if not files:
        raise FileNotFoundError(f"no raw dataset files under {data_root.resolve()}/*/raw")
    # typeshed types `preset` as the literals 0-9, and `level` is a checked int
    with tarfile.open(archive, mode="w:xz", preset=level) as tar:  # type: ignore[call-overload]
        for path, name in files:
            tar.add(path, arcname=name)
    return archive


def unpack(carry: Path, into: Path) -> Path:
    with tarfile.open(carry / "data.tar.xz") as tar:
        tar.extractall(into, filter="data")
    return into


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=1, default=str) + "\n")


@contextlib.contextmanager
def step(name: str, log: Log, results: dict[str, str]) -> Iterator[None]:
    """Run one checklist step; a failure is logged with its traceback and the next step runs."""
    log(f"== {name}")
    start = time.perf_counter()
    try:
        yield
        results[name] = f"ok in {time.perf_counter() - start:.0f} s"
    except Exception:
        log(traceback.format_exc())
        results[name] = f"failed after {time.perf_counter() - start:.0f} s"
    log(f"== {name}: {results[name]}")


def environment(out: Path, device: Any) -> dict[str, Any]:
    import torch

    from harness.runs.provenance import environment_params
    from harness.tools.bench import matmul_peak

    env: dict[str, Any] = dict(environment_params(device))
    env["fp32_matmul_peak_flops"] = matmul_peak(device)
    if device.type == "cuda":
        env["bf16_matmul_peak_flops"] = matmul_peak(device, dtype=torch.bfloat16)
        env["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
    env["python"] = sys.version.split()[0]
    write_json(out / "env.json", env)
    return env


def cuda_tests(out: Path, log: Log, timeout: float) -> None:
    repo = Path(__file__).resolve().parents[2]
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests/training/test_cuda.py",
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    command += ["-o", "addopts=", f"--junitxml={out.resolve() / 'cuda-tests.xml'}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=repo)
    log(done.stdout[-6000:], done.stderr[-2000:])


def _timing(trainer: Any, repeats: int, device: Any) -> float:
    from harness.tools.bench import harness_step, time_call

    return time_call(harness_step(trainer), device, repeats)


def bench(out: Path, log: Log, device: Any, budget: dict, peak: float) -> list[dict]:
    """rows/s and the fraction of the matmul peak, per estimator and speed option, and for
    stacked seeds; bench.json is rewritten after every measurement."""
    import torch

    from harness.config.variants import create_variant
    from harness.tools.bench import count_flops, harness_step
    from harness.training.data import synthetic_splits
    from harness.training.trainer import Trainer

    splits = synthetic_splits(device, train=60_000, test=1_000)
    rows: list[dict] = []

    def record(**row: Any) -> None:
        row["rows_per_sec"] = row["rows"] / row["seconds"]
        row["peak_fraction"] = row["flops"] / row["seconds"] / peak
        rows.append(row)
        log(
            f"  {row['variant']:<16} {row['mode']:<12} seeds {row['seeds']:>2}  "
            f"{1e3 * row['seconds']:8.3f} ms/step  {row['rows_per_sec']:12,.0f} rows/s  "
            f"{100 * row['peak_fraction']:5.1f}% of peak"
        )
        write_json(out / "bench.json", {"device": str(device), "peak_flops": peak, "rows": rows})

    for name in ESTIMATORS:
        variant = create_variant(name)
        eager = Trainer(variant, splits, device, progress=False)
        rows_per_step = eager.batch_size + eager.labelled_batch
        flops = count_flops(harness_step(eager))  # the same arithmetic in every mode
        for mode in MODES:
            if mode == "cuda_graphs" and device.type != "cuda":
                continue
            if mode == "compile" and device.type != "cuda" and budget is BUDGETS["tiny"]:
                continue  # compiling on the CPU takes minutes; the GPU run measures it
            speeds: dict[str, dict[str, Any]] = {
                "eager": {},
                "cuda_graphs": {"cuda_graphs": True},
                "bf16": {"precision": "bf16"},
                "compile": {"compile": True},
            }
            options = speeds[mode]
            trainer = Trainer(variant, splits, device, progress=False, **options)
            seconds = _timing(trainer, budget["repeats"], device)
            record(
                variant=name, mode=mode, seeds=1, seconds=seconds, rows=rows_per_step, flops=flops
            )
    variant = create_variant("exact")
    for seeds in budget["stacks"]:
        torch.manual_seed(0)
        stack = Trainer(variant, splits, device, progress=False, seeds=range(seeds))
        rows_per_step = seeds * (stack.batch_size + stack.labelled_batch)
        flops = count_flops(harness_step(stack))
        seconds = _timing(stack, budget["repeats"], device)
        record(
            variant="exact",
            mode="stacked",
            seeds=seeds,
            seconds=seconds,
            rows=rows_per_step,
            flops=flops,
        )
    return rows


def accuracy(
    out: Path, log: Log, device: Any, budget: dict, data_root: Path, deadline: float
) -> None:
    """Time to 90% test accuracy for exact at 100 labels (eager, then CUDA graphs), and bf16
    against fp32 on the same seeds; accuracy.json is rewritten as results come."""
    from harness.config.variants import create_variant
    from harness.training.data import load_splits
    from harness.training.stopping import time_to_accuracy
    from harness.training.trainer import Trainer

    splits = load_splits("mnist", data_root, device, download=False)
    result: dict[str, Any] = {"device": str(device), "to_90": [], "bf16_vs_fp32": []}
    max_steps = budget.get("max_steps")
    modes: list[dict[str, Any]] = [{}] + ([{"cuda_graphs": True}] if device.type == "cuda" else [])
    for options in modes:
        variant = create_variant("exact", {"labels": 100, "epochs": budget["to_90"]})
        trainer = Trainer(variant, splits, device, max_steps=max_steps, progress=False, **options)
        while trainer.epoch < variant.epochs and time.monotonic() < deadline:
            (report,) = trainer.run_epoch()
            if report.test_accuracy >= 0.90:
                break
        history = trainer.seed_history(0)
        reached = time_to_accuracy(history, 0.90)
        entry = {
            "mode": "cuda_graphs" if options else "eager",
            "epochs": reached[0] if reached else None,
            "train_seconds": reached[1] if reached else None,
            "epochs_run": trainer.epoch,
            "test_accuracy": [r.test_accuracy for r in history],
        }
        result["to_90"].append(entry)
        reached_in = f"{entry['epochs']} epochs, {entry['train_seconds']} s"
        log(f"  exact to 90% ({entry['mode']}): {reached_in}")
        write_json(out / "accuracy.json", result)
    for seed in budget["bf16_seeds"]:
        for precision in ("fp32", "bf16"):
            if time.monotonic() > deadline:
                break
            variant = create_variant(
                "exact", {"labels": 100, "seed": seed, "epochs": budget["bf16_epochs"]}
            )
            trainer = Trainer(
                variant, splits, device, max_steps=max_steps, progress=False, precision=precision
            )
            error = trainer.fit()[0][-1].test_error
            result["bf16_vs_fp32"].append(
                {"seed": seed, "precision": precision, "test_error": error, "epochs": trainer.epoch}
            )
            log(f"  exact seed {seed} {precision}: {error:.2f}% after {trainer.epoch} epochs")
            write_json(out / "accuracy.json", result)


def campaign(out: Path, log: Log, budget: dict, data_root: Path, timeout: float) -> None:
    """The `labels` ablation with each cell's seeds stacked, records only (no MLflow), in a
    child process stopped at `timeout`; the records that finished are packed either way."""
    with tempfile.TemporaryDirectory() as work:
        command = [sys.executable, "-m", "harness", "ablate", "labels", "--stack", "--no-track"]
        command += ["--out", f"{work}/results", "--checkpoint-dir", f"{work}/checkpoints"]
        command += budget["campaign"]
        env = {**os.environ, "M2_DATA_ROOT": str(data_root), "PYTHONUNBUFFERED": "1"}
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
            log(done.stdout[-6000:], done.stderr[-3000:])
        except subprocess.TimeoutExpired as stopped:
            log(
                (stopped.stdout or b"")[-6000:].decode(errors="replace"),
                "(stopped at the time limit)",
            )
        records = sorted(Path(work, "results", "runs").glob("*.json"))
        with tarfile.open(out / "records.tar.gz", "w:gz") as tar:
            for path in records:
                tar.add(path, arcname=path.name)
        log(f"  {len(records)} run records in records.tar.gz")


def run(args: argparse.Namespace) -> int:
    import torch

    from harness.training.trainer import resolve_device

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / "kit.log")
    budget = BUDGETS[args.budget]
    start = time.monotonic()
    results: dict[str, str] = {}
    chosen = args.steps.split(",") if args.steps else list(STEPS)

    def until(name: str) -> float:
        """This step's deadline: its share of the time left for the steps still to come."""
        left = args.time_limit - (time.monotonic() - start)
        todo = [s for s in chosen[chosen.index(name) :] if s in SHARES]
        return left * SHARES[name] / sum(SHARES[s] for s in todo)

    device = resolve_device(args.device)
    data_root = Path(os.environ.get("M2_DATA_ROOT") or tempfile.mkdtemp(prefix="m2h-data-"))
    if args.carry and (Path(args.carry) / "data.tar.xz").exists():
        data_root = unpack(Path(args.carry), Path(tempfile.mkdtemp(prefix="m2h-data-")))
    torch.set_num_threads(os.cpu_count() or 1)
    peak = 1.0
    with step("env", log, results):
        env = environment(out, device)
        peak = env["fp32_matmul_peak_flops"]
        log(json.dumps(env, indent=1, default=str))
    if "tests" in chosen:
        with step("tests", log, results):
            cuda_tests(out, log, until("tests"))
    if "bench" in chosen:
        with step("bench", log, results):
            bench(out, log, device, budget, peak)
    if "accuracy" in chosen:
        with step("accuracy", log, results):
            accuracy(out, log, device, budget, data_root, time.monotonic() + until("accuracy"))
    if "campaign" in chosen:
        with step("campaign", log, results):
            campaign(out, log, budget, data_root, until("campaign"))
    log("== summary", json.dumps(results), f"{time.monotonic() - start:.0f} s in all")
    return 0 if all(r.startswith("ok") for r in results.values()) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.tools.gpu_kit", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="compress the datasets into the carried folder")
    p.add_argument("--carry", default="gpu-carry")
    p.add_argument("--data-root", default=os.environ.get("M2_DATA_ROOT", "data"))
    p.add_argument("--level", type=int, default=6, help="xz preset (0 fast ... 9 small)")
    r = sub.add_parser("run", help="the GPU checklist, results into --out")
    r.add_argument("--carry", default="gpu-carry")
    r.add_argument("--out", required=True)
    r.add_argument("--budget", choices=sorted(BUDGETS), default="full")
    r.add_argument("--device", help="default: CUDA when present")
    r.add_argument("--steps", help=f"a comma-separated subset of {','.join(STEPS)}")
    r.add_argument("--time-limit", type=float, default=540.0, help="seconds for everything")
    args = parser.parse_args(argv)
    if args.command == "pack":
        archive = pack(Path(args.carry), Path(args.data_root), args.level)
        print(f"wrote {archive} ({archive.stat().st_size / 2**20:.1f} MiB)")
        return 0
    return run(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
