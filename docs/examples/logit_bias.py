"""An example method in one file: a bag-of-words logit bias learned from contrast pairs (the guide's example).

A deliberately simple surface method, in the spirit of the "word-level" baselines that steering papers compare
against (e.g. the logit-bias / vocabulary-projection baselines in Turner et al. 2023, "Activation Addition"): it buys
contrast pairs from the labeler, counts how much more often each token appears in the desired completion than in the
undesired one, and adds `strength` times that difference to the logits at every position. The strength is chosen on
the `select` split by judgments bought with the rest of the budget. It cannot transfer to contexts whose words it never
saw, which is exactly what the study measures.

    study run micro --set 'methods=[none, docs.examples.logit_bias:LogitBias]'     # from the repository root
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from methods.base import FitContext, Intervention
from study.core.config import check
from study.feedback.labeler import BudgetExhausted


@dataclass(frozen=True)
class LogitBiasConfig:
    pair_share: float = 0.5  # share of the budget spent on contrast pairs; the rest buys judgments to pick a strength
    strengths: tuple[float, ...] = (1.0, 4.0)

    def validate(self) -> None:
        check(0.0 < self.pair_share <= 1.0, "pair_share", self.pair_share, "must lie in (0, 1]")
        check(len(self.strengths) > 0 and all(s > 0 for s in self.strengths), "strengths", self.strengths,
              "one or more positive numbers")


class LogitBiasIntervention(Intervention):
    """Adds `strength * bias` to the logits while active (a forward hook on the output embedding)."""

    def __init__(self, model: Any, bias: Any, strength: float):
        super().__init__()
        self.model, self.bias, self.strength = model, bias, strength

    @contextmanager
    def _activate(self, prompt_width: int | None) -> Iterator[None]:
        head = self.model.get_output_embeddings()
        delta = (self.strength * self.bias).to(head.weight.device)
        # Bind the handle before `try`, so a failed registration does not raise again in `finally`; return a new
        # tensor rather than writing into the module's output.
        handle = head.register_forward_hook(lambda module, args, out: out + delta.to(out.dtype))
        try:
            yield
        finally:
            handle.remove()

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        Path(path).mkdir(parents=True, exist_ok=True)
        save_file({"bias": self.bias.detach().cpu().contiguous()}, str(Path(path) / "bias.safetensors"))
        (Path(path) / "intervention.json").write_text(json.dumps({"strength": self.strength, "chosen": self.chosen}))

    @classmethod
    def load(cls, path: str | Path, model: Any) -> "LogitBiasIntervention":
        from safetensors.torch import load_file

        meta = json.loads((Path(path) / "intervention.json").read_text())
        obj = cls(getattr(model, "model", model), load_file(str(Path(path) / "bias.safetensors"))["bias"],
                  meta["strength"])
        obj.chosen = meta["chosen"]
        return obj


class LogitBias:
    name = "logit_bias"
    Config = LogitBiasConfig

    def __init__(self, config: LogitBiasConfig | None = None):
        self.config = config or LogitBiasConfig()

    def fit(self, ctx: FitContext) -> Intervention:
        import torch

        cfg, labeler, lm = self.config, ctx.labeler, ctx.model
        vocab = lm.model.get_output_embeddings().weight.shape[0]
        counts = torch.zeros(vocab)
        pair_units, pairs = int(ctx.budget * cfg.pair_share), 0
        start = labeler.account.spent
        for record in ctx.pool:  # 1. buy contrast pairs with the first share of the budget
            cost = labeler.cost("contrast", record_backed=True)
            if labeler.account.spent - start + cost > pair_units or not labeler.account.can_afford(cost):
                break
            pair = labeler.contrast(record)
            for text, sign in ((pair.positive, 1.0), (pair.negative, -1.0)):
                ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
                counts.index_add_(0, torch.tensor(ids, dtype=torch.long), torch.full((len(ids),), sign))
            pairs += 1
        if pairs == 0:
            none = Intervention()
            none.chosen = {"pairs": 0}
            return none
        bias = counts / pairs
        # 2. pick the strength on the select split, with the rest of the budget split between the candidates
        best, best_score = cfg.strengths[0], -math.inf
        per = labeler.account.left // len(cfg.strengths)
        for strength in cfg.strengths:
            if per < 1:
                break
            try:
                r = ctx.select_score(LogitBiasIntervention(lm.model, bias, strength), max_labels=per)
            except BudgetExhausted:
                break
            score = r["behavior"] - (1.0 - r["fluency"]) if not math.isnan(r["behavior"]) else -math.inf
            if score > best_score:
                best, best_score = strength, score
        out = LogitBiasIntervention(lm.model, bias, best)
        out.chosen = {"pairs": pairs, "strength": best}
        return out
