"""A run's start-up: the wall time of `m2h run exact --epochs 1 --max-steps 1 --no-track` (the
interpreter, the imports, reading and checking MNIST, building the model and its optimiser, one
step and one evaluation), side by side with the same command with torchvision imported first, as
every run paid until the harness read MNIST's raw files itself (torchvision now only downloads
them), and beside what no harness change can cut: importing torch and making one Adam optimiser
(whose first parameter group imports torch._dynamo). The three alternate, `--repeats` times each,
in fresh processes; it prints each one's median and the ratios.

M2_DATA_ROOT=../shared/data python benchmarks/startup.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

RUN = "from harness.cli.main import main; raise SystemExit(main(sys.argv[1:]))"
ARGS = ["run", "exact", "--epochs", "1", "--max-steps", "1", "--no-track", "--again"]


TORCH_ALONE = "import torch; torch.optim.Adam([torch.zeros(1, requires_grad=True)])"


def seconds(code: str, out: str) -> float:
    start = time.perf_counter()
    args = [] if code == TORCH_ALONE else [*ARGS, "--out", out]
    done = subprocess.run(
        [sys.executable, "-c", f"import sys; {code}", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    took = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    kinds = {
        "now": RUN,
        "with torchvision imported": f"import torchvision; {RUN}",
        "torch and an Adam alone": TORCH_ALONE,
    }
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory() as out:
        os.chdir(out)  # its checkpoint and record stay in the temporary folder
        seconds(RUN, out)  # warm the file cache
        for _ in range(args.repeats):
            for kind, code in kinds.items():
                times[kind].append(seconds(code, out))
    medians = {kind: statistics.median(t) for kind, t in times.items()}
    for kind, median in medians.items():
        spread = ", ".join(f"{t:.2f}" for t in times[kind])
        print(f"{kind:>26}: median {median:.2f} s ({spread})")
    ratio = medians["with torchvision imported"] / medians["now"]
    print(f"start-up with torchvision imported / now: {ratio:.2f}x")
    floor = medians["torch and an Adam alone"] / medians["now"]
    print(f"torch and an Adam alone / now: {floor:.2f}x")


if __name__ == "__main__":
    main()
