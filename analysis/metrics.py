"""Seed aggregation with bootstrap 95% CIs, and the study's derived metrics, all from the tidy results table.

Every CI is a percentile bootstrap over seeds (the independent replicate of a cell), seeded and deterministic; `n`
(seeds) is always reported and n=1 is flagged (its CI collapses to the value). Gains are paired by seed against the
base model (method "none") with the same model, target, anticipation, labeler settings and seed.

    agg = aggregate(load_table("results/default"))
    cost = cost_to_threshold(table, threshold=0.8)   # smallest budget whose mean behavior reaches 0.8
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd

from analysis.table import BASE_METHOD

# `model_id` (the model's identity) is what keeps two models apart; `model`, its one-to-one label, rides along.
CONFIG_KEYS = ["model", "model_id", "method", "target", "target_version", "anticipation", "labeler_noise",
               "labeler_misspec", "budget"]
# What a base ("none") row must share with a method row to be its baseline (plus the seed); budget is ignored.
MATCH_KEYS = ["model", "model_id", "target", "target_version", "anticipation", "labeler_noise", "labeler_misspec"]
DIALS = ("anticipation", "labeler_noise", "labeler_misspec")
N_BOOT = 1000
Stat = Callable[[dict[str, np.ndarray]], np.ndarray]


def with_model_id(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with a `model_id` column: a hand-built table without one is taken to name each model once."""
    return frame if "model_id" in frame or "model" not in frame else frame.assign(model_id=frame["model"])


def behavior_measures(table: pd.DataFrame) -> tuple[pd.DataFrame, dict[tuple[str, str], str]]:
    """The table with a `behavior` row beside every `ab_propensity` row of a (model, target) that has no `behavior`
    rows (an A/B data set evaluated by propensity alone), and the measure each (model, target) reads as behavior."""
    table = with_model_id(table)
    measures: dict[tuple[str, str], str] = {}
    copies = []
    for (model, target), grp in table.groupby(["model", "target"], sort=True):
        metrics = set(grp["metric"])
        if "behavior" in metrics:
            measures[(model, target)] = "behavior"
        elif "ab_propensity" in metrics:
            measures[(model, target)] = "ab_propensity"
            copies.append(grp[grp["metric"] == "ab_propensity"].assign(metric="behavior"))
    if copies:
        table = pd.concat([table, *copies], ignore_index=True)
    return table, measures


def missing_splits(table: pd.DataFrame) -> dict[tuple[str, str], tuple[str, str]]:
    """(split, why) for each (model, target) with behavior rows but none on uncovered (or covered) contexts."""
    beh = table[table["metric"] == "behavior"]
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for (model, target), grp in beh.groupby(["model", "target"], sort=True):
        splits = set(grp["split"])
        if "uncovered" not in splits:
            if (grp["anticipation"] < 1.0).any():
                why = ("no uncovered split: anticipation has no effect, because every record of this target is in one "
                       "context, which the feedback covers at every anticipation; only covered contexts are reported")
            else:
                why = "no uncovered split: anticipation 1 covers every context; only covered contexts are reported"
            out[(model, target)] = ("uncovered", why)
        elif "covered" not in splits:
            out[(model, target)] = ("covered", "no covered split: anticipation 0 leaves every context uncovered")
    return out


def method_order(methods: Iterable[str]) -> list[str]:
    """The base model first, then the others alphabetically: one order for every table and figure."""
    uniq = sorted(set(methods))
    return ([BASE_METHOD] if BASE_METHOD in uniq else []) + [m for m in uniq if m != BASE_METHOD]


def boot_weights(n: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """(n_boot, n) resampling counts. Seeded by (seed, n) only, so a group's CI does not depend on other groups."""
    rng = np.random.default_rng([seed, n])
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def _quantiles(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows (undefined stat) stay NaN
        lo, hi = np.nanquantile(draws, [0.025, 0.975], axis=-1)
    return lo, hi


def seed_bootstrap(frame: pd.DataFrame, keys: list[str], cols: list[str], stats: dict[str, Stat],
                   n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Bootstrap over seeds, per group of `keys`: each stat is a function of the seed-means of `cols`.

    `frame` has one row per (keys, seed) (repeats are averaged). NaN entries are left out of that column's mean only.
    Returns the keys, and for each stat `name`, `name_lo`, `name_hi`; plus `n` (seeds with a value) and
    `single_seed`.
    """
    out_cols = [c for s in stats for c in (s, f"{s}_lo", f"{s}_hi")]
    if frame.empty:
        return pd.DataFrame(columns=keys + out_cols + ["n", "single_seed"])
    f = frame.groupby(keys + ["seed"], sort=True, dropna=False)[cols].mean().reset_index()
    sizes = f.groupby(keys, sort=True, dropna=False).size()
    n_arr = sizes.to_numpy()
    starts = np.concatenate([[0], np.cumsum(n_arr)[:-1]])
    values = {c: f[c].to_numpy(dtype=np.float64) for c in cols}
    result = {c: np.full(len(n_arr), np.nan) for c in out_cols}
    n_seeds = np.zeros(len(n_arr), dtype=np.int64)  # seeds with a value, which is what a CI rests on
    with np.errstate(all="ignore"):
        for n in np.unique(n_arr):
            g = np.flatnonzero(n_arr == n)
            idx = starts[g][:, None] + np.arange(n)
            weights = boot_weights(int(n), n_boot, seed)
            point, draws = {}, {}
            any_value = np.zeros(idx.shape, dtype=bool)
            for c in cols:
                x = values[c][idx]
                have = ~np.isnan(x)
                any_value |= have
                x0 = np.where(have, x, 0.0)
                point[c] = x0.sum(1) / have.sum(1)
                draws[c] = (x0 @ weights.T) / (have.astype(np.float64) @ weights.T)
            n_seeds[g] = any_value.sum(1)
            for name, fn in stats.items():
                est = fn(point)
                lo, hi = _quantiles(fn(draws))
                undefined = np.isnan(est)
                result[name][g] = est
                result[f"{name}_lo"][g] = np.where(undefined, np.nan, lo)
                result[f"{name}_hi"][g] = np.where(undefined, np.nan, hi)
    out = sizes.index.to_frame(index=False)
    for c in out_cols:
        out[c] = result[c]
    out["n"] = n_seeds
    out["single_seed"] = out["n"] == 1
    return out


def aggregate(table: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Mean over seeds of every (config, split, metric), with its bootstrap 95% CI and n.

    Columns: CONFIG_KEYS, split, metric, mean, ci_lo, ci_hi, n, single_seed, feedback_cost, labels_used, samples.
    """
    table = with_model_id(table)
    keys = CONFIG_KEYS + ["split", "metric"]
    agg = seed_bootstrap(table, keys, ["value"], {"mean": lambda m: m["value"]}, n_boot, seed)
    agg = agg.rename(columns={"mean_lo": "ci_lo", "mean_hi": "ci_hi"})
    extra = table.groupby(keys, sort=True).agg(feedback_cost=("feedback_cost", "mean"),
                                              labels_used=("labels_used", "mean"), samples=("n", "sum"))
    return agg.merge(extra.reset_index(), on=keys, how="left")


def with_base(table: pd.DataFrame, metric: str = "behavior") -> pd.DataFrame:
    """Rows of `metric` for every method but the base, with the seed-matched base value and `gain` (NaN if no base)."""
    table = with_model_id(table)
    rows = table[table["metric"] == metric]
    on = MATCH_KEYS + ["seed", "split"]
    base = rows[rows["method"] == BASE_METHOD].groupby(on, sort=True)["value"].mean().rename("base").reset_index()
    out = rows[rows["method"] != BASE_METHOD].merge(base, on=on, how="left")
    out["gain"] = out["value"] - out["base"]
    return out


def missing_base(table: pd.DataFrame) -> pd.DataFrame:
    """Configurations (MATCH_KEYS + method) with behavior rows but no base-model cell of the same seed."""
    table = with_model_id(table)
    rows = table[table["metric"] == "behavior"]
    on = MATCH_KEYS + ["seed"]
    base = rows.loc[rows["method"] == BASE_METHOD, on].drop_duplicates()
    m = rows[rows["method"] != BASE_METHOD].merge(base, on=on, how="left", indicator=True)
    miss = m.loc[m["_merge"] == "left_only", MATCH_KEYS + ["method"]].drop_duplicates()
    return miss.sort_values(MATCH_KEYS + ["method"]).reset_index(drop=True)


def gains(table: pd.DataFrame, metric: str = "behavior", n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Mean gain over the base model per (config, split), paired by seed, with CI."""
    b = with_base(table, metric)
    return seed_bootstrap(b, CONFIG_KEYS + ["split"], ["gain"], {"gain": lambda m: m["gain"]}, n_boot, seed)


def _groups(frame: pd.DataFrame, keys: list[str]) -> list[tuple[tuple, dict[str, np.ndarray]]]:
    """(key, {column: values}) per group, in sorted key order; numpy slices, because per-group pandas objects cost
    milliseconds each and a large study has thousands of groups."""
    if frame.empty:
        return []
    cols = {c: frame[c].to_numpy() for c in ("budget", "seed", "value", "feedback_cost", "labels_used")
            if c in frame} | {c: frame[c].to_numpy(dtype=np.float64) for c in DIALS if c in frame}
    out = []
    for key, idx in sorted(frame.groupby(keys, sort=True).indices.items()):
        out.append((key, {c: v[idx] for c, v in cols.items()}))
    return out


def cost_to_threshold(table: pd.DataFrame, threshold: float = 0.8, splits: Iterable[str] = ("covered", "uncovered"),
                      metric: str = "behavior", n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Smallest budget whose mean `metric` (over seeds) reaches `threshold`, per method and condition and split.

    The CI resamples seeds (each seed's cells at every budget move together) and takes the 2.5/97.5% quantiles of the
    resulting first-crossing budget; `inf` where it is never reached (in the estimate or in a draw).
    """
    table = with_model_id(table)
    keys = [k for k in CONFIG_KEYS if k != "budget"] + ["split"]
    rows = table[(table["metric"] == metric) & table["split"].isin(list(splits)) & (table["method"] != BASE_METHOD)]
    base = with_base(table, metric).groupby(keys, sort=True)["base"].mean()
    records = []
    for key, grp in _groups(rows, keys):
        budgets, bi = np.unique(grp["budget"], return_inverse=True)
        seeds, si = np.unique(grp["seed"], return_inverse=True)
        x = np.full((len(budgets), len(seeds)), np.nan)  # (budgets, seeds); a seed missing at a budget stays NaN
        x[bi, si] = grp["value"]
        count = np.bincount(bi, minlength=len(budgets))
        cost = {c: np.bincount(bi, grp[c], len(budgets)) / count for c in ("feedback_cost", "labels_used")}
        have = ~np.isnan(x)
        x0 = np.where(have, x, 0.0)
        with np.errstate(all="ignore"):
            mean = x0.sum(1) / have.sum(1)
            w = boot_weights(len(seeds), n_boot, seed)
            draws = (w @ x0.T) / (w @ have.T.astype(np.float64))  # (n_boot, budgets)
        budgets = budgets.astype(np.float64)
        first = lambda ok: np.where(ok.any(-1), budgets[np.argmax(ok, axis=-1)], np.inf)  # noqa: E731
        est = float(first(mean >= threshold))
        lo, hi = np.quantile(first(draws >= threshold), [0.025, 0.975], method="inverted_cdf")
        at = lambda b, c: float(cost[c][budgets == b][0]) if np.isfinite(b) else np.inf  # noqa: E731
        records.append(dict(zip(keys, key)) | {
            "threshold": threshold, "budget": est, "budget_lo": float(lo), "budget_hi": float(hi),
            "feedback_cost": at(est, "feedback_cost"), "cost_lo": at(lo, "feedback_cost"),
            "cost_hi": at(hi, "feedback_cost"), "labels": at(est, "labels_used"), "reached": bool(np.isfinite(est)),
            "max_budget": float(budgets.max()), "n": len(seeds), "base": float(base.get(key, np.nan)),
        })
    cols = keys + ["threshold", "budget", "budget_lo", "budget_hi", "feedback_cost", "cost_lo", "cost_hi", "labels",
                   "reached", "max_budget", "n", "base"]
    return pd.DataFrame(records, columns=cols)


def generalization(table: pd.DataFrame, min_gain: float = 0.02, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Generalization ratio = uncovered gain / covered gain over the base, per config (ratio of seed-means).

    NaN where the covered gain is below `min_gain`, or its CI does not exclude 0 (`covered_gain_clear` False; always
    so with one seed): a ratio over a gain that is noise says nothing.
    """
    table = with_model_id(table)
    b = with_base(table)
    b = b[b["split"].isin(["covered", "uncovered"])]
    wide = b.groupby(CONFIG_KEYS + ["seed", "split"], sort=True)["gain"].mean().unstack("split")
    wide = wide.reindex(columns=["covered", "uncovered"]).reset_index()
    wide.columns.name = None

    def ratio(m: dict[str, np.ndarray]) -> np.ndarray:
        return np.where(np.abs(m["covered"]) >= min_gain, m["uncovered"] / m["covered"], np.nan)

    stats = {"ratio": ratio, "gain_covered": lambda m: m["covered"], "gain_uncovered": lambda m: m["uncovered"]}
    out = seed_bootstrap(wide, CONFIG_KEYS, ["covered", "uncovered"], stats, n_boot, seed)
    # A ratio is read only over a covered gain that is clearly above zero: its CI excludes 0, which one seed cannot
    # show. Elsewhere the ratio is noise over noise, however large.
    out["covered_gain_clear"] = (out["gain_covered_lo"] > 0) & (out["n"] >= 2)
    for c in ("ratio", "ratio_lo", "ratio_hi"):
        out[c] = out[c].where(out["covered_gain_clear"])
    return out


def slope(table: pd.DataFrame, x: str = "anticipation", metric: str = "behavior", n_boot: int = N_BOOT,
          seed: int = 0) -> pd.DataFrame:
    """Least-squares slope of `metric` against the dial `x`, per method and the other settings and split.

    CI: resample seeds (all of a seed's points together), refit by weighted least squares. Groups with fewer than two
    distinct values of `x` are left out.
    """
    table = with_model_id(table)
    keys = [k for k in CONFIG_KEYS if k != x] + ["split"]
    rows = table[(table["metric"] == metric) & table["value"].notna()]
    records, all_draws = [], []
    for key, grp in _groups(rows, keys):
        xs = grp[x]
        if np.unique(xs).size < 2:
            continue
        ys = grp["value"]
        uniq, codes = np.unique(grp["seed"], return_inverse=True)
        w = boot_weights(len(uniq), n_boot, seed)[:, codes]  # (n_boot, points)
        with np.errstate(all="ignore"):
            sw = w.sum(1, keepdims=True)
            dx = xs - (w @ xs)[:, None] / sw
            dy = ys - (w @ ys)[:, None] / sw
            sxx = (w * dx * dx).sum(1)
            draws = np.where(sxx > 0, (w * dx * dy).sum(1) / sxx, np.nan)
        all_draws.append(draws)
        records.append(dict(zip(keys, key)) | {
            "x": x, "slope": float(np.polyfit(xs, ys, 1)[0]), "x_min": float(xs.min()), "x_max": float(xs.max()),
            "n_x": int(np.unique(xs).size), "n": len(uniq), "single_seed": len(uniq) == 1})
    cols = keys + ["x", "slope", "slope_lo", "slope_hi", "x_min", "x_max", "n_x", "n", "single_seed"]
    out = pd.DataFrame(records, columns=cols)
    if records:  # one quantile call for all groups: per-group calls dominate the cost on a large study
        out["slope_lo"], out["slope_hi"] = _quantiles(np.vstack(all_draws))
    return out


def side_effects(table: pd.DataFrame, min_gain: float = 0.02, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Side effects per percentage point (0.01) of behavior gained on all test contexts, per config.

    kl: per-token KL(policy || base) on neutral prompts; fluency_loss: base fluency minus fluency (split all);
    drift: mean |drift:<other target>|. Each `*_per_pt` divides a seed-mean by 100 x the mean behavior gain, and is
    NaN where that gain is below `min_gain`.
    """
    table = with_model_id(table)
    per_seed = CONFIG_KEYS + ["seed"]
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
    return seed_bootstrap(wide, CONFIG_KEYS, cols, stats, n_boot, seed)


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
