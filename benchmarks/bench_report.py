"""Benchmark: time `analysis.report.write_report` on a synthetic results store of 1,000+ cells (target: under 20 s).

Builds the store in a temporary directory (full grid: 6 methods x 2 targets x 4 budgets x 12 conditions x 3 seeds,
plus the base model: 1,800 cells), times the report end to end, and records the figure in
benchmarks/results/report.json.

    .venv/bin/python benchmarks/bench_report.py            # or --repeat 3 to keep the best of three
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere, installed or not

from analysis.synthetic import SyntheticSpec, write_results  # noqa: E402  (stdlib only: keeps the import timing honest)

SPEC = SyntheticSpec(budgets=(8, 32, 128, 512), anticipations=(0.5, 0.25, 1.0), noises=(0.0, 0.2),
                     misspecs=(0.0, 0.3), full_grid=True, samples=32)
TARGET_S = 20.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="report runs; the best is recorded")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "report.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "results"
        t0 = time.perf_counter()
        ids = write_results(store, SPEC)
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        from analysis.report import write_report  # the import (pandas, matplotlib, seaborn) is part of the cost

        import_s = time.perf_counter() - t0
        from analysis.table import atomic_write_bytes
        runs = []
        for i in range(args.repeat):
            t0 = time.perf_counter()
            summary = write_report(store, Path(tmp) / f"report{i}")
            runs.append(time.perf_counter() - t0)
        drawn = sorted(k for k, v in summary["figures"].items() if v)
    record = {
        "benchmark": "write_report on a synthetic results store",
        "cells": len(ids),
        "rows": summary["setup"]["rows"],
        "report_seconds": round(min(runs), 3),
        "report_seconds_all_runs": [round(r, 3) for r in runs],
        "import_seconds": round(import_s, 3),
        "build_store_seconds": round(build_s, 3),
        "target_seconds": TARGET_S,
        "within_target": min(runs) + import_s < TARGET_S,
        "figures_drawn": drawn,
        "command": "python benchmarks/bench_report.py",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
    }
    atomic_write_bytes(args.out, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
    print(f"{record['cells']} cells: write_report {record['report_seconds']:.2f} s "
          f"(+ {import_s:.2f} s import; target < {TARGET_S:g} s) -> {args.out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
