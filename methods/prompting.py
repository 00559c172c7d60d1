"""Prompting: the base model behind an instruction prefix and, where the budget pays for them, few-shot demonstrations.

The zero-training baseline of the study, in-context learning as in Brown et al. 2020 ("Language Models are Few-Shot
Learners"): no weight changes and no hooks, only a rewritten prompt. The instruction is the target's own text (on the
organism, the world's instruction prefix such as "system : be positive ."), which costs no labels. Demonstrations are
bought from the labeler (`labeler.demonstrate`, a written completion, the most expensive kind of label), on prompts
of the feedback pool, so they cover only the contexts the feedback covers.

    method = Prompting(PromptingConfig(max_shots=1))
    intervention = method.fit(ctx)                          # buys one demonstration if ctx.budget pays for it
    intervention.prompt("review of hotel : the bed was")
    # 'system : be positive . review of cafe : the tea was hot . the cake was sweet . review of hotel : the bed was'
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from methods.base import FitContext, Intervention
from study.core.errors import UserError
from study.core.config import check


@dataclass(frozen=True)
class PromptingConfig:
    instruction: bool = True  # prefix the target's instruction (costs no labels)
    text: str = ""  # your own instruction instead of the target's ("": the target's)
    max_shots: int = 1  # demonstrations to buy, as many as the budget pays for up to this many (0: none)
    separator: str = " "  # between prefix parts and the prompt (the organism's words are space-separated)

    def validate(self) -> None:
        check(self.max_shots >= 0, "max_shots", self.max_shots, "must be >= 0")
        check(self.instruction or self.max_shots > 0, "instruction", self.instruction,
              "with max_shots 0 there would be no prompt at all; use method 'none' for the base model")


class PromptIntervention(Intervention):
    """A fixed prefix in front of every prompt."""

    def __init__(self, prefix: str = "", separator: str = " "):
        super().__init__()
        self.prefix, self.separator = prefix, separator

    def prompt(self, text: str) -> str:
        return f"{self.prefix}{self.separator}{text}" if self.prefix else text

    def save(self, path: str | Path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        blob = {"type": "prompt", "prefix": self.prefix, "separator": self.separator, "chosen": self.chosen}
        (Path(path) / "intervention.json").write_text(json.dumps(blob, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path, model: Any = None) -> "PromptIntervention":
        blob = json.loads((Path(path) / "intervention.json").read_text())
        obj = cls(blob["prefix"], blob["separator"])
        obj.chosen = blob["chosen"]
        return obj


def instruction_text(target: Any) -> str | None:
    """The target's instruction: its `instruction` attribute (text or a method returning it), or for an organism
    target the world's instruction for the desired pole."""
    attr = getattr(target, "instruction", None)
    if callable(attr):
        attr = attr()
    if isinstance(attr, str) and attr.strip():
        return attr
    world, behavior = getattr(target, "world", None), getattr(target, "behavior", None)
    if world is not None and behavior is not None and hasattr(world, "instruction"):
        return " ".join(world.instruction(behavior))
    return None


def _context_limit(lm: Any) -> int | None:
    config = getattr(getattr(lm, "model", None), "config", None)
    return getattr(config, "max_position_embeddings", None) if config is not None else None


class Prompting:
    name = "prompting"
    Config = PromptingConfig

    def __init__(self, config: PromptingConfig | None = None):
        self.config = config or PromptingConfig()

    @staticmethod
    def uses_labels(config: PromptingConfig) -> bool:
        return config.max_shots > 0

    def fit(self, ctx: FitContext) -> Intervention:
        cfg = self.config
        parts: list[str] = []
        if cfg.instruction:
            text = cfg.text or instruction_text(ctx.target)
            if not text:
                raise UserError(f"prompting: target {ctx.target.name!r} has no instruction text; set "
                                f"method_config.prompting.text, or instruction: false for few-shot only")
            parts.append(text)
        demos = self._demonstrations(ctx, parts) if cfg.max_shots else []
        intervention = PromptIntervention(cfg.separator.join(parts + demos), cfg.separator)
        intervention.chosen = {"instruction": bool(cfg.instruction), "shots": len(demos)}
        return intervention

    def _demonstrations(self, ctx: FitContext, parts: list[str]) -> list[str]:
        """Buy up to max_shots demonstrations on distinct pool prompts, keeping the whole prompt inside the model's
        context (the longest pool prompt and the target's completion length stand in for the test prompts)."""
        cfg, labeler = self.config, ctx.labeler
        records = list(dict((r.prompt, r) for r in ctx.pool).values())  # one record per distinct prompt
        random.Random(ctx.seed).shuffle(records)
        tokenizer = getattr(ctx.model, "tokenizer", None)
        limit = _context_limit(ctx.model)

        def length(text: str) -> int:
            return len(tokenizer(text)["input_ids"]) if tokenizer is not None else len(text.split())

        longest = max((length(r.prompt) for r in records), default=0) + ctx.target.max_new_tokens
        used = length(cfg.separator.join(parts)) if parts else 0
        demos: list[str] = []
        for record in records:
            if len(demos) == cfg.max_shots:
                break
            if not labeler.account.can_afford(labeler.cost("demonstrate", record_backed=True)):
                break
            size = length(f"{record.prompt} {max(record.positive, record.negative, key=len)}")
            if limit is not None and used + size + longest > limit:
                break
            demos.append(f"{record.prompt} {labeler.demonstrate(record)}".strip())
            used += size
        return demos
