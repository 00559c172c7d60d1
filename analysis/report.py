"""Write REPORT.md, summary.json and the figures from a results store; every sentence is generated from the numbers.

Deterministic: no timestamps or absolute paths in the outputs, no random draws (t intervals), sorted keys, byte-identical PNGs, so
regenerating a report from the same store gives identical files. Files are written to a temporary name and renamed.
Numbers are per model (the "Models" section names each model's identity); a target evaluated by A/B propensity alone
reads `ab_propensity` as its behavior. Organism draws (the rows' `draw`: pretraining seeds of one organism config)
are replicates of one model, a random effect: every interval is over organism draws (each the mean of its seeds)
where there are several, and every n reads organisms x seeds; methods that ran on different draws are named. Cells
with coverage "ceiling" are set apart as the achievable level per split. The report opens with the motivating
argument's claims, each with a corrected interval and a verdict (`analysis.claims`).

    summary = write_report("results/default", "reports", threshold=0.8)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from analysis import choices as S
from analysis import claims as C
from analysis import figures as F
from analysis import findings as W
from analysis import metrics as M
from analysis import overopt as O
from analysis import prices as P
from analysis.paired import PairedTests
from analysis.table import BASE_METHOD, Results, atomic_write_bytes, load_slopes, read_results, study_run_ids

# Default threshold: an absolute behavior rate of 0.8 reads as "the model now mostly does it", sits well above the
# base rates the organism is built with (15-85% per context, so mostly below it) and below the ceiling that noise and
# disfluency leave. A parameter, since a target with a high base rate needs a higher one.
DEFAULT_THRESHOLD = 0.8
MAX_LISTED = 20


def _clean(x: Any) -> Any:
    """JSON-ready: numpy scalars to Python, NaN/inf to None (never reached / undefined), floats to 6 decimals (and
    -0.0, float noise below zero, to 0.0: the file must not depend on the order the cells were read in)."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return round(float(x), 6) + 0.0 if math.isfinite(x) else None
    return x


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out |= _flatten(v, f"{key}.")
        else:
            out[key] = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    return out


def _md(text: str) -> str:
    """Safe inside a one-line markdown table cell."""
    return " ".join(str(text).split()).replace("|", "/").replace("`", "'")


def _natural(v: str) -> tuple[int, float, str]:
    """Numbers in numeric order (8 before 32), then strings."""
    try:
        x = float(v)
    except ValueError:
        return (1, 0.0, v)
    return (0, x, v) if math.isfinite(x) else (1, 0.0, v)  # NaN keys would make the order hash-dependent


def _field_summary(dicts: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(dotted field, value) for fields shared by every cell, or the distinct values of those that vary."""
    flat = [_flatten(d) for d in dicts]
    keys = sorted(set().union(*flat)) if flat else []
    rows = []
    for k in keys:
        vals = sorted({f.get(k, "(absent)") for f in flat}, key=_natural)
        shown = ", ".join(v[:60] for v in vals[:8]) + (f", ... ({len(vals)} values)" if len(vals) > 8 else "")
        rows.append((k, shown if len(vals) == 1 else f"varies: {shown}"))
    return rows


def _volatile(field: str) -> bool:
    """Provenance fields that change from one run of the same cell to the next (timings, process, start time)."""
    last = field.rsplit(".", 1)[-1]
    return field.startswith("durations.") or field in ("pid", "started") or last.endswith("_seconds")


def _setup(results: Results, t: Any, ceiling: Any, ref: dict[str, float]) -> tuple[dict[str, Any], list[str]]:
    methods = M.method_order(t["method"])
    versions = t[["target", "target_version"]].drop_duplicates().sort_values(["target", "target_version"])
    setup = {
        "cells": {"ok": len(results.cells), "failed": len(results.failed), "skipped": len(results.skipped),
                  "other_studies": len(results.others)},
        "rows": len(t),
        "models": sorted(t["model"].unique()),
        "targets": [f"{a} (v{b})" for a, b in versions.itertuples(index=False)],
        "methods": methods,
        "budgets": sorted(int(b) for b in t.loc[t["method"] != BASE_METHOD, "budget"].unique()),
        "seeds": sorted(int(s) for s in t["seed"].unique()),
        "organism_draws": sorted(int(d) for d in t["draw"].unique()),
        "ceiling_cells": int(ceiling["run_id"].nunique()) if len(ceiling) else 0,
        "anticipation": sorted(float(v) for v in t["anticipation"].unique()),
        "labeler_noise": sorted(float(v) for v in t["labeler_noise"].unique()),
        "labeler_misspec": sorted(float(v) for v in t["labeler_misspec"].unique()),
        "reference": ref,
    }
    lines = ["## Set-up", "",
             f"Cells: {setup['cells']['ok']} ok, {setup['cells']['failed']} failed, "
             f"{setup['cells']['skipped']} unreadable (skipped)"
             + (f"; {setup['ceiling_cells']} of the ok cells are ceiling cells (oracle labels from every context), "
                "read as the achievable level per split" if setup["ceiling_cells"] else "")
             + (f"; {setup['cells']['other_studies']} other cell files in the directory are not this study's "
                "(`study.json`: an earlier config or code) and are left out" if setup["cells"]["other_studies"]
                else "") + ".", ""]
    for key in ("models", "targets", "methods", "budgets", "organism_draws", "seeds", "anticipation",
                "labeler_noise", "labeler_misspec"):
        lines.append(f"- {key.replace('_', ' ')}: {', '.join(str(v) for v in setup[key])}")
    lines += ["", "Headline numbers are read at the reference condition (each dial at the value with the most cells; "
              "ties go to anticipation nearest 0.5 and to the cleanest labeler): "
              + ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in ref.items()) + "; gains are paired by organism "
              "draw and seed against the base model (`none`) of the same model, target, condition, draw and seed.",
              ""]
    for title, key in (("Configuration", "config"), ("Provenance", "provenance")):
        rows = _field_summary([c[key] for _, c in sorted(results.cells.items())])
        if key == "provenance":  # when, where and how long: differs between reruns that give identical results
            rows = [(k, v) for k, v in rows if not _volatile(k)]
        if rows:
            note = " (timings and process ids: in each cell's file)" if key == "provenance" else ""
            lines += [f"<details><summary>{title} of the ok cells ({len(rows)} fields{note})</summary>", "",
                      "| field | value |", "| --- | --- |"]
            lines += [f"| `{_md(k)}` | {_md(v)} |" for k, v in rows] + ["", "</details>", ""]
    return setup, lines


def _pooled_models(t: Any) -> list[dict[str, Any]]:
    """One entry per (pooled) model identity: name, id, cells, and its organism draws (pretraining seeds)."""
    per = t.groupby(["model_id", "model"], sort=True).agg(cells=("run_id", "nunique"),
                                                          draws=("draw", lambda d: sorted(set(int(x) for x in d))))
    return [{"name": m, "id": i, "cells": int(r.cells)} | ({"draws": r.draws} if len(r.draws) > 1 else {})
            for (i, m), r in sorted(per.iterrows(), key=lambda kv: (kv[0][1], kv[0][0]))]


def _models(t: Any, measures: dict[tuple[str, str], str],
            missing: dict[tuple[str, str], tuple[str, str]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Which models the store holds (never averaged together), and per model what each target measures."""
    models = _pooled_models(t)
    lines = ["## Models", "", "Every number below is for one model: cells are grouped by the model's identity (the "
             "organism's key, or the Hugging Face path and revision), never averaged across models; draws of one "
             "organism config that differ only in the pretraining seed are one model (a random effect), their "
             "intervals over organism draws and every n organisms x seeds.", "",
             "| model | identity | cells | targets (behavior measure) |", "| --- | --- | --- | --- |"]
    for m in models:
        targets = sorted((t, v) for (name, t), v in measures.items() if name == m["name"])
        m["targets"] = {t: {"measure": v} | ({"missing_split": missing[(m["name"], t)][0]}
                                             if (m["name"], t) in missing else {}) for t, v in targets}
        shown = ", ".join(f"{_md(t)} (`{v}`" + (f"; no {missing[(m['name'], t)][0]} split"
                                               if (m["name"], t) in missing else "") + ")" for t, v in targets)
        draws = f" ({len(m['draws'])} draws: pretraining seeds {', '.join(map(str, m['draws']))})" \
            if "draws" in m else ""
        lines.append(f"| {_md(m['name'])} | `{_md(m['id'])}`{draws} | {m['cells']} | {shown} |")
    return models, lines + [""]


def _problems(results: Results) -> list[str]:
    lines = []
    if results.failed:
        lines += ["## Failed cells", "", "| run id | error |", "| --- | --- |"]
        for f in results.failed[:MAX_LISTED]:
            first = f.error.strip().splitlines()[0][:160] if f.error.strip() else ""
            lines.append(f"| {_md(f.run_id)} | {_md(first)} |")
        if len(results.failed) > MAX_LISTED:
            lines.append(f"| ... | {len(results.failed) - MAX_LISTED} more |")
        lines.append("")
    if results.skipped:
        lines += ["## Unreadable cell files (skipped)", "", "| file | reason |", "| --- | --- |"]
        lines += [f"| {_md(s.name)} | {_md(s.reason)} |" for s in results.skipped[:MAX_LISTED]]
        if len(results.skipped) > MAX_LISTED:
            lines.append(f"| ... | {len(results.skipped) - MAX_LISTED} more |")
        lines.append("")
    return lines


LEAD_FIGURE = "behavior_vs_cost"


def _figure(name: str, path: Path, out: Path) -> list[str]:
    csv = F.data_path(path)
    return [f"![{name.replace('_', ' ')}]({path.relative_to(out).as_posix()})", "",
            f"The numbers plotted: [{csv.name}]({csv.relative_to(out).as_posix()})", ""]


def _figure_lines(figs: dict[str, Path | None], out: Path, skip: str | None = None) -> list[str]:
    lines = ["## Figures", ""]
    for name, path in figs.items():
        if path is not None and name != skip:
            lines += _figure(name, path, out)
    return lines


def _glance(figs: dict[str, Path | None], out: Path, glance: list[str]) -> tuple[list[str], str | None]:
    """The first figure (behavior against feedback cost, covered and uncovered contexts) with the answers it shows,
    at the top of the report; returns the lines and the figure's name (not repeated under Figures)."""
    lead = LEAD_FIGURE if figs.get(LEAD_FIGURE) is not None else None
    if lead is None and not glance:
        return [], None
    lines = ["## At a glance", ""]
    if lead is not None:
        lines += _figure(lead, figs[lead], out)
        lines += ["Each row of panels is a target (of one model, when there are several); the left panel holds the "
                  "contexts the feedback covered, the right one the contexts it did not; the dashed line is the base "
                  "model.", ""]
    return lines + glance, lead


def check_index(cells_dir: str | Path) -> None:
    """Raise ValueError, naming the file, where the store's study.json cannot be read (before anything is written)."""
    study_run_ids(Path(cells_dir))


def write_report(results_dir: str | Path, out_dir: str | Path, threshold: float = DEFAULT_THRESHOLD, *,
                 min_gain: float = 0.02) -> dict[str, Any]:
    """Write `out_dir/REPORT.md`, `out_dir/summary.json` and `out_dir/figures/*.png` (each with its plotted data as
    `*.csv`); return the summary."""
    results = read_results(results_dir)
    out = Path(out_dir)
    # A target evaluated by A/B propensity alone (a CAA data set) reads `ab_propensity` as its behavior; draws of
    # one organism config are pooled into one model (a random effect).
    draws = results.draws()
    t, ceiling = M.split_ceiling(M.pool_draws(results.table, draws))
    t, measures = M.behavior_measures(t)
    t, desired = M.with_desired(t)
    notes: list[str] = []
    lines = ["# Report: how much feedback each method needs, and how far its behavior generalizes", "",
             f"Generated by `analysis.report.write_report` from the results store `{Path(results_dir).name}`; "
             f"behavior threshold {threshold:g} (absolute behavior rate).", ""]
    figs: dict[str, Path | None] = dict.fromkeys(F.FIGURES)
    if t.empty:
        summary: dict[str, Any] = {"threshold": threshold, "setup": {"cells": {
            "ok": 0, "failed": len(results.failed), "skipped": len(results.skipped),
            "other_studies": len(results.others)}}, "models": [], "headline": [],
            "winners": [], "claims": [],
            "notes": ["no ok cells: nothing to report"]}
        lines += ["No ok cells: nothing to report.", ""] + _problems(results)
    else:
        ref = M.reference_condition(t)
        setup, setup_lines = _setup(results, t, ceiling, ref)
        unequal = M.draws_per_method(t)
        missing = M.missing_splits(t)
        models, model_lines = _models(t, measures, missing)
        agg = M.aggregate(t)
        cost = M.cost_to_threshold(t, threshold)
        steer_runs = sorted(t.loc[t["metric"].isin(["anti_steerable", "slope_p50"]), "run_id"].unique())
        figs = F.write_figures(t, out / "figures", notes, agg=agg, cost=cost, ref=ref, threshold=threshold,
                               slopes=load_slopes(results.cells_dir, steer_runs))
        stats = W.Stats(
            agg=agg, cost=cost, gen=M.generalization(t, min_gain, ceiling),
            slopes={d: M.slope(t, d) for d in M.DIALS}, side=M.side_effects(t, min_gain), ref=ref,
            threshold=threshold, measures=measures, missing=missing, desired=desired, unequal_draws=unequal,
            ceiling=M.aggregate(ceiling) if len(ceiling) else None,
            domain_gains=M.gains(t, "behavior_domain") if (t["metric"] == "behavior_domain").any() else None)
        headline = W.headline(stats)
        no_base = M.missing_base(t).drop(columns="model_id")
        if not no_base.empty:
            notes.append(f"no base model (`none`) run for {len(no_base)} configuration(s), so their gains, "
                         "generalization ratios and side-effect costs are NaN: " + "; ".join(
                             ", ".join(f"{k}={v}" for k, v in r.items()) for r in
                             no_base.head(5).to_dict("records")) + (" ..." if len(no_base) > 5 else ""))
        for (model, target), (_, why) in missing.items():
            notes.append(f"{target}" + (f" ({model})" if len(models) > 1 else "") + f": {why}")
        if any(h["n"] == 1 for h in headline):
            notes.append("some headline numbers rest on a single seed (n=1): their CIs collapse to the value")
        for (model, target), per in unequal.items():
            notes.append(f"{target}" + (f" ({model})" if len(models) > 1 else "") + ": methods ran on different "
                         "organism draws (" + "; ".join(f"{m}: {', '.join(map(str, d))}" for m, d in per.items())
                         + "); each interval is over its own method's draws, paired comparisons over shared ones")
        tests = PairedTests(t, ref, threshold, min_gain)
        winners = W.winners(headline, threshold, tests)
        sharing = {k: float(v) for k, v in draws.groupby("family")["sharing"].first().items()}
        claims = C.measure_claims(stats, tests, sharing)
        glance, lead = _glance(figs, out, W.glance_lines(headline, winners, threshold))
        lines += C.claim_lines(claims, threshold) + glance + setup_lines + model_lines + _problems(results)
        held_out = bool(((t["split"] == "uncovered") & (t["anticipation"] >= 1.0)).any())
        lines += W.headline_tables(headline, threshold, unequal)
        lines += W.finding_lines(headline, winners, threshold, held_out, unequal)
        prices = P.price_sensitivity(t, results.cells, threshold, ref)
        lines += P.price_lines(prices)
        overopt = O.overoptimization(t, ref)
        lines += O.overoptimization_lines(overopt)
        choices = S.steering_choices(results.cells, ref)
        lines += S.choice_lines(choices)
        lines += _figure_lines(figs, out, skip=lead)
        summary = {"threshold": threshold, "setup": setup, "models": models, "headline": headline,
                   "winners": winners, "claims": claims, "price_sensitivity": prices,
                   "overoptimization": overopt, "steering_choices": choices, "notes": notes}
    for name, path in figs.items():
        if path is None:  # a figure this table cannot support must not survive from an earlier report
            (out / "figures" / f"{name}.png").unlink(missing_ok=True)
            F.data_path(out / "figures" / f"{name}.png").unlink(missing_ok=True)
    summary["figures"] = {k: (v.relative_to(out).as_posix() if v else None) for k, v in figs.items()}
    summary["failed_cells"] = [{"run_id": f.run_id, "error": f.error} for f in results.failed]
    summary["skipped_files"] = [{"name": s.name, "reason": s.reason} for s in results.skipped]
    summary["method"] = {
        "ci": "95% t interval over replicates: organism draws (each the mean of its seeds; draws - 1 degrees of "
              "freedom) where a cell ran on several, else seeds; jackknife standard error for ratios, slopes and "
              "crossing points; n = organisms x seeds",
        "claims": "Benjamini-Hochberg at 0.05 over every measured claim row; intervals at the false-coverage-rate "
                  "adjusted level 1 - R x 0.05 / m (Benjamini & Yekutieli 2005); a verdict only from an interval "
                  "that excludes 0",
        "headroom": "uncovered gain / (ceiling - base), the ceiling from the cells with coverage 'ceiling'",
        "clear": "paired test on matched runs (same draw and seed; averaged per draw where there are several), "
                 "Holm-corrected over every winner call in the report, p < 0.05; never on one unit",
        "cost_to_threshold": "interpolated linearly in log budget between the last budget below the threshold and "
                             "the first at or above it; interval on the log budget",
        "desired": "P(fluent and desired): the rows' `desired` where measured, else behavior x fluency per cell",
        "min_gain": min_gain}
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    summary = _clean(summary)
    text = json.dumps(summary, sort_keys=True, indent=2, allow_nan=False) + "\n"
    atomic_write_bytes(out / "summary.json", text.encode())
    atomic_write_bytes(out / "REPORT.md", ("\n".join(lines).rstrip() + "\n").encode())
    return summary
