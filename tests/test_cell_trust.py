"""Results a researcher can trust: a cell's id covers its method's code, a cell leaves its worker's model as it found
it, and a hung or dying cell never blocks a study.

Studies here run on the micro organism (tests/conftest.py) with the plugin methods of tests/runner_helpers.py.
"""

from __future__ import annotations

import io
import sys
import time
import uuid
from pathlib import Path

import pytest

from study.core.errors import ConfigError
from study.core.provenance import code_modules
from study.run.cell import run_cell
from study.run.grid import Cell, expand, label_key, method_code, methods_base, methods_stacking
from study.run.pristine import leftovers, snapshot
from study.run.runner import run_study
from study.run.store import Store
from study.run.study_config import load_study
from methods.registry import resolve
from methods.trained import strip_adapters

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
CACHE = str(REPO / ".cache" / "test-organism")

PLUGIN = '''"""A user's method in its own file."""
from dataclasses import dataclass

from methods.base import FitContext, Intervention


@dataclass(frozen=True)
class PlugConfig:
    pass


class Plug:
    name = "plug"
    Config = PlugConfig
    uses_labels = False

    def __init__(self, config=None):
        self.config = config

    def fit(self, ctx: FitContext) -> Intervention:
        return Intervention()  # version 1
'''


@pytest.fixture(autouse=True)
def _importable(monkeypatch):
    """runner_helpers (tests/) and the repository importable here and in spawned workers."""
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.syspath_prepend(str(REPO))


def _records(results: Path) -> dict[str, dict]:
    """The stored cell records by method name."""
    store = Store(results)
    return {rec["config"]["method"]["name"]: rec for rec in map(store.read, store.status())}


def _plugin(tmp_path: Path, monkeypatch) -> tuple[str, Path]:
    """A fresh plugin module in tmp_path (a unique name, so no earlier import is reused): ('mod:Plug', its file)."""
    mod = f"plug_{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{mod}.py"
    path.write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    return f"{mod}:Plug", path


# ---- 1. a cell's id covers the code that computed it -----------------------------------------------------------------
def test_code_fingerprint_covers_the_methods_file_and_its_helpers_only(tmp_path, monkeypatch):
    plug, path = _plugin(tmp_path, monkeypatch)
    (tmp_path / "unrelated.py").write_text("x = 1\n")
    over = [f"cache_dir={CACHE}", f"methods=[none, prompting, '{plug}']"]
    before = {c.method + str(c.config["budget"]): c for c in expand(load_study("micro", over), "micro")}
    assert all(len(p["code"]) == 16 for c in before.values() for p in c.config["method"]["parts"])
    (tmp_path / "unrelated.py").write_text("x = 2  # edited\n")
    assert {c.run_id for c in expand(load_study("micro", over), "micro")} == {c.run_id for c in before.values()}
    path.write_text(PLUGIN.replace("# version 1", "# version 2, edited"))
    after = {c.method + str(c.config["budget"]): c for c in expand(load_study("micro", over), "micro")}
    changed = {k for k in after if after[k].run_id != before[k].run_id}
    assert changed == {f"{plug}0"}
    assert label_key(after[f"{plug}0"].config) == label_key(before[f"{plug}0"].config)  # same cell, other code
    # the modules hashed: the method's file, the `methods` modules it draws on, and always base and stacking
    mods = lambda name: code_modules(resolve(name), ("methods",), (methods_base, methods_stacking))  # noqa: E731
    # steering buys comparisons through methods.trained when `labels: comparisons` (a label-type crossing)
    assert mods("steering") == ["methods.adapter_slot", "methods.base", "methods.selection", "methods.stacking", "methods.steering",
                                "methods.steering_vectors", "methods.trained", "methods.trl_presets"]
    assert {"methods.trained", "methods.selection", "methods.trl_presets"} <= set(mods("dpo"))
    assert "methods.dpo" not in mods("steering") and "methods.steering" not in mods("none")
    assert method_code(resolve("steering")) != method_code(resolve("steering_pca"))


def test_an_edited_plugin_reruns_only_its_cells_and_the_dry_run_says_stale(tmp_path, monkeypatch, micro_organism):
    plug, path = _plugin(tmp_path, monkeypatch)
    over = [f"cache_dir={CACHE}", f"methods=[none, '{plug}']"]
    results = tmp_path / "r"
    first = run_study("micro", over, results=results, workers=1)
    assert first.exit_code == 0 and first.computed == 2
    old = _records(results)
    path.write_text(PLUGIN.replace("return Intervention()  # version 1",
                                   "return Intervention()  # version 2: one line edited"))
    out = io.StringIO()
    run_study("micro", over, results=results, dry_run=True, out=out)
    lines = {line.split()[4]: line.split()[0] for line in out.getvalue().splitlines()[1:-1]}  # status .. draw method
    assert lines == {"none": "done", plug: "stale"}, out.getvalue()
    assert "1 to run (1 stale" in out.getvalue()
    again = run_study("micro", over, results=results, workers=1)
    assert again.exit_code == 0 and again.computed == 1 and again.stored_before == 1
    ids = {c.method: c.run_id for c in expand(load_study("micro", over), "micro")}
    assert ids["none"] == old["none"]["run_id"] and ids[plug] != old[plug]["run_id"]
    new = Store(results).read(ids[plug])
    assert new["status"] == "ok" and new["provenance"]["label_key"] == label_key(old[plug]["config"])
    assert Store(results).read(old[plug]["run_id"])["status"] == "ok"  # the earlier result is left in place


def test_a_method_edited_after_planning_fails_its_cell(tmp_path, monkeypatch, micro_organism):
    plug, path = _plugin(tmp_path, monkeypatch)
    cell = expand(load_study("micro", [f"cache_dir={CACHE}", f"methods=['{plug}']"]), "micro", CACHE)[0]
    path.write_text(PLUGIN + "\n# edited while the study ran\n")
    result = run_cell(cell)
    assert result.status == "failed" and "its source changed after the study was planned" in result.error


# ---- 2. a cell leaves the worker as it found it ----------------------------------------------------------------------
def test_leftovers_names_hooks_adapters_and_changed_weights(micro_organism):
    import torch
    from peft import LoraConfig, inject_adapter_in_model

    import copy

    model = copy.deepcopy(micro_organism[0])  # a copy: the session's shared model stays untouched by the probes
    snap = snapshot(model)
    assert leftovers(model, snap) == []
    handle = model.get_submodule("model.layers.1").register_forward_pre_hook(lambda m, a: None)
    assert leftovers(model, snap) == ["a forward pre-hook on model.layers.1"]
    handle.remove()
    weight = model.get_submodule("model.layers.0.mlp.up_proj").weight
    saved = weight.detach().clone()
    with torch.no_grad():
        try:
            weight.mul_(1.001)
            assert leftovers(model, snap) == ["changed parameter model.layers.0.mlp.up_proj.weight"]
        finally:
            weight.copy_(saved)
    assert leftovers(model, snap) == []
    fresh = snapshot(model)
    inject_adapter_in_model(LoraConfig(r=2, target_modules=["q_proj"]), model, adapter_name="probe")
    try:
        found = leftovers(model, fresh)
        assert any(f.startswith("a PEFT adapter layer") and "model.layers.0.self_attn.q_proj" in f for f in found)
        assert any(f.startswith("parameters added") for f in found)
    finally:
        strip_adapters(model)
    assert leftovers(model, fresh) == []


# ---- 2 and 3: one micro study: a method that leaves a hook, one that hangs, one that kills its worker ---------------
def test_bad_cells_fail_clearly_their_workers_are_replaced_and_the_study_finishes(tmp_path, micro_organism):
    methods = ["runner_helpers:LeaveHook", "prompting", "runner_helpers:Hang", "runner_helpers:Crash"]
    over = [f"cache_dir={CACHE}", f"methods=[{', '.join(repr(m) for m in methods)}]", "budgets=[0]",
            "cell_timeout=15"]
    results = tmp_path / "r"
    t0 = time.perf_counter()
    summary = run_study("micro", over, results=results, workers=1)  # one worker: the cells run in this order
    assert time.perf_counter() - t0 < 150
    assert summary.exit_code == 1 and summary.total == 4 and summary.ok == 1 and len(summary.failed) == 3
    errors = {label.split()[1]: error for _, label, error in summary.failed}
    assert errors["runner_helpers:LeaveHook"] == (
        "ModelNotPristine: method runner_helpers:LeaveHook left a forward hook on model.layers.1; a cell must leave "
        "the base model as it found it")
    assert errors["runner_helpers:Hang"].startswith("CellTimeout: timed out after 15 s (cell_timeout)")
    assert errors["runner_helpers:Crash"].startswith("WorkerDied: the worker process running this cell died "
                                                     "(killed by SIGKILL")
    records = _records(results)
    hook, ok = records["runner_helpers:LeaveHook"]["provenance"], records["prompting"]
    assert hook["worker_retired"] and hook["pid"] != ok["provenance"]["pid"]  # the next cell ran in a new worker
    # and has the drift rows of a clean run: the leftover hook scales layer 1's output by -50, so a drift baseline
    # measured with it and reused by the same worker's next cell would turn every drift row to NaN (checked by hand)
    clean = run_cell(Cell(ok["run_id"], ok["config"], CACHE))
    drift = sorted((r["metric"], r["value"]) for r in ok["rows"] if r["metric"].startswith("drift:"))
    assert drift and drift == sorted((r["metric"], r["value"]) for r in clean.rows if r["metric"].startswith("drift:"))


def test_an_error_that_may_break_cuda_retires_the_worker(micro_organism):
    study = load_study("micro", [f"cache_dir={CACHE}", "methods=['runner_helpers:CudaFail', 'runner_helpers:Flaky']"])
    cuda, other = expand(study, "micro", CACHE)
    result = run_cell(cuda)
    assert result.status == "failed" and result.error.startswith("RuntimeError: CUDA error: device-side assert")
    assert result.retire == "the error may have broken the device context" and result.provenance["worker_retired"]
    assert run_cell(other).retire is None  # an ordinary cell keeps its worker


def test_cell_timeout_is_validated():
    with pytest.raises(ConfigError, match="cell_timeout"):
        load_study("micro", ["cell_timeout=-1"])
    assert load_study("micro").cell_timeout == 0 and load_study("micro", ["cell_timeout=2.5"]).cell_timeout == 2.5


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
