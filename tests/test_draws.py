"""Organism draws and ceiling cells: the grid runs each organism model once per pretraining seed, ceiling cells cover
every context once per (model, draw, target, seed), and the results contract carries `draw` and `coverage` (old
stores without them still read). Nothing here pretrains an organism.

    OMP_NUM_THREADS=1 python -m pytest -q tests/test_draws.py
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

import study.run.cell as cell_mod
import study.run.grid as grid_mod
import study.run.runner as runner_mod
from analysis.table import ROW_FIELDS, model_identity, parse_cell, read_results
from study.core.errors import ConfigError, UserError
from study.run.cell import CellResult, cell_splits
from study.run.grid import expand, organisms, with_seed
from study.run.runner import run_study
from study.run.store import Store
from study.run.study_config import load_study

REPO = Path(__file__).resolve().parent.parent
STUDY = [sys.executable, "-m", "study.cli"]
HF = "{name: hf, path: /nowhere/hf-model}"  # expand() never loads a model, so the folder need not exist


def _ids(cells: list) -> list[str]:
    return [c.run_id for c in cells]


# ---- the grid -------------------------------------------------------------------------------------------------------
def test_draws_multiply_every_other_factor_and_set_the_organisms_seed():
    base = expand(load_study("micro", ["seeds=[0,1]", "anticipations=[0.5,1.0]"]), "micro")
    study = load_study("micro", ["seeds=[0,1]", "anticipations=[0.5,1.0]", "organism_draws=[0,1,2]"])
    cells = expand(study, "micro")
    assert len(cells) == 3 * len(base) and len(set(_ids(cells))) == len(cells)
    # each (draw, everything else) once: the draws times the single-draw grid's cells
    per_draw = Counter(c.draw for c in cells)
    assert per_draw == {0: len(base), 1: len(base), 2: len(base)}
    assert {c.key()[:1] + c.key()[2:] for c in cells if c.draw == 2} == \
        {c.key()[:1] + c.key()[2:] for c in cells if c.draw == 0}
    for c in cells:
        m = c.config["model"]
        assert c.config["draw"] == c.draw == m["organism"]["train"]["seed"]
        assert m["organism_key"] == with_seed(study.organism, c.draw).key()
        assert m["model_key"] == with_seed(study.organism, 0).key()  # one identity for all draws
        assert c.label.endswith(f" d={c.draw}")
    assert len({c.config["model"]["organism_key"] for c in cells}) == 3
    assert sorted(o.train.seed for o in organisms(cells)) == [0, 1, 2]  # each draw pretrained once
    assert _ids(expand(study, "again")) == _ids(cells)  # stable


def test_default_draw_is_the_organisms_own_seed():
    study = load_study("micro", ["organism.train.seed=5"])
    cells = expand(study, "micro")
    assert {c.draw for c in cells} == {5} and study.draws() == (5,)
    assert all(c.config["model"]["organism_key"] == study.organism.key() for c in cells)
    # a model's own organism override keeps its own seed when organism_draws is not set
    own = expand(load_study("micro", ["models=[organism, {name: other, organism: {train: {seed: 7}}}]"]), "micro")
    assert {(c.model, c.draw) for c in own} == {("organism", 0), ("other", 7)}


def test_hugging_face_models_have_no_draw_and_keep_their_ids():
    one = expand(load_study("micro", [f"models=[organism, {HF}]"]), "micro")
    three = expand(load_study("micro", [f"models=[organism, {HF}]", "organism_draws=[0,1,2]"]), "micro")
    hf1, hf3 = [c for c in one if c.model == "hf"], [c for c in three if c.model == "hf"]
    assert len(hf3) == len(hf1) == 3 and _ids(hf3) == _ids(hf1)  # not expanded over the organism's draws
    assert all(c.draw is None and "draw" not in c.config and "coverage" not in c.config for c in hf3)
    assert "d=" not in hf3[0].label and len(three) == len(hf1) + 3 * 3


def test_seeds_are_nested_in_draws_so_draws_share_no_split_labels_or_samples():
    """Seed s of draw d runs at s + DRAW_STRIDE * d: its coverage order, test prompts, labels and sampling random
    numbers are its own (a shared seed would make the draws' noise common, and the draw-level interval blind to it;
    analysis.calibration). Draw 0 and a Hugging Face model run at the seed itself."""
    from study.feedback.targets import organism_target
    from study.organism.world import World

    study = load_study("micro", ["seeds=[0,1]", "organism_draws=[0,1,2]", f"models=[organism, {HF}]"])
    cells = [c for c in expand(study, "micro") if c.method == "none" and c.config["anticipation"] == 0.5]
    seeds = {(c.draw, c.config["seed"]): c.run_seed for c in cells if c.draw is not None}
    assert seeds[(0, 0)] == 0 and seeds[(0, 1)] == 1
    assert seeds[(1, 0)] == grid_mod.DRAW_STRIDE and seeds[(2, 1)] == 1 + 2 * grid_mod.DRAW_STRIDE
    assert len(set(seeds.values())) == len(seeds) == 6
    assert {c.run_seed for c in cells if c.model == "hf"} == {0, 1}
    target = organism_target("sentiment", World(study.organism.world))
    by_draw = {c.draw: cell_splits(c, target) for c in cells
               if c.model == "organism" and c.config["seed"] == 0 and c.target == "sentiment"}
    assert by_draw[0] is target.splits(0.5, 0, study.eval.sizes)  # draw 0: the seed's own splits, as before
    prompts = {d: [r.prompt for r in s.test_covered] for d, s in by_draw.items()}
    orders = {d: s.coverage_order for d, s in by_draw.items()}
    assert prompts[0] != prompts[1] != prompts[2] and len(set(map(tuple, orders.values()))) > 1
    keys = {cell_mod.drift_key(c) for c in cells if c.model == "organism" and c.target == "sentiment"}
    assert len(keys) == 6  # a drift baseline per (draw, seed)
    for bad in (f"seeds=[{grid_mod.DRAW_STRIDE}]", "seeds=[-1]"):  # would repeat another draw's run seed
        with pytest.raises(ConfigError, match="seeds"):
            load_study("micro", [bad])


@pytest.mark.parametrize("value,needle", [
    ("[0,0]", "lists a value twice"),
    ("[-1]", "must be a non-negative integer"),
    ("[]", "must list at least one value"),
    ("[a]", "expected tuple[int, ...]"),
    ("[1.5]", "expected tuple[int, ...]"),
    ("[true]", "expected tuple[int, ...]"),
])
def test_bad_organism_draws_are_a_user_error_naming_the_field(value, needle):
    with pytest.raises(ConfigError) as exc:
        load_study("micro", [f"organism_draws={value}"])
    assert exc.value.exit_code == 2 and exc.value.field.startswith("organism_draws") and needle in str(exc.value)


def test_a_models_own_seed_conflicts_with_organism_draws():
    study = load_study("micro", ["models=[{name: x, organism: {train: {seed: 3}}}]", "organism_draws=[0,1]"])
    with pytest.raises(ConfigError, match=r"models\[0\]\.organism\.train\.seed.*organism_draws"):
        expand(study, "micro")


def test_cli_bad_organism_draws_exits_2_with_one_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RLHF_VS_STEERING_CACHE": str(tmp_path / "cache")}
    r = subprocess.run(STUDY + ["run", "micro", "--set", "organism_draws=[1,1]", "--dry-run", "--results",
                                str(tmp_path / "r")], capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=120)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "organism_draws" in lines[0], r.stderr
    assert not (tmp_path / "r").exists() and not (tmp_path / "cache").exists()


# ---- ceiling cells --------------------------------------------------------------------------------------------------
def test_ceiling_cells_once_per_model_draw_target_and_seed():
    over = ["targets=[sentiment, refusal]", "seeds=[0,1]", "anticipations=[0.5,1.0]", "labeler_noise=[0,0.2]",
            "organism_draws=[0,1]", f"models=[organism, {HF}]"]
    plain = expand(load_study("micro", over), "micro")
    study = load_study("micro", over + ["ceiling={method: prompting, budget: 4}"])
    cells = expand(study, "micro")
    ceiling = [c for c in cells if c.coverage == "ceiling"]
    assert [c for c in cells if c.coverage == "anticipation"] == plain  # the grid's cells are untouched
    keys = Counter((c.model, c.draw, c.target, c.config["seed"]) for c in ceiling)
    # (organism: 2 draws + hf: no draw) x 2 targets x 2 seeds, each once
    assert len(keys) == (2 + 1) * 2 * 2 and set(keys.values()) == {1}
    for c in ceiling:
        assert c.config["coverage"] == "ceiling" and c.method == "prompting" and c.config["budget"] == 4
        assert c.config["anticipation"] == 1.0 and c.config["labeler"]["noise"] == 0.0
        assert c.config["labeler"]["misspec"] == 0.0 and " a=ceiling " in c.label
    # not the anticipation-1.0 cell of the same method and budget: another cell, another id
    twin = [c for c in plain if c.method == "prompting" and c.config["budget"] == 4 and c.config["anticipation"] == 1.0
            and c.config["labeler"]["noise"] == 0 and c.draw == 0 and c.config["seed"] == 0 and c.model == "organism"
            and c.target == "sentiment"]
    mine = [c for c in ceiling if (c.model, c.draw, c.target, c.config["seed"]) == ("organism", 0, "sentiment", 0)]
    assert len(twin) == len(mine) == 1 and twin[0].run_id != mine[0].run_id
    # the budget defaults to the largest the study gives the method; method_config may name the ceiling's method
    auto = expand(load_study("micro", ["methods=[none]", "budgets=[2, 8]", "ceiling={method: prompting}",
                                       "method_config={prompting: {max_shots: 2}}"]), "micro")
    top = [c for c in auto if c.coverage == "ceiling"]
    assert len(top) == 1 and top[0].config["budget"] == 8
    assert top[0].config["method"]["parts"][0]["config"]["max_shots"] == 2


@pytest.mark.parametrize("value", ["{budget: 4}", "{method: prompting, budget: -1}", "{method: prompting, bogus: 1}",
                                   "{method: ' '}", "dpo"])
def test_bad_ceiling_is_a_user_error(value):
    with pytest.raises(ConfigError) as exc:
        load_study("micro", [f"ceiling={value}"])
    assert exc.value.field.startswith("ceiling") and exc.value.exit_code == 2


def test_ceiling_needs_targets_that_build_ceiling_splits(monkeypatch):
    data = str(REPO / "tests" / "data" / "sample_preference.jsonl")
    assert expand(load_study("micro", [f"targets=['{data}']", "ceiling={method: prompting}"]), "micro")

    class OldTarget:  # a target whose splits() predates ceilings
        name, version, has_proxy = "old", "1", True

        def splits(self, anticipation: float, seed: int = 0, sizes: Any = None) -> Any:
            raise AssertionError("not called")

    monkeypatch.setattr(grid_mod, "resolve_target", lambda spec, world=None, scorer=None: OldTarget())
    assert expand(load_study("micro"), "micro")  # fine without a ceiling
    with pytest.raises(UserError, match="cannot build ceiling splits"):
        expand(load_study("micro", ["ceiling={method: prompting}"]), "micro")
    with pytest.raises(UserError, match="unknown method"):
        expand(load_study("micro", ["ceiling={method: no_such_method}"]), "micro")


def test_a_ceiling_cell_asks_its_target_for_ceiling_splits():
    cells = expand(load_study("micro", ["ceiling={method: prompting, budget: 4}"]), "micro")
    calls: list[tuple[tuple, dict]] = []
    target = SimpleNamespace(splits=lambda *a, **kw: calls.append((a, kw)) or "splits")
    for c in cells:
        assert cell_splits(c, target) == "splits"
    sizes = load_study("micro").eval.sizes
    assert calls[0] == ((0.5, 0, sizes), {}) and calls[-1] == ((1.0, 0, sizes), {"ceiling": True})
    assert [kw for _, kw in calls].count({"ceiling": True}) == 1


# ---- provenance -----------------------------------------------------------------------------------------------------
def test_organism_provenance_names_the_weights(monkeypatch):
    cell = expand(load_study("micro", ["organism_draws=[3]"]), "micro")[0]
    seen: list[Any] = []
    monkeypatch.setattr(cell_mod, "organism_info",
                        lambda cfg, cache: seen.append(cfg.train.seed) or {"weights_sha256": "ab" * 32,
                                                                           "behavior_check": {"max_error": 0.04}})
    monkeypatch.setattr(cell_mod, "weights_hash", lambda m: "hashed-here")
    assert cell_mod._organism_provenance(cell, SimpleNamespace(model=None)) == {
        "organism_weights_sha256": "ab" * 32, "organism_behavior_check": {"max_error": 0.04}}
    assert seen == [3]  # the draw's own organism
    # a cache that does not record the hash: the loaded model is hashed
    monkeypatch.setattr(cell_mod, "organism_info", lambda cfg, cache: {"key": "k"})
    assert cell_mod._organism_provenance(cell, SimpleNamespace(model=None)) == {
        "organism_weights_sha256": "hashed-here"}
    hf = [c for c in expand(load_study("micro", [f"models=[{HF}]"]), "micro")][0]
    assert cell_mod._organism_provenance(hf, SimpleNamespace(model=None)) == {}


def test_cell_record_carries_per_context_results():
    contexts = {"books/review": {"behavior": [0.5, 8], "fluency": [1.0, 8]}}
    rec = CellResult("abc", "ok", None, {}, {}, [], [], None, contexts).record()
    assert rec["contexts"] == contexts
    assert CellResult("abc", "failed", "x", {}, {}).record()["contexts"] is None


# ---- the results contract -------------------------------------------------------------------------------------------
def _row(run_id: str, **more: Any) -> dict[str, Any]:
    row = {"run_id": run_id, "model": "organism", "method": "none", "target": "sentiment", "target_version": "2",
           "budget": 0, "feedback_cost": 0.0, "labels_used": 0, "anticipation": 0.5, "labeler_noise": 0.0,
           "labeler_misspec": 0.0, "seed": 0, "split": "covered", "metric": "behavior", "value": 0.5, "n": 8}
    return row | more


def _write(store: Store, run_id: str, config: dict[str, Any], row: dict[str, Any]) -> None:
    store.write({"run_id": run_id, "status": "ok", "error": None, "config": config, "provenance": {}, "rows": [row]},
                [])


def _organism(seed: int, model_key: str | None = None) -> dict[str, Any]:
    model = {"name": "organism", "path": "organism", "organism_key": f"key-of-seed-{seed}",
             "organism": {"train": {"seed": seed}, "world": {"sharing": 0.4}}}
    return {"model": model | ({"model_key": model_key} if model_key else {})}


def test_rows_carry_draw_and_coverage_and_old_rows_still_read(tmp_path):
    assert {"draw", "coverage"} <= set(ROW_FIELDS)
    store = Store(tmp_path)
    # a store written before draws and ceilings existed: no `draw`, no `coverage`, no `model_key`
    _write(store, "old0", _organism(0), _row("old0"))
    _write(store, "old2", _organism(2), _row("old2", seed=1))
    _write(store, "bare", {}, _row("bare", model="hand-written"))
    # new rows: two draws of one organism config, a ceiling cell and a Hugging Face model (no draw)
    for rid, draw, coverage in (("new0", 0, "anticipation"), ("new1", 1, "anticipation"), ("ceil", 1, "ceiling")):
        _write(store, rid, _organism(draw, model_key="family"), _row(rid, draw=draw, coverage=coverage))
    _write(store, "hf", {"model": {"name": "hf", "path": "org/model"}}, _row("hf", model="hf", draw=None,
                                                                             coverage="anticipation"))
    assert set(store.status()) == {"old0", "old2", "bare", "new0", "new1", "ceil", "hf"}  # all count as stored
    res = read_results(tmp_path)
    assert res.skipped == []
    t = res.table.set_index("run_id")
    assert str(t["draw"].dtype) == "Int64" and pd.isna(t.loc["hf", "draw"])
    assert (t.loc["old0", "draw"], t.loc["old2", "draw"], t.loc["bare", "draw"]) == (0, 2, 0)  # missing: 0 or seed
    assert set(t.loc[["old0", "old2", "bare", "new0", "hf"], "coverage"]) == {"anticipation"}
    assert t.loc["ceil", "coverage"] == "ceiling" and (t.loc["new1", "draw"], t.loc["ceil", "draw"]) == (1, 1)
    # draws of one organism config are one model; old stores keep their per-draw keys
    assert t.loc["new0", "model_id"] == t.loc["new1", "model_id"] == "organism:family"
    assert t.loc["old0", "model_id"] != t.loc["old2", "model_id"]
    # the table round-trips through Parquet with its nullable draw column
    back = pd.read_parquet(store.export_parquet())
    pd.testing.assert_frame_equal(back, store.table())


def test_bad_draw_or_coverage_values_make_a_cell_unreadable(tmp_path):
    store = Store(tmp_path)
    _write(store, "a", {}, _row("a", draw="zero"))
    _write(store, "b", {}, _row("b", coverage="everything"))
    _write(store, "c", {}, _row("c", draw=True))
    for name, needle in (("a", "'draw'"), ("b", "'coverage'"), ("c", "'draw'")):
        with pytest.raises(ValueError, match=needle):
            parse_cell(tmp_path / "cells" / f"{name}.json")
    with pytest.warns(UserWarning, match="count as missing"):
        assert store.status() == {}


def test_model_identity_ignores_the_draw():
    study = load_study("micro", ["organism_draws=[0,4]"])
    configs = [c.config for c in expand(study, "micro")]
    assert {model_identity(c, "organism") for c in configs} == {f"organism:{study.organism.key()}"}
    assert model_identity(_organism(3), "x") == "organism:key-of-seed-3"  # a store from before draws


# ---- the runner -----------------------------------------------------------------------------------------------------
def test_dry_run_lists_each_draw(tmp_path):
    out = io.StringIO()
    summary = run_study("micro", ["organism_draws=[0,2]", "ceiling={method: prompting, budget: 4}",
                                  f"cache_dir={tmp_path / 'cache'}"], dry_run=True, results=tmp_path / "r", out=out)
    lines = out.getvalue().splitlines()
    head = lines[0].split()
    assert head[:5] == ["status", "run_id", "model", "draw", "method"]
    rows = [dict(zip(head, line.split())) for line in lines[1:-1]]
    assert summary.total == len(rows) == 2 * (3 + 1)
    assert Counter(r["draw"] for r in rows) == {"0": 4, "2": 4}
    assert Counter(r["anticipation"] for r in rows) == {"0.5": 6, "ceiling": 2}
    assert "organism draws (pretraining seeds): 0, 2" in lines[-1]
    assert not (tmp_path / "r").exists() and not (tmp_path / "cache").exists()


class _Console:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def print(self, text: str, **_: Any) -> None:
        self.lines.append(text)


def test_each_missing_draw_is_pretrained_once(monkeypatch):
    cells = expand(load_study("micro", ["organism_draws=[0,1,2]", "seeds=[0,1]"]), "micro")
    cached = {with_seed(load_study("micro").organism, 1).key()}
    monkeypatch.setattr(runner_mod, "organism_info", lambda org, cache: {} if org.key() in cached else None)
    done: list[int] = []
    monkeypatch.setattr(runner_mod, "pretrain_with_progress", lambda org, cache, console: done.append(org.train.seed))
    runner_mod._ensure_organisms(cells, _Console(), processes=1)
    assert done == [0, 2]  # one after another, draw 1 being cached already
    # in parallel: every missing draw once, and a draw that fails is said after the others are done
    monkeypatch.setattr(runner_mod, "ProcessPoolExecutor", lambda n, mp_context, **kw: ThreadPoolExecutor(n))
    jobs: list[tuple[int, int]] = []

    def fake(config: dict[str, Any], cache: str | None, threads: int) -> tuple[str, float, str | None]:
        jobs.append((config["train"]["seed"], threads))
        return f"k{config['train']['seed']}", 1.0, "did not converge" if config["train"]["seed"] == 2 else None

    monkeypatch.setattr(runner_mod, "_pretrain_one", fake)
    console = _Console()
    with pytest.raises(UserError, match="did not converge"):
        runner_mod._ensure_organisms(cells, console, processes=4)
    assert sorted(s for s, _ in jobs) == [0, 2] and "in 2 processes" in console.lines[0]
    assert len(console.lines) == 3
    # three draws on two processes start at once (3 one-thread jobs on 2 cores: 1.5 rounds, not 2)
    jobs.clear()
    monkeypatch.setattr(runner_mod, "organism_info", lambda org, cache: None)
    console = _Console()
    with pytest.raises(UserError, match="did not converge"):
        runner_mod._ensure_organisms(cells, console, processes=2)
    assert sorted(s for s, _ in jobs) == [0, 1, 2] and "in 3 processes" in console.lines[0]


def test_dial_budgets_run_the_varied_dials_at_their_budgets_only():
    over = ["design=one_at_a_time", "methods=[none, prompting]", "budgets=[4, 8, 16]", "anticipations=[0.5, 0.25]",
            "labeler_noise=[0, 0.2]"]
    full = expand(load_study("micro", over), "micro")
    cells = expand(load_study("micro", over + ["dial_budgets=[8]"]), "micro")
    def key(c):
        return (c.config["method"]["name"], c.config["anticipation"], c.config["labeler"]["noise"], c.config["budget"])
    centre = {key(c) for c in cells if (c.config["anticipation"], c.config["labeler"]["noise"]) == (0.5, 0.0)}
    assert {k for k in centre if k[0] == "prompting"} == {("prompting", 0.5, 0.0, b) for b in (4, 8, 16)}
    dials = {key(c) for c in cells if (c.config["anticipation"], c.config["labeler"]["noise"]) != (0.5, 0.0)}
    assert {k for k in dials if k[0] == "prompting"} == {("prompting", 0.25, 0.0, 8), ("prompting", 0.5, 0.2, 8)}
    assert {k for k in dials if k[0] == "none"} == {("none", 0.25, 0.0, 0), ("none", 0.5, 0.2, 0)}
    assert len(full) - len(cells) == 4  # prompting at 4 and 16 under both varied dials
    with pytest.raises(ConfigError, match="dial_budgets"):
        load_study("micro", ["dial_budgets=[8]"])  # micro's design is factorial
    with pytest.raises(ConfigError, match="anticipations"):
        load_study("micro", ["anticipations=[0.0]"])


def test_a_method_with_its_own_budgets_runs_the_dials_at_its_own_budget():
    """prompting buys at most a few demonstrations (budgets [0, 4]): at dial budget 8 it runs at 4, not at a budget
    it cannot spend."""
    over = ["design=one_at_a_time", "methods=[prompting]", "budgets=[8, 16]", "method_budgets={prompting: [0, 4]}",
            "anticipations=[0.5, 0.25]", "dial_budgets=[8, 2]"]
    cells = expand(load_study("micro", over), "micro")
    dial = {c.config["budget"] for c in cells if c.config["anticipation"] == 0.25}
    assert dial == {4, 0}  # 8 -> 4 (its largest not above 8), 2 -> 0
    assert {c.config["budget"] for c in cells if c.config["anticipation"] == 0.5} == {0, 4}
