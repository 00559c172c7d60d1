"""Two reports side by side (analysis.compare, `study compare`): per method its held-out gain and cost in both, and a
ranking sentence that only claims what the intervals support."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from analysis.compare import compare, spearman
from study.cli import app


def _head(target: str, method: str, gain: float, half: float, cost: float | None) -> dict:
    return {"target": target, "method": method, "n": 6,
            "generalization": {"gain_uncovered": {"mean": gain, "lo": gain - half, "hi": gain + half}},
            "cost_to_threshold": {"covered": {"feedback_cost": cost, "cost_lo": cost, "cost_hi": cost,
                                              "reached": cost is not None, "max_cost": 128.0}}}


ORG = {"threshold": 0.8, "headline": [_head("sentiment", "dpo", 0.30, 0.02, 40.0),
                                      _head("sentiment", "steering", 0.10, 0.02, None),
                                      _head("sentiment", "lora_sft", 0.20, 0.02, 64.0),
                                      _head("sycophancy", "dpo", 0.5, 0.1, 10.0)]}
REAL = {"threshold": 0.8, "headline": [_head("real_sentiment", "dpo", 0.40, 0.05, 16.0),
                                       _head("real_sentiment", "steering", 0.05, 0.05, None),
                                       _head("real_sentiment", "lora_sft", 0.25, 0.05, 32.0),
                                       _head("real_sentiment", "rlhf", 0.9, 0.1, 8.0)]}


def test_matching_methods_side_by_side_and_the_ranking_sentence() -> None:
    lines, rows = compare(ORG, REAL, {"sentiment": "real_sentiment"}, ("organism", "SmolLM2"))
    assert [r["method"] for r in rows] == ["dpo", "lora_sft", "steering"]  # rlhf ran on one side only
    md = "\n".join(lines)
    assert "| dpo | +0.30 [+0.28, +0.32] (n 6) | +0.40 [+0.35, +0.45] (n 6) | 40 | 16 |" in md
    assert "| steering | +0.10 [+0.08, +0.12] (n 6) | +0.05 [+0.00, +0.10] (n 6) | not reached (<= 128 spent)" in md
    assert "rank correlation of the held-out gains over 3 methods: +1.00" in md
    assert "the largest gain is dpo's in both" in md and "separates from the others' in both" in md


def test_too_few_methods_or_overlapping_intervals_claim_nothing() -> None:
    lines, _ = compare(ORG, {"threshold": 0.8, "headline": REAL["headline"][:2]}, {"sentiment": "real_sentiment"})
    assert any("too few to compare rankings" in x for x in lines)
    wide = {"threshold": 0.8, "headline": [_head("real_sentiment", m, g, 0.5, None)
                                           for m, g in (("dpo", 0.1), ("steering", 0.3), ("lora_sft", 0.2))]}
    lines, _ = compare(ORG, wide, {"sentiment": "real_sentiment"})
    text = "\n".join(lines)
    assert "largest gain is dpo's on A and steering's on B" in text and "not established" in text
    assert spearman([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == -1.0
    one = {"threshold": 0.8, "headline": [{**_head("real_sentiment", m, g, 0.0, None), "n": 1}
                                          for m, g in (("dpo", 0.4), ("steering", 0.2), ("lora_sft", 0.3))]}
    text = "\n".join(compare(ORG, one, {"sentiment": "real_sentiment"}, ("organism", "SmolLM2"))[0])
    assert "+0.40 (one run)" in text and "One run per method on SmolLM2: no interval" in text
    flat = {"threshold": 0.8, "headline": [{**_head("real_sentiment", m, -0.17, 0.0, None), "n": 1}
                                           for m in ("dpo", "steering", "lora_sft")]}
    text = "\n".join(compare(ORG, flat, {"sentiment": "real_sentiment"}, ("organism", "SmolLM2"))[0])
    assert "Every method's held-out gain is the same on SmolLM2 (3 methods): no ranking to compare" in text


def test_study_compare_writes_the_file_and_refuses_a_bad_pair(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(ORG))
    b.write_text(json.dumps(REAL))
    out = tmp_path / "cmp.md"
    runner = CliRunner()
    res = runner.invoke(app, ["compare", "--a", str(a), "--b", str(b), "--pair", "sentiment=real_sentiment",
                              "--out", str(out), "--names", "organism,SmolLM2"])
    assert res.exit_code == 0 and "organism vs SmolLM2" in out.read_text()
    bad = runner.invoke(app, ["compare", "--a", str(a), "--b", str(b), "--pair", "sentiment", "--out",
                              str(tmp_path / "x.md")])
    assert bad.exit_code == 2 and "expected target_in_a=target_in_b" in bad.output
    assert not (tmp_path / "x.md").exists()


def test_steering_choices_count_layers_at_the_reference_condition() -> None:
    from analysis.choices import choice_lines, steering_choices

    def cell(layers, a=0.5, strength=0.5, window=1, method="steering"):
        return {"config": {"model": {"name": "smollm2"}, "target": {"name": "real_sentiment"},
                           "method": {"name": method}, "anticipation": a, "labeler": {"noise": 0.0, "misspec": 0.0}},
                "provenance": {"chosen": {"layers": layers, "position": "last", "window": window,
                                          "strength": strength}}}

    cells = {"a": cell([15]), "b": cell([15], strength=1.0), "c": cell([22]), "d": cell([]), "e": cell([7], a=0.25),
             "f": {"config": {"method": {"name": "dpo"}}, "provenance": {"chosen": {"steps": 4}}}}
    rows = steering_choices(cells, {"anticipation": 0.5, "labeler_noise": 0.0, "labeler_misspec": 0.0})
    assert len(rows) == 1 and rows[0]["layers"] == {"15": 2, "22": 1} and rows[0]["base_stood"] == 1
    assert rows[0]["cells"] == 4 and rows[0]["strength_median"] == 0.5 and rows[0]["window"] == "1"
    assert "| smollm2 | real_sentiment | steering | 15 (2), 22 (1) | last | 1 | 0.5 | 1 |" in choice_lines(rows)
