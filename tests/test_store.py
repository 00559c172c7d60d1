"""The results store's guarantees: durable writes, the user's umask, one run per folder, stale temporaries removed, and
no broken cell counted as stored.

    HF_HUB_OFFLINE=1 python -m pytest -q tests/test_store.py
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import analysis.table as table_module
from analysis.table import ROW_FIELDS, CellFileWarning, parse_cell, read_results
from study.core.errors import UserError
from study.run.store import STALE_TEMP_SECONDS, Store, _host

ROOT = Path(__file__).resolve().parents[1]


def _record(run_id: str, value: Any = 0.5) -> dict[str, Any]:
    row = {"run_id": run_id, "model": "m", "method": "steer", "target": "t", "target_version": "1", "draw": 0,
           "budget": 8, "feedback_cost": 8.0, "labels_used": 8, "coverage": "anticipation", "anticipation": 0.0,
           "labeler_noise": 0.0, "labeler_misspec": 0.0, "seed": 0, "split": "all", "metric": "score", "value": value,
           "n": 4}
    assert set(row) == set(ROW_FIELDS)
    return {"run_id": run_id, "status": "ok", "error": None, "config": {"seed": 0}, "provenance": {"git": "x"},
            "rows": [row]}


def test_write_fsyncs_each_file_before_its_rename_and_the_folder_after(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append(("replace", Path(dst).name))
        real_replace(src, dst)

    store = Store(tmp_path)
    store.ensure_writable()
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    store.write(_record("abc"), [{"kind": "completion", "text": "hi"}])
    assert events == [("fsync", "file"), ("replace", "abc.samples.jsonl"), ("fsync", "dir"),
                      ("fsync", "file"), ("replace", "abc.json"), ("fsync", "dir")]
    events.clear()
    store.write_index("s", {}, ["abc"])
    store.export_parquet()
    assert events == [("fsync", "file"), ("replace", "study.json"), ("fsync", "dir"),
                      ("fsync", "file"), ("replace", "table.parquet"), ("fsync", "dir")]


def test_a_failed_rename_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = table_module.atomic_write_bytes(tmp_path / "x.json", b"old")

    def fail(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        table_module.atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_users_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        store = Store(tmp_path / "r")
        with store.lock():
            store.ensure_writable()
            store.write(_record("abc"), [])
            store.write_index("s", {}, ["abc"])
            store.export_parquet()
    finally:
        os.umask(old)
    files = ["cells/abc.json", "cells/abc.samples.jsonl", "study.json", "table.parquet", ".lock"]
    assert {f: oct(stat.S_IMODE((tmp_path / "r" / f).stat().st_mode)) for f in files} == {f: oct(mode) for f in files}
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "r" / "table.parquet"), store.table())


HOLD = """
import sys
from study.run.store import Store
with Store(sys.argv[1]).lock():
    print("locked", flush=True)
    sys.stdin.read()
"""


def _holder(results: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(results)], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
    return proc


def test_a_second_run_on_the_same_folder_fails_at_once_naming_the_holder(tmp_path: Path) -> None:
    results = tmp_path / "x"
    proc = _holder(results)
    try:
        t0 = time.perf_counter()
        with pytest.raises(UserError) as err:
            with Store(results).lock():
                pytest.fail("entered a folder locked by another process")
        assert time.perf_counter() - t0 < 1.0
        assert str(err.value) == (f"{results} is in use by another study run (pid {proc.pid}); wait for it or use "
                                  f"another --results")
        assert err.value.exit_code == 2
        with Store(tmp_path / "y").lock():  # another folder is free
            pass
    finally:
        proc.kill()
        proc.wait()
    with Store(results).lock():  # the kernel dropped the killed holder's lock
        assert (results / ".lock").read_text().split()[0] == str(os.getpid())


def test_the_lock_excludes_a_second_holder_in_the_same_process_and_is_released(tmp_path: Path) -> None:
    with Store(tmp_path).lock():
        with pytest.raises(UserError, match=f"pid {os.getpid()}"):
            with Store(tmp_path).lock():
                pass
    with Store(tmp_path).lock():
        pass


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_clean_temporary_removes_stale_temporaries_in_the_root_and_cells(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.ensure_writable()
    host, dead, old = _host(), _dead_pid(), time.time() - STALE_TEMP_SECONDS - 5
    stale, fresh = [], []
    for folder in (store.root, store.cells):
        names = {
            f".a.json.{dead}@{host}.0badc0de.tmp": True,   # its writer died
            f".b.json.{os.getpid()}@{host}.1234abcd.tmp": False,  # a live writer
            f".c.json.{dead}@other-host.1234abcd.tmp": False,  # a pid on another machine says nothing here
            ".d.json.k3j2h1g0.tmp": False,  # an older name without its writer: only age counts
            ".e.json.x8y7z6w5.tmp": True,   # ... and this one is old
            f".f.json.{os.getpid()}@{host}.5678abcd.tmp": True,  # old, even if its writer lives
        }
        for name, is_stale in names.items():
            p = folder / name
            p.write_bytes(b"partial")
            if name.startswith((".e", ".f")):
                os.utime(p, (old, old))
            (stale if is_stale else fresh).append(p)
    (store.root / ".lock").write_bytes(b"")  # dot-names that are not temporaries are left alone
    assert store.clean_temporary() == len(stale)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in fresh)
    assert (store.root / ".lock").exists()


def test_status_counts_a_cell_the_table_rejects_as_missing(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.write(_record("good"), [])
    store.write(_record("strings", value="0.5"), [])
    with pytest.warns(CellFileWarning, match=r"strings\.json: rows\[0\]: field 'value' = '0.5' is not a valid value"):
        status = store.status()
    assert status == {"good": "ok"}
    assert set(store.table()["run_id"]) == {"good"}  # the table and the store agree
    assert [s.name for s in read_results(tmp_path).skipped] == ["strings.json"]


def test_status_counts_an_ok_cell_without_its_samples_as_missing(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.write(_record("kept"), [{"kind": "completion", "text": "a"}])
    store.write(_record("lost"), [{"kind": "completion", "text": "b"}])
    store.write({"run_id": "failed", "status": "failed", "error": "boom", "config": {}, "provenance": {}, "rows": []})
    (store.cells / "lost.samples.jsonl").unlink()
    with pytest.warns(CellFileWarning, match=r"lost\.json: its samples file lost\.samples\.jsonl is missing"):
        status = store.status()
    assert status == {"kept": "ok", "failed": "failed"}  # a failed cell never had samples to lose


def test_status_of_valid_cells_does_not_warn(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    store = Store(tmp_path)
    store.write(_record("abc"), [])
    assert store.status() == {"abc": "ok"} and not recwarn.list


def test_parse_cell_is_public_and_the_old_name_remains(tmp_path: Path) -> None:
    path = tmp_path / "abc.json"
    path.write_text(json.dumps(_record("abc", value="0.5")))
    with pytest.raises(ValueError, match="'value'"):
        parse_cell(path)
    assert table_module._parse_cell is parse_cell


def test_a_second_study_run_on_a_locked_folder_exits_2_before_computing_anything(tmp_path: Path) -> None:
    """Two `study run` on one folder: the second stops with one line and exit code 2, and writes no cell."""
    results = tmp_path / "r"
    Store(results).ensure_writable()
    holder = _holder(results)
    try:
        run = subprocess.run([sys.executable, "-m", "study.cli", "run", "micro", "--results", str(results)], cwd=ROOT,
                             capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    finally:
        holder.kill()
        holder.wait()
    assert run.returncode == 2, run.stderr
    assert "in use by another study run" in run.stderr and "Traceback" not in run.stderr
    assert list((results / "cells").glob("*.json")) == []
