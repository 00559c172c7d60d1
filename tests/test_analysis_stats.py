"""The report's statistics tested like code: simulated tables with a known answer, checked for the coverage of their
intervals and the rate at which identical methods are called different; and the claims section on stores whose
answer is planted."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import findings as W
from analysis import metrics as M
from analysis.paired import PairedTests
from analysis.report import write_report
from analysis.stats import holm, mean_ci, t_pvalue, t_quantile
from analysis.synthetic import MethodTruth, SyntheticSpec, write_results

REPLICATES = 400


def _rows(target: str, method: str, model_id: str, budget: int, seed: int, draw_key: str | None = None,
          **kw: object) -> dict[str, object]:
    return {"run_id": f"{model_id}-{target}-{method}-{budget}-{seed}-{kw.get('labeler_noise', 0)}-"
                      f"{kw.get('labeler_misspec', 0)}", "model": "organism", "model_id": draw_key or model_id,
            "method": method, "target": target, "target_version": "1", "budget": budget,
            "feedback_cost": float(budget), "labels_used": budget, "anticipation": 0.5, "labeler_noise": 0.0,
            "labeler_misspec": 0.0, "seed": seed, "n": 64} | kw


# ---- the distribution functions ----------------------------------------------------------------------------------


def test_t_distribution_matches_tables() -> None:
    assert t_quantile(np.array([1, 2, 3, 10, 30])) == pytest.approx([12.7062, 4.3027, 3.1824, 2.2281, 2.0423],
                                                                    abs=1e-4)
    assert float(t_pvalue(2.0, 5)) == pytest.approx(0.10194, abs=1e-5)
    assert float(t_pvalue(0.0, 3)) == pytest.approx(1.0)
    assert holm([0.01, 0.2, 0.03]) == pytest.approx([0.03, 0.2, 0.06])
    est, lo, hi, n = mean_ci(np.array([1.0, 2.0, 3.0, np.nan]))
    assert (est, n) == (2.0, 3) and hi - est == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)


# ---- coverage ----------------------------------------------------------------------------------------------------


def _coverage_table(organisms: int, seeds: int, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """REPLICATES independent configurations (one per target) of a true mean 0.5: a random organism effect (sd
    0.05) where there are several organism draws, and seed noise (sd 0.03)."""
    rows, draws = [], []
    for r in range(REPLICATES):
        effects = rng.normal(0.0, 0.05, organisms) if organisms > 1 else np.zeros(1)
        for d in range(organisms):
            key = f"organism:r{r}d{d}" if organisms > 1 else "organism"
            if organisms > 1:
                draws.append({"model_id": key, "family": "organism-draws:f", "draw": d, "sharing": math.nan})
            for s in range(seeds):
                rows.append(_rows(f"t{r}", "dpo", "organism", 8, s, key, split="uncovered", metric="behavior",
                                  value=0.5 + effects[d] + rng.normal(0.0, 0.03)))
    draws_frame = pd.DataFrame(draws, columns=["model_id", "family", "draw", "sharing"]).drop_duplicates("model_id")
    return pd.DataFrame(rows), draws_frame


@pytest.mark.parametrize("organisms", [1, 3])
def test_intervals_cover_the_true_mean(organisms: int) -> None:
    """At 3 seeds (and 3 organisms x 3 seeds) the report's 95% intervals cover the known mean at least 90% of the
    time (a percentile bootstrap over 3 seeds: about 75%)."""
    table, draws = _coverage_table(organisms, 3, np.random.default_rng(11 + organisms))
    agg = M.aggregate(M.pool_draws(table, draws))
    assert len(agg) == REPLICATES and (agg["n"] == organisms * 3).all()
    covered = ((agg["ci_lo"] <= 0.5) & (0.5 <= agg["ci_hi"])).mean()
    print(f"coverage, {organisms} organism(s) x 3 seeds: {covered:.1%}")
    assert covered >= 0.90


# ---- false clear calls -------------------------------------------------------------------------------------------


def _identical_methods_table(reports: int, rng: np.random.Generator) -> pd.DataFrame:
    """`reports` small studies (one target each): two identical methods and the base, 3 seeds, two budgets, one dial
    varied at a time, independent noise (sd 0.03) on every value."""
    rows = []
    conds = [(0.0, 0.0), (0.2, 0.0), (0.0, 0.3)]
    for r in range(reports):
        for method in ("a", "b", "none"):
            for budget in ((8, 64) if method != "none" else (0,)):
                for noise, mis in conds:
                    for s in range(3):
                        kw = {"labeler_noise": noise, "labeler_misspec": mis}
                        gain = 0.1 * math.log(budget) if budget else 0.0
                        for split, g in (("covered", gain), ("uncovered", 0.5 * gain), ("all", 0.75 * gain)):
                            v = 0.3 + g - 0.2 * noise - 0.2 * mis + rng.normal(0.0, 0.03)
                            rows.append(_rows(f"t{r}", method, "organism", budget, s, split=split, metric="behavior",
                                              value=v, **kw))
                        kl = 0.01 * math.log(budget) if budget else 0.0
                        rows.append(_rows(f"t{r}", method, "organism", budget, s, split="neutral", metric="kl",
                                          value=kl * (1 + rng.normal(0.0, 0.1)), **kw))
    return pd.DataFrame(rows)


def test_identical_methods_are_rarely_called_different() -> None:
    """Two identical methods: at most 5% of simulated reports call any clear win (Holm over each report's calls)."""
    reports = 300
    t = _identical_methods_table(reports, np.random.default_rng(5))
    ref = M.reference_condition(t)
    threshold = 0.6
    stats = W.Stats(agg=M.aggregate(t), cost=M.cost_to_threshold(t, threshold), gen=M.generalization(t),
                    slopes={d: M.slope(t, d) for d in M.DIALS}, side=M.side_effects(t), ref=ref, threshold=threshold)
    records = W.headline(stats)
    tests = PairedTests(t, ref, threshold)
    by_target: dict[str, list] = {}
    for rec in records:
        by_target.setdefault(rec["target"], []).append(rec)
    assert len(by_target) == reports
    calls, any_clear = 0, 0
    for recs in by_target.values():
        wins = [w for w in W.winners(recs, threshold, tests) if w.get("runner_up") is not None and not w["tied"]]
        calls += len(wins)
        any_clear += any(w["clear"] for w in wins)
    rate = any_clear / reports
    print(f"false clear calls: {rate:.1%} of {reports} reports ({calls / reports:.1f} calls each)")
    assert calls / reports >= 5  # most questions are asked of every report
    assert rate <= 0.05


def test_clear_calls_need_a_paired_difference() -> None:
    """A real difference, 0.1 on every matched replicate (give or take 0.005), is called clear though each method's
    own seeds scatter by 0.03: the test is paired. One seed never is."""
    t = _identical_methods_table(1, np.random.default_rng(1))
    a, b = (t["method"] == "a") & (t["metric"] == "behavior"), (t["method"] == "b") & (t["metric"] == "behavior")
    t.loc[a, "value"] = t.loc[b, "value"].to_numpy() + 0.1 + np.random.default_rng(2).normal(0, 0.005, a.sum())
    ref = M.reference_condition(t)
    stats = W.Stats(agg=M.aggregate(t), cost=M.cost_to_threshold(t, 0.6), gen=M.generalization(t),
                    slopes={d: M.slope(t, d) for d in M.DIALS}, side=M.side_effects(t), ref=ref, threshold=0.6)
    wins = {(w["question"], w["split"]): w for w in W.winners(W.headline(stats), 0.6, PairedTests(t, ref, 0.6))}
    w = wins[("highest behavior at largest budget", "covered")]
    assert (w["method"], w["clear"], w["n_paired"]) == ("a", True, 3) and w["p_holm"] < 0.05
    one = t[t["seed"] == 0]
    stats1 = W.Stats(agg=M.aggregate(one), cost=M.cost_to_threshold(one, 0.6), gen=M.generalization(one),
                     slopes={d: M.slope(one, d) for d in M.DIALS}, side=M.side_effects(one), ref=ref, threshold=0.6)
    assert not any(w.get("clear") for w in W.winners(W.headline(stats1), 0.6, PairedTests(one, ref, 0.6)))


# ---- organism draws, and the claims ------------------------------------------------------------------------------


def _organism(seed: int, sharing: float = 0.4) -> dict[str, object]:
    return {"path": "organism", "organism_key": f"k{seed}s{sharing}",
            "organism": {"train": {"seed": seed, "steps": 10}, "world": {"sharing": sharing, "seed": 0}}}


def test_organism_draws_are_pooled_over_organisms_x_seeds(tmp_path: Path) -> None:
    spec = SyntheticSpec(models=("organism",) * 3, model_configs=tuple(_organism(s) for s in range(3)),
                         model_scale=(0.9, 1.0, 1.1), targets=("sentiment",),
                         methods={"dpo": MethodTruth(0.08)}, budgets=(8, 64), samples=0)
    write_results(tmp_path / "store", spec)
    summary = write_report(tmp_path / "store", tmp_path / "out")
    assert len(summary["models"]) == 1 and summary["models"][0]["draws"] == [0, 1, 2]
    h = summary["headline"][0]
    assert h["n"] == 9
    # covered gain 0.08 x scale x ln 64 per draw: the mean over draws, and an interval over the 3 draws (2 df)
    gains = [0.08 * s * math.log(64) for s in (0.9, 1.0, 1.1)]
    b = h["behavior"]["covered"]
    assert b["mean"] == pytest.approx(0.3 + np.mean(gains), abs=1e-6)
    assert b["hi"] - b["mean"] == pytest.approx(4.302653 * np.std(gains, ddof=1) / math.sqrt(3), rel=1e-4)
    assert "3 draws: pretraining seeds 0, 1, 2" in (tmp_path / "out" / "REPORT.md").read_text()


def test_claims_follow_planted_answers(tmp_path: Path) -> None:
    methods = {"rlhf": MethodTruth(0.06, ratio=0.5, anticipation=0.3, noise=0.3),
               "dpo": MethodTruth(0.06, ratio=0.5, anticipation=0.0, noise=0.0),
               "steering": MethodTruth(0.12, ratio=0.9, anticipation=-0.3, noise=0.3)}
    spec = SyntheticSpec(targets=("sentiment",), methods=methods, budgets=(8, 64, 512), anticipations=(0.5, 0.25, 0.75),
                         noises=(0.0, 0.2), samples=0, cell_sd=0.01)
    write_results(tmp_path / "store", spec)
    summary = write_report(tmp_path / "store", tmp_path / "out", threshold=0.7)
    got = {(c["claim"].split(" with ")[-1] if " with " in c["claim"] else c["claim"], c["method"]): c
           for c in summary["claims"]}
    assert got[("anticipation", "rlhf")]["verdict"] == "supported"  # planted +0.3
    assert got[("anticipation", "dpo")]["verdict"] == "inconclusive"  # planted 0
    assert got[("anticipation", "steering")]["verdict"] == "contradicted"  # planted -0.3
    assert got[("labeler noise", "rlhf")]["verdict"] == "supported"
    assert got[("labeler noise", "dpo")]["verdict"] == "inconclusive"
    c = got[("anticipation", "rlhf")]
    assert c["lo"] < 0.3 < c["hi"] and c["n"] == 3 and set(c) >= {"claim", "method", "target", "effect", "lo", "hi",
                                                                  "n", "verdict"}
    cost = [c for c in summary["claims"] if "lower feedback cost" in c["claim"]]
    assert {c["method"]: c["verdict"] for c in cost} == {"steering vs rlhf": "supported",
                                                         "steering vs dpo": "supported"}
    assert all(c["verdict"] == "not measured" for c in summary["claims"] if "sharing" in c["claim"])
    md = (tmp_path / "out" / "REPORT.md").read_text()
    assert md.split("\n## ")[1].startswith("The claims, measured")


def test_a_cost_claim_needs_more_than_one_budget(tmp_path: Path) -> None:
    """With one budget run, every replicate's cost to threshold is that budget: the grid, not the data. Such a cost
    claim is not measured (it would otherwise come out with a zero-width interval)."""
    methods = {"rlhf": MethodTruth(0.06, ratio=0.5), "steering": MethodTruth(0.12, ratio=0.9)}
    spec = SyntheticSpec(targets=("sentiment",), methods=methods, budgets=(64,), samples=0, cell_sd=0.01)
    write_results(tmp_path / "store", spec)
    summary = write_report(tmp_path / "store", tmp_path / "out", threshold=0.3)
    cost = [c for c in summary["claims"] if "lower feedback cost" in c["claim"]]
    assert cost and all(c["verdict"] == "not measured" and "one budget only" in c["note"] for c in cost)
