"""The simulated human labeler: the only path from ground truth to a method, and the meter of feedback cost.

Every query is charged to one `Budget` shared by everything in a cell (fitting and selection alike) and counted by
kind. A query that costs more than what is left raises `BudgetExhausted` and charges nothing, so the budget is never
exceeded. Identical queries are answered from a cache and not charged twice.

| query | what the human does | default cost |
| --- | --- | --- |
| `compare(prompt, a, b)` | picks the better of two completions | 1 |
| `judge(prompt, completion)` | rates one completion good (1.0) or bad (0.0), or marks it unreadable (None) | 1 |
| `contrast(record)` | writes a minimal pair: the behavior and its opposite | 2 |
| `demonstrate(record)` | writes a completion showing the behavior | 4 |

For targets whose labels come from a data set (`target.dataset_labels`), a record's own pair or answer costs one unit
whatever the kind: one record = one label.

How well the human understands the goal is two dials. **Noise** flips a share of labels (a comparison picks the other
completion, a judgment is inverted, a demonstration or contrast pair is of the wrong pole). **Misspecification**: with
probability `misspec` a label follows the target's proxy feature instead of the true behavior (on the organism, whether
the episode ends with "!"); where the proxy does not separate two completions the human picks at random. All random
draws are seeded by (labeler seed, query), so answers do not depend on the order of the questions.

    budget = Budget(64)
    labeler = Labeler(target, budget, LabelerConfig(noise=0.1), seed=0)
    c = labeler.compare(record.prompt, "cozy . the pool was spacious .", "filthy . the bed was noisy .")
    c.chosen, budget.spent, budget.counts          # 'cozy ...', 1, {'compare': 1}
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

from study.core.config import check
from study.core.errors import UserError

KINDS = ("compare", "judge", "contrast", "demonstrate")


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


class Labeler:
    def __init__(self, target, account: Budget, config: LabelerConfig | None = None, seed: int = 0):
        self.target = target
        self.account = account  # every label is charged here (a cell's Budget, or a stacked part's share of it)
        self.config = config = config or LabelerConfig()
        config.validate()
        self.seed = seed
        self._cache: dict[tuple, Any] = {}
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
        """A minimal pair for `record`'s prompt: (behavior, opposite) (cost `contrast_cost`)."""
        key = ("contrast", record.prompt, record.positive, record.negative)
        pos, neg = self._answer(key, "contrast", True, lambda rng: self._written(rng, record, pair=True))
        return Pair(record.prompt, pos, neg)

    def demonstrate(self, record) -> str:
        """A completion of `record`'s prompt showing the behavior (cost `demonstrate_cost`)."""
        key = ("demonstrate", record.prompt, record.positive, record.negative)
        return self._answer(key, "demonstrate", True, lambda rng: self._written(rng, record, pair=False)[0])

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
        digest = hashlib.blake2b(repr((self.seed, key)).encode(), digest_size=8).digest()
        value = compute(random.Random(int.from_bytes(digest, "big")))
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

    def _written(self, rng: random.Random, record, pair: bool) -> tuple[str, str]:
        use_proxy = rng.random() < self.config.misspec
        flip = rng.random() < self.config.noise
        coin = rng.random() < 0.5
        pos, neg = record.positive, record.negative
        if use_proxy:  # the human aims at the proxy: same pole either way, only the proxy feature differs
            base = pos if coin else neg
            pos, neg = self.target.with_proxy(base), base
        return (neg, pos) if flip else (pos, neg)
