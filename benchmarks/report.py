"""Print a pytest-benchmark JSON file as a markdown table of the harness's speed figures.

python -m pytest benchmarks --benchmark-only --benchmark-json=results/bench-cpu.json
python benchmarks/report.py results/bench-cpu.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def table(path: str) -> str:
    data = json.loads(Path(path).read_text())
    machine = data["machine_info"]
    lines = [
        f"machine: {machine.get('cpu', {}).get('brand_raw', machine.get('processor'))}, "
        f"{machine.get('cpu', {}).get('count', '?')} logical cores; "
        f"commit {data.get('commit_info', {}).get('id', 'unknown')}"
        + (" (uncommitted changes)" if data.get("commit_info", {}).get("dirty") else ""),
        "",
        "| benchmark | device | median ms | rows/s | rows/s per seed | GFLOP/s "
        "| matmul peak GFLOP/s | fraction of peak |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        lines.append(
            f"| {bench['name'].split('[')[0]}[{bench.get('param', '')}] | {info['device']} "
            f"| {1e3 * bench['stats']['median']:.2f} | {info['rows_per_sec']:,.0f} "
            f"| {info.get('rows_per_sec_per_seed', info['rows_per_sec']):,.0f} "
            f"| {info['gflop_per_sec']:.1f} | {info['matmul_peak_gflop_per_sec']:.1f} "
            f"| {100 * info['fraction_of_peak']:.0f}% |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(sys.argv[1]))
