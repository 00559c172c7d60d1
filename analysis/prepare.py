"""Preparing the results table for the metrics: model identity, pooling organism draws, setting the ceiling cells
apart, which measure each target reads as behavior, P(fluent and desired), and which splits a target lacks.

    t = pool_draws(results.table, results.draws())    # draws of one organism config: one model, a random effect
    t, ceiling = split_ceiling(t)                      # cells with coverage "ceiling": the achievable level per split
    t, measures = behavior_measures(t)                 # ab_propensity read as behavior where there is nothing else
    t, source = with_desired(t)                        # `desired`: "measured" or "behavior x fluency" per facet
    draws_per_method(t)                                # which organism draws each method ran on, per model and target
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.table import model_labels


CEILING = "ceiling"


def with_model_id(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with `model_id` and `draw` columns: a hand-built table (or an older store) without them is taken to name
    each model once, each its own single draw."""
    if "model_id" not in frame and "model" in frame:
        frame = frame.assign(model_id=frame["model"])
    if "seed" in frame and "draw" not in frame:
        frame = frame.assign(draw=0)
    elif "draw" in frame and frame["draw"].dtype != np.int64:  # nullable: a Hugging Face model has no draw (one)
        frame = frame.assign(draw=frame["draw"].fillna(0).astype(np.int64))
    return frame


def split_ceiling(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the table without its ceiling cells, the ceiling cells' rows). A ceiling cell (coverage "ceiling": oracle
    labels from every context, held-out ones included) is no condition of its method: it reads as the level achievable
    per split, so it never enters a method's means, slopes or costs. A table without a `coverage` column has none."""
    if "coverage" not in table:
        return table, table.iloc[:0]
    is_ceiling = (table["coverage"] == CEILING).to_numpy()
    return table[~is_ceiling], table[is_ceiling]


def draws_per_method(table: pd.DataFrame) -> dict[tuple[str, str], dict[str, tuple[int, ...]]]:
    """Per (model, target) whose methods did not all run on the same organism draws: method -> its draws (the base
    model included). Empty when every method of every (model, target) shares one set of draws."""
    table = with_model_id(table)
    beh = table[table["metric"] == "behavior"]
    out: dict[tuple[str, str], dict[str, tuple[int, ...]]] = {}
    for (model, target), grp in beh.groupby(["model", "target"], sort=True):
        per = {m: tuple(sorted(int(d) for d in set(g))) for m, g in grp.groupby("method", sort=True)["draw"]}
        if len(set(per.values())) > 1:
            out[(model, target)] = per
    return out


def pool_draws(table: pd.DataFrame, draws: pd.DataFrame) -> pd.DataFrame:
    """The table with the draws of one organism config (`draws`: model_id -> family, draw, as from
    `Results.draws()`) pooled under one `model_id` (the family), their pretraining seed in `draw`, so that every CI is
    over organisms x seeds. This is how stores written before rows carried `draw` (each draw its own organism key)
    are read; models that are no family's draws keep their identity and their rows' draw."""
    table = with_model_id(table)
    if draws.empty or not (draws["family"] != draws["model_id"]).any():
        return table
    fam = draws[draws["family"] != draws["model_id"]].set_index("model_id")
    mid = table["model_id"]
    # Only a family's members take their draw from the config; every other row keeps the draw it carries.
    pooled = table.assign(model_id=mid.map(fam["family"]).fillna(mid),
                          draw=mid.map(fam["draw"]).fillna(table["draw"]).astype(np.int64))
    # A family's label: its draws' shared display name (without the identity a draw's label carried), with the
    # family named only where two identities still share a name.
    pooled["model"] = pooled["model"].str.replace(r" \(organism:[0-9a-f]+\)$", "", regex=True)
    return pooled.assign(model=model_labels(pooled))


def with_desired(table: pd.DataFrame) -> tuple[pd.DataFrame, dict[tuple[str, str], str]]:
    """The table with a `desired` row (P(fluent and desired) over all samples) per cell and split, and per (model,
    target) where it comes from: "measured" (the evaluator's `desired` rows, or an older store's `fluent_desired`),
    else "behavior x fluency" (an approximation: it assumes behavior is scored among fluent samples)."""
    source: dict[tuple[str, str], str] = {}
    made = []
    for (model, target), grp in table.groupby(["model", "target"], sort=True):
        metrics = set(grp["metric"])
        if "desired" in metrics:
            source[(model, target)] = "measured"
        elif "fluent_desired" in metrics:
            made.append(grp[grp["metric"] == "fluent_desired"].assign(metric="desired"))
            source[(model, target)] = "measured"
        elif {"behavior", "fluency"} <= metrics:
            flu = grp.loc[grp["metric"] == "fluency", ["run_id", "split", "value"]].rename(columns={"value": "fl"})
            beh = grp[grp["metric"] == "behavior"].merge(flu.drop_duplicates(["run_id", "split"]),
                                                         on=["run_id", "split"], how="left")
            made.append(beh.assign(metric="desired", value=beh["value"] * beh["fl"]).drop(columns="fl"))
            source[(model, target)] = "behavior x fluency"
    return (pd.concat([table, *made], ignore_index=True) if made else table), source


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
