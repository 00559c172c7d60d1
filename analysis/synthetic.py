"""Synthetic results stores whose answers are known in closed form, for the tests and the report benchmark.

For a method with truth (g, r, k, nz, ms) at budget b, anticipation a, labeler noise e and misspecification p:

    covered   = base + g * ln(b)             - nz * e
    uncovered = base + r * g * ln(b) + k * a - nz * e - ms * p
    all       = a * covered + (1 - a) * uncovered
    kl = kl_c * ln(b);  fluency = 0.98 - fl * ln(b);  drift:<other> = dr * ln(b)

The base model ("none") scores `base` on every split. `cell_sd` adds independent noise to every behavior value. Each
seed adds a zero-mean offset (so seed means are exact),
with a different pattern for the base than for methods, so CIs are not degenerate. A model's `model_scale` multiplies
g and kl_c; a target in `one_context` has no uncovered split and `all` = covered at every anticipation.

    spec = SyntheticSpec(anticipations=(0.25, 0.5, 1.0))
    write_results(tmp_path / "results", spec)
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

BASE_FLUENCY = 0.98


@dataclass(frozen=True)
class MethodTruth:
    gain: float  # g: covered gain per unit of ln(budget)
    ratio: float = 0.5  # r: share of the budget-driven gain that reaches uncovered contexts
    anticipation: float = 0.0  # k: uncovered behavior per unit of anticipation
    noise: float = 0.0  # nz: behavior lost per unit of labeler noise
    misspec: float = 0.0  # ms: uncovered behavior lost per unit of misspecification
    kl: float = 0.02
    fluency: float = 0.002
    drift: float = 0.005
    cost_per_label: float = 1.0
    steering: bool = False
    anti_steerable: float = 0.1


DEFAULT_METHODS: dict[str, MethodTruth] = {
    "rlhf": MethodTruth(0.08, ratio=0.5, anticipation=0.2, noise=0.3, misspec=0.2, kl=0.05),
    "dpo": MethodTruth(0.10, ratio=0.6, anticipation=0.15, noise=0.2, misspec=0.25, kl=0.04),
    "sft": MethodTruth(0.09, ratio=0.2, anticipation=0.3, noise=0.1, misspec=0.1, kl=0.03, cost_per_label=4.0),
    "steering": MethodTruth(0.06, ratio=0.9, anticipation=0.05, noise=0.05, kl=0.01, drift=0.01, steering=True),
    "prompting": MethodTruth(0.03, ratio=1.0, kl=0.005, fluency=0.0, drift=0.0),
    "dpo+steering": MethodTruth(0.11, ratio=0.7, anticipation=0.1, noise=0.2, misspec=0.2, kl=0.05, steering=True),
}


@dataclass(frozen=True)
class SyntheticSpec:
    models: tuple[str, ...] = ("organism",)  # display names, as the rows carry them
    # Optional, one per model: the cell config's `model` (e.g. {"path": "organism", "organism_key": "k1"}; the name is
    # added), so that two models may share a display name. Empty: the config's `model` is the bare name.
    model_configs: tuple[dict[str, Any], ...] = ()
    model_scale: tuple[float, ...] = ()  # optional, one per model: multiplies every method's gain and KL
    targets: tuple[str, ...] = ("sentiment", "sycophancy")
    methods: dict[str, MethodTruth] = field(default_factory=lambda: dict(DEFAULT_METHODS))
    budgets: tuple[int, ...] = (8, 32, 128, 512)
    anticipations: tuple[float, ...] = (0.5,)
    noises: tuple[float, ...] = (0.0,)
    misspecs: tuple[float, ...] = (0.0,)
    seeds: tuple[int, ...] = (0, 1, 2)
    seed_sd: float = 0.01
    base: float = 0.3
    full_grid: bool = False  # False: vary one dial at a time around the first value of each
    with_base: bool = True
    samples: int = 8  # per-sample slope lines per steering cell (0: no JSONL)
    # "ab_propensity": behavior is written as an A/B data set scored by propensity alone (no fluency rows either)
    behavior_metric: str = "behavior"
    # Targets whose records all sit in one context: no uncovered split at any anticipation, and `all` = covered.
    one_context: tuple[str, ...] = ()
    # Independent normal noise on every behavior value, seeded by the cell's id (0: the exact answers above).
    cell_sd: float = 0.0


def _offset(spec: SyntheticSpec, seed: int, base: bool) -> float:
    """Zero-mean over the spec's seeds; the base uses the reversed pattern."""
    s = sorted(spec.seeds)
    centred = s.index(seed) - (len(s) - 1) / 2
    return spec.seed_sd * (-centred if base else centred)


def expected(t: MethodTruth, base: float, split: str, budget: int, a: float, noise: float, misspec: float) -> float:
    """The seed-mean behavior the formulas in the module docstring give."""
    lb = math.log(budget)
    cov = base + t.gain * lb - t.noise * noise
    unc = base + t.ratio * t.gain * lb + t.anticipation * a - t.noise * noise - t.misspec * misspec
    return {"covered": cov, "uncovered": unc, "all": a * cov + (1 - a) * unc}[split]


def sample_slope(t: MethodTruth, i: int, seed: int) -> float:
    """The i-th per-sample steering slope of a seed's cell: 10 x gain plus an offset spread over [-0.5, 0.5)."""
    return t.gain * 10 + 0.5 * ((i * 7919 + seed * 31) % 100 / 50.0 - 1.0)


def conditions(spec: SyntheticSpec) -> list[tuple[float, float, float]]:
    """(anticipation, noise, misspec) triples of the grid."""
    if spec.full_grid:
        return [(a, e, p) for a in spec.anticipations for e in spec.noises for p in spec.misspecs]
    a0, e0, p0 = spec.anticipations[0], spec.noises[0], spec.misspecs[0]
    out = [(a, e0, p0) for a in spec.anticipations] + [(a0, e, p0) for e in spec.noises[1:]]
    return out + [(a0, e0, p) for p in spec.misspecs[1:]]


def _row(common: dict[str, Any], split: str, metric: str, value: float, n: int = 64) -> dict[str, Any]:
    return common | {"split": split, "metric": metric, "value": value, "n": n}


def _cell(spec: SyntheticSpec, model: int | str, target: str, method: str, budget: int,
          cond: tuple[float, float, float], seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    a, noise, misspec = cond
    i = spec.models.index(model) if isinstance(model, str) else model
    model = spec.models[i]
    model_config: Any = ({"name": model} | spec.model_configs[i]) if spec.model_configs else model
    scale = spec.model_scale[i] if spec.model_scale else 1.0
    config = {"model": model_config, "target": target, "method": {"name": method}, "budget": budget, "anticipation": a,
              "labeler": {"noise": noise, "misspec": misspec}, "seed": seed}
    run_id = hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    is_base = method == "none"
    t = MethodTruth(0.0, ratio=0.0, kl=0.0, fluency=0.0, drift=0.0, cost_per_label=0.0) if is_base \
        else spec.methods[method]
    if scale != 1.0:
        t = replace(t, gain=t.gain * scale, kl=t.kl * scale)
    cost = budget * t.cost_per_label
    common = {"run_id": run_id, "model": model, "method": method, "target": target, "target_version": "1",
              "budget": budget, "feedback_cost": cost, "labels_used": budget, "anticipation": a,
              "labeler_noise": noise, "labeler_misspec": misspec, "seed": seed}
    off = _offset(spec, seed, is_base)
    lb = 0.0 if is_base else math.log(budget)
    rows = []
    one = target in spec.one_context
    rng = random.Random(run_id)
    for split in ("covered", "uncovered", "all"):
        if (split == "covered" and a == 0.0 and not one) or (split == "uncovered" and (a == 1.0 or one)):
            continue  # nothing covered / nothing left uncovered
        truth_split = "covered" if one else split
        value = spec.base if is_base else expected(t, spec.base, truth_split, budget, a, noise, misspec)
        jitter = rng.gauss(0.0, spec.cell_sd) if spec.cell_sd else 0.0
        rows.append(_row(common, split, spec.behavior_metric, min(1.0, max(0.0, value + off + jitter))))
        if spec.behavior_metric == "behavior":
            rows.append(_row(common, split, "fluency", BASE_FLUENCY - t.fluency * lb))
    rows.append(_row(common, "neutral", "kl", t.kl * lb * (1.0 + off)))  # zero-mean offset: exact mean
    rows.append(_row(common, "neutral", "perplexity", 10.0 + t.kl * lb))
    for other in spec.targets:
        if other != target:
            rows.append(_row(common, "all", f"drift:{other}", t.drift * lb))
    samples = []
    if t.steering:
        rows.append(_row(common, "all", "anti_steerable", t.anti_steerable))
        for q, z in (("slope_p10", -1.0), ("slope_p50", 0.0), ("slope_p90", 1.0)):
            rows.append(_row(common, "all", q, t.gain * 10 + z * 0.5))
        for i in range(spec.samples):
            samples.append({"kind": "slope", "prompt_id": f"p{i}", "context": f"ctx{i % 4}",
                            "slope": sample_slope(t, i, seed)})
    cell = {"run_id": run_id, "status": "ok", "error": None, "config": config,
            "provenance": {"git_sha": "0000000", "versions": {"analysis": "synthetic"}}, "rows": rows}
    return cell, samples


def write_results(results_dir: str | Path, spec: SyntheticSpec | None = None) -> list[str]:
    """Write a synthetic results store; returns the run ids written."""
    spec = spec or SyntheticSpec()
    cells_dir = Path(results_dir) / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    models = range(len(spec.models))  # by position: two models may share a display name
    jobs = [(m, t, meth, b, c, s) for m in models for t in spec.targets for meth in spec.methods
            for b in spec.budgets for c in conditions(spec) for s in spec.seeds]
    if spec.with_base:
        jobs += [(m, t, "none", 0, c, s) for m in models for t in spec.targets for c in conditions(spec)
                 for s in spec.seeds]
    ids = []
    for job in jobs:
        cell, samples = _cell(spec, *job)
        (cells_dir / f"{cell['run_id']}.json").write_text(json.dumps(cell), encoding="utf-8")
        if samples:
            lines = [json.dumps({"kind": "completion", "text": "..."})] + [json.dumps(s) for s in samples]
            (cells_dir / f"{cell['run_id']}.samples.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        ids.append(cell["run_id"])
    return ids
