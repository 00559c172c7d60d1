"""The template of the LoRA-trained methods (lora_sft, dpo, rlhf), written once: buy labels, build a TRL trainer around
the shared model with a LoRA `peft_config`, train with adapter snapshots along the run, judge the snapshots on the
select split and return the best one as a `LoraIntervention`. A method fills in only what differs, and its Config
subclasses `AdapterConfig` (or `EpochsConfig`).

The rules, the same for every method and budget:

- **Budget** (`methods.selection.split_budget`): `select_share` of the budget (`SELECT_SHARE`, steering's split too)
  is kept for judged selection when it pays one judgment per snapshot in the first round of successive halving; the
  rest buys training labels, and what those cannot use (a demonstration costs 4) is judged too.
- **Selection** (`methods.selection.select_best`): the snapshots at `snapshots` fractions of the run, judged on the
  select split by successive halving, charged inside the cell; ties go to the earlier snapshot; without a selection
  budget, the last snapshot.
- **Training length** (`EpochsConfig.train_steps`, methods whose data grows with the budget): `epochs` passes over the
  bought examples in batches of `batch_size`, steps = ceil(epochs * n / batch_size) clamped to [min_steps, max_steps].
  With the defaults (8 passes in batches of 4, floor 4, cap 200) that is 2 steps per example: the floor binds only
  below 2 examples and the cap above 100, so more labels always buy more training between.

    class LoraSFT(LoraMethod):
        name, Config = "lora_sft", LoraSFTConfig
        def buy(self, ctx, units): ...      # -> (training data, facts for `chosen`); data None: nothing to train on
        def make_trainer(self, ctx, data, steps, out_dir, callbacks):
            return SFTTrainer(args=self.trainer_args(SFTConfig, ctx, out_dir, steps, ...),
                              **self.trainer_inputs(ctx, data, callbacks))
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from methods.base import FitContext, Intervention
from methods.selection import SELECT_SHARE, select_best, split_budget
from methods.trained import LoraIntervention, TrainedConfig, snapshot_steps, steps_for, train_adapter
from methods.trl_presets import lora_config, quiet, trainer_args, trainer_name, work_dir
from study.core.config import check
from study.core.timing import phase


@dataclass(frozen=True)
class AdapterConfig(TrainedConfig):
    """The fields of every LoRA-trained method (lora_sft, dpo, rlhf)."""

    learning_rate: float = 3e-3
    batch_size: int = 16
    rank: int = 8
    alpha: float = 16.0
    select_share: float = SELECT_SHARE  # of the budget, kept to judge the snapshots on the select split
    snapshots: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)  # fractions of the run offered to selection

    def validate(self) -> None:
        super().validate()
        check(self.learning_rate > 0, "learning_rate", self.learning_rate, "must be positive")
        check(self.batch_size >= 1, "batch_size", self.batch_size, "must be >= 1")
        check(self.rank >= 1, "rank", self.rank, "must be >= 1")
        check(self.alpha > 0, "alpha", self.alpha, "must be positive")
        check(0.0 <= self.select_share < 1.0, "select_share", self.select_share, "must lie in [0, 1)")
        check(all(0 < f <= 1 for f in self.snapshots), "snapshots", self.snapshots, "fractions in (0, 1]")


@dataclass(frozen=True)
class EpochsConfig(AdapterConfig):
    """The methods whose run length follows the labels bought (lora_sft, dpo): `epochs` passes, clamped (the module
    docstring's rule)."""

    epochs: float = 8.0  # passes over the bought labels (the steps rule: ceil(epochs * n / batch_size))
    batch_size: int = 4  # small enough that every budget of the grid buys several batches: steps grow with labels
    min_steps: int = 4  # the floor: one step per snapshot
    max_steps: int = 200

    def validate(self) -> None:
        super().validate()
        check(self.epochs > 0, "epochs", self.epochs, "must be positive")
        check(1 <= self.min_steps <= self.max_steps, "min_steps", self.min_steps, "must lie in [1, max_steps]")

    def train_steps(self, n_examples: int) -> int:
        return steps_for(n_examples, self.epochs, self.batch_size, self.min_steps, self.max_steps)


class LoraMethod:
    """The fit of a LoRA-trained method. Subclasses set `name` and `Config` and define `buy` and `make_trainer`;
    `train_steps`, `summary` and `intervention` have defaults that a method may override."""

    name: str
    Config: type[AdapterConfig]

    def __init__(self, config: AdapterConfig | None = None):
        self.config = config or self.Config()
        self.config.validate()

    # ---- what a method fills in ------------------------------------------------------------------------------------
    def buy(self, ctx: FitContext, units: int) -> tuple[Any, dict[str, Any]]:
        """Spend `units` on labels: (training data, facts for `chosen`). Data None: nothing to train on, the reason
        in the facts' "note"."""
        raise NotImplementedError(f"{type(self).__name__} must define buy(ctx, units)")

    def make_trainer(self, ctx: FitContext, data: Any, steps: int, out_dir: Path, callbacks: list) -> Any:
        """The TRL trainer of `steps` steps on `data` around the shared model (see `trainer_args`, `trainer_inputs`)."""
        raise NotImplementedError(f"{type(self).__name__} must define make_trainer(ctx, data, steps, out_dir, "
                                  f"callbacks)")

    def train_steps(self, data: Any) -> int:
        return self.config.train_steps(len(data))

    def summary(self, trainer: Any, data: Any) -> dict[str, Any]:
        """Facts of the run for `chosen`, read from the trainer's log."""
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        return {"loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None}

    def intervention(self, ctx: FitContext, data: Any, peft_config: Any, state: dict) -> LoraIntervention:
        """One candidate: the adapter as it was at one snapshot."""
        return LoraIntervention(ctx.model.model, peft_config, state)

    # ---- helpers for make_trainer ----------------------------------------------------------------------------------
    def trainer_args(self, config_cls: type, ctx: FitContext, out_dir: Path, steps: int, **fields: Any) -> Any:
        """A TRL `XConfig` with the presets, the cell's seed and device and this config's learning rate."""
        cfg = self.config
        return trainer_args(config_cls, out_dir, seed=ctx.seed, device=ctx.device, precision=cfg.precision,
                            learning_rate=cfg.learning_rate, max_steps=steps, **fields)

    def trainer_inputs(self, ctx: FitContext, dataset: Any, callbacks: list) -> dict[str, Any]:
        """The keywords every TRL trainer here takes: the shared model, its tokenizer and the LoRA `peft_config`."""
        model = ctx.model.model
        return dict(model=model, train_dataset=dataset, processing_class=ctx.model.tokenizer, callbacks=callbacks,
                    peft_config=lora_config(model, self.config.rank, self.config.alpha))

    # ---- the template ----------------------------------------------------------------------------------------------
    def fit(self, ctx: FitContext) -> Intervention:
        cfg = self.config
        quiet()
        start = ctx.labeler.account.spent
        fit_units, select_units = split_budget(ctx.labeler, ctx.budget, cfg.select_share, len(cfg.snapshots))
        with phase("buy_labels"):
            data, chosen = self.buy(ctx, fit_units)
        chosen["labels_train"] = ctx.labeler.account.spent - start
        if data is None:
            out = Intervention()
            out.chosen = {**chosen, "labels_select": 0, "labels_spent": chosen["labels_train"]}
            return out
        steps = self.train_steps(data)
        marks = snapshot_steps(steps, cfg.snapshots)
        with work_dir(ctx.work_dir, self.name) as out_dir, warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            trained = train_adapter(ctx.model.model,
                                    lambda cbs: self.make_trainer(ctx, data, steps, out_dir, cbs), marks)
        candidates = [(s, self.intervention(ctx, data, trained.peft_config, trained.snapshots[s])) for s in marks]
        with phase("select"):  # the kept share, and what the training labels could not use
            left = (ctx.budget - chosen["labels_train"]) if select_units else 0
            best, table = select_best(ctx, candidates, left)
        step, intervention = candidates[best]
        labels_select = ctx.labeler.account.spent - start - chosen["labels_train"]
        intervention.chosen = {**chosen, "steps": step, "max_steps": steps, "selection": table,
                               "labels_select": labels_select, "labels_spent": chosen["labels_train"] + labels_select,
                               **self.summary(trained.trainer, data), "trainer": trainer_name(trained.trainer),
                               "config": asdict(cfg), "lora_modules": trained.modules,
                               "trainable_parameters": intervention.num_parameters()}
        return intervention
