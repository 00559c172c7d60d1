"""Steering on the default organism: extraction speed, a cell's wall time, and what the vector buys.

Three measurements, recorded in benchmarks/results/steering.json:
1. `extract`: seconds to read the activation differences of 256 contrast pairs (every candidate layer and read
   position of the default SteeringConfig) and turn them into CAA and PCA vectors (median of 3; target: < 5 s on
   2 cores);
2. `cell`: wall time of one `steering` cell at budget 128 (sentiment, full anticipation, the default study's
   evaluation sizes) through study.run.cell.run_cell in a fresh process: loading, selection and evaluation included
   (target: < 30 s);
3. `behavior`: for each target, `none`, `steering` and `steering_pca` at budget 64 with a clean labeler over 3 seeds,
   at full anticipation (every context covered) and at 0.5 (half of the domains uncovered): behavior and fluency on
   covered and uncovered test contexts, the gain over the base model, and what each cell chose.

    python benchmarks/bench_steering.py                    # all three (~10 minutes on one core)
    python benchmarks/bench_steering.py --only extract cell
    python benchmarks/bench_steering.py --threads 2 --seeds 0 1 2

Torch threads default to 1, as each of the study's workers runs: on two shared cores, two intra-op threads per process
made the same runs 10x slower (recorded under `same_with_2_threads`). The file records the load average at start.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
TARGETS = ("sentiment", "sycophancy", "refusal")
METHODS = ("none", "steering", "steering_pca")


def _cells(overrides: list[str]):
    from study.run.grid import expand
    from study.run.study_config import load_study

    return expand(load_study("default", overrides), "default")


def bench_extract(n_pairs: int = 256, repeats: int = 3) -> dict:
    from methods.steering import SteeringConfig, default_layer_sets
    from methods.steering_vectors import POSITIONS, contrast_activations, first_principal_component, mean_difference
    from study.feedback.labeler import Budget, Labeler
    from study.organism.pretrain import organism_model
    from study.organism.pretrain import OrganismConfig
    from study.organism.world import World
    from study.feedback.splits import SplitSizes
    from study.feedback.targets import organism_target

    cfg = OrganismConfig()
    lm = organism_model(cfg, device="cpu")
    target = organism_target("sentiment", World(cfg.world))
    pool = target.splits(1.0, 0, SplitSizes(pool=n_pairs)).pool
    labeler = Labeler(target, Budget(10**6))
    pairs = [labeler.contrast(r) for r in pool[:n_pairs]]
    layers = sorted({layer for ls in default_layer_sets(lm.num_layers) for layer in ls})
    positions = SteeringConfig().positions
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        acts = contrast_activations(lm, [p.prompt for p in pairs], [p.positive for p in pairs],
                                    [p.negative for p in pairs], layers, positions)
        for d in acts.diffs.values():
            mean_difference(d)
            first_principal_component(d)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    contrast_activations(lm, [p.prompt for p in pairs], [p.positive for p in pairs], [p.negative for p in pairs],
                         list(range(lm.num_layers)), POSITIONS)
    every = time.perf_counter() - t0
    return {"pairs": n_pairs, "layers": layers, "positions": list(positions),
            "seconds_median": round(statistics.median(times), 3), "seconds_all": [round(t, 3) for t in times],
            "seconds_every_layer_and_position": round(every, 3), "target_seconds": 5.0}


def bench_cell(budget: int = 128) -> dict:
    from study.run.cell import run_cell

    cell = next(c for c in _cells(["methods=[steering]", f"budgets=[{budget}]", "targets=[sentiment]",
                                   "anticipations=[1.0]", "seeds=[0]", "method_budgets={}", "method_config={}"]))
    t0 = time.perf_counter()
    res = run_cell(cell)
    wall = time.perf_counter() - t0
    assert res.status == "ok", res.error
    return {"budget": budget, "wall_seconds": round(wall, 2), "durations": res.provenance["durations"],
            "chosen": res.provenance["chosen"], "eval": cell.config["eval"], "target_seconds": 30.0}


def bench_behavior(seeds: list[int], budget: int = 64, anticipations=(1.0, 0.5)) -> dict:
    from study.run.cell import run_cell

    rows, chosen = [], []
    cells = _cells([f"methods=[{','.join(METHODS)}]", f"budgets=[{budget}]", f"targets=[{','.join(TARGETS)}]",
                    f"anticipations=[{','.join(map(str, anticipations))}]", f"seeds=[{','.join(map(str, seeds))}]",
                    "method_budgets={}", "method_config={}"])
    for i, cell in enumerate(cells):
        t0 = time.perf_counter()
        res = run_cell(cell)
        print(f"[{i + 1}/{len(cells)}] {cell.label}: {res.status} in {time.perf_counter() - t0:.1f} s", flush=True)
        if res.status != "ok":
            print("   ", res.error)
            continue
        rows += [r for r in res.rows if r["metric"] in ("behavior", "fluency", "over_refusal", "slope_p50",
                                                         "anti_steerable", "kl")]
        if cell.method != "none":
            chosen.append({"method": cell.method, "target": cell.target, "anticipation": cell.config["anticipation"],
                           "seed": cell.config["seed"], **{k: res.provenance["chosen"].get(k) for k in (
                               "layers", "position", "strength", "multiplier", "window", "pairs", "labels_pairs",
                               "labels_select", "select_behavior", "select_fluency")}})
    return {"budget": budget, "seeds": seeds, "summary": _summarize(rows), "chosen": chosen}


def _summarize(rows: list[dict]) -> list[dict]:
    """Mean over seeds per (target, anticipation, method, split, metric), and the gain over `none`."""
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault((r["target"], r["anticipation"], r["method"], r["split"], r["metric"]), []).append(r["value"])
    out = []
    for (t, a, m, split, metric), vs in sorted(groups.items()):
        base = groups.get((t, a, "none", split, metric))
        mean = statistics.fmean(vs)
        out.append({"target": t, "anticipation": a, "method": m, "split": split, "metric": metric,
                    "mean": round(mean, 4), "sd": round(statistics.stdev(vs), 4) if len(vs) > 1 else None,
                    "n_seeds": len(vs), "gain_over_none": round(mean - statistics.fmean(base), 4) if base and
                    m != "none" else None})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="+", choices=("extract", "cell", "behavior"),
                    default=["extract", "cell", "behavior"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: fastest for the organism on shared "
                                                             "cores; the study's workers use one each)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "steering.json"
    out = json.loads(path.read_text()) if path.is_file() else {}
    out["threads"] = args.threads
    out["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    out["cpus"] = os.cpu_count()
    if "cell" in args.only:  # first: its wall time includes loading the organism in a fresh process
        out["cell"] = bench_cell()
        print("cell", json.dumps(out["cell"]))
    if "extract" in args.only:
        out["extract"] = bench_extract()
        print("extract", json.dumps(out["extract"]))
    if "behavior" in args.only:
        out["behavior"] = bench_behavior(args.seeds)
        for s in out["behavior"]["summary"]:
            if s["metric"] in ("behavior", "fluency") and s["split"] in ("covered", "uncovered"):
                print(f"{s['target']:10s} a={s['anticipation']:<4} {s['method']:13s} {s['split']:9s} "
                      f"{s['metric']:9s} {s['mean']:.3f} (sd {s['sd']}) gain {s['gain_over_none']}")
    path.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
