"""`dpo`: Direct Preference Optimization (Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model
is Secretly a Reward Model") of a LoRA adapter with TRL's `DPOTrainer`.

Feedback as a human rater gives it: for each feedback prompt, two completions sampled from the base model, compared by
the labeler (one unit each); on data-set targets, each record's own pair. With `labels: contrast` (a method x
label-type crossing, e.g. `dpo@contrast` in `full.yaml`) it buys the labeler's contrast pairs instead, at their price. Comparisons the labeler calls a tie (both
equally good or bad, or both unreadable) carry no preference and are not trained on, though they were paid for. The
reference policy is the base model itself: the adapter disabled (TRL does this when the policy is a PEFT model).
Training length follows the rule of `methods.lora_template` (`epochs` passes over the decisive pairs in batches of
`batch_size`, clamped: it grows with the comparisons bought); snapshots along the run are judged on the select split
with the share of the budget every method keeps for selection (`methods.selection`).

    intervention = DPO(DPOMethodConfig(beta=0.1)).fit(ctx)
    with intervention:
        ...
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from methods.base import FitContext
from methods.lora_template import EpochsConfig, LoraMethod
from methods.trained import ComparisonsConfig, Preference, buy_comparisons, buy_contrasts, rendered
from study.core.config import check


@dataclass(frozen=True)
class DPOMethodConfig(EpochsConfig, ComparisonsConfig):
    learning_rate: float = 1e-3  # DPO degrades fluency within a few epochs at 3e-3 on the organism (pilot, seed 100)
    beta: float = 0.1  # the KL strength of the implicit reward (TRL's DPOConfig.beta)
    labels: str = "comparisons"  # or "contrast": the labeler's contrast pairs (steering's label type)

    def validate(self) -> None:
        super().validate()
        check(self.beta > 0, "beta", self.beta, "must be positive")
        check(self.labels in ("comparisons", "contrast"), "labels", self.labels, "comparisons or contrast")


def preference_dataset(ctx: FitContext, prefs: list[Preference], with_ties: bool):
    """TRL's preference format {prompt, chosen, rejected}, prompts rendered as the evaluator renders them."""
    from datasets import Dataset

    keep = [p for p in prefs if with_ties or not p.tie]
    return Dataset.from_dict({"prompt": [rendered(ctx, p.prompt) for p in keep],
                              "chosen": [" " + p.chosen.strip() for p in keep],
                              "rejected": [" " + p.rejected.strip() for p in keep]})


class DPO(LoraMethod):
    name = "dpo"
    Config = DPOMethodConfig

    def buy(self, ctx: FitContext, units: int) -> tuple[Any, dict[str, Any]]:
        cfg = self.config
        if cfg.labels == "contrast":
            prefs = buy_contrasts(ctx, units)
        else:
            prefs = buy_comparisons(ctx, units, temperature=cfg.temperature)
        data = preference_dataset(ctx, prefs, cfg.train_on_ties)
        chosen = {"labels": cfg.labels, "comparisons": len(prefs), "ties": sum(p.tie for p in prefs), "pairs_trained": len(data),
                  "learning_rate": cfg.learning_rate, "beta": cfg.beta, "rank": cfg.rank}
        if len(data) == 0:
            return None, {**chosen, "note": "no decisive comparison to train on"}
        return data, chosen

    def make_trainer(self, ctx: FitContext, data: Any, steps: int, out_dir: Path, callbacks: list) -> Any:
        from trl import DPOConfig, DPOTrainer

        # The reference (the base: adapter off) is fixed, so its log-probabilities are computed once for every pair
        # before training instead of once per step (the same values; a quarter fewer forward passes per step).
        args = self.trainer_args(DPOConfig, ctx, out_dir, steps, beta=self.config.beta, max_length=None,
                                 per_device_train_batch_size=min(self.config.batch_size, len(data)),
                                 precompute_ref_log_probs=True, precompute_ref_batch_size=64)
        return DPOTrainer(args=args, **self.trainer_inputs(ctx, data, callbacks))

    def summary(self, trainer: Any, data: Any) -> dict[str, Any]:
        logs = [h for h in trainer.state.log_history if "loss" in h]
        return {**super().summary(trainer, data),
                "reward_accuracy_last": logs[-1].get("rewards/accuracies") if logs else None}
