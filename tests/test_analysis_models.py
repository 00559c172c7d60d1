"""The report never averages across models, reads A/B propensity where a data set has nothing else, calls nothing
clear on one seed, and explains a target without contexts, each against a synthetic store with a known answer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from analysis import metrics as M
from analysis.report import write_report
from analysis.synthetic import MethodTruth, SyntheticSpec, expected, write_results
from analysis.table import read_results

BASE = 0.3
METHODS = {"dpo": MethodTruth(0.08, ratio=0.5, kl=0.04), "steering": MethodTruth(0.04, ratio=0.9, kl=0.01)}
TWO_ORGANISMS = SyntheticSpec(
    models=("organism", "organism"),  # one display name, two organisms: the case that used to be averaged
    model_configs=({"path": "organism", "organism_key": "aaaa111122223333"},
                   {"path": "organism", "organism_key": "bbbb444455556666"}),
    model_scale=(1.0, 1.5), targets=("sentiment",), methods=METHODS, budgets=(8, 64), samples=0, base=BASE)
LABELS = {"organism (organism:aaaa111122223333)": 1.0, "organism (organism:bbbb444455556666)": 1.5}


def _truth(method: str, split: str, budget: int, scale: float = 1.0, a: float = 0.5) -> float:
    t = METHODS[method]
    return expected(MethodTruth(t.gain * scale, ratio=t.ratio), BASE, split, budget, a, 0.0, 0.0)


def _section(md: str, title: str) -> str:
    return md.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


# ---- 1. one model at a time ----------------------------------------------------------------------------------------


def test_two_organisms_are_reported_separately(tmp_path: Path) -> None:
    write_results(tmp_path / "store", TWO_ORGANISMS)
    res = read_results(tmp_path / "store")
    assert dict(res.table.groupby("model")["model_id"].unique().map(list)) == {
        "organism (organism:aaaa111122223333)": ["organism:aaaa111122223333"],
        "organism (organism:bbbb444455556666)": ["organism:bbbb444455556666"]}
    agg = M.aggregate(res.table)
    kl = agg[(agg["metric"] == "kl") & (agg["method"] == "dpo") & (agg["budget"] == 64)].set_index("model")
    for label, scale in LABELS.items():  # each its own KL, over its own 3 seeds (the bug: one mean, n = 6)
        assert kl.loc[label, "mean"] == pytest.approx(0.04 * scale * math.log(64), rel=1e-9)
        assert kl.loc[label, "n"] == 3

    summary = write_report(tmp_path / "store", tmp_path / "out")
    head = {(h["model"], h["method"]): h for h in summary["headline"]}
    assert set(head) == {(m, meth) for m in LABELS for meth in METHODS}
    for (label, method), h in head.items():
        for split in ("covered", "uncovered"):
            assert h["behavior"][split]["mean"] == pytest.approx(_truth(method, split, 64, LABELS[label]), abs=1e-6)
            assert h["behavior"][split]["n"] == 3
        assert h["side_effects"]["kl"]["mean"] == pytest.approx(METHODS[method].kl * LABELS[label] * math.log(64),
                                                                 rel=1e-5)
    assert [(m["name"], m["id"], m["cells"]) for m in summary["models"]] == [
        ("organism (organism:aaaa111122223333)", "organism:aaaa111122223333", 15),  # 2 methods x 2 budgets x 3 + 3
        ("organism (organism:bbbb444455556666)", "organism:bbbb444455556666", 15)]
    md = (tmp_path / "out" / "REPORT.md").read_text()
    models = _section(md, "Models")
    assert "| organism (organism:aaaa111122223333) | `organism:aaaa111122223333` | 15 | sentiment (`behavior`) |" \
        in models
    assert "### sentiment (organism (organism:bbbb444455556666))" in md
    # every figure facet is one model's: the plotted means are that model's truth
    d = pd.read_csv(tmp_path / "out" / "figures" / "behavior_vs_cost.csv")
    assert set(d["facet"]) == {f"{label} / sentiment" for label in LABELS}
    for row in d[d["method"] != "none"].itertuples():
        assert row.mean == pytest.approx(_truth(row.method, row.split, row.budget, LABELS[row.model]), abs=1e-6)


def test_an_organism_and_a_hugging_face_model_keep_their_names(tmp_path: Path) -> None:
    spec = SyntheticSpec(models=("organism", "smollm"), model_configs=(
        {"path": "organism", "organism_key": "k1"}, {"path": "HuggingFaceTB/SmolLM2-135M", "revision": "abc123"}),
        model_scale=(1.0, 2.0), targets=("sentiment",), methods={"dpo": METHODS["dpo"]}, budgets=(8, 64),
        samples=0)
    write_results(tmp_path, spec)
    res = read_results(tmp_path)
    assert [(m["name"], m["id"]) for m in res.models()] == [("organism", "organism:k1"),
                                                            ("smollm", "HuggingFaceTB/SmolLM2-135M@abc123")]
    g = M.gains(res.table)
    g = g[(g["split"] == "covered") & (g["budget"] == 64)].set_index("model")["gain"]
    assert g["organism"] == pytest.approx(0.08 * math.log(64), abs=1e-9)
    assert g["smollm"] == pytest.approx(2 * 0.08 * math.log(64), abs=1e-9)


def test_one_model_reports_as_before(tmp_path: Path) -> None:
    """With one model the identity adds nothing to names, facets or figures."""
    spec = SyntheticSpec(models=("organism",), model_configs=({"path": "organism", "organism_key": "k1"},),
                         targets=("sentiment",), methods=METHODS, budgets=(8, 64), samples=0)
    write_results(tmp_path, spec)
    summary = write_report(tmp_path, tmp_path / "out")
    assert {h["model"] for h in summary["headline"]} == {"organism"}
    assert set(pd.read_csv(tmp_path / "out" / "figures" / "behavior_vs_cost.csv")["facet"]) == {"sentiment"}
    assert "### sentiment\n" in (tmp_path / "out" / "REPORT.md").read_text()


# ---- 2. data-set targets -------------------------------------------------------------------------------------------


def test_one_seed_store_calls_no_clear_win(tmp_path: Path) -> None:
    far_apart = {"a": MethodTruth(0.02, ratio=0.1), "b": MethodTruth(0.12, ratio=0.9)}
    write_results(tmp_path, SyntheticSpec(targets=("sentiment",), methods=far_apart, budgets=(8, 512), seeds=(0,),
                                          samples=0))
    summary = write_report(tmp_path, tmp_path / "out")
    compared = [w for w in summary["winners"] if w.get("runner_up") is not None]
    assert compared and all(w["clear"] is False and w["single_seed"] for w in compared)
    md = (tmp_path / "out" / "REPORT.md").read_text()
    assert "; clear." not in md and "single seed, no CI: not a clear win" in md
    # one seed cannot show the covered gain is above zero: no generalization ratio, and no winner on it
    assert all(h["generalization"]["ratio"]["mean"] is None for h in summary["headline"])
    assert "| n/a: no covered gain (n=1) |" in md
    assert all(w["method"] is None for w in summary["winners"] if w["question"] == "best generalization ratio")


def test_ratio_needs_a_covered_gain_clearly_above_zero(tmp_path: Path) -> None:
    """A covered gain of 0.1 x seed noise: the ratio would be huge noise; it is withheld, the clear one shown."""
    methods = {"tiny": MethodTruth(0.0012, ratio=5.0), "real": MethodTruth(0.08, ratio=0.5)}
    write_results(tmp_path, SyntheticSpec(targets=("sentiment",), methods=methods, budgets=(8, 64), samples=0,
                                          seed_sd=0.05))
    gen = M.generalization(read_results(tmp_path).table, min_gain=0.0)
    top = gen[gen["budget"] == 64].set_index("method")
    assert not top.loc["tiny", "covered_gain_clear"] and math.isnan(top.loc["tiny", "ratio"])
    assert top.loc["real", "covered_gain_clear"] and top.loc["real", "ratio"] == pytest.approx(0.5, rel=1e-9)


def test_propensity_only_store_reports_ab_propensity(tmp_path: Path) -> None:
    write_results(tmp_path, SyntheticSpec(targets=("caa",), methods=METHODS, budgets=(8, 64), samples=0,
                                          behavior_metric="ab_propensity"))
    assert "behavior" not in set(read_results(tmp_path).table["metric"])
    summary = write_report(tmp_path, tmp_path / "out", threshold=0.55)
    head = {h["method"]: h for h in summary["headline"]}
    assert set(head) == set(METHODS)
    for method, h in head.items():
        assert h["measure"] == "ab_propensity"
        for split in ("covered", "uncovered"):
            assert h["behavior"][split]["mean"] == pytest.approx(_truth(method, split, 64), abs=1e-6)
        assert h["base_behavior"]["covered"] == pytest.approx(BASE)
        assert h["generalization"]["ratio"]["mean"] == pytest.approx(METHODS[method].ratio, abs=1e-6)
    c = head["dpo"]["cost_to_threshold"]["covered"]  # 0.3 + 0.08 ln b = 0.55 at ln b = 3.125, between 8 and 64
    assert c["reached"] and c["budget"] == pytest.approx(math.exp(0.25 / 0.08), rel=1e-6)
    md = (tmp_path / "out" / "REPORT.md").read_text()
    assert "Behavior is `ab_propensity` here" in md and "caa (`ab_propensity`)" in _section(md, "Models")
    headline = _section(md, "Headline")
    assert f"| dpo | 64 (64) | {_truth('dpo', 'covered', 64):.2f} [" in headline
    assert summary["figures"]["behavior_vs_cost"] is not None


def test_sampled_behavior_wins_over_propensity(tmp_path: Path) -> None:
    """A target with both reads `behavior`; the propensity rows do not leak into it."""
    write_results(tmp_path, SyntheticSpec(targets=("caa",), methods={"dpo": METHODS["dpo"]}, budgets=(8, 64),
                                          samples=0))
    for p in (tmp_path / "cells").glob("*.json"):
        cell = json.loads(p.read_text())
        cell["rows"] += [r | {"metric": "ab_propensity", "value": 0.99} for r in cell["rows"]
                         if r["metric"] == "behavior"]
        p.write_text(json.dumps(cell))
    table, measures = M.behavior_measures(read_results(tmp_path).table)
    assert measures == {("organism", "caa"): "behavior"}
    assert (table.loc[table["metric"] == "behavior", "value"] < 0.9).all()


def test_no_context_target_is_explained(tmp_path: Path) -> None:
    spec = SyntheticSpec(targets=("caa", "sentiment"), methods=METHODS, budgets=(8, 64, 512),
                         anticipations=(0.5, 0.25, 0.75), samples=0, one_context=("caa",))
    write_results(tmp_path, spec)
    summary = write_report(tmp_path, tmp_path / "out", threshold=0.6)
    md = (tmp_path / "out" / "REPORT.md").read_text()
    caa = md.split("### caa\n", 1)[1].split("###", 1)[0]
    assert "No uncovered split: anticipation has no effect" in caa
    assert "| n/a: no uncovered split |" in caa
    assert any(n.startswith("caa: no uncovered split: anticipation has no effect") for n in summary["notes"])
    assert summary["models"][0]["targets"] == {"caa": {"measure": "behavior", "missing_split": "uncovered"},
                                               "sentiment": {"measure": "behavior"}}
    # no question about uncovered contexts is asked of caa; sentiment keeps them
    asked = {(w["target"], w["split"]) for w in summary["winners"]}
    assert ("caa", "uncovered") not in asked and ("caa", "uncovered/covered") not in asked
    assert ("sentiment", "uncovered") in asked
    head = {(h["target"], h["method"]): h for h in summary["headline"]}
    assert head[("caa", "dpo")]["behavior"]["covered"]["mean"] == pytest.approx(_truth("dpo", "covered", 512))
    # figures draw no caa uncovered rows (the panel says why), and no "not reached" bars for a split that is absent
    figs = tmp_path / "out" / "figures"
    cost = pd.read_csv(figs / "behavior_vs_cost.csv")
    assert set(cost.loc[cost["target"] == "caa", "split"]) == {"covered"}
    assert set(cost.loc[cost["target"] == "sentiment", "split"]) == {"covered", "uncovered"}
    bars = pd.read_csv(figs / "cost_to_threshold.csv")
    assert set(bars.loc[bars["target"] == "caa", "split"]) == {"covered"}
    ant = pd.read_csv(figs / "behavior_vs_anticipation.csv")
    assert "uncovered" not in set(ant.loc[ant["target"] == "caa", "split"])
    flat = ant[(ant["target"] == "caa") & (ant["method"] == "dpo")]
    assert flat["mean"].max() - flat["mean"].min() == pytest.approx(0.0, abs=1e-6)  # anticipation has no effect
