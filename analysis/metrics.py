"""Aggregation over replicates with t intervals, and the study's derived metrics, all from the tidy results table.

Every CI is a 95% t interval over the replicates of a cell (`analysis.stats`): seeds where the cell ran on one
organism draw, else the organism draws (each draw's mean over its seeds), with draws - 1 degrees of freedom: the
organism is a random effect, and runs of one draw share it (`analysis.calibration` measures why: at 3 draws x 2 seeds
an interval over the 6 runs covers 83% when the draws' SD is twice the seeds', the interval over draw means 95%). A
derived metric (a ratio, a slope, a crossing point) gets the jackknife standard error over the same units. `n` is
always the number of runs (organisms x seeds; `organisms` beside it) and n=1 is flagged (its CI collapses to the
value). Gains are paired by replicate against the base model (method "none") with the same model, target,
anticipation, labeler settings, draw and seed; headroom-normalized gains divide by (ceiling - base), the ceiling
being the cells with coverage "ceiling" (`prepare.split_ceiling`).

    t = pool_draws(results.table, results.draws())
    agg = aggregate(t)
    cost = cost_to_threshold(t, threshold=0.8)   # budget where mean behavior crosses 0.8, interpolated in log budget
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from analysis.stats import Stat, jackknife_ci, t_crit
from analysis.prepare import (behavior_measures, draws_per_method, missing_splits, pool_draws,  # noqa: F401
                              split_ceiling, with_desired, with_model_id)
from analysis.table import BASE_METHOD

# `model_id` (the model's identity) is what keeps two models apart; `model`, its one-to-one label, rides along.
CONFIG_KEYS = ["model", "model_id", "method", "target", "target_version", "anticipation", "labeler_noise",
               "labeler_misspec", "budget"]
# What a base ("none") row must share with a method row to be its baseline (plus the seed); budget is ignored.
MATCH_KEYS = ["model", "model_id", "target", "target_version", "anticipation", "labeler_noise", "labeler_misspec"]
DIALS = ("anticipation", "labeler_noise", "labeler_misspec")
# A replicate: one seed of one organism draw (draw 0 where the table was not pooled over draws).
REPLICATE = ["draw", "seed"]


def method_order(methods: Iterable[str]) -> list[str]:
    """The base model first, then the others alphabetically: one order for every table and figure."""
    uniq = sorted(set(methods))
    return ([BASE_METHOD] if BASE_METHOD in uniq else []) + [m for m in uniq if m != BASE_METHOD]


def n_text(n: int, organisms: int) -> str:
    """The replicate count as "organisms x seeds" (3x2), or "n runs on k organisms" where seeds differ per organism."""
    n, organisms = int(n), max(int(organisms), 1)
    return f"{organisms}x{n // organisms}" if n % organisms == 0 else f"{n} runs on {organisms} organisms"


def units(frame: pd.DataFrame, keys: list[str]) -> pd.Series:
    """The replicate unit of each row within its group of `keys`: the organism draw where the group holds several
    draws (a random effect: its seeds are averaged first), else the seed."""
    if frame.empty:
        return pd.Series([], dtype=np.int64, index=frame.index)
    draws = frame.groupby(keys, sort=False, dropna=False)["draw"].transform("nunique").to_numpy()
    return pd.Series(np.where(draws > 1, frame["draw"].to_numpy(), frame["seed"].to_numpy()), index=frame.index)


def replicate_ci(frame: pd.DataFrame, keys: list[str], cols: list[str], stats: dict[str, Stat]) -> pd.DataFrame:
    """A t interval per group of `keys` for each stat, a function of the unit means of `cols` (jackknife SE).

    `frame` has `draw` and `seed` columns (repeats of a replicate are averaged; NaN entries are left out of that
    column's mean only). Returns the keys, and for each stat `name`, `name_lo`, `name_hi`; plus `n` (runs, organisms
    x seeds, with a value), `organisms` (draws with a value) and `single_seed` (n = 1: the CI collapses to the value).
    """
    out_cols = [c for s in stats for c in (s, f"{s}_lo", f"{s}_hi")]
    if frame.empty:
        return pd.DataFrame(columns=keys + out_cols + ["n", "organisms", "single_seed"])
    frame = with_model_id(frame)
    reps = frame.groupby(keys + ["draw", "seed"], sort=True, dropna=False)[cols].mean()
    has = reps.notna().any(axis=1)
    levels = list(range(len(keys)))
    n_reps = has.groupby(level=levels, sort=True, dropna=False).sum()
    n_orgs = has[has].reset_index().groupby(keys, sort=True, dropna=False)["draw"].nunique()
    f = frame.assign(unit=units(frame, keys)).groupby(keys + ["unit"], sort=True, dropna=False)[cols].mean()
    f = f.reset_index()
    sizes = f.groupby(keys, sort=True, dropna=False).size()
    n_arr = sizes.to_numpy()
    starts = np.concatenate([[0], np.cumsum(n_arr)[:-1]])
    values = {c: f[c].to_numpy(dtype=np.float64) for c in cols}
    result = {c: np.full(len(n_arr), np.nan) for c in out_cols}
    for n in np.unique(n_arr):
        g = np.flatnonzero(n_arr == n)
        idx = starts[g][:, None] + np.arange(n)
        x = {c: values[c][idx] for c in cols}
        for name, fn in stats.items():
            est, lo, hi, _ = jackknife_ci(x, fn)
            result[name][g], result[f"{name}_lo"][g], result[f"{name}_hi"][g] = est, lo, hi
    out = sizes.index.to_frame(index=False)
    for c in out_cols:
        out[c] = result[c]
    out["n"] = n_reps.to_numpy().astype(np.int64)
    out["organisms"] = n_orgs.reindex(n_reps.index).fillna(0).to_numpy().astype(np.int64)
    out["single_seed"] = out["n"] == 1
    return out


def aggregate(table: pd.DataFrame) -> pd.DataFrame:
    """Mean over replicates of every (config, split, metric), with its 95% t interval and n.

    Columns: CONFIG_KEYS, split, metric, mean, ci_lo, ci_hi, n, single_seed, feedback_cost, labels_used, samples.
    """
    table = with_model_id(table)
    keys = CONFIG_KEYS + ["split", "metric"]
    agg = replicate_ci(table, keys, ["value"], {"mean": lambda m: m["value"]})
    agg = agg.rename(columns={"mean_lo": "ci_lo", "mean_hi": "ci_hi"})
    extra = table.groupby(keys, sort=True).agg(feedback_cost=("feedback_cost", "mean"),
                                              labels_used=("labels_used", "mean"), samples=("n", "sum"))
    return agg.merge(extra.reset_index(), on=keys, how="left")


def with_base(table: pd.DataFrame, metric: str = "behavior", ceiling: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rows of `metric` for every method but the base, with the replicate-matched base value and `gain` (NaN if no
    base); with `ceiling` rows (coverage "ceiling") also `ceiling`, the achievable level of the row's split."""
    table = with_model_id(table)
    rows = table[table["metric"] == metric]
    on = MATCH_KEYS + REPLICATE + ["split"]
    base = rows[rows["method"] == BASE_METHOD].groupby(on, sort=True)["value"].mean().rename("base").reset_index()
    out = rows[rows["method"] != BASE_METHOD].merge(base, on=on, how="left")
    out["gain"] = out["value"] - out["base"]
    if ceiling is not None:
        out["ceiling"] = ceiling_of(out, ceiling, metric)
    return out


def ceiling_of(rows: pd.DataFrame, ceiling: pd.DataFrame, metric: str = "behavior") -> np.ndarray:
    """The ceiling of each row's (model, target, split): the ceiling cells' mean on the row's own organism draw and
    seed, else on its draw, else over every ceiling cell of that model and target (the level the study could reach,
    whichever method did). NaN where the model and target have no ceiling cell."""
    out = np.full(len(rows), np.nan)
    c = with_model_id(ceiling)
    c = c[c["metric"] == metric]
    if c.empty or rows.empty:
        return out
    for keys in (["model_id", "target", "split", "draw", "seed"], ["model_id", "target", "split", "draw"],
                 ["model_id", "target", "split"]):
        level = c.groupby(keys, sort=True)["value"].mean().rename("_c").reset_index()
        got = rows[keys].merge(level, on=keys, how="left")["_c"].to_numpy()
        out = np.where(np.isnan(out), got, out)
    return out


def missing_base(table: pd.DataFrame) -> pd.DataFrame:
    """Configurations (MATCH_KEYS + method) with behavior rows but no base-model cell of the same replicate."""
    table = with_model_id(table)
    rows = table[table["metric"] == "behavior"]
    on = MATCH_KEYS + REPLICATE
    base = rows.loc[rows["method"] == BASE_METHOD, on].drop_duplicates()
    m = rows[rows["method"] != BASE_METHOD].merge(base, on=on, how="left", indicator=True)
    miss = m.loc[m["_merge"] == "left_only", MATCH_KEYS + ["method"]].drop_duplicates()
    return miss.sort_values(MATCH_KEYS + ["method"]).reset_index(drop=True)


def gains(table: pd.DataFrame, metric: str = "behavior") -> pd.DataFrame:
    """Mean gain over the base model per (config, split), paired by replicate, with CI."""
    b = with_base(table, metric)
    return replicate_ci(b, CONFIG_KEYS + ["split"], ["gain"], {"gain": lambda m: m["gain"]})


def _groups(frame: pd.DataFrame, keys: list[str]) -> list[tuple[tuple, dict[str, np.ndarray]]]:
    """(key, {column: values}) per group, in sorted key order, with each row's replicate `unit`; numpy slices,
    because per-group pandas objects cost milliseconds each and a large study has thousands of groups."""
    if frame.empty:
        return []
    frame = frame.assign(unit=units(frame, keys))
    cols = {c: frame[c].to_numpy() for c in ("budget", "seed", "draw", "unit", "value", "feedback_cost",
                                             "labels_used") if c in frame}
    cols |= {c: frame[c].to_numpy(dtype=np.float64) for c in DIALS if c in frame}
    out = []
    for key, idx in sorted(frame.groupby(keys, sort=True).indices.items()):
        out.append((key, {c: v[idx] for c, v in cols.items()}))
    return out


def crossing(curves: np.ndarray, budgets: np.ndarray, threshold: float) -> np.ndarray:
    """Budget at which each curve (last axis: behavior at `budgets`, ascending) first reaches `threshold`: linear in
    log budget between the last budget below it and the first at or above (linear in budget from a zero budget);
    the first budget where that one already reaches it; inf where none does, NaN where a curve has a gap there."""
    ok = curves >= threshold
    k = np.argmax(ok, axis=-1)
    reached = ok.any(-1)
    km = np.maximum(k - 1, 0)
    y0, y1 = np.take_along_axis(curves, km[..., None], -1)[..., 0], np.take_along_axis(curves, k[..., None], -1)[..., 0]
    b0, b1 = budgets[km], budgets[k]
    with np.errstate(all="ignore"):
        frac = np.clip((threshold - y0) / (y1 - y0), 0.0, 1.0)
        logb = np.exp(np.log(b0) + frac * (np.log(b1) - np.log(b0)))
        at = np.where(b0 > 0, logb, b0 + frac * (b1 - b0))
    at = np.where(k == 0, budgets[0], at)
    gap = np.isnan(curves).any(-1)
    return np.where(reached, at, np.where(gap, np.nan, np.inf))


def _per_label(budgets: np.ndarray, per: np.ndarray, at: np.ndarray) -> np.ndarray:
    """`at` x the per-label cost interpolated in log budget (clamped at the ends): the cost of a fractional budget."""
    with np.errstate(all="ignore"):
        pos = budgets > 0
        if not pos.any():
            return np.zeros_like(at)
        rate = np.interp(np.log(np.where(at > 0, at, budgets[pos][0])), np.log(budgets[pos]), per[pos])
        return np.where(np.isfinite(at), at * rate, at)


def cost_to_threshold(table: pd.DataFrame, threshold: float = 0.8, splits: Iterable[str] = ("covered", "uncovered"),
                      metric: str = "behavior") -> pd.DataFrame:
    """Budget (and feedback cost) at which the mean `metric` crosses `threshold`, per method, condition and split,
    interpolated in log budget between the last budget below and the first at or above (`crossing`).

    `at_first`: the mean reaches it at the smallest budget already, so the cost is at most that budget's (a bound).
    CI: t interval on the log crossing budget with the jackknife SE over replicates (each unit's cells at every
    budget move together); hi is inf where leaving a unit out never reaches the threshold, and the estimate is inf
    where the mean never does (lo is then the lowest crossing of a leave-one-out curve, or inf).
    """
    table = with_model_id(table)
    keys = [k for k in CONFIG_KEYS if k != "budget"] + ["split"]
    rows = table[(table["metric"] == metric) & table["split"].isin(list(splits)) & (table["method"] != BASE_METHOD)]
    base = with_base(table, metric).groupby(keys, sort=True)["base"].mean()
    records = []
    for key, grp in _groups(rows, keys):
        budgets, bi = np.unique(grp["budget"], return_inverse=True)
        us, ui = np.unique(grp["unit"], return_inverse=True)
        count = np.zeros((len(budgets), len(us)))
        np.add.at(count, (bi, ui), 1.0)
        x = np.zeros((len(budgets), len(us)))
        np.add.at(x, (bi, ui), grp["value"])
        x = np.where(count > 0, x / np.maximum(count, 1), np.nan).T  # (units, budgets): a unit's mean per budget
        n_b = np.bincount(bi, minlength=len(budgets))
        per = {c: np.bincount(bi, grp[c], len(budgets)) / n_b / np.maximum(budgets, 1e-12)
               for c in ("feedback_cost", "labels_used")}
        b = budgets.astype(np.float64)
        have = ~np.isnan(x)
        n_units = int(have.any(1).sum())
        with np.errstate(all="ignore"):
            est = float(crossing(np.nansum(x, 0) / have.sum(0), b, threshold))
            loo = crossing((np.nansum(x, 0) - np.nan_to_num(x)) / (have.sum(0) - have), b, threshold)[have.any(1)]
        lo = hi = est
        log_se = 0.0 if n_units == 1 else math.nan  # the SE of ln(crossing budget), where every unit crosses
        if n_units > 1:
            q = t_crit(n_units - 1)
            fin = np.log(loo[np.isfinite(loo) & (loo > 0)])  # a crossing at cost 0 has no log
            se = math.sqrt((n_units - 1) / n_units * float(np.sum((fin - fin.mean()) ** 2))) if fin.size else 0.0
            if np.isfinite(est) and est > 0 and fin.size == n_units:
                log_se = se
            if np.isfinite(est):
                lo, hi = est * math.exp(-q * se), (est * math.exp(q * se) if fin.size == n_units else math.inf)
            else:  # never reached on the mean: the lowest leave-one-out crossing bounds it from below
                lo, hi = float(np.min(loo, initial=math.inf)), math.inf
        at = lambda v, c: float(_per_label(b, per[c], np.array([v]))[0])  # noqa: E731
        records.append(dict(zip(keys, key)) | {
            "threshold": threshold, "budget": est, "budget_lo": lo, "budget_hi": hi,
            "feedback_cost": at(est, "feedback_cost"), "cost_lo": at(lo, "feedback_cost"),
            "cost_hi": at(hi, "feedback_cost"), "labels": at(est, "labels_used"), "reached": bool(np.isfinite(est)),
            "max_budget": float(b.max()), "max_cost": at(float(b.max()), "feedback_cost"),
            "at_first": bool(est == b[0]),
            "n": int(len(np.unique(grp["draw"] * 1_000_003 + grp["seed"]))),
            "organisms": int(len(np.unique(grp["draw"]))), "units": n_units, "log_se": log_se,
            "base": float(base.get(key, np.nan)),
        })
    cols = keys + ["threshold", "budget", "budget_lo", "budget_hi", "feedback_cost", "cost_lo", "cost_hi", "labels",
                   "reached", "max_budget", "max_cost", "at_first", "n", "organisms", "units", "log_se", "base"]
    return pd.DataFrame(records, columns=cols)


def generalization(table: pd.DataFrame, min_gain: float = 0.02, ceiling: pd.DataFrame | None = None) -> pd.DataFrame:
    """Gains over the base per config, paired by replicate: absolute (`gain_covered`, `gain_uncovered`), as a share
    of the headroom the ceiling left (`headroom_*` = gain / (ceiling - base), where `ceiling` rows exist and the
    ceiling stands at least `min_gain` above the base), and the ratio of the uncovered to the covered gain.

    The ratio is NaN where the covered gain is below `min_gain`, or its CI does not exclude 0 (`covered_gain_clear`
    False; always so with one replicate): a ratio over a gain that is noise says nothing.
    """
    table = with_model_id(table)
    b = with_base(table, ceiling=ceiling if ceiling is not None else table.iloc[:0])
    b = b[b["split"].isin(["covered", "uncovered"])]
    per = CONFIG_KEYS + REPLICATE + ["split"]
    wide = b.groupby(per, sort=True)[["gain", "base", "ceiling"]].mean().unstack("split")
    wide = wide.reindex(columns=pd.MultiIndex.from_product([["gain", "base", "ceiling"], ["covered", "uncovered"]]))
    cols = ["covered", "uncovered", "base_covered", "base_uncovered", "ceiling_covered", "ceiling_uncovered"]
    wide.columns = cols
    wide = wide.reset_index()

    def ratio(m: dict[str, np.ndarray]) -> np.ndarray:
        return np.where(np.abs(m["covered"]) >= min_gain, m["uncovered"] / m["covered"], np.nan)

    def headroom(split: str) -> Stat:
        def share(m: dict[str, np.ndarray]) -> np.ndarray:
            room = m[f"ceiling_{split}"] - m[f"base_{split}"]
            return np.where(room >= min_gain, m[split] / room, np.nan)
        return share

    stats = {"ratio": ratio, "gain_covered": lambda m: m["covered"], "gain_uncovered": lambda m: m["uncovered"],
             "headroom_covered": headroom("covered"), "headroom_uncovered": headroom("uncovered"),
             "ceiling_covered": lambda m: m["ceiling_covered"], "ceiling_uncovered": lambda m: m["ceiling_uncovered"]}
    out = replicate_ci(wide, CONFIG_KEYS, cols, stats)
    # A ratio is read only over a covered gain that is clearly above zero: its CI excludes 0, which one replicate
    # cannot show. Elsewhere the ratio is noise over noise, however large.
    out["covered_gain_clear"] = (out["gain_covered_lo"] > 0) & (out["n"] >= 2)
    for c in ("ratio", "ratio_lo", "ratio_hi"):
        out[c] = out[c].where(out["covered_gain_clear"])
    return out


def slope(table: pd.DataFrame, x: str = "anticipation", metric: str = "behavior") -> pd.DataFrame:
    """Least-squares slope of `metric` against the dial `x`, per method and the other settings and split.

    CI: t interval with the jackknife SE over replicate units (all of a unit's points left out together, then the
    weighted least-squares refit). Groups with fewer than two distinct values of `x` are left out.
    """
    table = with_model_id(table)
    keys = [k for k in CONFIG_KEYS if k != x] + ["split"]
    rows = table[(table["metric"] == metric) & table["value"].notna()]
    records = []
    for key, grp in _groups(rows, keys):
        xs = grp[x]
        if np.unique(xs).size < 2:
            continue
        ys = grp["value"]
        uniq, codes = np.unique(grp["unit"], return_inverse=True)
        w = (codes[None, :] != np.arange(len(uniq))[:, None]).astype(np.float64)  # (units, points): leave one out
        with np.errstate(all="ignore"):
            sw = w.sum(1, keepdims=True)
            dx = xs - (w @ xs)[:, None] / sw
            dy = ys - (w @ ys)[:, None] / sw
            sxx = (w * dx * dx).sum(1)
            theta = np.where(sxx > 0, (w * dx * dy).sum(1) / sxx, np.nan)
        est = float(np.polyfit(xs, ys, 1)[0])
        n_u = len(uniq)
        se = math.sqrt((n_u - 1) / n_u * float(np.sum((theta - theta.mean()) ** 2))) if n_u > 1 else 0.0
        half = t_crit(n_u - 1) * se if n_u > 1 else 0.0
        n = int(len(np.unique(grp["draw"] * 1_000_003 + grp["seed"])))
        records.append(dict(zip(keys, key)) | {
            "x": x, "slope": est, "slope_lo": est - half, "slope_hi": est + half, "slope_se": se, "units": n_u,
            "x_min": float(xs.min()), "x_max": float(xs.max()), "n_x": int(np.unique(xs).size), "n": n,
            "organisms": int(np.unique(grp["draw"]).size), "single_seed": n == 1})
    cols = keys + ["x", "slope", "slope_lo", "slope_hi", "slope_se", "units", "x_min", "x_max", "n_x", "n",
                   "organisms", "single_seed"]
    return pd.DataFrame(records, columns=cols)


def side_effects(table: pd.DataFrame, min_gain: float = 0.02) -> pd.DataFrame:
    """Side effects per percentage point (0.01) of behavior gained on all test contexts, per config.

    kl: per-token KL(policy || base) on neutral prompts; fluency_loss: base fluency minus fluency (split all);
    drift: mean |drift:<other target>|. Each `*_per_pt` divides a replicate-mean by 100 x the mean behavior gain, and
    is NaN where that gain is below `min_gain`.
    """
    table = with_model_id(table)
    per_seed = CONFIG_KEYS + REPLICATE
    gain = with_base(table)
    gain = gain[gain["split"] == "all"].groupby(per_seed)["gain"].mean()
    fl = with_base(table, "fluency")
    fl = fl[fl["split"] == "all"].assign(loss=lambda d: d["base"] - d["value"]).groupby(per_seed)["loss"].mean()
    kl = table[(table["metric"] == "kl") & (table["method"] != BASE_METHOD)].groupby(per_seed)["value"].mean()
    dr = table[table["metric"].str.startswith("drift:") & (table["method"] != BASE_METHOD)]
    drift = dr.assign(a=dr["value"].abs()).groupby(per_seed)["a"].mean()
    wide = pd.concat({"gain": gain, "kl": kl, "fluency_loss": fl, "drift": drift}, axis=1).reset_index()

    def per_pt(col: str) -> Stat:
        return lambda m: np.where(m["gain"] >= min_gain, m[col] / (100.0 * m["gain"]), np.nan)

    cols = ["gain", "kl", "fluency_loss", "drift"]
    stats: dict[str, Stat] = {c: (lambda m, c=c: m[c]) for c in cols}
    stats |= {f"{c}_per_pt": per_pt(c) for c in cols[1:]}
    return replicate_ci(wide, CONFIG_KEYS, cols, stats)


def pareto(agg: pd.DataFrame, split: str = "all") -> pd.DataFrame:
    """Behavior (split `split`) against KL per config, with `on_front`: no other config of the same model, target and
    condition has at least as much behavior at no more KL (and is strictly better in one)."""
    agg = with_model_id(agg)
    beh = agg[(agg["metric"] == "behavior") & (agg["split"] == split)].set_index(CONFIG_KEYS)["mean"]
    kl = agg[agg["metric"] == "kl"].groupby(CONFIG_KEYS)["mean"].mean()
    pts = pd.concat({"behavior": beh, "kl": kl}, axis=1).dropna().reset_index()
    pts = pts.sort_values(MATCH_KEYS + ["kl", "behavior"], ascending=[True] * len(MATCH_KEYS) + [True, False])
    front = []
    for _, grp in pts.groupby(MATCH_KEYS, sort=False):
        best, best_kl = -np.inf, np.nan
        for b, k in zip(grp["behavior"], grp["kl"]):
            on = b > best or (b == best and k == best_kl)  # ties are not dominated
            if b > best:
                best, best_kl = b, k
            front.append(on)
    pts["on_front"] = front
    return pts.sort_values(MATCH_KEYS + ["kl", "behavior"]).reset_index(drop=True)


def reference_condition(table: pd.DataFrame) -> dict[str, float]:
    """The condition the headline numbers are read at: per dial, the value with the most cells (the grid's default,
    when the study varies one dial at a time); ties go to anticipation nearest 0.5, or the cleanest labeler."""
    ref: dict[str, float] = {}
    for dial in DIALS:
        counts = table.groupby(dial)["run_id"].nunique()
        if counts.empty:
            continue
        vals = counts.index.to_numpy(dtype=np.float64)
        tie = np.abs(vals - 0.5) if dial == "anticipation" else vals
        order = np.lexsort((vals, tie, -counts.to_numpy()))
        ref[dial] = float(vals[order[0]])
    return ref


def at_reference(frame: pd.DataFrame, ref: dict[str, float], skip: str | None = None) -> pd.DataFrame:
    """Rows of `frame` at the reference condition, on every dial but `skip` (the one being varied)."""
    mask = np.ones(len(frame), dtype=bool)
    for dial, value in ref.items():
        if dial != skip and dial in frame:
            mask &= frame[dial].to_numpy() == value
    return frame[mask]
