"""Headline numbers, the headline table and the findings sentences, all generated from the derived metrics.

Nothing here is hard-coded about which method should win: every sentence is a template filled from the numbers, and
a "win" is called clear only when a paired test of the best against the runner-up on matched replicates
(`analysis.paired`) rejects equality after Holm's correction over every call in the report, never on one replicate.
Uncovered gains are read absolute and as a share of the headroom the base left, (method - base) / (1 - base); a
generalization ratio is shown only over a covered gain whose CI excludes 0. A target without an uncovered split is
said to have none, and no question about uncovered contexts is asked of it.

    stats = Stats(agg=..., cost=..., gen=..., slopes=..., side=..., ref=ref, threshold=0.8)
    records = headline(stats); lines = finding_lines(records, winners(records, 0.8, PairedTests(...)), 0.8)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis import metrics as M
from analysis.paired import PairedTests
from analysis.stats import ALPHA, holm
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
    fluent_desired: dict[tuple[str, str], str] = field(default_factory=dict)  # (model, target) -> "measured" / ...


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
    return {"mean": row[col], "lo": row[lo or f"{col}_lo"], "hi": row[hi or f"{col}_hi"], "n": int(row["n"])}


def _by_method(frame: pd.DataFrame) -> dict[tuple[str, str, str], list[Rec]]:
    """The frame's rows as dicts, split by (model_id, target, method): each record picks from its own few rows."""
    out: dict[tuple[str, str, str], list[Rec]] = {}
    for r in frame.to_dict("records"):
        out.setdefault((r["model_id"], r["target"], r["method"]), []).append(r)
    return out


def headline(s: Stats) -> list[Rec]:
    """One record per (model, target, method) at the reference condition and the method's largest budget there."""
    agg = M.at_reference(s.agg, s.ref)
    beh = agg[agg["metric"] == "behavior"]
    fds = _by_method(agg[agg["metric"] == "fluent_desired"])
    behs, gens = _by_method(beh), _by_method(M.at_reference(s.gen, s.ref))
    costs, sides = _by_method(M.at_reference(s.cost, s.ref)), _by_method(M.at_reference(s.side, s.ref))
    slopes = {d: _by_method(M.at_reference(f, s.ref, skip=d)) for d, f in s.slopes.items()}
    empty: list[Rec] = []
    records = []
    for (model, model_id, target, method), grp in beh.groupby(["model", "model_id", "target", "method"], sort=True):
        if method == BASE_METHOD:
            continue
        budget = int(grp["budget"].max())
        key = {"model": model, "model_id": model_id, "target": target, "method": method}
        mk = (model_id, target, method)
        base = pd.DataFrame(behs.get((model_id, target, BASE_METHOD), []), columns=["split", "mean"])
        rec: Rec = key | {"measure": s.measures.get((model, target), "behavior"),
                          "missing_split": dict(zip(("split", "why"), s.missing.get((model, target), ()))) or None,
                          "budget": budget, "feedback_cost": float(grp.loc[grp["budget"] == budget,
                                                                         "feedback_cost"].mean())}
        rows = behs[mk]
        rec["behavior"] = {sp: _ci(_pick(rows, budget=budget, split=sp), "mean", "ci_lo", "ci_hi") for sp in SPLITS}
        fd = fds.get(mk, empty)
        rec["fluent_desired"] = {sp: _ci(_pick(fd, budget=budget, split=sp), "mean", "ci_lo", "ci_hi")
                                 for sp in SPLITS} | {"source": s.fluent_desired.get((model, target))}
        rec["base_behavior"] = {sp: (float(base.loc[base["split"] == sp, "mean"].mean())
                                     if (base["split"] == sp).any() else None) for sp in SPLITS}
        rec["n"] = min((b["n"] for b in rec["behavior"].values() if b), default=0)
        g = _pick(gens.get(mk, empty), budget=budget)
        rec["generalization"] = {c: _ci(g, c) for c in ("ratio", "gain_covered", "gain_uncovered",
                                                        "headroom_covered", "headroom_uncovered")}
        rec["generalization"]["covered_gain_clear"] = bool(g is not None and g["covered_gain_clear"])
        rec["cost_to_threshold"] = {}
        for sp in ("covered", "uncovered"):
            c = _pick(costs.get(mk, empty), split=sp)
            rec["cost_to_threshold"][sp] = None if c is None else {k: c[k] for k in (
                "budget", "budget_lo", "budget_hi", "labels", "feedback_cost", "cost_lo", "cost_hi", "reached",
                "max_budget", "n")}
        rec["slopes"] = {}
        for dial, frames in slopes.items():
            f = frames.get(mk, empty)
            per = {}
            for sp in SPLITS:
                r = _pick(f, split=sp, budget=budget)
                per[sp] = None if r is None else _ci(r, "slope") | {"x_min": r["x_min"], "x_max": r["x_max"]}
            rec["slopes"][dial] = per
        side = _pick(sides.get(mk, empty), budget=budget)
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


def _absent_or(r: Rec, split: str, text: str) -> str:
    return f"n/a: no {split} split" if _absent([r]) == split else text


def headline_tables(records: list[Rec], threshold: float) -> list[str]:
    several = len({r["model"] for r in records}) > 1
    lines = ["## Headline", "", "Mean [95% t interval over replicates] at the reference condition, each method at its "
             "largest budget; n = organisms x seeds. Uncovered gain is over the base model, paired by replicate; its "
             "share of headroom is (method - base) / (1 - base). P(fluent and desired) is the rate of samples that "
             "are both fluent and show the behavior. Costs are in feedback cost units (one comparison = 1), "
             "interpolated between budgets.", ""]
    for (model, target), recs in _by_facet(records):
        base = recs[0]["base_behavior"]
        lines += [f"### {_facet_title(model, target, several)}", ""] + _facet_notes(recs[0])
        approx = recs[0].get("fluent_desired", {}).get("source") == "behavior x fluency"
        fd_head = "P(fluent and desired), uncovered" + (" (approx.)" if approx else "")
        lines += [f"| method | budget (cost) | behavior, covered | behavior, uncovered | uncovered gain | "
                  f"share of headroom, uncovered | generalization ratio | {fd_head} | cost to {threshold:g}, covered | "
                  f"cost to {threshold:g}, uncovered | KL per point | n |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
                  f"| none (base) | - | {_num(base['covered'])} | {_num(base['uncovered'])} | - | - | - | - | - | - | - "
                  "| - |"]
        for r in recs:
            g = r["generalization"]
            fd = r.get("fluent_desired", {}).get("uncovered")
            lines.append(
                f"| {r['method']} | {r['budget']} ({_num(r['feedback_cost'], 'cost')}) | "
                f"{_fmt(r['behavior']['covered'])} | {_fmt(r['behavior']['uncovered'])} | "
                f"{_absent_or(r, 'uncovered', _fmt(g.get('gain_uncovered'), 'signed'))} | "
                f"{_absent_or(r, 'uncovered', _fmt(g.get('headroom_uncovered')))} | "
                f"{_ratio(r)} | {_absent_or(r, 'uncovered', _fmt(fd))} | {_cost(r['cost_to_threshold']['covered'])} | "
                f"{_cost(r['cost_to_threshold']['uncovered'])} | {_fmt(r['side_effects']['kl_per_pt'], 'small')} | "
                f"{r['n']} |")
        if approx:
            lines += ["", "P(fluent and desired) is approximated per cell as behavior x fluency: the rows carry no "
                      "measured `fluent_desired`."]
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
    """Best method by `value` (a {mean, lo, hi, n} dict) and its runner-up; `clear` is decided later, by a paired
    test with Holm's correction over the report (`winners`)."""
    scored = [(v, r) for r in recs if (v := value(r)) and v["mean"] is not None and not math.isnan(v["mean"])]
    if not scored:
        return None
    # Rounded so that float noise does not decide a tie; ties go to the alphabetically first method.
    scored.sort(key=lambda vr: (round(-vr[0]["mean"] if higher else vr[0]["mean"], 12), vr[1]["method"]))
    best, rec = scored[0]
    single = any(v.get("n", 2) < 2 for v, _ in scored[:2])  # one replicate: no test, nothing is clear
    out = {"method": rec["method"], "value": best["mean"], "lo": best["lo"], "hi": best["hi"], "runner_up": None,
           "clear": False, "single_seed": single, "_budget": rec["budget"], "_model_id": rec["model_id"]}
    if len(scored) > 1:
        second, rec2 = scored[1]
        out["runner_up"], out["runner_up_value"] = rec2["method"], second["mean"]
        out["_runner_up_budget"] = rec2["budget"]
        out["tied"] = round(best["mean"], 12) == round(second["mean"], 12)
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
    ("largest uncovered gain (share of headroom)", "uncovered",
     lambda r: _get(r, "generalization", "headroom_uncovered"), True),
    ("lowest KL per point gained", "neutral", lambda r: _get(r, "side_effects", "kl_per_pt"), False),
    ("most robust to labeler noise", "all", lambda r: _get(r, "slopes", "labeler_noise", "all"), True),
    ("most robust to labeler misspecification", "uncovered",
     lambda r: _get(r, "slopes", "labeler_misspec", "uncovered"), True),
]


def _absent(recs: list[Rec]) -> str | None:
    """The split this facet has no contexts in (a target without contexts: uncovered), if any."""
    return (recs[0].get("missing_split") or {}).get("split")


def winners(records: list[Rec], threshold: float, tests: PairedTests | None = None) -> list[Rec]:
    """Per model, target and question, the best method and its runner-up. A win is clear only when the paired test
    of the two (on matched replicates, `tests`) has p < 0.05 after Holm's correction over every call in the list,
    with two or more replicates and the difference in the winner's favour; without `tests` nothing is clear."""
    out = []
    for (model, target), recs in _by_facet(records):
        absent = _absent(recs)
        for question, split, value, higher in QUESTIONS:
            if absent is not None and absent in split.split("/"):  # a question about contexts it does not have
                continue
            w = _winner(recs, value, higher)
            out.append({"model": model, "target": target, "question": question, "split": split,
                        "threshold": threshold if question.startswith("cheapest") else None} | (w or {"method": None}))
    calls = [w for w in out if w.get("runner_up") is not None and not w.get("tied")]
    for w in calls:
        diff, p, n = math.nan, math.nan, 0
        if tests is not None and not w["single_seed"]:
            diff, p, n = tests.compare((w["question"], w["split"]), w["_model_id"], w["target"],
                                       (w["method"], w["_budget"]), (w["runner_up"], w["_runner_up_budget"]))
            better = (diff > 0) if next(h for q, sp, _, h in QUESTIONS if q == w["question"]) else (diff < 0)
            p = p if better else (math.nan if math.isnan(p) else 1.0)
        w["difference"], w["p"], w["n_paired"] = diff, p, n
    for w, adj in zip(calls, holm([w["p"] for w in calls])):
        w["p_holm"] = float(adj)
        w["clear"] = bool(adj < ALPHA and w["n_paired"] >= 2 and not w["single_seed"])
    for w in out:
        for k in ("_budget", "_model_id", "_runner_up_budget"):
            w.pop(k, None)
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
                f"{_num(base['uncovered'])}); on uncovered contexts it gains "
                f"{_fmt(r['generalization'].get('gain_uncovered'), 'signed')} over the base, "
                f"{_fmt(r['generalization'].get('headroom_uncovered'))} of the headroom the base left")
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
    p = w.get("p_holm")
    verdict = ("clear" + (f" (paired test, Holm-adjusted p {p:.2g})" if p is not None else "")) if w["clear"] else (
        "single seed, no CI: not a clear win" if w.get("single_seed") else
        "not a clear win (paired test, Holm-adjusted p " + ("n/a" if p is None or math.isnan(p) else f"{p:.2g}")
        + ")")
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
    lines = ["## Findings", "", "Generated from the numbers above; a win is called clear only when a paired test of "
             "the best against the runner-up on matched replicates (same draw, seed and condition) gives p < 0.05 "
             "after Holm's correction over every win called in this report, and never on a single seed. A slope against anticipation on "
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
