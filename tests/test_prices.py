"""The label-price sensitivity: each cell's cost recomputed from what it spent per label kind, the cost to threshold
re-read on the same behavior curves, one kind's price scaled at a time."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from analysis import metrics as M
from analysis import prices as P
from analysis.report import write_report
from analysis.synthetic import MethodTruth, SyntheticSpec, write_results
from analysis.table import read_results

# steering buys contrast pairs and is cheaper at the study's prices; dpo buys comparisons at the same price per label
METHODS = {"dpo": MethodTruth(0.08, ratio=0.5), "steering": MethodTruth(0.10, ratio=0.9, steering=True)}
SPEC = SyntheticSpec(targets=("sentiment",), methods=METHODS, budgets=(8, 16, 32, 64), seeds=(0, 1, 2), samples=0,
                     base=0.3)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prices") / "store"
    write_results(root, SPEC)
    return root


def test_repricing_scales_only_the_methods_that_buy_that_kind(store: Path) -> None:
    res = read_results(store)
    ref = M.reference_condition(res.table)
    rows = P.price_sensitivity(res.table, res.cells, 0.5, ref)
    cost = {(r["kind"], r["factor"], r["method"], r["split"]): r for r in rows}
    assert {r["kind"] for r in rows} == {"contrast", "compare"}  # the kinds the cells bought
    study = M.at_reference(M.cost_to_threshold(res.table, 0.5), ref)
    for r in study.itertuples(index=False):  # factor 1 is the study's own cost to threshold
        assert cost[("contrast", 1.0, r.method, r.split)]["cost"] == pytest.approx(r.feedback_cost)
    s1, s4 = (cost[("contrast", f, "steering", "covered")] for f in (1.0, 4.0))
    d1, d4 = (cost[("contrast", f, "dpo", "covered")] for f in (1.0, 4.0))
    assert s4["cost"] == pytest.approx(4 * s1["cost"]) and s4["hi"] == pytest.approx(4 * s1["hi"])
    assert d4["cost"] == pytest.approx(d1["cost"])  # dpo buys no contrast pair
    assert s1["lowest"] and not d1["lowest"]  # cheaper at the study's prices ...
    assert d4["lowest"] and not s4["lowest"]  # ... dearer when contrast pairs cost 4x
    assert math.isfinite(s1["cost"]) and s1["n"] == 3


def test_a_cell_without_recorded_spending_gets_no_cost(store: Path) -> None:
    res = read_results(store)
    cells = {k: ({**v, "provenance": {}} if i == 0 else v) for i, (k, v) in enumerate(res.cells.items())}
    out = P.repriced(res.table, cells, "contrast", 2.0)
    first = next(iter(cells))
    assert out.loc[out["run_id"] == first, "feedback_cost"].isna().all()
    assert out.loc[out["run_id"] != first, "feedback_cost"].notna().all()


def test_the_report_carries_the_price_table(store: Path, tmp_path: Path) -> None:
    summary = write_report(store, tmp_path / "out", threshold=0.5)
    md = (tmp_path / "out" / "REPORT.md").read_text()
    assert "## Cost to threshold under other label prices" in md
    assert "| contrast | " in md and "price x4" in md
    assert {r["kind"] for r in summary["price_sensitivity"]} == {"contrast", "compare"}


def test_overoptimization_orders_rl_policies_by_kl_with_learned_and_true_reward() -> None:
    import pandas as pd

    from analysis.overopt import overoptimization, overoptimization_lines

    rows = []
    # two rlhf policies at budget 64 (KL 0.1 and 0.4) and one at the other anticipation (not at the reference)
    for method, kl, learned, true, a in (("rlhf", 0.1, 1.0, 0.6, 0.5), ("rlhf@kl0.05", 0.4, 2.0, 0.5, 0.5),
                                         ("rlhf", 9.0, 9.0, 9.0, 0.25)):
        for seed in (0, 1):
            rid = f"{method}-{seed}-{a}"
            common = {"run_id": rid, "model": "organism", "target": "sentiment", "method": method, "budget": 64,
                      "anticipation": a, "labeler_noise": 0.0, "labeler_misspec": 0.0, "seed": seed, "draw": 0}
            rows += [common | {"split": "neutral", "metric": "kl", "value": kl},
                     common | {"split": "covered", "metric": "learned_reward", "value": learned + seed * 0.1},
                     common | {"split": "covered", "metric": "true_reward", "value": true},
                     common | {"split": "covered", "metric": "behavior", "value": 0.7}]
    rows.append({**rows[0], "run_id": "dpo-0", "method": "dpo", "split": "neutral", "metric": "kl", "value": 5.0})
    out = overoptimization(pd.DataFrame(rows), {"anticipation": 0.5, "labeler_noise": 0.0, "labeler_misspec": 0.0})
    assert [r["method"] for r in out] == ["rlhf", "rlhf@kl0.05"]  # dpo has no reward rows; ordered by KL
    assert out[1]["kl"] == pytest.approx(0.4) and out[1]["learned_reward_covered"] == pytest.approx(2.05)
    assert out[1]["true_reward_covered"] == pytest.approx(0.5) and out[0]["n"] == 2
    assert out[0]["learned_reward_rl_last"] is None
    lines = overoptimization_lines(out)
    assert lines[0] == "## Reward over-optimization" and "| rlhf@kl0.05 | 64 | 0.4 | 2.05 | 0.5 | - | - | 2 |" in lines
    assert overoptimization_lines(out[:1]) == []  # one policy is a point, not a curve
