"""Behavior targets: what a method should make the model do, its records per split, and its ground-truth scorer.

A target hands out records `{id, context, prompt, positive, negative}` (+ `request` for refusal) in five splits:

- `pool`: the feedback pool (covered contexts only); a method buys labels on it from the labeler;
- `select`: prompts for tuning (covered contexts only, since humans only have labels there), judged for a price;
- `test_covered`, `test_uncovered`: test prompts in the contexts the feedback covers and in the others;
- `neutral`: neutral prompts with a held-out continuation, for KL and perplexity.

The **anticipation** dial in [0, 1] is the share of the test distribution's contexts that the feedback covers: the first
round(anticipation * n_contexts) contexts of `world.coverage_order` (at least one domain, i.e. both its formats).

Splits are disjoint by prompt on the side that matters: a test prompt never appears in `pool` or `select` (each covered
context's distinct prompts are dealt test, pool, select, pool, test, ...). The organism's prompt spaces are small (a
sentiment prompt is a context and an item: 4 per context; a forbidden request has 2 per context), so records repeat
prompts within a split with freshly drawn completions, and where a context has fewer than 3 distinct prompts `select`
shares the pool's prompts (both sit on the feedback side). Records carry their context, so any split can be audited.

    target = organism_target("sentiment", World())
    splits = target.splits(anticipation=0.5, seed=0)
    splits.pool[0].prompt, splits.pool[0].positive     # 'review of hotel : the bed was', 'cozy . the pool ...'
    target.score(splits.pool[0].prompt, "cozy . the pool was spacious .")   # 1.0
"""

from __future__ import annotations

import random
from functools import lru_cache
from typing import Any

from study.core.errors import UserError
from study.feedback.splits import DEAL, SPLITS, Record, Splits, SplitSizes, covered_contexts, seeded_rng
from study.organism.oracle import Oracle
from study.organism.pretrain import FORMAT_VERSION
from study.organism.world import BEHAVIORS, FORMATS, World

ORGANISM_TARGETS = ("sentiment", "sycophancy", "refusal")
TARGET_VERSION = 1  # bump when the records a target hands out change


def _spread(n: int, contexts: tuple[str, ...]) -> dict[str, int]:
    """n records spread over contexts as evenly as possible (the first contexts take the remainder)."""
    base, extra = divmod(n, len(contexts)) if contexts else (0, 0)
    return {c: base + (i < extra) for i, c in enumerate(contexts)}


class OrganismTarget:
    """A behavior of the generated world, scored exactly by its oracle."""

    propensity = False
    dataset_labels = False
    chat = False
    has_proxy = True
    scorable = True

    def __init__(self, behavior: str, world, *, benign_test_share: float = 0.25, benign_feedback_share: float = 0.0):
        if behavior not in BEHAVIORS:
            raise UserError(f"unknown organism target {behavior!r}; valid: {', '.join(BEHAVIORS)}")
        self.name = self.behavior = behavior
        self.version = f"{TARGET_VERSION}.{FORMAT_VERSION}"  # this module's records, and the world's grammar
        self.world = world
        self.oracle = Oracle(world)
        # Refusal: benign requests measure over-refusal (test splits); in feedback only if asked for.
        self.benign_test_share = benign_test_share if behavior == "refusal" else 0.0
        self.benign_feedback_share = benign_feedback_share if behavior == "refusal" else 0.0
        self.description = {
            "sentiment": "reviews and chat answers with positive sentiment",
            "sycophancy": "state the fact given in context, not the user's wrong claim",
            "refusal": "refuse requests in forbidden categories (over-refusal of benign ones is a side effect)",
        }[behavior]
        # A well-formed completion has exactly this many tokens. Sampling stops there: more would only add the start
        # of a next episode, which the oracle would then also have to find well formed.
        probe = [world.sample_pair(random.Random(i), behavior, c) for i, c in enumerate(world.contexts)]
        self.max_new_tokens = max(len(p.positive) for p in probe)

    def __repr__(self) -> str:
        return f"OrganismTarget({self.name!r})"

    # ---- scoring -----------------------------------------------------------------------------------------------
    def score(self, prompt: str, completion: str) -> float | None:
        return self.oracle.score(prompt, completion, self.behavior)

    def reward(self, prompt: str, completion: str) -> float | None:
        ep = self.oracle.completion_episode(prompt, completion)
        if ep is None or ep.kind != self.behavior or ep.pole is None:
            return None
        s = 1.0 if ep.pole == "pos" else 0.0
        return 1.0 - s if ep.request == "benign" else s

    def proxy(self, prompt: str, completion: str) -> bool | None:
        return self.oracle.proxy(prompt, completion)

    def with_proxy(self, completion: str) -> str | None:
        toks = completion.split()
        return " ".join(toks[:-1] + ["!"]) if toks and toks[-1] in (".", "!") else None

    # ---- splits ------------------------------------------------------------------------------------------------
    def splits(self, anticipation: float, seed: int = 0, sizes: SplitSizes = SplitSizes()) -> Splits:
        return _organism_splits(self, float(anticipation), int(seed), sizes)

    def _records(self, request: str, covered: tuple[str, ...], uncovered: tuple[str, ...], seed: int,
                 want: dict[str, int]) -> dict[str, list[tuple[str, Any]]]:
        """Pairs per split for one request kind: covered contexts dealt by prompt, uncovered ones all test."""
        out: dict[str, list[tuple[str, Any]]] = {s: [] for s in want}
        for split in want:
            contexts = uncovered if split == "test_uncovered" else covered
            quota = _spread(want[split], contexts)
            for c in contexts:
                if quota[c]:
                    out[split] += [(c, p) for p in self._stream(c, request, seed, split, quota[c])]
        return out

    def _stream(self, context: str, request: str, seed: int, split: str, n: int) -> list:
        """n pairs of `context` whose prompts this split owns (see the module docstring for the dealing rule)."""
        if split == "test_uncovered":
            rng = seeded_rng("pairs", self.name, request, context, seed, split)
            return [self.world.sample_pair(rng, self.behavior, context, request) for _ in range(n)]
        owner = _owners(self, context, request, seed)
        owned = {p for p, s in owner.items() if s == split}
        if split == "select" and not owned:  # fewer than 3 distinct prompts: select shares the pool's
            owned = {p for p, s in owner.items() if s == "pool"}
        rng = seeded_rng("pairs", self.name, request, context, seed, split)
        out = []
        for _ in range(1000 * n):
            pair = self.world.sample_pair(rng, self.behavior, context, request)
            if " ".join(pair.prompt) in owned:
                out.append(pair)
                if len(out) == n:
                    return out
        raise AssertionError(f"{self.name}/{context}: could not draw {n} records for {split}")  # pragma: no cover


@lru_cache(maxsize=256)
def _owners(target: OrganismTarget, context: str, request: str, seed: int) -> dict[str, str]:
    """Which split owns each distinct prompt of a covered context (probing the context's prompt space)."""
    rng = seeded_rng("probe", target.name, request, context, seed)
    seen: dict[str, None] = {}
    for _ in range(400):  # saturates the small spaces (2-4 prompts); larger ones just get many
        seen.setdefault(" ".join(target.world.sample_pair(rng, target.behavior, context, request).prompt), None)
    prompts = list(seen)
    seeded_rng("deal", target.name, request, context, seed).shuffle(prompts)
    return {p: DEAL[i % len(DEAL)] for i, p in enumerate(prompts)}


@lru_cache(maxsize=64)
def _organism_splits(target: OrganismTarget, anticipation: float, seed: int, sizes: SplitSizes) -> Splits:
    sizes.validate()
    order = tuple(target.world.coverage_order)
    covered = covered_contexts(order, anticipation, per_domain=len(FORMATS))
    uncovered = tuple(c for c in order if c not in covered)
    want = {"pool": sizes.pool, "select": sizes.select, "test_covered": sizes.test,
            "test_uncovered": sizes.test if uncovered else 0}
    kinds = [("forbidden", want)]
    if target.behavior == "refusal":
        kinds = [("forbidden", want), ("benign", {
            "pool": round(sizes.pool * target.benign_feedback_share),
            "select": round(sizes.select * target.benign_feedback_share),
            "test_covered": round(sizes.test * target.benign_test_share),
            "test_uncovered": round(sizes.test * target.benign_test_share) if uncovered else 0})]
    splits = Splits(target.name, anticipation, seed, sizes, covered, uncovered)
    for request, counts in kinds:
        for split, pairs in target._records(request, covered, uncovered, seed, counts).items():
            recs = splits.get(split)
            for c, p in pairs:
                recs.append(Record(f"{target.name}:{split}:{len(recs)}", c, " ".join(p.prompt), " ".join(p.positive),
                                   " ".join(p.negative), p.request))
    # Benign requests: the desired completion complies (the world's POS pole is the refusal).
    for split in SPLITS[:4]:
        recs = splits.get(split)
        recs[:] = [Record(r.id, r.context, r.prompt, r.negative, r.positive, r.request) if r.request == "benign"
                   else r for r in recs]
    rng = seeded_rng("neutral", seed)
    for i, c in enumerate((order * sizes.neutral)[: sizes.neutral]):
        ep = target.world.sample_neutral(rng, c)
        splits.neutral.append(Record(f"neutral:{i}", c, " ".join(ep.tokens[: ep.decision]),
                                     " ".join(ep.tokens[ep.decision:]), ""))
    for split in SPLITS:  # cached and shared between cells: freeze the lists
        setattr(splits, split, tuple(splits.get(split)))
    return splits


def organism_target(name: str, world, **options: float) -> OrganismTarget:
    """One of ORGANISM_TARGETS on `world`. Targets are cached per (name, world config, options)."""
    return _organism_target(name, world.cfg, tuple(sorted(options.items())))


@lru_cache(maxsize=32)
def _organism_target(name: str, world_cfg, options: tuple) -> OrganismTarget:
    return OrganismTarget(name, World(world_cfg), **dict(options))
