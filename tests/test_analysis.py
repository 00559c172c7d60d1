"""analysis.table and analysis.metrics against synthetic results stores whose answers are known in closed form."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import metrics as M
from analysis.synthetic import MethodTruth, SyntheticSpec, expected, write_results
from analysis.table import (CellFileWarning, ROW_FIELDS, TABLE_COLUMNS, export_parquet, failed_cells, load_table,
                            read_results)

BASE = 0.3
METHODS = {
    "dpo": MethodTruth(0.10, ratio=0.5, anticipation=0.2, noise=0.3, misspec=0.25, kl=0.04, fluency=0.003, drift=0.01),
    "sft": MethodTruth(0.10202, ratio=0.2, cost_per_label=4.0),  # at budget 128 it sits 0.005 under 0.8
    "steering": MethodTruth(0.03, ratio=1.0, steering=True),  # never reaches 0.8
    "flat": MethodTruth(0.0, ratio=1.0),  # no gain: ratio and per-point costs undefined
}
SPEC = SyntheticSpec(targets=("sentiment", "refusal"), methods=METHODS, budgets=(8, 32, 128, 512),
                     anticipations=(0.5, 0.25, 0.75), noises=(0.0, 0.2), misspecs=(0.0, 0.4), base=BASE)
REF = {"anticipation": 0.5, "labeler_noise": 0.0, "labeler_misspec": 0.0}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("results")
    write_results(root, SPEC)
    return root


@pytest.fixture(scope="module")
def table(store: Path) -> pd.DataFrame:
    return load_table(store)


def _one(frame: pd.DataFrame, **eq: object) -> pd.Series:
    mask = np.ones(len(frame), dtype=bool)
    for k, v in eq.items():
        mask &= frame[k].to_numpy() == v
    rows = frame[mask]
    assert len(rows) == 1, f"{len(rows)} rows for {eq}"
    return rows.iloc[0]


# ---- table -------------------------------------------------------------------------------------------------------


def test_load_table_reads_every_ok_cell(store: Path, table: pd.DataFrame) -> None:
    n_cells = len(list((store / "cells").glob("*.json")))
    assert table["run_id"].nunique() == n_cells
    assert list(table.columns) == TABLE_COLUMNS and set(ROW_FIELDS) < set(TABLE_COLUMNS)
    assert (table["model_id"] == "organism").all()  # a bare-string model config is its own identity
    assert table["budget"].dtype == np.int64 and table["seed"].dtype == np.int64
    assert set(table["split"]) == {"covered", "uncovered", "all", "neutral"}
    assert not table.duplicated(["run_id", "split", "metric"]).any()


def _write(cells: Path, name: str, text: str) -> None:
    (cells / f"{name}.json").write_text(text, encoding="utf-8")


def test_malformed_and_partial_cells_are_skipped_and_named(tmp_path: Path) -> None:
    ids = write_results(tmp_path, SyntheticSpec(targets=("sentiment",), methods={"dpo": METHODS["dpo"]},
                                                budgets=(8,), seeds=(0,), samples=0))
    cells = tmp_path / "cells"
    good = json.loads((cells / f"{ids[0]}.json").read_text())
    text = json.dumps(good)
    _write(cells, "truncated", text[: len(text) // 2].replace(good["run_id"], "truncated"))
    _write(cells, "notobject", "[1, 2]")
    partial = dict(good, run_id="partial", rows=[{k: v for k, v in r.items() if k != "value"} | {"run_id": "partial"}
                                                  for r in good["rows"]])
    _write(cells, "partial", json.dumps(partial))
    badtype = dict(good, run_id="badtype", rows=[r | {"run_id": "badtype", "budget": "lots"} for r in good["rows"]])
    _write(cells, "badtype", json.dumps(badtype))
    _write(cells, "norows", json.dumps({k: v for k, v in good.items() if k != "rows"} | {"run_id": "norows"}))
    _write(cells, "noprov", json.dumps({k: v for k, v in good.items() if k != "provenance"} | {"run_id": "noprov"}))
    _write(cells, "running", json.dumps(good | {"run_id": "running", "status": "running"}))
    _write(cells, "renamed", text)  # run_id does not match the file name
    _write(cells, "failed1", json.dumps({"run_id": "failed1", "status": "failed", "error": "CUDA OOM", "config": {}}))
    (cells / ".tmp123.json").write_text("{", encoding="utf-8")  # a runner's temporary file: not a cell

    results = read_results(tmp_path)
    skipped = {s.name: s.reason for s in results.skipped}
    assert set(skipped) == {f"{n}.json" for n in ("truncated", "notobject", "partial", "badtype", "norows",
                                                    "noprov", "running", "renamed")}
    assert "JSON" in skipped["truncated.json"] and "value" in skipped["partial.json"]
    assert "budget" in skipped["badtype.json"] and "rows" in skipped["norows.json"]
    assert [(f.run_id, f.error) for f in results.failed] == [("failed1", "CUDA OOM")]
    assert set(results.table["run_id"]) == set(ids)
    with pytest.warns(CellFileWarning, match="truncated.json"):
        load_table(tmp_path)
    assert [f.run_id for f in failed_cells(tmp_path)] == ["failed1"]


def test_null_metric_values_are_kept_as_nan(tmp_path: Path) -> None:
    ids = write_results(tmp_path, SyntheticSpec(targets=("sentiment",), methods={"dpo": METHODS["dpo"]},
                                                budgets=(8,), seeds=(0,), samples=0))
    path = tmp_path / "cells" / f"{ids[0]}.json"
    cell = json.loads(path.read_text())
    cell["rows"][0]["value"] = None
    path.write_text(json.dumps(cell))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = load_table(tmp_path)
    assert t["value"].isna().sum() == 1


def test_missing_results_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such results directory"):
        read_results(tmp_path / "nope")


def test_export_parquet_round_trips(table: pd.DataFrame, tmp_path: Path) -> None:
    path = export_parquet(table, tmp_path / "sub" / "table.parquet")
    back = pd.read_parquet(path)
    pd.testing.assert_frame_equal(back, table, check_dtype=False)
    assert [p.name for p in path.parent.iterdir()] == ["table.parquet"]  # no temporary left behind


# ---- aggregation -------------------------------------------------------------------------------------------------


def test_aggregate_means_are_exact_with_ci_and_n(table: pd.DataFrame) -> None:
    agg = M.aggregate(table)
    for split in ("covered", "uncovered", "all"):
        for budget in SPEC.budgets:
            r = _one(agg, method="dpo", target="sentiment", split=split, metric="behavior", budget=budget, **REF)
            truth = expected(METHODS["dpo"], BASE, split, budget, 0.5, 0.0, 0.0)
            assert r["mean"] == pytest.approx(truth, abs=1e-12)
            assert r["n"] == 3 and not r["single_seed"]
            assert r["ci_lo"] < r["mean"] < r["ci_hi"]
            # the t interval over 3 seeds: offsets -sd, 0, +sd have standard deviation sd, so mean +- t(2) sd / sqrt 3
            assert r["ci_hi"] - r["ci_lo"] == pytest.approx(2 * 4.302653 * SPEC.seed_sd / math.sqrt(3), rel=1e-5)
    pd.testing.assert_frame_equal(agg, M.aggregate(table))  # seeded: identical on every call


def test_single_seed_ci_collapses_and_is_flagged(table: pd.DataFrame) -> None:
    one = table[table["seed"] == 1]
    agg = M.aggregate(one)
    assert (agg["n"] == 1).all() and agg["single_seed"].all()
    ok = agg["mean"].notna()
    assert (agg.loc[ok, "ci_lo"] == agg.loc[ok, "mean"]).all() and (agg.loc[ok, "ci_hi"] == agg.loc[ok, "mean"]).all()


def test_reference_condition_is_the_grid_default(table: pd.DataFrame) -> None:
    assert M.reference_condition(table) == REF


# ---- derived metrics ---------------------------------------------------------------------------------------------


def test_cost_to_threshold_known_budgets(table: pd.DataFrame) -> None:
    cost = M.at_reference(M.cost_to_threshold(table, threshold=0.8), REF)
    # dpo: 0.3 + 0.1 ln b crosses 0.8 between 128 and 512; interpolated in log budget that is exactly ln b = 5.
    r = _one(cost, method="dpo", target="sentiment", split="covered")
    assert r["budget"] == pytest.approx(math.exp(5.0), rel=1e-9) and r["reached"]
    assert r["budget_lo"] < r["budget"] < r["budget_hi"] < 512
    assert r["feedback_cost"] == pytest.approx(r["budget"]) and r["labels"] == pytest.approx(r["budget"])
    assert r["n"] == 3
    # sft: 0.3 + 0.10202 ln b crosses just above 128 (its mean there is 0.795); demonstrations cost 4 units each.
    r = _one(cost, method="sft", target="sentiment", split="covered")
    assert r["budget"] == pytest.approx(math.exp(0.5 / 0.10202), rel=1e-9)
    assert r["budget_lo"] < r["budget"] < r["budget_hi"]
    assert r["feedback_cost"] == pytest.approx(4 * r["budget"]) and r["cost_lo"] == pytest.approx(4 * r["budget_lo"])
    # steering never gets there: inf, not reached.
    r = _one(cost, method="steering", target="sentiment", split="covered")
    assert math.isinf(r["budget"]) and math.isinf(r["budget_hi"]) and not r["reached"]
    assert r["max_budget"] == 512 and r["base"] == pytest.approx(BASE)


def test_generalization_ratio_matches_formula(table: pd.DataFrame) -> None:
    gen = M.at_reference(M.generalization(table), REF)
    t = METHODS["dpo"]
    for budget in SPEC.budgets:
        r = _one(gen, method="dpo", target="sentiment", budget=budget)
        cov = expected(t, BASE, "covered", budget, 0.5, 0, 0) - BASE
        unc = expected(t, BASE, "uncovered", budget, 0.5, 0, 0) - BASE
        assert r["gain_covered"] == pytest.approx(cov, abs=1e-12)
        assert r["ratio"] == pytest.approx(unc / cov, rel=1e-9)
        assert r["ratio_lo"] <= r["ratio"] <= r["ratio_hi"]
    flat = _one(gen, method="flat", target="sentiment", budget=512)
    assert math.isnan(flat["ratio"]) and math.isnan(flat["ratio_lo"])  # covered gain 0: no ratio
    steer = _one(gen, method="steering", target="sentiment", budget=512)
    assert steer["ratio"] == pytest.approx(1.0)


def test_slopes_against_each_dial(table: pd.DataFrame) -> None:
    t = METHODS["dpo"]
    ant = M.at_reference(M.slope(table, "anticipation"), REF, skip="anticipation")
    r = _one(ant, method="dpo", target="sentiment", budget=128, split="uncovered")
    assert r["slope"] == pytest.approx(t.anticipation, abs=1e-9) and r["n_x"] == 3 and r["n"] == 3
    assert r["slope_lo"] <= r["slope"] + 1e-12 and r["slope"] - 1e-12 <= r["slope_hi"]
    r = _one(ant, method="dpo", target="sentiment", budget=128, split="all")
    xs = np.array([0.25, 0.5, 0.75])
    ys = [expected(t, BASE, "all", 128, a, 0, 0) for a in xs]
    assert r["slope"] == pytest.approx(np.polyfit(xs, ys, 1)[0], abs=1e-9)
    noise = M.at_reference(M.slope(table, "labeler_noise"), REF, skip="labeler_noise")
    assert _one(noise, method="dpo", target="sentiment", budget=512, split="covered")["slope"] == \
        pytest.approx(-t.noise, abs=1e-9)
    mis = M.at_reference(M.slope(table, "labeler_misspec"), REF, skip="labeler_misspec")
    assert _one(mis, method="dpo", target="sentiment", budget=512, split="uncovered")["slope"] == \
        pytest.approx(-t.misspec, abs=1e-9)
    assert _one(mis, method="dpo", target="sentiment", budget=512, split="covered")["slope"] == \
        pytest.approx(0.0, abs=1e-9)
    # a single value of the dial: no slope at all
    assert M.slope(table[table["anticipation"] == 0.5], "anticipation").empty


def test_slope_ci_is_a_t_interval_over_seeds() -> None:
    rows = []
    for seed, bump in ((0, -0.05), (1, 0.0), (2, 0.05), (3, 0.1)):
        for a in (0.0, 0.5, 1.0):
            rows.append({"model": "m", "method": "dpo", "target": "t", "target_version": "1", "budget": 8,
                         "labeler_noise": 0.0, "labeler_misspec": 0.0, "split": "all", "metric": "behavior",
                         "seed": seed, "anticipation": a, "value": 0.2 + (0.3 + bump) * a})
    r = M.slope(pd.DataFrame(rows), "anticipation").iloc[0]
    assert r["slope"] == pytest.approx(0.325)
    # each seed's own slope is 0.25, 0.3, 0.35, 0.4: the jackknife interval is the t interval over them (3 df)
    per_seed = np.array([0.25, 0.3, 0.35, 0.4])
    half = 3.182446 * per_seed.std(ddof=1) / 2
    assert (r["slope_lo"], r["slope_hi"]) == pytest.approx((0.325 - half, 0.325 + half), rel=1e-5)


def test_side_effects_per_point(table: pd.DataFrame) -> None:
    se = M.at_reference(M.side_effects(table), REF)
    t = METHODS["dpo"]
    lb = math.log(512)
    r = _one(se, method="dpo", target="sentiment", budget=512)
    gain = expected(t, BASE, "all", 512, 0.5, 0, 0) - BASE
    assert r["gain"] == pytest.approx(gain, abs=1e-12)
    assert r["kl"] == pytest.approx(t.kl * lb, rel=1e-9)
    assert r["kl_per_pt"] == pytest.approx(t.kl * lb / (100 * gain), rel=1e-9)
    assert r["fluency_loss_per_pt"] == pytest.approx(t.fluency * lb / (100 * gain), rel=1e-9)
    assert r["drift_per_pt"] == pytest.approx(t.drift * lb / (100 * gain), rel=1e-9)
    assert r["kl_per_pt_lo"] <= r["kl_per_pt"] <= r["kl_per_pt_hi"]
    assert math.isnan(_one(se, method="flat", target="sentiment", budget=512)["kl_per_pt"])


def test_pareto_front() -> None:
    pts = [("none", 0, 0.0, 0.3), ("a", 8, 0.1, 0.5), ("b", 8, 0.2, 0.4), ("c", 8, 0.3, 0.6), ("d", 8, 0.3, 0.6)]
    rows = []
    for method, budget, kl, beh in pts:
        common = {"model": "m", "method": method, "target": "t", "target_version": "1", "budget": budget,
                  "anticipation": 0.5, "labeler_noise": 0.0, "labeler_misspec": 0.0}
        rows += [common | {"split": "all", "metric": "behavior", "mean": beh},
                 common | {"split": "neutral", "metric": "kl", "mean": kl}]
    front = M.pareto(pd.DataFrame(rows)).set_index("method")["on_front"].to_dict()
    assert front == {"none": True, "a": True, "b": False, "c": True, "d": True}


def test_missing_base_gives_nan_gains(tmp_path: Path) -> None:
    write_results(tmp_path, SyntheticSpec(targets=("sentiment",), methods={"dpo": METHODS["dpo"]}, budgets=(8, 64),
                                          with_base=False, samples=0))
    t = load_table(tmp_path)
    assert M.gains(t)["gain"].isna().all()
    assert M.generalization(t)["ratio"].isna().all()
    assert list(M.missing_base(t)["method"]) == ["dpo"]


def test_method_order_puts_base_first() -> None:
    assert M.method_order(["steering", "none", "dpo+steering", "dpo"]) == ["none", "dpo", "dpo+steering", "steering"]
