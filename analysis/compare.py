"""Two studies side by side: does the method ranking on the organism hold on a real language model?

Reads two reports' `summary.json` (written by `analysis.report.write_report`) and, for each pair of matching targets
(e.g. the organism's `sentiment` and SmolLM2's `real_sentiment`), puts each method both studies ran next to itself:
its held-out gain over the base model (with its interval and n) and its cost to threshold on covered contexts. The
rankings are compared by Spearman's rank correlation of the held-out gains over the methods both ran, and by whether
the method with the largest gain is the same; with fewer than three shared methods, or intervals that overlap, the
sentence says the comparison cannot tell. No model is run.

    lines, rows = compare(summary_a, summary_b, {"sentiment": "real_sentiment"}, ("organism", "SmolLM2"))
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd


def _gain(h: dict[str, Any]) -> dict[str, float | None]:
    g = (h.get("generalization") or {}).get("gain_uncovered") or {}
    return {"mean": g.get("mean"), "lo": g.get("lo"), "hi": g.get("hi"), "n": h.get("n")}


def _cost(h: dict[str, Any]) -> dict[str, Any]:
    c = (h.get("cost_to_threshold") or {}).get("covered") or {}
    return {"cost": c.get("feedback_cost") if c.get("reached") else None, "lo": c.get("cost_lo"),
            "hi": c.get("cost_hi"), "reached": bool(c.get("reached")), "max_cost": c.get("max_cost")}


def _fmt(g: dict[str, Any]) -> str:
    if g["mean"] is None:
        return "-"
    if (g["n"] or 0) < 2:
        return f"{g['mean']:+.2f} (one run)"
    ci = "" if g["lo"] is None or g["hi"] is None else f" [{g['lo']:+.2f}, {g['hi']:+.2f}]"
    return f"{g['mean']:+.2f}{ci} (n {g['n']})"


def _fmt_cost(c: dict[str, Any]) -> str:
    if c["reached"] and c["cost"] is not None:
        return f"{c['cost']:.0f}"
    return "not reached" + (f" (<= {c['max_cost']:.0f} spent)" if c.get("max_cost") else "")


def _overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if None in (a["lo"], a["hi"], b["lo"], b["hi"]):
        return True
    return not (a["hi"] < b["lo"] or b["hi"] < a["lo"])


def compare(a: dict[str, Any], b: dict[str, Any], pairs: dict[str, str],
            names: tuple[str, str] = ("A", "B")) -> tuple[list[str], list[dict[str, Any]]]:
    """Markdown lines and one row per (target pair, method run in both)."""
    heads = [{(h["target"], h["method"]): h for h in s.get("headline", [])} for s in (a, b)]
    lines = [f"# {names[0]} vs {names[1]}: the same methods on matching behaviors", "",
             f"Threshold {a.get('threshold')} ({names[0]}) and {b.get('threshold')} ({names[1]}). Held-out gain: "
             "behavior on uncovered contexts minus the base model's, at each method's largest budget at the reference "
             "condition, 95% interval; cost to threshold on covered contexts in feedback cost units.", ""]
    rows: list[dict[str, Any]] = []
    for ta, tb in pairs.items():
        methods = sorted({m for t, m in heads[0] if t == ta} & {m for t, m in heads[1] if t == tb})
        lines += [f"## {ta} ({names[0]}) vs {tb} ({names[1]})", ""]
        if not methods:
            lines += [f"No method ran on both ({names[0]}: {ta}, {names[1]}: {tb}).", ""]
            continue
        lines += [f"| method | held-out gain, {names[0]} | held-out gain, {names[1]} | cost to threshold, {names[0]} | "
                  f"cost to threshold, {names[1]} |", "| --- " * 5 + "|"]
        for m in methods:
            ha, hb = heads[0][(ta, m)], heads[1][(tb, m)]
            row = {"target_a": ta, "target_b": tb, "method": m, "gain_a": _gain(ha), "gain_b": _gain(hb),
                   "cost_a": _cost(ha), "cost_b": _cost(hb)}
            rows.append(row)
            lines.append(f"| {m} | {_fmt(row['gain_a'])} | {_fmt(row['gain_b'])} | {_fmt_cost(row['cost_a'])} | "
                         f"{_fmt_cost(row['cost_b'])} |")
        lines += ["", _verdict([r for r in rows if r["target_a"] == ta], names), ""]
    return lines, rows


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant."""
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def _verdict(rows: list[dict[str, Any]], names: tuple[str, str]) -> str:
    ok = [r for r in rows if r["gain_a"]["mean"] is not None and r["gain_b"]["mean"] is not None]
    if len(ok) < 3:
        return (f"Only {len(ok)} method(s) have a held-out gain in both studies: too few to compare rankings "
                f"({', '.join(r['method'] for r in ok) or 'none'}).")
    ga = np.array([r["gain_a"]["mean"] for r in ok])
    gb = np.array([r["gain_b"]["mean"] for r in ok])
    rho = spearman(ga, gb)
    single = [n for n, side in zip(names, ("gain_a", "gain_b")) if any((r[side]["n"] or 0) < 2 for r in ok)]
    tied = [n for n, g in zip(names, (ga, gb)) if np.ptp(g) == 0]
    if tied:
        return (f"Every method's held-out gain is the same on {' and '.join(tied)} ({len(ok)} methods): no ranking "
                f"to compare" + (f" (one run on {' and '.join(single)})." if single else "."))
    best_a, best_b = ok[int(np.argmax(ga))], ok[int(np.argmax(gb))]
    same = best_a["method"] == best_b["method"]
    clear = all(not _overlap(best_a["gain_a"], r["gain_a"]) for r in ok if r is not best_a) and all(
        not _overlap(best_b["gain_b"], r["gain_b"]) for r in ok if r is not best_b)
    text = (f"Spearman's rank correlation of the held-out gains over {len(ok)} methods: "
            f"{rho:+.2f}" if math.isfinite(rho) else "The held-out gains are tied in one study: no rank correlation")
    text += (f"; the largest gain is {best_a['method']}'s in both" if same else
             f"; the largest gain is {best_a['method']}'s on {names[0]} and {best_b['method']}'s on {names[1]}")
    if single:
        text += (f". One run per method on {' and '.join(single)}: no interval, so the rankings are not established "
                 "by these runs.")
    else:
        text += (". The top method's interval separates from the others' in both studies." if clear else
                 ". Intervals overlap, so the rankings are not established by these runs.")
    return text
