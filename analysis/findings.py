"""Winner calls and the findings sentences, all generated from the headline numbers (`analysis.headline`).

Nothing here is hard-coded about which method should win: every sentence is a template filled from the numbers, and
a "win" is called clear only when a paired test of the best against the runner-up on matched replicates
(`analysis.paired`) rejects equality after Holm's correction over every call in the report, never on one replicate.
Uncovered gains are read absolute and, where the study ran ceiling cells, as a share of the headroom the ceiling
left, gain / (ceiling - base); a generalization ratio is shown only over a covered gain whose CI excludes 0. A target
without an uncovered split is said to have none, and no question about uncovered contexts is asked of it.

    records = headline(Stats(...))     # analysis.headline, re-exported here
    lines = finding_lines(records, winners(records, 0.8, PairedTests(...)), 0.8)
"""

from __future__ import annotations

import math
from collections.abc import Callable

from analysis.headline import (TOL, Rec, Stats, _absent, _by_facet, _cost, _facet_notes, _facet_title,  # noqa: F401
                               _fmt, _get, _num, headline, headline_tables)
from analysis.paired import PairedTests
from analysis.stats import ALPHA, holm


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
           "clear": False, "single_seed": single, "_budget": best.get("budget", rec["budget"]),
           "_model_id": rec["model_id"]}
    if len(scored) > 1:
        second, rec2 = scored[1]
        out["runner_up"], out["runner_up_value"] = rec2["method"], second["mean"]
        out["_runner_up_budget"] = second.get("budget", rec2["budget"])  # a slope's own budget (dial_budgets)
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
    ("largest uncovered gain", "uncovered", lambda r: _get(r, "generalization", "gain_uncovered"), True),
    ("lowest KL per point gained", "neutral", lambda r: _get(r, "side_effects", "kl_per_pt"), False),
    ("most robust to labeler noise", "all", lambda r: _get(r, "slopes", "labeler_noise", "all"), True),
    ("most robust to labeler misspecification", "uncovered",
     lambda r: _get(r, "slopes", "labeler_misspec", "uncovered"), True),
]


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
                f"{_num(base['uncovered'])}); P(fluent and desired) {_fmt(_get(r, 'desired', 'uncovered'))} on "
                f"uncovered contexts; there it gains {_fmt(r['generalization'].get('gain_uncovered'), 'signed')} "
                "over the base")
        if r.get("ceiling") is not None:
            text += f", {_fmt(r['generalization'].get('headroom_uncovered'))} of the headroom the ceiling left"
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


def finding_lines(records: list[Rec], wins: list[Rec], threshold: float, held_out: bool = False,
                  unequal: dict[tuple[str, str], dict[str, tuple[int, ...]]] | None = None) -> list[str]:
    """The findings section; `held_out`: the uncovered contexts are one fixed held-out set at every anticipation."""
    several = len({r["model"] for r in records}) > 1
    contexts = ("The uncovered contexts are one fixed held-out set at every anticipation level, so a slope against "
                "anticipation on them compares like with like." if held_out else
                "A slope against anticipation on uncovered contexts compares different sets of contexts (more "
                "anticipation leaves fewer, and other, contexts uncovered).")
    lines = ["## Findings", "", "Generated from the numbers above; a win is called clear only when a paired test of "
             "the best against the runner-up on matched runs (same organism draw, seed and condition; averaged per "
             "draw where there are several draws, the draw being the unit) gives p < 0.05 after Holm's correction "
             "over every win called in this report, and never on a single run. " + contexts, ""]
    for (model, target), recs in _by_facet(records):
        lines += [f"### {_facet_title(model, target, several)}", ""] + _facet_notes(
            recs[0], (unequal or {}).get((model, target)))
        for r in recs:
            lines += _method_sentences(r, threshold)
        lines += ["", "Which method wins where:", ""]
        lines += [winner_line(w, threshold) for w in wins if (w["model"], w["target"]) == (model, target)]
        lines.append("")
    return lines
