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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from methods.base import FitContext
from methods.lora_template import AdapterConfig, LoraMethod
from methods.reward_model import LearnedRewardConfig, RewardModel, learned_vs_true, train_reward_model
from methods.trained import LoraIntervention, buy_comparisons, rendered
from study.core.config import check
from study.core.timing import phase
from study.lm.generation import finite_float32_logits


@dataclass(frozen=True)
class RLHFConfig(AdapterConfig, LearnedRewardConfig):
    trainer: str = "rloo"  # rloo (RLOOTrainer) or grpo (GRPOTrainer)
    # beta: KL(policy || base) penalty, in units of the standardized learned reward. At 0.05 (TRL's default) the policy
    # drifts to other domains' positive words that the reward model, fitted on base samples, never saw punished
    # (fluency 0.89 on sentiment); 0.5 keeps fluency at the base's level (pilot on seed 100, not a reported seed).
    kl_coef: float = 0.5
    steps: int = 40  # RL steps, the same at every budget (RL spends prompts, not labels)
    batch_size: int = 32  # completions per step
    num_generations: int = 4  # completions per prompt (the leave-one-out / group baseline)

    def validate(self) -> None:
        super().validate()
        check(self.trainer in ("rloo", "grpo"), "trainer", self.trainer, "rloo or grpo")
        check(self.kl_coef >= 0, "kl_coef", self.kl_coef, "must be >= 0")
        check(self.steps >= 1, "steps", self.steps, "must be >= 1")
        check(self.num_generations >= 2 and self.batch_size % self.num_generations == 0, "batch_size",
              self.batch_size, f"must be a multiple of num_generations ({self.num_generations}), which must be >= 2")


@dataclass
class RLData:
    """What the RL run trains on: pool prompts (rendered) and the learned reward, which records every sample."""

    prompts: Any  # a Dataset {prompt}: steps * batch_size / num_generations rendered pool prompts
    reward_model: RewardModel
    raw: dict[str, str]  # rendered prompt -> the prompt as the labeler saw it
    trace: list[dict]  # {step, prompt, completion, learned_reward}, filled during the run


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


class RLHF(LoraMethod):
    name = "rlhf"
    Config = RLHFConfig

    def buy(self, ctx: FitContext, units: int) -> tuple[Any, dict[str, Any]]:
        from datasets import Dataset

        cfg = self.config
        prefs = buy_comparisons(ctx, units, temperature=cfg.temperature)
        with phase("reward_model"):
            rm = train_reward_model(ctx, prefs, cfg.reward_config(), cfg.precision)
        chosen = {"comparisons": len(prefs), "ties": sum(p.tie for p in prefs), "learning_rate": cfg.learning_rate,
                  "kl_coef": cfg.kl_coef, "rl_trainer": cfg.trainer, "rank": cfg.rank}
        if rm is None:
            return None, {**chosen, "note": "no decisive comparison to fit a reward model on"}
        raw = {rendered(ctx, r.prompt): r.prompt for r in ctx.pool}
        n_prompts = cfg.steps * cfg.batch_size // cfg.num_generations
        prompts = list(raw)
        data = Dataset.from_dict({"prompt": (prompts * (n_prompts // len(prompts) + 1))[:n_prompts]})
        return RLData(data, rm, raw, []), chosen

    def train_steps(self, data: RLData) -> int:
        return self.config.steps

    def make_trainer(self, ctx: FitContext, data: RLData, steps: int, out_dir: Path, callbacks: list) -> Any:
        cfg = self.config
        if cfg.trainer == "rloo":
            from trl import RLOOConfig as TrainerConfig, RLOOTrainer as Trainer
        else:
            from trl import GRPOConfig as TrainerConfig, GRPOTrainer as Trainer
        args = self.trainer_args(TrainerConfig, ctx, out_dir, steps, beta=cfg.kl_coef,
                                 per_device_train_batch_size=cfg.batch_size, num_generations=cfg.num_generations,
                                 max_completion_length=ctx.target.max_new_tokens, temperature=cfg.temperature,
                                 top_k=0, top_p=1.0, shuffle_dataset=True)
        trainer = Trainer(args=args, reward_funcs=[_learned_reward(data.reward_model, data.raw, data.trace)],
                          **self.trainer_inputs(ctx, data.prompts, callbacks))
        train = trainer.train

        def guarded_train(*a: Any, **kw: Any) -> Any:
            # TRL samples from the policy's own logits: in bf16/fp16 they are cast to float32 and checked, so a
            # non-finite value fails the cell with a clear error instead of a CUDA device-side assert.
            with finite_float32_logits(ctx.model.model):
                return train(*a, **kw)

        trainer.train = guarded_train
        return trainer

    def summary(self, trainer: Any, data: RLData) -> dict[str, Any]:
        logs = [h for h in trainer.state.log_history if "reward" in h]
        return {"reward_model": data.reward_model.info,
                "learned_reward_first": logs[0]["reward"] if logs else None,
                "learned_reward_last": logs[-1]["reward"] if logs else None,
                "kl_last": logs[-1].get("kl") if logs else None}

    def intervention(self, ctx: FitContext, data: RLData, peft_config: Any, state: dict) -> LoraIntervention:
        out = RLHFIntervention(ctx.model.model, peft_config, state)
        out.reward_model, out.trace = data.reward_model, data.trace
        return out
