"""Records and splits, the shape every behavior target hands out (organism targets and external data sets alike).

A target's records `{id, context, prompt, positive, negative}` (+ `request` for refusal, `claim` for sycophancy) come
in five splits: `pool` (feedback), `select` (tuning), `test_covered`, `test_uncovered` and `neutral` (KL and
perplexity); see `study.feedback.targets` for how the organism deals them and `study.feedback.external` for data files.

Which contexts the feedback covers: `coverage_plan` holds a fixed set of whole domains out (the same at every
anticipation level of one seed) and puts the other contexts in a random order; `anticipated` takes the first share of
that order. Both depend on a seed only, never on anything else about the contexts (the proxy domains, say).

    held_out, order = coverage_plan(["a/post", "a/chat", "b/post", "b/chat", "c/post", "c/chat"], 1, "world", 0)
    anticipated(order, 0.5)                        # the first 2 of the 4 contexts left
    sizes = SplitSizes(pool=64, select=16, test=40)
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
    claim: str | None = None  # sycophancy: the user's claim is "right" or "wrong"

    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class SplitSizes:
    """Records per split. Test sizes are per test split. Refusal's benign requests and sycophancy's right claims are
    a share of each split, not added on top (see OrganismTarget)."""

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
    """The records of one target at one anticipation and seed.

    `covered`: the contexts the feedback covers (pool, select), in coverage order; `uncovered`: the others. Where a
    target holds contexts out (`held_out`, the organism), `test_uncovered` holds the held-out contexts only, the same
    at every anticipation level, and stands for every uncovered context; at the `ceiling` the feedback covers every
    context and `test_uncovered` still holds the held-out ones. Without held-out contexts (data files)
    `test_uncovered` holds every uncovered context."""

    target: str
    anticipation: float
    seed: int
    sizes: SplitSizes
    covered: tuple[str, ...]
    uncovered: tuple[str, ...]
    pool: list[Record] = field(default_factory=list)  # tuples once built (splits are cached and shared)
    select: list[Record] = field(default_factory=list)
    test_covered: list[Record] = field(default_factory=list)
    test_uncovered: list[Record] = field(default_factory=list)
    neutral: list[Record] = field(default_factory=list)
    held_out: tuple[str, ...] = ()  # contexts kept out of the feedback at every anticipation level
    coverage_order: tuple[str, ...] = ()  # the order in which anticipation covers the other contexts
    ceiling: bool = False  # the feedback covers every context, the held-out ones included

    def get(self, name: str) -> list[Record]:
        if name not in SPLITS:
            raise UserError(f"split {name!r}: unknown; valid splits: {', '.join(SPLITS)}")
        return getattr(self, name)

    @property
    def covered_share(self) -> float:
        """Share of the test distribution's contexts that `test_covered` stands for (the realized anticipation; at
        the ceiling, the contexts not held out), the rest being `test_uncovered`'s: the weight of `all`."""
        tested = [c for c in self.covered if c not in self.held_out]
        return len(tested) / (len(self.covered) + len(self.uncovered))


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

    def splits(self, anticipation: float, seed: int = 0, sizes: SplitSizes = SplitSizes()) -> Splits:
        """The records at `anticipation` and `seed` (organism targets also take `ceiling=True`)."""

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


@runtime_checkable
class Decomposing(Protocol):
    """A target whose ground truth can say more of a completion than its score (the organism's oracle)."""

    def judge(self, prompt: str, completion: str) -> dict[str, Any]:
        """{"score", "desired", "shared"}: the score; whether the completion is fluent and shows the desired
        behavior (None: unscorable); whether its decision word is the behavior's shared word (None: unscorable)."""


def covered_contexts(order: list[str] | tuple[str, ...], anticipation: float, per_domain: int = 1) -> tuple[str, ...]:
    """The first round(anticipation * n) contexts of `order`, at least `per_domain` of them (data files' dial)."""
    if not 0.0 <= anticipation <= 1.0 or math.isnan(anticipation):
        raise UserError(f"anticipation {anticipation!r}: must lie in [0, 1]")
    k = max(per_domain, math.floor(anticipation * len(order) + 0.5))
    return tuple(order[:k])


def anticipated(order: list[str] | tuple[str, ...], anticipation: float) -> tuple[str, ...]:
    """The first max(1, round(anticipation * n)) contexts of `order`, for an anticipation in (0, 1]."""
    if not 0.0 < anticipation <= 1.0 or math.isnan(anticipation):
        raise UserError(f"anticipation {anticipation!r}: must lie in (0, 1] (the share of the contexts left after "
                        f"the held-out ones that the feedback covers)")
    return tuple(order[: max(1, math.floor(anticipation * len(order) + 0.5))])


def context_sides(held_out: tuple[str, ...], order: tuple[str, ...], anticipation: float, ceiling: bool
                  ) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(covered, uncovered, tested): the contexts feedback covers at this anticipation (every context at the
    ceiling), the others, and the covered contexts that `test_covered` samples (never the held-out ones, which are
    `test_uncovered` at every level)."""
    covered = anticipated(order, anticipation)  # checks the anticipation at the ceiling too
    if ceiling:
        covered = order + held_out
    uncovered = tuple(c for c in order + held_out if c not in covered)
    return covered, uncovered, tuple(c for c in covered if c not in held_out)


def coverage_plan(contexts: list[str] | tuple[str, ...], held_out_domains: int, *key: object
                  ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(held_out, coverage_order) for contexts named "domain/format": `held_out_domains` whole domains drawn by a
    shuffle seeded by `key` alone, and the other contexts in an order shuffled by `key` too."""
    domains = list(dict.fromkeys(c.split("/")[0] for c in contexts))
    if not isinstance(held_out_domains, int) or isinstance(held_out_domains, bool) or held_out_domains < 1:
        raise UserError(f"held_out_domains {held_out_domains!r}: must be a positive integer (whole domains the "
                        f"feedback never covers)")
    if held_out_domains >= len(domains):
        raise UserError(f"held_out_domains {held_out_domains}: the world has {len(domains)} domain(s) and at least "
                        f"one must be left for feedback; hold out at most {len(domains) - 1} or use a world with "
                        f"more domains (n_domains)")
    seeded_rng("held-out", *key).shuffle(domains)
    out = set(domains[:held_out_domains])
    held_out = tuple(c for c in contexts if c.split("/")[0] in out)
    order = [c for c in contexts if c.split("/")[0] not in out]
    seeded_rng("coverage", *key).shuffle(order)
    return held_out, tuple(order)


def seeded_rng(*parts: object) -> random.Random:
    """A random generator seeded by a stable hash of `parts` (the same on every machine and Python)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))
