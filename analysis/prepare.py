"""Preparing the results table for the metrics: model identity, pooling organism draws, which measure each target
reads as behavior, P(fluent and desired), and which splits a target lacks.

    t = pool_draws(results.table, results.draws())    # draws of one organism config: one model, a random effect
    t, measures = behavior_measures(t)                 # ab_propensity read as behavior where there is nothing else
    t, fd_source = with_fluent_desired(t)              # "measured" or "behavior x fluency" per (model, target)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.table import model_labels


def with_model_id(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with `model_id` and `draw` columns: a hand-built table without them is taken to name each model once,
    each its own single draw."""
    if "model_id" not in frame and "model" in frame:
        frame = frame.assign(model_id=frame["model"])
    return frame if "draw" in frame or "seed" not in frame else frame.assign(draw=0)


def pool_draws(table: pd.DataFrame, draws: pd.DataFrame) -> pd.DataFrame:
    """The table with the draws of one organism config (`draws`: model_id -> family, draw, as from
    `Results.draws()`) pooled under one `model_id` (the family), their pretraining seed in `draw`, so that every CI is
    over organisms x seeds. Models that are no family's draws keep their identity (draw 0)."""
    table = with_model_id(table)
    if draws.empty or not (draws["family"] != draws["model_id"]).any():
        return table
    fam = draws.set_index("model_id")
    mid = table["model_id"]
    pooled = table.assign(model_id=mid.map(fam["family"]).fillna(mid),
                          draw=mid.map(fam["draw"]).fillna(0).astype(np.int64))
    # A family's label: its draws' shared display name (without the identity a draw's label carried), with the
    # family named only where two identities still share a name.
    pooled["model"] = pooled["model"].str.replace(r" \(organism:[0-9a-f]+\)$", "", regex=True)
    return pooled.assign(model=model_labels(pooled))


def with_fluent_desired(table: pd.DataFrame) -> tuple[pd.DataFrame, dict[tuple[str, str], str]]:
    """The table with a `fluent_desired` row (P(fluent and desired)) per cell and split that has behavior and fluency
    but no measured `fluent_desired`, computed as behavior x fluency (an approximation: it assumes behavior is scored
    on fluent samples), and per (model, target) where the number comes from: "measured" or "behavior x fluency"."""
    source: dict[tuple[str, str], str] = {}
    made = []
    for (model, target), grp in table.groupby(["model", "target"], sort=True):
        metrics = set(grp["metric"])
        if "fluent_desired" in metrics:
            source[(model, target)] = "measured"
        elif {"behavior", "fluency"} <= metrics:
            flu = grp.loc[grp["metric"] == "fluency", ["run_id", "split", "value"]].rename(columns={"value": "fl"})
            beh = grp[grp["metric"] == "behavior"].merge(flu.drop_duplicates(["run_id", "split"]),
                                                         on=["run_id", "split"], how="left")
            made.append(beh.assign(metric="fluent_desired", value=beh["value"] * beh["fl"]).drop(columns="fl"))
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
