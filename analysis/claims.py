"""The motivating argument's claims, each measured per target and method with an interval, n (organisms x seeds) and
a verdict, for the top of the report and `summary.json["claims"]`.

- (a) `anticipation`: behavior on the fixed held-out contexts (split "uncovered") rises with anticipation: the slope
  of uncovered behavior against anticipation, per method, at the largest budget where the slope was measured (on the
  most anticipation levels; the design asks for >= 4, and a row on fewer says so).
- (b) `labeler_noise`, `labeler_misspec`: it falls with labeler noise, and with misspecification: the same slopes.
- (c) `cost`: each steering method (`steering`, `steering_learned`, any other `steering*`) reaches the threshold on
  uncovered contexts at lower feedback cost than rlhf, and than dpo: ln(cost of steering / cost of the other),
  paired by organism draw and seed (costs interpolated between budgets; a method that never reaches it within its
  largest budget gives a one-sided bound). `sharing`: steering's advantage ln(cost of the other / cost of steering)
  grows with the world's representation-sharing dial: its slope across models whose worlds differ in `sharing`;
  not measured where the study does not vary sharing across models.

Intervals are t intervals over organism draws (each the mean of its seeds) where there are several, else over seeds
(`analysis.calibration`). A verdict reads the interval after the multiplicity correction over every measured row:
Benjamini-Hochberg at q = 0.05 selects R of the m rows, and every interval is drawn at the false-coverage-rate
adjusted level 1 - max(R, 1) q / m (Benjamini & Yekutieli 2005), which excludes 0 exactly for the selected rows.
**supported**: the interval excludes 0 in the claimed direction; **contradicted**: in the other; **inconclusive**
otherwise (always on one run); **not measured** where the table cannot say. When no claim is true, the chance that a
report shows any verdict but inconclusive stays at q (BH controls the family-wise rate under the global null).

    rows = measure_claims(stats, tests, sharing={"organism:ab12...": 0.4})   # corrected, with verdicts
    lines = claim_lines(rows, threshold=0.8)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from analysis import metrics as M
from analysis.headline import Stats, _md, _num
from analysis.paired import PairedTests
from analysis.stats import ALPHA, LEVEL, t_crit, t_pvalue

TOL = 1e-9
MIN_LEVELS = 4  # anticipation levels the design asks for
SLOPE_CLAIMS = (("anticipation", "behavior on held-out contexts rises with anticipation", 1.0),
                ("labeler_noise", "behavior on held-out contexts falls with labeler noise", -1.0),
                ("labeler_misspec", "behavior on held-out contexts falls with labeler misspecification", -1.0))
STEERING = ("steering", "steering_learned")
RIVALS = ("rlhf", "dpo")
ORDER = ("anticipation", "labeler_noise", "labeler_misspec", "cost", "sharing")
Claim = dict[str, Any]


def _claim(cid: str, text: str, model: str, target: str, method: str, direction: float,
           effect: float | None = None, se: float = math.nan, units: int = 0, n: int = 0, organisms: int = 0,
           note: str = "", bound: str | None = None) -> Claim:
    """One row; `bound` "upper" (the effect is at most `effect`: the interval runs from -inf, which summary.json
    writes as null) or "lower" (at least: to +inf) for a one-sided bound; `direction` +1 where the claim is a rise."""
    return {"claim_id": cid, "claim": text, "model": model, "target": target, "method": method, "effect": effect,
            "se": se, "df": max(units - 1, 0), "n": int(n), "organisms": int(organisms),
            "n_text": M.n_text(n, organisms) if n else "0", "direction": direction, "bound": bound, "note": note,
            "lo": None, "hi": None, "level": None, "p": None,
            "verdict": "not measured" if effect is None else "inconclusive"}


def _p(c: Claim) -> float:
    """Two-sided p of the row's t statistic (for a bound: only evidence on its closed side counts); NaN if none."""
    e, se, df = c["effect"], c["se"], c["df"]
    if e is None or df < 1 or not (math.isfinite(e) and math.isfinite(se)):
        return math.nan
    if se <= TOL:  # no spread: float noise around an exact value, not a t statistic (0/0 gave any p at all)
        return 1.0 if abs(e) <= TOL else 0.0
    t = e / se
    if (c["bound"] == "upper" and t >= 0) or (c["bound"] == "lower" and t <= 0):
        return 1.0
    return float(t_pvalue(t, df))


def correct(claims: list[Claim], q: float = ALPHA) -> list[Claim]:
    """Benjamini-Hochberg over the measured rows, intervals at the FCR-adjusted level, verdicts from them."""
    measured = [c for c in claims if c["effect"] is not None]
    p = np.array([_p(c) for c in measured])
    m = len(measured)
    ranked = np.sort(np.nan_to_num(p, nan=1.0))
    passing = np.flatnonzero(ranked <= q * np.arange(1, m + 1) / max(m, 1))
    selected = int(passing[-1] + 1) if passing.size else 0
    level = 1.0 - max(selected, 1) * q / max(m, 1)
    for c, pv in zip(measured, p):
        c["p"], c["level"] = (None if math.isnan(pv) else float(pv)), level
        e, se = c["effect"], c["se"]
        if c["df"] < 1 or not math.isfinite(se):  # one run, or no standard error: no interval
            continue
        half = t_crit(c["df"], level) * se
        lo, hi = e - half, e + half
        lo, hi = (-math.inf, hi) if c["bound"] == "upper" else (lo, math.inf) if c["bound"] == "lower" else (lo, hi)
        c["lo"], c["hi"] = lo, hi
        s_lo, s_hi = (lo, hi) if c["direction"] > 0 else (-hi, -lo)
        c["verdict"] = "supported" if s_lo > TOL else "contradicted" if s_hi < -TOL else "inconclusive"
    return claims


def _rows_by(frame: pd.DataFrame, keys: list[str]) -> dict[tuple, list[dict[str, Any]]]:
    """The frame's rows as dicts, grouped by `keys` (in the frame's order)."""
    out: dict[tuple, list[dict[str, Any]]] = {}
    for r in frame.to_dict("records"):
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    return out


def _slope_claims(s: Stats, methods: pd.DataFrame) -> list[Claim]:
    out = []
    for dial, text, sign in SLOPE_CLAIMS:
        frame = M.at_reference(s.slopes.get(dial, pd.DataFrame()), s.ref, skip=dial)
        rows = {} if frame.empty else _rows_by(frame[frame["split"] == "uncovered"].sort_values(
            ["n_x", "budget"]), ["model_id", "target", "method"])
        for r in methods.itertuples(index=False):
            row = rows.get((r.model_id, r.target, r.method))
            if not row:
                out.append(_claim(dial, text, r.model, r.target, r.method, sign, note="not measured: a single "
                                  f"{dial.replace('_', ' ')} value, or no held-out split"))
                continue
            x = row[-1]  # the most levels, then the largest budget
            few = f"; only {int(x['n_x'])} levels (the design asks for {MIN_LEVELS})" if (
                dial == "anticipation" and x["n_x"] < MIN_LEVELS) else ""
            out.append(_claim(dial, text, r.model, r.target, r.method, sign, float(x["slope"]), float(x["slope_se"]),
                              int(x["units"]), int(x["n"]), int(x["organisms"]),
                              f"slope per unit at budget {int(x['budget'])}, {dial.replace('_', ' ')} "
                              f"{x['x_min']:g} to {x['x_max']:g} ({int(x['n_x'])} levels){few}"))
    return out


class _Index:
    """What the cost claims look up, at the reference condition: budgets run and uncovered costs per method."""

    def __init__(self, s: Stats):
        a = M.at_reference(s.agg, s.ref)
        a = a[a["metric"] == "behavior"]
        self.budgets = a.groupby(["model_id", "target", "method"])["budget"].nunique().to_dict()
        self.anywhere = set(s.agg[["model_id", "target", "method"]].itertuples(index=False, name=None))
        cost = M.at_reference(s.cost, s.ref)
        self.cost = _rows_by(cost[cost["split"] == "uncovered"], ["model_id", "target", "method"])

    def n_budgets(self, model_id: str, target: str, method: str) -> int:
        return int(self.budgets.get((model_id, target, method), 0))


def _cost_claim(s: Stats, ix: _Index, tests: PairedTests, model: str, model_id: str, target: str, steer: str,
                rival: str) -> tuple[Claim, tuple[float, float, int, int, int] | None]:
    """The cost claim for one pair, and (advantage, SE, units, runs, organisms) where both reach the threshold."""
    text = f"steering reaches {s.threshold:g} on held-out contexts at lower feedback cost than {rival}"
    pair = f"{steer} vs {rival}"
    rows = {m: ix.cost.get((model_id, target, m), []) for m in (steer, rival)}
    absent = [m for m in (steer, rival) if ix.n_budgets(model_id, target, m) == 0]
    if absent:
        where = " at the reference condition" if all((model_id, target, m) in ix.anywhere for m in absent) else ""
        return _claim("cost", text, model, target, pair, -1.0, note=f"not measured: {' and '.join(absent)} not run"
                      + where), None
    if not all(rows.values()):
        return _claim("cost", text, model, target, pair, -1.0, note="not measured: no held-out split"), None
    a, b = rows[steer][0], rows[rival][0]
    n, orgs = int(min(a["n"], b["n"])), int(min(a["organisms"], b["organisms"]))
    single = [m for m in (steer, rival) if ix.n_budgets(model_id, target, m) < 2]
    if single:  # a crossing needs budgets on both sides of it: with one budget the grid, not the data, sets the cost
        return _claim("cost", text, model, target, pair, -1.0, n=n, organisms=orgs,
                      note=f"not measured: {' and '.join(single)} ran at one budget only"), None
    if a["reached"] and b["reached"]:
        if a["at_first"] and b["at_first"]:
            return _claim("cost", text, model, target, pair, -1.0, n=n, organisms=orgs, note="not measured: both "
                          "reach it at their smallest budget"), None
        d = tests.difference(("cheapest to threshold", "uncovered"), model_id, target, (steer, 0), (rival, 0))
        # A method at its smallest budget already may need less: its cost, and so the ratio, is bounded on one side.
        bound = "upper" if a["at_first"] else "lower" if b["at_first"] else None
        note = "ln(cost of steering / cost of the other), paired by draw and seed" + (
            f"; {(steer if a['at_first'] else rival)} reaches it at its smallest budget: a bound" if bound else "")
        if not (d.units >= 1 and math.isfinite(d.estimate) and math.isfinite(d.se)):
            return _claim("cost", text, model, target, pair, -1.0, d.estimate, math.nan, d.units, d.runs,
                          d.organisms, "no interval: a unit left out never reaches the threshold", bound), None
        return (_claim("cost", text, model, target, pair, -1.0, d.estimate, d.se, d.units, d.runs, d.organisms, note,
                       bound), None if bound else (-d.estimate, d.se, d.units, d.runs, d.organisms))
    if a["reached"] != b["reached"]:
        # One never reaches it within its largest budget: its cost is only bounded below by that budget's cost, so
        # the log ratio is bounded on one side; its SE is the reaching method's (ln crossing budget).
        reach, other = (a, b) if a["reached"] else (b, a)
        gap = math.log(max(reach["feedback_cost"], 1e-12)) - math.log(max(other["max_cost"], 1e-12))
        effect, bound = (gap, "upper") if a["reached"] else (-gap, "lower")
        if reach["at_first"]:
            # Both costs are censored (one at most its smallest budget's, the other above its largest): every
            # leave-one-out crossing sits on the grid's edge, so the jackknife SE is 0 by construction, not by data.
            return _claim("cost", text, model, target, pair, -1.0, effect, math.nan, int(reach["units"]), n, orgs,
                          f"no interval: {reach['method']} reaches it at its smallest budget and {other['method']} not"
                          " within its largest; both costs are censored, a bound without a test", bound), None
        return _claim("cost", text, model, target, pair, -1.0, effect, float(reach["log_se"]), int(reach["units"]),
                      n, orgs, f"{other['method']} does not reach it within its largest budget: a bound", bound), None
    return _claim("cost", text, model, target, pair, -1.0, n=n, organisms=orgs,
                  note="not measured: neither reaches the threshold"), None


def _steering(methods: list[str]) -> list[str]:
    return sorted(set(STEERING) | {m for m in methods if m.startswith("steering") and "+" not in m})


def measure_claims(s: Stats, tests: PairedTests, sharing: dict[str, float] | None = None,
                   q: float = ALPHA) -> list[Claim]:
    """Every claim for every model, target and labeled method the table holds, corrected (module docstring)."""
    agg = M.at_reference(s.agg, s.ref)
    beh = agg[(agg["metric"] == "behavior") & (agg["method"] != M.BASE_METHOD)]
    methods = beh[["model", "model_id", "target", "method"]].drop_duplicates().sort_values(
        ["target", "model", "method"])
    out = _slope_claims(s, methods)
    ix = _Index(s)
    sharing = {k: v for k, v in (sharing or {}).items() if not math.isnan(v)}
    for target in sorted(methods["target"].unique()):
        facets = methods[methods["target"] == target][["model", "model_id"]].drop_duplicates()
        present = sorted(methods.loc[methods["target"] == target, "method"].unique())
        varied = len({sharing.get(mid, math.nan) for mid in facets["model_id"]} - {math.nan}) > 1 and all(
            mid in sharing for mid in facets["model_id"])
        for steer in _steering(present):
            for rival in RIVALS:
                adv = []
                for model, model_id in facets.itertuples(index=False):
                    claim, a = _cost_claim(s, ix, tests, model, model_id, target, steer, rival)
                    out.append(claim)
                    if a is not None and model_id in sharing:
                        adv.append((sharing[model_id], *a))
                out.append(_sharing_claim(target, steer, rival, adv, varied))
    order = {c: i for i, c in enumerate(ORDER)}
    out.sort(key=lambda c: (order[c["claim_id"]], c["target"], c["model"], c["method"]))
    return correct(out, q)


def _sharing_claim(target: str, steer: str, rival: str, adv: list[tuple[float, float, float, int, int, int]],
                   varied: bool) -> Claim:
    """The slope of steering's cost advantage (ln cost ratio) across the world's sharing values."""
    text = f"steering's cost advantage over {rival} grows with the world's sharing"
    pair = f"{steer} vs {rival}"
    if not varied:
        return _claim("sharing", text, "(all)", target, pair, 1.0,
                      note="not measured: the study does not vary the sharing dial across models")
    xs = np.array([a[0] for a in adv])
    if len(np.unique(xs)) < 2:
        return _claim("sharing", text, "(all)", target, pair, 1.0, note="not measured: fewer than two sharing values "
                      "where both methods reach the threshold")
    dx = xs - xs.mean()
    c = dx / (dx @ dx)
    d, se = np.array([a[1] for a in adv]), np.array([a[2] for a in adv])
    return _claim("sharing", text, "(all)", target, pair, 1.0, float(c @ d), math.sqrt(float(c**2 @ se**2)),
                  min(a[3] for a in adv), sum(a[4] for a in adv), sum(a[5] for a in adv),
                  "ln cost ratio per unit of sharing, across models (interval from the per-model SEs)")


def _ci_text(c: Claim) -> str:
    if c["effect"] is None:
        return "n/a"
    show = lambda x: "n/a" if x is None else ("-inf" if x == -math.inf else "+inf" if x == math.inf  # noqa: E731
                                              else _num(x, "signed"))
    return f"{show(c['effect'])} [{show(c['lo'])}, {show(c['hi'])}]"


def claim_lines(claims: list[Claim], threshold: float) -> list[str]:
    """The report's opening section: one row per measured claim, method and target; then what was not measured."""
    measured = [c for c in claims if c["effect"] is not None]
    level = next((c["level"] for c in measured if c["level"] is not None), LEVEL)
    m, selected = len(measured), sum(c["verdict"] in ("supported", "contradicted") for c in measured)
    several = len({c["model"] for c in claims if c["model"] != "(all)"}) > 1
    lines = ["## The claims, measured", "",
             "Each claim of the motivating argument, per target and method: the effect, its interval and n = "
             "organisms x seeds. Intervals are t intervals over organism draws (each the mean of its seeds) where "
             "there are several, else over seeds. The verdict reads the interval after a multiplicity correction "
             f"over the {m} measured rows: Benjamini-Hochberg at {ALPHA:g} selects {selected}, and every interval is "
             f"drawn at the false-coverage-rate adjusted level {level:.2%} (Benjamini & Yekutieli 2005). "
             "**supported** when it excludes 0 in the claimed direction, **contradicted** when it excludes 0 in the "
             "other, **inconclusive** otherwise (always on one run). Slopes are per unit of the dial; cost effects "
             f"are ln(cost of steering / cost of the other) to reach {threshold:g} on the held-out contexts.", ""]
    if not claims:
        return lines + ["No claim can be measured on this table.", ""]
    if measured:
        lines += ["| claim | " + ("model | " if several else "") + "target | method | effect [adjusted CI] | "
                  "n (organisms x seeds) | verdict | note |",
                  "| --- | " + ("--- | " if several else "") + "--- | --- | --- | --- | --- | --- |"]
        for c in measured:
            lines.append(f"| {c['claim']} | " + (f"{_md(c['model'])} | " if several else "")
                         + f"{c['target']} | {c['method']} | {_ci_text(c)} | {c['n_text']} | **{c['verdict']}** | "
                         f"{_md(c['note'])} |")
        lines.append("")
    unmeasured: dict[tuple[str, str, str], list[str]] = {}
    for c in claims:
        if c["effect"] is None:
            unmeasured.setdefault((c["claim"], c["target"], c["note"].removeprefix("not measured: ")), []).append(
                c["method"] + (f" ({c['model']})" if several and c["model"] != "(all)" else ""))
    if unmeasured:
        lines += ["Not measured:", "", "| claim | target | methods | why |", "| --- | --- | --- | --- |"]
        lines += [f"| {claim} | {target} | {', '.join(where)} | {_md(why)} |"
                  for (claim, target, why), where in unmeasured.items()]
        lines.append("")
    return lines
