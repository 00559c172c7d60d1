"""Activation steering by contrastive activation addition (CAA; Rimsky et al. 2024, "Steering Llama 2 via Contrastive
Activation Addition"): the mean difference of residual-stream activations between the positive and the negative
completion of contrast pairs bought from the labeler, added with a multiplier after a decoder block at inference.
`methods/steering_pca.py` takes the first principal component instead; vectors, hooks and the per-sample reliability
rows live in `methods/steering_vectors.py`.

Tuned as fairly as the trained methods, every label through the labeler and counted:

1. **Contrast pairs.** `contrast_share` of the budget buys `labeler.contrast(record)` pairs on the feedback pool.
2. **Screen, no new label.** A candidate is a layer set, a read position (where in the completions the difference is
   read), a strength (in units of the residual stream's norm at that layer: raw multipliers differ by orders of
   magnitude across targets and read positions) and a window (how many positions from the last prompt one are
   steered: 1 is the decision point alone, null every position after the prompt). Each is scored on the pairs
   already bought, cross-fitted (the vector from the other folds): the gain in propensity sigmoid(log p(positive) -
   log p(negative)) on the held-out pairs, less `fluency_weight` times a fluency cost: first the fall of the pairs'
   log-probability per token (teacher-forced; stronger settings past a break are not tried), then, for the best few,
   how much less likely the base model finds steered samples of select prompts (their text only) than its own.
3. **Judged selection.** The `finalists` best are judged on the `select` split by the labeler (one sampled completion
   per prompt, one judgment each) in rounds of successive halving, each round on fresh prompts shared by all
   survivors. Score: `behavior - disfluency_penalty * (1 - fluency) - kl_penalty * KL(steered || base)` (KL per
   token along steered samples of the select prompts, label-free), less the screen's sampled fluency cost (a few
   judgments cannot tell 93% fluency from 100%). The rest of the budget pays for this stage; judgments the labeler
   answers from its cache cost nothing and roll over.

`intervention.chosen` records the layers, read position, strength, raw multiplier and window, the pairs and labels
spent on each stage, and what the screen and the judges measured. Inside a stack (`dpo+steering`) the earlier parts
are active while the vector is read and the candidates scored (study.run.cell), and their prompt rewriting is applied.

    intervention = Steering(SteeringConfig()).fit(ctx)        # ctx: methods.base.FitContext
    intervention.chosen    # {"layers": [3], "position": "mean", "strength": 0.5, "multiplier": 2.07, "window": 1, ...}
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

from methods.base import FitContext, Intervention
from methods.steering_vectors import (DIRECTIONS, POSITIONS, RELIABILITY_FRACTIONS, PairScorer, SteeringIntervention,
                                      contrast_activations)
from study.core.config import check
from study.lm.generation import generate, render
from study.lm.logprobs import kl_divergence, sequence_logprobs
from study.feedback.labeler import BudgetExhausted


@dataclass(frozen=True)
class SteeringConfig:
    layer_sets: tuple[tuple[int, ...], ...] | None = None  # candidates; None: single layers at 25/50/75% depth
    positions: tuple[str, ...] = POSITIONS  # candidate read positions (methods/steering_vectors.read_index)
    strengths: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)  # x the layer's residual norm (refined)
    windows: tuple[int | None, ...] = (1, None)  # positions steered from the last prompt one (null: all after it)
    contrast_share: float = 0.5  # share of the budget spent on contrast pairs; the rest pays for judged selection
    max_pairs: int | None = None  # cap on contrast pairs bought
    folds: int = 2  # cross-fitting folds of the screen
    screen_pairs: int = 16  # held-out pairs scoring each screened candidate
    screen_prompts: int = 32  # select prompts (text only) sampled to check the best candidates' fluency
    fluency_weight: float = 1.0  # screen score: propensity gain - this * fluency cost (nats per token)
    max_mass_drop: float = 1.0  # screen: a strength that lowers the pairs' log-probability more (per token) is broken
    max_nll_increase: float = 0.5  # screen: out if the base model finds steered samples this much less likely
    finalists: int = 4  # candidates judged on the select split (successive halving)
    disfluency_penalty: float = 2.0  # weight of (1 - fluency) in the judged score
    kl_penalty: float = 0.0  # weight of per-token KL(steered || base) on select prompts in the judged score
    all_positions: bool = False  # steer the prompt positions too (default: from the last prompt position on)
    reliability_fractions: tuple[float, ...] = RELIABILITY_FRACTIONS  # per-sample slope grid, x the chosen multiplier
    batch_size: int = 64

    def validate(self) -> None:
        bad = [p for p in self.positions if p not in POSITIONS]
        check(bool(self.positions) and not bad, "positions", list(self.positions), f"non-empty, from {POSITIONS}")
        check(bool(self.strengths) and all(s > 0 for s in self.strengths), "strengths", list(self.strengths),
              "positive numbers (x the layer's residual norm)")
        check(bool(self.windows) and all(w is None or w >= 1 for w in self.windows), "windows", list(self.windows),
              "non-empty; each a positive number of positions, or null for every position after the prompt")
        check(self.layer_sets is None or (bool(self.layer_sets) and all(self.layer_sets)), "layer_sets",
              self.layer_sets, "null, or a non-empty list of non-empty layer lists, e.g. [[1], [2], [1, 2]]")
        check(0.0 < self.contrast_share <= 1.0, "contrast_share", self.contrast_share, "must lie in (0, 1]")
        check(self.max_pairs is None or self.max_pairs >= 1, "max_pairs", self.max_pairs, "null or >= 1")
        for name in ("folds", "screen_pairs", "screen_prompts", "finalists", "batch_size"):
            check(getattr(self, name) >= 1, name, getattr(self, name), "must be a positive integer")
        for name in ("disfluency_penalty", "kl_penalty", "fluency_weight", "max_mass_drop", "max_nll_increase"):
            check(getattr(self, name) >= 0, name, getattr(self, name), "must be >= 0")
        check(len(set(self.reliability_fractions)) >= 2, "reliability_fractions", list(self.reliability_fractions),
              "at least two distinct values (a slope needs two points)")


def default_layer_sets(num_layers: int) -> tuple[tuple[int, ...], ...]:
    """Single layers at 25%, 50% and 75% depth (scratch runs: the middle layers steer best)."""
    picks = dict.fromkeys(min(num_layers - 1, int(f * num_layers)) for f in (0.25, 0.5, 0.75))
    return tuple((layer,) for layer in picks)


@dataclass(frozen=True)
class _Candidate:
    layers: tuple[int, ...]
    position: str
    strength: float
    multiplier: float  # the raw multiplier of the mean-difference (or PCA) vector that the strength amounts to
    window: int | None


@dataclass
class _Screened:
    propensity_gain: float  # cross-fitted: mean sigmoid(log p(pos) - log p(neg)) on held-out pairs, minus the base's
    mass_drop: float  # cross-fitted: fall of log(p(pos) + p(neg)) per token on those pairs
    nll_increase: float | None = None  # base-model NLL per token of steered samples on select prompts over its own's
    score: float = 0.0


class Steering:
    """CAA mean-difference steering, tuned on the select split (see the module docstring)."""

    name = "steering"
    Config = SteeringConfig
    direction = "mean_diff"

    def __init__(self, config: SteeringConfig | None = None):
        self.config = config or self.Config()
        self.config.validate()

    def fit(self, ctx: FitContext) -> SteeringIntervention:
        t0 = time.perf_counter()
        cfg, lm, labeler = self.config, ctx.model, ctx.labeler
        layer_sets = tuple(tuple(ls) for ls in (cfg.layer_sets or default_layer_sets(lm.num_layers)))
        layers = sorted({layer for ls in layer_sets for layer in ls})
        rng = random.Random(f"steering-{ctx.seed}")

        # 1. contrast pairs: `contrast_share` of what this cell (or this part of a stack) may spend
        start = labeler.account.spent
        units = min(ctx.budget, labeler.account.left)
        pair_cost = labeler.cost("contrast", record_backed=True)
        n_pairs = int(units * cfg.contrast_share) // pair_cost
        if n_pairs < 2:  # too little to split: every unit on pairs, the choice left to the screen
            n_pairs = units // pair_cost
        pool = list(ctx.pool)
        rng.shuffle(pool)
        pairs = []
        for rec in pool[: min(n_pairs, cfg.max_pairs or n_pairs)]:
            try:
                pairs.append(labeler.contrast(rec))
            except BudgetExhausted:
                break
        info: dict[str, Any] = {"direction": self.direction, "pairs": len(pairs),
                                "labels_pairs": labeler.account.spent - start}
        if not pairs:  # nothing to steer with: the base model, and the record says so
            ctx.log("steering: no contrast pair affordable; the base model stands")
            return SteeringIntervention(lm.blocks, {}, 0.0, cfg.all_positions, {
                **info, "layers": [], "position": None, "strength": 0.0, "multiplier": 0.0, "labels_select": 0,
                "labels_spent": info["labels_pairs"]}, cfg.reliability_fractions)

        t = time.perf_counter()
        prompts = [_render(lm, ctx.target, ctx.prior, p.prompt) for p in pairs]
        acts = contrast_activations(lm, prompts, [p.positive for p in pairs], [p.negative for p in pairs], layers,
                                    cfg.positions, batch_size=cfg.batch_size)
        info["extract_seconds"] = round(time.perf_counter() - t, 3)
        make, device = DIRECTIONS[self.direction], next(lm.model.parameters()).device

        def vectors(cand_layers: tuple[int, ...], position: str, rows: Any = None) -> dict[int, Any]:
            d = {layer: acts.diffs[(layer, position)] for layer in cand_layers}
            return {layer: make(v if rows is None else v[rows]).to(device) for layer, v in d.items()}

        # 2. the screen (no new label)
        t = time.perf_counter()
        screen, n_screened = _screen(lm, ctx, prompts, pairs, layer_sets, cfg, vectors, acts.scale, rng)
        info["screen_seconds"] = round(time.perf_counter() - t, 3)
        if not screen:  # every candidate broke fluency: none is worth judging
            ctx.log("steering: every candidate broke fluency in the screen; the base model stands")
            return SteeringIntervention(lm.blocks, {}, 0.0, cfg.all_positions, {
                **info, "layers": [], "position": None, "strength": 0.0, "multiplier": 0.0,
                "candidates_screened": n_screened, "labels_select": 0, "labels_spent": info["labels_pairs"]},
                cfg.reliability_fractions)
        finalists = list(screen)[: cfg.finalists]

        # 3. judged selection on the select split, with what is left of this fit's units
        t = time.perf_counter()
        judged, survivors = _successive_halving(
            ctx, screen, units - info["labels_pairs"], cfg,
            lambda c: _intervention(lm, vectors(c.layers, c.position), c, cfg), rng)
        info["select_seconds"] = round(time.perf_counter() - t, 3)
        best = survivors[0] if survivors else finalists[0]  # nothing judged (no label left): the screen's choice
        labels_select = labeler.account.spent - start - info["labels_pairs"]
        final = vectors(best.layers, best.position)
        chosen = {**info, "layers": list(best.layers), "position": best.position, "strength": best.strength,
                  "multiplier": best.multiplier, "window": best.window,
                  "vector_norm": {str(k): round(float(v.norm()), 4) for k, v in final.items()},
                  "candidates_screened": n_screened, "candidates_judged": len(judged),
                  **{f"screen_{k}": v for k, v in asdict(screen[best]).items()},
                  **{f"select_{k}": v for k, v in judged.get(best, {}).items()},
                  "labels_select": labels_select, "labels_spent": info["labels_pairs"] + labels_select,
                  "fit_seconds": round(time.perf_counter() - t0, 3)}
        ctx.log(f"steering: layers {list(best.layers)}, {best.position}, strength {best.strength:g} "
                f"(x{best.multiplier:.3g}), window {best.window}; {len(pairs)} pairs, {labels_select} selection labels")
        return _intervention(lm, final, best, cfg, chosen)


# ---- the screen ------------------------------------------------------------------------------------------------
def _intervention(lm: Any, vectors: dict[int, Any], c: _Candidate, cfg: SteeringConfig,
                  chosen: dict[str, Any] | None = None) -> SteeringIntervention:
    return SteeringIntervention(lm.blocks, vectors, c.multiplier, cfg.all_positions, chosen, cfg.reliability_fractions,
                                c.window)


def _render(lm: Any, target: Any, prior: Intervention | None, prompt: str) -> str:
    return render(lm.tokenizer, prior, prompt, target.chat)


def _screen(lm: Any, ctx: FitContext, prompts: list[str], pairs: list, layer_sets, cfg: SteeringConfig, vectors,
            scale: dict[int, float], rng: random.Random) -> tuple[dict[_Candidate, _Screened], int]:
    """Score candidates without buying a label (module docstring, step 2). Returns those that passed, best first,
    and how many were screened in all."""
    import torch

    n = len(pairs)
    order = list(range(n))
    rng.shuffle(order)
    k = min(cfg.folds, n)
    held = order[: cfg.screen_pairs]  # the pairs that score; every pair still helps fit the vectors
    folds = [held[i::k] for i in range(k)] if n > 1 else [held]
    scorers = {tuple(fold): PairScorer(lm, [prompts[i] for i in fold], [pairs[i].positive for i in fold],
                                       [pairs[i].negative for i in fold], reuse_prefix=not cfg.all_positions)
               for fold in folds}

    def teacher_forced(fold: list[int], iv: Intervention | None) -> list[tuple[float, float]]:
        """(propensity, log pair mass per token) of each pair of the fold."""
        scorer = scorers[tuple(fold)]
        (lp_pos, lp_neg), (n_pos, n_neg) = scorer(iv), scorer.counts
        return [(1.0 / (1.0 + math.exp(min(50.0, b - a))), (max(a, b) + math.log1p(math.exp(-abs(a - b))))
                 / max(1, na, nb)) for a, b, na, nb in zip(lp_pos, lp_neg, n_pos, n_neg)]

    base = {i: v for fold in folds for i, v in zip(fold, teacher_forced(fold, None))}
    fold_vectors: dict[tuple, list] = {}

    def cheap(c: _Candidate) -> _Screened:
        key = (c.layers, c.position)
        if key not in fold_vectors:
            fold_vectors[key] = []
            for fold in folds:
                out_of_fold = set(fold)
                rest = [i for i in range(n) if i not in out_of_fold] if n > 1 else fold  # one pair: in-sample
                fold_vectors[key].append((fold, vectors(c.layers, c.position, torch.tensor(rest))))
        gain = drop = 0.0
        for fold, vecs in fold_vectors[key]:
            iv = _intervention(lm, vecs, c, cfg)
            for i, (p, mass) in zip(fold, teacher_forced(fold, iv)):
                gain += p - base[i][0]
                drop += base[i][1] - mass
        gain, drop = gain / len(held), drop / len(held)
        return _Screened(round(gain, 5), round(drop, 5), None, round(gain - cfg.fluency_weight * max(0.0, drop), 5))

    out: dict[_Candidate, _Screened] = {}
    lines: dict[tuple, float] = {}  # (layers, position) -> raw multiplier per unit of strength
    seen: list = []
    for layers in layer_sets:
        for position in cfg.positions:
            full = vectors(layers, position)
            if any(set(other) == set(full) and all(torch.equal(full[x], other[x]) for x in full) for other in seen):
                continue  # the same vector read elsewhere (e.g. sentence end = last token): nothing new to try
            seen.append(full)
            norms = [float(full[layer].norm()) for layer in layers]
            if min(norms) <= 1e-3 * max(scale[layer] for layer in layers):
                continue  # no difference worth steering along (a raw multiplier would be mostly noise)
            lines[(layers, position)] = sum(scale[layer] / v for layer, v in zip(layers, norms)) / len(layers)
            for s in sorted(cfg.strengths):
                c = _Candidate(layers, position, s, round(s * lines[(layers, position)], 6), cfg.windows[0])
                out[c] = cheap(c)
                if out[c].mass_drop > cfg.max_mass_drop:  # broken: stronger only breaks it more
                    break
    # refine the two best lines around their best strength: the geometric midpoints to its neighbours
    grid, refined = sorted(cfg.strengths), []
    for c in sorted(out, key=lambda c: -out[c].score):
        if len(refined) == 2:
            break
        if (c.layers, c.position) in refined:
            continue
        refined.append((c.layers, c.position))
        i = grid.index(c.strength)
        for j in (i - 1, i + 1):
            if 0 <= j < len(grid):
                s = round(math.sqrt(grid[i] * grid[j]), 6)
                mid = _Candidate(c.layers, c.position, s, round(s * lines[(c.layers, c.position)], 6), c.window)
                if mid not in out:
                    out[mid] = cheap(mid)
    # the other windows, for the best candidates only (the window mostly trades fluency, which the checks see)
    for c in sorted(out, key=lambda c: -out[c].score)[: 3 * cfg.finalists]:
        for w in cfg.windows[1:]:
            other = _Candidate(c.layers, c.position, c.strength, c.multiplier, w)
            if other not in out:
                out[other] = cheap(other)

    screen_prompts = [_render(lm, ctx.target, ctx.prior, r.prompt) for r in list(ctx.select)[: cfg.screen_prompts]]
    ranked = sorted(out, key=lambda c: -out[c].score)
    if not screen_prompts:
        return {c: out[c] for c in ranked if out[c].mass_drop <= cfg.max_mass_drop}, len(out)
    seed = ctx.seed * 7919 + 17

    def sample_nll(iv: Intervention | None) -> float:
        comps = [c[0] for c in generate(lm.model, lm.tokenizer, screen_prompts, iv, n=1, temperature=1.0,
                                        max_new_tokens=ctx.target.max_new_tokens, seed=seed)]
        nll, count = sequence_logprobs(lm.model, lm.tokenizer, screen_prompts, comps)  # judged by the base model
        return -sum(nll) / max(1, sum(count))

    base_nll = sample_nll(None)
    checked: dict[_Candidate, _Screened] = {}
    for c in ranked[: 4 * cfg.finalists]:
        if out[c].mass_drop > cfg.max_mass_drop:
            continue
        nll = sample_nll(_intervention(lm, vectors(c.layers, c.position), c, cfg)) - base_nll
        if nll <= cfg.max_nll_increase:
            s = out[c]
            checked[c] = _Screened(s.propensity_gain, s.mass_drop, round(nll, 5),
                                   round(s.propensity_gain - cfg.fluency_weight * max(0.0, nll), 5))
            if len(checked) == cfg.finalists:
                break
    return dict(sorted(checked.items(), key=lambda kv: -kv[1].score)), len(out)


# ---- judged selection ------------------------------------------------------------------------------------------
def _kl(ctx: FitContext, records: list, intervention: Intervention, seed: int) -> float:
    """Per-token KL(steered || base) along steered samples of the select prompts (text only: no label). The base is
    the model as it stands, earlier parts of a stack included."""

    lm = ctx.model
    prompts = [_render(lm, ctx.target, ctx.prior, r.prompt) for r in records]
    comps = [c[0] for c in generate(lm.model, lm.tokenizer, prompts, intervention, n=1, temperature=1.0,
                                    max_new_tokens=ctx.target.max_new_tokens, seed=seed)]
    sums, counts = kl_divergence(lm.model, lm.tokenizer, prompts, prompts, comps, intervention)
    return sum(sums) / max(1, sum(counts))


def _summary(s: dict[str, float], cfg: SteeringConfig, screened: _Screened) -> dict[str, float]:
    behavior = s["behavior_sum"] / s["readable"] if s["readable"] else 0.0
    fluency = s["readable"] / s["n"] if s["n"] else 0.0
    kl = s["kl_sum"] / s["n"] if s["n"] else 0.0
    # the screen's label-free fluency cost too: a few judgments alone cannot tell 0.93 from 1.0
    score = behavior - cfg.disfluency_penalty * (1.0 - fluency) - cfg.kl_penalty * kl \
        - cfg.fluency_weight * max(0.0, screened.nll_increase or 0.0)
    return {"score": round(score, 4), "behavior": round(behavior, 4), "fluency": round(fluency, 4),
            "kl": round(kl, 5), "labels": int(s["labels"]), "n": int(s["n"])}


def _successive_halving(ctx: FitContext, screen: dict[_Candidate, _Screened], units: int, cfg: SteeringConfig, build,
                        rng: random.Random) -> tuple[dict[_Candidate, dict[str, float]], list[_Candidate]]:
    """Judge the `finalists` best of the screen on select prompts, spending at most `units`: each round gives the
    survivors the same fresh prompts (a paired comparison), then keeps the better half; judgments saved by the
    labeler's cache roll over to later rounds. Returns each judged candidate's pooled {score, behavior, fluency, kl,
    labels, n} and the last round's survivors, best first ([] if nothing could be judged)."""

    records = list(ctx.select)
    rng.shuffle(records)
    alive = list(screen)[: cfg.finalists]
    rounds = max(1, math.ceil(math.log2(len(alive))))
    stats: dict[_Candidate, dict[str, float]] = {}
    start, cursor = ctx.labeler.account.spent, 0
    survivors: list[_Candidate] = []
    for r in range(rounds):
        left = min(ctx.labeler.account.left, units - (ctx.labeler.account.spent - start))
        per = left // ((rounds - r) * len(alive))
        if per < 1 or not records:
            break
        chunk = [records[(cursor + i) % len(records)] for i in range(per)]
        cursor += per
        for cand in alive:
            iv = build(cand)
            try:
                res = ctx.select_score(iv, chunk, seed=ctx.seed * 1009 + r)
            except BudgetExhausted:
                continue
            kl = _kl(ctx, chunk, iv, ctx.seed * 1009 + r) if cfg.kl_penalty > 0 else 0.0
            s = stats.setdefault(cand, {"behavior_sum": 0.0, "readable": 0, "n": 0, "kl_sum": 0.0, "labels": 0})
            readable = round(res["fluency"] * res["n"])
            if readable:
                s["behavior_sum"] += res["behavior"] * readable
            s["readable"] += readable
            s["n"] += res["n"]
            s["kl_sum"] += kl * res["n"]
            s["labels"] += res["labels"]
        scored = {c: _summary(stats[c], cfg, screen[c])["score"] for c in alive if c in stats}
        if not scored:
            break
        survivors = sorted(scored, key=lambda c: (-scored[c], -screen[c].score))  # ties: the screen decides
        alive = survivors[: max(1, math.ceil(len(survivors) / 2))]
    return {c: _summary(s, cfg, screen[c]) for c, s in stats.items()}, survivors
