"""A learned reward model (Bradley-Terry, as in Ouyang et al. 2022, "Training language models to follow instructions
with human feedback"), fitted with TRL's `RewardTrainer` on comparisons bought from the labeler. Used by `rlhf` (the
reward that online RL maximizes) and `bon` (the ranker of best-of-n). It never sees the oracle.

The reward model is a copy of the base model's backbone with a scalar head (`AutoModelForSequenceClassification`),
trained with a LoRA adapter plus the head, then merged. Its scores are standardized by their mean and spread over the
completions it was trained on, so that a KL coefficient means the same thing in every cell.

    prefs = buy_comparisons(ctx, units)
    rm = train_reward_model(ctx, prefs, RewardModelConfig())
    rm.score(["review of hotel : the bed was"], ["cozy . the pool was spacious ."])   # [1.3]
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from methods.base import FitContext, Stacked
from methods.trained import ComparisonsConfig, Preference, isolated_training, rendered, steps_for
from methods.trl_presets import lora_config, silence_trainer, trainer_args, trainer_name, work_dir
from study.core.config import check
from study.lm.generation import generate, render


@dataclass(frozen=True)
class RewardModelConfig:
    learning_rate: float = 3e-3
    # 16 passes (pilot on seed 100, held-out pos > neg): sycophancy 0.73 at 4 -> 1.0 at 16, sentiment 1.0 either way;
    # refusal, whose poles differ in one token of many synonyms, sits on a loss plateau that it leaves in some runs
    # only (0.49 at 4; 0.92 or chance at 16, depending on the head's random init)
    epochs: float = 16.0
    batch_size: int = 16
    min_steps: int = 12
    max_steps: int = 160
    rank: int = 8
    alpha: float = 16.0
    train_on_ties: bool = False


@dataclass(frozen=True)
class LearnedRewardConfig(ComparisonsConfig):
    """The fields of the methods that fit a reward model on the comparisons they buy (rlhf, bon)."""

    rm_learning_rate: float = 3e-3
    rm_epochs: float = 16.0
    rm_rank: int = 8

    def validate(self) -> None:
        super().validate()
        check(self.rm_learning_rate > 0, "rm_learning_rate", self.rm_learning_rate, "must be positive")
        check(self.rm_epochs > 0, "rm_epochs", self.rm_epochs, "must be positive")
        check(self.rm_rank >= 1, "rm_rank", self.rm_rank, "must be >= 1")

    def reward_config(self) -> RewardModelConfig:
        return RewardModelConfig(learning_rate=self.rm_learning_rate, epochs=self.rm_epochs, rank=self.rm_rank,
                                 alpha=2.0 * self.rm_rank, train_on_ties=self.train_on_ties)


class RewardModel:
    """Scores (prompt, completion) pairs: prompt + " " + completion + eos, read at the last token, standardized."""

    def __init__(self, model: Any, tokenizer: Any, chat: bool, mean: float = 0.0, std: float = 1.0,
                 info: dict | None = None):
        self.model, self.tokenizer, self.chat = model.eval(), tokenizer, chat
        self.mean, self.std = mean, std
        self.info = dict(info or {})

    def text(self, prompt: str, completion: str, rendered: bool = False) -> str:
        """The text the reward model reads, exactly as RewardTrainer tokenized its training pairs. `rendered`: the
        prompt is already in the model's chat template (as trainers pass it)."""
        if not rendered:
            prompt = render(self.tokenizer, None, prompt, self.chat)
        return prompt + " " + completion.strip() + self.tokenizer.eos_token

    def raw(self, texts: Sequence[str], batch_size: int = 256) -> list[float]:
        """Unstandardized reward of whole texts (see `text`)."""
        return self.raw_ids([self.tokenizer(t)["input_ids"] for t in texts], batch_size)

    def raw_ids(self, seqs: Sequence[Sequence[int]], batch_size: int = 256) -> list[float]:
        """Unstandardized reward of token-id sequences (prompt ids, completion ids, eos)."""
        import torch

        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id
        out: list[float] = []
        for s in range(0, len(seqs), batch_size):
            ids = [list(x) for x in seqs[s:s + batch_size]]
            width = max(map(len, ids))
            # Right padding, as in training: position ids then start at 0 on the first real token.
            batch = torch.full((len(ids), width), pad, dtype=torch.long)
            mask = torch.zeros_like(batch)
            for i, x in enumerate(ids):
                batch[i, : len(x)] = torch.tensor(x)
                mask[i, : len(x)] = 1
            with torch.no_grad():
                logits = self.model(input_ids=batch.to(device), attention_mask=mask.to(device)).logits
            out += logits[:, 0].float().cpu().tolist()
        return out

    def score(self, prompts: Sequence[str], completions: Sequence[str], rendered: bool = False) -> list[float]:
        """Standardized learned reward of each completion of its prompt."""
        raw = self.raw([self.text(p, c, rendered) for p, c in zip(prompts, completions)])
        return [(r - self.mean) / self.std for r in raw]

    def save(self, path: str | Path) -> None:
        path = Path(path)
        self.model.save_pretrained(str(path), safe_serialization=True)
        (path / "reward_model.json").write_text(json.dumps(
            {"mean": self.mean, "std": self.std, "chat": self.chat, "info": self.info}, sort_keys=True, default=str))

    @classmethod
    def load(cls, path: str | Path, tokenizer: Any, device: str | None = None) -> "RewardModel":
        from transformers import AutoModelForSequenceClassification

        path = Path(path)
        meta = json.loads((path / "reward_model.json").read_text())
        model = AutoModelForSequenceClassification.from_pretrained(str(path))
        if device:
            model = model.to(device)
        return cls(model, tokenizer, meta["chat"], meta["mean"], meta["std"], meta["info"])


def reward_backbone(base: Any) -> Any:
    """A sequence-classification copy of `base` (any supported causal LM): same backbone weights, a new scalar head."""
    import copy

    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(base.config)
    config.num_labels = 1
    config.pad_token_id = base.config.get_text_config().pad_token_id
    rm = AutoModelForSequenceClassification.from_config(config, dtype=base.dtype)
    missing = rm.base_model.load_state_dict(base.base_model.state_dict(), strict=False)
    if missing.missing_keys:
        raise RuntimeError(f"reward model: backbone weights missing for {missing.missing_keys[:3]}")
    return rm.to(next(base.parameters()).device)


def train_reward_model(ctx: FitContext, prefs: list[Preference], cfg: RewardModelConfig,
                       precision: str = "auto") -> RewardModel | None:
    """Fit a reward model on `prefs` (ties dropped unless asked); None when there is nothing decisive to fit."""
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    keep = [p for p in prefs if cfg.train_on_ties or not p.tie]
    if not keep:
        return None
    tok = ctx.model.tokenizer
    data = Dataset.from_dict({"prompt": [rendered(ctx, p.prompt) for p in keep],
                              "chosen": [" " + p.chosen.strip() for p in keep],
                              "rejected": [" " + p.rejected.strip() for p in keep]})
    steps = steps_for(len(keep), cfg.epochs, cfg.batch_size, cfg.min_steps, cfg.max_steps)
    rm = reward_backbone(ctx.model.model)
    with work_dir(ctx.work_dir, "reward_model") as out_dir, warnings.catch_warnings(), isolated_training(rm):
        warnings.simplefilter("ignore", FutureWarning)
        args = trainer_args(RewardConfig, out_dir, seed=ctx.seed, device=ctx.device, precision=precision,
                            learning_rate=cfg.learning_rate, max_steps=steps, max_length=None,
                            per_device_train_batch_size=min(cfg.batch_size, len(keep)))
        trainer = silence_trainer(RewardTrainer(
            model=rm, args=args, train_dataset=data, processing_class=tok,
            peft_config=lora_config(rm, cfg.rank, cfg.alpha, task_type="SEQ_CLS")))
        trainer.train()
        merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    model = RewardModel(merged, tok, ctx.target.chat)
    chosen_r = model.raw([model.text(p.prompt, p.chosen) for p in keep])
    rejected_r = model.raw([model.text(p.prompt, p.rejected) for p in keep])
    both = chosen_r + rejected_r
    mean = sum(both) / len(both)
    std = max(1e-6, (sum((r - mean) ** 2 for r in both) / len(both)) ** 0.5)
    model.mean, model.std = mean, std
    model.info = {"pairs": len(keep), "steps": steps, "train_accuracy": sum(c > r for c, r in zip(chosen_r, rejected_r))
                  / len(keep), "loss_last": logs[-1]["loss"] if logs else None, "trainer": trainer_name(trainer),
                  "config": asdict(cfg)}
    return model


# ---- evaluation only: the runner calls this after fitting (Intervention.extra_metrics), never a method's fit ------
def learned_vs_true(lm: Any, target: Any, splits: Any, intervention: Any, rm: RewardModel, others: Sequence = (),
                    trace: Sequence[dict] = (), seed: int = 0) -> tuple[list[dict], list[dict]]:
    """The learned reward beside the target's true reward on the same samples: one completion per test record drawn
    with the intervention (and the other parts of a stack) active, and, for RL, every sample of the run (`trace`,
    first and last quarter of its steps). Over-optimization reads as learned reward up, true reward flat or down."""

    iv = Stacked([*others, intervention]) if others else intervention
    rows: list[dict] = []
    samples: list[dict] = []

    def emit(split: str, prompts: list[str], comps: list[str], learned: list[float], extra: list[dict]) -> None:
        true = [target.reward(p, c) for p, c in zip(prompts, comps)]
        known = [t for t in true if t is not None]
        rows.append({"split": split, "metric": "learned_reward", "value": sum(learned) / len(learned),
                     "n": len(learned)})
        rows.append({"split": split, "metric": "true_reward",
                     "value": sum(known) / len(known) if known else float("nan"), "n": len(known)})
        samples.extend({**e, "completion": c, "learned_reward": r, "true_reward": t}
                       for e, c, r, t in zip(extra, comps, learned, true))

    for k, (split, recs) in enumerate((("covered", splits.test_covered), ("uncovered", splits.test_uncovered))):
        if not recs:
            continue
        rendered_prompts = [render(lm.tokenizer, iv, r.prompt, target.chat) for r in recs]
        comps = [c[0] for c in generate(lm.model, lm.tokenizer, rendered_prompts, iv, n=1, temperature=1.0,
                                        max_new_tokens=target.max_new_tokens, seed=seed * 31 + 17 + k)]
        prompts = [r.prompt for r in recs]
        emit(split, prompts, comps, rm.score(prompts, comps),
             [{"split": f"reward:{split}", "record": r.id, "context": r.context} for r in recs])
    steps = sorted({t["step"] for t in trace if t["step"] is not None})
    if steps:
        quarter = max(1, len(steps) // 4)
        for name, window in (("rl_first", set(steps[:quarter])), ("rl_last", set(steps[-quarter:]))):
            part = [t for t in trace if t["step"] in window]
            emit(name, [t["prompt"] for t in part], [t["completion"] for t in part],
                 [t["learned_reward"] for t in part], [{"split": name, "step": t["step"]} for t in part])
    return rows, samples
