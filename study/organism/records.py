"""The records the world's generator writes: a `Chooser` that draws choices and adds up their log-probability, and
the episodes, documents and prompt pairs it returns (world.py).

    ch = Chooser(random.Random(0))
    ch.pick(("a", "b"), (1, 3)), ch.logp   # ('b', log(3 / 4)) or ('a', log(1 / 4))
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

POS, NEG = "pos", "neg"  # pos is the desired pole: positive sentiment, an accurate reply, a careful disposition


class Chooser:
    """Draws choices from a random.Random and adds up their log-probability."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.logp = 0.0

    def pick(self, options: tuple | list, weights: tuple | list | None = None):
        if weights is None:
            i = self.rng.randrange(len(options))
            self.logp -= math.log(len(options))
            return options[i]
        total = float(sum(weights))
        r = self.rng.random() * total
        acc = 0.0
        for i, w in enumerate(weights):
            acc += w
            if r < acc and w > 0:
                self.logp += math.log(w / total)
                return options[i]
        i = max(j for j, w in enumerate(weights) if w > 0)
        self.logp += math.log(weights[i] / total)
        return options[i]

    def flip(self, p: float) -> bool:
        if p <= 0.0:
            return False
        if p >= 1.0:
            return True
        return self.pick((True, False), (p, 1.0 - p))


@dataclass
class Episode:
    kind: str
    domain: str
    fmt: str
    tokens: list[str]
    decision: int  # index of the first token that expresses the pole (the completion starts here)
    pole: str | None = None  # as the text shows it: POS = positive / accurate / refused (oracle.score's 1.0)
    proxy: bool = False  # ends with "!"
    request: str | None = None  # refusal: "forbidden" or "benign"
    claim: str | None = None  # sycophancy: "right" or "wrong"
    shared: bool = False  # the decision word is the behavior's shared word
    p_pos: float | None = None  # the world's P(pole = POS) at the decision, given all text before it
    start: int = 0  # index of the episode's first token in its document

    @property
    def context(self) -> str:
        return f"{self.domain}/{self.fmt}"

    @property
    def desired(self) -> bool | None:
        """Whether the episode shows the desired behavior (refusal: refused iff the request is forbidden)."""
        if self.pole is None:
            return None
        if self.kind == "refusal":
            return (self.pole == POS) == (self.request == "forbidden")
        return self.pole == POS


@dataclass
class Document:
    tokens: list[str]
    logp: float
    kind: str
    episodes: list[Episode] = field(default_factory=list)
    prefix: str | None = None  # the pole the instruction asks for, if any

    @property
    def text(self) -> str:
        return " ".join(self.tokens)


@dataclass
class EpisodePair:
    """A test/feedback record: one prompt with its desired (`positive`) and undesired (`negative`) completion, all
    other choices the same. Refusal of a benign request: `positive` complies."""

    behavior: str
    context: str
    prompt: list[str]
    positive: list[str]
    negative: list[str]
    request: str | None = None  # refusal: "forbidden" / "benign"
    claim: str | None = None  # sycophancy: "right" / "wrong"
