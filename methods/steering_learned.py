"""`steering_learned`: one steering vector per layer learned by gradient descent on the contrast pairs, BiPO-style (Cao
et al. 2024, "Personalized Steering of Large Language Models: Versatile Steering Vectors Through Bi-directional
Preference Optimization", NeurIPS 2024).

The vector v is added to one layer's residual stream at every position (`all_positions`, as in BiPO; or, with
`all_positions: false`, from the last prompt position on) through the same `SteeringIntervention` and
`study.lm.hooks.steer` as CAA. Only v is optimized (Adam, by `torch.autograd.grad` on v alone: the model's weights get
no gradient). For a pair (prompt x, positive y+, negative y-) and a direction d drawn from {+1, -1} each step
(`bidirectional`; d = +1 always otherwise), the loss is BiPO's DPO-like

    -log sigmoid(beta * d * ([log p_dv(y+|x) - log p_0(y+|x)] - [log p_dv(y-|x) - log p_0(y-|x)]))

where p_dv is the model steered by d * v and p_0 the model as it stands (earlier parts of a stack included). After
each step v is projected back inside a ball of `max_norm` times the layer's mean residual norm, so it cannot blow up.

Everything else is CAA's (`methods/steering.py`), unchanged: the same contrast pairs at the same price and the same
budget split (`contrast_share` on pairs, the rest on judged selection), the same cross-fitted decision screen and
fluency gates (the held-out folds' vectors are trained on the other folds' pairs), and the same charged successive
halving (`methods.selection`) choosing the layer and the multiplier (`strengths` multiply the learned vector, which is
trained at 1). Training length follows the rule of every trained method (`methods.trained.steps_for`): `epochs` passes
over the pairs bought in batches of `train_batch`, clamped to [min_steps, max_steps]; every vector of one fit (the
folds' too) takes the steps of the full set, so the screen scores vectors trained as long as the one it picks.

    intervention = LearnedSteering(LearnedSteeringConfig()).fit(ctx)
    intervention.chosen    # {"layers": [1], "position": "learned", "multiplier": 1.0, "train_steps": 80, ...}
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from methods.base import FitContext
from methods.steering import Directions, Steering, SteeringBaseConfig
from methods.steering_vectors import SteeringIntervention, contrast_activations
from methods.trained import steps_for
from study.core.config import check
from study.lm.logprobs import continuation_ids, pad_id, pad_pairs

POSITION = "learned"  # the screen's read position for a learned vector (nothing is read)


@dataclass(frozen=True)
class LearnedSteeringConfig(SteeringBaseConfig):
    strengths: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)  # multipliers of the learned vector (trained at 1)
    windows: tuple[int | None, ...] = (None,)  # trained on every position it steers: judged the same way
    all_positions: bool = True  # BiPO: the prompt's positions too
    beta: float = 1.0  # the log-ratio margin's scale in the log-sigmoid (DPO's beta)
    learning_rate: float = 0.05  # Adam's step, in units of the layer's residual norm (per coordinate: / sqrt(hidden))
    epochs: float = 50.0  # passes over the pairs bought (the steps rule of methods.trained.steps_for)
    train_batch: int = 16  # pairs per step
    min_steps: int = 20
    max_steps: int = 400
    max_norm: float = 2.0  # ||v|| <= this x the layer's mean residual norm
    bidirectional: bool = True  # BiPO: a random sign d per step; false: d = +1 always

    def validate(self) -> None:
        super().validate()
        check(self.beta > 0, "beta", self.beta, "must be positive")
        check(self.learning_rate > 0, "learning_rate", self.learning_rate, "must be positive")
        check(self.epochs > 0, "epochs", self.epochs, "must be positive")
        check(self.train_batch >= 1, "train_batch", self.train_batch, "must be a positive integer")
        check(1 <= self.min_steps <= self.max_steps, "min_steps", self.min_steps, "must lie in [1, max_steps]")
        check(self.max_norm > 0, "max_norm", self.max_norm, "must be positive (x the layer's residual norm)")


class LearnedSteering(Steering):
    """BiPO steering vectors, screened and selected as CAA's are (see the module docstring)."""

    name = "steering_learned"
    Config = LearnedSteeringConfig
    direction = "learned"

    def directions(self, ctx: FitContext, prompts: list[str], pairs: list,
                   layer_sets: tuple[tuple[int, ...], ...]) -> Directions:
        """A vector trained for each layer set on the pairs (a held-out fold's on the other pairs, when the screen
        asks); the full ones now, so their training is recorded with the cell."""
        cfg, lm = self.config, ctx.model
        layers = sorted({layer for ls in layer_sets for layer in ls})
        positives, negatives = [p.positive for p in pairs], [p.negative for p in pairs]
        scale = contrast_activations(lm, prompts, positives, negatives, layers, ("last",),
                                     batch_size=cfg.batch_size).scale
        data = _PairBatch(lm, prompts, positives, negatives)
        steps = steps_for(len(pairs), cfg.epochs, cfg.train_batch, cfg.min_steps, cfg.max_steps)
        cache: dict[tuple, dict[int, Any]] = {}
        stats: dict[str, Any] = {"train_steps": steps}

        def vectors(cand_layers: tuple[int, ...], position: str = POSITION, rows: Any = None) -> dict[int, Any]:
            idx = list(range(len(pairs))) if rows is None else [int(i) for i in rows]
            key = (tuple(cand_layers), tuple(idx))
            if key not in cache:
                seed = f"{ctx.seed}:{key}"
                cache[key], losses = train_vector(lm, data, idx, cand_layers, scale, steps, cfg, seed)
                if rows is None:
                    stats[f"train_loss_{'_'.join(map(str, cand_layers))}"] = [round(losses[0], 4),
                                                                              round(losses[-1], 4)]
            return cache[key]

        for ls in layer_sets:
            vectors(ls)
        return Directions((POSITION,), scale, vectors, normalized=False, info=stats)


class _PairBatch:
    """The pairs tokenized once: prompt ids, and positive and negative completion ids."""

    def __init__(self, lm: Any, prompts: list[str], positives: list[str], negatives: list[str]):
        tok = lm.tokenizer
        self.prompt_ids = [tok(p)["input_ids"] for p in prompts]
        self.pos = [continuation_ids(tok, c) or [pad_id(tok)] for c in positives]
        self.neg = [continuation_ids(tok, c) or [pad_id(tok)] for c in negatives]
        self.pad = pad_id(tok)

    def logprobs(self, lm: Any, rows: list[int], intervention: Any) -> tuple[Any, Any]:
        """Summed log p(positive), log p(negative) of `rows` with `intervention` active (differentiable)."""
        import torch

        ps = [self.prompt_ids[i] for i in rows]
        ids, mask, positions, width = pad_pairs(ps + ps, [self.pos[i] for i in rows] + [self.neg[i] for i in rows],
                                                self.pad)
        device = next(lm.model.parameters()).device
        ids, mask, positions = ids.to(device), mask.to(device), positions.to(device)
        length = ids.shape[1] - width
        with intervention.active(prompt_width=width):
            logits = lm.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        logp = torch.log_softmax(logits[:, width - 1: width - 1 + length].float(), dim=-1)
        tok = logp.gather(-1, ids[:, width:].unsqueeze(-1)).squeeze(-1) * mask[:, width:]
        sums = tok.sum(-1)
        return sums[: len(rows)], sums[len(rows):]


def train_vector(lm: Any, data: _PairBatch, rows: list[int], layers: tuple[int, ...], scale: dict[int, float],
                 steps: int, cfg: LearnedSteeringConfig, seed: str) -> tuple[dict[int, Any], list[float]]:
    """BiPO on the pairs `rows`: {layer: vector} after `steps` Adam steps from zero, and the loss at each step."""
    import torch

    device = next(lm.model.parameters()).device
    gen = random.Random(seed)
    # v = norm * u: Adam moves u by about learning_rate / sqrt(hidden) per coordinate, so v by about
    # learning_rate residual norms per step whatever the width
    units = {layer: torch.zeros(lm.hidden_size, device=device, requires_grad=True) for layer in layers}
    per_coord = cfg.learning_rate / lm.hidden_size ** 0.5
    opt = torch.optim.Adam(list(units.values()), lr=per_coord)
    was_training = lm.model.training
    lm.model.eval()
    with torch.no_grad():  # the reference: the model as it stands
        base_pos, base_neg = (torch.cat(x) for x in zip(*(
            data.logprobs(lm, rows[s:s + cfg.train_batch], SteeringIntervention())
            for s in range(0, len(rows), cfg.train_batch))))
    ref = {r: (float(a), float(b)) for r, a, b in zip(rows, base_pos, base_neg)}
    order: list[int] = []
    losses = []
    try:
        for _ in range(steps):
            if len(order) < min(cfg.train_batch, len(rows)):
                more = list(rows)
                gen.shuffle(more)
                order += more
            batch, order = order[: min(cfg.train_batch, len(rows))], order[min(cfg.train_batch, len(rows)):]
            d = gen.choice((1.0, -1.0)) if cfg.bidirectional else 1.0
            vecs = {layer: d * scale[layer] * units[layer] for layer in layers}
            steer = SteeringIntervention(lm.blocks, vecs, 1.0, all_positions=cfg.all_positions)
            with torch.enable_grad():
                lp_pos, lp_neg = data.logprobs(lm, batch, steer)
                ref_pos = torch.tensor([ref[r][0] for r in batch], device=device)
                ref_neg = torch.tensor([ref[r][1] for r in batch], device=device)
                margin = (lp_pos - ref_pos) - (lp_neg - ref_neg)
                loss = -torch.nn.functional.logsigmoid(cfg.beta * d * margin).mean()
                grads = torch.autograd.grad(loss, list(units.values()))
            for u, g in zip(units.values(), grads):
                u.grad = g
            opt.step()
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                for u in units.values():  # the norm cap: back inside the ball
                    norm = float(u.norm())
                    if norm > cfg.max_norm:
                        u.mul_(cfg.max_norm / norm)
            losses.append(float(loss.detach()))
    finally:
        lm.model.train(was_training)
    return {layer: (scale[layer] * units[layer]).detach() for layer in layers}, losses
