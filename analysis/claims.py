"""The motivating argument's claims, each measured with an interval and a verdict, for the top of the report.

A claim is supported only when its 95% interval excludes 0 in the claimed direction, contradicted when it excludes 0
in the other direction, and inconclusive otherwise (always so on one replicate); a claim the table cannot measure
says "not measured". Each verdict stands alone: no correction is made across claims.

- (a) behavior on uncovered contexts rises with anticipation: per method, the slope of uncovered behavior against
  anticipation at the method's largest budget (t interval over replicates).
- (b) it falls with labeler noise, and with misspecification: the same slopes against those dials.
- (c) steering reaches the threshold on uncovered contexts at lower feedback cost than rlhf and dpo: the paired
  difference ln(cost of steering / cost of the other) on matched replicates; and, where the models differ in the
  world's sharing dial, that its advantage grows with sharing (slope of the advantage across sharing values).

    claims = measure_claims(stats, tests, sharing={"organism-draws:ab12...": 0.4})
    lines = claim_lines(claims)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from analysis import metrics as M
from analysis.findings import Stats, _num
from analysis.paired import PairedTests
from analysis.stats import t_crit

TOL = 1e-9
SLOPE_CLAIMS = (("anticipation", "behavior on uncovered contexts rises with anticipation", 1.0),
                ("labeler_noise", "behavior on uncovered contexts falls with labeler noise", -1.0),
                ("labeler_misspec", "behavior on uncovered contexts falls with labeler misspecification", -1.0))
RIVALS = ("rlhf", "dpo")
Claim = dict[str, Any]


def verdict(lo: float | None, hi: float | None, direction: float, n: int) -> str:
    """supported / contradicted / inconclusive, from the interval and the claimed sign (+1 or -1)."""
    if n < 2 or lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return "inconclusive"
    lo, hi = (lo, hi) if direction > 0 else (-hi, -lo)
    return "supported" if lo > TOL else "contradicted" if hi < -TOL else "inconclusive"


def _claim(text: str, model: str, target: str, method: str, effect: float | None, lo: float | None,
           hi: float | None, n: int, direction: float, note: str = "") -> Claim:
    return {"claim": text, "model": model, "target": target, "method": method, "effect": effect, "lo": lo, "hi": hi,
            "n": int(n), "verdict": verdict(lo, hi, direction, n) if effect is not None else "not measured",
            "note": note}


def _steering(methods: list[str]) -> list[str]:
    return [m for m in methods if m.startswith("steering") and "+" not in m]


def _slope_claims(s: Stats, largest: pd.DataFrame) -> list[Claim]:
    out = []
    for dial, text, sign in SLOPE_CLAIMS:
        frame = M.at_reference(s.slopes.get(dial, pd.DataFrame()), s.ref, skip=dial)
        for r in largest.itertuples(index=False):
            row = frame[(frame["model_id"] == r.model_id) & (frame["target"] == r.target)
                        & (frame["method"] == r.method) & (frame["budget"] == r.budget)
                        & (frame["split"] == "uncovered")] if not frame.empty else frame
            if row.empty:
                out.append(_claim(text, r.model, r.target, r.method, None, None, None, 0, sign,
                                  f"not measured: a single {dial.replace('_', ' ')} value, or no uncovered split"))
                continue
            x = row.iloc[0]
            out.append(_claim(text, r.model, r.target, r.method, float(x["slope"]), float(x["slope_lo"]),
                              float(x["slope_hi"]), int(x["n"]), sign,
                              f"slope per unit, at budget {int(r.budget)}, {dial.replace('_', ' ')} "
                              f"{x['x_min']:g} to {x['x_max']:g}"))
    return out


def _cost_claim(s: Stats, tests: PairedTests, model: str, model_id: str, target: str, steer: str,
                rival: str) -> tuple[Claim, tuple[float, float, int] | None]:
    """The cost claim for one pair, and (advantage, its SE, units) where both reach the threshold."""
    text = f"steering reaches {s.threshold:g} on uncovered contexts at lower feedback cost than {rival}"
    cost = M.at_reference(s.cost, s.ref)
    rows = {m: cost[(cost["model_id"] == model_id) & (cost["target"] == target) & (cost["method"] == m)
                    & (cost["split"] == "uncovered")] for m in (steer, rival)}
    if any(r.empty for r in rows.values()):
        return _claim(text, model, target, f"{steer} vs {rival}", None, None, None, 0, -1.0,
                      "not measured: no uncovered split"), None
    a, b = rows[steer].iloc[0], rows[rival].iloc[0]
    n = int(min(a["n"], b["n"]))
    single = [m for m in (steer, rival) if _budgets(s, model_id, target, m) < 2]
    if single:  # a crossing needs budgets on both sides of it: with one budget the grid, not the data, sets the cost
        return _claim(text, model, target, f"{steer} vs {rival}", None, None, None, n, -1.0,
                      f"not measured: {' and '.join(single)} ran at one budget only"), None
    if a["reached"] and b["reached"]:
        d, se, k = tests.difference(("cheapest to threshold", "uncovered"), model_id, target, (steer, 0), (rival, 0))
        if k >= 2 and np.isfinite(d) and np.isfinite(se):
            half = t_crit(k - 1) * se
            return (_claim(text, model, target, f"{steer} vs {rival}", d, d - half, d + half, n, -1.0,
                           "ln(cost of steering / cost of the other), paired by replicate"), (-d, se, k))
        return _claim(text, model, target, f"{steer} vs {rival}", d, None, None, n, -1.0,
                      "a replicate left out never reaches the threshold: no interval"), None
    if a["reached"] != b["reached"]:
        # One never reaches it within its largest budget: its cost is only bounded below by that budget's cost.
        reach, other = (a, b) if a["reached"] else (b, a)
        bound = math.log(max(reach["cost_hi"], 1e-12)) - math.log(max(_max_cost(s, other), 1e-12))
        lo, hi = (-math.inf, bound) if a["reached"] else (-bound, math.inf)
        return _claim(text, model, target, f"{steer} vs {rival}", hi if a["reached"] else lo, lo, hi, n, -1.0,
                      f"{other['method']} does not reach it within its largest budget: a bound"), None
    return _claim(text, model, target, f"{steer} vs {rival}", None, None, None, n, -1.0,
                  "not measured: neither reaches the threshold"), None


def _budgets(s: Stats, model_id: str, target: str, method: str) -> int:
    """How many budgets a method was run at, at the reference condition."""
    a = M.at_reference(s.agg, s.ref)
    return int(a.loc[(a["model_id"] == model_id) & (a["target"] == target) & (a["method"] == method), "budget"].nunique())


def _max_cost(s: Stats, row: pd.Series) -> float:
    """The feedback cost of a method's largest budget at the reference condition."""
    a = M.at_reference(s.agg, s.ref)
    a = a[(a["model_id"] == row["model_id"]) & (a["target"] == row["target"]) & (a["method"] == row["method"])]
    return float(a.loc[a["budget"] == a["budget"].max(), "feedback_cost"].mean())


def measure_claims(s: Stats, tests: PairedTests, sharing: dict[str, float] | None = None) -> list[Claim]:
    """Every claim for every model, target and method the table holds (see the module docstring)."""
    agg = M.at_reference(s.agg, s.ref)
    beh = agg[(agg["metric"] == "behavior") & (agg["method"] != M.BASE_METHOD)]
    largest = beh.groupby(["model", "model_id", "target", "method"], sort=True)["budget"].max().reset_index()
    out = _slope_claims(s, largest)
    sharing = sharing or {}
    for target in sorted(largest["target"].unique()):
        facets = largest[largest["target"] == target][["model", "model_id"]].drop_duplicates()
        methods = sorted(largest.loc[largest["target"] == target, "method"].unique())
        for steer in _steering(methods):
            for rival in RIVALS:
                if rival not in methods:
                    continue
                adv = []
                for model, model_id in facets.itertuples(index=False):
                    claim, a = _cost_claim(s, tests, model, model_id, target, steer, rival)
                    out.append(claim)
                    if a is not None and not math.isnan(sharing.get(model_id, math.nan)):
                        adv.append((sharing[model_id], *a))
                out.append(_sharing_claim(target, steer, rival, adv))
    return out


def _sharing_claim(target: str, steer: str, rival: str, adv: list[tuple[float, float, float, int]]) -> Claim:
    """The slope of steering's cost advantage (ln cost ratio) across the world's sharing values."""
    text = f"steering's cost advantage over {rival} grows with the world's sharing"
    xs = np.array([a[0] for a in adv])
    if len(np.unique(xs)) < 2:
        return _claim(text, "(all)", target, f"{steer} vs {rival}", None, None, None, 0, 1.0,
                      "not measured: the table has fewer than two sharing values with both methods reaching it")
    dx = xs - xs.mean()
    c = dx / (dx @ dx)
    d, se = np.array([a[1] for a in adv]), np.array([a[2] for a in adv])
    est, half = float(c @ d), t_crit(min(a[3] for a in adv) - 1) * math.sqrt(float(c**2 @ se**2))
    n = sum(a[3] for a in adv)
    return _claim(text, "(all)", target, f"{steer} vs {rival}", est, est - half, est + half, n, 1.0,
                  "ln cost ratio per unit of sharing, across models")


def _ci_text(c: Claim) -> str:
    if c["effect"] is None:
        return "n/a"
    show = lambda x: "n/a" if x is None else _num(x, "signed")  # noqa: E731
    return f"{show(c['effect'])} [{show(c['lo'])}, {show(c['hi'])}]"


def claim_lines(claims: list[Claim], threshold: float) -> list[str]:
    """The report's opening section: one row per claim, method and target."""
    several = len({c["model"] for c in claims if c["model"] != "(all)"}) > 1
    lines = ["## The claims, measured", "",
             "Each claim of the motivating argument, measured per method: the effect with its 95% interval (n = "
             "organisms x seeds). **supported** when the interval excludes 0 in the claimed direction, "
             "**contradicted** when it excludes 0 in the other, **inconclusive** otherwise (always on one seed); "
             "each claim stands alone (no correction across claims). Slopes are per unit of the dial; cost "
             f"effects are ln(cost of steering / cost of the other) to reach {threshold:g} on uncovered contexts.",
             ""]
    if not claims:
        return lines + ["No claim can be measured on this table.", ""]
    unmeasured: dict[tuple[str, str], list[str]] = {}
    for c in claims:
        if c["verdict"] == "not measured":
            unmeasured.setdefault((c["claim"], c["note"].removeprefix("not measured: ")), []).append(
                f"{c['target']}/{c['method']}")
    claims = [c for c in claims if c["verdict"] != "not measured"]
    lines += ["| claim | " + ("model | " if several else "") + "target | method | effect [95% CI] | n | verdict | note |",
              "| --- | " + ("--- | " if several else "") + "--- | --- | --- | --- | --- | --- |"]
    for c in claims:
        lines.append(f"| {c['claim']} | " + (f"{c['model']} | " if several else "")
                     + f"{c['target']} | {c['method']} | {_ci_text(c)} | {c['n']} | {c['verdict']} | {c['note']} |")
    if unmeasured:
        lines += [""] + [f"- Not measured: {claim} ({why}; {', '.join(where)})." for (claim, why), where in
                         unmeasured.items()]
    return lines + [""]
