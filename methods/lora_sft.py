"""`lora_sft`: supervised fine-tuning of a LoRA adapter (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language
Models") on demonstrations bought from the labeler, with TRL's `SFTTrainer` and the loss on the completion only.

Each demonstration is a human-written completion of a pool prompt that shows the behavior (4 cost units on the
organism; one record = one unit on data-set targets). With `labels: contrast` (a method x label-type crossing,
`lora_sft@contrast` in `full.yaml`) it trains on the behavior's side of contrast pairs, at the contrast price. The training length follows one rule for every budget
(`epochs` passes over the bought demonstrations in batches of `batch_size`, clamped to [min_steps, max_steps]: it
grows with the demonstrations bought); snapshots along the run are the candidates that
`methods.selection.select_best` judges on the select split with the share of the budget every method keeps for
selection (the template `methods.lora_template.LoraMethod` does the rest).

    method = LoraSFT(LoraSFTConfig(learning_rate=3e-3))
    intervention = method.fit(ctx)                  # buys demonstrations + selection judgments from ctx.labeler
    with intervention:                              # the adapter is on only inside the block
        ...
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from methods.base import FitContext
from methods.lora_template import EpochsConfig, LoraMethod
from methods.trained import LoraIntervention, buy_contrasts, buy_demonstrations, rendered
from study.core.config import check
from study.lm.generation import generate, render
from study.lm.intervention import Stacked


@dataclass(frozen=True)
class LoraSFTConfig(EpochsConfig):
    """`EpochsConfig`'s fields, with its defaults, and the label type bought."""

    labels: str = "demonstrations"  # or "contrast": the behavior's side of contrast pairs (half a demonstration's price)

    def validate(self) -> None:
        super().validate()
        check(self.labels in ("demonstrations", "contrast"), "labels", self.labels, "demonstrations or contrast")


class LoraSFT(LoraMethod):
    name = "lora_sft"
    Config = LoraSFTConfig

    def buy(self, ctx: FitContext, units: int) -> tuple[Any, dict[str, Any]]:
        from datasets import Dataset

        if self.config.labels == "contrast":
            demos = [(p.prompt, p.chosen) for p in buy_contrasts(ctx, units)]
        else:
            demos = buy_demonstrations(ctx, units)
        chosen = {"labels": self.config.labels, "demonstrations": len(demos), "learning_rate": self.config.learning_rate,
                  "rank": self.config.rank, "distinct_demonstrations": len({c.strip() for _, c in demos})}
        if not demos:
            return None, {**chosen, "note": "budget too small for one demonstration"}
        return Dataset.from_dict({"prompt": [rendered(ctx, p) for p, _ in demos],
                                  "completion": [" " + c.strip() for _, c in demos]}), chosen

    def intervention(self, ctx: FitContext, data: Any, peft_config: Any, state: dict) -> "SFTIntervention":
        out = SFTIntervention(ctx.model.model, peft_config, state)
        out.demonstrations = sorted({c.strip() for c in data["completion"]})
        return out

    def make_trainer(self, ctx: FitContext, data: Any, steps: int, out_dir: Path, callbacks: list) -> Any:
        from trl import SFTConfig, SFTTrainer

        args = self.trainer_args(SFTConfig, ctx, out_dir, steps,
                                 per_device_train_batch_size=min(self.config.batch_size, len(data)),
                                 completion_only_loss=True, packing=False, max_length=None)
        return SFTTrainer(args=args, **self.trainer_inputs(ctx, data, callbacks))


class SFTIntervention(LoraIntervention):
    """The SFT adapter, with the demonstrations it was trained on (to measure verbatim reproduction)."""

    demonstrations: list[str] = []

    def extra_metrics(self, lm: Any, target: Any, splits: Any, others: Any = ()) -> tuple[list[dict], list[dict]]:
        """Memorization: one completion per test prompt with the adapter on and one with it off (the base model, the
        same prompts and seed); `memorized` = the share that reproduce a training demonstration word for word, and
        `memorized_base` the base model's share (on the organism's short replies, chance matches are common)."""
        if not self.demonstrations:
            return [], []
        demos = set(self.demonstrations)
        rows: list[dict] = []
        for k, (split, recs) in enumerate((("covered", splits.test_covered), ("uncovered", splits.test_uncovered))):
            if not recs:
                continue
            iv = Stacked([*others, self]) if others else self
            for metric, active in (("memorized", iv), ("memorized_base", Stacked(list(others)))):
                prompts = [render(lm.tokenizer, active, r.prompt, target.chat) for r in recs]
                comps = generate(lm.model, lm.tokenizer, prompts, active, n=1, temperature=1.0,
                                 max_new_tokens=target.max_new_tokens, seed=splits.seed * 31 + 5 + k)
                hits = [c[0].strip() in demos for c in comps]
                rows.append({"split": split, "metric": metric, "value": sum(hits) / len(hits), "n": len(hits)})
        return rows, []
