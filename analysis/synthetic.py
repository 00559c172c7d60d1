"""Synthetic results stores whose answers are known in closed form, for the tests and the report benchmark.

For a method with truth (g, r, k, nz, ms) at budget b, anticipation a, labeler noise e and misspecification p:

    covered   = base + g * ln(b)             - nz * e
    uncovered = base + r * g * ln(b) + k * a - nz * e - ms * p
    all       = a * covered + (1 - a) * uncovered
    kl = kl_c * ln(b);  fluency = 0.98 - fl * ln(b);  drift:<other> = dr * ln(b)

The base model ("none") scores `base` on every split. `cell_sd` adds independent noise to every behavior value. Each
seed adds a zero-mean offset (so seed means are exact),
with a different pattern for the base than for methods, so CIs are not degenerate. A model's `model_scale` multiplies
g and kl_c (`method_scale`, the named methods' g only); a target in `one_context` has no uncovered split and
`all` = covered at every anticipation.

Organism draws (`draws`): each cell has a `draw` field (config and rows) beside its seed, and the model's identity
does not change with it. `sd_draw` adds a random organism effect, N(0, sd_draw) per (model, target, draw) shared by
every method and the base, plus N(0, sd_draw_method) per (model, target, draw, method): the organism is a random
effect, so the known answer is the formula above (the effects' mean, 0). `noise_seed` redraws every random effect and
cell noise: one spec, many independent studies. `row_draw=False` writes an older store (no `draw` or `coverage` row
fields, no `draw` in the config).

With `held_out` the uncovered split is a fixed set of held-out contexts (share `held_out`) that stays uncovered at
anticipation 1 too: `all` = (1 - h) a covered + (1 - (1 - h) a) uncovered. `ceiling` names a method run once per
(model, target, draw, seed) with coverage "ceiling" at the largest budget, scoring `ceiling_value` on every split.
Every behavior row comes with `desired` (behavior x fluency), the decision-word split `behavior_domain`,
`behavior_shared`, `shared_share` (a method's uncovered gain G sits (1 - sh) G on domain words and the rest on the
shared word, with share s = 0.3 of samples: s shared + (1 - s) domain = behavior), and for a target named "refusal"
`refusal` and `over_refusal`.

    spec = SyntheticSpec(anticipations=(0.25, 0.5, 1.0), draws=(0, 1, 2), seeds=(0, 1), sd_draw=0.05, held_out=0.25)
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
    shared: float = 0.5  # sh: share of the uncovered gain carried by the shared decision word


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
    method_scale: tuple[dict[str, float], ...] = ()  # optional, one per model: multiplies the named methods' gains
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
    draws: tuple[int, ...] = (0,)  # organism draws (pretraining seeds)
    sd_draw: float = 0.0  # random organism effect shared by every method of a (model, target, draw)
    sd_draw_method: float = 0.0  # random organism x method effect
    noise_seed: int = 0  # redraws every random effect and cell noise
    row_draw: bool = True  # False: an older store, with no draw or coverage fields
    held_out: float = 0.0  # share of contexts held out at every anticipation (0: none, uncovered = 1 - a)
    ceiling: str | None = None  # a method run at coverage "ceiling"
    ceiling_value: float = 0.9


def _offset(spec: SyntheticSpec, seed: int, base: bool) -> float:
    """Zero-mean over the spec's seeds; the base uses the reversed pattern."""
    s = sorted(spec.seeds)
    centred = s.index(seed) - (len(s) - 1) / 2
    return spec.seed_sd * (-centred if base else centred)


def expected(t: MethodTruth, base: float, split: str, budget: int, a: float, noise: float, misspec: float,
             held_out: float = 0.0) -> float:
    """The mean behavior (over seeds and organism draws) the formulas in the module docstring give."""
    lb = math.log(budget)
    cov = base + t.gain * lb - t.noise * noise
    unc = base + t.ratio * t.gain * lb + t.anticipation * a - t.noise * noise - t.misspec * misspec
    share = (1 - held_out) * a if held_out else a  # of the test contexts, the covered ones
    return {"covered": cov, "uncovered": unc, "all": share * cov + (1 - share) * unc}[split]


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


def draw_effect(spec: SyntheticSpec, model: str, target: str, draw: int, method: str) -> float:
    """The organism's random effect on behavior for one method (0 for every draw without `sd_draw`)."""
    if not (spec.sd_draw or spec.sd_draw_method) or not spec.row_draw:
        return 0.0
    shared = random.Random(f"{spec.noise_seed}:{model}:{target}:{draw}").gauss(0.0, 1.0)
    own = random.Random(f"{spec.noise_seed}:{model}:{target}:{draw}:{method}").gauss(0.0, 1.0)
    return spec.sd_draw * shared + spec.sd_draw_method * own


def _row(common: dict[str, Any], split: str, metric: str, value: float, n: int = 64) -> dict[str, Any]:
    return common | {"split": split, "metric": metric, "value": value, "n": n}


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


def _behavior_rows(spec: SyntheticSpec, common: dict[str, Any], t: MethodTruth, target: str, split: str,
                   value: float, fluency: float) -> list[dict[str, Any]]:
    """The behavior row of one split and the metrics that ride with it (fluency, desired, decision words, refusal)."""
    rows = [_row(common, split, spec.behavior_metric, value)]
    if spec.behavior_metric != "behavior":
        return rows
    rows += [_row(common, split, "fluency", fluency), _row(common, split, "desired", value * fluency),
             _row(common, split, "diversity", _clip(0.9 - 0.5 * (value - spec.base)))]
    s, g = 0.3, value - spec.base
    rows += [_row(common, split, "behavior_domain", _clip(spec.base + (1 - t.shared) * g)),
             _row(common, split, "behavior_shared", _clip(spec.base + g * (1 - (1 - s) * (1 - t.shared)) / s)),
             _row(common, split, "shared_share", s)]
    if target == "refusal":
        rows += [_row(common, split, "refusal", _clip(value + 0.1)), _row(common, split, "over_refusal",
                                                                          _clip(0.3 - 0.5 * g))]
    if target == "sycophancy":
        rows += [_row(common, split, "correction", _clip(value + 0.05)), _row(common, split, "over_correction",
                                                                             _clip(0.2 - 0.5 * g))]
    return rows


_KIND = {True: "contrast", False: "compare"}  # the label kind a synthetic method buys (steering: contrast pairs)


def _cell(spec: SyntheticSpec, model: int | str, target: str, method: str, budget: int,
          cond: tuple[float, float, float], seed: int, draw: int = 0,
          coverage: str = "anticipation") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    a, noise, misspec = cond
    i = spec.models.index(model) if isinstance(model, str) else model
    model = spec.models[i]
    model_config: Any = ({"name": model} | spec.model_configs[i]) if spec.model_configs else model
    scale = spec.model_scale[i] if spec.model_scale else 1.0
    config = {"model": model_config, "target": target, "method": {"name": method}, "budget": budget, "anticipation": a,
              "labeler": {"noise": noise, "misspec": misspec}, "seed": seed}
    if spec.row_draw:
        config |= {"draw": draw, "coverage": coverage}
    run_id = hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    is_base = method == "none"
    t = MethodTruth(0.0, ratio=0.0, kl=0.0, fluency=0.0, drift=0.0, cost_per_label=0.0) if is_base \
        else spec.methods[method]
    if scale != 1.0:
        t = replace(t, gain=t.gain * scale, kl=t.kl * scale)
    if spec.method_scale and method in spec.method_scale[i]:
        t = replace(t, gain=t.gain * spec.method_scale[i][method])
    cost = budget * t.cost_per_label
    common = {"run_id": run_id, "model": model, "method": method, "target": target, "target_version": "1",
              "budget": budget, "feedback_cost": cost, "labels_used": budget, "anticipation": a,
              "labeler_noise": noise, "labeler_misspec": misspec, "seed": seed}
    if spec.row_draw:
        common |= {"draw": draw, "coverage": coverage}
    off = _offset(spec, seed, is_base) + draw_effect(spec, model, target, draw, method)
    lb = 0.0 if is_base else math.log(budget)
    rows = []
    one = target in spec.one_context
    rng = random.Random(f"{run_id}:{spec.noise_seed}" if spec.noise_seed else run_id)
    for split in ("covered", "uncovered", "all"):
        if (split == "covered" and a == 0.0 and not one) or (
                split == "uncovered" and ((a == 1.0 and not spec.held_out) or one)):
            continue  # nothing covered / nothing left uncovered
        truth_split = "covered" if one else split
        if coverage == "ceiling":
            value = spec.ceiling_value
        else:
            value = spec.base if is_base else expected(t, spec.base, truth_split, budget, a, noise, misspec,
                                                       spec.held_out)
        jitter = rng.gauss(0.0, spec.cell_sd) if spec.cell_sd else 0.0
        value = _clip(value + off + jitter)
        rows += _behavior_rows(spec, common, t, target, split, value, BASE_FLUENCY - t.fluency * lb)
    rows.append(_row(common, "neutral", "kl", t.kl * lb * (1.0 + off)))  # zero-mean offset: exact mean
    rows.append(_row(common, "neutral", "perplexity", 10.0 + t.kl * lb))
    for other in spec.targets:
        if other != target:
            rows.append(_row(common, "all", f"drift:{other}", t.drift * lb))
    samples = []
    if t.steering:
        rows.append(_row(common, "all", "anti_steerable", t.anti_steerable))
        for split, anti in (("covered", 0.0), ("uncovered", t.anti_steerable)):  # Tan's pattern: wrong way off-support
            rows += [_row(common, split, "anti_steerable_fixed", anti), _row(common, split, "slope_fixed_p50", t.gain)]
        for q, z in (("slope_p10", -1.0), ("slope_p50", 0.0), ("slope_p90", 1.0)):
            rows.append(_row(common, "all", q, t.gain * 10 + z * 0.5))
        for i in range(spec.samples):
            samples.append({"kind": "slope", "prompt_id": f"p{i}", "context": f"ctx{i % 4}",
                            "slope": sample_slope(t, i, seed)})
    cell = {"run_id": run_id, "status": "ok", "error": None, "config": config,
            "provenance": {"git_sha": "0000000", "versions": {"analysis": "synthetic"},
                           "labels": {"counts": {} if is_base else {_KIND[t.steering]: budget},
                                      "costs": {} if is_base else {_KIND[t.steering]: cost}}}, "rows": rows}
    return cell, samples


def write_results(results_dir: str | Path, spec: SyntheticSpec | None = None) -> list[str]:
    """Write a synthetic results store; returns the run ids written."""
    spec = spec or SyntheticSpec()
    cells_dir = Path(results_dir) / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    models = range(len(spec.models))  # by position: two models may share a display name
    draws = spec.draws if spec.row_draw else (0,)
    reps = [(s, d) for d in draws for s in spec.seeds]
    jobs = [(m, t, meth, b, c, s, d) for m in models for t in spec.targets for meth in spec.methods
            for b in spec.budgets for c in conditions(spec) for s, d in reps]
    if spec.with_base:
        jobs += [(m, t, "none", 0, c, s, d) for m in models for t in spec.targets for c in conditions(spec)
                 for s, d in reps]
    ids = []
    for job in jobs:
        ids.append(_write(cells_dir, *_cell(spec, *job)))
    if spec.ceiling is not None:
        top = (spec.anticipations[0], 0.0, 0.0)
        for m in models:
            for t in spec.targets:
                for s, d in reps:
                    ids.append(_write(cells_dir, *_cell(spec, m, t, spec.ceiling, max(spec.budgets), top, s, d,
                                                        "ceiling")))
    return ids


def _write(cells_dir: Path, cell: dict[str, Any], samples: list[dict[str, Any]]) -> str:
    (cells_dir / f"{cell['run_id']}.json").write_text(json.dumps(cell), encoding="utf-8")
    if samples:
        lines = [json.dumps({"kind": "completion", "text": "..."})] + [json.dumps(s) for s in samples]
        (cells_dir / f"{cell['run_id']}.samples.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return cell["run_id"]
