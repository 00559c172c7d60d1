"""The study's figures as deterministic PNGs (Agg backend, fixed size and dpi, no Software/date metadata), each with
the numbers it plots beside it as a tidy CSV (same stem), so a figure can be checked against a known answer and
re-plotted by hand.

Each figure function takes the results table, writes one PNG and its CSV and returns the PNG's path, or returns None
and appends a note to `notes` when the table lacks the variation the figure needs (e.g. a single anticipation value).
Figures read the reference condition (`metrics.reference_condition`) on every dial they do not vary. Every CSV names
the panel a row is drawn in (`facet`, then `split` or `dial` where there are several panels per facet) and the
`method`; the docstring of each figure function lists its other columns.

    notes: list[str] = []
    behavior_vs_cost(load_table("results/default"), "reports/figures/behavior_vs_cost.png", notes)
    pd.read_csv("reports/figures/behavior_vs_cost.csv")   # what was plotted
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

from analysis import metrics as M
from analysis.plotting import (DIAL_LABELS, FIGURE_SPLITS, SPLIT_TITLES, _band, _cost_ticks, _facets, _figure,
                               _largest_budget, _no_split, _palette, _records, _ref_text, _same_facet, _save, _skip,
                               _styled, data_path)
from analysis.table import BASE_METHOD

__all__ = ["FIGURES", "data_path", "write_figures"]

# The CSV columns of each figure, in order; `facet` is the panel title.
COST_COLS = ["facet", "model", "target", "split", "method", "budget", "feedback_cost", "mean", "ci_lo", "ci_hi", "n"]
DIAL_COLS = ["facet", "dial", "model", "target", "split", "method", "x", "budget", "feedback_cost", "mean", "ci_lo",
             "ci_hi", "n"]
PARETO_COLS = ["facet", "model", "target", "method", "budget", "kl", "behavior", "on_front"]
THRESHOLD_COLS = ["facet", "model", "target", "split", "method", "threshold", "reached", "budget", "feedback_cost",
                  "cost_lo", "cost_hi", "n"]
STEERING_COLS = ["facet", "model", "target", "method", "source", "samples", "p10", "p25", "p50", "p75", "p90",
                 "anti_steerable"]



@_styled
def behavior_vs_cost(table: pd.DataFrame, path: str | Path, notes: list[str] | None = None, *,
                     agg: pd.DataFrame | None = None, ref: dict[str, float] | None = None) -> Path | None:
    """Behavior against feedback cost per method, with CI bands; covered and uncovered panels. The x axis is
    logarithmic above 1 and linear below (symlog), so zero-cost points (an instruction alone) have a place; its ticks
    are the budgets the study ran (a method may spend less than its budget).

    CSV: facet, model, target, split, method, budget, feedback_cost (x), mean, ci_lo, ci_hi, n. Rows of the base
    model (`none`) are its dashed horizontal line, drawn at their mean."""
    name = "behavior vs feedback cost"
    agg = M.aggregate(table) if agg is None else agg
    ref = M.reference_condition(table) if ref is None else ref
    d = M.at_reference(agg[(agg["metric"] == "behavior") & agg["split"].isin(FIGURE_SPLITS)], ref)
    d = d[d["mean"].notna()]  # an undefined mean (no scorable sample) has no place on the axes
    if d.empty:
        return _skip(notes, name, "no behavior on covered or uncovered contexts at the reference condition")
    base = d[d["method"] == BASE_METHOD]
    d = d[d["method"] != BASE_METHOD]
    if d.empty or d.groupby(["model", "target", "method"])["feedback_cost"].nunique().max() < 2:
        return _skip(notes, name, "no method was run at two or more feedback costs")
    ticks = _cost_ticks(sorted({float(b) for b in d["budget"]}))
    splits = [s for s in FIGURE_SPLITS if s in set(d["split"])]
    facets = _facets(d)
    colors = _palette(M.method_order(table["method"]))
    fig, axes = _figure(len(facets), len(splits))
    data: list[dict[str, object]] = []
    for i, (label, fd) in enumerate(facets):
        for j, split in enumerate(splits):
            ax = axes[i, j]
            sd = fd[fd["split"] == split]
            b = _same_facet(base, fd)
            b = b[b["split"] == split]
            if sd.empty and b.empty:
                _no_split(ax, split)
                continue
            data += _records(b.sort_values("feedback_cost"), COST_COLS, facet=label)
            for method in M.method_order(sd["method"]):
                md = sd[sd["method"] == method].sort_values("feedback_cost")
                data += _records(md, COST_COLS, facet=label)
                _band(ax, md, "feedback_cost", colors[method], method)
            if not b.empty:
                ax.axhline(float(b["mean"].mean()), color=(0.4, 0.4, 0.4), ls="--", lw=1, label="none (base)")
            ax.set_xscale("symlog", linthresh=1.0, linscale=0.4)
            ax.xaxis.set_major_locator(FixedLocator(ticks))
            ax.xaxis.set_major_formatter(FixedFormatter([f"{t:g}" for t in ticks]))
            ax.xaxis.set_minor_locator(NullLocator())
            lo, hi = min(ticks), max(ticks)  # a margin, so points at the smallest and largest budget are not cut
            ax.set_xlim(lo - 0.3 if lo < 1 else lo / 1.3, hi * 1.3 if hi >= 1 else hi + 0.3)
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{label}: {SPLIT_TITLES[split]}", fontsize=9)
            ax.set_xlabel("feedback cost (cost units, log scale above 1)")
            ax.set_ylabel("behavior rate")
    return _save(fig, path, f"Behavior vs feedback cost (mean, 95% CI over seeds) at {_ref_text(ref)}", data,
                 COST_COLS)


def _behavior_vs_dials(table: pd.DataFrame, path: str | Path, notes: list[str] | None, dials: list[str],
                       splits: list[str], name: str, agg: pd.DataFrame | None,
                       ref: dict[str, float] | None) -> Path | None:
    agg = M.aggregate(table) if agg is None else agg
    ref = M.reference_condition(table) if ref is None else ref
    beh = agg[(agg["metric"] == "behavior") & agg["split"].isin(splits) & agg["mean"].notna()]
    panels, flat = [], []  # (dial, split, data); dials without variation
    for dial in dials:
        d = _largest_budget(M.at_reference(beh, ref, skip=dial))
        if d[dial].nunique() < 2:
            flat.append(DIAL_LABELS[dial])
            continue
        panels += [(dial, s, d[d["split"] == s]) for s in splits if (d["split"] == s).any()]
    if flat:
        _skip(notes, name if not panels else f"{name} ({' and '.join(flat)} panels)",
              f"a single {' and a single '.join(flat)} value at the reference condition")
    if not panels:
        return None
    facets = _facets(pd.concat([p[2] for p in panels]))
    colors = _palette(M.method_order(table["method"]))
    fig, axes = _figure(len(facets), len(panels))
    data: list[dict[str, object]] = []
    for i, (label, facet) in enumerate(facets):
        for j, (dial, split, d) in enumerate(panels):
            ax = axes[i, j]
            fd = _same_facet(d, facet)
            if fd.empty:
                _no_split(ax, split)
                continue
            for method in M.method_order(fd["method"]):
                md = fd[fd["method"] == method].sort_values(dial)
                data += _records(md.assign(x=md[dial]), DIAL_COLS, facet=label, dial=dial)
                _band(ax, md, dial, colors[method], method, dashed=method == BASE_METHOD)
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{label}: {SPLIT_TITLES[split]}", fontsize=9)
            ax.set_xlabel(DIAL_LABELS[dial])
            ax.set_ylabel("behavior rate")
    return _save(fig, path, f"Behavior vs {' and '.join(DIAL_LABELS[d] for d in dials)} at each method's largest "
                            "budget (mean, 95% CI)", data, DIAL_COLS)


@_styled
def behavior_vs_anticipation(table: pd.DataFrame, path: str | Path, notes: list[str] | None = None, *,
                             agg: pd.DataFrame | None = None, ref: dict[str, float] | None = None) -> Path | None:
    """Behavior against anticipation per method (covered, uncovered and all test contexts).

    CSV: facet, dial, model, target, split, method, x (the dial's value), budget, feedback_cost, mean, ci_lo, ci_hi,
    n; one panel per (dial, split)."""
    return _behavior_vs_dials(table, path, notes, ["anticipation"], ["covered", "uncovered", "all"],
                              "behavior vs anticipation", agg, ref)


@_styled
def behavior_vs_labeler(table: pd.DataFrame, path: str | Path, notes: list[str] | None = None, *,
                        agg: pd.DataFrame | None = None, ref: dict[str, float] | None = None) -> Path | None:
    """Behavior against labeler noise and against misspecification (covered and uncovered panels).

    CSV: as `behavior_vs_anticipation`, with dial labeler_noise or labeler_misspec."""
    return _behavior_vs_dials(table, path, notes, ["labeler_noise", "labeler_misspec"], list(FIGURE_SPLITS),
                              "behavior vs labeler quality", agg, ref)


@_styled
def pareto_front(table: pd.DataFrame, path: str | Path, notes: list[str] | None = None, *,
                 agg: pd.DataFrame | None = None, ref: dict[str, float] | None = None) -> Path | None:
    """Behavior (all test contexts) against KL per config; the Pareto front is drawn as a black line.

    CSV: facet, model, target, method, budget, kl (x), behavior (y), on_front."""
    name = "side effects vs behavior (Pareto)"
    agg = M.aggregate(table) if agg is None else agg
    ref = M.reference_condition(table) if ref is None else ref
    pts = M.at_reference(M.pareto(agg), ref)
    if len(pts) < 2:
        return _skip(notes, name, "fewer than two configs with both behavior and KL")
    facets = _facets(pts)
    colors = _palette(M.method_order(table["method"]))
    fig, axes = _figure(len(facets), 1)
    data: list[dict[str, object]] = []
    for i, (label, fd) in enumerate(facets):
        ax = axes[i, 0]
        for method in M.method_order(fd["method"]):
            md = fd[fd["method"] == method].sort_values(["kl", "budget"])
            data += _records(md, PARETO_COLS, facet=label)
            ax.scatter(md["kl"], md["behavior"], s=18, color=colors[method], label=method, zorder=3)
        front = fd[fd["on_front"]].sort_values("kl")
        ax.step(front["kl"], front["behavior"], where="post", color="black", lw=1.2, label="Pareto front", zorder=2)
        ax.scatter(front["kl"], front["behavior"], s=60, facecolors="none", edgecolors="black", lw=1, zorder=4)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("KL(policy || base) per token, neutral prompts")
        ax.set_ylabel("behavior rate, all test contexts")
    return _save(fig, path, f"Side effects vs behavior, every budget, at {_ref_text(ref)}", data,
                 PARETO_COLS)


@_styled
def cost_to_threshold_bars(table: pd.DataFrame, path: str | Path, notes: list[str] | None = None, *,
                           cost: pd.DataFrame | None = None, ref: dict[str, float] | None = None,
                           threshold: float = 0.8) -> Path | None:
    """Feedback cost to reach the behavior threshold per method (bar, 95% CI); methods that never reach it say so.

    CSV: facet, model, target, split, method, threshold, reached, budget, feedback_cost (the bar), cost_lo, cost_hi,
    n. A method that is "not reached" has reached False and cost inf (blank when it has no row in that split); an
    open CI has cost_hi inf."""
    name = "cost to threshold"
    cost = M.cost_to_threshold(table, threshold) if cost is None else cost
    ref = M.reference_condition(table) if ref is None else ref
    d = M.at_reference(cost, ref)
    if d.empty or not d["reached"].any():
        return _skip(notes, name, f"no method reached behavior {threshold:g} at the reference condition")
    splits = [s for s in FIGURE_SPLITS if (d["split"] == s).any()]
    facets = _facets(d)
    colors = _palette(M.method_order(table["method"]))
    fig, axes = _figure(len(facets), len(splits))
    data: list[dict[str, object]] = []
    for i, (label, fd) in enumerate(facets):
        methods = M.method_order(fd["method"])
        for j, split in enumerate(splits):
            ax = axes[i, j]
            sd = fd[fd["split"] == split].set_index("method")
            if sd.empty:  # no such split for this target: not "not reached" either
                _no_split(ax, split)
                continue
            top = float(np.nanmax(np.where(np.isfinite(fd["cost_hi"]), fd["cost_hi"], fd["feedback_cost"])))
            top = top if np.isfinite(top) and top > 0 else 1.0
            for k, method in enumerate(methods):
                r = sd.loc[method] if method in sd.index else None
                data.append({"facet": label, "model": fd["model"].iloc[0], "target": fd["target"].iloc[0],
                             "split": split, "method": method, "threshold": threshold, "reached": False} |
                            ({} if r is None else {c: r[c] for c in THRESHOLD_COLS[6:]}))
                if r is None or not r["reached"]:
                    ax.text(k, 0.03, "not\nreached", ha="center", va="bottom", fontsize=7, color=colors[method],
                            transform=ax.get_xaxis_transform())
                    continue
                est = r["feedback_cost"]
                hi = r["cost_hi"] if np.isfinite(r["cost_hi"]) else top * 2  # an open CI runs off the top
                ax.bar(k, est, color=colors[method], width=0.7, label=method)
                # Costs need not rise with the budget exactly, so clip: matplotlib refuses negative error bars.
                ax.errorbar(k, est, yerr=[[max(est - r["cost_lo"], 0.0)], [max(hi - est, 0.0)]], color="black",
                            capsize=3, lw=1)
            ax.set_yscale("log")
            ax.set_xlim(-0.6, len(methods) - 0.4)  # room for the "not reached" labels at the ends
            ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=8)
            ax.set_title(f"{label}: {SPLIT_TITLES[split]}", fontsize=9)
            ax.set_ylabel("feedback cost to threshold (log)")
    return _save(fig, path, f"Feedback cost to reach behavior {threshold:g} (95% CI over seeds) at {_ref_text(ref)}",
                 data, THRESHOLD_COLS)


@_styled
def steering_reliability(table: pd.DataFrame, path: str | Path, notes: list[str] | None = None, *,
                         slopes: pd.DataFrame | None = None, ref: dict[str, float] | None = None) -> Path | None:
    """Per-sample steering slope distribution per method (JSONL when present, else the p10/p50/p90 rows).

    CSV, one row per facet and method: facet, model, target, method, source (samples or quantile rows), samples (how
    many per-sample slopes), p10, p25, p50, p75, p90 (p25/p75 blank from quantile rows), anti_steerable (the table's
    anti-steerable share, else the share of negative slopes). The points outside p10-p90 are in the cells' JSONL."""
    name = "steering reliability"
    ref = M.reference_condition(table) if ref is None else ref
    q = _largest_budget(M.at_reference(table[table["metric"].isin(["slope_p10", "slope_p50", "slope_p90",
                                                                   "anti_steerable"])], ref))
    if q.empty:
        return _skip(notes, name, "no steering slope rows in the table")
    cells = q[["run_id", "model", "target", "method"]].drop_duplicates()
    per_sample = slopes is not None and not slopes.empty and slopes["run_id"].isin(cells["run_id"]).any()
    facets = _facets(q)
    colors = _palette(M.method_order(table["method"]))
    fig, axes = _figure(len(facets), 1)
    data: list[dict[str, object]] = []
    for i, (label, fd) in enumerate(facets):
        ax = axes[i, 0]
        methods = M.method_order(fd["method"])
        anti = fd[fd["metric"] == "anti_steerable"].groupby("method")["value"].mean()
        drawn: dict[str, dict[str, float]] = {}
        if per_sample:
            # Quantiles drawn by hand rather than with sns.boxplot, whose `vert=` matplotlib is removing.
            s = slopes.merge(cells[cells["run_id"].isin(fd["run_id"])], on="run_id")
            for k, method in enumerate(methods):
                v = s.loc[s["method"] == method, "slope"].to_numpy()
                if v.size == 0:
                    continue
                p10, p25, p50, p75, p90 = np.quantile(v, [0.1, 0.25, 0.5, 0.75, 0.9])
                drawn[method] = {"samples": v.size, "p10": p10, "p25": p25, "p50": p50, "p75": p75, "p90": p90}
                ax.bar(k, p75 - p25, bottom=p25, width=0.5, color=colors[method], edgecolor="black", lw=0.8)
                ax.vlines([k, k], [p10, p75], [p25, p90], color="black", lw=0.8)
                ax.hlines(p50, k - 0.25, k + 0.25, color="black", lw=1.5)
                out = v[(v < p10) | (v > p90)]
                ax.plot(np.full(out.size, k), out, ".", color=(0.3, 0.3, 0.3), ms=2)
                if method not in anti.index:
                    anti[method] = float((v < 0).mean())
        else:
            qs = fd.pivot_table(index="method", columns="metric", values="value", aggfunc="mean")
            for k, method in enumerate(methods):
                if method in qs.index and {"slope_p10", "slope_p90"} <= set(qs.columns):
                    p10, p50, p90 = (qs.loc[method].get(f"slope_{p}", np.nan) for p in ("p10", "p50", "p90"))
                    drawn[method] = {"samples": 0, "p10": p10, "p50": p50, "p90": p90}
                    ax.vlines(k, p10, p90, color=colors[method], lw=3)
                    ax.plot(k, p50, "o", color="black", ms=4)
        for method in methods:
            data.append({"facet": label, "model": fd["model"].iloc[0], "target": fd["target"].iloc[0],
                         "method": method, "source": "samples" if per_sample else "quantile rows"}
                        | drawn.get(method, {"samples": 0}) | {"anti_steerable": anti.get(method, np.nan)})
        ticks = [f"{m}\n(anti {anti[m]:.0%})" if m in anti.index else m for m in methods]
        ax.set_xticks(range(len(methods)), ticks)
        ax.axhline(0.0, color="black", lw=0.8, ls=":")
        ax.tick_params(axis="x", labelsize=8)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("")
        ax.set_ylabel("per-sample steering slope")
    source = "per-sample slopes: box p25-p75, whiskers p10-p90" if per_sample else \
        "p10-p90 range and median of per-sample slopes"
    return _save(fig, path, f"Steering reliability ({source}; share anti-steerable), largest budget", data,
                 STEERING_COLS)


FIGURES: dict[str, Callable[..., Path | None]] = {
    "behavior_vs_cost": behavior_vs_cost,
    "behavior_vs_anticipation": behavior_vs_anticipation,
    "behavior_vs_labeler": behavior_vs_labeler,
    "pareto": pareto_front,
    "cost_to_threshold": cost_to_threshold_bars,
    "steering_reliability": steering_reliability,
}


def write_figures(table: pd.DataFrame, out_dir: str | Path, notes: list[str] | None = None, *,
                  agg: pd.DataFrame | None = None, cost: pd.DataFrame | None = None,
                  slopes: pd.DataFrame | None = None, ref: dict[str, float] | None = None,
                  threshold: float = 0.8) -> dict[str, Path | None]:
    """Every figure into `out_dir/<name>.png`; None for those skipped (with a note)."""
    agg = M.aggregate(table) if agg is None else agg
    ref = M.reference_condition(table) if ref is None else ref
    out = Path(out_dir)
    return {
        "behavior_vs_cost": behavior_vs_cost(table, out / "behavior_vs_cost.png", notes, agg=agg, ref=ref),
        "behavior_vs_anticipation": behavior_vs_anticipation(table, out / "behavior_vs_anticipation.png", notes,
                                                             agg=agg, ref=ref),
        "behavior_vs_labeler": behavior_vs_labeler(table, out / "behavior_vs_labeler.png", notes, agg=agg, ref=ref),
        "pareto": pareto_front(table, out / "pareto.png", notes, agg=agg, ref=ref),
        "cost_to_threshold": cost_to_threshold_bars(table, out / "cost_to_threshold.png", notes, cost=cost, ref=ref,
                                                    threshold=threshold),
        "steering_reliability": steering_reliability(table, out / "steering_reliability.png", notes, slopes=slopes,
                                                     ref=ref),
    }
