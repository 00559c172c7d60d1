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

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, runtime_checkable


@dataclass
class FitContext:
    """What a method may use. Ground truth is reachable only through `labeler`, which charges every label."""

    model: Any  # study.models.LoadedModel: .model, .tokenizer, .blocks, .hidden_size, .num_layers
    target: Any  # study.targets.BehaviorTarget
    labeler: Any  # study.labeler.Labeler
    pool: list  # feedback-pool records (prompts of the covered contexts); labels must be bought
    select: list  # select-split records for tuning; judging them costs labels too
    budget: int  # total cost units for this cell, fitting and selection together
    seed: int
    config: Any  # the method's own Config instance
    device: str = "cpu"
    # Score an intervention on select prompts by judgments bought from the labeler: the runner passes
    # `select_score(intervention, records=None, **kw) -> {"behavior", "fluency", "labels", "n"}` (study.evaluate's
    # select_score bound to this cell's model, target, labeler and seed; `records` default to `select`; keyword
    # arguments such as n_per_prompt / max_labels pass through). Inside a stack it scores the earlier parts plus this one.
    select_score: Callable[..., dict] | None = None
    work_dir: Path | None = None  # scratch space for trainers (outputs only under the user's results dir)
    log: Callable[[str], None] = field(default=lambda msg: None)
    # In a stack (e.g. "dpo+steering"): the parts fitted before this one. They are active while `fit` runs (hooks,
    # adapters); a method that renders prompts itself should pass them through `prior.prompt(text)`.
    prior: Intervention | None = None


class Intervention:
    """Base class: no change to the model. Subclasses override `prompt` and/or `_activate`.

    `with intervention:` applies it at every position; `with intervention.active(prompt_width=w):` lets hook-based
    interventions act only from the last prompt position on (left-padded batches share one prompt width).
    """

    chosen: dict[str, Any]

    def __init__(self) -> None:
        self.chosen = {}
        self._stack: list = []

    def prompt(self, text: str) -> str:
        """The prompt as the intervened model sees it (prompting methods rewrite it)."""
        return text

    @contextmanager
    def _activate(self, prompt_width: int | None) -> Iterator[None]:
        yield

    @contextmanager
    def active(self, prompt_width: int | None = None) -> Iterator["Intervention"]:
        with self._activate(prompt_width):
            yield self

    def __enter__(self) -> "Intervention":
        cm = self.active()
        cm.__enter__()
        self._stack.append(cm)
        return self

    def __exit__(self, *exc) -> bool | None:
        return self._stack.pop().__exit__(*exc)

    def save(self, path: str | Path) -> None:
        """Write what is needed to rebuild the intervention (safetensors / save_pretrained / JSON; never pickle)."""
        import json

        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "intervention.json").write_text(json.dumps({"type": type(self).__name__,
                                                                  "chosen": self.chosen}, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path, model: Any) -> "Intervention":
        import json

        obj = cls()
        obj.chosen = json.loads((Path(path) / "intervention.json").read_text())["chosen"]
        return obj


class Stacked(Intervention):
    """Several interventions applied together, innermost first (e.g. a DPO adapter, then a steering vector)."""

    def __init__(self, parts: list[Intervention]):
        super().__init__()
        self.parts = parts
        for i, p in enumerate(parts):
            self.chosen.update({f"{i}.{k}": v for k, v in p.chosen.items()})

    def prompt(self, text: str) -> str:
        for p in self.parts:
            text = p.prompt(text)
        return text

    @contextmanager
    def _activate(self, prompt_width: int | None) -> Iterator[None]:
        from contextlib import ExitStack

        with ExitStack() as stack:
            for p in self.parts:
                stack.enter_context(p.active(prompt_width))
            yield


@runtime_checkable
class Method(Protocol):
    name: str
    Config: type

    def fit(self, ctx: FitContext) -> Intervention: ...
