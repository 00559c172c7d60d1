"""The report on a study of design v2, against synthetic stores with known answers: organism draws as replicates
(n = organisms x seeds everywhere, unequal draws named), ceiling cells set apart and read as the headroom, P(fluent and
desired) beside behavior, refusal's refusal and over-refusal rates, and the decision-word split of held-out behavior."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from analysis import metrics as M
from analysis.report import write_report
from analysis.synthetic import BASE_FLUENCY, MethodTruth, SyntheticSpec, expected, write_results
from analysis.table import read_results

BASE = 0.3
METHODS = {"dpo": MethodTruth(0.08, ratio=0.5, anticipation=0.2, shared=0.25),
           "steering": MethodTruth(0.06, ratio=0.9, shared=0.75, steering=True)}
SPEC = SyntheticSpec(targets=("sentiment", "sycophancy", "refusal"), methods=METHODS, budgets=(8, 16, 32, 64),
                     anticipations=(0.5, 0.25, 0.75, 1.0), draws=(0, 1, 2), seeds=(0, 1), seed_sd=0.01,
                     held_out=0.25, ceiling="dpo", ceiling_value=0.9, samples=0, base=BASE)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    root = tmp_path_factory.mktemp("v2")
    write_results(root / "store", SPEC)
    summary = write_report(root / "store", root / "out", threshold=0.5)
    return root / "store", summary, (root / "out" / "REPORT.md").read_text()


def _head(summary: dict, target: str, method: str) -> dict:
    return next(h for h in summary["headline"] if (h["target"], h["method"]) == (target, method))


def _unc_gain(method: str) -> float:
    return expected(METHODS[method], BASE, "uncovered", 64, 0.5, 0.0, 0.0, 0.25) - BASE


def test_every_n_reads_organisms_x_seeds(report: tuple[Path, dict, str]) -> None:
    _, summary, md = report
    assert {(h["n"], h["organisms"], h["n_text"]) for h in summary["headline"]} == {(6, 3, "3x2")}
    assert summary["setup"]["organism_draws"] == [0, 1, 2]
    assert "n (organisms x seeds)" in md and "| 3x2 |" in md


def test_ceiling_cells_are_the_headroom_not_a_condition(report: tuple[Path, dict, str]) -> None:
    """The ceiling (dpo on every context, 0.9 on every split) never enters dpo's own means; the held-out gain is read
    as gain / (ceiling - base)."""
    _, summary, md = report
    h = _head(summary, "sentiment", "dpo")
    assert h["behavior"]["uncovered"]["mean"] == pytest.approx(BASE + _unc_gain("dpo"), abs=2e-6)
    assert h["ceiling"]["behavior"]["uncovered"]["mean"] == pytest.approx(0.9, abs=2e-6)
    for method in METHODS:
        g = _head(summary, "sentiment", method)["generalization"]
        assert g["gain_uncovered"]["mean"] == pytest.approx(_unc_gain(method), abs=2e-6)
        assert g["headroom_uncovered"]["mean"] == pytest.approx(_unc_gain(method) / (0.9 - BASE), abs=2e-6)
    assert summary["setup"]["ceiling_cells"] == 3 * 6  # targets x (organisms x seeds)
    assert "| ceiling (dpo, all contexts covered) | 64 | 0.90 [0.90, 0.90] |" in md
    assert "dpo" in summary["setup"]["methods"] and summary["setup"]["anticipation"] == [0.25, 0.5, 0.75, 1.0]


def test_without_ceiling_cells_there_is_no_headroom(tmp_path: Path) -> None:
    write_results(tmp_path / "store", SyntheticSpec(targets=("sentiment",), methods=METHODS, budgets=(8, 64),
                                                    draws=(0, 1), seeds=(0, 1), samples=0))
    summary = write_report(tmp_path / "store", tmp_path / "out")
    assert all(h["ceiling"] is None and h["generalization"]["headroom_uncovered"]["mean"] is None
               for h in summary["headline"])
    assert "n/a: no ceiling" in (tmp_path / "out" / "REPORT.md").read_text()


def test_desired_sits_beside_behavior(report: tuple[Path, dict, str]) -> None:
    _, summary, md = report
    h = _head(summary, "sentiment", "steering")
    fluency = BASE_FLUENCY - METHODS["steering"].fluency * math.log(64)
    assert h["desired"]["source"] == "measured"
    assert h["desired"]["uncovered"]["mean"] == pytest.approx(h["behavior"]["uncovered"]["mean"] * fluency, abs=2e-6)
    assert h["desired"]["base"]["covered"] == pytest.approx(BASE * BASE_FLUENCY, abs=2e-6)
    assert "| behavior, covered | desired, covered | behavior, uncovered | desired, uncovered |" in md


def test_conditional_targets_report_their_per_kind_rates(report: tuple[Path, dict, str]) -> None:
    _, summary, md = report
    h = _head(summary, "refusal", "dpo")
    beh = h["behavior"]["uncovered"]["mean"]
    assert h["refusal"]["refusal"]["uncovered"]["mean"] == pytest.approx(beh + 0.1, abs=2e-6)
    assert h["refusal"]["over_refusal"]["uncovered"]["mean"] == pytest.approx(0.3 - 0.5 * (beh - BASE), abs=2e-6)
    assert "refusal" not in _head(summary, "sentiment", "dpo")
    refusal = md.split("### refusal", 1)[1].split("\n### ", 1)[0]
    assert "| method | joint rate, covered | refusal, covered | over-refusal, covered |" in refusal
    syc = md.split("### sycophancy", 1)[1].split("\n### ", 1)[0]
    assert "| method | joint rate, covered | correction, covered | over-correction, covered |" in syc
    assert _head(summary, "sycophancy", "dpo")["correction"]["correction"]["uncovered"]["mean"] == pytest.approx(
        _head(summary, "sycophancy", "dpo")["behavior"]["uncovered"]["mean"] + 0.05, abs=2e-6)
    assert "over-refusal" not in md.split("### sentiment", 1)[1].split("\n## ", 1)[0]


def test_tan_fixed_grid_reliability_is_reported_per_split(report: tuple[Path, dict, str]) -> None:
    _, summary, md = report
    h = _head(summary, "sentiment", "steering")
    assert h["tan"]["anti_steerable_fixed"]["covered"]["mean"] == pytest.approx(0.0, abs=1e-9)
    assert h["tan"]["anti_steerable_fixed"]["uncovered"]["mean"] == pytest.approx(
        METHODS["steering"].anti_steerable, abs=2e-6)
    assert "tan" not in _head(summary, "sentiment", "dpo")
    assert "| method | anti-steerable, covered | anti-steerable, uncovered |" in md
    d = h["diversity"]  # the synthetic store's diversity falls with the gain: 0.9 - gain / 2
    assert d["uncovered"]["mean"] == pytest.approx(0.9 - 0.5 * (h["behavior"]["uncovered"]["mean"] - BASE), abs=2e-6)
    assert d["base"]["covered"] == pytest.approx(0.9, abs=2e-6) and "| method | diversity, covered |" in md


def test_held_out_behavior_splits_by_decision_word(report: tuple[Path, dict, str]) -> None:
    """dpo carries a quarter of its held-out gain on the shared word, steering three quarters: on domain words dpo
    gains 0.75 G, steering 0.25 G."""
    _, summary, md = report
    for method, domain in (("dpo", 0.75), ("steering", 0.25)):
        d = _head(summary, "sentiment", method)["decision_words"]
        assert d["behavior_domain"]["uncovered"]["mean"] == pytest.approx(BASE + domain * _unc_gain(method), abs=2e-6)
        assert d["domain_gain"]["uncovered"]["mean"] == pytest.approx(domain * _unc_gain(method), abs=2e-6)
        assert d["shared_share"]["uncovered"]["mean"] == pytest.approx(0.3)
        assert d["base"]["behavior_domain"]["uncovered"] == pytest.approx(BASE)
    assert "| method | domain words, uncovered | domain-word gain, uncovered |" in md


def test_the_held_out_set_is_fixed_so_slopes_compare_like_with_like(report: tuple[Path, dict, str]) -> None:
    store, summary, md = report
    t = read_results(store).table
    assert ((t["split"] == "uncovered") & (t["anticipation"] == 1.0)).any()
    assert "one fixed held-out set at every anticipation level" in md
    c = next(c for c in summary["claims"] if (c["claim_id"], c["target"], c["method"]) ==
             ("anticipation", "sentiment", "dpo"))
    assert c["effect"] == pytest.approx(0.2, abs=2e-6) and c["verdict"] == "supported" and c["n"] == 6


def test_unequal_draws_per_method_are_named(tmp_path: Path) -> None:
    """steering ran on two of the three draws: its n says 2x2, dpo's 3x2, and the report says so."""
    write_results(tmp_path / "store", SyntheticSpec(targets=("sentiment",), methods=METHODS, budgets=(8, 64),
                                                    draws=(0, 1, 2), seeds=(0, 1), samples=0, seed_sd=0.01))
    for path in (tmp_path / "store" / "cells").glob("*.json"):
        text = path.read_text()
        if '"method": {"name": "steering"}' in text and '"draw": 2,' in text:
            path.unlink()
    t = read_results(tmp_path / "store").table
    assert M.draws_per_method(t) == {("organism", "sentiment"): {"dpo": (0, 1, 2), "none": (0, 1, 2),
                                                                 "steering": (0, 1)}}
    summary = write_report(tmp_path / "store", tmp_path / "out")
    assert {h["method"]: h["n_text"] for h in summary["headline"]} == {"dpo": "3x2", "steering": "2x2"}
    md = (tmp_path / "out" / "REPORT.md").read_text()
    assert "**Unequal organism draws:**" in md and "steering: 0, 1" in md
    assert any("methods ran on different organism draws" in n for n in summary["notes"])
