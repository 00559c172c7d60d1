"""The trained methods on the default organism: a cell's wall time, and what the feedback buys.

Two measurements, recorded in benchmarks/results/trained.json:
1. `cell`: wall time of one cell per method at budget 128 (sentiment, full anticipation, clean labeler) through
   study.run.cell.run_cell, fitting, selection and evaluation included. Targets: `lora_sft` and `dpo` under 30 s, `rlhf`
   under 120 s (`bon` is reported too).
2. `behavior`: `none`, `lora_sft`, `dpo`, `rlhf`, `bon` (and `dpo+steering`) at budget 256 with a clean labeler over
   3 seeds, for each target at full anticipation (every context covered) and at 0.5 (half the domains uncovered):
   behavior and fluency on covered and uncovered test contexts, the gain over the base model, per-token KL, the
   learned reward beside the true one (rlhf, bon), and what each cell chose. Acceptance: on sentiment at full
   anticipation, lora_sft, dpo and rlhf each gain at least 20 points on covered contexts (mean of 3 seeds) with
   fluency at least 90%.

    python benchmarks/bench_trained.py                          # both, 2 worker processes of 1 thread
    python benchmarks/bench_trained.py --only cell --workers 1
    python benchmarks/bench_trained.py --only behavior --targets sentiment --anticipations 1.0
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
TARGETS = ("sentiment", "sycophancy", "refusal")
METHODS = ("none", "lora_sft", "dpo", "rlhf", "bon", "dpo+steering")
METRICS = ("behavior", "fluency", "over_refusal", "kl", "perplexity", "learned_reward", "true_reward")
CHOSEN = ("steps", "max_steps", "demonstrations", "comparisons", "ties", "pairs_trained", "learning_rate", "beta",
          "kl_coef", "n", "learned_reward_first", "learned_reward_last", "kl_last", "trainer")


def _cells(overrides: list[str]):
    from study.run.grid import expand
    from study.run.study_config import load_study

    # the default study's per-method settings name methods this benchmark may not run
    return expand(load_study("default", ["method_config={}", "method_budgets={}", *overrides]), "default")


def _init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _run(cell) -> dict:
    from study.run.cell import run_cell

    t0 = time.perf_counter()
    res = run_cell(cell)
    chosen = res.provenance.get("chosen") or {}
    flat = {}
    for k, v in chosen.items():  # stacked parts prefix their keys with "0.", "1.", ...
        key = k.split(".", 1)[1] if k[:1].isdigit() and "." in k else k
        if key in CHOSEN or key == "selection" or key == "reward_model":
            flat[k] = v
    return {"label": cell.label, "method": cell.method, "target": cell.target, "seed": cell.config["seed"],
            "anticipation": cell.config["anticipation"], "budget": cell.config["budget"], "status": res.status,
            "error": res.error, "wall_seconds": round(time.perf_counter() - t0, 2),
            "durations": res.provenance.get("durations"), "labels": res.provenance.get("labels"),
            "chosen": flat, "rows": [r for r in res.rows if r["metric"] in METRICS or r["metric"].startswith("drift")]}


def _map(cells, workers: int, threads: int) -> list[dict]:
    out = []
    if workers <= 1:
        _init(threads)
        for i, c in enumerate(cells):
            out.append(_run(c))
            print(f"[{i + 1}/{len(cells)}] {c.label}: {out[-1]['status']} in {out[-1]['wall_seconds']} s", flush=True)
        return out
    import multiprocessing as mp

    with ProcessPoolExecutor(workers, mp.get_context("spawn"), initializer=_init, initargs=(threads,)) as pool:
        futures = {pool.submit(_run, c): c for c in cells}
        for i, f in enumerate(as_completed(futures)):
            out.append(f.result())
            print(f"[{i + 1}/{len(cells)}] {out[-1]['label']}: {out[-1]['status']} in {out[-1]['wall_seconds']} s",
                  flush=True)
    return out


def bench_cell(methods: list[str], budget: int, workers: int, threads: int) -> dict:
    cells = _cells([f"methods=[{','.join(methods)}]", f"budgets=[{budget}]", "targets=[sentiment]",
                    "anticipations=[1.0]", "seeds=[0]", "labeler_noise=[0.0]", "labeler_misspec=[0.0]"])
    # Timed one at a time (workers=1), so that cells do not compete with each other for the cores.
    runs = _map(cells, 1, threads)
    targets = {"lora_sft": 30.0, "dpo": 30.0, "rlhf": 120.0}
    return {"budget": budget, "threads": threads, "cells": [
        {"method": r["method"], "wall_seconds": r["wall_seconds"], "durations": r["durations"],
         "target_seconds": targets.get(r["method"]), "status": r["status"], "error": r["error"],
         "chosen": r["chosen"]} for r in runs]}


def bench_behavior(methods: list[str], targets: list[str], anticipations: list[float], seeds: list[int],
                   budget: int, workers: int, threads: int, runs_path: Path) -> dict:
    cells = _cells([f"methods=[{','.join(methods)}]", f"budgets=[{budget}]", f"targets=[{','.join(targets)}]",
                    f"anticipations=[{','.join(map(str, anticipations))}]", f"seeds=[{','.join(map(str, seeds))}]",
                    "labeler_noise=[0.0]", "labeler_misspec=[0.0]"])
    runs = _map(cells, workers, threads)
    # The raw cells first (`--summarize` rebuilds from them), merged with those of earlier runs of other methods.
    key = lambda r: (r["method"], r["target"], r["anticipation"], r["seed"], r["budget"])  # noqa: E731
    merged = {key(r): r for r in (json.loads(runs_path.read_text()) if runs_path.is_file() else [])}
    merged.update({key(r): r for r in runs})
    runs = sorted(merged.values(), key=key)
    runs_path.write_text(json.dumps(runs) + "\n")
    return behavior_from_runs(runs, budget, seeds)


def behavior_from_runs(runs: list[dict], budget: int, seeds: list[int]) -> dict:
    rows = [dict(r, method=run["method"], target=run["target"], anticipation=run["anticipation"], seed=run["seed"])
            for run in runs if run["status"] == "ok" for r in run["rows"]]
    failed = [{"label": r["label"], "error": r["error"]} for r in runs if r["status"] != "ok"]
    chosen = [{k: r[k] for k in ("method", "target", "anticipation", "seed", "wall_seconds", "labels", "chosen")}
              for r in runs if r["status"] == "ok" and r["method"] != "none"]
    return {"budget": budget, "seeds": seeds, "summary": summarize(rows), "chosen": chosen, "failed": failed}


def summarize(rows: list[dict]) -> list[dict]:
    """Mean over seeds per (target, anticipation, method, split, metric), and the gain over `none`."""
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        if r["value"] is None or math.isnan(r["value"]):  # e.g. a true reward with no readable sample
            continue
        groups.setdefault((r["target"], r["anticipation"], r["method"], r["split"], r["metric"]), []).append(r["value"])
    out = []
    for (t, a, m, split, metric), vs in sorted(groups.items()):
        base = groups.get((t, a, "none", split, metric))
        mean = statistics.fmean(vs)
        out.append({"target": t, "anticipation": a, "method": m, "split": split, "metric": metric,
                    "mean": round(mean, 4), "sd": round(statistics.stdev(vs), 4) if len(vs) > 1 else None,
                    "min": round(min(vs), 4), "n_seeds": len(vs),
                    "gain_over_none": round(mean - statistics.fmean(base), 4) if base and m != "none" else None})
    return out


def acceptance(summary: list[dict]) -> list[dict]:
    """Issue 6: sentiment, anticipation 1.0, budget 256: gain >= 0.20 on covered contexts, fluency >= 0.90."""
    get = {(s["target"], s["anticipation"], s["method"], s["split"], s["metric"]): s for s in summary}
    out = []
    for m in ("lora_sft", "dpo", "rlhf"):
        b, f = get.get(("sentiment", 1.0, m, "covered", "behavior")), get.get(("sentiment", 1.0, m, "covered",
                                                                               "fluency"))
        if b and f:
            out.append({"method": m, "gain": b["gain_over_none"], "behavior": b["mean"], "fluency": f["mean"],
                        "pass": (b["gain_over_none"] or 0.0) >= 0.20 and f["mean"] >= 0.90})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="+", choices=("cell", "behavior"), default=["cell", "behavior"])
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--targets", nargs="+", default=list(TARGETS))
    ap.add_argument("--anticipations", nargs="+", type=float, default=[1.0, 0.5])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--budget", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker (1 is fastest for the organism)")
    ap.add_argument("--out", default=str(RESULTS / "trained.json"))
    ap.add_argument("--summarize", action="store_true", help="rebuild the behavior summary from the stored cells")
    args = ap.parse_args()
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = json.loads(path.read_text()) if path.is_file() else {}
    if "cell" in args.only:
        out["cell"] = bench_cell([m for m in args.methods if m in ("lora_sft", "dpo", "rlhf", "bon")], 128,
                                 args.workers, args.threads)
        for c in out["cell"]["cells"]:
            print(f"cell {c['method']:9s} {c['wall_seconds']:7.1f} s (target {c['target_seconds']}) {c['durations']}")
    if "behavior" in args.only:
        key = "behavior" if args.targets == list(TARGETS) else "behavior_" + "_".join(args.targets)
        runs_path = path.with_name(f"{path.stem}.{key}.runs.json")
        if args.summarize:
            res = behavior_from_runs(json.loads(runs_path.read_text()), args.budget, args.seeds)
        else:
            res = bench_behavior(args.methods, args.targets, args.anticipations, args.seeds, args.budget,
                                 args.workers, args.threads, runs_path)
        old = out.get(key, {})
        merged = {(s["target"], s["anticipation"], s["method"], s["split"], s["metric"]): s
                  for s in old.get("summary", [])}
        merged.update({(s["target"], s["anticipation"], s["method"], s["split"], s["metric"]): s
                       for s in res["summary"]})
        for (t, a, m, split, metric), entry in merged.items():  # gains against the (possibly older) base runs
            base = merged.get((t, a, "none", split, metric))
            entry["gain_over_none"] = round(entry["mean"] - base["mean"], 4) if base and m != "none" else None
        res["summary"] = sorted(merged.values(), key=lambda s: (s["target"], s["anticipation"], s["method"],
                                                                s["split"], s["metric"]))
        key_of = lambda c: (c["method"], c["target"], c["anticipation"], c["seed"])  # noqa: E731
        chosen = {key_of(c): c for c in old.get("chosen", [])}
        chosen.update({key_of(c): c for c in res["chosen"]})
        res["chosen"] = sorted(chosen.values(), key=key_of)
        res["acceptance"] = acceptance(res["summary"])
        out[key] = res
        for s in res["summary"]:
            if s["metric"] in ("behavior", "fluency", "learned_reward", "true_reward"):
                print(f"{s['target']:10s} a={s['anticipation']:<4} {s['method']:13s} {s['split']:9s} "
                      f"{s['metric']:14s} {s['mean']:.3f} (sd {s['sd']}) gain {s['gain_over_none']}")
        print("acceptance", json.dumps(res["acceptance"]))
    path.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
