"""A worker process keeps its model between cells without changing any result; a LoRA adapter is injected once per
evaluation; `study run --profile` stores each cell's phase timings.

Cells run on the micro organism (tests/conftest.py).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import study.run.cell as cell_mod
from study.core.timing import phase, timing
from study.run.cell import PROFILE_ENV, forget, run_cell
from study.run.grid import expand
from study.run.store import Store
from study.run.study_config import load_study

REPO = Path(__file__).resolve().parent.parent
CACHE = str(REPO / ".cache" / "test-organism")
FAST = "method_config={lora_sft: {min_steps: 2, max_steps: 4, snapshots: [0.5, 1.0]}}"


def _cells(methods: str, budgets: str = "[16]") -> list:
    study = load_study("micro", [f"cache_dir={CACHE}", f"methods={methods}", f"budgets={budgets}",
                                 "method_budgets={}", FAST if "lora_sft" in methods else "method_config={}"])
    return expand(study, "micro", CACHE)


def test_a_worker_loads_its_model_once_and_the_second_cell_equals_a_fresh_process(micro_organism, monkeypatch,
                                                                                  one_thread):
    first, second = _cells("[none, lora_sft]")
    loads = []
    real = cell_mod._load
    monkeypatch.setattr(cell_mod, "_load", lambda c: loads.append(c.run_id) or real(c))
    forget()
    a, b = run_cell(first), run_cell(second)
    assert a.status == b.status == "ok", (a.error, b.error)
    assert len(loads) == 1 and not a.provenance["model_reused"] and b.provenance["model_reused"]
    code = ("import json, sys, torch; torch.set_num_threads(1)\n"
            "from study.run.cell import run_cell\nfrom study.run.grid import Cell\n"
            "c = json.loads(sys.stdin.read())\n"
            "r = run_cell(Cell(c['run_id'], c['config'], c['cache']))\n"
            "print(json.dumps({'status': r.status, 'rows': r.rows, 'samples': r.samples}))")
    env = {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps({"run_id": second.run_id,
                          "config": second.config, "cache": CACHE}), capture_output=True, text=True, env=env,
                          cwd=str(REPO), timeout=600)
    fresh = json.loads(proc.stdout.strip().splitlines()[-1])
    assert fresh["status"] == "ok"
    assert fresh["rows"] == json.loads(json.dumps(b.rows)) and fresh["samples"] == json.loads(json.dumps(b.samples))


def test_a_retiring_cell_drops_the_cached_model(micro_organism, monkeypatch):
    cell = _cells("[none]", "[0]")[0]
    forget()
    run_cell(cell)
    assert cell_mod._MODEL_CACHE
    monkeypatch.setattr(cell_mod, "evaluate", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("CUDA error: x")))
    assert run_cell(cell).retire and not cell_mod._MODEL_CACHE


def test_lora_is_injected_once_per_session_and_the_base_model_is_back_after(micro_lm, monkeypatch):
    import peft

    from methods.trained import LoraIntervention, strip_adapters
    from study.lm.generation import generate
    from study.run.pristine import leftovers, snapshot

    lm, _ = micro_lm
    model = copy.deepcopy(lm.model)  # get_peft_model freezes and tags the model it wraps: not the session's model
    cfg = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])
    torch.manual_seed(0)
    trained = peft.get_peft_model(model, cfg)
    for n, p in trained.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.5)
    state = {k: v.detach().clone() for k, v in peft.get_peft_model_state_dict(trained).items()}
    trained.unload()
    strip_adapters(model)
    model.__dict__.pop("peft_config", None)
    snap = snapshot(model)
    prompts = ["review of hotel : the bed was"] * 5
    kw = dict(n=2, temperature=1.0, max_new_tokens=6, seed=3, batch_size=4)  # several batches
    iv = LoraIntervention(model, cfg, state)
    per_batch = generate(model, lm.tokenizer, prompts, iv, **kw)  # old behaviour: inject per activation
    base = generate(model, lm.tokenizer, prompts, None, **kw)
    injected = []
    real = peft.inject_adapter_in_model
    monkeypatch.setattr(peft, "inject_adapter_in_model", lambda *a, **k: injected.append(1) or real(*a, **k))
    with iv.session():
        with_adapter = generate(model, lm.tokenizer, prompts, iv, **kw)
        suspended = generate(model, lm.tokenizer, prompts, None, **kw)  # adapter injected but inert
        again = generate(model, lm.tokenizer, prompts, iv, **kw)
    assert len(injected) == 1
    assert with_adapter == per_batch == again and suspended == base and with_adapter != base
    assert leftovers(model, snap) == []


def test_timer_counts_each_second_in_the_innermost_phase():
    import time

    with timing(True) as t:
        with phase("outer"):
            time.sleep(0.02)
            with phase("inner"):
                time.sleep(0.03)
    s = t.seconds()
    assert 0.025 <= s["inner"] < 0.2 and 0.015 <= s["outer"] < 0.2 and s["outer"] < s["inner"] + 0.02
    with timing(False) as none, phase("x"):
        assert none is None


def test_study_run_profile_stores_phase_timings(tmp_path, micro_organism, monkeypatch):
    from typer.testing import CliRunner

    from study.cli import app

    monkeypatch.delenv(PROFILE_ENV, raising=False)
    results = tmp_path / "r"
    args = ["run", "micro", "--set", f"cache_dir={CACHE}", "--set", "methods=[none]", "--set", "budgets=[0]",
            "--results", str(results), "--workers", "1", "--profile"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    store = Store(results)
    (rid,) = store.status()
    phases = store.read(rid)["provenance"]["phases"]
    assert {"load", "splits", "generate", "score", "kl", "other"} <= set(phases)
    assert all(isinstance(v, float) for v in phases.values()) and phases["generate"] > 0


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


def test_a_cell_that_imports_settles_the_heap_and_forget_returns_it(micro_organism, monkeypatch):
    import gc

    cell = _cells("[none]", "[0]")[0]
    forget()
    cell_mod._MODULES_SETTLED = 0  # as in a fresh worker
    assert run_cell(cell).status == "ok"
    assert gc.get_freeze_count() > 0 and cell_mod._MODULES_SETTLED == len(sys.modules)
    freezes = []
    real = gc.freeze
    monkeypatch.setattr(gc, "freeze", lambda: freezes.append(1) or real())
    n = len(sys.modules)
    assert run_cell(cell).status == "ok"
    assert (freezes == []) == (len(sys.modules) == n)  # settles again only after new imports
    forget()
    assert gc.get_freeze_count() == 0


def test_a_cells_adapters_take_turns_in_one_injection_and_the_scope_strips_them(micro_lm, monkeypatch):
    import peft

    from methods.adapter_slot import parking
    from methods.trained import LoraIntervention
    from study.lm.generation import generate
    from study.run.pristine import leftovers, snapshot

    lm, _ = micro_lm
    model = lm.model
    cfg = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])
    snap = snapshot(model)
    g = torch.Generator().manual_seed(1)
    probe = LoraIntervention(model, cfg, {})  # the adapter's key names and shapes, from one injection
    with probe:
        keys = {k: v.shape for k, v in peft.get_peft_model_state_dict(model, adapter_name=probe._name).items()}
    states = [{k: torch.randn(s, generator=g) * 0.3 for k, s in keys.items()} for _ in range(2)]
    prompts = ["review of hotel : the bed was"] * 3
    kw = dict(n=2, temperature=1.0, max_new_tokens=6, seed=3)
    alone = [generate(model, lm.tokenizer, prompts, LoraIntervention(model, cfg, s), **kw) for s in states]
    base = generate(model, lm.tokenizer, prompts, None, **kw)
    assert alone[0] != alone[1]
    injected = []
    real = peft.inject_adapter_in_model
    monkeypatch.setattr(peft, "inject_adapter_in_model", lambda *a, **k: injected.append(1) or real(*a, **k))
    with parking(model):
        a, b = (LoraIntervention(model, cfg, s) for s in states)
        turns = [generate(model, lm.tokenizer, prompts, iv, **kw) for iv in (a, b, a)]
        between = generate(model, lm.tokenizer, prompts, None, **kw)  # parked layers are inert
        other = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["k_proj"])  # another config: injected anew
        with LoraIntervention(model, other, {}):
            pass
    assert turns == [alone[0], alone[1], alone[0]] and between == base and len(injected) == 2
    assert leftovers(model, snap) == [] and "peft_config" not in model.__dict__
    # weights that do not fit the parked layers: the error strips them and the slot forgets them
    with parking(model) as slot:
        with LoraIntervention(model, cfg, states[0]):
            pass
        bad = {k.replace("lora_A", "lora_Z"): v for k, v in states[1].items()}
        with pytest.raises(RuntimeError, match="do not fit"):
            with LoraIntervention(model, cfg, bad):
                pass
        assert slot.name is None and leftovers(model, snap) == []
        assert generate(model, lm.tokenizer, prompts, LoraIntervention(model, cfg, states[1]), **kw) == alone[1]
    assert leftovers(model, snap) == [] and "peft_config" not in model.__dict__
