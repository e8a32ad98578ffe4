"""The GPU checklist in one command, for the few sessions lent a GPU (the `device` tool).

Everything is written and dry-run on the CPU beforehand, under the device's conditions (no
mlflow, optuna or submitit, no `.git`, `python3`, the time limit, and a stage that fails on
purpose: tests/tools/test_gpu_kit.py, in CI), so a session that gets a GPU spends its minutes
running, not writing. Here, prepare the carried folder and print the device command with this
checkout's commit written out (`.git` does not travel, so `$(git rev-parse HEAD)` would expand on
the device to nothing):

    python -m harness.tools.gpu_kit pack --carry gpu-carry    # the data, compressed
    python -m harness.tools.gpu_kit command                   # the device command, to paste

Each stage runs in its own process with its own deadline (its share of `--time-limit`, never
less than its floor) and writes its file as it goes; a stage that fails or runs out of time is
logged, and the next one runs. Files in `--out` (at most 8 come back from the device):
  1. env.json       the device, torch and CUDA versions, the commit, the fp32 and bf16 matmul
                    peaks, the matmul precision (TF32) settings
  2. cuda-tests.xml the CUDA tests (tests/training/test_cuda.py) as JUnit XML, each test under its
                    own time limit; stopped at the stage's deadline, pytest still writes the XML
                    of the tests it ran; their verbose output is in kit.log
  3. bench.json     rows/s and fraction of the peak of the row's own precision for each estimator,
                    eager, CUDA graphs, bf16 and compile (with its graph breaks counted); exact
                    with 1/4/16/64 stacked seeds; a measurement that fails is a row with its error
  4. accuracy.json  time to 90% test accuracy for exact at 600 labels (where every seed reaches
                    it in a few epochs), eager, CUDA graphs and bf16, each with its own share
  5. records.tar.gz only with `--steps ...,campaign`: run records of the open ablations
                    (m1m2-patience, m1m2-long, m1m2-prior) with stacked seeds, the cells
                    the tree's results/ hold skipped (merge: `tar xzf records.tar.gz
                    -C results`)
  and kit.log, everything printed. mlflow and optuna are not needed there: results travel as
JSON and run records. With `--budget tiny` every stage runs a token amount (the CPU dry run).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]  # the tree the kit runs in
DATASETS = ("MNIST", "FashionMNIST")
ESTIMATORS = ("exact", "gumbel-0.5", "gumbel-st", "tutorial-gumbel", "supervised-only")
MODES = ("eager", "cuda_graphs", "bf16", "compile")
SPEED_OPTIONS: dict[str, dict[str, Any]] = {
    "eager": {},
    "cuda_graphs": {"cuda_graphs": True},
    "bf16": {"precision": "bf16"},
    "compile": {"compile": True},
}
STAGES = ("env", "tests", "bench", "accuracy", "campaign")
DEFAULT_STAGES = ("env", "tests", "bench", "accuracy")  # the campaign only when asked for
SHARES = {"env": 0.05, "tests": 0.3, "bench": 0.3, "accuracy": 0.35, "campaign": 1.0}
FLOORS = {"env": 30.0, "tests": 90.0, "bench": 60.0, "accuracy": 60.0, "campaign": 60.0}
GRACE = 20.0  # seconds a stage stopped at its deadline gets to write what it has
TEST_TIMEOUT_ENV = "M2H_TEST_TIMEOUT"  # seconds per CUDA test (tests/training/test_cuda.py)
FAIL_ENV = "M2H_KIT_FAIL"  # a stage that raises on purpose (the dry run shows the others report)
BUDGETS: dict[str, dict[str, Any]] = {
    # repeats per timing, stacked seed counts, epochs to 90%, campaign budget
    "full": {
        "repeats": 30,
        "stacks": (1, 4, 16, 64),
        "to_90": 6,
        "test_timeout": 60,
        "campaign": [],
        # the ablations still open (issue 25), in the order they matter
        "campaign_ablations": ("m1m2-patience", "m1m2-long", "m1m2-prior"),
    },
    "tiny": {
        "repeats": 2,
        "stacks": (1, 2),
        "to_90": 1,
        "test_timeout": 60,
        "max_steps": 2,
        "campaign": ["--seeds", "0", "--epochs", "1", "--max-steps", "2"],
        "campaign_ablations": ("labels",),
    },
}


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


def device_command(commit: str, carry: str = "gpu-carry") -> str:
    """The command to run on the device, with this checkout's commit as a literal."""
    return (
        f"M2H_GIT_COMMIT={commit} PYTHONPATH=. python3 -m harness.tools.gpu_kit run "
        f"--carry {carry} --out $OUT"
    )


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=1, default=str) + "\n")


def environment(out: Path, device: Any) -> dict[str, Any]:
    """env.json: the device, versions, commit, both matmul peaks and the precision settings."""
    import torch

    from harness.runs.provenance import environment_params
    from harness.tools.bench import matmul_peak

    env: dict[str, Any] = dict(environment_params(device))
    env["fp32_matmul_peak_flops"] = matmul_peak(device)
    env["bf16_matmul_peak_flops"] = matmul_peak(device, dtype=torch.bfloat16)
    env["float32_matmul_precision"] = torch.get_float32_matmul_precision()
    if device.type == "cuda":
        env["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
        env["cuda_matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
        env["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
    env["python"] = sys.version.split()[0]
    write_json(out / "env.json", env)
    return env


def peaks(out: Path, device: Any) -> dict[str, float]:
    """The matmul peak of each precision, from env.json when its stage wrote it."""
    path = out / "env.json"
    env = json.loads(path.read_text()) if path.exists() else environment(out, device)
    return {"fp32": env["fp32_matmul_peak_flops"], "bf16": env["bf16_matmul_peak_flops"]}


def graph_breaks() -> int:
    """Graph breaks torch.compile has made in this process so far (a row's are the difference
    across its measurement)."""
    from torch._dynamo.utils import counters

    return sum(counters["graph_break"].values())


def bench(out: Path, log: Log, device: Any, budget: dict, deadline: float) -> None:
    """bench.json, rewritten after every measurement: rows/s and the fraction of the peak of the
    row's precision, per estimator and speed option, and for stacked seeds; a measurement that
    fails is a row with its error, and none starts past the deadline."""
    import torch

    from harness.config.variants import create_variant
    from harness.tools.bench import count_flops, harness_step, slow_precision, time_call
    from harness.training.data import synthetic_splits
    from harness.training.trainer import Trainer

    peak = peaks(out, device)
    splits = synthetic_splits(device, train=60_000, test=1_000)
    result: dict[str, Any] = {"device": str(device), "peak_flops": peak, "rows": []}

    flops_of: dict[tuple[str, Any], float] = {}

    slow = slow_precision(device, peak)

    def measure(name: str, mode: str, count: int, **options: Any) -> None:
        row: dict[str, Any] = {"variant": name, "mode": mode, "seeds": count}
        if time.monotonic() > deadline:
            result["rows"].append({**row, "error": "not run: the stage's deadline had passed"})
            return
        if slow and options.get("precision") == "bf16":
            result["rows"].append({**row, "skipped": slow})
            log(f"  {name:<16} {mode:<12} seeds {count:>2}  {slow}")
            return
        try:
            torch.manual_seed(0)
            breaks = graph_breaks()
            variant = create_variant(name)
            trainer = Trainer(variant, splits, device, progress=False, **options)
            rows = count * (trainer.batch_size + trainer.labelled_batch)
            key = (name, options.get("seeds"))
            if key not in flops_of:  # the same arithmetic in every mode: counted once, eager
                plain = Trainer(variant, splits, device, progress=False, seeds=key[1])
                flops_of[key] = count_flops(harness_step(plain))
            flops = flops_of[key]
            seconds = time_call(harness_step(trainer), device, budget["repeats"])
            precision = "bf16" if options.get("precision") == "bf16" else "fp32"
            row.update(
                seconds=seconds,
                rows_per_sec=rows / seconds,
                precision=precision,
                peak_fraction=flops / seconds / peak[precision],
                graph_breaks=graph_breaks() - breaks if trainer.compiled else None,
            )
            log(
                f"  {name:<16} {mode:<12} seeds {count:>2}  {1e3 * seconds:8.3f} ms/step  "
                f"{row['rows_per_sec']:12,.0f} rows/s  {100 * row['peak_fraction']:5.1f}% of "
                f"the {precision} peak"
                + (
                    f"  {row['graph_breaks']} graph breaks"
                    if row["graph_breaks"] is not None
                    else ""
                )
            )
        except Exception as err:  # one failed measurement never loses the others
            row["error"] = f"{type(err).__name__}: {err}"[:2000]
            log(f"  {name:<16} {mode:<12} seeds {count:>2}  failed: {row['error'][:300]}")
        result["rows"].append(row)
        write_json(out / "bench.json", result)

    for name in ESTIMATORS:
        for mode in MODES:
            if mode == "cuda_graphs" and device.type != "cuda":
                continue
            if mode == "compile" and device.type != "cuda" and budget is BUDGETS["tiny"]:
                continue  # compiling on the CPU takes minutes; the GPU run measures it
            measure(name, mode, 1, **SPEED_OPTIONS[mode])
    for seeds in budget["stacks"]:
        measure("exact", "stacked", seeds, seeds=tuple(range(seeds)))
    write_json(out / "bench.json", result)


def accuracy(
    out: Path, log: Log, device: Any, budget: dict, data_root: Path, deadline: float
) -> None:
    """accuracy.json: the epochs and training seconds exact takes to 90% test accuracy at 600
    labels, eager, with CUDA graphs and with bf16 (fp32 is the eager run), each mode with an
    equal share of the time left; rewritten after every epoch."""
    from harness.config.variants import create_variant
    from harness.tools.bench import slow_precision
    from harness.training.data import load_splits
    from harness.training.stopping import time_to_accuracy
    from harness.training.trainer import Trainer

    splits = load_splits("mnist", data_root, device, download=False)
    modes = ["eager"] + (["cuda_graphs"] if device.type == "cuda" else []) + ["bf16"]
    result: dict[str, Any] = {"device": str(device), "labels": 600, "to_90": []}
    slow = slow_precision(device, peaks(out, device))
    for k, mode in enumerate(modes):
        mine = time.monotonic() + (deadline - time.monotonic()) / (len(modes) - k)
        entry: dict[str, Any] = {"mode": mode, "test_accuracy": []}
        result["to_90"].append(entry)
        if slow and mode == "bf16":
            entry["skipped"] = slow
            log(f"  exact to 90% ({mode}): {slow}")
            write_json(out / "accuracy.json", result)
            continue
        try:
            variant = create_variant("exact", {"labels": 600, "epochs": budget["to_90"]})
            trainer = Trainer(
                variant,
                splits,
                device,
                max_steps=budget.get("max_steps"),
                progress=False,
                **SPEED_OPTIONS[mode],
            )
            while trainer.epoch < variant.epochs and time.monotonic() < mine:
                (report,) = trainer.run_epoch()
                entry["test_accuracy"].append(report.test_accuracy)
                reached = time_to_accuracy(trainer.seed_history(0), 0.90)
                entry.update(
                    epochs_run=trainer.epoch,
                    epochs=reached and reached[0],
                    train_seconds=reached and reached[1],
                )
                write_json(out / "accuracy.json", result)
                if reached:
                    break
            log(
                f"  exact at 600 labels to 90% ({mode}): {entry.get('epochs')} epochs, "
                f"{entry.get('train_seconds')} s, after {entry.get('epochs_run')} epochs run"
            )
        except Exception as err:  # the next mode still runs
            entry["error"] = f"{type(err).__name__}: {err}"[:2000]
            log(f"  exact to 90% ({mode}) failed: {entry['error'][:300]}")
        write_json(out / "accuracy.json", result)


def campaign(out: Path, log: Log, budget: dict, data_root: Path, deadline: float) -> None:
    """records.tar.gz: the budget's campaign ablations, one after another, each cell's seeds
    stacked, in child processes stopped at the deadline; their records go to this tree's
    results/ (so a cell whose committed record is there is not trained again, and M1+M2 reads
    the committed M1 in results/m1), and what they add, finished run records and any M1
    trained here, is packed either way (merge: `tar xzf records.tar.gz -C results`)."""
    results = REPO / "results"
    before = {p for p in results.rglob("*") if p.is_file()}
    with tempfile.TemporaryDirectory() as work:
        env = {**os.environ, "M2_DATA_ROOT": str(data_root), "PYTHONUNBUFFERED": "1"}
        for name in budget["campaign_ablations"]:
            command = [sys.executable, "-m", "harness", "ablate", name, "--stack", "--no-track"]
            command += ["--out", str(results), "--checkpoint-dir", f"{work}/checkpoints"]
            command += budget["campaign"]
            timeout = deadline - time.monotonic()
            if timeout < 1:
                log(f"  {name}: not started, the stage's deadline had passed")
                continue
            try:
                done = subprocess.run(
                    command, capture_output=True, text=True, timeout=timeout, env=env
                )
                log(done.stdout[-6000:], done.stderr[-3000:])
            except subprocess.TimeoutExpired as stopped:
                text = stopped.stdout.decode(errors="replace") if stopped.stdout else ""
                log(text[-6000:], f"({name} stopped at the deadline)")
    added = sorted(
        p
        for p in results.rglob("*")
        if p.is_file() and p not in before and p.parent.name in ("runs", "m1")
    )
    with tarfile.open(out / "records.tar.gz", "w:gz") as tar:
        for path in added:
            if path.suffix in (".json", ".pt") and not path.name.endswith(".train.pt"):
                tar.add(path, arcname=str(path.relative_to(results)))
    log(f"  {len(added)} files (run records, M1s) in records.tar.gz")


def stage(args: argparse.Namespace) -> int:
    """One stage, in this process (the `run` command starts one process per stage)."""
    import torch

    from harness.training.trainer import resolve_device

    out = Path(args.out)
    log = Log(out / "kit.log")
    deadline = time.monotonic() + args.seconds
    budget = BUDGETS[args.budget]
    if os.environ.get(FAIL_ENV) == args.name:
        raise RuntimeError(f"stage {args.name} fails on purpose (${FAIL_ENV})")
    device = resolve_device(args.device)
    torch.set_num_threads(os.cpu_count() or 1)
    if args.name == "env":
        log(json.dumps(environment(out, device), indent=1, default=str))
    elif args.name == "bench":
        bench(out, log, device, budget, deadline)
    elif args.name == "accuracy":
        accuracy(out, log, device, budget, Path(args.data_root), deadline)
    elif args.name == "campaign":
        campaign(out, log, budget, Path(args.data_root), deadline)
    return 0


def stage_command(args: argparse.Namespace, name: str, seconds: float, data_root: Path) -> list:
    """The process a stage runs in: the CUDA tests are pytest itself, the others `stage`."""
    if name == "tests":
        xml = Path(args.out).resolve() / "cuda-tests.xml"
        return [
            sys.executable,
            "-m",
            "pytest",
            "tests/training/test_cuda.py",
            "-v",
            "-rA",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            f"--junitxml={xml}",
        ]
    return [
        sys.executable,
        "-m",
        "harness.tools.gpu_kit",
        "stage",
        name,
        "--out",
        args.out,
        "--budget",
        args.budget,
        "--seconds",
        f"{seconds:.0f}",
        "--data-root",
        str(data_root),
    ] + (["--device", args.device] if args.device else [])


def run_stage(command: list, seconds: float, log: Log, env: dict[str, str]) -> str:
    """Run a stage's process until it ends or its deadline; then SIGINT (pytest writes its XML
    of the tests so far, a stage what it has), and SIGKILL after a grace. Its output goes to
    kit.log as it comes."""
    repo = Path(__file__).resolve().parents[2]
    with open(log.file.name, "a") as sink:
        process = subprocess.Popen(command, cwd=repo, env=env, stdout=sink, stderr=sink)
        try:
            code = process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            return f"stopped at its deadline ({seconds:.0f} s)"
    return "ok" if code == 0 else f"failed (exit {code}; kit.log says why)"


def run(args: argparse.Namespace) -> int:
    """Every chosen stage, each in its own process with its own deadline."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / "kit.log")
    start = time.monotonic()
    chosen = args.steps.split(",") if args.steps else list(DEFAULT_STAGES)
    unknown = sorted(set(chosen) - set(STAGES))
    if unknown:
        raise SystemExit(f"unknown stages {', '.join(unknown)}; the stages: {', '.join(STAGES)}")
    data_root = Path(os.environ.get("M2_DATA_ROOT") or tempfile.mkdtemp(prefix="m2h-data-"))
    if args.carry and (Path(args.carry) / "data.tar.xz").exists():
        data_root = unpack(Path(args.carry), Path(tempfile.mkdtemp(prefix="m2h-data-")))
    env = {
        **os.environ,
        TEST_TIMEOUT_ENV: str(BUDGETS[args.budget]["test_timeout"]),
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(
            [
                str(Path(__file__).resolve().parents[2]),
                *filter(None, [os.environ.get("PYTHONPATH")]),
            ]
        ),
    }
    results: dict[str, str] = {}
    for k, name in enumerate(chosen):
        left = args.time_limit - (time.monotonic() - start) - GRACE * (len(chosen) - k)
        share = SHARES[name] / sum(SHARES[s] for s in chosen[k:])
        seconds = max(FLOORS[name], left * share)
        log(f"== {name} ({seconds:.0f} s)")
        began = time.monotonic()
        results[name] = run_stage(stage_command(args, name, seconds, data_root), seconds, log, env)
        log(f"== {name}: {results[name]} after {time.monotonic() - began:.0f} s")
    log("== summary", json.dumps(results), f"{time.monotonic() - start:.0f} s in all")
    return 0 if all(r == "ok" for r in results.values()) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.tools.gpu_kit", description=(__doc__ or "").split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="compress the datasets into the carried folder")
    p.add_argument("--carry", default="gpu-carry")
    p.add_argument("--data-root", default=os.environ.get("M2_DATA_ROOT", "data"))
    p.add_argument("--level", type=int, default=6, help="xz preset (0 fast ... 9 small)")
    c = sub.add_parser("command", help="print the device command with this checkout's commit")
    c.add_argument("--carry", default="gpu-carry")
    r = sub.add_parser("run", help="the GPU checklist, results into --out")
    r.add_argument("--carry", default="gpu-carry")
    r.add_argument("--out", required=True)
    r.add_argument("--budget", choices=sorted(BUDGETS), default="full")
    r.add_argument("--device", help="default: CUDA when present")
    r.add_argument(
        "--steps",
        help=f"a comma-separated subset of {','.join(STAGES)} (default: all but campaign)",
    )
    r.add_argument("--time-limit", type=float, default=540.0, help="seconds for everything")
    s = sub.add_parser("stage", help="one stage in this process (what `run` starts)")
    s.add_argument("name", choices=[n for n in STAGES if n != "tests"])
    s.add_argument("--out", required=True)
    s.add_argument("--budget", choices=sorted(BUDGETS), default="full")
    s.add_argument("--device")
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--data-root", required=True)
    args = parser.parse_args(argv)
    if args.command == "pack":
        archive = pack(Path(args.carry), Path(args.data_root), args.level)
        print(f"wrote {archive} ({archive.stat().st_size / 2**20:.1f} MiB)")
        return 0
    if args.command == "command":
        from harness.runs.provenance import git_commit

        commit, dirty = git_commit()
        if dirty:
            print("# the tree has uncommitted changes: commit them first", file=sys.stderr)
        print(device_command(commit, args.carry))
        return 0
    if args.command == "stage":
        try:
            return stage(args)
        except Exception:
            Log(Path(args.out) / "kit.log")(traceback.format_exc())
            return 1
    return run(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
