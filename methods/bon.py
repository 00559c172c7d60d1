"""`bon`: best-of-n sampling with a learned reward model (as in Stiennon et al. 2020 and Gao et al. 2023, "Scaling
Laws for Reward Model Overoptimization"): no weight changes; every generation draws n completions and keeps the one
the reward model (`methods.reward_model`, fitted on the bought comparisons) scores highest.

All of the budget buys comparisons for the reward model: there is no strength knob to select (n is a config value;
the KL of best-of-n to the base policy is at most log n - (n-1)/n, stored as `kl_bound`). Inside `with`, the shared
model's `generate` is wrapped; teacher-forced log-probabilities are untouched, so per-token KL and perplexity read as
the base model's (best-of-n changes which samples are kept, not the model's distribution over next tokens).

    intervention = BestOfN(BestOfNConfig(n=8)).fit(ctx)
    with intervention:
        model.generate(**batch, do_sample=True)           # one completion per row: the best of 8 by the reward model
"""

from __future__ import annotations

import json
import math
import types
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from methods.base import FitContext, Intervention
from methods.reward_model import LearnedRewardConfig, RewardModel, learned_vs_true, train_reward_model
from methods.trained import AttachedOnce, buy_comparisons
from methods.trl_presets import quiet
from study.core.config import check


@dataclass(frozen=True)
class BestOfNConfig(LearnedRewardConfig):
    n: int = 8

    def validate(self) -> None:
        super().validate()
        check(self.n >= 1, "n", self.n, "must be >= 1")


class BestOfNIntervention(AttachedOnce):
    def __init__(self, model: Any = None, tokenizer: Any = None, reward_model: RewardModel | None = None, n: int = 8,
                 chosen: dict | None = None):
        super().__init__()
        self.model, self.tokenizer, self.reward_model, self.n = model, tokenizer, reward_model, n
        self.chosen = dict(chosen or {})

    def _attach(self) -> None:
        self._own = self.model.__dict__.get("generate")  # an instance-level generate someone else put there
        self.model.generate = types.MethodType(self._best_of_n(self.model.generate), self.model)

    def _detach(self) -> None:
        if self._own is None:
            del self.model.generate  # back to the class's own method
        else:
            self.model.generate = self._own

    def _best_of_n(self, generate: Any) -> Any:
        import torch

        n, tok, rm = self.n, self.tokenizer, self.reward_model

        def best_of_n(model, input_ids=None, attention_mask=None, **kwargs):
            if n == 1 or input_ids is None:
                return generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            rows = input_ids.shape[0]
            ids = input_ids.repeat_interleave(n, dim=0)
            mask = attention_mask.repeat_interleave(n, dim=0) if attention_mask is not None else None
            out = generate(input_ids=ids, attention_mask=mask, **kwargs)
            width, eos, pad = input_ids.shape[1], tok.eos_token_id, tok.pad_token_id
            seqs = []
            for i in range(out.shape[0]):
                row = input_ids[i // n]
                prompt = row[attention_mask[i // n].bool()] if attention_mask is not None else row
                new = out[i, width:].tolist()
                stop = next((j for j, t in enumerate(new) if t in (eos, pad)), len(new))
                seqs.append(prompt.tolist() + new[:stop] + [eos])  # as the reward model read its training pairs
            scores = torch.tensor(rm.raw_ids(seqs)).view(rows, n)
            pick = scores.argmax(dim=1) + torch.arange(rows) * n
            return out[pick.to(out.device)]

        return best_of_n

    def extra_metrics(self, lm: Any, target: Any, splits: Any, others: Any = ()) -> tuple[list[dict], list[dict]]:
        """Learned reward of the kept samples beside their true reward (evaluation only)."""
        return learned_vs_true(lm, target, splits, self, self.reward_model, others, seed=splits.seed)

    def save(self, path: str | Path) -> None:
        super().save(path)
        self.reward_model.save(Path(path) / "reward_model")

    @classmethod
    def load(cls, path: str | Path, model: Any) -> "BestOfNIntervention":
        meta = json.loads((Path(path) / "intervention.json").read_text())
        rm = RewardModel.load(Path(path) / "reward_model", model.tokenizer)
        return cls(model.model, model.tokenizer, rm, meta["chosen"]["n"], meta["chosen"])


class BestOfN:
    name = "bon"
    Config = BestOfNConfig

    def __init__(self, config: BestOfNConfig | None = None):
        self.config = config or BestOfNConfig()
        self.config.validate()

    def fit(self, ctx: FitContext) -> Intervention:
        cfg = self.config
        quiet()
        prefs = buy_comparisons(ctx, ctx.budget, temperature=cfg.temperature)
        rm = train_reward_model(ctx, prefs, cfg.reward_config(), cfg.precision)
        chosen = {"n": cfg.n, "comparisons": len(prefs), "ties": sum(p.tie for p in prefs),
                  "kl_bound": math.log(cfg.n) - (cfg.n - 1) / cfg.n, "config": asdict(cfg)}
        if rm is None:
            out = Intervention()
            out.chosen = {**chosen, "note": "no decisive comparison to fit a reward model on"}
            return out
        return BestOfNIntervention(ctx.model.model, ctx.model.tokenizer, rm, cfg.n,
                                   {**chosen, "reward_model": rm.info})
