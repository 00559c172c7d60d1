"""The grid: a study config expanded into cells, each named by a hash of its fully resolved configuration.

A cell is one (model, draw, method, target, budget, anticipation, labeler noise, labeler misspecification, seed).
Seeds are nested in draws: a cell draws its data, labels, training and samples with `run_seed` (seed 0 of draw 1 is
not seed 0 of draw 0), so the draws are independent replicates.
Its configuration is resolved completely before hashing: the organism's full config (and cache key), every field of
each method's own `Config` dataclass (defaults included), the target's version, the labeler's costs and the evaluation
sizes. So a changed default recomputes the cells it touches, and an unchanged one never does. Methods that use no
labels (`uses_labels = False`, e.g. `none`) run once per condition, at budget 0, whatever `budgets` lists.

Organism draws: an organism model runs once per pretraining seed in `organism_draws`; the draw's organism is the
model's organism config with `train.seed = draw`, and the cell config holds `draw` beside it, with the model's
`model_key` (its organism key at train.seed 0, the same for every draw: the analysis's model identity, so draws of one
organism config are replicates of one model). A Hugging Face model has no draw: its config has no `draw` key, so its
cell ids are those it had before draws existed. Ceiling cells (`ceiling` in the study config) carry
`coverage: "ceiling"`; anticipation cells carry no `coverage` key (read as "anticipation"), for the same reason.

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
    cells[0].run_id, cells[0].label        # ('3f0c...', 'organism none sentiment b=0 a=0.5 e=0 p=0 s=0 d=0')
    cells[0].draw, cells[0].coverage       # (0, 'anticipation')
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import itertools
import json
from dataclasses import dataclass
from typing import Any

from study.core.config import from_dict, to_dict
from study.core.errors import ConfigError, UserError
from study.core.provenance import code_fingerprint
from study.run.study_config import DRAW_STRIDE, ModelSpec, StudyConfig
from study.organism.pretrain import OrganismConfig
from methods import base as methods_base, stacking as methods_stacking
from methods.registry import part_config, resolve, split_variant
from study.organism.world import World
from study.feedback.catalog import resolve_target

# Bump when the meaning of a stored cell changes (every id changes with it). 2: seeds nested in organism draws.
CELL_VERSION = 2


def run_seed(config: dict[str, Any]) -> int:
    """The seed a cell draws everything with: its splits (coverage order, feedback pool, test prompts), the labeler's
    noise, the method's training and the evaluation's sampling. Replicate seed `seed` of organism draw `draw` runs at
    `seed + DRAW_STRIDE * draw`, so seeds are nested in draws: seed 0 of draw 1 shares nothing with seed 0 of draw 0.
    Shared seeds would make the design crossed (one coverage order, one test set and one stream of sampling random
    numbers for every draw), and a draw-level interval cannot see that shared part (analysis.calibration, `sd_shared`).
    Draw 0 and a Hugging Face model (no draw) run at `seed` itself."""
    return int(config["seed"]) + DRAW_STRIDE * int(config.get("draw") or 0)


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
    def draw(self) -> int | None:
        """The organism's pretraining draw (its train.seed); None for a Hugging Face model."""
        return self.config.get("draw")

    @property
    def coverage(self) -> str:
        """"anticipation" (feedback covers the anticipated contexts) or "ceiling" (every context)."""
        return self.config.get("coverage", "anticipation")

    @property
    def label(self) -> str:
        c = self.config
        a = "ceiling" if self.coverage == "ceiling" else f"{c['anticipation']:g}"
        return (f"{c['model']['name']} {c['method']['name']} {c['target']['name']} b={c['budget']} "
                f"a={a} e={c['labeler']['noise']:g} p={c['labeler']['misspec']:g} s={c['seed']}"
                + (f" d={self.draw}" if self.draw is not None else ""))

    @property
    def run_seed(self) -> int:
        """The seed everything in the cell is drawn with (`run_seed`)."""
        return run_seed(self.config)

    def key(self) -> tuple:
        """Fields as a tuple, for sorting and display."""
        c = self.config
        return (c["model"]["name"], -1 if self.draw is None else self.draw, c["target"]["name"], c["method"]["name"],
                c["budget"], self.coverage, c["anticipation"], c["labeler"]["noise"], c["labeler"]["misspec"],
                c["seed"])


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


def with_seed(org: OrganismConfig, seed: int) -> OrganismConfig:
    """The organism config `org` pretrained with seed `seed` (one draw of it)."""
    return dataclasses.replace(org, train=dataclasses.replace(org.train, seed=seed))


def _models(spec: ModelSpec, index: int, study: StudyConfig, source: str
            ) -> list[tuple[int | None, dict[str, Any], OrganismConfig | None]]:
    """(draw, resolved model entry, organism config) per draw of the model: one (None, entry, None) for a Hugging Face
    model, one per `organism_draws` entry for an organism."""
    if spec.path != "organism":
        return [(None, {"name": spec.name, "path": spec.path, "dtype": spec.dtype,
                        "trust_remote_code": spec.trust_remote_code}, None)]
    where = f"models[{index}].organism"
    train = spec.organism.get("train")
    if study.organism_draws is not None and isinstance(train, dict) and "seed" in train:
        raise ConfigError(source, f"{where}.train.seed", spec.organism["train"]["seed"],
                          "conflicts with organism_draws, which sets every organism's pretraining seed; list the "
                          "seeds in organism_draws instead")
    org = from_dict(OrganismConfig, _merge(to_dict(study.organism), spec.organism), source=source,
                    prefix=where) if spec.organism else study.organism
    model_key = with_seed(org, 0).key()  # one identity for every draw of this organism config
    out = []
    for draw in study.draws(org):
        drawn = with_seed(org, draw)
        out.append((draw, {"name": spec.name, "path": "organism", "organism": to_dict(drawn),
                           "organism_key": drawn.key(), "model_key": model_key, "dtype": spec.dtype,
                           "trust_remote_code": False}, drawn))
    return out


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
        cfg = from_dict(cls.Config, part_config(name, method_config), source=source, prefix=f"method_config.{name}")
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


def takes_ceiling(target: Any) -> bool:
    """Whether the target's splits() can build ceiling splits (a `ceiling` keyword)."""
    try:
        return "ceiling" in inspect.signature(target.splits).parameters
    except (TypeError, ValueError):
        return False


def _target(spec: str, org: Any, study: StudyConfig) -> dict[str, Any]:
    world = World((org or study.organism).world)
    target = resolve_target(spec, world=world, scorer=study.scorer)
    if any(study.labeler_misspec) and not target.has_proxy:
        raise UserError(f"target {spec!r} has no proxy feature, so labeler_misspec "
                        f"{list(study.labeler_misspec)} cannot apply; use labeler_misspec: [0.0]")
    if study.ceiling is not None and not takes_ceiling(target):
        raise UserError(f"ceiling: target {spec!r} cannot build ceiling splits (its splits() takes no `ceiling` "
                        f"keyword); drop `ceiling` from the config or run this target in a study without it")
    return {"name": target.name, "spec": spec, "version": str(target.version), "scorer": study.scorer}


def expand(study: StudyConfig, source: str = "", cache_dir: str | None = None) -> list[Cell]:
    """Every cell of the study, in a fixed order. Raises UserError on an unknown method or target, a method class
    that does not satisfy the Protocol, or a method_config that does not fit the method's Config."""
    methods = {}
    for spec in study.methods:
        methods[spec] = resolve_method(spec, study.method_config, source)
    ceiling = resolve_method(study.ceiling.method, study.method_config, source) if study.ceiling else None
    specs = list(study.methods) + ([study.ceiling.method] if study.ceiling else [])
    named = {p.strip() for spec in specs for p in spec.split("+")}
    named |= {split_variant(p)[0] for p in named}  # a variant's base method may carry the config it shares
    for key in study.method_config:
        if key not in named:
            raise ConfigError(source, f"method_config.{key}", study.method_config[key],
                              f"'{key}' is not among the study's methods ({', '.join(specs)})")
    cells: list[Cell] = []
    seen: set[str] = set()

    def add(config: dict[str, Any]) -> None:
        run_id = cell_id(config)
        if run_id not in seen:  # budget-free methods collapse to one cell per condition
            seen.add(run_id)
            cells.append(Cell(run_id, config, cache_dir))

    for i, spec in enumerate(study.model_specs()):
        for draw, model, org in _models(spec, i, study, source):
            targets = [_target(t, org, study) for t in study.targets]
            drawn = {} if draw is None else {"draw": draw}
            centre = conditions(study)[0]
            for target, seed, (a, e, p), mspec in itertools.product(targets, study.seeds, conditions(study),
                                                                    study.methods):
                method, labels = methods[mspec]
                budgets = study.method_budgets.get(mspec, study.budgets) if labels else (0,)
                if labels and study.dial_budgets is not None and (a, e, p) != centre:
                    # a varied dial: its slope at the dial budgets only; a method with budgets of its own (prompting
                    # buys at most a few demonstrations) at its largest one not above each dial budget
                    own = study.method_budgets.get(mspec)
                    budgets = tuple(dict.fromkeys(
                        max([x for x in own if x <= b] or [min(own)]) if own else b for b in study.dial_budgets))
                for budget in budgets:
                    add({"v": CELL_VERSION, "model": model, **drawn, "method": method, "target": target,
                         "budget": budget, "anticipation": a,
                         "labeler": to_dict(study.labeler) | {"noise": e, "misspec": p}, "seed": seed,
                         "eval": to_dict(study.eval)})
            if ceiling is not None:  # every context covered, clean labels, the top budget, one strong method
                method, labels = ceiling
                for target, seed in itertools.product(targets, study.seeds):
                    add({"v": CELL_VERSION, "model": model, **drawn, "method": method, "target": target,
                         "budget": study.ceiling_budget() if labels else 0, "anticipation": 1.0,
                         "coverage": "ceiling", "labeler": to_dict(study.labeler) | {"noise": 0.0, "misspec": 0.0},
                         "seed": seed, "eval": to_dict(study.eval)})
    return cells


def organisms(cells: list[Cell]) -> list[Any]:
    """The distinct organism configs the cells need (to pretrain them once, before any worker starts)."""

    out: dict[str, Any] = {}
    for c in cells:
        m = c.config["model"]
        if m["path"] == "organism" and m["organism_key"] not in out:
            out[m["organism_key"]] = from_dict(OrganismConfig, m["organism"])
    return list(out.values())
