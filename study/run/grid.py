"""The grid: a study config expanded into cells, each named by a hash of its fully resolved configuration.

A cell is one (model, method, target, budget, anticipation, labeler noise, labeler misspecification, seed). Its
configuration is resolved completely before hashing: the organism's full config (and cache key), every field of each
method's own `Config` dataclass (defaults included), the target's version, the labeler's costs and the evaluation
sizes. So a changed default recomputes the cells it touches, and an unchanged one never does. Methods that use no
labels (`uses_labels = False`, e.g. `none`) run once per condition, at budget 0, whatever `budgets` lists.

The code is part of the id too: each method part carries `code`, a fingerprint of the source files that compute it
(study.core.provenance.code_fingerprint): the module defining the class (a built-in method's file or a user's
`module:Class` file), every module it draws on from the `methods` package or from its own top-level package
(transitively: steering -> methods.steering_vectors, dpo -> methods.trained, methods.selection, ...), and always
methods.base and methods.stacking, which fit every method. So editing a method's file recomputes that method's cells
and no others. Changes below `methods/` (study.lm, study.feedback, the organism) and in third-party packages are not
covered: the git revision and package versions in each cell's provenance record them. `label_key` is the id without
the fingerprints: a stored cell with the same label key but another id was computed by older code ("stale").

Stacked methods ("dpo+steering") are resolved part by part; `method_config` is keyed by part name (or `module:Class`)
and applies wherever that part appears. `method_budgets` gives a method its own budgets (e.g. prompting, which can
spend only a few labels, or an expensive method run at fewer budgets).

    cells = expand(load_study("micro"), source="micro")
    cells[0].run_id, cells[0].label        # ('3f0c...', 'organism none sentiment b=0 a=0.5 e=0 p=0 s=0')
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from typing import Any

from study.core.config import from_dict, to_dict
from study.core.errors import ConfigError, UserError
from study.core.provenance import code_fingerprint
from study.run.study_config import ModelSpec, StudyConfig
from study.organism.pretrain import OrganismConfig
from methods import base as methods_base, stacking as methods_stacking
from methods.registry import resolve
from study.organism.world import World
from study.feedback.catalog import resolve_target

CELL_VERSION = 1  # bump when the meaning of a stored cell changes (every id changes with it)


@dataclass(frozen=True)
class Cell:
    run_id: str
    config: dict[str, Any]  # JSON-ready, fully resolved; run_id is its hash
    cache_dir: str | None = None  # where organisms are cached (not part of the id)

    @property
    def model(self) -> str:
        return self.config["model"]["name"]

    @property
    def method(self) -> str:
        return self.config["method"]["name"]

    @property
    def target(self) -> str:
        return self.config["target"]["name"]

    @property
    def label(self) -> str:
        c = self.config
        return (f"{c['model']['name']} {c['method']['name']} {c['target']['name']} b={c['budget']} "
                f"a={c['anticipation']:g} e={c['labeler']['noise']:g} p={c['labeler']['misspec']:g} s={c['seed']}")

    def key(self) -> tuple:
        """Fields as a tuple, for sorting and display."""
        c = self.config
        return (c["model"]["name"], c["target"]["name"], c["method"]["name"], c["budget"], c["anticipation"],
                c["labeler"]["noise"], c["labeler"]["misspec"], c["seed"])


def cell_id(config: dict[str, Any]) -> str:
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def label_key(config: dict[str, Any]) -> str:
    """The cell's id without its methods' code fingerprints (equal for the same cell computed by other code)."""
    method = config["method"]
    parts = [{k: v for k, v in p.items() if k != "code"} for p in method["parts"]]
    return cell_id(config | {"method": method | {"parts": parts}})


def method_code(cls: type) -> str:
    """The fingerprint of the code that computes method class `cls` (see the module docstring)."""
    return code_fingerprint(cls, packages=("methods",), also=(methods_base, methods_stacking))


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _model(spec: ModelSpec, index: int, study: StudyConfig, source: str) -> tuple[dict[str, Any], Any]:
    """The resolved model entry and its organism config (None for a Hugging Face model)."""
    if spec.path != "organism":
        return {"name": spec.name, "path": spec.path, "dtype": spec.dtype,
                "trust_remote_code": spec.trust_remote_code}, None

    org = from_dict(OrganismConfig, _merge(to_dict(study.organism), spec.organism), source=source,
                    prefix=f"models[{index}].organism") if spec.organism else study.organism
    return {"name": spec.name, "path": "organism", "organism": to_dict(org), "organism_key": org.key(),
            "dtype": spec.dtype, "trust_remote_code": False}, org


def uses_labels(cls: type, config: Any) -> bool:
    attr = getattr(cls, "uses_labels", True)
    return bool(attr(config)) if callable(attr) else bool(attr)


def resolve_method(spec: str, method_config: dict[str, dict[str, Any]], source: str = "") -> tuple[dict, bool]:
    """({"name": spec, "parts": [{"name", "config", "code"}...]}, whether it uses labels). Configs are checked
    against each part's own Config dataclass; errors name the file and `method_config.<part>.<field>`. `code` is the
    part's code fingerprint (`method_code`)."""

    parts, labels = [], False
    for name in spec.split("+"):
        name = name.strip()
        cls = resolve(name)
        cfg = from_dict(cls.Config, method_config.get(name) or {}, source=source, prefix=f"method_config.{name}")
        parts.append({"name": name, "config": to_dict(cfg), "code": method_code(cls)})
        labels = labels or uses_labels(cls, cfg)
    return {"name": spec, "parts": parts}, labels


def conditions(study: StudyConfig) -> list[tuple[float, float, float]]:
    """(anticipation, noise, misspec) triples: all combinations, or each dial varied alone around its first value."""
    a_, e_, p_ = study.anticipations, study.labeler_noise, study.labeler_misspec
    if study.design == "factorial":
        return list(itertools.product(a_, e_, p_))
    out = [(a, e_[0], p_[0]) for a in a_] + [(a_[0], e, p_[0]) for e in e_[1:]]
    return out + [(a_[0], e_[0], p) for p in p_[1:]]


def _target(spec: str, org: Any, study: StudyConfig) -> dict[str, Any]:
    world = World((org or study.organism).world)
    target = resolve_target(spec, world=world, scorer=study.scorer)
    if any(study.labeler_misspec) and not target.has_proxy:
        raise UserError(f"target {spec!r} has no proxy feature, so labeler_misspec "
                        f"{list(study.labeler_misspec)} cannot apply; use labeler_misspec: [0.0]")
    return {"name": target.name, "spec": spec, "version": str(target.version), "scorer": study.scorer}


def expand(study: StudyConfig, source: str = "", cache_dir: str | None = None) -> list[Cell]:
    """Every cell of the study, in a fixed order. Raises UserError on an unknown method or target, a method class
    that does not satisfy the Protocol, or a method_config that does not fit the method's Config."""
    methods = {}
    for spec in study.methods:
        methods[spec] = resolve_method(spec, study.method_config, source)
    named = {p.strip() for spec in study.methods for p in spec.split("+")}
    for key in study.method_config:
        if key not in named:
            raise ConfigError(source, f"method_config.{key}", study.method_config[key],
                              f"'{key}' is not among the study's methods ({', '.join(study.methods)})")
    cells: list[Cell] = []
    seen: set[str] = set()
    for i, spec in enumerate(study.model_specs()):
        model, org = _model(spec, i, study, source)
        targets = [_target(t, org, study) for t in study.targets]
        for target, seed, (a, e, p), mspec in itertools.product(targets, study.seeds, conditions(study),
                                                                study.methods):
            method, labels = methods[mspec]
            for budget in (study.method_budgets.get(mspec, study.budgets) if labels else (0,)):
                config = {"v": CELL_VERSION, "model": model, "method": method, "target": target, "budget": budget,
                          "anticipation": a, "labeler": to_dict(study.labeler) | {"noise": e, "misspec": p},
                          "seed": seed, "eval": to_dict(study.eval)}
                run_id = cell_id(config)
                if run_id not in seen:  # budget-free methods collapse to one cell per condition
                    seen.add(run_id)
                    cells.append(Cell(run_id, config, cache_dir))
    return cells


def organisms(cells: list[Cell]) -> list[Any]:
    """The distinct organism configs the cells need (to pretrain them once, before any worker starts)."""

    out: dict[str, Any] = {}
    for c in cells:
        m = c.config["model"]
        if m["path"] == "organism" and m["organism_key"] not in out:
            out[m["organism_key"]] = from_dict(OrganismConfig, m["organism"])
    return list(out.values())
