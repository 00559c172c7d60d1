"""Headline numbers, the headline table and the findings sentences, all generated from the derived metrics.

Nothing here is hard-coded about which method should win: every sentence is a template filled from the numbers, and
a "win" is called clear only when the 95% CIs of the best and the runner-up do not overlap, never on one seed. A
generalization ratio is shown only over a covered gain whose CI excludes 0; a target without an uncovered split is
said to have none, and no question about uncovered contexts is asked of it.

    stats = Stats(agg=..., cost=..., gen=..., slopes=..., side=..., ref=ref, threshold=0.8)
    records = headline(stats); lines = finding_lines(records, winners(records, 0.8), 0.8)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis import metrics as M
from analysis.table import BASE_METHOD

SPLITS = ("covered", "uncovered", "all")
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


def _pick(frame: pd.DataFrame, **eq: Any) -> Rec | None:
    """The one row of `frame` matching every `column=value`, as a dict (None if absent)."""
    mask = np.ones(len(frame), dtype=bool)
    for col, value in eq.items():
        mask &= frame[col].to_numpy() == value
    rows = frame[mask]
    return None if rows.empty else rows.iloc[0].to_dict()


def _ci(row: Rec | None, col: str, lo: str | None = None, hi: str | None = None) -> Rec | None:
    if row is None:
        return None
    return {"mean": row[col], "lo": row[lo or f"{col}_lo"], "hi": row[hi or f"{col}_hi"], "n": int(row["n"])}


def headline(s: Stats) -> list[Rec]:
    """One record per (model, target, method) at the reference condition and the method's largest budget there."""
    agg = M.at_reference(s.agg, s.ref)
    beh = agg[agg["metric"] == "behavior"]
    records = []
    for (model, model_id, target, method), grp in beh.groupby(["model", "model_id", "target", "method"], sort=True):
        if method == BASE_METHOD:
            continue
        budget = int(grp["budget"].max())
        key = {"model": model, "model_id": model_id, "target": target, "method": method}
        at = key | {"budget": budget}
        base = beh[(beh["model_id"] == model_id) & (beh["target"] == target) & (beh["method"] == BASE_METHOD)]
        rec: Rec = key | {"measure": s.measures.get((model, target), "behavior"),
                          "missing_split": dict(zip(("split", "why"), s.missing.get((model, target), ()))) or None,
                          "budget": budget, "feedback_cost": float(grp.loc[grp["budget"] == budget,
                                                                         "feedback_cost"].mean())}
        rec["behavior"] = {sp: _ci(_pick(grp, budget=budget, split=sp), "mean", "ci_lo", "ci_hi") for sp in SPLITS}
        rec["base_behavior"] = {sp: (float(base.loc[base["split"] == sp, "mean"].mean())
                                     if (base["split"] == sp).any() else None) for sp in SPLITS}
        rec["n"] = min((b["n"] for b in rec["behavior"].values() if b), default=0)
        g = _pick(M.at_reference(s.gen, s.ref), **at)
        rec["generalization"] = {c: _ci(g, c) for c in ("ratio", "gain_covered", "gain_uncovered")}
        rec["generalization"]["covered_gain_clear"] = bool(g is not None and g["covered_gain_clear"])
        cost_at = M.at_reference(s.cost, s.ref)
        rec["cost_to_threshold"] = {}
        for sp in ("covered", "uncovered"):
            c = _pick(cost_at, split=sp, **key)
            rec["cost_to_threshold"][sp] = None if c is None else {k: c[k] for k in (
                "budget", "budget_lo", "budget_hi", "labels", "feedback_cost", "cost_lo", "cost_hi", "reached",
                "max_budget", "n")}
        rec["slopes"] = {}
        for dial, frame in s.slopes.items():
            f = M.at_reference(frame, s.ref, skip=dial)
            per = {}
            for sp in SPLITS:
                r = _pick(f, split=sp, **at)
                per[sp] = None if r is None else _ci(r, "slope") | {"x_min": r["x_min"], "x_max": r["x_max"]}
            rec["slopes"][dial] = per
        side = _pick(M.at_reference(s.side, s.ref), **at)
        rec["side_effects"] = {c: _ci(side, c) for c in ("gain", "kl", "fluency_loss", "drift", "kl_per_pt",
                                                          "fluency_loss_per_pt", "drift_per_pt")}
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


def _ratio(r: Rec) -> str:
    """The generalization ratio, or why there is none."""
    if _absent([r]) is not None:
        return f"n/a: no {_absent([r])} split"
    if not r["generalization"].get("covered_gain_clear"):
        return "n/a: no covered gain" + (" (n=1)" if r["n"] == 1 else "")
    return _fmt(r["generalization"]["ratio"])


def _facet_notes(r: Rec) -> list[str]:
    """What a reader of this facet's numbers must know first: which measure is behavior, and a split it lacks."""
    lines = []
    if r.get("measure") == "ab_propensity":
        lines.append("Behavior is `ab_propensity` here (mean p(matching answer) / (p(matching) + p(not matching)) "
                     "in the data set's A/B form): this target has no sampled `behavior` rows.")
    if r.get("missing_split"):
        lines.append(r["missing_split"]["why"][0].upper() + r["missing_split"]["why"][1:] + ".")
    return lines + ([""] if lines else [])


def _facet_title(model: str, target: str, several_models: bool) -> str:
    return f"{target} ({model})" if several_models else target


def headline_tables(records: list[Rec], threshold: float) -> list[str]:
    several = len({r["model"] for r in records}) > 1
    lines = ["## Headline", "", "Mean [95% CI over seeds] at the reference condition, each method at its largest "
             "budget; n = seeds. Costs are in feedback cost units (one comparison = 1).", ""]
    for (model, target), recs in _by_facet(records):
        base = recs[0]["base_behavior"]
        lines += [f"### {_facet_title(model, target, several)}", ""] + _facet_notes(recs[0])
        lines += [f"| method | budget (cost) | behavior, covered | behavior, uncovered | generalization ratio | "
                  f"cost to {threshold:g}, covered | cost to {threshold:g}, uncovered | KL per point | n |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
                  f"| none (base) | - | {_num(base['covered'])} | {_num(base['uncovered'])} | - | - | - | - | - |"]
        for r in recs:
            lines.append(
                f"| {r['method']} | {r['budget']} ({_num(r['feedback_cost'], 'cost')}) | "
                f"{_fmt(r['behavior']['covered'])} | {_fmt(r['behavior']['uncovered'])} | "
                f"{_ratio(r)} | {_cost(r['cost_to_threshold']['covered'])} | "
                f"{_cost(r['cost_to_threshold']['uncovered'])} | {_fmt(r['side_effects']['kl_per_pt'], 'small')} | "
                f"{r['n']} |")
        lines.append("")
    return lines


def _by_facet(records: list[Rec]) -> list[tuple[tuple[str, str], list[Rec]]]:
    keys = sorted({(r["model"], r["target"]) for r in records})
    return [(k, [r for r in records if (r["model"], r["target"]) == k]) for k in keys]


def _get(rec: Rec, *path: str) -> Any:
    for p in path:
        rec = rec.get(p) if isinstance(rec, dict) else None
    return rec


def _winner(recs: list[Rec], value: Callable[[Rec], Rec | None], higher: bool) -> Rec | None:
    """Best method by `value` (a {mean, lo, hi} dict); clear when its CI does not overlap the runner-up's."""
    scored = [(v, r["method"]) for r in recs if (v := value(r)) and v["mean"] is not None
              and not math.isnan(v["mean"])]
    if not scored:
        return None
    # Rounded so that float noise does not decide a tie; ties go to the alphabetically first method.
    scored.sort(key=lambda vm: (round(-vm[0]["mean"] if higher else vm[0]["mean"], 12), vm[1]))
    best, method = scored[0]
    # One seed has no CI, so nothing it shows is a clear win (its collapsed "CI" would never overlap another's).
    single = any(v.get("n", 2) < 2 for v, _ in scored[:2])
    out = {"method": method, "value": best["mean"], "lo": best["lo"], "hi": best["hi"], "runner_up": None,
           "clear": not single, "single_seed": single}
    if len(scored) > 1:
        second, m2 = scored[1]
        out["runner_up"], out["runner_up_value"] = m2, second["mean"]
        out["tied"] = round(best["mean"], 12) == round(second["mean"], 12)
        apart = bool(best["lo"] > second["hi"]) if higher else bool(best["hi"] < second["lo"])
        out["clear"] = apart and not single
    return out


def _cost_ci(r: Rec, split: str) -> Rec | None:
    c = r["cost_to_threshold"].get(split)
    if not c or not c["reached"]:
        return None
    return {"mean": c["feedback_cost"], "lo": c["cost_lo"], "hi": c["cost_hi"], "n": c["n"]}


QUESTIONS: list[tuple[str, str, Callable[[Rec], Rec | None], bool]] = [
    ("cheapest to threshold", "covered", lambda r: _cost_ci(r, "covered"), False),
    ("cheapest to threshold", "uncovered", lambda r: _cost_ci(r, "uncovered"), False),
    ("highest behavior at largest budget", "covered", lambda r: _get(r, "behavior", "covered"), True),
    ("highest behavior at largest budget", "uncovered", lambda r: _get(r, "behavior", "uncovered"), True),
    ("best generalization ratio", "uncovered/covered", lambda r: _get(r, "generalization", "ratio"), True),
    ("lowest KL per point gained", "neutral", lambda r: _get(r, "side_effects", "kl_per_pt"), False),
    ("most robust to labeler noise", "all", lambda r: _get(r, "slopes", "labeler_noise", "all"), True),
    ("most robust to labeler misspecification", "uncovered",
     lambda r: _get(r, "slopes", "labeler_misspec", "uncovered"), True),
]


def _absent(recs: list[Rec]) -> str | None:
    """The split this facet has no contexts in (a target without contexts: uncovered), if any."""
    return (recs[0].get("missing_split") or {}).get("split")


def winners(records: list[Rec], threshold: float) -> list[Rec]:
    out = []
    for (model, target), recs in _by_facet(records):
        absent = _absent(recs)
        for question, split, value, higher in QUESTIONS:
            if absent is not None and absent in split.split("/"):  # a question about contexts it does not have
                continue
            w = _winner(recs, value, higher)
            out.append({"model": model, "target": target, "question": question, "split": split,
                        "threshold": threshold if question.startswith("cheapest") else None} | (w or {"method": None}))
    return out


def _trend(ci: Rec | None, what: str, unit: str) -> str:
    if ci is None:
        return f"{what}: not measured (a single value of {unit} at this budget)"
    rng = f"{unit} {ci['x_min']:g} to {ci['x_max']:g}"
    if abs(ci["mean"]) <= TOL and abs(ci["lo"]) <= TOL and abs(ci["hi"]) <= TOL:
        return f"{what} does not change with {unit} ({rng})"
    if ci["n"] == 1:
        verb = "appears to rise" if ci["mean"] > 0 else "appears to fall"
        return f"{what} {verb} by {_num(abs(ci['mean']))} per unit of {unit} (single seed, no CI; {rng})"
    if ci["lo"] > TOL:
        verb = "rises"
    elif ci["hi"] < -TOL:
        verb = "falls"
    else:
        return f"{what} shows no clear change with {unit} (slope {_fmt(ci, 'signed')}, CI spans 0; {rng})"
    return f"{what} {verb} with {unit}: slope {_fmt(ci, 'signed')} per unit ({rng})"


def _method_sentences(r: Rec, threshold: float) -> list[str]:
    m = r["method"]
    b, base = r["behavior"], r["base_behavior"]
    parts = []
    absent = _absent([r])
    present = [sp for sp in ("covered", "uncovered") if sp != absent]
    for sp in present:
        c = r["cost_to_threshold"].get(sp)
        if c is None:
            parts.append(f"has no {sp} contexts at this condition")
            continue
        if c["reached"]:
            parts.append(f"reaches {threshold:g} on {sp} contexts with {_num(c['labels'], 'cost')} labels "
                         f"(feedback cost {_cost(c)})")
        else:
            parts.append(f"does not reach {threshold:g} on {sp} contexts within {_num(c['max_budget'], 'cost')} "
                         "labels")
        if (base.get(sp) or 0.0) >= threshold:  # then the threshold measures nothing the feedback bought
            parts[-1] += f" (the base model already scores {_num(base[sp])} there)"
    out = [f"- **{m}** {'; it '.join(parts)}."]
    if absent is None:
        text = (f"At its largest budget ({r['budget']} labels) behavior is {_fmt(b['covered'])} on covered vs "
                f"{_fmt(b['uncovered'])} on uncovered contexts (base {_num(base['covered'])} / "
                f"{_num(base['uncovered'])})")
        if r["generalization"].get("covered_gain_clear"):
            text += f"; the uncovered gain is {_fmt(r['generalization']['ratio'])} of the covered gain"
        elif r["n"] == 1:  # a ratio over a covered gain that may be zero is noise over noise
            text += "; no generalization ratio (one seed cannot show a covered gain above zero)"
        else:
            text += "; no generalization ratio (no covered gain: its CI does not exclude 0)"
    else:
        sp = present[0]
        text = (f"At its largest budget ({r['budget']} labels) behavior is {_fmt(b[sp])} on {sp} contexts "
                f"(base {_num(base[sp])}; no {absent} contexts)")
    out.append(f"  {text}.")
    sl = r["slopes"]
    if absent is None:
        out.append("  " + _trend(_get(sl, "anticipation", "all"), "Behavior on all test contexts", "anticipation")
                   + "; " + _trend(_get(sl, "anticipation", "uncovered"), "on uncovered contexts it", "anticipation")
                   + ".")
    misspec = "" if absent == "uncovered" else "; " + _trend(_get(sl, "labeler_misspec", "uncovered"),
                                                              "on uncovered contexts it", "labeler misspecification")
    out.append("  " + _trend(_get(sl, "labeler_noise", "all"), "Behavior on all test contexts", "labeler noise")
               + misspec + ".")
    se = r["side_effects"]
    if se["kl_per_pt"] is None or se["kl_per_pt"]["mean"] is None or math.isnan(se["kl_per_pt"]["mean"]):
        out.append(f"  Side-effect cost per point is undefined (behavior gain on all test contexts "
                   f"{_fmt(se['gain'])}, below the minimum or without a base).")
    else:
        out.append(f"  Side effects per percentage point of behavior gained: KL {_fmt(se['kl_per_pt'], 'small')}, "
                   f"fluency loss {_fmt(se['fluency_loss_per_pt'], 'small')}, mean |drift| "
                   f"{_fmt(se['drift_per_pt'], 'small')}.")
    return out


def winner_line(w: Rec, threshold: float) -> str:
    """One bullet: which method wins on one question, by how much, and whether the CIs separate it."""
    label = f"{w['question']} ({w['split']}" + (f", {threshold:g})" if w["threshold"] else ")")
    if w["method"] is None:
        what = "no method reaches it" if w["question"].startswith("cheapest") else "not measured"
        return f"- {label}: {what}."
    kind = "cost" if w["question"].startswith("cheapest") else "small" if "KL" in w["question"] else "rate"
    value = _num(w["value"], kind)
    if w["runner_up"] is None:
        only = "reaching it" if w["question"].startswith("cheapest") else "measured"
        return f"- {label}: {w['method']} ({value}), the only method {only}."
    if w["tied"]:
        return f"- {label}: {w['method']} and {w['runner_up']} tie ({value})."
    verdict = "clear" if w["clear"] else ("single seed, no CI: not a clear win" if w.get("single_seed")
                                          else "CIs overlap, not a clear win")
    return (f"- {label}: {w['method']} ({value}) ahead of {w['runner_up']} ({_num(w['runner_up_value'], kind)}); "
            f"{verdict}.")


GLANCE = (("cheapest to threshold", "covered"), ("cheapest to threshold", "uncovered"),
          ("highest behavior at largest budget", "uncovered"))


def glance_lines(records: list[Rec], wins: list[Rec], threshold: float) -> list[str]:
    """Per model and target, the answers to the study's two questions (feedback to the threshold; behavior where
    feedback did not reach), for the top of the report beside its first figure."""
    several = len({r["model"] for r in records}) > 1
    lines = []
    for (model, target), _ in _by_facet(records):
        picked = [w for q in GLANCE for w in wins
                  if (w["model"], w["target"], w["question"], w["split"]) == (model, target, *q)]
        if picked:
            lines += [f"**{_facet_title(model, target, several)}**", ""] + [winner_line(w, threshold) for w in picked]
            lines.append("")
    return lines


def finding_lines(records: list[Rec], wins: list[Rec], threshold: float) -> list[str]:
    several = len({r["model"] for r in records}) > 1
    lines = ["## Findings", "", "Generated from the numbers above; a win is called clear only when the 95% CIs of the "
             "best and the runner-up do not overlap, and never on a single seed. A slope against anticipation on "
             "uncovered contexts compares different sets of contexts (more anticipation leaves fewer, and other, "
             "contexts uncovered).", ""]
    for (model, target), recs in _by_facet(records):
        lines += [f"### {_facet_title(model, target, several)}", ""] + _facet_notes(recs[0])
        for r in recs:
            lines += _method_sentences(r, threshold)
        lines += ["", "Which method wins where:", ""]
        lines += [winner_line(w, threshold) for w in wins if (w["model"], w["target"]) == (model, target)]
        lines.append("")
    return lines
