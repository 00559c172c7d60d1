"""The study runner: grid and cell ids, the results store, resume, determinism, failures, bad input, progress.

Studies here run the `micro` config's tiny grid on the micro organism (tests/conftest.py), a few seconds per cell.
The scripted SIGKILL test and the Ray test are in tests/test_runner_slow.py (`-m slow`).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from analysis.table import ROW_FIELDS, read_results
from study.core.errors import ConfigError, UserError
from study.run.grid import conditions, expand
from study.run.display import Display
from study.run.runner import run_study
from study.run.study_config import load_study
from study.run.store import Store

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
STUDY = [sys.executable, "-m", "study.cli"]
EXAMPLE = "docs.examples.logit_bias:LogitBias"


def _cache() -> str:
    return str(REPO / ".cache" / "test-organism")


@pytest.fixture(scope="session")
def organism_cache(micro_organism) -> str:
    """The micro organism's cache, built once (the conftest fixture pretrains it)."""
    return _cache()


def micro(cache: str, *more: str) -> list[str]:
    return [f"cache_dir={cache}", *more]


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(autouse=True)
def _importable(monkeypatch):
    """runner_helpers (tests/) and the docs example (repo root) importable here and in spawned workers."""
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.syspath_prepend(str(REPO))


def samples_of(results: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((results / "cells").glob("*.samples.jsonl"))}


# ---- grid -----------------------------------------------------------------------------------------------------------
def test_grid_ids_are_hashes_of_the_resolved_config():
    study = load_study("micro", ["seeds=[0,1]", "budgets=[0,4,16]"])
    cells = expand(study, "micro")
    by_method = {m: [c for c in cells if c.method == m] for m in ("none", "prompting")}
    assert len(by_method["none"]) == 2 and {c.config["budget"] for c in by_method["none"]} == {0}  # no labels used
    assert len(by_method["prompting"]) == 2 * 3
    assert len({c.run_id for c in cells}) == len(cells)
    assert [c.run_id for c in expand(load_study("micro", ["seeds=[0,1]", "budgets=[0,4,16]"]), "x")] == \
        [c.run_id for c in cells]  # stable
    # the method's resolved config is part of the id: a changed prompting field changes only prompting cells
    other = expand(load_study("micro", ["seeds=[0,1]", "budgets=[0,4,16]", "method_config.prompting.max_shots=2"]))
    changed = {c.run_id for c in other} - {c.run_id for c in cells}
    assert len(changed) == 6 and all(c.method == "prompting" for c in other if c.run_id in changed)
    assert cells[0].config["method"]["parts"][0]["config"] == {} and \
        by_method["prompting"][0].config["method"]["parts"][0]["config"]["max_shots"] == 1
    # and so are the evaluation sizes and the organism
    assert not {c.run_id for c in expand(load_study("micro", ["seeds=[0,1]", "budgets=[0,4,16]",
                                                              "eval.sizes.test=8"]))} & {c.run_id for c in cells}
    assert cells[0].config["model"]["organism_key"] == study.organism.key()


def test_grid_models_designs_and_stacks():
    study = load_study("micro", ["models=[organism, {name: shared, organism: {world: {sharing: 0.9}}}]",
                                 "anticipations=[0.5,1.0]", "labeler_noise=[0,0.1]", "labeler_misspec=[0,0.5]",
                                 "methods=[none, prompting+prompting]", "budgets=[8]"])
    keys = {c.config["model"]["organism_key"] for c in expand(study)}
    assert len(keys) == 2 and study.organism.key() in keys
    assert len(conditions(study)) == 8
    one = load_study("micro", ["anticipations=[0.5,1.0]", "labeler_noise=[0,0.1]", "labeler_misspec=[0,0.5]",
                               "design=one_at_a_time"])
    assert conditions(one) == [(0.5, 0.0, 0.0), (1.0, 0.0, 0.0), (0.5, 0.1, 0.0), (0.5, 0.0, 0.5)]
    stacked = [c for c in expand(study) if c.method == "prompting+prompting"][0]
    assert [p["name"] for p in stacked.config["method"]["parts"]] == ["prompting", "prompting"]


@pytest.mark.parametrize("override,needle", [
    ("method_config.prompting.bogus=1", "method_config.prompting.bogus"),
    ("method_config.prompting.max_shots=-1", "method_config.prompting.max_shots"),
    ("method_config.steering_pca.folds=2", "method_config.steering_pca"),
])
def test_method_config_is_checked_against_the_methods_own_config(override, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        expand(load_study("micro", [override]), "micro")


# ---- bad input: exit 2, one line, nothing written --------------------------------------------------------------------
@pytest.mark.parametrize("override,needles", [
    ("methods=[none, rlhff]", ("unknown method 'rlhff'; valid: ", "none, prompting")),
    ("targets=[sentimnt]", ("unknown target 'sentimnt'; valid: sentiment, sycophancy, refusal",)),
    ("methods=[no_such_module:Thing]", ("cannot import module 'no_such_module'",)),
    ("methods=[runner_helpers:Missing]", ("has no class 'Missing'",)),
    ("methods=[runner_helpers:NoFit]", ("does not satisfy the Method protocol",)),
    ("budgets=[-4]", ("field 'budgets' = -4",)),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, override, needles):
    results = tmp_path / "results"
    r = subprocess.run(STUDY + ["run", "micro", "--set", override, "--results", str(results)], capture_output=True,
                       text=True, env=env(), cwd=tmp_path, timeout=120)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and all(n in lines[0] for n in needles), r.stderr
    assert "Traceback" not in r.stderr and not results.exists()


def test_cli_unwritable_results_dir_exits_2(tmp_path, organism_cache):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    r = subprocess.run(STUDY + ["run", "micro", "--set", f"cache_dir={organism_cache}", "--results",
                                str(blocker / "results")], capture_output=True, text=True, env=env(), timeout=120)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "not writable" in lines[0] and str(blocker) in lines[0], r.stderr
    assert blocker.read_text() == "not a directory"


def test_list_commands():
    r = subprocess.run(STUDY + ["list", "methods"], capture_output=True, text=True, env=env(), timeout=120)
    assert r.returncode == 0 and "prompting  (methods.prompting:Prompting)" in r.stdout and "max_shots=1" in r.stdout
    r = subprocess.run(STUDY + ["list", "targets"], capture_output=True, text=True, env=env(), timeout=120)
    assert r.returncode == 0 and all(t in r.stdout for t in ("sentiment", "sycophancy", "refusal"))


# ---- running, storing, resuming -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stored(tmp_path_factory, micro_organism):
    """The micro grid plus the docs example method, run once with 2 workers."""
    sys.path[:0] = [str(TESTS), str(REPO)]
    results = tmp_path_factory.mktemp("runner") / "a"
    t0 = time.perf_counter()
    summary = run_study("micro", micro(_cache(), f"methods=[none, prompting, '{EXAMPLE}']"), workers=2,
                        results=results)
    return results, summary, time.perf_counter() - t0


def test_run_stores_one_file_per_cell_with_the_row_contract(stored):
    results, summary, _ = stored
    assert summary.exit_code == 0 and summary.total == summary.ok == summary.computed == 5
    store = Store(results)
    assert set(store.status().values()) == {"ok"} and len(store.status()) == 5
    assert not [p for p in (results / "cells").iterdir() if p.name.startswith(".")]  # no temporary leftovers
    assert not (results / "work").exists()
    for run_id in store.status():
        rec = store.read(run_id)
        assert set(rec) == {"run_id", "status", "error", "config", "provenance", "rows", "contexts"}
        prov = rec["provenance"]
        assert {"git_sha", "versions", "durations", "chosen", "method_config", "model_id", "labels",
                "organism_weights_sha256"} <= set(prov)
        assert len(prov["organism_weights_sha256"]) == 64 and isinstance(rec["contexts"], dict) and rec["contexts"]
        assert {(r["draw"], r["coverage"]) for r in rec["rows"]} == {(0, "anticipation")}
        assert prov["versions"]["torch"] and prov["durations"]["total"] > 0
        assert all(set(row) == set(ROW_FIELDS) for row in rec["rows"])
        assert all(r["labels_used"] <= r["budget"] and r["feedback_cost"] <= r["budget"] for r in rec["rows"])
        lines = (results / "cells" / f"{run_id}.samples.jsonl").read_text().splitlines()
        assert lines and all(json.loads(line)["split"] for line in lines)
    table = pd.read_parquet(results / "table.parquet")
    pd.testing.assert_frame_equal(table, store.table())
    index = json.loads((results / "study.json").read_text())
    assert index["name"] == "micro" and sorted(index["run_ids"]) == sorted(store.status())
    assert set(table["method"]) == {"none", "prompting", EXAMPLE}
    example = table[table["method"] == EXAMPLE]
    assert set(example.loc[example["budget"] == 0, "feedback_cost"]) == {0.0}
    assert set(example.loc[example["budget"] == 4, "feedback_cost"]) == {4.0}  # one pair (2) + two judgments
    few_shot = table[(table["method"] == "prompting") & (table["budget"] == 4)]
    assert set(few_shot["labels_used"]) == {1} and set(few_shot["feedback_cost"]) == {4.0}  # one demonstration


def test_same_config_twice_gives_identical_tables_whatever_the_worker_count(stored, tmp_path):
    results, _, _ = stored
    again = tmp_path / "b"
    run_study("micro", micro(_cache(), f"methods=[none, prompting, '{EXAMPLE}']"), workers=1, results=again)
    pd.testing.assert_frame_equal(Store(results).table(), Store(again).table())
    assert samples_of(results) == samples_of(again)  # every completion, byte for byte
    # an organism study runs its workers on one torch thread each, even a lone worker on a machine with more cores
    threads = {json.loads(p.read_text())["provenance"]["torch_threads"] for p in (again / "cells").glob("*.json")}
    assert threads == {1}


def test_warm_rerun_computes_nothing(stored):
    results, _, _ = stored
    before = {p.name: p.stat().st_mtime_ns for p in (results / "cells").iterdir()}
    t0 = time.perf_counter()
    summary = run_study("micro", micro(_cache(), f"methods=[none, prompting, '{EXAMPLE}']"), results=results)
    assert summary.computed == 0 and summary.stored_before == 5 and time.perf_counter() - t0 < 15
    assert {p.name: p.stat().st_mtime_ns for p in (results / "cells").iterdir()} == before


def test_resume_recomputes_exactly_what_is_missing_or_unreadable(stored, tmp_path):
    results, _, _ = stored
    copy = tmp_path / "c"
    shutil.copytree(results, copy)
    cells = sorted((copy / "cells").glob("*.json"))
    cells[0].unlink()  # lost
    cells[1].write_text(cells[1].read_text()[:100])  # damaged by hand (the runner never leaves such a file)
    stale = copy / "cells" / f".{cells[2].name}.x.tmp"  # a writer killed mid-write
    stale.write_text('{"run_id": "trunc')
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    out = io.StringIO()
    run_study("micro", micro(_cache(), f"methods=[none, prompting, '{EXAMPLE}']"), results=copy, dry_run=True,
              out=out)
    assert out.getvalue().count("\ntodo ") == 2 and out.getvalue().count("\ndone ") == 3
    summary = run_study("micro", micro(_cache(), f"methods=[none, prompting, '{EXAMPLE}']"), results=copy)
    assert summary.computed == 2 and not stale.exists() and read_results(copy).skipped == []
    pd.testing.assert_frame_equal(Store(copy).table(), Store(results).table())


def test_failed_cells_are_stored_the_study_goes_on_and_retry_failed_reruns_them(tmp_path, organism_cache,
                                                                                 monkeypatch):
    marker = tmp_path / "fail"
    marker.write_text("")
    monkeypatch.setenv("RUNNER_FLAKY_MARKER", str(marker))
    over = micro(organism_cache, "methods=[none, 'runner_helpers:Flaky', 'runner_helpers:Crash']")
    results = tmp_path / "r"
    summary = run_study("micro", over, results=results, workers=2)
    assert summary.exit_code == 1 and summary.total == 3 and summary.ok == 1 and len(summary.failed) == 2
    errors = {label.split()[1]: error for _, label, error in summary.failed}
    assert "flaky method failed on purpose" in errors["runner_helpers:Flaky"]
    assert errors["runner_helpers:Crash"].startswith("WorkerDied")
    flaky = [r for r in summary.failed if "Flaky" in r[1]][0][0]
    rec = Store(results).read(flaky)
    assert rec["status"] == "failed" and rec["rows"] == [] and "Traceback" in rec["provenance"]["traceback"]
    assert read_results(results).failed and len(Store(results).table()) > 0  # the ok cell is in the table
    # a plain rerun keeps the stored failures (exit 1, nothing computed) ...
    r = subprocess.run(STUDY + ["run", "micro", "--results", str(results)] + sum((["--set", o] for o in over), []),
                       capture_output=True, text=True, env=env(), timeout=300)
    assert r.returncode == 1 and "2 failed" in r.stderr and "--retry-failed" in r.stderr, r.stderr
    # ... and --retry-failed reruns them
    marker.unlink()
    summary = run_study("micro", micro(organism_cache, "methods=[none, 'runner_helpers:Flaky']"), results=results,
                        retry_failed=True)
    assert summary.computed == 1 and summary.exit_code == 0 and Store(results).status()[flaky] == "ok"


def test_stacked_methods_split_the_budget_and_fit_with_earlier_parts_active(organism_cache):
    from study.run.cell import run_cell

    study = load_study("micro", micro(organism_cache, "budgets=[10]", "methods=['prompting+runner_helpers:Spender', "
                                                                      "'runner_helpers:Spender+runner_helpers:Spender']"))
    got = {c.method: run_cell(c) for c in expand(study, "micro", organism_cache)}
    a = got["prompting+runner_helpers:Spender"]
    # prompting's share is 10 // 2 = 5, it spends 4 on one demonstration; the unspent unit rolls over: 10 - 4 = 6
    assert a.status == "ok" and a.provenance["chosen"] == {"0.instruction": True, "0.shots": 1, "1.budget": 6,
                                                          "1.spent": 6, "1.prior": True}
    b = got["runner_helpers:Spender+runner_helpers:Spender"].provenance["chosen"]
    assert (b["0.budget"], b["0.spent"], b["1.budget"], b["1.spent"], b["0.prior"]) == (5, 5, 5, 5, False)
    assert {r["feedback_cost"] for r in a.rows} == {10.0} and {r["labels_used"] for r in a.rows} == {7}


def test_progress_display_shows_running_cells_stage_and_eta(organism_cache):
    from rich.console import Console

    cells = expand(load_study("micro", micro(organism_cache)), "micro")
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=150)
    display = Display(cells, total=5, done_before=2, concurrency=2, console=console)
    display.event(("start", cells[0].run_id))
    display.event(("stage", cells[0].run_id, "evaluating: drift on refusal"))
    display.event(("start", cells[1].run_id))
    display.event(("done", cells[1].run_id, "ok", None, 4.0))
    console.print(display._render())
    text = buf.getvalue()
    assert "3/5" in text and cells[0].label in text and "evaluating: drift on refusal" in text and "eta 0:00:0" in text
    plain = io.StringIO()
    display = Display(cells, total=3, done_before=0, concurrency=1, console=Console(file=plain, width=200))
    display.event(("done", cells[2].run_id, "failed", "RuntimeError: boom", 1.5))
    assert "[1/3] failed" in plain.getvalue() and "RuntimeError: boom" in plain.getvalue()


def test_store_writes_atomically_and_loader_skips_temporaries(tmp_path):
    store = Store(tmp_path)
    store.write({"run_id": "abc", "status": "failed", "error": "x", "config": {}, "provenance": {}, "rows": []},
                [{"split": "covered", "value": float("nan")}])
    assert sorted(p.name for p in (tmp_path / "cells").iterdir()) == ["abc.json", "abc.samples.jsonl"]
    assert json.loads((tmp_path / "cells" / "abc.samples.jsonl").read_text())["value"] is None  # NaN -> null
    (tmp_path / "cells" / ".def.json.123.tmp").write_text('{"run_id": "def", "sta')
    assert store.status() == {"abc": "failed"} and read_results(tmp_path).skipped == []
    with pytest.raises(UserError, match="not writable"):
        Store(tmp_path / "cells" / "abc.json" / "x").ensure_writable()


def test_report_command_reads_the_store(stored, tmp_path):
    results, _, _ = stored
    r = subprocess.run(STUDY + ["report", "--results", str(results), "--out", str(tmp_path / "rep")],
                       capture_output=True, text=True, env=env(), timeout=300)
    assert r.returncode == 0 and (tmp_path / "rep" / "REPORT.md").is_file(), r.stderr
    r = subprocess.run(STUDY + ["report", "--results", str(tmp_path / "nothing")], capture_output=True, text=True,
                       env=env(), timeout=120)
    assert r.returncode == 2 and "no such results directory" in r.stderr


def test_pretraining_processes_exit_when_the_study_process_is_killed(tmp_path):
    """A study killed while it pretrains organisms (SIGTERM or SIGKILL to it alone) leaves no pretraining process."""
    script = ("import os, sys, time\n"
              "from study.run.runner import pretraining_pool\n"
              "pool = pretraining_pool(1)\n"
              "print(pool.submit(os.getpid).result(), flush=True)\n"
              "pool.submit(time.sleep, 120)\n"
              "time.sleep(0.5)\n"
              "os._exit(0)\n")  # gone without shutting the pool down, as a killed process would be
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    pid = int(out.stdout.split()[0])

    def alive() -> bool:
        try:
            return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return False

    deadline = time.time() + 15
    while alive() and time.time() < deadline:
        time.sleep(0.2)
    assert not alive(), "a pretraining process outlived the study that started it"
