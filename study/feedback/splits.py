"""Records and splits, the shape every behavior target hands out (organism targets and external data sets alike).

A target's records `{id, context, prompt, positive, negative}` (+ `request` for refusal) come in five splits:
`pool` (feedback), `select` (tuning), `test_covered`, `test_uncovered` and `neutral` (KL and perplexity); see
`study.feedback.targets` for how the organism deals them and `study.feedback.external` for data files.

    sizes = SplitSizes(pool=64, select=16, test=40)
    covered_contexts(order, anticipation=0.5)     # the first half of the coverage order
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from study.core.config import check
from study.core.errors import UserError

SPLITS = ("pool", "select", "test_covered", "test_uncovered", "neutral")
# Each covered context's distinct prompts are dealt in this cycle: 25% test, 50% pool, 25% select.
DEAL = ("test_covered", "pool", "select", "pool")


@dataclass(frozen=True)
class Record:
    """One prompt with its desired (`positive`) and undesired (`negative`) completion. Readable as a mapping too
    (`record["prompt"]`), matching the `{id, context, prompt, positive, negative}` notation of DESIGN.md."""

    id: str
    context: str
    prompt: str
    positive: str
    negative: str
    request: str | None = None  # refusal: "forbidden" or "benign"

    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class SplitSizes:
    """Records per split. Test sizes are per test split; refusal adds benign requests on top (see RefusalOptions)."""

    pool: int = 1024
    select: int = 64
    test: int = 200
    neutral: int = 64

    def validate(self) -> None:
        for name in ("pool", "select", "test", "neutral"):
            v = getattr(self, name)
            check(v >= 1, name, v, "must be a positive integer")


@dataclass
class Splits:
    """The records of one target at one anticipation and seed."""

    target: str
    anticipation: float
    seed: int
    sizes: SplitSizes
    covered: tuple[str, ...]  # contexts the feedback covers, in coverage order
    uncovered: tuple[str, ...]
    pool: list[Record] = field(default_factory=list)  # tuples once built (splits are cached and shared)
    select: list[Record] = field(default_factory=list)
    test_covered: list[Record] = field(default_factory=list)
    test_uncovered: list[Record] = field(default_factory=list)
    neutral: list[Record] = field(default_factory=list)

    def get(self, name: str) -> list[Record]:
        if name not in SPLITS:
            raise UserError(f"split {name!r}: unknown; valid splits: {', '.join(SPLITS)}")
        return getattr(self, name)

    @property
    def covered_share(self) -> float:
        """Share of the test distribution's contexts that the feedback covers (the realized anticipation)."""
        return len(self.covered) / (len(self.covered) + len(self.uncovered))


@runtime_checkable
class BehaviorTarget(Protocol):
    """What every target offers. It knows nothing about methods; the labeler and evaluator are its only users."""

    name: str
    version: str
    description: str
    propensity: bool  # records have a two-answer form: the evaluator reports `ab_propensity`
    dataset_labels: bool  # labels come from a data set (one record = one cost unit), not from a simulated human
    max_new_tokens: int  # enough to finish a completion
    chat: bool  # prompts are user turns (wrapped in the model's chat template, if it has one)
    has_proxy: bool  # a proxy feature exists for a misspecified labeler to reward
    scorable: bool  # open-ended completions can be scored (else only `ab_propensity`)

    def splits(self, anticipation: float, seed: int = 0, sizes: SplitSizes = SplitSizes()) -> Splits: ...

    def score(self, prompt: str, completion: str) -> float | None:
        """1.0 if the completion shows the behavior, 0.0 if not, None if unscorable (disfluent). For refusal,
        1.0 means refused, whatever the request."""

    def reward(self, prompt: str, completion: str) -> float | None:
        """How desirable the completion is (the labeler's ground truth): `score`, except that refusing a benign
        request is undesired."""

    def proxy(self, prompt: str, completion: str) -> bool | None:
        """The proxy feature a misspecified labeler rewards, or None where the target has none."""

    def with_proxy(self, completion: str) -> str | None:
        """The completion changed to carry the proxy feature (None: no proxy)."""


def covered_contexts(order: list[str] | tuple[str, ...], anticipation: float, per_domain: int = 1) -> tuple[str, ...]:
    """The first round(anticipation * n) contexts of `order`, at least `per_domain` of them (one domain)."""
    if not 0.0 <= anticipation <= 1.0 or math.isnan(anticipation):
        raise UserError(f"anticipation {anticipation!r}: must lie in [0, 1]")
    k = max(per_domain, math.floor(anticipation * len(order) + 0.5))
    return tuple(order[:k])


def seeded_rng(*parts: object) -> random.Random:
    """A random generator seeded by a stable hash of `parts` (the same on every machine and Python)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))
