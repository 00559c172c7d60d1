"""Organism pretraining cost: wall time and peak memory from a cold cache, then the time to load it from the cache.

Targets (issue 2): pretraining at most 5 minutes on 2 cores with peak memory under 4 GiB; loading under 5 seconds.
Run it on an otherwise idle machine; it records benchmarks/results/pretrain.json.

    python benchmarks/bench_pretrain.py                 # the default organism
    python benchmarks/bench_pretrain.py --config micro
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
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

CHILD = """
import sys, time, json
t0 = time.perf_counter()
from study.run.study_config import load_study
from study.organism.pretrain import load_organism, organism_info
cfg = load_study(sys.argv[1]).organism
model, tok = load_organism(cfg)
info = organism_info(cfg)
print(json.dumps({"wall": time.perf_counter() - t0, "info": {k: v for k, v in info.items() if k != "config"}}))
"""


def run_child(config: str, cache: str) -> tuple[dict, float]:
    env = {**os.environ, "RLHF_VS_STEERING_CACHE": cache, "HF_HUB_OFFLINE": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    r = subprocess.run([sys.executable, "-c", CHILD, config], capture_output=True, text=True, env=env, check=True)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return json.loads(r.stdout.strip().splitlines()[-1]), max(peak_kib, before) / 1024 / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="default")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        cold, peak_gib = run_child(args.config, cache)
        warm, _ = run_child(args.config, cache)
    out = {
        "config": args.config, "cores": os.cpu_count(), "machine": platform.machine(),
        "pretrain_wall_seconds": round(cold["wall"], 1), "pretrain_seconds_in_trainer": cold["info"]["pretrain_seconds"],
        "peak_memory_gib": round(peak_gib, 2), "load_from_cache_seconds": round(warm["wall"], 2),
        "heldout_loss": cold["info"]["heldout_loss"], "entropy_floor": cold["info"]["entropy_floor"],
        "gap": cold["info"]["gap"], "params": cold["info"]["params"],
    }
    print(json.dumps(out, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"pretrain-{args.config}.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
