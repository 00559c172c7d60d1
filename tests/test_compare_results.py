"""benchmarks/compare_results.py: two results folders agree only when cells, rows and per-sample lines all agree."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from compare_results import compare  # noqa: E402


def _store(root: Path, cells: dict[str, tuple[dict, list[str]]]) -> Path:
    (root / "cells").mkdir(parents=True)
    for run_id, (cfg, samples) in cells.items():
        record = {"run_id": run_id, "status": "ok", "config": cfg,
                  "rows": [{"run_id": run_id, "split": "covered", "metric": "behavior", "value": cfg["v"], "n": 4}]}
        (root / "cells" / f"{run_id}.json").write_text(json.dumps(record))
        (root / "cells" / f"{run_id}.samples.jsonl").write_text("\n".join(samples))
    return root


def test_identical_folders_agree_and_each_kind_of_difference_is_found(tmp_path):
    base = {"a1": ({"v": 0.5, "code": "x"}, ['{"s": 1}']), "b2": ({"v": 0.7, "code": "x"}, ['{"s": 2}'])}
    a = _store(tmp_path / "a", base)
    assert compare(a, _store(tmp_path / "same", base)) == []
    changed_row = {**base, "b2": ({"v": 0.71, "code": "x"}, ['{"s": 2}'])}
    assert any("rows differ" in p for p in compare(a, _store(tmp_path / "row", changed_row)))
    changed_sample = {**base, "b2": ({"v": 0.7, "code": "x"}, ['{"s": 3}'])}
    assert any("samples differ" in p for p in compare(a, _store(tmp_path / "sample", changed_sample)))
    missing = {"a1": base["a1"]}
    assert any("only in" in p for p in compare(a, _store(tmp_path / "missing", missing)))


def test_by_config_matches_cells_whose_ids_changed_only_through_ignored_keys(tmp_path):
    a = _store(tmp_path / "a", {"a1": ({"v": 0.5, "code": "old"}, [])})
    b = _store(tmp_path / "b", {"zz": ({"v": 0.5, "code": "new"}, [])})
    assert compare(a, b) != []
    assert compare(a, b, by_config=True, ignore={"code"}) == []
    assert compare(a, b, by_config=True) != []
