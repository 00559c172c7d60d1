"""benchmarks/bench_targets.py: the base rate per context counts each sample once.

A held-out context's samples are the same at every anticipation level (same prompts, same sampling stream), and a
`none` cell under a noisy or misspecified labeler repeats the clean one's; pooling them again multiplied the sample
count (the minimum the table judges a context by) without adding information.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_targets import acceptance  # noqa: E402


def _cell(root: Path, run_id: str, anticipation: float, contexts: dict, held: list[str], noise: float = 0.0) -> str:
    cfg = {"method": {"name": "none"}, "target": {"name": "sentiment"}, "budget": 0, "anticipation": anticipation,
           "seed": 0, "draw": 0, "labeler": {"noise": noise, "misspec": 0.0}}
    row = {"run_id": run_id, "model": "organism", "method": "none", "target": "sentiment", "target_version": "1",
           "draw": 0, "budget": 0, "feedback_cost": 0.0, "labels_used": 0, "coverage": "anticipation",
           "anticipation": anticipation, "labeler_noise": noise, "labeler_misspec": 0.0, "seed": 0,
           "split": "covered", "metric": "behavior", "value": 0.5, "n": 10}
    record = {"run_id": run_id, "status": "ok", "config": cfg, "provenance": {}, "rows": [row],
              "contexts": {c: {"behavior": v} for c, v in contexts.items()}}
    (root / "cells" / f"{run_id}.json").write_text(json.dumps(record))
    samples = [{"context": c, "split": "uncovered" if c in held else "covered"} for c in contexts]
    (root / "cells" / f"{run_id}.samples.jsonl").write_text("\n".join(json.dumps(s) for s in samples))
    return run_id


def test_base_rates_count_a_held_out_contexts_samples_once(tmp_path: Path) -> None:
    (tmp_path / "cells").mkdir()
    ids = [_cell(tmp_path, "a05", 0.5, {"held/post": [0.2, 60], "cov/post": [0.5, 60]}, ["held/post"]),
           _cell(tmp_path, "a10", 1.0, {"held/post": [0.2, 60], "cov/post": [0.7, 60]}, ["held/post"]),
           _cell(tmp_path, "noisy", 0.5, {"held/post": [0.2, 60], "cov/post": [0.5, 60]}, ["held/post"], noise=0.2)]
    (tmp_path / "study.json").write_text(json.dumps({"name": "t", "config": {}, "run_ids": ids}))
    (row,) = acceptance(tmp_path, min_samples=100)
    assert row["base_samples"] == {"held/post": 60, "cov/post": 120}
    assert row["base_contexts"]["held/post"] == 0.2 and abs(row["base_contexts"]["cov/post"] - 0.6) < 1e-12
    assert row["base_contexts_judged"] == 1  # only the covered context reaches 100 distinct samples
