"""Steering vectors: reading them from contrast pairs, the hook-based intervention that adds them, and per-sample
reliability. Shared by `methods/steering.py` (CAA), `methods/steering_pca.py` and `methods/steering_learned.py`; the
hooks are `study.lm.hooks.steer`, a context manager, and nothing else.

    acts = contrast_activations(lm, prompts, positives, negatives, layers=[1, 2], positions=("sentence_end",))
    vector = mean_difference(acts.diffs[(2, "sentence_end")])          # or first_principal_component(...)
    steering = SteeringIntervention(lm.blocks, {2: vector}, multiplier=1.5, window=1)
    with steering.active(prompt_width=w):                               # steers the last prompt position only
        lm.model.generate(**batch)
    rows, samples = steering.extra_metrics(lm, target, splits)          # slope_p10/p50/p90, anti_steerable
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from study.lm.hooks import record_activations, steer
from study.lm.generation import render
from study.lm.intervention import Intervention, Stacked
from study.lm.logprobs import continuation_ids, pad_id, pad_pairs
from study.lm.models import decoder_blocks

POSITIONS = ("answer", "sentence_end", "last", "mean")
SENTENCE_END = (".", "!", "?")
RELIABILITY_FRACTIONS = (-1.0, -0.5, 0.0, 0.5, 1.0)
FIXED_STRENGTHS = (-1.0, -0.5, 0.0, 0.5, 1.0)  # Tan et al.'s fixed grid, in units of strength (see `reliability`)


# ---- reading activations -----------------------------------------------------------------------------------------
def _sentence_end_ids(tokenizer: Any) -> set[int]:
    # each token decoded alone: byte-level and sentencepiece markers ("Ġ.", "▁.") become plain text
    return {i for i in tokenizer.get_vocab().values() if tokenizer.decode([i]).strip().endswith(SENTENCE_END)}


def first_difference(pos: Sequence[int], neg: Sequence[int]) -> int | None:
    """The index of the first token where two completions differ (the pole decision of a minimal pair); None when
    one is a prefix of the other."""
    return next((j for j, (x, y) in enumerate(zip(pos, neg)) if x != y), None)


def read_index(pos: list[int], neg: list[int], position: str, ends: set[int]) -> tuple[list[int], list[int]]:
    """Token indices into each completion where `position` reads (several for "mean").

    "answer": the first token where the two completions differ (the pole-bearing token of a minimal pair);
    "sentence_end": the first sentence-final token from there on (else the last); "last": the completion's last
    token; "mean": every token from the answer token on."""
    a = first_difference(pos, neg)
    a = max(0, min(len(pos), len(neg)) - 1) if a is None else a
    out = []
    for c in (pos, neg):
        first = min(a, len(c) - 1)
        if position == "answer":
            out.append([first])
        elif position == "last":
            out.append([len(c) - 1])
        elif position == "sentence_end":
            out.append([next((j for j in range(first, len(c)) if c[j] in ends), len(c) - 1)])
        else:
            out.append(list(range(first, len(c))))
    return out[0], out[1]


@dataclass
class ContrastActivations:
    diffs: dict[tuple[int, str], Any]  # (layer, position) -> [pairs, hidden] float32: positive minus negative
    scale: dict[int, float]  # layer -> mean residual-stream norm over the completions' tokens (a natural unit)


def contrast_activations(lm: Any, prompts: Sequence[str], positives: Sequence[str], negatives: Sequence[str],
                         layers: Sequence[int], positions: Sequence[str] = POSITIONS,
                         batch_size: int = 64) -> ContrastActivations:
    """Residual-stream differences (after block `layer`) between each pair's positive and negative completion.

    `prompts` are rendered as the model sees them (study.run.evaluate.render). Prompts are left-padded to one width and
    completions right-padded, with position ids following the mask, as in evaluation. Inside a stack, call it with
    the earlier parts active (study.run.cell does while a part is fitted)."""
    import torch

    model, tokenizer = lm.model, lm.tokenizer
    device = next(model.parameters()).device
    pad = pad_id(tokenizer)
    ends = _sentence_end_ids(tokenizer) if "sentence_end" in positions else set()
    diffs: dict[tuple[int, str], list] = {(layer, p): [] for layer in layers for p in positions}
    norm_sum, norm_count = {layer: 0.0 for layer in layers}, 0
    p_all = [tokenizer(p)["input_ids"] for p in prompts]
    pos_all = [continuation_ids(tokenizer, c) or [pad] for c in positives]
    neg_all = [continuation_ids(tokenizer, c) or [pad] for c in negatives]
    for s in range(0, len(p_all), batch_size):
        ps = p_all[s:s + batch_size]
        n = len(ps)
        cs = pos_all[s:s + n] + neg_all[s:s + n]
        ids, mask, position_ids, width = pad_pairs(ps + ps, cs, pad)
        with torch.no_grad(), record_activations(lm.blocks, list(layers)) as acts:
            model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=position_ids.to(device))
        completion = mask.clone()
        completion[:, :width] = 0
        for layer in layers:
            h = acts[layer][0].float().cpu()
            norm_sum[layer] += float(h.norm(dim=-1)[completion.bool()].sum())
            for position in positions:
                rows = []
                for i in range(n):
                    rp, rn = read_index(cs[i], cs[n + i], position, ends)
                    rows.append(h[i, [width + j for j in rp]].mean(0) - h[n + i, [width + j for j in rn]].mean(0))
                diffs[(layer, position)].append(torch.stack(rows))
        norm_count += int(completion.sum())
    return ContrastActivations({k: torch.cat(v) for k, v in diffs.items()},
                               {layer: v / max(1, norm_count) for layer, v in norm_sum.items()})


class PairScorer:
    """Teacher-forced log p(positive) and log p(negative) of fixed pairs, scored again and again under different
    steering: the batch is tokenized once, and the prompts' cache up to their last position is computed once (with
    `fixed` active, e.g. the other parts of a stack): steering from the last prompt position on leaves it unchanged.

        scorer = PairScorer(lm, prompts, positives, negatives)
        pos, neg = scorer(steering)                      # two lists of summed log-probabilities
        margins = scorer.decisions(steering)             # log-odds of the pole at the first differing token

    `decisions` reads the pole decision alone: log p(positive token) - log p(negative token) at the first token where
    the two completions differ. Both are predicted from the same context (the tokens before it are shared), so the
    margin is untouched by what follows the decision (an end mark, a copied object). A pair whose completions differ
    only in length (one a prefix of the other) has no such token: its margin is the whole completions' difference.
    """

    def __init__(self, lm: Any, prompts: Sequence[str], positives: Sequence[str], negatives: Sequence[str],
                 fixed: Intervention | None = None, reuse_prefix: bool = True):
        import torch

        self.lm, self.n = lm, len(prompts)
        tok = lm.tokenizer
        ps = [tok(p)["input_ids"] for p in prompts] * 2
        cs = [continuation_ids(tok, c) for c in list(positives) + list(negatives)]
        ids, mask, positions, self.width = pad_pairs(ps, cs, pad_id(tok))
        self.length = ids.shape[1] - self.width
        device = next(lm.model.parameters()).device
        self.ids, self.mask, self.positions = ids.to(device), mask.to(device), positions.to(device)
        self.target = ids[:, self.width:]
        self.target_mask = mask[:, self.width:].bool()
        self.decision = [first_difference(cs[i], cs[self.n + i]) for i in range(self.n)]
        self.cache = None
        # transformers 5 names the cache argument `cache`, 4.x `past_key_values`
        self.cache_arg = "cache" if "cache" in inspect.signature(lm.model.forward).parameters else "past_key_values"
        if reuse_prefix and self.width > 1 and self.n:
            w = self.width - 1
            with torch.no_grad(), (fixed or Intervention()).active(prompt_width=self.width):
                out = lm.model(input_ids=self.ids[:, :w], attention_mask=self.mask[:, :w],
                               position_ids=self.positions[:, :w], use_cache=True)
            self.cache = out[self.cache_arg] if self.cache_arg in out else out["past_key_values"]

    def __call__(self, intervention: Intervention | None) -> tuple[list[float], list[float]]:
        if not self.n:
            return [], []
        sums = self.token_logprobs(intervention).sum(-1).tolist()
        return sums[: self.n], sums[self.n:]

    def decisions(self, intervention: Intervention | None) -> list[float]:
        """Per pair: log p(positive) - log p(negative) at the first differing token (see the class docstring)."""
        return self.score(intervention)[2]

    def score(self, intervention: Intervention | None) -> tuple[list[float], list[float], list[float]]:
        """(summed log p(positive), summed log p(negative), decision margins) from one forward pass."""
        if not self.n:
            return [], [], []
        tok = self.token_logprobs(intervention)
        sums = tok.sum(-1).tolist()
        pos, neg = sums[: self.n], sums[self.n:]
        margins = [float(tok[i, a] - tok[self.n + i, a]) if a is not None else pos[i] - neg[i]
                   for i, a in enumerate(self.decision)]
        return pos, neg, margins

    def token_logprobs(self, intervention: Intervention | None) -> Any:
        """[2 * pairs, completion length] float64 log-probabilities of each completion token (0 past its end):
        the positives' rows, then the negatives'."""
        import copy

        import torch

        model, w = self.lm.model, self.width
        with torch.no_grad(), (intervention or Intervention()).active(prompt_width=w):
            if self.cache is None:
                logits = model(input_ids=self.ids, attention_mask=self.mask, position_ids=self.positions).logits
                logits = logits[:, w - 1: w - 1 + self.length]
            else:
                logits = model(input_ids=self.ids[:, w - 1:], attention_mask=self.mask,
                               position_ids=self.positions[:, w - 1:], use_cache=True,
                               **{self.cache_arg: copy.deepcopy(self.cache)}).logits[:, : self.length]
        logp = torch.log_softmax(logits.double(), dim=-1).cpu()
        return logp.gather(-1, self.target.unsqueeze(-1)).squeeze(-1) * self.target_mask

    @property
    def counts(self) -> tuple[list[int], list[int]]:
        c = self.target_mask.sum(-1).tolist()
        return c[: self.n], c[self.n:]


# ---- directions -------------------------------------------------------------------------------------------------
def mean_difference(diffs: Any) -> Any:
    """CAA: the mean of the paired differences."""
    return diffs.mean(0)


def first_principal_component(diffs: Any) -> Any:
    """RepE-style: the first principal component of the paired differences, sign-corrected so that the differences
    project positively on average, scaled by that mean projection (the mean difference's component along it), so
    that multipliers mean the same as for CAA. Uncentered: RepE shuffles each pair's order before its PCA, which
    makes the mean zero; the top singular vector of the unshuffled differences is that same axis."""
    import torch

    if diffs.shape[0] == 1:
        return diffs[0].clone()
    _, _, vh = torch.linalg.svd(diffs.double(), full_matrices=False)
    pc = vh[0]
    proj = (diffs.double() @ pc).mean()
    if proj < 0:
        pc, proj = -pc, -proj
    return (pc * proj).to(diffs.dtype)


DIRECTIONS = {"mean_diff": mean_difference, "pca": first_principal_component}


# ---- the intervention ----------------------------------------------------------------------------------------------
class SteeringIntervention(Intervention):
    """Adds `multiplier * vectors[layer]` after each listed block, through `study.lm.hooks.steer` only.

    Under `active(prompt_width=w)` it steers from the last prompt position (w - 1, where the first generated token is
    predicted) on, or only the `window` positions from there (window 1: the decision point alone); under
    `with intervention:` or with `all_positions`, every position."""

    def __init__(self, blocks: Sequence[Any] = (), vectors: dict[int, Any] | None = None, multiplier: float = 0.0,
                 all_positions: bool = False, chosen: dict[str, Any] | None = None,
                 reliability_fractions: Sequence[float] = RELIABILITY_FRACTIONS, window: int | None = None):
        super().__init__()
        self.blocks = list(blocks)
        self.vectors = dict(vectors or {})
        self.multiplier = float(multiplier)
        self.all_positions = all_positions
        self.window = window
        self.reliability_fractions = tuple(float(f) for f in reliability_fractions)
        self.chosen = dict(chosen or {})

    def with_multiplier(self, multiplier: float) -> "SteeringIntervention":
        return SteeringIntervention(self.blocks, self.vectors, multiplier, self.all_positions, self.chosen,
                                    self.reliability_fractions, self.window)

    @contextmanager
    def _activate(self, prompt_width: int | None) -> Iterator[None]:
        import torch

        if not self.vectors or self.multiplier == 0.0:  # exactly the base model: no hook at all
            yield
            return
        # One start (and stop) for the whole left-padded batch: steer repeats them to the batch size.
        start = stop = None
        if not self.all_positions and prompt_width is not None:
            start = torch.tensor([max(0, prompt_width - 1)])
            stop = None if self.window is None else start + self.window
        with steer(self.blocks, self.vectors, self.multiplier, start_positions=start, stop_positions=stop):
            yield

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({f"layer.{layer}": v.detach().float().cpu().contiguous() for layer, v in self.vectors.items()},
                  str(path / "vectors.safetensors"))
        (path / "intervention.json").write_text(json.dumps({
            "type": type(self).__name__, "chosen": self.chosen, "multiplier": self.multiplier,
            "all_positions": self.all_positions, "window": self.window,
            "reliability_fractions": list(self.reliability_fractions)},
            sort_keys=True))

    @classmethod
    def load(cls, path: str | Path, model: Any) -> "SteeringIntervention":
        """Rebuild on `model` (a study.lm.models.LoadedModel or a transformers model), its blocks located again."""
        from safetensors.torch import load_file


        path = Path(path)
        meta = json.loads((path / "intervention.json").read_text())
        loaded = hasattr(model, "blocks")
        blocks = model.blocks if loaded else decoder_blocks(model)
        device = next((model.model if loaded else model).parameters()).device
        tensors = load_file(str(path / "vectors.safetensors"))
        vectors = {int(k.split(".", 1)[1]): v.to(device) for k, v in tensors.items()}
        return cls(blocks, vectors, meta["multiplier"], meta["all_positions"], meta["chosen"],
                   meta.get("reliability_fractions", RELIABILITY_FRACTIONS), meta.get("window"))

    def extra_metrics(self, lm: Any, target: Any, splits: Any,
                      others: Sequence[Intervention] = ()) -> tuple[list[dict], list[dict]]:
        """Per-sample reliability on the test splits (study.run.cell calls this after evaluation)."""
        return reliability(lm, target, splits, self, others)


# ---- per-sample reliability ----------------------------------------------------------------------------------------
def _weighted_quantile(values: list[float], weights: list[float], q: float) -> float:
    pairs = sorted(zip(values, weights))
    total, acc = sum(w for _, w in pairs), 0.0
    for v, w in pairs:
        acc += w
        if acc >= q * total - 1e-12:
            return v
    return pairs[-1][0]


def reliability(lm: Any, target: Any, splits: Any, steering: SteeringIntervention,
                others: Sequence[Intervention] = ()) -> tuple[list[dict], list[dict]]:
    """Tan et al. 2024 ("Analyzing the Generalization and Reliability of Steering Vectors"): for each test prompt, the
    least-squares slope of log p(positive) - log p(negative) against the steering multiplier, with the `others` (the
    other parts of a stack) active throughout, on two grids:

    - at `reliability_fractions` of the chosen multiplier: the slope in nats per chosen multiplier, how far the chosen
      steering moves that prompt. Rows on split `all`: `slope_p10/p50/p90` and `anti_steerable` (the share of prompts
      with a negative slope), covered and uncovered prompts weighted by their share of contexts as in the evaluator;
    - on the fixed strength grid `FIXED_STRENGTHS` (x the layer's residual norm for CAA and PCA, x the vector as
      learned for a learned one), whatever strength was chosen: Tan's protocol, so that a near-zero choice does not
      make the sign a coin flip. Rows `anti_steerable_fixed` and `slope_fixed_p50` on `covered`, `uncovered`, `all`
      (slope in nats per unit of strength).

    One `{"kind": "slope"}` sample per prompt (both grids)."""

    recs = [("covered", r) for r in splits.test_covered] + [("uncovered", r) for r in splits.test_uncovered]
    if not steering.vectors or steering.multiplier == 0.0 or not recs:
        return [], []
    fractions = list(steering.reliability_fractions)
    strength = float(steering.chosen.get("strength") or 0.0)
    per_strength = steering.multiplier / strength if strength > 0 else None
    grids = {"chosen": [f * steering.multiplier for f in fractions]}
    if per_strength is not None:
        grids["fixed"] = [x * per_strength for x in FIXED_STRENGTHS]
    fixed = Stacked(list(others))
    prompts = [render(lm.tokenizer, Stacked([*others, steering]), r.prompt, target.chat) for _, r in recs]
    lds: dict[str, list[list[float]]] = {g: [[] for _ in recs] for g in grids}
    for s in range(0, len(recs), 256):  # bounded batches: the scorer holds one batch's cache
        chunk = recs[s:s + 256]
        scorer = PairScorer(lm, prompts[s:s + 256], [r.positive for _, r in chunk], [r.negative for _, r in chunk],
                            fixed, reuse_prefix=not steering.all_positions)
        seen: dict[float, list[float]] = {}  # a multiplier on both grids (0, and +-1 at a chosen strength of 1) once
        for g, multipliers in grids.items():
            for m in multipliers:
                if m not in seen:
                    pos, neg = scorer(Stacked([*others, steering.with_multiplier(m)]))
                    seen[m] = [a - b for a, b in zip(pos, neg)]
                for i, d in enumerate(seen[m]):
                    lds[g][s + i].append(d)
    slopes = {"chosen": _slopes(fractions, lds["chosen"])}
    if "fixed" in grids:
        slopes["fixed"] = _slopes(list(FIXED_STRENGTHS), lds["fixed"])
    n_cov = sum(s == "covered" for s, _ in recs)
    n_unc = len(recs) - n_cov
    share = splits.covered_share
    weights = [share / n_cov if s == "covered" else (1 - share) / n_unc for s, _ in recs] if n_cov and n_unc \
        else [1.0] * len(recs)
    n = len(recs)
    chosen = slopes["chosen"]
    anti = sum(w for w, x in zip(weights, chosen) if x < 0) / sum(weights)
    rows = [{"split": "all", "metric": "anti_steerable", "value": float(anti), "n": n}]
    rows += [{"split": "all", "metric": f"slope_p{round(q * 100)}", "value": _weighted_quantile(chosen, weights, q),
              "n": n} for q in (0.1, 0.5, 0.9)]
    if "fixed" in slopes:
        sides = [s for s, _ in recs]
        for split in ("covered", "uncovered", "all"):
            idx = [i for i, side in enumerate(sides) if split == "all" or side == split]
            if not idx:
                continue
            xs, ws = [slopes["fixed"][i] for i in idx], [weights[i] for i in idx]
            rows += [{"split": split, "metric": "anti_steerable_fixed",
                      "value": float(sum(w for w, x in zip(ws, xs) if x < 0) / sum(ws)), "n": len(idx)},
                     {"split": split, "metric": "slope_fixed_p50", "value": _weighted_quantile(xs, ws, 0.5),
                      "n": len(idx)}]
    samples = []
    for i, (side, r) in enumerate(recs):
        sample = {"kind": "slope", "split": side, "prompt_id": r.id, "context": r.context, "slope": chosen[i],
                  "logit_diff": [round(v, 5) for v in lds["chosen"][i]], "multipliers": grids["chosen"]}
        if "fixed" in slopes:
            sample |= {"slope_fixed": slopes["fixed"][i], "logit_diff_fixed": [round(v, 5) for v in lds["fixed"][i]],
                       "strengths_fixed": list(FIXED_STRENGTHS)}
        samples.append(sample)
    return rows, [s for s in samples if math.isfinite(s["slope"])]


def _slopes(xs: list[float], ys_per_prompt: list[list[float]]) -> list[float]:
    """Least-squares slope of each prompt's values against `xs`."""
    mean_x = sum(xs) / len(xs)
    var_x = sum((x - mean_x) ** 2 for x in xs)
    return [sum((x - mean_x) * y for x, y in zip(xs, ys)) / var_x for ys in ys_per_prompt]
