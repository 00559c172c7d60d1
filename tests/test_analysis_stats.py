"""The report's statistics tested like code: simulated studies with a known answer, at the default design of 3 organism
draws x 2 seeds with a random organism effect, checked for the coverage of their intervals and the rate at which
identical methods are called different or a null claim gets a verdict; and the claims section on stores whose answer is
planted.

The figures these tests measure print with `-s`:
    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q -s tests/test_analysis_stats.py
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import calibration
from analysis import claims as C
from analysis import findings as W
from analysis import metrics as M
from analysis.paired import PairedTests
from analysis.report import write_report
from analysis.stats import holm, mean_ci, t_pvalue, t_quantile
from analysis.synthetic import MethodTruth, SyntheticSpec, expected, write_results
from analysis.table import read_results

DRAWS, SEEDS = (0, 1, 2), (0, 1)  # the default design: 3 organisms x 2 seeds
SEED_SD = 0.03


def _rows(target: str, method: str, model_id: str, budget: int, seed: int, draw: int = 0,
          **kw: object) -> dict[str, object]:
    cond = "-".join(str(kw.get(k, "")) for k in ("anticipation", "labeler_noise", "labeler_misspec"))
    return {"run_id": f"{model_id}-{target}-{method}-{budget}-{draw}-{seed}-{cond}", "model": "organism",
            "model_id": model_id, "method": method, "target": target, "target_version": "1", "budget": budget,
            "feedback_cost": float(budget), "labels_used": budget, "anticipation": 0.5, "labeler_noise": 0.0,
            "labeler_misspec": 0.0, "seed": seed, "draw": draw, "n": 64} | kw


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


def test_the_interval_rule_is_chosen_by_simulation() -> None:
    """Why the report's intervals run over draw means: at 3 organisms x 2 seeds, with the draws' SD twice the seeds',
    a t interval over the 6 runs covers the true mean about 83% of the time, a two-stage bootstrap about 78%, the t
    interval over the 3 draw means (2 df) 95%; and only the latter keeps a paired test of identical methods at 5%."""
    cover = calibration.coverage(3, 2, sd_draw=2 * SEED_SD, sd_seed=SEED_SD, reps=4000)
    calls = calibration.paired_false_calls(3, 2, sd_draw=2 * SEED_SD, sd_seed=SEED_SD, sd_interaction=2 * SEED_SD,
                                           reps=4000)
    print(f"coverage at 3x2, sd_draw = 2 sd_seed: {cover}; paired false calls: {calls}")
    assert cover["draw_means_t"] >= 0.93 and cover["runs_t"] < 0.88 and cover["two_stage_bootstrap"] < 0.85
    assert calls["draw_means_t"] <= 0.06 < 0.10 < calls["runs_t"]


def test_a_seed_shared_by_every_draw_is_invisible_to_the_draw_interval_so_seeds_are_nested():
    """Why a cell runs at a seed nested in its draw (study.run.grid.run_seed): with the same seed in every draw (one
    coverage order, test set and sampling stream for all), each seed's effect is common to the draws' means and their
    spread cannot see it. The default store's 3 x 2 tables of behavior had median SDs of 0.027 (draw), 0.017 (a seed
    effect shared by the draws) and 0.042 (the rest); at those the draw-means interval covers about 94%, and about
    87% at a shared effect of 0.05; nested (no shared effect) it covers 95%."""
    nested = calibration.coverage(3, 2, sd_draw=0.03, sd_seed=0.045, reps=6000)["draw_means_t"]
    crossed = calibration.coverage(3, 2, sd_draw=0.03, sd_seed=0.045, sd_shared=0.05, reps=6000)["draw_means_t"]
    print(f"draw-means coverage, nested seeds: {nested:.3f}; a shared seed effect of 0.05: {crossed:.3f}")
    assert nested >= 0.935 and crossed < 0.9


def test_variance_components_find_a_shared_seed_effect_only_where_there_is_one() -> None:
    """`calibration.components` reads a draws x seeds table as a crossed design: its shared-seed SD recovers a seed
    effect common to the draws and comes out near 0 without one (seeds nested in draws)."""
    rng = np.random.default_rng(3)
    crossed = calibration.simulate(400, 3, 8, 0.05, 0.02, rng, sd_shared=0.06)
    nested = calibration.simulate(400, 3, 8, 0.05, 0.02, rng)
    shared = [np.median([calibration.components(y)[1] for y in ys]) for ys in (crossed, nested)]
    draw = np.median([calibration.components(y)[0] for y in nested])
    assert 0.045 < shared[0] < 0.075 and shared[1] < 0.01 and 0.035 < draw < 0.065


REPORTS = 300  # independent simulated configurations (one model each) per coverage measurement


@pytest.mark.parametrize("ratio", [1.0, 2.0])
def test_intervals_cover_the_true_mean_at_3_draws_x_2_seeds(tmp_path: Path, ratio: float) -> None:
    """The report's 95% intervals (behavior means, and gains over the base paired by draw and seed) cover the known
    answer at least 90% of the time at 3 organism draws x 2 seeds, when the draws differ by a random effect as large
    as the seeds' noise or twice it (each organism also suits each method differently); read from a store whose rows
    carry `draw`. Over the 6 runs as if independent the same data would cover well under 90%."""
    spec = SyntheticSpec(models=tuple(f"m{i}" for i in range(REPORTS)), targets=("sentiment",),
                         model_configs=tuple({"path": "organism", "organism_key": f"k{i}"} for i in range(REPORTS)),
                         methods={"dpo": MethodTruth(0.08)}, budgets=(8,), draws=DRAWS, seeds=SEEDS, seed_sd=0.0,
                         cell_sd=SEED_SD,
                         sd_draw=ratio * SEED_SD, sd_draw_method=ratio * SEED_SD / 2, samples=0, noise_seed=7)
    write_results(tmp_path, spec)
    t = read_results(tmp_path).table
    agg = M.aggregate(t)
    agg = agg[(agg["metric"] == "behavior") & (agg["split"] == "uncovered")]
    truth = np.where(agg["method"] == "dpo", expected(spec.methods["dpo"], spec.base, "uncovered", 8, 0.5, 0, 0),
                     spec.base)
    assert len(agg) == 2 * REPORTS and (agg["n"] == 6).all() and (agg["organisms"] == 3).all()
    mean_cover = float(((agg["ci_lo"] <= truth) & (truth <= agg["ci_hi"])).mean())
    g = M.gains(t)
    g = g[g["split"] == "uncovered"]
    gain = truth.max() - spec.base
    gain_cover = float(((g["gain_lo"] <= gain) & (gain <= g["gain_hi"])).mean())
    beh = t[(t["metric"] == "behavior") & (t["split"] == "uncovered")]
    runs = beh.groupby(["model_id", "method"])["value"].agg(["mean", "std", "count"])
    half = float(t_quantile(5)) * runs["std"] / np.sqrt(runs["count"])
    naive_truth = np.where(runs.index.get_level_values("method") == "dpo", truth.max(), spec.base)
    naive = float(((runs["mean"] - half <= naive_truth) & (naive_truth <= runs["mean"] + half)).mean())
    print(f"coverage at 3 organisms x 2 seeds, sd_draw = {ratio:g} x sd_seed: means {mean_cover:.1%}, "
          f"gains {gain_cover:.1%} (over the 6 runs as if independent: {naive:.1%})")
    assert mean_cover >= 0.90 and gain_cover >= 0.90
    assert naive < mean_cover


def test_one_organism_three_seeds_covers_too() -> None:
    """One draw: the seeds are the units (t with 2 df)."""
    rng = np.random.default_rng(12)
    rows = [_rows(f"t{r}", "dpo", "organism", 8, s, split="uncovered", metric="behavior",
                  value=0.5 + rng.normal(0.0, SEED_SD)) for r in range(400) for s in range(3)]
    agg = M.aggregate(pd.DataFrame(rows))
    covered = float(((agg["ci_lo"] <= 0.5) & (0.5 <= agg["ci_hi"])).mean())
    print(f"coverage, 1 organism x 3 seeds: {covered:.1%}")
    assert (agg["n"] == 3).all() and covered >= 0.90


# ---- false clear calls -------------------------------------------------------------------------------------------


def _identical_methods_table(reports: int, rng: np.random.Generator, draws: tuple[int, ...] = DRAWS,
                             seeds: tuple[int, ...] = SEEDS, sd_draw: float = 2 * SEED_SD) -> pd.DataFrame:
    """`reports` small studies (one target each): two identical methods and the base, 3 draws x 2 seeds, two budgets,
    one dial varied at a time. Each organism draw shifts every method (sd `sd_draw`) and each method a little
    differently (sd `sd_draw` / 2); every value has its own noise (sd 0.03)."""
    rows = []
    conds = [(0.0, 0.0), (0.2, 0.0), (0.0, 0.3)]
    for r in range(reports):
        shared = rng.normal(0.0, sd_draw, len(draws))
        for method in ("a", "b", "none"):
            own = rng.normal(0.0, sd_draw / 2, len(draws))
            for budget in ((8, 64) if method != "none" else (0,)):
                for noise, mis in conds:
                    for d in draws:
                        for s in seeds:
                            kw = {"labeler_noise": noise, "labeler_misspec": mis}
                            gain = 0.1 * math.log(budget) if budget else 0.0
                            for split, g in (("covered", gain), ("uncovered", 0.5 * gain), ("all", 0.75 * gain)):
                                v = 0.3 + g - 0.2 * noise - 0.2 * mis + shared[d] + own[d] + rng.normal(0.0, SEED_SD)
                                rows.append(_rows(f"t{r}", method, "organism", budget, s, d, split=split,
                                                  metric="behavior", value=v, **kw))
                            kl = 0.01 * math.log(budget) if budget else 0.0
                            rows.append(_rows(f"t{r}", method, "organism", budget, s, d, split="neutral",
                                              metric="kl", value=kl * (1 + rng.normal(0.0, 0.1)), **kw))
    return pd.DataFrame(rows)


def _stats(t: pd.DataFrame, threshold: float) -> W.Stats:
    ref = M.reference_condition(t)
    return W.Stats(agg=M.aggregate(t), cost=M.cost_to_threshold(t, threshold), gen=M.generalization(t),
                   slopes={d: M.slope(t, d) for d in M.DIALS}, side=M.side_effects(t), ref=ref, threshold=threshold)


def test_identical_methods_are_rarely_called_different() -> None:
    """Two identical methods at 3 draws x 2 seeds with a random organism effect: at most 5% of simulated reports
    call any clear win (paired by draw and seed, Holm over each report's calls)."""
    reports = 300
    t = _identical_methods_table(reports, np.random.default_rng(5))
    threshold = 0.6
    stats = _stats(t, threshold)
    records = W.headline(stats)
    tests = PairedTests(t, stats.ref, threshold)
    by_target: dict[str, list] = {}
    for rec in records:
        by_target.setdefault(rec["target"], []).append(rec)
    assert len(by_target) == reports and all(r["n"] == 6 and r["organisms"] == 3 for r in records)
    calls, any_clear = 0, 0
    for recs in by_target.values():
        wins = [w for w in W.winners(recs, threshold, tests) if w.get("runner_up") is not None and not w["tied"]]
        calls += len(wins)
        any_clear += any(w["clear"] for w in wins)
    rate = any_clear / reports
    print(f"false clear calls at 3 organisms x 2 seeds: {rate:.1%} of {reports} reports ({calls / reports:.1f} "
          "calls each)")
    assert calls / reports >= 5  # most questions are asked of every report
    assert rate <= 0.05


def test_clear_calls_need_a_paired_difference() -> None:
    """A real difference, 0.1 on every matched run (give or take 0.005), is called clear though each method's own
    draws scatter by 0.06: the test is paired, on the 3 draws. One run never is."""
    t = _identical_methods_table(1, np.random.default_rng(1))
    a, b = (t["method"] == "a") & (t["metric"] == "behavior"), (t["method"] == "b") & (t["metric"] == "behavior")
    t.loc[a, "value"] = t.loc[b, "value"].to_numpy() + 0.1 + np.random.default_rng(2).normal(0, 0.005, a.sum())
    wins = {(w["question"], w["split"]): w for w in W.winners(W.headline(_stats(t, 0.6)), 0.6,
                                                                PairedTests(t, M.reference_condition(t), 0.6))}
    w = wins[("highest behavior at largest budget", "covered")]
    assert (w["method"], w["clear"], w["n_paired"]) == ("a", True, 3) and w["p_holm"] < 0.05
    one = t[(t["seed"] == 0) & (t["draw"] == 0)]
    assert not any(w.get("clear") for w in W.winners(W.headline(_stats(one, 0.6)), 0.6,
                                                     PairedTests(one, M.reference_condition(one), 0.6)))


def test_paired_differences_match_runs_then_average_draws() -> None:
    """The paired difference pairs (draw, seed) runs, averages them per draw, and runs its t test over draws."""
    rows = []
    for d, shift in zip(DRAWS, (0.0, 0.3, -0.2)):  # a large organism effect, shared by both methods: it cancels
        for s in SEEDS:
            for method, v in (("a", 0.5 + shift + 0.01 * (d + s)), ("b", 0.4 + shift)):
                rows.append(_rows("sentiment", method, "organism", 8, s, d, split="covered", metric="behavior",
                                  value=v))
    t = pd.DataFrame(rows)
    d = PairedTests(t, M.reference_condition(t), 0.8).difference(
        ("highest behavior at largest budget", "covered"), "organism", "sentiment", ("a", 8), ("b", 8))
    per_draw = np.array([0.1 + 0.01 * (k + 0.5) for k in DRAWS])
    assert (d.units, d.runs, d.organisms) == (3, 6, 3)
    assert d.estimate == pytest.approx(per_draw.mean()) and d.se == pytest.approx(per_draw.std(ddof=1) / math.sqrt(3))


# ---- the claims: multiplicity ------------------------------------------------------------------------------------


def test_the_correction_gives_verdicts_exactly_where_benjamini_hochberg_selects() -> None:
    """Each measured row's interval is drawn at 1 - R q / m: it excludes 0 exactly for the R rows BH selects."""
    rng = np.random.default_rng(3)
    rows = [C._claim("anticipation", "x", "m", "t", f"m{i}", 1.0, float(e), 1.0, 3, 6, 3)
            for i, e in enumerate(np.r_[rng.normal(0, 1, 20), rng.normal(15, 1, 5)])]
    rows.append(C._claim("anticipation", "x", "m", "t", "unmeasured", 1.0))
    out = C.correct(rows)
    p = np.array([r["p"] for r in out if r["effect"] is not None])
    m = len(p)
    ranked = np.sort(p)
    big_r = int(np.flatnonzero(ranked <= 0.05 * np.arange(1, m + 1) / m)[-1] + 1)
    selected = {r["method"] for r in out if r["effect"] is not None and r["p"] <= ranked[big_r - 1]}
    called = {r["method"] for r in out if r["verdict"] in ("supported", "contradicted")}
    assert called == selected and len(called) >= 5
    assert all(r["level"] == pytest.approx(1 - big_r * 0.05 / m) for r in out if r["effect"] is not None)
    assert out[-1]["verdict"] == "not measured" and out[-1]["lo"] is None


def _null_claims_table(reports: int, rng: np.random.Generator) -> pd.DataFrame:
    """`reports` studies in which no claim is true: rlhf, dpo and steering identical, none of them moved by
    anticipation, noise or misspecification; 3 draws x 2 seeds with a random organism effect."""
    rows = []
    conds = [(a, 0.0, 0.0) for a in (0.5, 0.25, 0.75, 1.0)] + [(0.5, 0.2, 0.0), (0.5, 0.0, 0.5)]
    for r in range(reports):
        shared = rng.normal(0.0, 2 * SEED_SD, len(DRAWS))
        for method in ("rlhf", "dpo", "steering", "none"):
            own = rng.normal(0.0, SEED_SD, len(DRAWS))
            for budget in ((8, 64) if method != "none" else (0,)):
                for a, noise, mis in conds:
                    kw = {"anticipation": a, "labeler_noise": noise, "labeler_misspec": mis}
                    for d in DRAWS:
                        for s in SEEDS:
                            v = 0.3 + (0.1 * math.log(budget) if budget else 0.0) + shared[d] + own[d]
                            for split in ("covered", "uncovered"):
                                rows.append(_rows(f"t{r}", method, "organism", budget, s, d, split=split,
                                                  metric="behavior", value=v + rng.normal(0.0, SEED_SD), **kw))
    return pd.DataFrame(rows)


def test_null_claims_rarely_get_a_verdict() -> None:
    """No claim true: the share of simulated reports that show any verdict but inconclusive (each report corrects
    its own 11 measured rows) stays near 5%, Benjamini-Hochberg's family-wise rate under the global null; the bound
    allows two standard errors of simulation noise (1.5% at 200 reports)."""
    reports = 200
    t = _null_claims_table(reports, np.random.default_rng(8))
    threshold = 0.6  # every method crosses it between budgets 8 and 64
    s = _stats(t, threshold)
    tests = PairedTests(t, s.ref, threshold)
    wrong, measured = 0, 0
    split = {name: dict(list(f.groupby("target"))) for name, f in
             [("agg", s.agg), ("cost", s.cost)] + [(d, f) for d, f in s.slopes.items()]}
    for r in range(reports):
        one = {name: per[f"t{r}"] for name, per in split.items()}
        sub = W.Stats(agg=one["agg"], cost=one["cost"], gen=s.gen, slopes={d: one[d] for d in s.slopes},
                      side=s.side, ref=s.ref, threshold=threshold)
        rows = C.measure_claims(sub, tests)
        got = [c for c in rows if c["effect"] is not None]
        measured += len(got)
        wrong += any(c["verdict"] in ("supported", "contradicted") for c in got)
    print(f"null claims given a verdict: {wrong / reports:.1%} of {reports} reports ({measured / reports:.0f} "
          "measured rows each)")
    assert measured / reports == 11  # 3 dials x 3 methods, steering vs rlhf and vs dpo
    assert wrong / reports <= 0.08


# ---- organism draws, and the claims ------------------------------------------------------------------------------


def _organism(seed: int, sharing: float = 0.4) -> dict[str, object]:
    return {"path": "organism", "organism_key": f"k{seed}s{sharing}",
            "organism": {"train": {"seed": seed, "steps": 10}, "world": {"sharing": sharing, "seed": 0}}}


def test_older_stores_with_one_key_per_draw_are_pooled(tmp_path: Path) -> None:
    """A store written before rows carried `draw` (each draw its own organism key, differing in train.seed only):
    the draws are pooled into one model, over organisms x seeds."""
    spec = SyntheticSpec(models=("organism",) * 3, model_configs=tuple(_organism(s) for s in range(3)),
                         model_scale=(0.9, 1.0, 1.1), targets=("sentiment",),
                         methods={"dpo": MethodTruth(0.08)}, budgets=(8, 64), samples=0, row_draw=False)
    write_results(tmp_path / "store", spec)
    summary = write_report(tmp_path / "store", tmp_path / "out")
    assert len(summary["models"]) == 1 and summary["models"][0]["draws"] == [0, 1, 2]
    h = summary["headline"][0]
    assert (h["n"], h["organisms"], h["n_text"]) == (9, 3, "3x3")
    # covered gain 0.08 x scale x ln 64 per draw: the mean over draws, and an interval over the 3 draws (2 df)
    gains = [0.08 * s * math.log(64) for s in (0.9, 1.0, 1.1)]
    b = h["behavior"]["covered"]
    assert b["mean"] == pytest.approx(0.3 + np.mean(gains), abs=1e-6)
    assert b["hi"] - b["mean"] == pytest.approx(4.302653 * np.std(gains, ddof=1) / math.sqrt(3), rel=1e-4)
    assert "3 draws: pretraining seeds 0, 1, 2" in (tmp_path / "out" / "REPORT.md").read_text()


def test_old_store_without_draw_still_reports(tmp_path: Path) -> None:
    """No `draw` or `coverage` row fields: one organism, its seeds the units, every n 1 x seeds."""
    spec = SyntheticSpec(targets=("sentiment",), methods={"dpo": MethodTruth(0.08), "steering": MethodTruth(0.1)},
                         budgets=(8, 64), samples=0, row_draw=False, cell_sd=0.01)
    write_results(tmp_path / "store", spec)
    assert "draw" not in json.loads(next((tmp_path / "store" / "cells").glob("*.json")).read_text())["rows"][0]
    summary = write_report(tmp_path / "store", tmp_path / "out")
    assert {(h["n"], h["n_text"]) for h in summary["headline"]} == {(3, "1x3")}
    assert summary["setup"]["organism_draws"] == [0] and summary["claims"]
    md = (tmp_path / "out" / "REPORT.md").read_text()
    assert md.split("\n## ")[1].startswith("The claims, measured") and "| 1x3 |" in md


DEFAULT_METHODS = {
    "prompting": MethodTruth(0.03, ratio=1.0, kl=0.005, fluency=0.0, drift=0.0),
    "steering": MethodTruth(0.08, ratio=0.9, anticipation=0.05, noise=0.05, kl=0.01, steering=True),
    "steering_learned": MethodTruth(0.07, ratio=1.0, anticipation=0.1, noise=0.05, kl=0.01, steering=True),
    "lora_sft": MethodTruth(0.09, ratio=0.3, anticipation=0.3, noise=0.1, misspec=0.1, cost_per_label=4.0),
    "dpo": MethodTruth(0.06, ratio=0.6, anticipation=0.15, noise=0.2, misspec=0.25, kl=0.04),
    "rlhf": MethodTruth(0.06, ratio=0.5, anticipation=0.2, noise=0.3, misspec=0.2, kl=0.05),
}
DEFAULT_SHAPED = SyntheticSpec(
    targets=("sentiment", "sycophancy", "refusal"), methods=DEFAULT_METHODS, budgets=(8, 32, 128, 512),
    anticipations=(0.5, 0.25, 0.75, 1.0), noises=(0.0, 0.2), misspecs=(0.0, 0.5), draws=DRAWS, seeds=SEEDS,
    seed_sd=0.0, cell_sd=0.01, sd_draw=0.03, sd_draw_method=0.01, held_out=0.25, ceiling="dpo", samples=0)
CLAIM_KEYS = {"claim", "method", "target", "effect", "lo", "hi", "n", "verdict"}


@pytest.fixture(scope="module")
def default_shaped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("default_shaped")
    write_results(root / "store", DEFAULT_SHAPED)
    return root / "out", write_report(root / "store", root / "out", threshold=0.5)


def test_claims_cover_every_claim_and_labeled_method_at_n_6(default_shaped: tuple[Path, dict]) -> None:
    """On a default-shaped study (3 targets, 6 labeled methods on 4 budgets, 4 anticipation levels with a fixed
    held-out set, a noisy and a misspecified labeler, 3 draws x 2 seeds): claims (a) and (b) for every method and
    target, (c) for each steering method against rlhf and dpo, all at n = 6; the sharing claim is not measured."""
    out, summary = default_shaped
    claims = summary["claims"]
    assert claims and all(CLAIM_KEYS <= set(c) for c in claims)
    by = {(c["claim_id"], c["target"], c["method"]): c for c in claims}
    for target in DEFAULT_SHAPED.targets:
        for method in DEFAULT_METHODS:
            for dial in ("anticipation", "labeler_noise", "labeler_misspec"):
                c = by[(dial, target, method)]
                assert (c["n"], c["organisms"], c["n_text"]) == (6, 3, "3x2") and c["effect"] is not None
                assert c["verdict"] in ("supported", "contradicted", "inconclusive")
            assert "(4 levels)" in by[("anticipation", target, method)]["note"]
        for steer in ("steering", "steering_learned"):
            for rival in ("rlhf", "dpo"):
                c = by[("cost", target, f"{steer} vs {rival}")]
                assert c["n"] == 6 and c["effect"] is not None and c["hi"] is not None, c
                assert c["lo"] is not None or c["bound"] == "upper"  # reached at the smallest budget: a bound
                assert c["effect"] < 0  # planted: steering's gain per ln budget is larger, at the same cost
                sh = by[("sharing", target, f"{steer} vs {rival}")]
                assert sh["verdict"] == "not measured" and "does not vary the sharing dial" in sh["note"]
    # planted: lora_sft's held-out behavior rises by 0.3 per unit of anticipation; dpo's falls by 0.25 per unit of
    # misspecification; prompting moves with neither
    for target in DEFAULT_SHAPED.targets:
        assert by[("anticipation", target, "lora_sft")]["verdict"] == "supported"
        assert by[("anticipation", target, "lora_sft")]["lo"] < 0.3 < by[("anticipation", target, "lora_sft")]["hi"]
        assert by[("labeler_misspec", target, "dpo")]["verdict"] == "supported"
        assert by[("anticipation", target, "prompting")]["verdict"] == "inconclusive"
    md = (out / "REPORT.md").read_text()
    assert md.split("\n## ")[1].startswith("The claims, measured")
    assert "| behavior on held-out contexts rises with anticipation | refusal | lora_sft |" in md


def test_planted_claims_get_their_verdicts(tmp_path: Path) -> None:
    """Rises, flat, falls: supported, inconclusive, contradicted, at 3 draws x 2 seeds."""
    methods = {"rlhf": MethodTruth(0.06, ratio=0.5, anticipation=0.3, noise=0.3),
               "dpo": MethodTruth(0.06, ratio=0.5, anticipation=0.0, noise=0.0),
               "steering": MethodTruth(0.12, ratio=0.9, anticipation=-0.3, noise=0.3)}
    spec = SyntheticSpec(targets=("sentiment",), methods=methods, budgets=(8, 64, 512),
                         anticipations=(0.5, 0.25, 0.75, 1.0), noises=(0.0, 0.2), samples=0, cell_sd=0.01,
                         draws=DRAWS, seeds=SEEDS, sd_draw=0.03, held_out=0.25)
    write_results(tmp_path / "store", spec)
    summary = write_report(tmp_path / "store", tmp_path / "out", threshold=0.7)
    got = {(c["claim_id"], c["method"]): c for c in summary["claims"]}
    assert got[("anticipation", "rlhf")]["verdict"] == "supported"  # planted +0.3
    assert got[("anticipation", "dpo")]["verdict"] == "inconclusive"  # planted 0
    assert got[("anticipation", "steering")]["verdict"] == "contradicted"  # planted -0.3
    assert got[("labeler_noise", "rlhf")]["verdict"] == "supported"
    assert got[("labeler_noise", "dpo")]["verdict"] == "inconclusive"
    c = got[("anticipation", "rlhf")]
    assert c["lo"] < 0.3 < c["hi"] and c["n"] == 6 and c["level"] < 1
    assert {m: got[("cost", m)]["verdict"] for m in ("steering vs rlhf", "steering vs dpo")} == {
        "steering vs rlhf": "supported", "steering vs dpo": "supported"}
    assert got[("cost", "steering_learned vs rlhf")]["verdict"] == "not measured"  # not run here
    assert "steering_learned not run" in got[("cost", "steering_learned vs rlhf")]["note"]


def test_the_sharing_claim_is_measured_where_models_vary_sharing(tmp_path: Path) -> None:
    """Three worlds at sharing 0, 0.2, 0.4, each with 3 draws: steering's gain grows with sharing while dpo's does
    not, so its cost advantage over dpo grows with sharing."""
    models = tuple(f"organism-sharing-{x}" for x in (0.0, 0.2, 0.4))
    configs = tuple({"path": "organism", "organism_key": f"k{i}", "organism": {"train": {"seed": 0},
                                                                             "world": {"sharing": x}}}
                    for i, x in enumerate((0.0, 0.2, 0.4)))
    methods = {"dpo": MethodTruth(0.1, ratio=0.6), "steering": MethodTruth(0.08, ratio=0.9)}
    spec = SyntheticSpec(models=models, model_configs=configs, targets=("sentiment",), methods=methods,
                         method_scale=({"steering": 1.0}, {"steering": 1.3}, {"steering": 1.6}),
                         budgets=(4, 16, 64, 256), draws=DRAWS, seeds=SEEDS, cell_sd=0.01, sd_draw=0.02,
                         samples=0)
    write_results(tmp_path / "store", spec)
    # uncovered: dpo 0.3 + 0.06 ln b reaches 0.5 at b = 28; steering 0.3 + 0.072 s ln b at 16, 8.5 and 5.7 for
    # s = 1, 1.3, 1.6: ln(cost ratio) -0.56, -1.19, -1.60, a slope of about +2.6 in the advantage per unit sharing
    summary = write_report(tmp_path / "store", tmp_path / "out", threshold=0.5)
    sharing = [c for c in summary["claims"] if c["claim_id"] == "sharing" and c["method"] == "steering vs dpo"]
    assert len(sharing) == 1 and sharing[0]["verdict"] == "supported" and sharing[0]["n"] == 18, sharing
    assert sharing[0]["effect"] == pytest.approx(2.6, abs=0.3)
    costs = [c for c in summary["claims"] if c["claim_id"] == "cost" and c["method"] == "steering vs dpo"]
    assert len(costs) == 3 and all(c["n"] == 6 for c in costs)
    assert "rlhf not run" in next(c["note"] for c in summary["claims"] if c["method"] == "steering vs rlhf")


def test_a_cost_claim_needs_more_than_one_budget(tmp_path: Path) -> None:
    """With one budget run, every replicate's cost to threshold is that budget: the grid, not the data. Such a cost
    claim is not measured (it would otherwise come out with a zero-width interval)."""
    methods = {"rlhf": MethodTruth(0.06, ratio=0.5), "steering": MethodTruth(0.12, ratio=0.9)}
    spec = SyntheticSpec(targets=("sentiment",), methods=methods, budgets=(64,), samples=0, cell_sd=0.01)
    write_results(tmp_path / "store", spec)
    summary = write_report(tmp_path / "store", tmp_path / "out", threshold=0.3)
    cost = [c for c in summary["claims"] if c["method"] == "steering vs rlhf" and c["claim_id"] == "cost"]
    assert cost and all(c["verdict"] == "not measured" and "one budget only" in c["note"] for c in cost)


def _steering_vs_dpo_cost(tmp_path: Path, steering_slope: float) -> dict:
    """The cost claim "steering vs dpo" at threshold 0.5 where dpo never reaches it within 512 labels."""
    methods = {"dpo": MethodTruth(0.01, ratio=0.5), "steering": MethodTruth(steering_slope, ratio=0.9)}
    spec = SyntheticSpec(targets=("sentiment",), methods=methods, budgets=(4, 32, 128, 512), draws=DRAWS,
                         seeds=SEEDS, cell_sd=0.01, sd_draw=0.01, samples=0)
    write_results(tmp_path / "store", spec)
    summary = write_report(tmp_path / "store", tmp_path / "out", threshold=0.5)
    return next(c for c in summary["claims"] if (c["claim_id"], c["method"]) == ("cost", "steering vs dpo"))


def test_a_rival_that_never_reaches_the_threshold_gives_a_one_sided_bound(tmp_path: Path) -> None:
    """dpo never reaches 0.5 on the held-out contexts within 512 labels; steering does, near 16: the cost ratio is
    only bounded above (ln(16 / 512) = -3.5 at most), its interval open below (null in summary.json)."""
    c = _steering_vs_dpo_cost(tmp_path, steering_slope=0.08)
    assert (c["bound"], c["lo"], c["verdict"], c["n"]) == ("upper", None, "supported", 6), c
    assert c["effect"] == pytest.approx(math.log(math.exp(0.2 / 0.072) / 512), abs=0.1) and c["hi"] < 0
    assert "| steering vs dpo | " in (tmp_path / "out" / "REPORT.md").read_text()


def test_a_cost_gap_censored_on_both_sides_gets_no_verdict(tmp_path: Path) -> None:
    """steering reaches 0.5 at its smallest budget in every replicate and dpo never within 512: both costs are
    censored, every leave-one-out crossing is the grid's edge and the jackknife SE is 0. That is no test, so the row
    keeps its bound but gets no interval and no verdict (it would otherwise be called at p = 0)."""
    c = _steering_vs_dpo_cost(tmp_path, steering_slope=0.2)
    assert c["verdict"] == "inconclusive" and c["lo"] is None and c["hi"] is None, c
    assert c["bound"] == "upper" and c["effect"] == pytest.approx(math.log(4 / 512), abs=0.01)
    assert "censored" in c["note"] and c["n"] == 6


def test_an_effect_and_spread_of_float_noise_get_p_1_not_a_t_test():
    """A slope that is exactly zero in every replicate comes out as 1e-17 +- 1e-17 after float sums: its p is 1
    whatever the noise's ratio (it was 0.002 or 0.04 depending on the order the cells were read in)."""
    for e, se in ((1.4e-17, 1.1e-17), (-3e-18, 1e-18), (0.0, 0.0)):
        row = C._claim("labeler_noise", "x", "m", "t", "prompting", -1.0, e, se, units=3, n=6, organisms=3)
        assert C._p(row) == 1.0, (e, se)
    real = C._claim("labeler_noise", "x", "m", "t", "dpo", -1.0, -0.2, 0.01, units=3, n=6, organisms=3)
    assert C._p(real) < 0.01
    exact = C._claim("labeler_noise", "x", "m", "t", "dpo", -1.0, -0.2, 0.0, units=3, n=6, organisms=3)
    assert C._p(exact) == 0.0
