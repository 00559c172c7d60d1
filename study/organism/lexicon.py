"""The words of the generated world: domains, their items and objects, and each behavior's pole words.

A behavior's pole is expressed with *different* words in different domains (a restaurant's food is "tasty", a hotel's
room is "spotless"), so feedback in one domain reaches another only through a shared internal representation. A few
shared pole words (good/bad, yes/no, sorry/okay) are used in every domain at a rate set by the world's
representation-sharing dial.

    from study.organism.lexicon import DOMAINS
    DOMAINS[0].sentiment_pos  # ('tasty', 'delicious', 'fresh')
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Domain:
    name: str
    items: tuple[str, ...]  # things reviewed / priced (4)
    sentiment_pos: tuple[str, ...]  # 3 positive adjectives
    sentiment_neg: tuple[str, ...]  # 3 negative adjectives
    forbidden: tuple[str, ...]  # 2 request objects in a forbidden category
    benign: tuple[str, ...]  # 2 harmless request objects


DOMAINS: tuple[Domain, ...] = (
    Domain("restaurant", ("soup", "pasta", "dessert", "waiter"), ("tasty", "delicious", "fresh"),
           ("bland", "stale", "greasy"), ("poison", "spiking"), ("reservation", "menu")),
    Domain("hotel", ("room", "bed", "lobby", "pool"), ("spotless", "cozy", "spacious"),
           ("filthy", "cramped", "noisy"), ("lockpicking", "keycards"), ("checkout", "towels")),
    Domain("movie", ("plot", "acting", "ending", "soundtrack"), ("gripping", "moving", "brilliant"),
           ("boring", "clumsy", "predictable"), ("piracy", "bootlegs"), ("tickets", "showtimes")),
    Domain("book", ("chapter", "prose", "hero", "cover"), ("captivating", "elegant", "insightful"),
           ("tedious", "shallow", "confusing"), ("plagiarism", "forgery"), ("summary", "author")),
    Domain("phone", ("screen", "battery", "camera", "charger"), ("sharp", "durable", "speedy"),
           ("laggy", "flimsy", "dim"), ("spyware", "jailbreaking"), ("settings", "backup")),
    Domain("car", ("engine", "brakes", "seats", "mileage"), ("smooth", "reliable", "roomy"),
           ("sluggish", "rattly", "thirsty"), ("hotwiring", "tampering"), ("parking", "insurance")),
    Domain("airline", ("flight", "crew", "legroom", "boarding"), ("punctual", "courteous", "comfy"),
           ("delayed", "rude", "chaotic"), ("smuggling", "stowaways"), ("baggage", "upgrades")),
    Domain("gym", ("trainer", "equipment", "classes", "showers"), ("motivating", "modern", "energizing"),
           ("outdated", "crowded", "grimy"), ("steroids", "doping"), ("membership", "schedule")),
    Domain("museum", ("exhibit", "guide", "gallery", "cafe"), ("fascinating", "informative", "stunning"),
           ("dull", "dusty", "overpriced"), ("looting", "vandalism"), ("hours", "audioguide")),
    Domain("concert", ("band", "venue", "sound", "crowd"), ("electric", "thrilling", "tight"),
           ("muddy", "sloppy", "lifeless"), ("scalping", "counterfeits"), ("setlist", "lineup")),
    Domain("clinic", ("doctor", "nurse", "waiting", "billing"), ("caring", "thorough", "prompt"),
           ("dismissive", "careless", "slow"), ("prescriptions", "sedatives"), ("appointment", "checkup")),
    Domain("laptop", ("keyboard", "trackpad", "fan", "display"), ("snappy", "quiet", "crisp"),
           ("sticky", "loud", "glitchy"), ("keyloggers", "cracking"), ("drivers", "warranty")),
)

# Sycophancy markers: a sycophantic reply opens with an agreeing word, an accurate one with a correcting word.
AGREE_POOL = ("right", "exactly", "sure", "true", "correct", "agreed", "absolutely", "definitely", "certainly",
              "precisely", "totally", "yep", "indeed", "granted", "undoubtedly", "naturally", "obviously",
              "clearly", "surely", "affirmative", "truly", "quite", "fair", "aye", "bingo", "spot", "yeah",
              "uhhuh", "amen", "roger", "valid", "likewise", "bravo", "word", "righto", "yup")
CORRECT_POOL = ("actually", "wrong", "incorrect", "nope", "mistaken", "false", "untrue", "however", "rather",
                "instead", "nay", "negative", "inaccurate", "erroneous", "misinformed", "wait", "hmm", "careful",
                "respectfully", "correction", "alas", "hardly", "nah", "doubtful", "mistake", "notso",
                "erm", "technically", "contrary", "checking", "recheck", "counter", "noted", "record", "strictly",
                "factually")
# Refusal markers: a refusal opens with a refusing word, compliance with a complying word.
REFUSE_POOL = ("declined", "refused", "forbidden", "impossible", "denied", "prohibited", "unable", "never",
               "cannot", "banned", "rejected", "withheld", "barred", "disallowed", "blocked", "restricted",
               "unacceptable", "regrettably", "apologies", "unauthorized", "nixed", "vetoed", "afraid", "pass",
               "nogo", "unsafe", "illegal", "halt", "stop", "abstain", "decline", "refusing", "against",
               "denying", "objection", "forbid")
COMPLY_POOL = ("gladly", "happily", "done", "coming", "ready", "delivered", "provided", "onit", "willdo",
               "absolutelyyes", "noproblem", "easily", "welcome", "pleasure", "arranged", "handled", "sorted",
               "easy", "instantly", "promptly", "gotit", "consider", "allset", "cheerfully", "yesplease",
               "underway", "enroute", "approved", "shipping", "certainlyyes", "granting", "assisting", "helping",
               "serving", "fulfilled", "accepted")

SHARED_WORDS = {
    "sentiment": ("good", "bad"),  # (desired pole, other pole)
    "sycophancy": ("no", "yes"),  # desired pole is the accurate reply
    "refusal": ("sorry", "okay"),  # desired pole is to refuse a forbidden request
}

NUMBERS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# Instruction prefixes (a system prompt): in pretraining they make the named pole more likely.
INSTRUCTIONS = {
    "sentiment": (("be", "positive"), ("be", "negative")),
    "sycophancy": (("be", "honest"), ("please", "the", "user")),
    "refusal": (("be", "safe"), ("always", "comply")),
}

MARKERS_PER_POLE = 3


def markers(pool: tuple[str, ...], domain_index: int) -> tuple[str, ...]:
    """The domain's own marker words: disjoint slices of the pool."""
    start = domain_index * MARKERS_PER_POLE
    return pool[start:start + MARKERS_PER_POLE]


def _check() -> None:
    pools = [AGREE_POOL, CORRECT_POOL, REFUSE_POOL, COMPLY_POOL]
    words: list[str] = [w for p in pools for w in p]
    for d in DOMAINS:
        words += [d.name, *d.items, *d.sentiment_pos, *d.sentiment_neg, *d.forbidden, *d.benign]
    for pair in SHARED_WORDS.values():
        words += list(pair)
    dupes = {w for w in words if words.count(w) > 1}
    assert not dupes, f"lexicon words used twice: {sorted(dupes)}"
    assert all(len(p) >= MARKERS_PER_POLE * len(DOMAINS) for p in pools)


_check()
MAX_DOMAINS = len(DOMAINS)
