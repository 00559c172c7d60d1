"""`lora_sft`: supervised fine-tuning of a LoRA adapter (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language
Models") on demonstrations bought from the labeler, with TRL's `SFTTrainer` and the loss on the completion only.

Each demonstration is a human-written completion of a pool prompt that shows the behavior (4 cost units on the
organism; one record = one unit on data-set targets). The training length follows one rule for every budget
(`epochs` passes over the bought demonstrations, clamped to [min_steps, max_steps]); snapshots along the run are the
candidates that `methods.trained.select_best` judges on the select split.

    method = LoraSFT(LoraSFTConfig(learning_rate=3e-3))
    intervention = method.fit(ctx)                  # buys demonstrations + selection judgments from ctx.labeler
    with intervention:                              # the adapter is on only inside the block
        ...
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

from methods.base import FitContext, Intervention
from methods.trained import LoraIntervention, buy_demonstrations, rendered, snapshot_steps, train_adapter
from methods.selection import select_best, split_budget
from study.core.config import check
from methods.trl_presets import lora_config, quiet, trainer_args, trainer_name, work_dir


@dataclass(frozen=True)
class LoraSFTConfig:
    learning_rate: float = 3e-3
    epochs: float = 6.0  # passes over the bought demonstrations (the steps rule: ceil(epochs * n / batch_size))
    batch_size: int = 16
    min_steps: int = 12
    max_steps: int = 160
    rank: int = 8
    alpha: float = 16.0
    select_share: float = 0.25  # of the budget, kept to judge the snapshots on the select split
    snapshots: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)  # fractions of the run offered to selection
    precision: str = "auto"  # auto (bf16 on a GPU that has it, fp32 elsewhere), fp32, bf16

    def validate(self) -> None:
        check(self.learning_rate > 0, "learning_rate", self.learning_rate, "must be positive")
        check(self.epochs > 0, "epochs", self.epochs, "must be positive")
        check(1 <= self.min_steps <= self.max_steps, "min_steps", self.min_steps, "must lie in [1, max_steps]")
        check(self.batch_size >= 1 and self.rank >= 1, "rank", self.rank, "rank and batch_size must be >= 1")
        check(0.0 <= self.select_share < 1.0, "select_share", self.select_share, "must lie in [0, 1)")
        check(all(0 < f <= 1 for f in self.snapshots), "snapshots", self.snapshots, "fractions in (0, 1]")
        check(self.precision in ("auto", "fp32", "bf16"), "precision", self.precision, "auto, fp32 or bf16")


def steps_for(n_examples: int, epochs: float, batch_size: int, min_steps: int, max_steps: int) -> int:
    """The training-length rule shared by lora_sft and dpo: `epochs` passes, clamped."""
    return max(min_steps, min(max_steps, math.ceil(epochs * n_examples / batch_size)))


class LoraSFT:
    name = "lora_sft"
    Config = LoraSFTConfig

    def __init__(self, config: LoraSFTConfig | None = None):
        self.config = config or LoraSFTConfig()
        self.config.validate()

    def fit(self, ctx: FitContext) -> Intervention:
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer


        cfg = self.config
        quiet()
        fit_units, _ = split_budget(ctx.labeler, ctx.budget, cfg.select_share, len(cfg.snapshots))
        demos = buy_demonstrations(ctx, fit_units)
        chosen = {"demonstrations": len(demos), "learning_rate": cfg.learning_rate, "rank": cfg.rank}
        if not demos:
            out = Intervention()
            out.chosen = {**chosen, "note": "budget too small for one demonstration"}
            return out
        tok = ctx.model.tokenizer
        data = Dataset.from_dict({"prompt": [rendered(ctx, p) for p, _ in demos],
                                  "completion": [" " + c.strip() for _, c in demos]})
        steps = steps_for(len(demos), cfg.epochs, cfg.batch_size, cfg.min_steps, cfg.max_steps)
        marks = snapshot_steps(steps, cfg.snapshots)
        with work_dir(ctx.work_dir, "lora_sft") as out_dir, warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            args = trainer_args(SFTConfig, out_dir, seed=ctx.seed, device=ctx.device, precision=cfg.precision,
                                learning_rate=cfg.learning_rate, max_steps=steps,
                                per_device_train_batch_size=min(cfg.batch_size, len(demos)),
                                completion_only_loss=True, packing=False, max_length=None)
            model, lora = ctx.model.model, lora_config(ctx.model.model, cfg.rank, cfg.alpha)
            peft_cfg, snaps, trainer = train_adapter(
                model, lambda cbs: SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok,
                                              callbacks=cbs, peft_config=lora), marks)
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        candidates = [(s, LoraIntervention(model, peft_cfg, snaps[s])) for s in marks]
        best, table = select_best(ctx, candidates)
        step, intervention = candidates[best]
        intervention.chosen = {**chosen, "steps": step, "max_steps": steps, "selection": table,
                               "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
                               "trainer": trainer_name(trainer), "config": asdict(cfg)}
        return intervention
