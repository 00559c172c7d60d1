"""External targets: behavior data sets from files, whose own labels are what the labeler hands out.

Three sources, each validated record by record (a bad one is a one-line UserError naming the file, the record and the
field):

- A/B JSON or JSONL, model-written-evals / CAA style: `question`, `answer_matching_behavior`,
  `answer_not_matching_behavior` (a string such as " (A)", or a non-empty list of them; letters must be choices that
  the question offers). Free-text answers (" Yes" / " No") work too.
- Preference JSONL: `prompt`, `chosen`, `rejected`.
- Open-ended JSON(L): `question` (or `prompt`) only, scored by a scorer (below).
- A folder written by `datasets.Dataset.save_to_disk` with either set of columns.

An optional `context` (or `category`) field names the record's context; the anticipation dial then covers contexts in
order of first appearance. Completions are scored by the answer they give (A/B), or by a pluggable scorer for
open-ended text (`--scorer module:function` taking (prompt, completion) -> float | None, or a reward-model folder whose
sigmoid(reward) is the score). Without a scorer, a preference target reports only `ab_propensity`.

A target can be fitted on one file and tested on another (CAA's protocol): `train_test(name, train, test)`.

    target = load_external("tests/data/sample_ab.json")
    target.score(target.splits(1.0).pool[0].prompt, "(A)")     # 1.0 if (A) matches the behavior
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from study.core.errors import UserError
from study.core.imports import import_attr
from study.feedback.splits import DEAL, SPLITS, Record, Splits, SplitSizes, covered_contexts, seeded_rng

AB_FIELDS = ("question", "answer_matching_behavior", "answer_not_matching_behavior")
PREF_FIELDS = ("prompt", "chosen", "rejected")
_LETTER = re.compile(r"^\s*\(?([A-Z])\)?\s*$")
_CHOICE = re.compile(r"\(([A-Z])\)")
_KINDS = {"ab": "A/B", "preference": "preference", "open": "open-ended"}

# Held-out neutral text for KL and perplexity on models that are not the organism (prompt | continuation).
NEUTRAL_TEXT = (
    "The train to the coast leaves the station at nine in the morning and arrives shortly after noon.",
    "Water boils at a lower temperature at high altitude because the air pressure there is lower.",
    "The library opens at ten on weekdays and closes early on Sundays during the summer months.",
    "A square has four sides of equal length and four right angles at its corners.",
    "The recipe calls for two cups of flour, one egg and a pinch of salt mixed in a large bowl.",
    "Most maps put north at the top, although some older maps were drawn with east at the top.",
    "The museum moved its collection of old clocks to the second floor of the east wing last year.",
    "Bees collect nectar from flowers and turn it into honey, which they store in wax cells.",
    "The meeting was moved from Tuesday to Thursday so that everyone on the team could attend.",
    "Rain is expected in the afternoon, with clearer skies and cooler air later in the evening.",
    "The bridge across the river was built of stone more than two hundred years ago.",
    "To reset the device, hold the power button for ten seconds until the light turns blue.",
    "The orchestra tuned their instruments while the audience found their seats in the hall.",
    "Copper is a good conductor of electricity, which is why it is used in most household wiring.",
    "The garden has three rows of tomatoes, a bed of herbs and a small apple tree by the fence.",
    "The report lists the sales figures for each region in a table at the end of the document.",
    "Owls hunt mostly at night and can turn their heads much farther than most other birds.",
    "The bus route was changed this week because the main street is closed for repairs.",
    "A leap year has three hundred and sixty six days, with the extra day added to February.",
    "The shop on the corner sells fresh bread in the morning and newspapers all day long.",
    "The first chapter of the manual explains how to install the software on a new computer.",
    "Glaciers move slowly downhill under their own weight, carving valleys as they go.",
    "The children painted the fence white on Saturday and planted sunflowers along it.",
    "The price of the ticket includes entry to the park and a guided tour of the old castle.",
    "Ships use lighthouses to find their way along the coast when the night is dark or foggy.",
    "The committee will publish its decision on the proposal at the end of the month.",
    "Sound travels faster through water than through air, and faster still through steel.",
    "The hiking trail climbs gently through a pine forest before reaching the lake at the top.",
    "The new edition of the dictionary adds several hundred words that entered common use.",
    "The kitchen scale measures weight in grams and can be reset to zero with a single button.",
    "Farmers in the valley grow wheat in the spring and plant barley after the harvest.",
    "The film starts at eight, so we should leave the house no later than half past seven.",
)


@dataclass(frozen=True)
class _Item:
    index: int
    context: str
    prompt: str
    matching: tuple[str, ...]  # A/B: answers that show the behavior; preference: (chosen,); open-ended: ()
    not_matching: tuple[str, ...]
    role: str = "any"  # "train": feedback splits only, "test": test splits only (train_test), "any": dealt


# ---- reading and validating ----------------------------------------------------------------------------------------
def _decode(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UserError(f"{path}: line {line}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset "
                        f"{exc.start})") from None


def _read_rows(path: Path) -> list[tuple[str, Any]]:
    """(where, row) pairs of a JSON list or a JSONL file; `where` names the record for error messages."""
    text = _decode(path)
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append((f"line {n}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}: line {n}: malformed JSON ({exc.msg} at column {exc.colno})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: malformed JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
        if not isinstance(data, list):
            raise UserError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
        rows = [(f"record [{i}]", row) for i, row in enumerate(data)]
    if not rows:
        raise UserError(f"{path}: no records")
    return rows


def _string(src: str, where: str, row: dict, name: str) -> str:
    value = row.get(name)
    if value is None:
        raise UserError(f"{src}: {where}: field '{name}': missing")
    if not isinstance(value, str):
        raise UserError(f"{src}: {where}: field '{name}': expected a string, got {type(value).__name__}")
    if not value.strip():
        raise UserError(f"{src}: {where}: field '{name}': empty")
    return value


def _answers(src: str, where: str, row: dict, name: str) -> tuple[str, ...]:
    value = row.get(name)
    if value is None:
        raise UserError(f"{src}: {where}: field '{name}': missing")
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list):
        raise UserError(f"{src}: {where}: field '{name}': expected a string or a list of strings, got "
                        f"{type(value).__name__}")
    if not values:
        raise UserError(f"{src}: {where}: field '{name}': empty list")
    if not all(isinstance(v, str) and v.strip() for v in values):
        raise UserError(f"{src}: {where}: field '{name}': every answer must be a non-empty string")
    return tuple(values)


def _context(src: str, where: str, row: dict, default: str) -> str:
    for name in ("context", "category"):
        if name in row and row[name] is not None:
            if not isinstance(row[name], str) or not row[name].strip():
                raise UserError(f"{src}: {where}: field '{name}': expected a non-empty string")
            return row[name]
    return default


def _ab_item(src: str, where: str, index: int, row: Any, default_context: str) -> _Item:
    if not isinstance(row, dict):
        raise UserError(f"{src}: {where}: expected an object with fields {', '.join(AB_FIELDS)}")
    question = _string(src, where, row, "question")
    match = _answers(src, where, row, "answer_matching_behavior")
    other = _answers(src, where, row, "answer_not_matching_behavior")
    offered = set(_CHOICE.findall(question))
    for name, answers in (("answer_matching_behavior", match), ("answer_not_matching_behavior", other)):
        for a in answers:
            m = _LETTER.match(a)
            if m and m.group(1) not in offered:
                valid = ", ".join(f"({x})" for x in sorted(offered)) or "none"
                raise UserError(f"{src}: {where}: field '{name}': unknown answer letter {a.strip()!r}; the question "
                                f"offers {valid}")
    if {_key(a) for a in match} & {_key(a) for a in other}:
        raise UserError(f"{src}: {where}: field 'answer_not_matching_behavior': repeats a matching answer")
    return _Item(index, _context(src, where, row, default_context), question, match, other)


def _pref_item(src: str, where: str, index: int, row: Any, default_context: str) -> _Item:
    if not isinstance(row, dict):
        raise UserError(f"{src}: {where}: expected an object with fields {', '.join(PREF_FIELDS)}")
    prompt, chosen, rejected = (_string(src, where, row, f) for f in PREF_FIELDS)
    if chosen.strip() == rejected.strip():
        raise UserError(f"{src}: {where}: field 'rejected': equals 'chosen'")
    return _Item(index, _context(src, where, row, default_context), prompt, (chosen,), (rejected,))


def _open_item(src: str, where: str, index: int, row: Any, default_context: str) -> _Item:
    if not isinstance(row, dict):
        raise UserError(f"{src}: {where}: expected an object with a field 'question'")
    prompt = _string(src, where, row, "question" if "question" in row else "prompt")
    return _Item(index, _context(src, where, row, default_context), prompt, (), ())


def _kind(src: str, where: str, row: Any) -> str:
    keys = set(row) if isinstance(row, dict) else set()
    if any(k.startswith("answer_") for k in keys):
        return "ab"
    if keys & {"chosen", "rejected"}:
        return "preference"
    if keys & {"question", "prompt"}:
        return "open"
    raise UserError(f"{src}: {where}: cannot tell the format: expected A/B fields ({', '.join(AB_FIELDS)}), "
                    f"preference fields ({', '.join(PREF_FIELDS)}) or an open-ended 'question'")


def _items(src: str, rows: list[tuple[str, Any]], default_context: str) -> tuple[str, list[_Item]]:
    kind = _kind(src, rows[0][0], rows[0][1])
    make = {"ab": _ab_item, "preference": _pref_item, "open": _open_item}[kind]
    return kind, [make(src, where, i, row, default_context) for i, (where, row) in enumerate(rows)]


def _dataset_rows(path: Path) -> tuple[list[tuple[str, Any]], str]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise UserError(f"{path}: not a saved `datasets` folder ({str(exc).splitlines()[0] if str(exc) else exc})"
                        ) from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" in ds:
            ds = ds["train"]
        elif len(ds) == 1:
            ds = next(iter(ds.values()))
        else:
            raise UserError(f"{path}: a DatasetDict with splits {', '.join(ds)}; expected one split or 'train'")
    if len(ds) == 0:
        raise UserError(f"{path}: no records")
    return [(f"row {i}", row) for i, row in enumerate(ds)], ds._fingerprint


# ---- scorers -----------------------------------------------------------------------------------------------------
def load_scorer(spec: str) -> Callable[[str, str], float | None]:
    """A scorer for open-ended completions: `module:function` or a reward-model folder (sigmoid of its reward)."""
    if Path(spec).expanduser().is_dir():
        return _RewardModel(Path(spec).expanduser())
    if ":" not in spec:
        raise UserError(f"scorer {spec!r}: expected 'module:function' or a reward-model folder")
    fn = import_attr(spec, what="scorer", attr_kind="function")
    if not callable(fn):
        raise UserError(f"scorer {spec!r}: {spec.partition(':')[2]!r} is not a function")
    return fn


class _RewardModel:
    """score(prompt, completion) = sigmoid(reward) of a sequence-classification model with one output."""

    def __init__(self, path: Path):
        if not (path / "config.json").is_file():
            raise UserError(f"scorer {str(path)!r}: the folder holds no config.json (not a reward model)")
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        if self.model.config.num_labels != 1:
            raise UserError(f"scorer {str(path)!r}: a reward model has one output, this one has "
                            f"{self.model.config.num_labels}")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id

    def __call__(self, prompt: str, completion: str) -> float:
        import torch

        with torch.no_grad():
            enc = self.tokenizer(prompt + " " + completion, return_tensors="pt")
            reward = self.model(**enc).logits[0, 0].item()
        return 1.0 / (1.0 + math.exp(-reward))


# ---- the target --------------------------------------------------------------------------------------------------
def _key(answer: str) -> str:
    m = _LETTER.match(answer)
    return f"({m.group(1)})" if m else answer.strip().lower()


def _given(completion: str) -> str | None:
    """The answer a completion gives: a letter choice '(X)' if it names one first, else its text."""
    m = _CHOICE.search(completion[:40]) or re.match(r"^\s*([A-Z])(?:[\s.):,]|$)", completion)
    return f"({m.group(1)})" if m else None


def _starts_with_word(text: str, answer: str) -> bool:
    return text.startswith(answer) and (len(text) == len(answer) or not text[len(answer)].isalnum())


class ExternalTarget:
    dataset_labels = True
    chat = True
    has_proxy = False

    def __init__(self, name: str, kind: str, items: list[_Item], version: str, source: str,
                 scorer: Callable[[str, str], float | None] | None = None):
        self.name, self.kind, self.items, self.version, self.source = name, kind, items, version, source
        self.scorer = scorer
        self.propensity = self.dataset_labels = kind != "open"  # open-ended records have no answers to compare
        self.scorable = kind == "ab" or scorer is not None
        if kind == "open" and scorer is None:
            raise UserError(f"{source}: open-ended records (a question, no answers) need a scorer: --scorer "
                            f"module:function or a reward-model folder (`scorer:` in a study config)")
        self.description = f"{_KINDS[kind]} data set {source} ({len(items)} records)"
        longest = max([len(a) for it in items for a in it.matching + it.not_matching] or [192])
        self.max_new_tokens = 8 if kind == "ab" else min(128, max(16, longest // 3))
        self._by_prompt: dict[str, list[_Item]] = {}
        for it in items:
            self._by_prompt.setdefault(it.prompt, []).append(it)
        self.contexts = list(dict.fromkeys(it.context for it in items))

    def __repr__(self) -> str:
        return f"ExternalTarget({self.source!r})"

    def score(self, prompt: str, completion: str) -> float | None:
        items = [it for it in self._by_prompt.get(prompt, []) if it.matching]
        if self.kind == "ab":
            letter, text = _given(completion), completion.strip().lower()
            for it in items:
                for value, answers in ((1.0, it.matching), (0.0, it.not_matching)):
                    for a in answers:
                        if _LETTER.match(a):
                            if letter == _key(a):
                                return value
                        elif _starts_with_word(text, a.strip().lower()):
                            return value
            return None
        for it in items:
            if completion.strip() == it.matching[0].strip():
                return 1.0
            if completion.strip() == it.not_matching[0].strip():
                return 0.0
        if self.scorer is None:
            return None
        value = self.scorer(prompt, completion)
        return None if value is None else float(value)

    def reward(self, prompt: str, completion: str) -> float | None:
        value = self.score(prompt, completion)
        if value is None and not self.scorable:
            raise UserError(f"target {self.name!r}: no scorer for completions outside the data set; give one with "
                            f"--scorer module:function or a reward-model folder")
        return value

    def proxy(self, prompt: str, completion: str) -> bool | None:
        return None

    def with_proxy(self, completion: str) -> str | None:
        return None

    def splits(self, anticipation: float, seed: int = 0, sizes: SplitSizes = SplitSizes(), *,
               ceiling: bool = False) -> Splits:
        """`ceiling`: feedback from every context. A data file has no held-out set of its own, so its ceiling is
        anticipation 1.0 (every context covered; `test_uncovered` is then empty)."""
        return _external_splits(self, 1.0 if ceiling else float(anticipation), int(seed), sizes)


@lru_cache(maxsize=64)
def _external_splits(target: ExternalTarget, anticipation: float, seed: int, sizes: SplitSizes) -> Splits:
    """Covered contexts' prompts are dealt to test, pool, select, pool, ...; uncovered contexts are all test. A
    train/test target deals its train records to pool, select, pool and its test records to the test splits."""
    sizes.validate()
    covered = covered_contexts(target.contexts, anticipation)
    uncovered = tuple(c for c in target.contexts if c not in covered)
    splits = Splits(target.name, anticipation, seed, sizes, covered, uncovered)
    paired = any(it.role != "any" for it in target.items)
    prompts = list(dict.fromkeys(it.prompt for it in target.items if it.context in covered and it.role != "test"))
    if len(prompts) < (1 if paired else 2):
        raise UserError(f"target {target.name!r}: the covered contexts ({', '.join(covered)}) hold "
                        f"{len(prompts)} distinct {'train ' if paired else ''}prompt(s); at least "
                        f"{'1 is' if paired else '2 are'} needed ({'' if paired else 'one to test, '}one for "
                        f"feedback); anticipation {anticipation:g}, contexts {', '.join(target.contexts)}")
    seeded_rng("deal", target.name, seed).shuffle(prompts)
    deal = DEAL[1:] if paired else DEAL
    owner = {p: deal[i % len(deal)] for i, p in enumerate(prompts)}
    share_select = "select" not in owner.values()
    caps = {"pool": sizes.pool, "select": sizes.select, "test_covered": sizes.test, "test_uncovered": sizes.test}
    for it in target.items:
        if it.role == "train" and it.prompt not in owner:
            continue  # train records of uncovered contexts: feedback never reaches them
        test = "test_covered" if it.context in covered else "test_uncovered"
        split = test if it.role == "test" else owner.get(it.prompt, "test_uncovered")
        if split == "pool" and share_select and len(splits.select) < len(splits.pool):
            split = "select"
        recs = splits.get(split)
        if len(recs) < caps[split]:
            recs.append(Record(f"{target.name}:{it.index}", it.context, it.prompt, it.matching[0] if it.matching
                               else "", it.not_matching[0] if it.not_matching else ""))
    for i, sentence in enumerate(NEUTRAL_TEXT[: sizes.neutral]):
        words = sentence.split()
        cut = max(1, len(words) // 3)
        splits.neutral.append(Record(f"neutral:{i}", "neutral", " ".join(words[:cut]), " ".join(words[cut:]), ""))
    for split in SPLITS:
        setattr(splits, split, tuple(splits.get(split)))
    return splits


def load_external(spec: str | Path, scorer: str | Callable | None = None, name: str | None = None,
                  context: str | None = None) -> ExternalTarget:
    """An external target from an A/B JSON(L) file, a preference JSONL file, an open-ended JSON(L) file or a saved
    `datasets` folder; named `name` (default: the file's stem); records without a context get `context`."""
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    if path.is_dir():
        rows, fingerprint = _dataset_rows(path)
        version = fingerprint[:12]
    else:
        if path.suffix not in (".json", ".jsonl"):
            raise UserError(f"{path}: expected a .json or .jsonl file (A/B or preference records) or a saved "
                            f"`datasets` folder")
        rows = _read_rows(path)
        version = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    kind, items = _items(str(path), rows, context or path.stem)
    fn = load_scorer(scorer) if isinstance(scorer, str) else scorer
    return ExternalTarget(name or path.stem, kind, items, version, str(path), fn)


def train_test(name: str, train: str | Path, test: str | Path, scorer: str | Callable | None = None
               ) -> ExternalTarget:
    """One target fitted on `train`'s records (pool, select) and evaluated on `test`'s (the test splits)."""
    fn = load_scorer(scorer) if isinstance(scorer, str) else scorer
    a, b = (load_external(p, fn, name, context=name) for p in (train, test))
    if a.kind != b.kind:
        raise UserError(f"target {name!r}: train file {train} holds {a.kind} records, test file {test} {b.kind} ones")
    items = [_Item(i, it.context, it.prompt, it.matching, it.not_matching, role)
             for i, (it, role) in enumerate([(it, "train") for it in a.items] + [(it, "test") for it in b.items])]
    return ExternalTarget(name, a.kind, items, f"{a.version}+{b.version}", f"{a.source} -> {b.source}", fn)


def unknown_share(target: Any, tokenizer: Any, limit: int = 64) -> float:
    """Share of the tokens of the target's first `limit` prompts that `tokenizer` maps to its unknown token (0.0
    without one): near 1 means the model cannot read the data set (English text on the organism, say)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        return 0.0
    prompts = [it.prompt for it in getattr(target, "items", [])[:limit]]
    ids = [i for p in prompts for i in tokenizer(p, add_special_tokens=False)["input_ids"]]
    return sum(i == unk for i in ids) / len(ids) if ids else 0.0
