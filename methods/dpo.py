"""`dpo`: Direct Preference Optimization (Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model
is Secretly a Reward Model") of a LoRA adapter with TRL's `DPOTrainer`.

Feedback as a human rater gives it: for each feedback prompt, two completions sampled from the base model, compared by
the labeler (one unit each); on data-set targets, each record's own pair. Comparisons the labeler calls a tie (both
equally good or bad, or both unreadable) carry no preference and are not trained on, though they were paid for. The
reference policy is the base model itself: the adapter disabled (TRL does this when the policy is a PEFT model).
Training length follows the rule of `methods.lora_sft.steps_for`; snapshots along the run are judged on the select
split (`methods.trained.select_best`).

    intervention = DPO(DPOMethodConfig(beta=0.1)).fit(ctx)
    with intervention:
        ...
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

from methods.base import FitContext, Intervention
from methods.lora_sft import steps_for
from methods.selection import select_best, split_budget
from methods.trained import LoraIntervention, Preference, buy_comparisons, rendered, snapshot_steps, train_adapter
from methods.trl_presets import lora_config, quiet, trainer_args, trainer_name, work_dir
from study.core.config import check


@dataclass(frozen=True)
class DPOMethodConfig:
    learning_rate: float = 1e-3  # DPO degrades fluency within a few epochs at 3e-3 on the organism (pilot, seed 100)
    beta: float = 0.1  # the KL strength of the implicit reward (TRL's DPOConfig.beta)
    epochs: float = 4.0
    batch_size: int = 16
    min_steps: int = 12
    max_steps: int = 160
    rank: int = 8
    alpha: float = 16.0
    train_on_ties: bool = False
    select_share: float = 0.25
    snapshots: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    temperature: float = 1.0  # of the base-model samples shown to the labeler
    precision: str = "auto"

    def validate(self) -> None:
        check(self.learning_rate > 0, "learning_rate", self.learning_rate, "must be positive")
        check(self.beta > 0, "beta", self.beta, "must be positive")
        check(self.epochs > 0, "epochs", self.epochs, "must be positive")
        check(1 <= self.min_steps <= self.max_steps, "min_steps", self.min_steps, "must lie in [1, max_steps]")
        check(self.batch_size >= 1 and self.rank >= 1, "rank", self.rank, "rank and batch_size must be >= 1")
        check(0.0 <= self.select_share < 1.0, "select_share", self.select_share, "must lie in [0, 1)")
        check(all(0 < f <= 1 for f in self.snapshots), "snapshots", self.snapshots, "fractions in (0, 1]")
        check(self.precision in ("auto", "fp32", "bf16"), "precision", self.precision, "auto, fp32 or bf16")


def preference_dataset(ctx: FitContext, prefs: list[Preference], with_ties: bool):
    """TRL's preference format {prompt, chosen, rejected}, prompts rendered as the evaluator renders them."""
    from datasets import Dataset


    keep = [p for p in prefs if with_ties or not p.tie]
    tok = ctx.model.tokenizer
    return Dataset.from_dict({"prompt": [rendered(ctx, p.prompt) for p in keep],
                              "chosen": [" " + p.chosen.strip() for p in keep],
                              "rejected": [" " + p.rejected.strip() for p in keep]})


class DPO:
    name = "dpo"
    Config = DPOMethodConfig

    def __init__(self, config: DPOMethodConfig | None = None):
        self.config = config or DPOMethodConfig()
        self.config.validate()

    def fit(self, ctx: FitContext) -> Intervention:
        from trl import DPOConfig, DPOTrainer


        cfg = self.config
        quiet()
        fit_units, _ = split_budget(ctx.labeler, ctx.budget, cfg.select_share, len(cfg.snapshots))
        prefs = buy_comparisons(ctx, fit_units, temperature=cfg.temperature)
        data = preference_dataset(ctx, prefs, cfg.train_on_ties)
        chosen = {"comparisons": len(prefs), "ties": sum(p.tie for p in prefs), "pairs_trained": len(data),
                  "learning_rate": cfg.learning_rate, "beta": cfg.beta, "rank": cfg.rank}
        if len(data) == 0:
            out = Intervention()
            out.chosen = {**chosen, "note": "no decisive comparison to train on"}
            return out
        steps = steps_for(len(data), cfg.epochs, cfg.batch_size, cfg.min_steps, cfg.max_steps)
        marks = snapshot_steps(steps, cfg.snapshots)
        model, tok = ctx.model.model, ctx.model.tokenizer
        with work_dir(ctx.work_dir, "dpo") as out_dir, warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            args = trainer_args(DPOConfig, out_dir, seed=ctx.seed, device=ctx.device, precision=cfg.precision,
                                learning_rate=cfg.learning_rate, beta=cfg.beta, max_steps=steps,
                                per_device_train_batch_size=min(cfg.batch_size, len(data)), max_length=None)
            lora = lora_config(model, cfg.rank, cfg.alpha)
            peft_cfg, snaps, trainer = train_adapter(
                model, lambda cbs: DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tok,
                                              callbacks=cbs, peft_config=lora), marks)
        logs = [h for h in trainer.state.log_history if "loss" in h]
        candidates = [(s, LoraIntervention(model, peft_cfg, snaps[s])) for s in marks]
        best, table = select_best(ctx, candidates)
        step, intervention = candidates[best]
        intervention.chosen = {**chosen, "steps": step, "max_steps": steps, "selection": table,
                               "loss_first": logs[0]["loss"] if logs else None,
                               "loss_last": logs[-1]["loss"] if logs else None,
                               "reward_accuracy_last": logs[-1].get("rewards/accuracies") if logs else None,
                               "trainer": trainer_name(trainer), "config": asdict(cfg)}
        return intervention
