"""Paired tests between two methods on matched replicates, for every "which method wins" call in the report.

Two methods of one model and target are compared on the runs both have (same organism draw and seed, same
condition; at a budget where the question names one). Where those runs span several organism draws, each draw's runs
are averaged first and the draw is the unit (the organism is a random effect: its seeds are not independent); else
the seed is. The difference of the question's statistic, its jackknife standard error over the units, and a t test
with (units - 1) degrees of freedom. For a mean (behavior at a budget) that is exactly the paired t test on per-unit
differences; for a slope, a crossing budget or a ratio it is the same test on the statistic. Holm's correction over
all the calls of one report then decides which are "clear" (`analysis.findings.winners`); one unit is never clear.

    tests = PairedTests(table, ref, threshold=0.8)
    diff, p, n = tests.compare(("highest behavior at largest budget", "uncovered"), model_id, target,
                               ("dpo", 512), ("steering", 512))
    d = tests.difference(...)   # Difference(estimate, se, units, runs, organisms)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from analysis import metrics as M
from analysis.stats import jackknife, t_pvalue
from analysis.table import BASE_METHOD

Inputs = tuple[np.ndarray, dict[str, np.ndarray], Callable[[dict[str, np.ndarray]], np.ndarray]]
RUN = 1_000_003  # a run's key: draw * RUN + seed


class Difference(NamedTuple):
    """A paired difference: estimate, its jackknife SE, the units it rests on (draws, or seeds on one draw), and the
    matched runs (organisms x seeds) and organisms behind them."""

    estimate: float
    se: float
    units: int
    runs: int
    organisms: int


NONE = Difference(math.nan, math.nan, 0, 0, 0)


def _collapse(runs: np.ndarray, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-run values (rows: `runs`, keys draw * RUN + seed) averaged within each organism draw where the runs span
    several draws; unchanged on one draw (its seeds are the units)."""
    draws, di = np.unique(runs // RUN, return_inverse=True)
    if len(draws) < 2:
        return values
    out = {}
    for c, x in values.items():
        total = np.zeros((len(draws),) + x.shape[1:])
        count = np.zeros((len(draws),) + x.shape[1:])
        have = ~np.isnan(x)
        np.add.at(total, di, np.where(have, x, 0.0))
        np.add.at(count, di, have)
        with np.errstate(all="ignore"):
            out[c] = np.where(count > 0, total / count, np.nan)
    return out


def _slope_stat(xs: np.ndarray) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    dx = xs - xs.mean()
    return lambda m: (m["v"] - m["v"].mean(-1, keepdims=True)) @ dx / (dx @ dx)


class PairedTests:
    """Per (model_id, target, method), the replicate-level numbers each winner question compares."""

    def __init__(self, table: pd.DataFrame, ref: dict[str, float], threshold: float, min_gain: float = 0.02):
        t = M.with_model_id(table)
        t = t[t["metric"].isin(["behavior", "kl"])]
        facet = ["model_id", "target"]
        t = t.assign(unit=t["draw"].to_numpy() * RUN + t["seed"].to_numpy())  # the run: collapsed to draws later
        self.ref, self.threshold, self.min_gain = ref, threshold, min_gain
        self.cols = {c: t[c].to_numpy() for c in ("split", "metric", "budget", "unit", "value", "feedback_cost",
                                                  *M.DIALS)}
        self.index = {k: v for k, v in t.groupby(facet + ["method"], sort=True).indices.items()}

    def _rows(self, model_id: str, target: str, method: str, skip: str | None = None,
              **eq: Any) -> dict[str, np.ndarray]:
        idx = self.index.get((model_id, target, method), np.array([], dtype=np.int64))
        c = {k: v[idx] for k, v in self.cols.items()}
        mask = np.ones(len(idx), dtype=bool)
        for dial, value in self.ref.items():
            if dial != skip:
                mask &= c[dial] == value
        for k, value in eq.items():
            mask &= c[k] == value
        return {k: v[mask] for k, v in c.items()}

    @staticmethod
    def _matrix(r: dict[str, np.ndarray], by: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(units, levels of `by`) mean values, with the unit ids and the levels."""
        us, ui = np.unique(r["unit"], return_inverse=True)
        ks, ki = np.unique(r[by], return_inverse=True)
        total, count = np.zeros((len(us), len(ks))), np.zeros((len(us), len(ks)))
        np.add.at(total, (ui, ki), r["value"])
        np.add.at(count, (ui, ki), 1.0)
        with np.errstate(all="ignore"):
            return us, total / count, ks

    def inputs(self, question: tuple[str, str], model_id: str, target: str, method: str,
               budget: int) -> Inputs | None:
        """Unit ids, {column: (units, k)} and the statistic for one method on one question; None if unmeasured."""
        name, split = question
        if name.startswith("cheapest"):
            us, v, bs = self._matrix(self._rows(model_id, target, method, metric="behavior", split=split), "budget")
            r = self._rows(model_id, target, method, metric="behavior", split=split)
            b = bs.astype(np.float64)
            per = np.array([r["feedback_cost"][r["budget"] == x].mean() / max(x, 1e-12) for x in bs])
            thr = self.threshold

            def log_cost(m: dict[str, np.ndarray]) -> np.ndarray:
                with np.errstate(all="ignore"):
                    return np.log(M._per_label(b, per, M.crossing(m["v"], b, thr)))
            return (us, {"v": v}, log_cost) if len(us) else None
        if name.startswith("most robust"):
            dial = "labeler_noise" if "noise" in name else "labeler_misspec"
            r = self._rows(model_id, target, method, skip=dial, metric="behavior", split=split, budget=budget)
            us, v, xs = self._matrix(r, dial)
            return (us, {"v": v}, _slope_stat(xs.astype(np.float64))) if len(xs) >= 2 else None
        sp = "all" if name.startswith("lowest KL") else split
        us, v, _ = self._matrix(self._rows(model_id, target, method, metric="behavior", split=sp, budget=budget),
                                "split")
        if name.startswith("highest behavior"):
            return (us, {"v": v}, lambda m: m["v"][..., 0]) if len(us) else None
        bu, bv, _ = self._matrix(self._rows(model_id, target, BASE_METHOD, metric="behavior", split=sp), "split")
        common, i, j = np.intersect1d(us, bu, return_indices=True)
        if not len(common):
            return None
        if name.startswith("largest uncovered gain"):
            return common, {"v": v[i], "base": bv[j]}, lambda m: (m["v"] - m["base"])[..., 0]
        if name.startswith("lowest KL"):
            ku, kv, _ = self._matrix(self._rows(model_id, target, method, metric="kl", budget=budget), "split")
            common2, i2, j2 = np.intersect1d(common, ku, return_indices=True)
            gain = v[i] - bv[j]
            mg = self.min_gain
            return common2, {"gain": gain[i2], "kl": kv[j2]}, lambda m: np.where(
                m["gain"] >= mg, m["kl"] / (100.0 * m["gain"]), np.nan)[..., 0]
        return None

    def difference(self, question: tuple[str, str], model_id: str, target: str, a: tuple[str, int],
                   b: tuple[str, int]) -> Difference:
        """Statistic of a - statistic of b on the runs both have, collapsed to organism draws where they span
        several, with its jackknife SE over those units (`Difference`)."""
        ia, ib = self.inputs(question, model_id, target, *a), self.inputs(question, model_id, target, *b)
        if ia is None or ib is None:
            return NONE
        common, i, j = np.intersect1d(ia[0], ib[0], return_indices=True)
        if len(common) == 0:
            return NONE
        values = _collapse(common, {f"a:{c}": x[i] for c, x in ia[1].items()} | {f"b:{c}": x[j]
                                                                               for c, x in ib[1].items()})
        values = {c: x[None] for c, x in values.items()}
        fa, fb = ia[2], ib[2]

        def diff(m: dict[str, np.ndarray]) -> np.ndarray:
            return (fa({c[2:]: v for c, v in m.items() if c.startswith("a:")})
                    - fb({c[2:]: v for c, v in m.items() if c.startswith("b:")}))

        est, se, n = jackknife(values, diff)
        return Difference(float(est[0]), float(se[0]), int(n[0]), len(common), len(np.unique(common // RUN)))

    def compare(self, question: tuple[str, str], model_id: str, target: str, a: tuple[str, int],
                b: tuple[str, int]) -> tuple[float, float, int]:
        """(statistic of a - statistic of b, two-sided p of the paired test, units both have)."""
        d, s, k, _, _ = self.difference(question, model_id, target, a, b)
        if k < 2 or not np.isfinite(d) or not np.isfinite(s):
            return d, math.nan, k
        p = 1.0 if s == 0 and d == 0 else (0.0 if s == 0 else float(t_pvalue(d / s, k - 1)))
        return d, p, k
