"""Activation steering by contrastive activation addition (CAA; Rimsky et al. 2024, "Steering Llama 2 via Contrastive
Activation Addition"): the mean difference of residual-stream activations between the positive and the negative
completion of contrast pairs bought from the labeler, added with a multiplier after a decoder block at inference.
`methods/steering_pca.py` takes the first principal component instead and `methods/steering_learned.py` learns the
vector by gradient descent; all three share this pipeline. Vectors, hooks and the per-sample reliability rows live in
`methods/steering_vectors.py`.

Tuned as fairly as the trained methods, every label through the labeler and counted:

1. **Contrast pairs.** `contrast_share` of the budget (`1 - methods.selection.SELECT_SHARE`) buys
   `labeler.contrast(record)` pairs on the feedback pool; all of it when the rest would not pay one judgment per
   finalist (`methods.selection.split_budget`, the budget rule of every method). With `labels: comparisons` (a
   method x label-type crossing, `steering@comparisons` in `full.yaml`) the same units buy comparisons of two base
   samples instead, and the decisive ones are the pairs (preferred side = positive).
2. **Screen, no new label.** A candidate is a layer set (layer 0 among the defaults), a read position (where in the
   completions the difference is read), a strength (in units of the residual stream's norm at that layer: raw
   multipliers differ by orders of magnitude across targets and read positions) and a window (how many positions from
   the last prompt one are steered: 1 is the decision point alone, null every position after the prompt). Each is
   scored on the pairs already bought, cross-fitted (the vector from the other folds), by its **decision gain**: the
   rise in sigmoid(log p(positive token) - log p(negative token)) at the first token where the pair's completions
   differ, on the held-out pairs (the rest of the completion, e.g. a forced end mark, says nothing about the pole).
   Two fluency gates reject a candidate: the fall of the pairs' log-probability per token (teacher-forced, both
   poles' mass together; stronger settings past a break are not tried) above `max_mass_drop`, and, for the best few,
   how much less likely the base model finds steered samples of select prompts (their text only) than its own samples
   or the pairs' positive completions, whichever it finds less likely, above `max_nll_increase`.
   **The gates reject; they do not pick the weakest.** Of the candidates that pass both, only those whose decision
   gain is at least `min_gain_share` of the best one's go on (so a near-no-op strength never wins over one that moves
   the decision); among those the order is the gain less `fluency_weight` times the fluency costs.
3. **Judged selection** (`methods.selection.successive_halving`, the rule of every method). The `finalists` best are
   judged on the `select` split by the labeler (one sampled completion per prompt, one judgment each) in rounds of
   successive halving. Score: `behavior - disfluency_penalty * (1 - fluency) - kl_penalty * KL(steered || base)` (KL
   per token along steered samples of the select prompts, label-free), less the screen's sampled fluency cost. The
   rest of the budget pays for this stage; judgments the labeler answers from its cache cost nothing and roll over.

`intervention.chosen` records the layers, read position, strength, raw multiplier and window, the pairs and labels
spent on each stage, and what the screen and the judges measured. Inside a stack (`dpo+steering`) the earlier parts
are active while the vector is read and the candidates scored (study.run.cell), and their prompt rewriting is applied.

    intervention = Steering(SteeringConfig()).fit(ctx)        # ctx: methods.base.FitContext
    intervention.chosen    # {"layers": [2], "position": "answer", "strength": 0.5, "multiplier": 2.1, "window": 1, ...}
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from methods.base import FitContext, Intervention
from methods.selection import DISFLUENCY_PENALTY, SELECT_SHARE, judged_summary, split_budget, successive_halving
from methods.steering_vectors import (DIRECTIONS, POSITIONS, RELIABILITY_FRACTIONS, PairScorer, SteeringIntervention,
                                      contrast_activations)
from methods.trained import buy_comparisons
from study.core.config import check
from study.feedback.labeler import BudgetExhausted, Pair
from study.lm.generation import generate, render
from study.lm.logprobs import kl_divergence, sequence_logprobs


@dataclass(frozen=True)
class SteeringBaseConfig:
    """The knobs every steering method shares (CAA, PCA, learned): pairs, screen, gates and judged selection."""

    layer_sets: tuple[tuple[int, ...], ...] | None = None  # candidates; None: layer 0 and 25/50/75% depth
    strengths: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)  # x the layer's residual norm (refined)
    windows: tuple[int | None, ...] = (1, None)  # positions steered from the last prompt one (null: all after it)
    contrast_share: float = 1.0 - SELECT_SHARE  # share of the budget spent on contrast pairs; the rest: selection
    max_pairs: int | None = None  # cap on contrast pairs bought
    labels: str = "contrast"  # or "comparisons": decisive comparisons of base samples as pairs (RLHF's label type)
    folds: int = 2  # cross-fitting folds of the screen
    screen_pairs: int = 16  # held-out pairs scoring each screened candidate
    screen_prompts: int = 32  # select prompts (text only) sampled to check the best candidates' fluency
    fluency_weight: float = 1.0  # orders eligible candidates: decision gain - this * fluency cost (nats per token)
    max_mass_drop: float = 1.0  # gate: a strength that lowers the pairs' log-probability more (per token) is broken
    max_nll_increase: float = 0.5  # gate: out if the base model finds steered samples this much less likely
    min_gain_share: float = 0.5  # eligible: decision gain >= this x the best gain among candidates passing the gates
    finalists: int = 4  # candidates judged on the select split (successive halving)
    disfluency_penalty: float = DISFLUENCY_PENALTY  # weight of (1 - fluency) in the judged score
    kl_penalty: float = 0.0  # weight of per-token KL(steered || base) on select prompts in the judged score
    all_positions: bool = False  # steer the prompt positions too (default: from the last prompt position on)
    reliability_fractions: tuple[float, ...] = RELIABILITY_FRACTIONS  # per-sample slope grid, x the chosen multiplier
    batch_size: int = 64

    def validate(self) -> None:
        check(bool(self.strengths) and all(s > 0 for s in self.strengths), "strengths", list(self.strengths),
              "positive numbers (x the layer's residual norm)")
        check(bool(self.windows) and all(w is None or w >= 1 for w in self.windows), "windows", list(self.windows),
              "non-empty; each a positive number of positions, or null for every position after the prompt")
        check(self.layer_sets is None or (bool(self.layer_sets) and all(self.layer_sets)), "layer_sets",
              self.layer_sets, "null, or a non-empty list of non-empty layer lists, e.g. [[1], [2], [1, 2]]")
        check(0.0 < self.contrast_share <= 1.0, "contrast_share", self.contrast_share, "must lie in (0, 1]")
        check(self.max_pairs is None or self.max_pairs >= 1, "max_pairs", self.max_pairs, "null or >= 1")
        check(self.labels in ("contrast", "comparisons"), "labels", self.labels, "contrast or comparisons")
        for name in ("folds", "screen_pairs", "screen_prompts", "finalists", "batch_size"):
            check(getattr(self, name) >= 1, name, getattr(self, name), "must be a positive integer")
        for name in ("disfluency_penalty", "kl_penalty", "fluency_weight", "max_mass_drop", "max_nll_increase"):
            check(getattr(self, name) >= 0, name, getattr(self, name), "must be >= 0")
        check(0.0 <= self.min_gain_share <= 1.0, "min_gain_share", self.min_gain_share, "must lie in [0, 1]")
        check(len(set(self.reliability_fractions)) >= 2, "reliability_fractions", list(self.reliability_fractions),
              "at least two distinct values (a slope needs two points)")


@dataclass(frozen=True)
class SteeringConfig(SteeringBaseConfig):
    positions: tuple[str, ...] = POSITIONS  # candidate read positions (methods/steering_vectors.read_index)

    def validate(self) -> None:
        super().validate()
        bad = [p for p in self.positions if p not in POSITIONS]
        check(bool(self.positions) and not bad, "positions", list(self.positions), f"non-empty, from {POSITIONS}")


def default_layer_sets(num_layers: int) -> tuple[tuple[int, ...], ...]:
    """Layer 0 and single layers at 25%, 50% and 75% depth (scratch runs: the middle layers steer best; on small
    organisms the first block's output can carry the pole best)."""
    picks = dict.fromkeys([0] + [min(num_layers - 1, int(f * num_layers)) for f in (0.25, 0.5, 0.75)])
    return tuple((layer,) for layer in picks)


@dataclass
class Directions:
    """What the screen steers along. `vectors(layers, position, rows)`: {layer: vector} from the pairs `rows` (a
    tensor of indices; None: all); `scale`: each layer's mean residual norm; `normalized`: strengths are in units of
    that norm (CAA, PCA), else they multiply the vector as found (a learned vector is already in its units)."""

    positions: tuple[str, ...]
    scale: dict[int, float]
    vectors: Callable[..., dict[int, Any]]
    normalized: bool = True
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Candidate:
    layers: tuple[int, ...]
    position: str
    strength: float
    multiplier: float  # the raw multiplier of the vector that the strength amounts to
    window: int | None


@dataclass
class _Screened:
    propensity_gain: float  # cross-fitted: mean sigmoid(decision margin) on held-out pairs, minus the base's
    mass_drop: float  # cross-fitted: fall of log(p(pos) + p(neg)) per token on those pairs
    nll_increase: float | None = None  # base-model NLL per token of steered samples on select prompts over its own's
    score: float = 0.0


class Steering:
    """CAA mean-difference steering, tuned on the select split (see the module docstring). A subclass changes the
    direction (`direction`, or `directions` for vectors not read from activations)."""

    name = "steering"
    Config = SteeringConfig
    direction = "mean_diff"

    def __init__(self, config: SteeringBaseConfig | None = None):
        self.config = config or self.Config()
        self.config.validate()

    def directions(self, ctx: FitContext, prompts: list[str], pairs: list,
                   layer_sets: tuple[tuple[int, ...], ...]) -> Directions:
        """Vectors read from the residual stream at each read position: `direction` over the paired differences."""
        cfg, lm = self.config, ctx.model
        layers = sorted({layer for ls in layer_sets for layer in ls})
        acts = contrast_activations(lm, prompts, [p.positive for p in pairs], [p.negative for p in pairs], layers,
                                    cfg.positions, batch_size=cfg.batch_size)
        make, device = DIRECTIONS[self.direction], next(lm.model.parameters()).device

        def vectors(cand_layers: tuple[int, ...], position: str, rows: Any = None) -> dict[int, Any]:
            d = {layer: acts.diffs[(layer, position)] for layer in cand_layers}
            return {layer: make(v if rows is None else v[rows]).to(device) for layer, v in d.items()}

        return Directions(tuple(cfg.positions), acts.scale, vectors)

    def fit(self, ctx: FitContext) -> SteeringIntervention:
        t0 = time.perf_counter()
        cfg, lm, labeler = self.config, ctx.model, ctx.labeler
        layer_sets = tuple(tuple(ls) for ls in (cfg.layer_sets or default_layer_sets(lm.num_layers)))
        rng = random.Random(f"steering-{ctx.seed}")

        # 1. contrast pairs: `contrast_share` of what this cell (or this part of a stack) may spend
        start = labeler.account.spent
        units = min(ctx.budget, labeler.account.left)
        pair_cost = labeler.cost("contrast", record_backed=True)
        # the budget rule of every method (methods.selection): the rest is kept for judging when it pays a round
        n_pairs = split_budget(labeler, units, 1.0 - cfg.contrast_share, cfg.finalists)[0] // pair_cost
        if n_pairs < 2:  # too little to split: every unit on pairs, the choice left to the screen
            n_pairs = units // pair_cost
        pool = list(ctx.pool)
        rng.shuffle(pool)
        pairs = []
        if cfg.labels == "comparisons":  # the same units on comparisons; a tie carries no direction
            prefs = buy_comparisons(ctx, n_pairs * pair_cost)
            pairs = [Pair(p.prompt, p.chosen, p.rejected) for p in prefs if not p.tie][: cfg.max_pairs]
        else:
            for rec in pool[: min(n_pairs, cfg.max_pairs or n_pairs)]:
                try:
                    pairs.append(labeler.contrast(rec))
                except BudgetExhausted:
                    break
        info: dict[str, Any] = {"direction": self.direction, "labels": cfg.labels, "pairs": len(pairs),
                                "labels_pairs": labeler.account.spent - start}
        base_model = {"layers": [], "position": None, "strength": 0.0, "multiplier": 0.0, "labels_select": 0,
                      "labels_spent": info["labels_pairs"]}
        if not pairs:  # nothing to steer with: the base model, and the record says so
            ctx.log(f"{self.name}: no contrast pair affordable; the base model stands")
            return SteeringIntervention(lm.blocks, {}, 0.0, cfg.all_positions, {**info, **base_model},
                                        cfg.reliability_fractions)

        t = time.perf_counter()
        prompts = [_render(lm, ctx.target, ctx.prior, p.prompt) for p in pairs]
        found = self.directions(ctx, prompts, pairs, layer_sets)
        info.update(found.info)
        info["extract_seconds"] = round(time.perf_counter() - t, 3)

        # 2. the screen (no new label)
        t = time.perf_counter()
        screen, n_screened = _screen(lm, ctx, prompts, pairs, layer_sets, cfg, found, rng)
        info["screen_seconds"] = round(time.perf_counter() - t, 3)
        if not screen:  # every candidate broke fluency: none is worth judging
            ctx.log(f"{self.name}: every candidate broke fluency in the screen; the base model stands")
            return SteeringIntervention(lm.blocks, {}, 0.0, cfg.all_positions, {
                **info, **base_model, "candidates_screened": n_screened}, cfg.reliability_fractions)
        finalists = list(screen)[: cfg.finalists]

        # 3. judged selection on the select split, with what is left of this fit's units
        t = time.perf_counter()
        judged, survivors = _judge(ctx, screen, finalists, units - info["labels_pairs"], cfg, found)
        info["select_seconds"] = round(time.perf_counter() - t, 3)
        best = survivors[0] if survivors else finalists[0]  # nothing judged (no label left): the screen's choice
        labels_select = labeler.account.spent - start - info["labels_pairs"]
        final = found.vectors(best.layers, best.position)
        chosen = {**info, "layers": list(best.layers), "position": best.position, "strength": best.strength,
                  "multiplier": best.multiplier, "window": best.window,
                  "vector_norm": {str(k): round(float(v.norm()), 4) for k, v in final.items()},
                  "candidates_screened": n_screened, "candidates_judged": len(judged),
                  **{f"screen_{k}": v for k, v in asdict(screen[best]).items()},
                  **{f"select_{k}": v for k, v in judged.get(best, {}).items()},
                  "labels_select": labels_select, "labels_spent": info["labels_pairs"] + labels_select,
                  "fit_seconds": round(time.perf_counter() - t0, 3)}
        ctx.log(f"{self.name}: layers {list(best.layers)}, {best.position}, strength {best.strength:g} "
                f"(x{best.multiplier:.3g}), window {best.window}; {len(pairs)} pairs, {labels_select} selection labels")
        return _intervention(lm, final, best, cfg, chosen)


# ---- the screen ------------------------------------------------------------------------------------------------
def _intervention(lm: Any, vectors: dict[int, Any], c: _Candidate, cfg: SteeringBaseConfig,
                  chosen: dict[str, Any] | None = None) -> SteeringIntervention:
    return SteeringIntervention(lm.blocks, vectors, c.multiplier, cfg.all_positions, chosen, cfg.reliability_fractions,
                                c.window)


def _render(lm: Any, target: Any, prior: Intervention | None, prompt: str) -> str:
    return render(lm.tokenizer, prior, prompt, target.chat)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, x))))


def _screen(lm: Any, ctx: FitContext, prompts: list[str], pairs: list, layer_sets, cfg: SteeringBaseConfig,
            found: Directions, rng: random.Random) -> tuple[dict[_Candidate, _Screened], int]:
    """Score candidates without buying a label (module docstring, step 2). Returns the eligible ones, best first,
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
        """(propensity of the positive decision, log pair mass per token) of each pair of the fold."""
        scorer = scorers[tuple(fold)]
        (lp_pos, lp_neg, margins), (n_pos, n_neg) = scorer.score(iv), scorer.counts
        return [(_sigmoid(m), (max(a, b) + math.log1p(math.exp(-abs(a - b)))) / max(1, na, nb))
                for m, a, b, na, nb in zip(margins, lp_pos, lp_neg, n_pos, n_neg)]

    base = {i: v for fold in folds for i, v in zip(fold, teacher_forced(fold, None))}
    fold_vectors: dict[tuple, list] = {}

    def cheap(c: _Candidate) -> _Screened:
        key = (c.layers, c.position)
        if key not in fold_vectors:
            fold_vectors[key] = []
            for fold in folds:
                out_of_fold = set(fold)
                rest = [i for i in range(n) if i not in out_of_fold] if n > 1 else fold  # one pair: in-sample
                fold_vectors[key].append((fold, found.vectors(c.layers, c.position, torch.tensor(rest))))
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
        for position in found.positions:
            full = found.vectors(layers, position)
            if any(set(other) == set(full) and all(torch.equal(full[x], other[x]) for x in full) for other in seen):
                continue  # the same vector read elsewhere (e.g. sentence end = last token): nothing new to try
            seen.append(full)
            norms = [float(full[layer].norm()) for layer in layers]
            if min(norms) <= 1e-3 * max(found.scale[layer] for layer in layers):
                continue  # no difference worth steering along (a raw multiplier would be mostly noise)
            lines[(layers, position)] = (sum(found.scale[layer] / v for layer, v in zip(layers, norms)) / len(layers)
                                         if found.normalized else 1.0)
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

    # gate 1 (pair mass); the sampled gate (2) then sees the strongest movers of the decision first
    passing = sorted((c for c in out if out[c].mass_drop <= cfg.max_mass_drop), key=lambda c: -out[c].propensity_gain)
    screen_prompts = [_render(lm, ctx.target, ctx.prior, r.prompt) for r in list(ctx.select)[: cfg.screen_prompts]]
    if not screen_prompts:
        keep = _eligible(passing, {c: out[c].propensity_gain for c in passing}, cfg.min_gain_share)
        return {c: out[c] for c in sorted(keep, key=lambda c: -out[c].score)}, len(out)
    seed = ctx.seed * 7919 + 17

    def sample_nll(iv: Intervention | None) -> float:
        comps = [c[0] for c in generate(lm.model, lm.tokenizer, screen_prompts, iv, n=1, temperature=1.0,
                                        max_new_tokens=ctx.target.max_new_tokens, seed=seed)]
        nll, count = sequence_logprobs(lm.model, lm.tokenizer, screen_prompts, comps)  # judged by the base model
        return -sum(nll) / max(1, sum(count))

    # the reference: the base model's own samples, or the desired completions themselves when it finds those less
    # likely (moving to a pole the base disfavours costs nats at the decision; that is behavior, not disfluency)
    pos_sum = pos_count = 0.0
    for scorer in scorers.values():
        pos_sum += sum(scorer(None)[0])
        pos_count += sum(scorer.counts[0])
    base_nll = max(sample_nll(None), -pos_sum / max(1.0, pos_count))
    checked: dict[_Candidate, _Screened] = {}
    for c in passing[: 4 * cfg.finalists]:
        nll = sample_nll(_intervention(lm, found.vectors(c.layers, c.position), c, cfg)) - base_nll
        if nll <= cfg.max_nll_increase:
            s = out[c]
            checked[c] = _Screened(s.propensity_gain, s.mass_drop, round(nll, 5),
                                   round(s.propensity_gain - cfg.fluency_weight * max(0.0, nll), 5))
            if len(checked) == cfg.finalists:
                break
    # the floor among the candidates that passed both gates; the judges see them in order of score
    keep = _eligible(list(checked), {c: s.propensity_gain for c, s in checked.items()}, cfg.min_gain_share)
    return dict(sorted(((c, checked[c]) for c in keep), key=lambda kv: -kv[1].score)), len(out)


def _eligible(candidates: list, gains: dict, share: float) -> list:
    """The candidates whose decision gain is at least `share` of the best one's (all of them if none gains)."""
    best = max(gains.values(), default=0.0)
    return [c for c in candidates if best <= 0.0 or gains[c] >= share * best]


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


def _judge(ctx: FitContext, screen: dict[_Candidate, _Screened], finalists: list[_Candidate], units: int,
           cfg: SteeringBaseConfig, found: Directions) -> tuple[dict[_Candidate, dict[str, float]], list[_Candidate]]:
    """Successive halving of the finalists (methods.selection), scored `behavior - disfluency_penalty * (1 -
    fluency) - kl_penalty * KL`, less the screen's sampled fluency cost (a few judgments cannot tell 93% fluency
    from 100%); ties go to the screen's order."""

    def summary(c: _Candidate, s: dict[str, float]) -> dict[str, float]:
        out = judged_summary(s, cfg.disfluency_penalty)
        kl = s.get("kl_sum", 0.0) / s["n"] if s["n"] else 0.0
        score = out["score"] - cfg.kl_penalty * kl - cfg.fluency_weight * max(0.0, screen[c].nll_increase or 0.0)
        return {**out, "score": round(score, 4), "kl": round(kl, 5)}

    def measure(iv: Intervention, records: list, r: int) -> dict[str, float]:
        return {"kl_sum": _kl(ctx, records, iv, ctx.seed * 1009 + r)} if cfg.kl_penalty > 0 else {}

    def build(c: _Candidate) -> SteeringIntervention:
        return _intervention(ctx.model, found.vectors(c.layers, c.position), c, cfg)

    return successive_halving(ctx, finalists, build, units, summary, measure)
