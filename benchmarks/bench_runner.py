"""Benchmark: the study runner. 1 vs 2 local workers on one grid (target: >= 1.6x), and a warm rerun of the default
study (every cell stored; target: under 30 s). Optionally the default study from a cold cache (target: 15 minutes).

Every figure is the wall time of the `study run` command itself (a subprocess: imports, spawning workers, writing the
table included), with fresh results directories for the worker comparison. The worker comparison runs on the default
organism (pretrained into the cache first if needed, not timed), with the default study's evaluation sizes, on two grids:
`prompting` (none and prompting on two targets and three seeds: 18 small cells, where starting the workers weighs
most) and `study` (the default study's own methods and budgets, one target, two seeds, one condition). Three
configurations: one worker as the runner sets it up (for the organism: one torch thread), two workers (one thread
each), and one worker with both cores as torch threads (the alternative for a lone worker). With
--wait-idle each run first waits for the machine's other processes to leave the cores, and every run records how
much CPU the others used meanwhile (`others_cpu_seconds`). Records benchmarks/results/runner.json.

    .venv/bin/python benchmarks/bench_runner.py --wait-idle 900 --repeat 2   # as recorded (best of 2 per config)
    .venv/bin/python benchmarks/bench_runner.py --skip-workers     # the warm rerun only (needs results/default
                                                                   #   complete: `study run default` first)
    .venv/bin/python benchmarks/bench_runner.py --cold             # also: the default study from an empty cache
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDY = [sys.executable, "-m", "study.cli", "run"]
GRIDS = {
    # none and prompting only: 18 small cells (~2 s each), so the fixed costs (starting workers) weigh most
    "prompting": ["methods=[none, prompting]", "targets=[sentiment, sycophancy]", "seeds=[0,1,2]",
                  "anticipations=[0.5]", "method_budgets={prompting: [0, 4]}"],
    # the default study's own methods and budgets (whatever default.yaml lists), one target, two seeds, one condition
    "study": ["targets=[sentiment]", "seeds=[0,1]", "anticipations=[0.5]", "labeler_noise=[0.0]",
              "labeler_misspec=[0.0]"],
}
SPEEDUP_TARGET, WARM_TARGET_S, COLD_TARGET_S = 1.6, 30.0, 900.0


def _sets(overrides: list[str]) -> list[str]:
    return sum((["--set", o] for o in overrides), [])


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores, /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def own_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)  # reaped descendants too: the CLI joins its workers
    return r.ru_utime + r.ru_stime


def wait_for_idle(max_wait: float, quiet: float = 0.15) -> float:
    """Wait (up to max_wait s) until other processes use under `quiet` of the cores; returns their share."""
    deadline = time.time() + max_wait
    while True:
        b0 = busy_seconds()
        time.sleep(3)
        share = (busy_seconds() - b0) / (3 * (os.cpu_count() or 1))
        if share < quiet or time.time() > deadline:
            return share
        time.sleep(10)


def timed(args: list[str], env: dict[str, str], max_wait: float = 0.0) -> tuple[float, str, dict]:
    """Run `study ...`; also how much CPU this run and the machine's other processes used meanwhile."""
    before = wait_for_idle(max_wait) if max_wait else None
    b0, o0, t0 = busy_seconds(), own_seconds(), time.perf_counter()
    r = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    own, busy = own_seconds() - o0, busy_seconds() - b0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {r.returncode}:\n{r.stderr[-3000:]}")
    load = {"own_cpu_seconds": round(own, 1), "others_cpu_seconds": round(max(0.0, busy - own), 1),
            "others_share_before": None if before is None else round(before, 3)}
    return seconds, r.stderr, load


def cell_seconds(results: Path) -> list[float]:
    return [json.loads(p.read_text())["provenance"]["durations"]["total"] for p in (results / "cells").glob("*.json")]


def method_seconds(results: Path) -> dict[str, float]:
    """Mean cell seconds per method and budget (what sizing a grid needs)."""
    per: dict[str, list[float]] = {}
    for p in (results / "cells").glob("*.json"):
        r = json.loads(p.read_text())
        key = f"{r['config']['method']['name']}@{r['config']['budget']}"
        per.setdefault(key, []).append(r["provenance"]["durations"]["total"])
    return {k: round(sum(v) / len(v), 2) for k, v in sorted(per.items())}


def record_workers(out: dict, grid: str, rounds: list[dict]) -> None:
    """The best time of each configuration (the run least disturbed by other processes on a shared machine)."""
    best1 = min(r["1w0t"]["seconds"] for r in rounds)
    best2 = min(r["2w0t"]["seconds"] for r in rounds)
    best1t = min(r["1w2t"]["seconds"] for r in rounds)
    out.setdefault("workers", {})[grid] = {
        "overrides": GRIDS[grid], "cells": rounds[0]["1w0t"]["cells"], "rounds": rounds,
        "one_worker_seconds": best1, "two_workers_seconds": best2, "one_worker_two_threads_seconds": best1t,
        "speedup": round(best1 / best2, 3), "speedup_vs_two_threads": round(best1t / best2, 3),
        "target_speedup": SPEEDUP_TARGET, "within_target": best1 / best2 >= SPEEDUP_TARGET}
    print(f"grid {grid}: speedup {best1 / best2:.2f}x (target {SPEEDUP_TARGET}x); vs one worker on two threads "
          f"{best1t / best2:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the worker comparison; the best is kept")
    parser.add_argument("--cold", action="store_true", help="also time the default study from an empty cache")
    parser.add_argument("--skip-workers", action="store_true", help="leave out the 1 vs 2 workers comparison")
    parser.add_argument("--skip-warm", action="store_true", help="leave out the warm rerun of the default study")
    parser.add_argument("--grids", nargs="+", choices=sorted(GRIDS), default=["prompting", "study"],
                        help="grids for the worker comparison")
    parser.add_argument("--wait-idle", type=float, default=0.0, help="before each timed run, wait up to this many "
                        "seconds for other processes to leave the cores (a shared machine)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "runner.json")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out: dict = {"benchmark": "study runner", "command": "python " + " ".join(["benchmarks/bench_runner.py"] + sys.argv[1:]),
                 "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                             "python": platform.python_version(), "load_average_at_start": os.getloadavg()}}

    # the organism the grid needs, pretrained (untimed) before any timing
    subprocess.run([sys.executable, "-m", "study.cli", "organism", "--config", "default", "--json", "--samples", "1",
                    "--prompts", "1"], cwd=ROOT, env=env, check=True, capture_output=True)

    if args.out.is_file():  # keep the figures of the parts not rerun
        old = json.loads(args.out.read_text())
        out = {**old, **out, "workers": old.get("workers", {}) if isinstance(old.get("workers"), dict) and
               "rounds" not in old.get("workers", {}) else {}}
    with tempfile.TemporaryDirectory() as tmp:
        for grid in ([] if args.skip_workers else args.grids):
            rounds = []
            for i in range(args.repeat):
                row = {}
                configs = [(1, 0), (2, 0), (1, 2)]  # (workers, threads; 0 = the runner's choice)
                for workers, threads in (configs if i % 2 == 0 else configs[::-1]):  # ABBA: load drift cancels
                    results = Path(tmp) / f"{grid}-w{workers}t{threads}-{i}"
                    seconds, _, load = timed(STUDY + ["default", "--workers", str(workers), "--results",
                                                      str(results)] + _sets(GRIDS[grid] + [f"threads={threads}"]),
                                             env, max_wait=args.wait_idle)
                    row[f"{workers}w{threads}t"] = {"seconds": round(seconds, 2), "cells": len(cell_seconds(results)),
                                                    "cell_seconds_sum": round(sum(cell_seconds(results)), 2),
                                                    "mean_cell_seconds": method_seconds(results), **load}
                rounds.append(row)
                print(f"grid {grid}, round {i}: " + ", ".join(f"{k} {v['seconds']:.1f} s" for k, v in row.items()),
                      flush=True)
            record_workers(out, grid, rounds)

        if args.cold:
            cache, results = Path(tmp) / "cold-cache", Path(tmp) / "cold-results"
            seconds, log, _ = timed(STUDY + ["default", "--results", str(results)],
                                    {**env, "RLHF_VS_STEERING_CACHE": str(cache)})
            out["cold_default"] = {"seconds": round(seconds, 1), "cells": len(cell_seconds(results)),
                                   "target_seconds": COLD_TARGET_S, "within_target": seconds <= COLD_TARGET_S,
                                   "summary": log.strip().splitlines()[-1]}
            print(f"default study from a cold cache: {seconds:.0f} s")

    dry = subprocess.run(STUDY + ["default", "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True).stdout
    if not args.skip_warm and " 0 to run" not in dry:
        print(f"warm rerun skipped: results/default is incomplete ({dry.strip().splitlines()[-1]}); run "
              f"`study run default` first")
    elif not args.skip_warm:
        seconds, log, _ = timed(STUDY + ["default"], env)
        assert "0 computed now" in log, log
        out["warm_default"] = {"seconds": round(seconds, 2), "cells": int(dry.strip().splitlines()[-1].split()[0]),
                               "target_seconds": WARM_TARGET_S, "within_target": seconds < WARM_TARGET_S}
        print(f"warm rerun of the default study: {seconds:.2f} s")
    out["machine"]["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
