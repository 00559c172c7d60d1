"""Preflight: every input of a study checked before any cell runs (and in `--dry-run`), so that bad input exits 2
with one line and nothing written, instead of failing cell after cell.

It also resolves the config's relative paths: targets, the scorer and model folders named in a config file are taken
relative to that file's folder; the same fields given with `--set` are relative to the current directory, as is
`results_dir` (wherever it is given). Data files with the same stem get distinct target names (`parent/stem`).

    study = preflight(load_study("micro"), source="micro")

Checked: results_dir and cache_dir are not empty; each model's dtype is 'auto' or a torch dtype name; each Hugging
Face model is a local folder with config.json (or a hub name, when the hub can be reached or the model is in its
cache), and one that a LoRA method trains has attention and MLP projections LoRA can find; each method part's
Config can be built (a plugin field without a default is named), the `ceiling` method's included; `prompting` has an
instruction for each target; each data-set target's splits can be built at every anticipation and seed; and the
organism can read each data set (most of its tokens are not the tokenizer's unknown token).
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

from methods.lora_template import LoraMethod
from methods.prompting import Prompting, instruction_text
from methods.registry import part_config, resolve
from study.core.config import config_file, from_dict
from study.core.errors import ConfigError, UserError
from study.feedback.catalog import name_targets, parse_spec, rebase, resolve_target
from study.feedback.external import unknown_share
from study.feedback.realtext import REAL_TARGETS
from study.feedback.targets import ORGANISM_TARGETS
from study.lm.architectures import lora_target_modules
from study.lm.smollm2 import is_named_model
from study.organism.pretrain import build_tokenizer
from study.organism.world import World
from study.run.study_config import StudyConfig

UNKNOWN_LIMIT = 0.5  # above this share of unknown tokens a data set is unreadable to the model
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _folder(source: str) -> Path | None:
    """The folder of the config file `source` names (None for a StudyConfig object or defaults)."""
    if source.startswith("<"):
        return None
    try:
        return config_file(source).resolve().parent
    except UserError:
        return None


def _overridden(overrides: list[str] | tuple[str, ...]) -> set[str]:
    return {item.partition("=")[0].strip().split(".")[0] for item in overrides}


def _rebase_model(m: Any, folder: Path) -> Any:
    path = m if isinstance(m, str) else m.get("path") if isinstance(m, dict) else None
    if not path or path == "organism" or Path(path).expanduser().is_absolute():
        return m
    local = folder / path
    if not (path.startswith(".") or local.exists()):
        return m  # a hub name
    if isinstance(m, str):
        return {"name": m, "path": str(local)}
    return {**m, "path": str(local)}


def resolve_paths(study: StudyConfig, source: str, overrides: list[str] | tuple[str, ...] = ()) -> StudyConfig:
    """The study with the config file's relative paths resolved and data-set targets distinctly named."""
    folder, given = _folder(source), _overridden(overrides)
    targets: list[Any] = list(study.targets)
    changes: dict[str, Any] = {}
    if folder is not None:
        if "targets" not in given:
            targets = [t if set(parse_spec(t)) == {"name"} else rebase(t, folder) for t in targets]
        if "models" not in given:
            changes["models"] = tuple(_rebase_model(m, folder) for m in study.models)
        if study.scorer and "scorer" not in given and ":" not in study.scorer:
            changes["scorer"] = str(folder / Path(study.scorer).expanduser())
    changes["targets"] = tuple(name_targets(targets))
    return dataclasses.replace(study, **changes)


def check_dtype(dtype: str, where: str) -> None:
    if dtype == "auto":
        return
    import torch  # heavy: only for a dtype other than 'auto'

    if not isinstance(getattr(torch, dtype, None), torch.dtype):
        raise UserError(f"{where}: dtype {dtype!r}: expected 'auto' or a torch dtype name (float32, float16, "
                        f"bfloat16)")


def check_model_path(path: str, where: str) -> None:
    """A Hugging Face model: a local folder with config.json, or a hub name that can be fetched or is cached."""
    if is_named_model(path):
        return  # study.lm.smollm2: fetched from the package registry and converted when a cell first loads it
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise UserError(f"{where}: model {path!r}: the folder holds no config.json (not a save_pretrained folder)")
        return
    if p.exists():
        raise UserError(f"{where}: model {path!r}: a file, not a model folder")
    if path.startswith((".", "/", "~")) or not _HUB_NAME.match(path):
        raise UserError(f"{where}: model {path!r}: no such folder")
    if not os.environ.get("HF_HUB_OFFLINE"):
        return  # a hub name: downloaded when the cell loads it
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(path, "config.json"), str):
        raise UserError(f"{where}: model {path!r}: no such folder, and not in the Hugging Face cache "
                        f"(HF_HUB_OFFLINE is set)")


def check_lora_targets(path: str, trust_remote_code: bool, where: str) -> None:
    """A local model folder that a LoRA method will adapt: its architecture must have attention and MLP projections
    that LoRA can find (study.lm.architectures). Built on the meta device from config.json: no weights are read."""
    if not Path(path).expanduser().is_dir():
        return  # a hub name: checked when the cell loads it
    import torch  # heavy: only for a study that trains LoRA adapters on a Hugging Face model
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(str(Path(path).expanduser()), trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{where}: model {path!r}: cannot build it from its config.json ({reason})") from None
    try:
        lora_target_modules(model)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


def method_parts(study: StudyConfig, source: str) -> list[tuple[str, type, Any]]:
    """(name, class, Config) of every method part (the ceiling's too); a Config field without a default is one clear
    error."""
    out = []
    specs = list(study.methods) + ([study.ceiling.method] if study.ceiling else [])
    for name in dict.fromkeys(p.strip() for spec in specs for p in spec.split("+")):
        cls = resolve(name)
        given = part_config(name, study.method_config)
        for f in dataclasses.fields(cls.Config):
            if f.init and f.name not in given and f.default is dataclasses.MISSING \
                    and f.default_factory is dataclasses.MISSING:
                raise UserError(f"method '{name}': field '{f.name}' of {cls.Config.__name__} has no default; give it "
                                f"one in the plugin or set method_config.{name}.{f.name} in the config")
        try:
            cfg = from_dict(cls.Config, given, source=source, prefix=f"method_config.{name}")
        except TypeError as exc:  # a Config whose own __init__/__post_init__ refuses its defaults
            raise UserError(f"method '{name}': cannot build its {cls.Config.__name__} ({exc})") from None
        out.append((name, cls, cfg))
    return out


def _check_target(spec: str, study: StudyConfig, world: World, parts: list, readable_by: Any) -> None:
    target = resolve_target(spec, world=world, scorer=study.scorer)
    for name, cls, cfg in parts:
        if issubclass(cls, Prompting) and cfg.instruction and not cfg.text and instruction_text(target) is None:
            raise UserError(f"prompting: target {target.name!r} has no instruction text; set "
                            f"method_config.{name}.text, or instruction: false for few-shot only")
    if set(parse_spec(spec)) == {"name"}:
        return  # organism targets size their splits themselves
    for a in study.anticipations:
        for seed in study.seeds:
            target.splits(a, seed, study.eval.sizes)
    if readable_by is not None:
        share = unknown_share(target, readable_by)
        if share > UNKNOWN_LIMIT:
            raise UserError(f"target {target.name!r}: {share:.0%} of its tokens are unknown to the organism's "
                            f"tokenizer (it reads only the words of its world), so every score would be chance; "
                            f"evaluate this data set on a Hugging Face model")


def preflight(study: StudyConfig, source: str = "", overrides: list[str] | tuple[str, ...] = ()) -> StudyConfig:
    """Check every input of `study` (see the module docstring) and return it with its paths resolved."""
    study = resolve_paths(study, source, overrides)
    for name in ("results_dir", "cache_dir"):
        value = getattr(study, name)
        if value is not None and not str(value).strip():
            raise ConfigError(source, name, value, "must not be empty (a folder; results_dir is relative to the "
                                                   "current directory)")
    parts = method_parts(study, source)
    specs = study.model_specs()
    for i, m in enumerate(specs):
        where = f"{source}: models[{i}]" if source else f"models[{i}]"
        check_dtype(m.dtype, where)
        if m.path != "organism":
            check_model_path(m.path, where)
            if any(issubclass(cls, LoraMethod) for _, cls, _ in parts):
                check_lora_targets(m.path, m.trust_remote_code, where)
    world = World(study.organism.world)
    external = any(set(parse_spec(t)) != {"name"} for t in study.targets)
    on_organism = any(m.path == "organism" for m in specs)
    tokenizer = build_tokenizer(world) if external and on_organism else None
    for spec in study.targets:
        if on_organism and spec in REAL_TARGETS:
            raise UserError(f"target {spec!r} is English text for a real language model; the organism reads and "
                            f"writes only the words of its world, so every score would be chance. Run it on a Hugging "
                            f"Face model (e.g. models: [smollm2-135m], as study/configs/real_cpu.yaml does), or use "
                            f"the organism's targets: {', '.join(ORGANISM_TARGETS)}")
        _check_target(spec, study, world, parts, tokenizer)
    return study
