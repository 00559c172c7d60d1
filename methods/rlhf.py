"""`rlhf`: classic RLHF (Ouyang et al. 2022; Stiennon et al. 2020): a reward model fitted on bought comparisons, then
online RL of a LoRA policy against that learned reward with a KL penalty to the base model. The RL step is TRL's
`RLOOTrainer` (Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for Learning from Human
Feedback"; KL folded into the reward as in the classic recipe) or, with `trainer: grpo`, `GRPOTrainer` (Shao et al.
2024) with its KL term.

Labels: the same comparisons DPO buys (two base-model samples per feedback prompt, judged by the labeler). RL itself
uses only pool prompts (no labels) and the learned reward, never the oracle. Every RL sample's learned reward is kept
in `intervention.trace`, so that an evaluation can put the oracle's score beside it on the same samples and show
over-optimization (learned reward up, true behavior flat or down). The policy's snapshots along the run are judged on
the select split like every trained method's.

    intervention = RLHF(RLHFConfig(kl_coef=0.05)).fit(ctx)
    intervention.reward_model.score(prompts, completions)     # the learned reward, e.g. for evaluated samples
    with intervention:
        ...
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from methods.base import FitContext, Intervention
from methods.reward_model import RewardModel, RewardModelConfig, learned_vs_true, train_reward_model
from methods.trained import LoraIntervention, buy_comparisons, rendered, snapshot_steps, train_adapter
from methods.selection import select_best, split_budget
from study.core.config import check
from methods.trl_presets import lora_config, quiet, trainer_args, trainer_name, work_dir


@dataclass(frozen=True)
class RLHFConfig:
    trainer: str = "rloo"  # rloo (RLOOTrainer) or grpo (GRPOTrainer)
    learning_rate: float = 3e-3  # of the policy's LoRA adapter
    # beta: KL(policy || base) penalty, in units of the standardized learned reward. At 0.05 (TRL's default) the policy
    # drifts to other domains' positive words that the reward model, fitted on base samples, never saw punished
    # (fluency 0.89 on sentiment); 0.5 keeps fluency at the base's level (pilot on seed 100, not a reported seed).
    kl_coef: float = 0.5
    steps: int = 40  # RL steps, the same at every budget (RL spends prompts, not labels)
    batch_size: int = 32  # completions per step
    num_generations: int = 4  # completions per prompt (the leave-one-out / group baseline)
    temperature: float = 1.0
    rank: int = 8
    alpha: float = 16.0
    rm_learning_rate: float = 3e-3
    rm_epochs: float = 16.0
    rm_rank: int = 8
    train_on_ties: bool = False
    select_share: float = 0.25
    snapshots: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    precision: str = "auto"

    def validate(self) -> None:
        check(self.trainer in ("rloo", "grpo"), "trainer", self.trainer, "rloo or grpo")
        check(self.learning_rate > 0 and self.rm_learning_rate > 0, "learning_rate", self.learning_rate,
              "learning rates must be positive")
        check(self.kl_coef >= 0, "kl_coef", self.kl_coef, "must be >= 0")
        check(self.steps >= 1, "steps", self.steps, "must be >= 1")
        check(self.num_generations >= 2 and self.batch_size % self.num_generations == 0, "batch_size",
              self.batch_size, f"must be a multiple of num_generations ({self.num_generations}), which must be >= 2")
        check(0.0 <= self.select_share < 1.0, "select_share", self.select_share, "must lie in [0, 1)")
        check(all(0 < f <= 1 for f in self.snapshots), "snapshots", self.snapshots, "fractions in (0, 1]")
        check(self.precision in ("auto", "fp32", "bf16"), "precision", self.precision, "auto, fp32 or bf16")

    def reward_config(self) -> RewardModelConfig:
        return RewardModelConfig(learning_rate=self.rm_learning_rate, epochs=self.rm_epochs, rank=self.rm_rank,
                                 alpha=2.0 * self.rm_rank, train_on_ties=self.train_on_ties)


class RLHFIntervention(LoraIntervention):
    """The RL policy's adapter, with the reward model it was trained against and the RL samples' learned rewards."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.reward_model: RewardModel | None = None
        self.trace: list[dict] = []  # {step, prompt, completion, learned_reward} for every RL sample

    def extra_metrics(self, lm: Any, target: Any, splits: Any, others: Any = ()) -> tuple[list[dict], list[dict]]:
        """Learned reward beside true reward, on test samples and on the RL run's own samples (evaluation only)."""
        if self.reward_model is None:
            return [], []
        return learned_vs_true(lm, target, splits, self, self.reward_model, others, self.trace, splits.seed)

    def save(self, path: str | Path) -> None:
        super().save(path)
        if self.reward_model is not None:
            self.reward_model.save(Path(path) / "reward_model")
        with open(Path(path) / "rl_trace.jsonl", "w") as f:
            for row in self.trace:
                f.write(json.dumps(row) + "\n")

    @classmethod
    def load(cls, path: str | Path, model: Any) -> "RLHFIntervention":
        out = super().load(path, model)
        if (Path(path) / "reward_model").is_dir() and hasattr(model, "tokenizer"):
            out.reward_model = RewardModel.load(Path(path) / "reward_model", model.tokenizer)
        trace = Path(path) / "rl_trace.jsonl"
        out.trace = [json.loads(line) for line in trace.read_text().splitlines()] if trace.is_file() else []
        return out


def _learned_reward(rm: RewardModel, raw_prompt: dict[str, str], trace: list[dict]):
    """The reward function handed to the RL trainer: the learned reward, recorded sample by sample."""

    def learned_reward(prompts, completions, trainer_state=None, **kwargs) -> list[float]:
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        scores = rm.score(prompts, texts, rendered=True)
        step = trainer_state.global_step if trainer_state is not None else None
        trace.extend({"step": step, "prompt": raw_prompt.get(p, p), "completion": c.strip(), "learned_reward": r}
                     for p, c, r in zip(prompts, texts, scores))
        return scores

    return learned_reward


class RLHF:
    name = "rlhf"
    Config = RLHFConfig

    def __init__(self, config: RLHFConfig | None = None):
        self.config = config or RLHFConfig()
        self.config.validate()

    def fit(self, ctx: FitContext) -> Intervention:
        from datasets import Dataset


        cfg = self.config
        quiet()
        fit_units, _ = split_budget(ctx.labeler, ctx.budget, cfg.select_share, len(cfg.snapshots))
        prefs = buy_comparisons(ctx, fit_units, temperature=cfg.temperature)
        rm = train_reward_model(ctx, prefs, cfg.reward_config(), cfg.precision)
        chosen = {"comparisons": len(prefs), "ties": sum(p.tie for p in prefs), "learning_rate": cfg.learning_rate,
                  "kl_coef": cfg.kl_coef, "rl_trainer": cfg.trainer, "rank": cfg.rank}
        if rm is None:
            out = Intervention()
            out.chosen = {**chosen, "note": "no decisive comparison to fit a reward model on"}
            return out
        model, tok = ctx.model.model, ctx.model.tokenizer
        raw = {rendered(ctx, r.prompt): r.prompt for r in ctx.pool}
        n_prompts = cfg.steps * cfg.batch_size // cfg.num_generations
        prompts = list(raw)
        data = Dataset.from_dict({"prompt": (prompts * (n_prompts // len(prompts) + 1))[:n_prompts]})
        trace: list[dict] = []
        marks = snapshot_steps(cfg.steps, cfg.snapshots)
        if cfg.trainer == "rloo":
            from trl import RLOOConfig as TrainerConfig, RLOOTrainer as Trainer
        else:
            from trl import GRPOConfig as TrainerConfig, GRPOTrainer as Trainer
        with work_dir(ctx.work_dir, "rlhf") as out_dir, warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            args = trainer_args(TrainerConfig, out_dir, seed=ctx.seed, device=ctx.device, precision=cfg.precision,
                                learning_rate=cfg.learning_rate, beta=cfg.kl_coef, max_steps=cfg.steps,
                                per_device_train_batch_size=cfg.batch_size, num_generations=cfg.num_generations,
                                max_completion_length=ctx.target.max_new_tokens, temperature=cfg.temperature,
                                top_k=0, top_p=1.0, shuffle_dataset=True)
            peft_cfg, snaps, trainer = train_adapter(
                model, lambda cbs: Trainer(model=model, reward_funcs=[_learned_reward(rm, raw, trace)], args=args,
                                           train_dataset=data, processing_class=tok, callbacks=cbs,
                                           peft_config=lora_config(model, cfg.rank, cfg.alpha)), marks)
        logs = [h for h in trainer.state.log_history if "reward" in h]
        candidates = []
        for s in marks:
            iv = RLHFIntervention(model, peft_cfg, snaps[s])
            iv.reward_model, iv.trace = rm, trace
            candidates.append((s, iv))
        best, table = select_best(ctx, candidates)
        step, intervention = candidates[best]
        intervention.chosen = {
            **chosen, "steps": step, "max_steps": cfg.steps, "selection": table, "reward_model": rm.info,
            "learned_reward_first": logs[0]["reward"] if logs else None,
            "learned_reward_last": logs[-1]["reward"] if logs else None,
            "kl_last": logs[-1].get("kl") if logs else None, "trainer": trainer_name(trainer),
            "config": asdict(cfg)}
        return intervention
