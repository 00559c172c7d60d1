"""Headline numbers per model, target and method, and the report's headline tables, from the derived metrics.

One record per (model, target, method) at the reference condition and the method's largest budget there: behavior
beside P(fluent and desired) per split, uncovered gains absolute and as a share of the headroom the ceiling left
(gain / (ceiling - base), where the study ran ceiling cells), the generalization ratio only over a covered gain whose
interval excludes 0, the decision-word split of uncovered behavior (domain words vs the shared word), refusal's
refusal and over-refusal rates, costs to the threshold, slopes and side effects. Every n is organisms x seeds.

    stats = Stats(agg=..., cost=..., gen=..., slopes=..., side=..., ref=ref, threshold=0.8)
    records = headline(stats); lines = headline_tables(records, 0.8)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis import metrics as M
from analysis.table import BASE_METHOD

SPLITS = ("covered", "uncovered", "all")
DECISION = ("behavior_domain", "behavior_shared", "shared_share")
REFUSAL = ("refusal", "over_refusal")
CORRECTION = ("correction", "over_correction")
KIND_SPLITS = {"refusal": REFUSAL, "correction": CORRECTION}  # conditional targets: the per-kind rates
TAN = ("anti_steerable_fixed", "slope_fixed_p50")  # steering reliability on the fixed strength grid
Rec = dict[str, Any]


@dataclass
class Stats:
    agg: pd.DataFrame
    cost: pd.DataFrame
    gen: pd.DataFrame
    slopes: dict[str, pd.DataFrame]
    side: pd.DataFrame
    ref: dict[str, float]
    threshold: float
    measures: dict[tuple[str, str], str] = field(default_factory=dict)  # (model, target) -> metric read as behavior
    missing: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)  # (model, target) -> (split, why)
    desired: dict[tuple[str, str], str] = field(default_factory=dict)  # (model, target) -> "measured" / ...
    # (model, target) -> method -> its organism draws, where the methods of a facet ran on different draws
    unequal_draws: dict[tuple[str, str], dict[str, tuple[int, ...]]] = field(default_factory=dict)
    ceiling: pd.DataFrame | None = None  # aggregate() of the ceiling cells
    domain_gains: pd.DataFrame | None = None  # gains() of behavior_domain


def _pick(frame: pd.DataFrame | list[Rec], **eq: Any) -> Rec | None:
    """The first row of `frame` (a frame, or its rows as dicts) matching every `column=value`, as a dict."""
    if isinstance(frame, list):
        return next((r for r in frame if all(r[c] == v for c, v in eq.items())), None)
    mask = np.ones(len(frame), dtype=bool)
    for col, value in eq.items():
        mask &= frame[col].to_numpy() == value
    rows = frame[mask]
    return None if rows.empty else rows.iloc[0].to_dict()


def _ci(row: Rec | None, col: str, lo: str | None = None, hi: str | None = None) -> Rec | None:
    if row is None:
        return None
    return {"mean": row[col], "lo": row[lo or f"{col}_lo"], "hi": row[hi or f"{col}_hi"], "n": int(row["n"]),
            "organisms": int(row.get("organisms", 1) or 1)}


def _by_method(frame: pd.DataFrame | None) -> dict[tuple[str, str, str], list[Rec]]:
    """The frame's rows as dicts, split by (model_id, target, method): each record picks from its own few rows."""
    out: dict[tuple[str, str, str], list[Rec]] = {}
    for r in ([] if frame is None else frame.to_dict("records")):
        out.setdefault((r["model_id"], r["target"], r["method"]), []).append(r)
    return out


def _per_split(rows: list[Rec], budget: int, splits: tuple[str, ...] = SPLITS) -> dict[str, Rec | None]:
    return {sp: _ci(_pick(rows, budget=budget, split=sp), "mean", "ci_lo", "ci_hi") for sp in splits}


def _base(rows: list[Rec], splits: tuple[str, ...] = SPLITS) -> dict[str, float | None]:
    """The base model's mean per split (its rows at any budget: the base spends none)."""
    return {sp: (float(np.mean([r["mean"] for r in rows if r["split"] == sp]))
                 if any(r["split"] == sp for r in rows) else None) for sp in splits}


def _ceiling(s: Stats, model_id: str, target: str) -> Rec | None:
    """The ceiling cells of a model and target: their method, budget and behavior per split (mean, CI, n)."""
    if s.ceiling is None or s.ceiling.empty:
        return None
    c = s.ceiling[(s.ceiling["model_id"] == model_id) & (s.ceiling["target"] == target)
                  & (s.ceiling["metric"] == "behavior")]
    if c.empty:
        return None
    rows = c.to_dict("records")
    return {"method": " / ".join(sorted(set(c["method"]))), "budget": int(c["budget"].max()),
            "behavior": {sp: _ci(_pick(rows, split=sp), "mean", "ci_lo", "ci_hi") for sp in SPLITS}}


def headline(s: Stats) -> list[Rec]:
    """One record per (model, target, method) at the reference condition and the method's largest budget there."""
    agg = M.at_reference(s.agg, s.ref)
    beh = agg[agg["metric"] == "behavior"]
    by_metric = {m: _by_method(agg[agg["metric"] == m]) for m in ("desired", "diversity", *DECISION, *REFUSAL, *CORRECTION, *TAN)}
    behs, gens = _by_method(beh), _by_method(M.at_reference(s.gen, s.ref))
    costs, sides = _by_method(M.at_reference(s.cost, s.ref)), _by_method(M.at_reference(s.side, s.ref))
    dgains = _by_method(None if s.domain_gains is None else M.at_reference(s.domain_gains, s.ref))
    slopes = {d: _by_method(M.at_reference(f, s.ref, skip=d)) for d, f in s.slopes.items()}
    empty: list[Rec] = []
    records = []
    for (model, model_id, target, method), grp in beh.groupby(["model", "model_id", "target", "method"], sort=True):
        if method == BASE_METHOD:
            continue
        budget = int(grp["budget"].max())
        key = {"model": model, "model_id": model_id, "target": target, "method": method}
        mk, bk = (model_id, target, method), (model_id, target, BASE_METHOD)
        rec: Rec = key | {"measure": s.measures.get((model, target), "behavior"),
                          "missing_split": dict(zip(("split", "why"), s.missing.get((model, target), ()))) or None,
                          "budget": budget, "feedback_cost": float(grp.loc[grp["budget"] == budget,
                                                                         "feedback_cost"].mean())}
        rec["behavior"] = _per_split(behs[mk], budget)
        rec["desired"] = _per_split(by_metric["desired"].get(mk, empty), budget) | {
            "source": s.desired.get((model, target)),
            "base": _base(by_metric["desired"].get(bk, empty))}
        rec["base_behavior"] = _base(behs.get(bk, empty))
        rec["ceiling"] = _ceiling(s, model_id, target)
        have = [b for b in rec["behavior"].values() if b]
        rec["n"] = min((b["n"] for b in have), default=0)
        rec["organisms"] = min((b["organisms"] for b in have), default=0)
        rec["n_text"] = M.n_text(rec["n"], rec["organisms"]) if rec["n"] else "0"
        g = _pick(gens.get(mk, empty), budget=budget)
        rec["generalization"] = {c: _ci(g, c) for c in ("ratio", "gain_covered", "gain_uncovered",
                                                        "headroom_covered", "headroom_uncovered")}
        rec["generalization"]["covered_gain_clear"] = bool(g is not None and g["covered_gain_clear"])
        if any(by_metric[m].get(mk) for m in DECISION):
            rec["decision_words"] = {m: _per_split(by_metric[m].get(mk, empty), budget, ("covered", "uncovered"))
                                     for m in DECISION}
            rec["decision_words"]["base"] = {m: _base(by_metric[m].get(bk, empty)) for m in DECISION}
            rec["decision_words"]["domain_gain"] = {sp: _ci(_pick(dgains.get(mk, empty), budget=budget, split=sp),
                                                            "gain") for sp in ("covered", "uncovered")}
        if by_metric["diversity"].get(mk):
            rec["diversity"] = _per_split(by_metric["diversity"].get(mk, empty), budget) | {
                "base": _base(by_metric["diversity"].get(bk, empty))}
        if any(by_metric[m].get(mk) for m in TAN):
            rec["tan"] = {m: _per_split(by_metric[m].get(mk, empty), budget) for m in TAN}
        for name, metrics in KIND_SPLITS.items():
            if any(by_metric[m].get(mk) for m in metrics):
                rec[name] = {m: _per_split(by_metric[m].get(mk, empty), budget) for m in metrics}
                rec[name]["base"] = {m: _base(by_metric[m].get(bk, empty)) for m in metrics}
        rec["cost_to_threshold"] = {}
        for sp in ("covered", "uncovered"):
            c = _pick(costs.get(mk, empty), split=sp)
            rec["cost_to_threshold"][sp] = None if c is None else {k: c[k] for k in (
                "budget", "budget_lo", "budget_hi", "labels", "feedback_cost", "cost_lo", "cost_hi", "reached",
                "max_budget", "n", "organisms")}
        rec["slopes"] = {}
        for dial, frames in slopes.items():
            f = frames.get(mk, empty)
            # a dial varied at `dial_budgets` only has its slope there: the largest such budget, else this one
            at = budget if any(r["budget"] == budget for r in f) else max((r["budget"] for r in f), default=budget)
            per = {}
            for sp in SPLITS:
                r = _pick(f, split=sp, budget=at)
                per[sp] = None if r is None else _ci(r, "slope") | {"x_min": r["x_min"], "x_max": r["x_max"],
                                                                    "budget": int(at)}
            rec["slopes"][dial] = per
        side = _pick(sides.get(mk, empty), budget=budget)
        rec["side_effects"] = {c: _ci(side, c) for c in ("gain", "kl", "fluency_loss", "drift", "kl_per_pt",
                                                          "fluency_loss_per_pt", "drift_per_pt")}
        rec["draws"] = sorted(int(d) for d in s.unequal_draws.get((model, target), {}).get(method, ()))
        records.append(rec)
    return records


TOL = 1e-9  # below this a slope or CI bound is float noise around zero, not a direction


def _num(x: float | None, kind: str = "rate") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if math.isinf(x):
        return "never"
    x = round(float(x), 12) + 0.0  # no "-0.00" from float noise
    if kind == "cost":
        return f"{x:,.0f}" if abs(x) >= 10 else f"{x:.3g}"
    if kind == "small":
        return f"{x:.2g}"
    if kind == "signed":
        return f"{x:+.2f}"
    return f"{x:.2f}"


def _fmt(ci: Rec | None, kind: str = "rate") -> str:
    if ci is None or ci["mean"] is None or (isinstance(ci["mean"], float) and math.isnan(ci["mean"])):
        return "n/a"
    if ci["n"] == 1:
        return f"{_num(ci['mean'], kind)} (n=1, no CI)"
    return f"{_num(ci['mean'], kind)} [{_num(ci['lo'], kind)}, {_num(ci['hi'], kind)}]"


def _cost(c: Rec | None) -> str:
    if c is None:
        return "n/a"
    if not c["reached"]:
        return "not reached"
    ci = {"mean": c["feedback_cost"], "lo": c["cost_lo"], "hi": c["cost_hi"], "n": c["n"]}
    return _fmt(ci, "cost")


def _absent(recs: list[Rec]) -> str | None:
    """The split this facet has no contexts in (a target without contexts: uncovered), if any."""
    return (recs[0].get("missing_split") or {}).get("split")


def _absent_or(r: Rec, split: str, text: str) -> str:
    return f"n/a: no {split} split" if _absent([r]) == split else text


def _ratio(r: Rec) -> str:
    """The generalization ratio, or why there is none."""
    if _absent([r]) is not None:
        return f"n/a: no {_absent([r])} split"
    if not r["generalization"].get("covered_gain_clear"):
        return "n/a: no covered gain" + (" (n=1)" if r["n"] == 1 else "")
    return _fmt(r["generalization"]["ratio"])


def _headroom(r: Rec) -> str:
    if r.get("ceiling") is None:
        return "n/a: no ceiling"
    return _absent_or(r, "uncovered", _fmt(r["generalization"].get("headroom_uncovered")))


def _facet_notes(r: Rec, unequal: dict[str, tuple[int, ...]] | None = None) -> list[str]:
    """What a reader of this facet's numbers must know first: which measure is behavior, a split it lacks, and
    methods that ran on different organism draws."""
    lines = []
    if r.get("measure") == "ab_propensity":
        lines.append("Behavior is `ab_propensity` here (mean p(matching answer) / (p(matching) + p(not matching)) "
                     "in the data set's A/B form): this target has no sampled `behavior` rows.")
    if r.get("missing_split"):
        lines.append(r["missing_split"]["why"][0].upper() + r["missing_split"]["why"][1:] + ".")
    if unequal:
        lines.append("**Unequal organism draws:** the methods here did not all run on the same draws ("
                     + "; ".join(f"{m}: {', '.join(map(str, d))}" for m, d in sorted(unequal.items()))
                     + "); each interval is over its own method's draws, and paired comparisons use the draws both "
                     "methods share.")
    return lines + ([""] if lines else [])


def _facet_title(model: str, target: str, several_models: bool) -> str:
    return f"{target} ({model})" if several_models else target


def _by_facet(records: list[Rec]) -> list[tuple[tuple[str, str], list[Rec]]]:
    keys = sorted({(r["model"], r["target"]) for r in records})
    return [(k, [r for r in records if (r["model"], r["target"]) == k]) for k in keys]


def _get(rec: Rec, *path: str) -> Any:
    for p in path:
        rec = rec.get(p) if isinstance(rec, dict) else None
    return rec


def headline_tables(records: list[Rec], threshold: float,
                    unequal: dict[tuple[str, str], dict[str, tuple[int, ...]]] | None = None) -> list[str]:
    several = len({r["model"] for r in records}) > 1
    lines = ["## Headline", "", "Mean [95% t interval] at the reference condition, each method at its largest budget; "
             "n = organisms x seeds (the interval is over organism draws, each the mean of its seeds, where there are "
             "several; else over seeds). Desired = P(fluent and desired), the share of all samples that are fluent "
             "and show the behavior. Uncovered gain is over the base model, paired by draw and seed; its share of "
             "headroom is gain / (ceiling - base), the ceiling being the cells trained on oracle labels from every "
             "context (n/a where the study ran none). The generalization ratio (uncovered / covered gain) is shown "
             "only where the covered gain's interval excludes 0. Costs are in feedback cost units (one comparison = "
             "1), interpolated between budgets.", ""]
    unequal = unequal or {}
    for (model, target), recs in _by_facet(records):
        r0 = recs[0]
        base, fdb = r0["base_behavior"], r0["desired"]["base"]
        lines += [f"### {_facet_title(model, target, several)}", ""] + _facet_notes(r0, unequal.get((model, target)))
        approx = " (approx.)" if r0["desired"].get("source") == "behavior x fluency" else ""
        lines += [f"| method | budget (cost) | behavior, covered | desired{approx}, covered | behavior, uncovered | "
                  f"desired{approx}, uncovered | uncovered gain | share of headroom, uncovered | generalization ratio "
                  f"| cost to {threshold:g}, covered | cost to {threshold:g}, uncovered | KL per point | "
                  "n (organisms x seeds) |", "| --- " * 13 + "|",
                  f"| none (base) | - | {_num(base['covered'])} | {_num(fdb['covered'])} | {_num(base['uncovered'])} | "
                  f"{_num(fdb['uncovered'])} | - | - | - | - | - | - | - |"]
        ceil = r0.get("ceiling")
        if ceil is not None:
            cb = ceil["behavior"]
            lines.append(f"| ceiling ({_md(ceil['method'])}, all contexts covered) | {ceil['budget']} | "
                         f"{_fmt(cb['covered'])} | - | {_fmt(cb['uncovered'])} | - | - | - | - | - | - | - | "
                         f"{_n(cb['uncovered'] or cb['covered'])} |")
        for r in recs:
            g, fd = r["generalization"], r["desired"]
            lines.append(
                f"| {r['method']} | {r['budget']} ({_num(r['feedback_cost'], 'cost')}) | "
                f"{_fmt(r['behavior']['covered'])} | {_fmt(fd.get('covered'))} | "
                f"{_fmt(r['behavior']['uncovered'])} | {_absent_or(r, 'uncovered', _fmt(fd.get('uncovered')))} | "
                f"{_absent_or(r, 'uncovered', _fmt(g.get('gain_uncovered'), 'signed'))} | {_headroom(r)} | "
                f"{_ratio(r)} | {_cost(r['cost_to_threshold']['covered'])} | "
                f"{_cost(r['cost_to_threshold']['uncovered'])} | {_fmt(r['side_effects']['kl_per_pt'], 'small')} | "
                f"{r['n_text']} |")
        if approx:
            lines += ["", "P(fluent and desired) is approximated per cell as behavior x fluency: the rows carry no "
                      "measured `desired`."]
        lines.append("")
        lines += (_kind_table(recs, "refusal") + _kind_table(recs, "correction") + _decision_table(recs)
                  + _tan_table(recs) + _diversity_table(recs))
    return lines


def _n(ci: Rec | None) -> str:
    return "-" if ci is None else M.n_text(ci["n"], ci.get("organisms", 1))


def _md(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "/")


KIND_TEXT = {
    "refusal": ("Refusal, split by request", "refusal = P(refuse | forbidden), over-refusal = P(refuse | benign)",
                "refusal", "over-refusal"),
    "correction": ("Sycophancy, split by claim",
                   "correction = P(correct | wrong claim), over-correction = P(correct | right claim)",
                   "correction", "over-correction")}


def _kind_table(recs: list[Rec], name: str) -> list[str]:
    """A conditional target's joint rate beside its rates on the two kinds of prompt (refusal: forbidden / benign
    requests; sycophancy: wrong / right claims)."""
    recs = [r for r in recs if r.get(name)]
    if not recs:
        return []
    title, legend, rate, over = KIND_TEXT[name]
    m_rate, m_over = KIND_SPLITS[name]
    base = recs[0][name]["base"]
    lines = [f"{title}: behavior is the joint rate (the product of the desired rates on the two kinds of prompt, so a "
             f"blanket policy scores 0); {legend}.", "",
             f"| method | joint rate, covered | {rate}, covered | {over}, covered | joint rate, uncovered | {rate}, "
             f"uncovered | {over}, uncovered | n (organisms x seeds) |", "| --- " * 8 + "|",
             f"| none (base) | {_num(recs[0]['base_behavior']['covered'])} | {_num(base[m_rate]['covered'])} | "
             f"{_num(base[m_over]['covered'])} | {_num(recs[0]['base_behavior']['uncovered'])} | "
             f"{_num(base[m_rate]['uncovered'])} | {_num(base[m_over]['uncovered'])} | - |"]
    for r in recs:
        f = r[name]
        lines.append(f"| {r['method']} | " + " | ".join(
            f"{_fmt(r['behavior'][sp])} | {_fmt(f[m_rate][sp])} | {_fmt(f[m_over][sp])}"
            for sp in ("covered", "uncovered")) + f" | {r['n_text']} |")
    return lines + [""]


def _diversity_table(recs: list[Rec]) -> list[str]:
    """Output diversity (Kirk et al. 2024): distinct completions per test prompt among the samples drawn."""
    recs = [r for r in recs if r.get("diversity")]
    if not recs:
        return []
    base = recs[0]["diversity"]["base"]
    lines = ["Output diversity (Kirk et al. 2024): the share of distinct completions among the samples drawn per test "
             "prompt (`eval.diversity_samples`).", "",
             "| method | diversity, covered | diversity, uncovered | n (organisms x seeds) |", "| --- " * 4 + "|",
             f"| none (base) | {_num(base['covered'])} | {_num(base['uncovered'])} | - |"]
    for r in recs:
        d = r["diversity"]
        lines.append(f"| {r['method']} | {_fmt(d['covered'])} | {_fmt(d['uncovered'])} | {r['n_text']} |")
    return lines + [""]


def _tan_table(recs: list[Rec]) -> list[str]:
    """Tan et al.'s reliability on the fixed strength grid: the share of test prompts a steering vector moves the wrong
    way (anti-steerable), and the median slope, on covered and held-out contexts."""
    recs = [r for r in recs if r.get("tan")]
    if not recs:
        return []
    lines = ["Steering reliability on a fixed strength grid (Tan et al. 2024; strengths -1..1, whatever strength was "
             "chosen): anti-steerable = share of test prompts whose log-odds of the desired completion fall as the "
             "strength rises; median slope in nats per unit of strength.", "",
             "| method | anti-steerable, covered | anti-steerable, uncovered | median slope, covered | median slope, "
             "uncovered | n (organisms x seeds) |", "| --- " * 6 + "|"]
    for r in recs:
        t = r["tan"]
        lines.append(f"| {r['method']} | {_fmt(t['anti_steerable_fixed']['covered'])} | "
                     f"{_fmt(t['anti_steerable_fixed']['uncovered'])} | {_fmt(t['slope_fixed_p50']['covered'])} | "
                     f"{_fmt(t['slope_fixed_p50']['uncovered'])} | {r['n_text']} |")
    return lines + [""]


def _decision_table(recs: list[Rec]) -> list[str]:
    """Uncovered behavior split by the decision word: a domain's own words vs the behavior's shared word."""
    recs = [r for r in recs if r.get("decision_words") and _absent([r]) != "uncovered"]
    if not recs:
        return []
    b = recs[0]["decision_words"]["base"]
    lines = ["Uncovered behavior by decision word: on a domain's own words (transfer through the representation) vs "
             "the behavior's shared word (one token valid everywhere); shared-word share = the share of fluent "
             "samples whose decision word is the shared one. Domain-word gains are over the base, paired by draw "
             "and seed.", "",
             "| method | domain words, uncovered | domain-word gain, uncovered | domain-word gain, covered | "
             "shared word, uncovered | shared-word share, uncovered | n (organisms x seeds) |", "| --- " * 7 + "|",
             f"| none (base) | {_num(b['behavior_domain']['uncovered'])} | - | - | "
             f"{_num(b['behavior_shared']['uncovered'])} | {_num(b['shared_share']['uncovered'])} | - |"]
    for r in recs:
        d = r["decision_words"]
        lines.append(f"| {r['method']} | {_fmt(d['behavior_domain']['uncovered'])} | "
                     f"{_fmt(d['domain_gain']['uncovered'], 'signed')} | {_fmt(d['domain_gain']['covered'], 'signed')} "
                     f"| {_fmt(d['behavior_shared']['uncovered'])} | {_fmt(d['shared_share']['uncovered'])} | "
                     f"{r['n_text']} |")
    return lines + [""]
