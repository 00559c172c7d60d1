"""The method plugin API: one Protocol, `fit(context) -> Intervention`, and the context every method receives.

A method turns labels bought from the labeler into an Intervention: an adapter, hooks or a prompt prefix that applies
itself to the model inside a `with` block and removes itself on exit. Each method has its own frozen config dataclass
(`Config`) beside it. The runner never looks inside a method; it calls `fit`, evaluates with the intervention active,
and stores `intervention.chosen` (the values the method tuned) in the cell record.

    class MyMethod:
        name = "my_method"
        Config = MyConfig                     # a frozen dataclass; fields settable from the study config
        def __init__(self, config: MyConfig): ...
        def fit(self, ctx: FitContext) -> Intervention: ...

Two optional hooks the runner looks for (see docs/adding_a_method.md):
    uses_labels = False                       # on the method class, or a function of its Config: the grid then
                                              # runs it at budget 0 only
    def extra_metrics(self, lm, target, splits, others=()) -> tuple[list[dict], list[dict]]:
        ...                                   # on the Intervention: more tidy rows {split, metric, value, n} and
                                              # per-sample JSONL records; `others`: the other parts of a stack
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from study.feedback.judging import judged_score
from study.feedback.labeler import Labeler
from study.feedback.splits import BehaviorTarget, Record
from study.lm.intervention import Intervention, Stacked
from study.lm.models import LoadedModel

__all__ = ["FitContext", "Intervention", "Method", "Stacked"]


@dataclass
class FitContext:
    """What a method may use. Ground truth is reachable only through `labeler`, which charges every label."""

    model: LoadedModel  # .model, .tokenizer, .blocks, .hidden_size, .num_layers
    target: BehaviorTarget
    labeler: Labeler  # the only path to ground truth; `labeler.account` is the account every label is charged to
    pool: list[Record]  # feedback-pool records (prompts of the covered contexts); labels must be bought
    select: list[Record]  # select-split records for tuning; judging them costs labels too
    budget: int  # cost units this method may spend, fitting and selection together (in a stack: its share)
    seed: int
    config: Any  # the method's own Config instance
    device: str = "cpu"
    work_dir: Path | None = None  # scratch space for trainers (outputs only under the user's results dir)
    log: Callable[[str], None] = field(default=lambda msg: None)
    # In a stack (e.g. "dpo+steering"): the parts fitted before this one. They are active while `fit` runs (hooks,
    # adapters); a method that renders prompts itself should pass them through `prior.prompt(text)`.
    prior: Intervention | None = None

    def select_score(self, intervention: Intervention | None = None, records: Sequence[Record] | None = None,
                     **kw: Any) -> dict[str, float | int]:
        """Score `intervention` on select prompts (or `records`) by judgments bought from the labeler, each charged
        to the budget: {"behavior": mean rating of the readable completions, "fluency": share readable, "labels":
        units charged, "n": ratings}. Keywords (n_per_prompt, max_labels, seed, max_new_tokens, ...) pass through
        to `study.feedback.judging.judged_score`; the seed defaults to the cell's. Raises BudgetExhausted, charging
        nothing, when the budget cannot pay for every judgment. In a stack the earlier parts apply too."""
        if self.prior is not None:
            intervention = self.prior if intervention is None else Stacked([self.prior, intervention])
        kw.setdefault("seed", self.seed)
        return judged_score(self.model, None, self.target, self.labeler,
                            self.select if records is None else records, intervention, **kw)


@runtime_checkable
class Method(Protocol):
    name: str
    Config: type

    def fit(self, ctx: FitContext) -> Intervention: ...
