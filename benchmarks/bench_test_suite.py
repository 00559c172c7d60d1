"""The default test run's wall time: one pytest process against `make test`'s pytest-xdist workers, side by side.

Runs the suite alternately serial (`pytest`) and parallel (`pytest -n WORKERS --dist loadfile`, what `make test`
runs), `--rounds` times each, on this checkout with its `.venv` and its cached micro organism, and records each run's
wall time and pass count. Alternating keeps a shared machine's drift out of the comparison.

    python benchmarks/bench_test_suite.py --rounds 2 --out benchmarks/results/test_suite.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(args: list[str]) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", *args], cwd=REPO, capture_output=True, text=True,
                          env=os.environ | {"HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - t0
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    passed = re.search(r"(\d+) passed", tail)
    return {"args": args, "wall_s": round(wall, 1), "rc": proc.returncode, "passed": int(passed.group(1)) if passed
            else None, "summary": tail}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    modes = {"serial": [], "parallel": ["-n", str(a.workers), "--dist", "loadfile"]}
    runs = []
    for r in range(a.rounds):
        for name, args in modes.items():
            res = {"round": r, "mode": name, **run(args)}
            print(json.dumps(res), flush=True)
            runs.append(res)
    summary = {name: sorted(x["wall_s"] for x in runs if x["mode"] == name) for name in modes}
    out = {"command": f"python benchmarks/bench_test_suite.py --rounds {a.rounds} --workers {a.workers}",
           "machine": f"{platform.machine()}, {os.cpu_count()} cores", "runs": runs, "wall_s": summary}
    print(json.dumps(summary))
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
