"""The statistics every interval and every "clear" call in the report rests on: Student t intervals, the jackknife
over replicates (seeds, or organism draws when there are several), paired tests and Holm's correction.

Why these: a study runs 3 seeds (or 3 organism draws x 3 seeds), and a percentile bootstrap over 3 values covers the
true mean about 75% of the time, because it ignores that the spread of 3 values underestimates the spread of the
population. A t interval with n - 1 degrees of freedom is exact for normal replicates. The jackknife gives the same
interval for a mean (its standard error is exactly s / sqrt(n)) and extends it to a ratio, a slope or a crossing point.
When a cell was replicated over several organism draws the replicate unit is the draw (its mean over seeds): the
two-stage interval for a random organism effect, with draws - 1 degrees of freedom.

    est, lo, hi, n_eff = jackknife_ci({"x": values}, lambda m: m["x"])   # values: (groups, units); NaN = missing
    p = t_pvalue(t=2.5, df=2); clear = holm([0.01, 0.2, 0.03]) < 0.05
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import numpy as np

LEVEL = 0.95
ALPHA = 0.05
Stat = Callable[[dict[str, np.ndarray]], np.ndarray]


def t_abs_cdf(t: np.ndarray | float, df: np.ndarray | int) -> np.ndarray:
    """P(|T| < t) for Student's t with integer `df` >= 1: the exact finite series (Abramowitz & Stegun 26.7.3-4)."""
    t, df = np.broadcast_arrays(np.abs(np.asarray(t, dtype=np.float64)), np.asarray(df, dtype=np.int64))
    df = np.maximum(df, 1)
    with np.errstate(all="ignore"):
        theta = np.arctan(t / np.sqrt(df))
    s, c = np.sin(theta), np.cos(theta)
    odd = df % 2 == 1
    # odd: (2/pi) (theta + s * sum_{j=1}^{(df-1)/2} a_j c^(2j-1)), a_1 = 1, a_{j+1} = a_j 2j / (2j + 1)
    # even: s * sum_{j=0}^{(df-2)/2} b_j c^(2j), b_0 = 1, b_{j+1} = b_j (2j + 1) / (2j + 2)
    odd_sum, even_sum = np.zeros_like(t), np.zeros_like(t)
    a, b = c.copy(), np.ones_like(t)
    for j in range(int(df.max(initial=1)) // 2 + 1):
        odd_sum += np.where(odd & (j + 1 <= (df - 1) // 2), a, 0.0)
        even_sum += np.where(~odd & (j <= (df - 2) // 2), b, 0.0)
        a = a * c * c * (2 * j + 2) / (2 * j + 3)
        b = b * c * c * (2 * j + 1) / (2 * j + 2)
    out = np.where(odd, 2.0 / np.pi * (theta + s * odd_sum), s * even_sum)
    return np.where(np.isinf(t), 1.0, np.clip(out, 0.0, 1.0))


def t_pvalue(t: np.ndarray | float, df: np.ndarray | int) -> np.ndarray:
    """Two-sided p-value of a t statistic; NaN where `t` is NaN."""
    t = np.asarray(t, dtype=np.float64)
    return np.where(np.isnan(t), np.nan, 1.0 - t_abs_cdf(np.nan_to_num(t), df))


def t_quantile(df: np.ndarray | int, level: float = LEVEL) -> np.ndarray:
    """The two-sided critical value: P(|T| < q) = level (q = 4.303 at df 2 and 95%). Bisection on the exact CDF."""
    df = np.asarray(df, dtype=np.int64)
    lo, hi = np.zeros(df.shape), np.full(df.shape, 1e4)
    for _ in range(80):
        mid = (lo + hi) / 2
        below = t_abs_cdf(mid, df) < level
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return (lo + hi) / 2


@functools.lru_cache(maxsize=256)
def t_crit(df: int, level: float = LEVEL) -> float:
    """`t_quantile` for one integer df, cached: per-group loops call it thousands of times."""
    return float(t_quantile(np.asarray(max(int(df), 1)), level))


def jackknife(values: dict[str, np.ndarray], stat: Stat) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Estimate, jackknife standard error and number of units, per group.

    `values[c]` has shape (groups, units) or (groups, units, k): axis 1 is the replicate unit; NaN is missing (left
    out of that column's mean only); `stat` maps the unit means (shape (..., [k])) to one number each. A unit with no
    value in any column does not count. The SE is NaN where a leave-one-out estimate is undefined, 0 with one unit.
    """
    point, loo, have_any = {}, {}, None
    with np.errstate(all="ignore"):
        for c, x in values.items():
            x = np.asarray(x, dtype=np.float64)
            have = ~np.isnan(x)
            x0 = np.where(have, x, 0.0)
            total, count = x0.sum(1), have.sum(1)
            point[c] = total / count
            loo[c] = (np.expand_dims(total, 1) - x0) / (np.expand_dims(count, 1) - have)  # (groups, units, ...)
            unit_has = have if have.ndim == 2 else have.any(axis=tuple(range(2, have.ndim)))
            have_any = unit_has if have_any is None else have_any | unit_has
        est = np.asarray(stat(point), dtype=np.float64)
        theta = np.asarray(stat(loo), dtype=np.float64)  # (groups, units)
    assert have_any is not None, "jackknife needs at least one column"
    n = have_any.sum(1)
    theta = np.where(have_any, theta, np.nan)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        bad = (np.isnan(theta) & have_any).any(1)
        mean = np.nanmean(theta, axis=1)
        var = (n - 1) / n * np.nansum((theta - mean[:, None]) ** 2, axis=1)
    se = np.where(n == 1, 0.0, np.where(bad, np.nan, np.sqrt(var)))
    return est, se, n


def jackknife_ci(values: dict[str, np.ndarray], stat: Stat,
                 level: float = LEVEL) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(estimate, lo, hi, units): estimate +- t(units - 1) x jackknife SE; the CI collapses to the value on one unit
    (flagged by the caller) and is NaN where the estimate or the SE is undefined."""
    est, se, n = jackknife(values, stat)
    half = t_quantile(np.maximum(n - 1, 1), level) * se
    with np.errstate(all="ignore"):
        lo, hi = est - half, est + half
    undefined = np.isnan(est) | np.isnan(se)
    return est, np.where(undefined, np.nan, lo), np.where(undefined, np.nan, hi), n


def mean_ci(x: np.ndarray, level: float = LEVEL) -> tuple[float, float, float, int]:
    """The t interval of the mean of a 1-d sample (NaN left out): (mean, lo, hi, n)."""
    est, lo, hi, n = jackknife_ci({"x": np.asarray(x, dtype=np.float64)[None, :]}, lambda m: m["x"], level)
    return float(est[0]), float(lo[0]), float(hi[0]), int(n[0])


def holm(p: np.ndarray | list[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error over all the calls passed in); NaN counts as 1."""
    p = np.nan_to_num(np.asarray(p, dtype=np.float64), nan=1.0)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    adj = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj
    return out
