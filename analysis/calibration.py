"""Simulation checks of the report's interval rule: how often each candidate interval covers a known mean, and how
often a paired test calls two identical methods different, at a design of organism draws x seeds in which the
organism is a random effect.

The model: a run (draw d, seed s) scores y = mu + a_d + e_ds, a_d the organism's effect (SD `sd_draw`, the same
draw shared by every method run on it) and e_ds the seed's (SD `sd_seed`). Candidate 95% intervals for mu:

- `draw_means_t`: Student t over the draws' means (each the mean over its seeds), draws - 1 degrees of freedom. Exact
  for normal effects at any sd_draw / sd_seed, since the draw means are independent with one common variance. The
  report uses this rule (`analysis.metrics.units`).
- `runs_t`: Student t over the draws x seeds runs as if independent (runs - 1 df): too narrow as soon as draws
  differ, because runs of one draw share its effect.
- `two_stage_bootstrap`: percentile bootstrap that resamples draws, then seeds within each resampled draw: too
  narrow at 3 draws (a bootstrap over 3 values cannot see the spread of the population).

Every rule above assumes the seeds are nested in the draws. If seed s were the same seed in every draw (one coverage
order, one test set and one stream of sampling random numbers shared by all draws: a crossed design), each run would
carry a shared b_s too (SD `sd_shared`), which the draws' means all carry alike, so their spread cannot see it and
`draw_means_t` covers less than 95% (`coverage(..., sd_shared=...)`). So a cell runs at a seed nested in its draw
(`study.run.grid.run_seed`).

    python -m analysis.calibration                      # the table at 3 draws x 2 seeds, several sd ratios
    python -m analysis.calibration --components results/default   # a store's draw / shared-seed / rest SDs
    cover = coverage(draws=3, seeds=2, sd_draw=0.05, sd_seed=0.03)     # {rule: share of intervals covering mu}
    rate = paired_false_calls(draws=3, seeds=2, sd_draw=0.05, sd_seed=0.03)  # share of null tests called different
"""

from __future__ import annotations

import argparse

import numpy as np

from analysis.stats import LEVEL, t_crit, t_pvalue
from analysis.table import read_results

RULES = ("draw_means_t", "runs_t", "two_stage_bootstrap")
EFFECTS = ("normal", "skewed")


def _effects(rng: np.random.Generator, shape: tuple[int, ...], sd: float, kind: str) -> np.ndarray:
    """Zero-mean draws of SD `sd`: normal, or skewed (a centred exponential: one organism now and then far off)."""
    if kind == "normal":
        return rng.normal(0.0, sd, shape)
    if kind == "skewed":
        return sd * (rng.exponential(1.0, shape) - 1.0)
    raise ValueError(f"effect kind {kind!r}: expected one of {', '.join(EFFECTS)}")


def simulate(reps: int, draws: int, seeds: int, sd_draw: float, sd_seed: float, rng: np.random.Generator,
             kind: str = "normal", sd_shared: float = 0.0) -> np.ndarray:
    """(reps, draws, seeds) values of mean 0: a draw effect shared by a draw's seeds, plus seed noise; `sd_shared`:
    a seed effect shared by that seed's runs in every draw (a crossed design; 0: seeds nested in draws)."""
    y = _effects(rng, (reps, draws, 1), sd_draw, kind) + rng.normal(0.0, sd_seed, (reps, draws, seeds))
    return y + rng.normal(0.0, sd_shared, (reps, 1, seeds)) if sd_shared > 0 else y


def intervals(y: np.ndarray, rule: str, rng: np.random.Generator | None = None,
              boots: int = 400, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) per replicate study of `y` (reps, draws, seeds) under one of RULES."""
    reps, draws, seeds = y.shape
    if rule == "draw_means_t":
        m = y.mean(2)
        half = t_crit(draws - 1, level) * m.std(1, ddof=1) / np.sqrt(draws)
        return m.mean(1) - half, m.mean(1) + half
    if rule == "runs_t":
        r = y.reshape(reps, -1)
        half = t_crit(r.shape[1] - 1, level) * r.std(1, ddof=1) / np.sqrt(r.shape[1])
        return r.mean(1) - half, r.mean(1) + half
    if rule == "two_stage_bootstrap":
        rng = rng or np.random.default_rng(0)
        d = rng.integers(0, draws, (reps, boots, draws))
        s = rng.integers(0, seeds, (reps, boots, draws, seeds))
        picked = y[np.arange(reps)[:, None, None, None], d[..., None], s]
        means = picked.mean((2, 3))
        a = (1 - level) / 2
        return np.quantile(means, a, axis=1), np.quantile(means, 1 - a, axis=1)
    raise ValueError(f"interval rule {rule!r}: expected one of {', '.join(RULES)}")


def coverage(draws: int = 3, seeds: int = 2, sd_draw: float = 0.05, sd_seed: float = 0.03, reps: int = 4000,
             seed: int = 0, kind: str = "normal", sd_shared: float = 0.0) -> dict[str, float]:
    """Share of `reps` simulated studies whose 95% interval covers the true mean, per rule (`sd_shared`: see
    `simulate`)."""
    rng = np.random.default_rng(seed)
    y = simulate(reps, draws, seeds, sd_draw, sd_seed, rng, kind, sd_shared)
    out = {}
    for rule in RULES:
        if rule == "draw_means_t" and draws < 2:
            continue
        lo, hi = intervals(y, rule, rng)
        out[rule] = float(((lo <= 0) & (0 <= hi)).mean())
    return out


def paired_false_calls(draws: int = 3, seeds: int = 2, sd_draw: float = 0.05, sd_seed: float = 0.03,
                       sd_interaction: float = 0.02, reps: int = 4000, seed: int = 0,
                       alpha: float = 0.05, kind: str = "normal") -> dict[str, float]:
    """Two identical methods run on the same (draw, seed) runs: the share of studies in which a paired t test calls
    them different at `alpha`, per rule. Each method has its own draw x method effect (SD `sd_interaction`: an
    organism may suit one method better) and its own seed noise; the shared draw effect cancels in the pairing."""
    rng = np.random.default_rng(seed)
    shared = _effects(rng, (reps, draws, 1), sd_draw, kind)
    a = shared + simulate(reps, draws, seeds, sd_interaction, sd_seed, rng, kind)
    b = shared + simulate(reps, draws, seeds, sd_interaction, sd_seed, rng, kind)
    d = a - b
    out = {}
    for rule, units in (("draw_means_t", d.mean(2)), ("runs_t", d.reshape(reps, -1))):
        if units.shape[1] < 2:
            continue
        k = units.shape[1]
        with np.errstate(all="ignore"):
            t = units.mean(1) / (units.std(1, ddof=1) / np.sqrt(k))
        out[rule] = float((t_pvalue(t, k - 1) < alpha).mean())
    return out


def table(draws: int = 3, seeds: int = 2, ratios: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0),
          sd_seed: float = 0.03, reps: int = 4000, seed: int = 0) -> list[str]:
    """Markdown lines: coverage per rule and draw effect against sd_draw / sd_seed, and the rate at which a paired t
    test at 5% calls two identical methods different (each with its own organism x method effect of sd_draw)."""
    lines = [f"Coverage of 95% intervals at {draws} organisms x {seeds} seeds ({reps} simulated studies each; "
             f"seed SD {sd_seed:g}):", "",
             "| draw effect | sd_draw / sd_seed | " + " | ".join(RULES) + " | paired false calls, draw means | "
             "paired false calls, runs |", "| --- " * (len(RULES) + 4) + "|"]
    for kind in EFFECTS:
        for r in ratios:
            cov = coverage(draws, seeds, r * sd_seed, sd_seed, reps, seed, kind)
            fc = paired_false_calls(draws, seeds, r * sd_seed, sd_seed, r * sd_seed, reps, seed, kind=kind)
            lines.append(f"| {kind} | {r:g} | " + " | ".join(f"{cov.get(k, float('nan')):.1%}" for k in RULES)
                         + f" | {fc.get('draw_means_t', float('nan')):.1%} | {fc.get('runs_t', float('nan')):.1%} |")
    return lines


def components(y: np.ndarray) -> tuple[float, float, float]:
    """(sd_draw, sd_shared, sd_rest) of a (draws, seeds) table read as a crossed design, y = mu + a_d + b_s + e_ds
    (two-way ANOVA, method of moments, negative variance estimates set to 0). `b_s` is the effect of seed label s
    in every draw: with seeds nested in draws it has nothing to share and comes out near 0."""
    d, s = y.shape
    gm = y.mean()
    ms_draw = s * ((y.mean(1) - gm) ** 2).sum() / (d - 1)
    ms_seed = d * ((y.mean(0) - gm) ** 2).sum() / (s - 1)
    rest = y - y.mean(1, keepdims=True) - y.mean(0, keepdims=True) + gm
    ms_rest = (rest ** 2).sum() / ((d - 1) * (s - 1))
    return (float(np.sqrt(max(ms_draw - ms_rest, 0.0) / s)), float(np.sqrt(max(ms_seed - ms_rest, 0.0) / d)),
            float(np.sqrt(ms_rest)))


def store_components(results_dir: str, metric: str = "behavior") -> dict[str, float]:
    """Median (sd_draw, sd_shared, sd_rest) over a store's complete draws x seeds tables of `metric` (one per model,
    method, target, budget, condition and split, covered and uncovered), and how many tables."""
    t = read_results(results_dir).table
    t = t[(t["metric"] == metric) & t["split"].isin(["covered", "uncovered"]) & (t["coverage"] == "anticipation")]
    keys = ["model_id", "method", "target", "budget", "anticipation", "labeler_noise", "labeler_misspec", "split"]
    found = []
    for _, g in t.groupby(keys):
        y = g.pivot_table(index="draw", columns="seed", values="value")
        if y.shape[0] >= 2 and y.shape[1] >= 2 and not y.isna().any().any():
            found.append(components(y.to_numpy()))
    if not found:
        return {"tables": 0}
    med = np.median(np.array(found), axis=0)
    return {"tables": len(found), "sd_draw": round(float(med[0]), 4), "sd_shared": round(float(med[1]), 4),
            "sd_rest": round(float(med[2]), 4)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--draws", type=int, default=3)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--reps", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--components", metavar="RESULTS", help="print a store's median variance components instead")
    args = p.parse_args(argv)
    if args.components:
        print(store_components(args.components))
        return
    print("\n".join(table(args.draws, args.seeds, reps=args.reps, seed=args.seed)))


if __name__ == "__main__":
    main()
