"""analysis.figures against a synthetic store whose answer is known: each figure's CSV (the numbers it plots) must
hold that answer.

Seed offsets in analysis.synthetic are zero-mean, so every plotted mean is exactly the closed-form value (up to the
CSV's 10 significant digits): point checks use 1e-6. No truth below is within 0.01 of 0 or 1 (no clipping) or within
seed_sd of the threshold, so a wrong reference condition, budget, split or method shows up as an error of 0.01 or more.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import figures as F
from analysis.synthetic import MethodTruth, SyntheticSpec, expected, sample_slope, write_results
from analysis.table import load_slopes, read_results

BASE = 0.3
THRESHOLD = 0.6
METHODS = {
    # noise- and misspec-sensitive, rises with anticipation
    "dpo": MethodTruth(0.06, ratio=0.5, anticipation=0.2, noise=0.3, misspec=0.25, kl=0.04),
    # insensitive to the labeler, falls with anticipation, costs 4 per label, dominated by dpo on the Pareto plot
    "sft": MethodTruth(0.05, ratio=0.2, anticipation=-0.2, kl=0.06, cost_per_label=4.0),
    "steering": MethodTruth(0.03, ratio=0.9, noise=0.05, kl=0.01, steering=True, anti_steerable=0.1),
    "dpo+steering": MethodTruth(0.10, ratio=0.7, anticipation=0.1, noise=0.2, misspec=0.2, kl=0.05, steering=True,
                                anti_steerable=0.3),
}
SPEC = SyntheticSpec(targets=("sentiment", "refusal"), methods=METHODS, budgets=(8, 64, 512),
                     anticipations=(0.5, 0.25, 0.75), noises=(0.0, 0.2), misspecs=(0.0, 0.3), base=BASE)
REF = {"anticipation": 0.5, "labeler_noise": 0.0, "labeler_misspec": 0.0}
TOP = max(SPEC.budgets)
TOL = 1e-6
T2 = 4.302653  # Student t, 2 degrees of freedom, 97.5%


def crossing_truth(method: str, split: str, cond: dict[str, float], threshold: float = THRESHOLD) -> float:
    """Where the true curve crosses `threshold`, linear in log budget between the budgets around it (inf: never)."""
    ys = [truth(method, split, b, cond) for b in SPEC.budgets]
    k = next((i for i, y in enumerate(ys) if y >= threshold), None)
    if k is None:
        return math.inf
    if k == 0:
        return float(SPEC.budgets[0])
    frac = (threshold - ys[k - 1]) / (ys[k] - ys[k - 1])
    return math.exp(math.log(SPEC.budgets[k - 1]) + frac * math.log(SPEC.budgets[k] / SPEC.budgets[k - 1]))


def truth(method: str, split: str, budget: int, cond: dict[str, float]) -> float:
    if method == "none":
        return BASE
    return expected(METHODS[method], BASE, split, budget, cond["anticipation"], cond["labeler_noise"],
                    cond["labeler_misspec"])


@pytest.fixture(scope="module")
def figs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    """Every figure written once from SPEC; the CSV of each, read back."""
    root = tmp_path_factory.mktemp("store")
    write_results(root, SPEC)
    res = read_results(root)
    steer = sorted(res.table.loc[res.table["metric"] == "slope_p50", "run_id"].unique())
    notes: list[str] = []
    out = F.write_figures(res.table, root / "figures", notes, threshold=THRESHOLD,
                          slopes=load_slopes(res.cells_dir, steer))
    assert notes == [] and all(p is not None for p in out.values())
    return {name: pd.read_csv(F.data_path(path)) for name, path in out.items()}


def _slope(d: pd.DataFrame) -> float:
    return float(np.polyfit(d["x"], d["mean"], 1)[0])


def test_truth_keeps_clear_of_the_edges() -> None:
    """The design the tolerances rely on: no clipping, no seed crossing the threshold."""
    conds = [REF | {"anticipation": a} for a in SPEC.anticipations] + [REF | {"labeler_noise": e} for e in SPEC.noises]
    conds += [REF | {"labeler_misspec": p} for p in SPEC.misspecs]
    for m in METHODS:
        for b in SPEC.budgets:
            for c in conds:
                for split in ("covered", "uncovered", "all"):
                    v = truth(m, split, b, c)
                    assert SPEC.seed_sd < v < 1 - SPEC.seed_sd, (m, b, c, split)
            for split in ("covered", "uncovered"):
                assert abs(truth(m, split, b, REF) - THRESHOLD) > SPEC.seed_sd, (m, b, split)


def test_csvs_sit_beside_the_pngs_and_regenerate_byte_identically(tmp_path: Path) -> None:
    write_results(tmp_path / "store", SPEC)
    res = read_results(tmp_path / "store")
    steer = sorted(res.table.loc[res.table["metric"] == "slope_p50", "run_id"].unique())
    slopes = load_slopes(res.cells_dir, steer)
    first = F.write_figures(res.table, tmp_path / "a", threshold=THRESHOLD, slopes=slopes)
    F.write_figures(res.table, tmp_path / "b", threshold=THRESHOLD, slopes=slopes)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(
        f"{n}.{ext}" for n in F.FIGURES for ext in ("csv", "png"))  # no temporaries left behind
    for name, png in first.items():
        csv = F.data_path(png)
        assert csv == tmp_path / "a" / f"{name}.csv"
        assert csv.read_bytes() == (tmp_path / "b" / csv.name).read_bytes(), name
        assert b"\r" not in csv.read_bytes()
    columns = {"behavior_vs_cost": F.COST_COLS, "behavior_vs_anticipation": F.DIAL_COLS,
               "behavior_vs_labeler": F.DIAL_COLS, "pareto": F.PARETO_COLS, "cost_to_threshold": F.THRESHOLD_COLS,
               "steering_reliability": F.STEERING_COLS}
    for name, cols in columns.items():
        assert list(pd.read_csv(tmp_path / "a" / f"{name}.csv").columns) == cols, name


def test_behavior_vs_cost(figs: dict[str, pd.DataFrame]) -> None:
    d = figs["behavior_vs_cost"]
    assert set(d["facet"]) == set(SPEC.targets) and set(d["split"]) == {"covered", "uncovered"}
    assert set(d["method"]) == {"none"} | set(METHODS)
    for row in d.itertuples():  # every plotted point is the known answer at the reference condition
        assert row.mean == pytest.approx(truth(row.method, row.split, row.budget, REF), abs=TOL), row
        # the t interval over 3 seeds whose offsets are -sd, 0, +sd: mean +- t(2) sd / sqrt(3)
        assert row.ci_hi - row.ci_lo == pytest.approx(2 * T2 * SPEC.seed_sd / math.sqrt(3), abs=TOL), row
        assert row.n == len(SPEC.seeds)
    base = d[d["method"] == "none"]
    assert (base["feedback_cost"] == 0).all() and len(base) == 2 * len(SPEC.targets)  # one line per panel
    for (facet, method), g in d[d["method"] != "none"].groupby(["facet", "method"]):
        t = METHODS[method]
        cov = g[g["split"] == "covered"].sort_values("budget")
        unc = g[g["split"] == "uncovered"].sort_values("budget")
        assert list(cov["budget"]) == list(SPEC.budgets)
        # x is the feedback cost: budget x cost per label (sft pays 4 a label)
        assert np.allclose(cov["feedback_cost"], cov["budget"] * t.cost_per_label)
        # positive gain: behavior rises with every step of the budget, on both splits
        assert (np.diff(cov["mean"]) > 0.01).all() and (np.diff(unc["mean"]) > 0.001).all(), (facet, method)
        # the uncovered curve rises at `ratio` x the covered gain (the anticipation term is a constant offset) ...
        rise = (unc["mean"].to_numpy()[1:] - unc["mean"].iloc[0]) / (cov["mean"].to_numpy()[1:] - cov["mean"].iloc[0])
        assert rise == pytest.approx([t.ratio] * (len(SPEC.budgets) - 1), abs=TOL), (facet, method)
        # ... and once that offset is taken off, sits at ratio x the covered gain over the base
        over = (unc["mean"].to_numpy() - BASE - t.anticipation * REF["anticipation"]) / (cov["mean"].to_numpy() - BASE)
        assert over == pytest.approx([t.ratio] * len(SPEC.budgets), abs=TOL), (facet, method)
    steer = d[(d["method"] == "steering") & (d["facet"] == "sentiment")].sort_values("budget")
    cov, unc = (steer.loc[steer["split"] == s, "mean"].to_numpy() for s in ("covered", "uncovered"))
    assert (unc - BASE) / (cov - BASE) == pytest.approx([0.9] * len(SPEC.budgets), abs=TOL)  # no anticipation term


def test_behavior_vs_anticipation(figs: dict[str, pd.DataFrame]) -> None:
    d = figs["behavior_vs_anticipation"]
    assert set(d["dial"]) == {"anticipation"} and set(d["split"]) == {"covered", "uncovered", "all"}
    assert set(d["x"]) == set(SPEC.anticipations)
    assert (d.loc[d["method"] != "none", "budget"] == TOP).all()  # each method at its largest budget
    for row in d.itertuples():
        assert row.mean == pytest.approx(truth(row.method, row.split, row.budget, REF | {"anticipation": row.x}),
                                         abs=TOL), row
    for (facet, method, split), g in d.groupby(["facet", "method", "split"]):
        assert len(g) == len(SPEC.anticipations) and g["x"].is_monotonic_increasing
        if split == "covered" or method == "none":  # covered contexts do not depend on anticipation
            assert _slope(g) == pytest.approx(0.0, abs=TOL), (facet, method, split)
        elif split == "uncovered":  # uncovered behavior moves by k per unit of anticipation: sign and size
            assert _slope(g) == pytest.approx(METHODS[method].anticipation, abs=TOL), (facet, method)
    unc = d[(d["split"] == "uncovered") & (d["facet"] == "sentiment")]
    signs = {m: np.sign(round(_slope(g), 6)) for m, g in unc.groupby("method")}
    assert signs == {"none": 0, "dpo": 1, "dpo+steering": 1, "sft": -1, "steering": 0}


def test_behavior_vs_labeler(figs: dict[str, pd.DataFrame]) -> None:
    d = figs["behavior_vs_labeler"]
    panels = set(zip(d["dial"], d["split"]))
    assert panels == {(dial, s) for dial in ("labeler_noise", "labeler_misspec") for s in ("covered", "uncovered")}
    assert (d.loc[d["method"] != "none", "budget"] == TOP).all()
    for row in d.itertuples():
        assert row.mean == pytest.approx(truth(row.method, row.split, row.budget, REF | {row.dial: row.x}),
                                         abs=TOL), row
    for (facet, dial, method, split), g in d.groupby(["facet", "dial", "method", "split"]):
        t = METHODS.get(method, MethodTruth(0.0))
        if dial == "labeler_noise":  # noise costs nz per unit on both splits
            want = -t.noise
        else:  # misspecification only reaches uncovered contexts
            want = -t.misspec if split == "uncovered" else 0.0
        assert _slope(g) == pytest.approx(want, abs=TOL), (facet, dial, method, split)
    noise = d[(d["dial"] == "labeler_noise") & (d["facet"] == "sentiment") & (d["split"] == "covered")]
    by = {m: g.sort_values("x")["mean"].to_numpy() for m, g in noise.groupby("method")}
    assert by["dpo"][0] - by["dpo"][-1] == pytest.approx(0.3 * 0.2, abs=TOL)  # noise-sensitive: falls by 0.06
    assert by["sft"][0] == pytest.approx(by["sft"][-1], abs=TOL)  # insensitive: flat


def test_pareto_front_is_exactly_the_non_dominated_methods(figs: dict[str, pd.DataFrame]) -> None:
    d = figs["pareto"]
    assert set(d["facet"]) == set(SPEC.targets)
    pts = {("none", 0): (0.0, BASE)} | {
        (m, b): (t.kl * math.log(b), truth(m, "all", b, REF)) for m, t in METHODS.items() for b in SPEC.budgets}
    # Brute force from the closed form: a point is dominated when another has no more KL and at least as much
    # behavior, and is strictly better in one.
    front = {p for p, (k, y) in pts.items()
             if not any(k2 <= k and y2 >= y and (k2 < k or y2 > y) for q, (k2, y2) in pts.items() if q != p)}
    assert front == {("none", 0), ("steering", 8), ("steering", 64), ("steering", 512), ("dpo+steering", 8),
                     ("dpo", 64), ("dpo+steering", 64), ("dpo+steering", 512)}  # sft: dominated by dpo throughout
    for facet, g in d.groupby("facet"):
        assert len(g) == len(pts)
        for row in g.itertuples():
            kl, beh = pts[(row.method, row.budget)]
            assert (row.kl, row.behavior) == pytest.approx((kl, beh), abs=TOL), row
        assert set(zip(g.loc[g["on_front"], "method"], g.loc[g["on_front"], "budget"])) == front, facet


def test_cost_to_threshold_bars(figs: dict[str, pd.DataFrame]) -> None:
    d = figs["cost_to_threshold"]
    assert set(d["facet"]) == set(SPEC.targets) and (d["threshold"] == THRESHOLD).all()
    for (facet, split), g in d.groupby(["facet", "split"]):
        assert sorted(g["method"]) == sorted(METHODS)  # one bar or "not reached" per method
        for row in g.itertuples():
            t = METHODS[row.method]
            hit = [b for b in SPEC.budgets if truth(row.method, split, b, REF) >= THRESHOLD]
            if not hit:
                assert not row.reached and math.isinf(row.feedback_cost) and math.isinf(row.budget), row
                continue
            # interpolated in log budget between the last budget below the threshold and the first at or above it
            assert row.reached and row.budget == pytest.approx(crossing_truth(row.method, split, REF), rel=1e-6), row
            assert row.budget <= hit[0] and row.feedback_cost == pytest.approx(row.budget * t.cost_per_label)
            assert row.cost_lo < row.feedback_cost < row.cost_hi, row  # seeds differ: an interval, not a point
    for facet in SPEC.targets:
        cov = d[(d["facet"] == facet) & (d["split"] == "covered")]
        reached = cov[cov["reached"]].sort_values("feedback_cost")
        # cheapest first: dpo+steering below 64 labels, dpo below 512, sft below 512 labels but 4 per label
        assert list(reached["method"]) == ["dpo+steering", "dpo", "sft"]
        want = [crossing_truth(m, "covered", REF) * METHODS[m].cost_per_label for m in ("dpo+steering", "dpo", "sft")]
        assert list(reached["feedback_cost"]) == pytest.approx(want, rel=1e-6)
        assert list(cov.loc[~cov["reached"], "method"]) == ["steering"]
        unc = d[(d["facet"] == facet) & (d["split"] == "uncovered")]
        assert list(unc.loc[unc["reached"], "method"]) == ["dpo+steering"]
        assert set(unc.loc[~unc["reached"], "method"]) == {"dpo", "sft", "steering"}


def test_steering_reliability_per_sample(figs: dict[str, pd.DataFrame]) -> None:
    d = figs["steering_reliability"]
    assert set(d["method"]) == {"steering", "dpo+steering"} and (d["source"] == "samples").all()
    qs = ["p10", "p25", "p50", "p75", "p90"]
    for row in d.itertuples():
        t = METHODS[row.method]
        # The slopes of the seeds' cells at the largest budget and the reference condition, and no others.
        v = [sample_slope(t, i, seed) for i in range(SPEC.samples) for seed in SPEC.seeds]
        assert row.samples == len(v)
        want = np.quantile(v, [0.1, 0.25, 0.5, 0.75, 0.9])
        assert [getattr(row, q) for q in qs] == pytest.approx(want, abs=TOL), row
        assert row.p50 == pytest.approx(10 * t.gain, abs=0.05), row  # offsets spread over [-0.5, 0.5) round 0
        assert row.anti_steerable == pytest.approx(t.anti_steerable, abs=TOL)
    for facet, g in d.groupby("facet"):
        g = g.set_index("method")
        # both methods get the same offsets, so every quantile is shifted by exactly 10 x the gain difference
        shift = g.loc["dpo+steering", qs].to_numpy(float) - g.loc["steering", qs].to_numpy(float)
        assert shift == pytest.approx([10 * (0.10 - 0.03)] * len(qs), abs=TOL), facet


def test_steering_reliability_from_quantile_rows(tmp_path: Path) -> None:
    spec = SyntheticSpec(targets=("sentiment",), methods={"steering": METHODS["steering"]}, budgets=(8, 64),
                         samples=0)
    write_results(tmp_path, spec)
    res = read_results(tmp_path)
    path = F.steering_reliability(res.table, tmp_path / "s.png", [])
    assert path is not None
    d = pd.read_csv(F.data_path(path))
    assert len(d) == 1
    row = d.iloc[0]
    assert (row["method"], row["source"], row["samples"]) == ("steering", "quantile rows", 0)
    centre = 10 * METHODS["steering"].gain  # the quantile rows are 10 x gain -0.5 / 0 / +0.5
    assert [row["p10"], row["p50"], row["p90"]] == pytest.approx([centre - 0.5, centre, centre + 0.5], abs=TOL)
    assert pd.isna(row["p25"]) and pd.isna(row["p75"])
    assert row["anti_steerable"] == pytest.approx(0.1, abs=TOL)
