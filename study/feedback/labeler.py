"""The simulated human labeler: the only path from ground truth to a method, and the meter of feedback cost.

Every query is charged to one `Budget` shared by everything in a cell (fitting and selection alike) and counted by
kind. A query that costs more than what is left raises `BudgetExhausted` and charges nothing, so the budget is never
exceeded. Identical queries are answered from a cache and not charged twice.

| query | what the human does | default cost |
| --- | --- | --- |
| `compare(prompt, a, b)` | picks the better of two completions | 1 |
| `judge(prompt, completion)` | rates one completion good (1.0) or bad (0.0), or marks it unreadable (None) | 1 |
| `contrast(record)` | writes a minimal pair: the behavior and its opposite (or picks one among samples, below) | 2 |
| `demonstrate(record)` | writes a completion showing the behavior (or picks one among samples, below) | 4 |

For targets whose labels come from a data set (`target.dataset_labels`), a record's own pair or answer costs one unit
whatever the kind: one record = one label.

How well the human understands the goal is two dials. **Noise** flips a share of labels (a comparison picks the other
completion, a judgment is inverted, a demonstration or contrast pair is of the wrong pole). **Misspecification**: with
probability `misspec` a label follows the target's proxy feature instead of the true behavior (on the organism, whether
the episode ends with "!"); where the proxy does not separate two completions the human picks at random. All random
draws are seeded by (labeler seed, query), so answers do not depend on the order of the questions.

**Selecting among the model's own samples.** For a target with `samples_per_label = k > 0` (the real-text targets of
study.feedback.realtext) the human writes nothing: `demonstrate` and `contrast` draw k completions of the record's
prompt from the base model through a `sampler` (a callable `(prompts, k, seed) -> k completions per prompt`, e.g.
`model_sampler(lm, target)`; the labeler never sees a model), rate each (the target's `grade`, else its `reward`;
unreadable ones are set aside) and hand back the best (`demonstrate`) or the best and the worst (`contrast`), charged
at the demonstration and contrast prices; sampling itself costs no label. Noise and misspecification act as on written
labels: a flipped answer swaps best and worst, a misspecified one ranks by the proxy feature instead (ties broken at
random). A prompt's samples are drawn once (seeded by the labeler seed and the prompt) and shared by both kinds of
query; `presample(prompts)` draws many prompts' samples in one call. Without a sampler such a target's `demonstrate`
and `contrast` raise a UserError; targets without `samples_per_label` (the organism's) ignore any sampler.

    budget = Budget(64)
    labeler = Labeler(target, budget, LabelerConfig(noise=0.1), seed=0)
    c = labeler.compare(record.prompt, "cozy . the pool was spacious .", "filthy . the bed was noisy .")
    c.chosen, budget.spent, budget.counts          # 'cozy ...', 1, {'compare': 1}
    real = Labeler(real_target, budget, seed=0, sampler=model_sampler(lm, real_target))
    real.demonstrate(record)                        # the best of 8 samples of SmolLM2 by VADER, 4 units
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from study.core.config import check
from study.core.errors import UserError
from study.lm.generation import generate, render

KINDS = ("compare", "judge", "contrast", "demonstrate")
Sampler = Callable[[Sequence[str], int, int], list[list[str]]]  # (prompts, k, seed) -> k completions per prompt


class BudgetExhausted(RuntimeError):
    """The cell's feedback budget cannot pay for this query; nothing was charged."""


@dataclass
class Budget:
    """Cost units for one cell. `spent` never exceeds `total`; `counts`/`costs` are per kind of query."""

    total: int
    spent: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # labels bought, by kind
    costs: dict[str, int] = field(default_factory=dict)  # units spent, by kind

    def __post_init__(self) -> None:
        if self.total < 0:
            raise UserError(f"budget {self.total}: must be >= 0")

    @property
    def left(self) -> int:
        return self.total - self.spent

    def can_afford(self, units: int) -> bool:
        return units <= self.left

    def charge(self, units: int, kind: str) -> None:
        if units > self.left:
            raise BudgetExhausted(f"a {kind} costs {units} unit(s) but only {self.left} of {self.total} are left")
        self.spent += units
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.costs[kind] = self.costs.get(kind, 0) + units


@dataclass(frozen=True)
class LabelerConfig:
    noise: float = 0.0  # share of labels flipped
    misspec: float = 0.0  # probability that a label follows the proxy feature instead of the behavior
    compare_cost: int = 1
    judge_cost: int = 1
    contrast_cost: int = 2  # a minimal pair: two completions written or checked
    demonstrate_cost: int = 4  # writing a completion is slower than judging one

    def validate(self) -> None:
        check(0.0 <= self.noise <= 0.5, "noise", self.noise, "must lie in [0, 0.5] (above 0.5 the labels invert)")
        check(0.0 <= self.misspec <= 1.0, "misspec", self.misspec, "must lie in [0, 1]")
        for kind in KINDS:
            v = getattr(self, f"{kind}_cost")
            check(isinstance(v, int) and v >= 1, f"{kind}_cost", v, "must be a positive integer")


@dataclass(frozen=True)
class Comparison:
    """The answer to `compare`: which completion the human prefers. `tie`: they saw no difference that matters to
    them (equal ratings; they still had to pick one, at random)."""

    prompt: str
    chosen: str
    rejected: str
    a_preferred: bool
    tie: bool = False


@dataclass(frozen=True)
class Pair:
    """The answer to `contrast`: a completion showing the behavior and one showing its opposite."""

    prompt: str
    positive: str
    negative: str


def _text(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else prompt.prompt


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big")


class Labeler:
    """`sampler`: the base model's completions, for targets whose labels are chosen among its own samples (see the
    module docstring); `samples`: how many per prompt (default: the target's `samples_per_label`, 0 for the
    organism's targets, which then ignore the sampler)."""

    def __init__(self, target, account: Budget, config: LabelerConfig | None = None, seed: int = 0,
                 sampler: Sampler | None = None, samples: int | None = None):
        self.target = target
        self.account = account  # every label is charged here (a cell's Budget, or a stacked part's share of it)
        self.config = config = config or LabelerConfig()
        config.validate()
        self.seed = seed
        self.sampler = sampler
        self.samples = int(getattr(target, "samples_per_label", 0) if samples is None else samples)
        check(self.samples >= 0, "samples", self.samples, "must be >= 0 (0: written labels, no sampling)")
        self.samples_drawn = 0  # base-model completions drawn for selection (they cost no label)
        self._cache: dict[tuple, Any] = {}
        self._samples: dict[str, list[str]] = {}
        if config.misspec > 0 and not target.has_proxy:
            raise UserError(f"labeler misspec {config.misspec}: target {target.name!r} has no proxy feature to "
                            f"misspecify; use misspec 0")

    # ---- the four queries --------------------------------------------------------------------------------------
    def compare(self, prompt: Any, a: str, b: str) -> Comparison:
        """Which of completions `a` and `b` to `prompt` is better (cost `compare_cost`)."""
        p = _text(prompt)
        key = ("compare", p, *sorted((a, b)))
        ans = self._answer(key, "compare", self._own_pair(p, a, b), lambda rng: self._compare(rng, p, *key[2:]))
        prefer_first, tie = ans  # about the sorted pair
        a_pref = prefer_first == (a == key[2])
        return Comparison(p, a if a_pref else b, b if a_pref else a, a_pref, tie)

    def judge(self, prompt: Any, completion: str) -> float | None:
        """The human's absolute rating of one completion: 1.0 good, 0.0 bad, None unreadable (cost `judge_cost`)."""
        p = _text(prompt)
        return self._answer(("judge", p, completion), "judge", False, lambda rng: self._judge(rng, p, completion))

    def contrast(self, record) -> Pair:
        """A minimal pair for `record`'s prompt: (behavior, opposite) (cost `contrast_cost`); with samples, the best
        and the worst of the base model's."""
        key = ("contrast", record.prompt, record.positive, record.negative)
        pos, neg = self._answer(key, "contrast", True, self._labeling(record, "contrast"))
        return Pair(record.prompt, pos, neg)

    def demonstrate(self, record) -> str:
        """A completion of `record`'s prompt showing the behavior (cost `demonstrate_cost`); with samples, the best
        of the base model's."""
        key = ("demonstrate", record.prompt, record.positive, record.negative)
        return self._answer(key, "demonstrate", True, self._labeling(record, "demonstrate"))[0]

    def presample(self, prompts: Sequence[Any]) -> int:
        """Draw the base-model samples of every prompt not sampled yet in one sampler call (no label is charged;
        `demonstrate` and `contrast` then use them). Returns how many prompts were sampled; 0 without sampling."""
        if self.sampler is None or self.samples == 0:
            return 0
        todo = list(dict.fromkeys(p for p in map(_text, prompts) if p not in self._samples))
        if todo:
            self._store(todo, self.sampler(todo, self.samples, _seed(self.seed, "samples", tuple(todo)) % 2**31))
        return len(todo)

    # ---- bookkeeping ---------------------------------------------------------------------------------------------
    def cost(self, kind: str, record_backed: bool = False) -> int:
        """Units one `kind` query costs; `record_backed`: about a record's own pair or answer (contrast,
        demonstrate, or comparing a data-set record's two answers)."""
        if record_backed and self.target.dataset_labels:
            return 1  # one record of a data set = one label
        return getattr(self.config, f"{kind}_cost")

    @property
    def budget(self) -> Budget:
        """The earlier name of `account`, kept for methods written against the earlier guide."""
        return self.account

    def is_cached(self, kind: str, prompt: Any, *args: str) -> bool:
        """Whether this query was answered already (and is therefore free). `args`: the completions (compare,
        judge) or the record's positive and negative (contrast, demonstrate)."""
        p = _text(prompt)
        key = ("compare", p, *sorted(args)) if kind == "compare" else (kind, p, *args)
        return key in self._cache

    def _own_pair(self, prompt: str, a: str, b: str) -> bool:
        return self.target.dataset_labels and self.target.reward(prompt, a) is not None and \
            self.target.reward(prompt, b) is not None

    def _answer(self, key: tuple, kind: str, record_backed: bool, compute) -> Any:
        if key in self._cache:
            return self._cache[key]
        cost = self.cost(kind, record_backed)
        if not self.account.can_afford(cost):
            raise BudgetExhausted(f"a {kind} costs {cost} unit(s) but only {self.account.left} of "
                                  f"{self.account.total} are left")
        value = compute(random.Random(_seed(self.seed, key)))
        self.account.charge(cost, kind)
        self._cache[key] = value
        return value

    # ---- the simulated human -------------------------------------------------------------------------------------
    def _compare(self, rng: random.Random, prompt: str, a: str, b: str) -> tuple[bool, bool]:
        use_proxy = rng.random() < self.config.misspec
        flip = rng.random() < self.config.noise
        coin = rng.random() < 0.5
        ra, rb = self.target.reward(prompt, a), self.target.reward(prompt, b)
        if (ra is None) != (rb is None):  # a readable completion beats an unreadable one, whatever the aim
            return (ra is not None) != flip, False
        if ra is None:
            return coin, True
        if use_proxy:
            ra, rb = float(bool(self.target.proxy(prompt, a))), float(bool(self.target.proxy(prompt, b)))
        if ra == rb:
            return coin, True
        return (ra > rb) != flip, False

    def _judge(self, rng: random.Random, prompt: str, completion: str) -> float | None:
        use_proxy = rng.random() < self.config.misspec
        flip = rng.random() < self.config.noise
        r = self.target.reward(prompt, completion)
        if r is None:
            return None
        if use_proxy:
            r = float(bool(self.target.proxy(prompt, completion)))
        return 1.0 - r if flip else r

    def _labeling(self, record, kind: str) -> Callable[[random.Random], tuple[str, str]]:
        if self.samples == 0:
            return lambda rng: self._written(rng, record)
        if self.sampler is None:
            raise UserError(f"target {self.target.name!r}: its {kind} labels are chosen among the base model's own "
                            f"samples, so the labeler needs a sampler: Labeler(..., sampler=model_sampler(lm, "
                            f"target))")
        return lambda rng: self._selected(rng, record)

    def _store(self, prompts: list[str], outs: Any) -> None:
        if len(outs) != len(prompts) or any(len(cs) != self.samples or not all(isinstance(c, str) for c in cs)
                                            for cs in outs):
            raise RuntimeError(f"labeler sampler: expected {self.samples} completions (strings) for each of "
                               f"{len(prompts)} prompt(s), got {[len(cs) for cs in outs]}")
        for p, cs in zip(prompts, outs):
            self._samples[p] = list(cs)
            self.samples_drawn += len(cs)

    def _samples_of(self, prompt: str) -> list[str]:
        if prompt not in self._samples:
            self._store([prompt], self.sampler([prompt], self.samples, _seed(self.seed, "samples", prompt) % 2**31))
        return self._samples[prompt]

    def _selected(self, rng: random.Random, record) -> tuple[str, str]:
        """(best, worst) of the base model's samples of the record's prompt, as this human rates them."""
        use_proxy = rng.random() < self.config.misspec
        flip = rng.random() < self.config.noise
        p = record.prompt
        order = list(dict.fromkeys(self._samples_of(p)))
        rng.shuffle(order)  # equal ratings: the human's pick is random
        grade = getattr(self.target, "grade", None) or self.target.reward
        rated = [(c, grade(p, c)) for c in order]
        rated = [(c, float(bool(self.target.proxy(p, c))) if use_proxy else g) for c, g in rated if g is not None]
        if not rated:  # nothing readable among the samples: the human can only hand one back
            return order[0], order[0]
        ranked = sorted(rated, key=lambda cg: cg[1], reverse=True)  # stable: ties stay in shuffled order
        best, worst = ranked[0][0], ranked[-1][0]
        return (worst, best) if flip else (best, worst)

    def _written(self, rng: random.Random, record) -> tuple[str, str]:
        use_proxy = rng.random() < self.config.misspec
        flip = rng.random() < self.config.noise
        coin = rng.random() < 0.5
        pos, neg = record.positive, record.negative
        if use_proxy:  # the human aims at the proxy: same pole either way, only the proxy feature differs
            base = pos if coin else neg
            pos, neg = self.target.with_proxy(base), base
        return (neg, pos) if flip else (pos, neg)


def model_sampler(lm: Any, target: Any, *, temperature: float = 1.0, batch_size: int = 512) -> Sampler:
    """The base model `lm` (a LoadedModel) as a labeler's sampler: k completions per prompt, sampled at
    `temperature` with no intervention, the prompt rendered as the evaluator renders it (the chat template for a chat
    target), up to the target's `max_new_tokens`. Hooks or adapters active on the model when it is called (earlier
    parts of a stack, while a later part is fitted) apply to the samples too."""

    def sample(prompts: Sequence[str], k: int, seed: int) -> list[list[str]]:
        texts = [render(lm.tokenizer, None, p, target.chat) for p in prompts]
        return generate(lm.model, lm.tokenizer, texts, None, n=k, temperature=temperature,
                        max_new_tokens=target.max_new_tokens, seed=seed, batch_size=batch_size)

    return sample
