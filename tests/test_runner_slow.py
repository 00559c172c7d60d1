"""Slow runner checks (`-m slow`): `study run` killed with SIGKILL at random moments, and Ray against local.

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/test_runner_slow.py -m slow -s    # prints the figures
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from analysis.table import read_results
from study.run.runner import run_study
from study.run.store import Store

REPO = Path(__file__).resolve().parent.parent
CACHE = str(REPO / ".cache" / "test-organism")
STUDY = [sys.executable, "-m", "study.cli"]
# 3 targets x 3 seeds x (none + prompting at budgets 0 and 4) = 27 cells of a second or two each
GRID = [f"cache_dir={CACHE}", "targets=[sentiment, sycophancy, refusal]", "seeds=[0,1,2]"]


def _args(results: Path) -> list[str]:
    return STUDY + ["run", "micro", "--workers", "2", "--results", str(results)] + sum((["--set", g] for g in GRID),
                                                                                       [])


def _stragglers(tag: str) -> list[int]:
    """Processes (workers) still alive whose environment carries `tag`."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if tag.encode() in (p / "environ").read_bytes():
                    out.append(int(p.name))
            except OSError:
                pass
    return out


def _assert_store_readable(results: Path) -> int:
    """Every file a reader would take is complete; returns the number of stored cells."""
    cells = results / "cells"
    if not cells.is_dir():
        return 0
    for p in cells.iterdir():
        if p.name.startswith("."):
            continue  # a temporary name: never read
        if p.suffix == ".json":
            rec = json.loads(p.read_text())
            assert rec["run_id"] == p.stem and rec["status"] == "ok", p
        else:
            assert all(json.loads(line) for line in p.read_text().splitlines()), p
    assert read_results(results).skipped == []
    return len(Store(results).status())


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(tmp_path, micro_organism):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    ref = tmp_path / "ref"
    t0, first = time.perf_counter(), None
    proc = subprocess.Popen(_args(ref), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None:
        if first is None and (ref / "cells").is_dir() and any((ref / "cells").glob("*.json")):
            first = time.perf_counter() - t0  # start-up: imports, spawning workers, the first cell
        time.sleep(0.05)
    uninterrupted = time.perf_counter() - t0
    assert proc.returncode == 0 and first is not None
    total = len(Store(ref).status())
    assert total == 27

    results, rng, kills = tmp_path / "killed", random.Random(20241127), []
    # at least 5 kills, of which at least 3 interrupt a run after it has stored new cells and before it is done
    while len(kills) < 5 or sum(b < a < total for b, a, _ in kills) < 3:
        assert len(kills) < 20, kills
        tag = uuid.uuid4().hex
        before = _assert_store_readable(results)
        if before == total:  # finished before enough kills: go on in a fresh results directory
            results = tmp_path / f"killed-{len(kills)}"
            before = _assert_store_readable(results)
        proc = subprocess.Popen(_args(results), env={**env, "RUNNER_TEST_TAG": tag}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        # some in start-up, most while cells are being computed and stored (a shorter window as fewer are left)
        delay = rng.uniform(0.8 * first, first + (uninterrupted - first) * (total - before) / total)
        try:
            proc.wait(timeout=delay)  # finished before the kill
            continue
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        deadline = time.time() + 10
        while _stragglers(tag) and time.time() < deadline:  # workers notice their parent is gone and exit
            time.sleep(0.2)
        assert not _stragglers(tag), "workers outlived the killed study run"
        kills.append((before, _assert_store_readable(results), round(delay, 2)))
    assert len(kills) >= 5 and sum(b < a < total for b, a, _ in kills) >= 3, kills
    t0 = time.perf_counter()
    subprocess.run(_args(results), env=env, check=True, capture_output=True, timeout=900)
    final = time.perf_counter() - t0
    pd.testing.assert_frame_equal(Store(results).table(), Store(ref).table())
    names = sorted(p.name for p in (ref / "cells").iterdir())
    assert sorted(p.name for p in (results / "cells").iterdir()) == names
    for name in names:
        if name.endswith(".jsonl"):
            assert (results / "cells" / name).read_text() == (ref / "cells" / name).read_text(), name
    print(f"\nSIGKILL test: uninterrupted run {uninterrupted:.1f} s for {total} cells (first stored at {first:.1f} s); "
          f"{len(kills)} kills "
          f"(stored before -> after, delay s): {kills}; final resume {final:.1f} s; tables and samples equal")


@pytest.mark.slow
def test_ray_executor_produces_the_same_table_as_the_local_one(tmp_path, micro_organism):
    over = [f"cache_dir={CACHE}", "seeds=[0,1]", "targets=[sentiment, refusal]"]
    t0 = time.perf_counter()
    local = run_study("micro", over, workers=2, results=tmp_path / "local")
    t_local = time.perf_counter() - t0
    t0 = time.perf_counter()
    ray = run_study("micro", over, executor="ray", workers=2, results=tmp_path / "ray")
    t_ray = time.perf_counter() - t0
    assert local.exit_code == ray.exit_code == 0 and local.ok == ray.ok == 12
    pd.testing.assert_frame_equal(Store(tmp_path / "ray").table(), Store(tmp_path / "local").table())
    for p in sorted((tmp_path / "local" / "cells").glob("*.samples.jsonl")):
        assert (tmp_path / "ray" / "cells" / p.name).read_text() == p.read_text()
    print(f"\nRay vs local: 12 cells, local {t_local:.1f} s, ray {t_ray:.1f} s (incl. starting Ray); tables equal")


@pytest.mark.slow
def test_ray_cancels_a_cell_past_cell_timeout_and_goes_on(tmp_path, micro_organism, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent))  # runner_helpers, for the Ray workers too
    over = [f"cache_dir={CACHE}", "methods=[none, 'runner_helpers:Hang']", "cell_timeout=20"]
    t0 = time.perf_counter()
    summary = run_study("micro", over, executor="ray", workers=2, results=tmp_path / "ray")
    assert summary.exit_code == 1 and summary.ok == 1 and len(summary.failed) == 1
    assert summary.failed[0][2].startswith("CellTimeout: timed out after 20 s (cell_timeout)")
    assert time.perf_counter() - t0 < 300
