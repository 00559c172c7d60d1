"""Targets by name: the organism's behaviors or data files, resolved in one place.

A target spec is one of:

- an organism target's name: `sentiment`, `sycophancy`, `refusal`;
- a real-text target's name, for a real language model: `real_sentiment`, `real_refusal` (study.feedback.realtext);
- a path to a data file or a saved `datasets` folder (study.feedback.external), named by its stem;
- a mapping `{name, path}`, or `{name, train, test}` to fit on one file and evaluate on another (CAA's protocol),
  or the same as one string, `name=refusal;train=a.json;test=b.json` (how a cell stores it).

    resolve_target("sentiment", world)                  # an OrganismTarget on that world
    resolve_target("real_sentiment")                    # English prompts judged by VADER (study.feedback.realtext)
    resolve_target("data/refusal_ab.json")              # an ExternalTarget (study.feedback.external)
    name_targets(["refusal/test_ab.json", "sycophancy/test_ab.json"])   # distinct names: refusal/test_ab, ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from study.core.errors import UserError
from study.feedback.external import load_external, train_test
from study.feedback.realtext import REAL_TARGETS, real_target
from study.feedback.splits import BehaviorTarget
from study.feedback.targets import ORGANISM_TARGETS, organism_target
from study.organism.world import World, WorldConfig

SPEC_KEYS = ("name", "path", "train", "test")
TargetSpec = str | Mapping[str, str]


def available_targets() -> list[str]:
    return list(ORGANISM_TARGETS) + list(REAL_TARGETS)


def _names() -> str:
    return ", ".join(available_targets())


def looks_like_path(spec: str) -> bool:
    """A spec meant as a file: it has a folder separator or a data file's suffix."""
    return "/" in spec or "\\" in spec or spec.endswith((".json", ".jsonl"))


def parse_spec(spec: TargetSpec) -> dict[str, str]:
    """A spec as a mapping: {"name"} for an organism target, {"name"?, "path"} or {"name", "train", "test"}."""
    if isinstance(spec, Mapping):
        fields = dict(spec)
    elif not isinstance(spec, str) or not spec.strip():
        raise UserError(f"target {spec!r}: expected a name ({_names()}), a path or a mapping "
                        f"{{name, train, test}}")
    elif spec in ORGANISM_TARGETS or spec in REAL_TARGETS:
        return {"name": spec}
    elif spec.startswith("name=") and ";" in spec:
        fields = dict(part.partition("=")[::2] for part in spec.split(";"))
    else:
        fields = {"path": spec}
    unknown = sorted(set(fields) - set(SPEC_KEYS))
    bad = [k for k in fields if not isinstance(fields[k], str) or not str(fields[k]).strip()]
    if unknown or bad:
        raise UserError(f"target {spec!r}: field '{(unknown or bad)[0]}': expected one of name, path or name, "
                        f"train, test, each a non-empty string")
    paired = "train" in fields or "test" in fields
    if paired and not ({"name", "train", "test"} <= set(fields)) or paired and "path" in fields:
        raise UserError(f"target {spec!r}: a train/test target needs exactly name, train and test")
    if not paired and "path" not in fields:
        raise UserError(f"target {spec!r}: needs a path (or train and test)")
    return fields


def encode_spec(fields: Mapping[str, str]) -> str:
    """The one-string form of a spec (a bare path or name stays as it is)."""
    if set(fields) <= {"name"} or set(fields) == {"path"}:
        return fields.get("path") or fields["name"]
    return ";".join(f"{k}={fields[k]}" for k in SPEC_KEYS if k in fields)


def default_name(fields: Mapping[str, str]) -> str:
    return fields.get("name") or Path(fields["path"]).stem


def name_targets(specs: list[TargetSpec]) -> list[str]:
    """The specs as strings, each data file named so that no two targets share a name: files with the same stem
    (CAA's `refusal/test_dataset_ab.json` and `sycophancy/test_dataset_ab.json`) become `parent/stem`."""
    parsed = [parse_spec(s) for s in specs]
    names = [default_name(f) for f in parsed]
    out = []
    for f, name in zip(parsed, names):
        if "name" not in f and names.count(name) > 1:
            p = Path(f["path"]).expanduser()
            f = {"name": f"{p.resolve().parent.name}/{p.stem}", "path": f["path"]}
        out.append(encode_spec(f))
    final = [default_name(parse_spec(s)) for s in out]
    clash = next((n for n in final if final.count(n) > 1), None)
    if clash is not None:
        raise UserError(f"targets: two targets share the name {clash!r}; name them, e.g. {{name: other, path: ...}}")
    return out


def rebase(spec: TargetSpec, folder: Path) -> str:
    """The spec with its relative file paths taken relative to `folder` (a config file's folder)."""
    fields = parse_spec(spec)
    for key in ("path", "train", "test"):
        if key in fields and not Path(fields[key]).expanduser().is_absolute():
            fields[key] = str(folder / fields[key])
    return encode_spec(fields)


def _missing(path: str) -> str | None:
    return None if Path(path).expanduser().exists() else path


def resolve_target(spec: TargetSpec, world: Any = None, scorer: str | Callable | None = None) -> BehaviorTarget:
    """A target by name: an organism target ("sentiment", ...) on `world` or a real-text one ("real_sentiment", ...);
    or an external data file/folder (see study.feedback.external)."""
    fields = parse_spec(spec)
    if set(fields) == {"name"} and fields["name"] in REAL_TARGETS:
        return real_target(fields["name"])
    if set(fields) == {"name"}:
        return organism_target(fields["name"], world if world is not None else World(WorldConfig()))
    if "train" in fields:
        missing = _missing(fields["train"]) or _missing(fields["test"])
        if missing:
            raise UserError(f"target {fields['name']!r}: {missing}: no such file or folder")
        return train_test(fields["name"], fields["train"], fields["test"], scorer=scorer)
    path = fields["path"]
    if Path(path).expanduser().exists():
        return load_external(path, scorer=scorer, name=fields.get("name"))
    if looks_like_path(path) or "name" in fields:
        raise UserError(f"target {path!r}: no such file or folder")
    raise UserError(f"unknown target {path!r}; valid: {_names()}, or a path to an A/B JSON(L) "
                    f"file, a preference JSONL file or a saved `datasets` folder")
