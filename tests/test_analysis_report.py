"""analysis.figures and analysis.report: every figure is written (or skipped with a note), reports are generated
from the numbers, regenerate byte-identically, and never pull in torch."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis import figures as F
from analysis import findings as W
from analysis import metrics as M
from analysis.report import write_report
from analysis.synthetic import MethodTruth, SyntheticSpec, write_results
from analysis.table import load_table, read_results

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"
METHODS = {
    "dpo": MethodTruth(0.10, ratio=0.5, anticipation=0.2, noise=0.3, misspec=0.25, kl=0.04),
    "sft": MethodTruth(0.09, ratio=0.2, anticipation=0.3, cost_per_label=4.0, kl=0.03),
    "steering": MethodTruth(0.05, ratio=0.95, kl=0.01, steering=True),
    "dpo+steering": MethodTruth(0.12, ratio=0.7, kl=0.05, steering=True),
}
RICH = SyntheticSpec(targets=("sentiment", "refusal"), methods=METHODS, budgets=(8, 64, 512),
                     anticipations=(0.5, 0.25, 1.0), noises=(0.0, 0.2), misspecs=(0.0, 0.3))


@pytest.fixture(scope="module")
def rich(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rich")
    write_results(root, RICH)
    return root


@pytest.fixture(scope="module")
def report(rich: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("report")
    return out, write_report(rich, out)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---- figures -----------------------------------------------------------------------------------------------------


def test_every_figure_is_written(rich: Path, tmp_path: Path) -> None:
    t = load_table(rich)
    notes: list[str] = []
    out = F.write_figures(t, tmp_path, notes)
    assert notes == [] and set(out) == set(F.FIGURES)
    for name, path in out.items():
        assert path is not None and path.read_bytes().startswith(PNG), name
        assert b"Software" not in path.read_bytes()  # no matplotlib version stamp
        assert not pd.read_csv(F.data_path(path)).empty, name  # the plotted numbers, beside the PNG
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(f"{n}.{ext}" for n in F.FIGURES for ext in ("png", "csv"))  # no temporaries


def test_figures_skip_cleanly_without_variation(tmp_path: Path) -> None:
    write_results(tmp_path / "flat", SyntheticSpec(targets=("sentiment",), methods={"dpo": METHODS["dpo"]},
                                                   budgets=(64,), seeds=(0,), with_base=False))
    t = load_table(tmp_path / "flat")
    notes: list[str] = []
    out = F.write_figures(t, tmp_path / "figs", notes, threshold=0.99)
    assert all(v is None for v in out.values())
    assert not list(tmp_path.rglob("*.png")) and not list(tmp_path.rglob("*.csv"))
    joined = "\n".join(notes)
    for phrase in ("two or more feedback costs", "single anticipation", "single labeler noise", "Pareto",
                   "no method reached", "no steering slope rows"):
        assert phrase in joined, phrase


def test_steering_figure_falls_back_to_quantile_rows(tmp_path: Path) -> None:
    spec = SyntheticSpec(targets=("sentiment",), methods={"steering": METHODS["steering"]}, budgets=(8, 64),
                         samples=0)
    write_results(tmp_path, spec)
    assert not list((tmp_path / "cells").glob("*.jsonl"))
    notes: list[str] = []
    path = F.steering_reliability(load_table(tmp_path), tmp_path / "s.png", notes)
    assert path is not None and path.read_bytes().startswith(PNG) and notes == []
    assert (tmp_path / "s.csv").is_file()


# ---- report ------------------------------------------------------------------------------------------------------


def test_report_files_and_figure_links(report: tuple[Path, dict]) -> None:
    out, summary = report
    md = (out / "REPORT.md").read_text()
    for name, rel in summary["figures"].items():
        assert rel is not None and (out / rel).is_file(), name
        assert f"]({rel})" in md
        assert f"]({rel.removesuffix('.png')}.csv)" in md and (out / rel).with_suffix(".csv").is_file()
    text = (out / "summary.json").read_text()
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"  # sorted keys, no NaN tokens
    assert "NaN" not in text and "Infinity" not in text
    assert summary["setup"]["methods"] == ["none", "dpo", "dpo+steering", "sft", "steering"]
    assert summary["setup"]["reference"] == {"anticipation": 0.5, "labeler_noise": 0.0, "labeler_misspec": 0.0}
    assert not list(out.rglob("*.tmp"))


def test_report_opens_with_the_first_figure_and_its_answers(report: tuple[Path, dict]) -> None:
    out, summary = report
    md = (out / "REPORT.md").read_text()
    glance, rest = md.split("## Set-up", 1)
    assert "## At a glance" in glance and "](figures/behavior_vs_cost.png)" in glance
    assert "](figures/behavior_vs_cost.png)" not in rest  # not repeated under Figures
    assert all(f"]({rel})" in rest for name, rel in summary["figures"].items() if name != "behavior_vs_cost")
    # the answers beside it are the winners in summary.json, for each target
    for w in summary["winners"]:
        if (w["question"], w["split"]) in W.GLANCE:
            line = W.winner_line(w, summary["threshold"])
            assert line in glance, line
            if w["method"] is not None:
                assert w["method"] in line
    assert glance.count("- cheapest to threshold (covered") == len({w["target"] for w in summary["winners"]})


def test_findings_are_generated_from_the_numbers(report: tuple[Path, dict], rich: Path) -> None:
    out, summary = report
    md = (out / "REPORT.md").read_text()
    head = {(h["target"], h["method"]): h for h in summary["headline"]}
    # dpo+steering: 0.3 + 0.12 ln 64 = 0.799 < 0.8 <= 0.3 + 0.12 ln 512: interpolated in log budget, just above 64.
    c = head[("sentiment", "dpo+steering")]["cost_to_threshold"]["covered"]
    assert c["reached"] and 64 < c["budget"] < 70
    # sft never reaches 0.8 uncovered; its 'never' is null in JSON, never inf.
    c = head[("sentiment", "sft")]["cost_to_threshold"]["uncovered"]
    assert c["reached"] is False and c["budget"] is None
    assert "**sft** does not reach 0.8 on covered contexts within 512 labels" not in md  # sft reaches it: 4*512 cost
    labels = math.exp(0.5 / 0.09)  # 0.3 + 0.09 ln b = 0.8, between the budgets 64 and 512
    assert f"**sft** reaches 0.8 on covered contexts with {labels:,.0f} labels (feedback cost {4 * labels:,.0f}" in md
    assert "does not reach 0.8 on uncovered contexts within 512 labels" in md
    ratio = head[("sentiment", "steering")]["generalization"]["ratio"]["mean"]
    assert ratio == pytest.approx(0.95, abs=1e-6)
    assert f"the uncovered gain is {ratio:.2f}" in md
    assert "Behavior on all test contexts falls with labeler noise" in md  # dpo: noise slope -0.3
    wins = {(w["target"], w["question"], w["split"]): w for w in summary["winners"]}
    # uncovered gain at 512: dpo+steering 0.12 x 0.7 x ln 512 = 0.52, dpo 0.1 x 0.5 x ln 512 + 0.2 x 0.5 = 0.41; the
    # same seed offsets in both: a clear paired difference.
    w = wins[("sentiment", "largest uncovered gain", "uncovered")]
    assert (w["method"], w["runner_up"], w["clear"]) == ("dpo+steering", "dpo", True)
    assert w["value"] == pytest.approx(0.12 * 0.7 * math.log(512), abs=1e-6) and w["p_holm"] < 0.05
    w = wins[("sentiment", "highest behavior at largest budget", "covered")]
    assert w["method"] == "dpo+steering"
    assert "- largest uncovered gain (uncovered): dpo+steering (0.52) ahead of dpo (0.41); " \
        "clear (paired test, Holm-adjusted p" in md
    # the base row: behavior 0.3 beside P(fluent and desired) 0.3 x 0.98, covered then uncovered
    assert "| none (base) | - | 0.30 | 0.29 | 0.30 | 0.29 |" in md


def test_report_follows_the_data(tmp_path: Path) -> None:
    """Swap which method generalizes best: the generated sentence must follow."""
    methods = {"a": MethodTruth(0.1, ratio=0.3), "b": MethodTruth(0.1, ratio=0.8)}
    spec = SyntheticSpec(targets=("sentiment",), methods=methods, budgets=(8, 64), samples=0)
    write_results(tmp_path / "r1", spec)
    s1 = write_report(tmp_path / "r1", tmp_path / "o1")
    swapped = SyntheticSpec(targets=("sentiment",), methods={"a": methods["b"], "b": methods["a"]}, budgets=(8, 64),
                            samples=0)
    write_results(tmp_path / "r2", swapped)
    s2 = write_report(tmp_path / "r2", tmp_path / "o2")
    pick = lambda s: next(w["method"] for w in s["winners"] if w["question"].startswith("largest uncovered gain"))  # noqa
    assert (pick(s1), pick(s2)) == ("b", "a")


def test_report_regenerates_byte_identically(rich: Path, report: tuple[Path, dict]) -> None:
    out, _ = report
    before = _files(out)
    figures = {f"figures/{n}.{ext}" for n in F.FIGURES for ext in ("png", "csv")}
    assert figures | {"REPORT.md", "summary.json"} == set(before)
    write_report(rich, out)
    after = _files(out)
    for name in before:
        assert after[name] == before[name], f"{name} differs between two runs"


def test_rerun_timings_do_not_change_the_report(tmp_path: Path) -> None:
    """Two runs of the same cells differ in timings, process ids and start times only: the report must not."""
    spec = SyntheticSpec(targets=("sentiment",), methods={"dpo": METHODS["dpo"]}, budgets=(8, 64), seeds=(0, 1),
                         samples=0)
    outs = []
    for run in (0, 1):
        root = tmp_path / f"run{run}" / "default"  # the report names the store's folder
        write_results(root, spec)
        for p in sorted((root / "cells").glob("*.json")):
            rec = json.loads(p.read_text())
            rec["provenance"] |= {"pid": 1000 + run, "started": f"2026-01-0{run + 1}T00:00:00+0000",
                                  "durations": {"fit": 1.5 + run, "total": 2.5 + run},
                                  "chosen": {"fit_seconds": 0.1 * (run + 1), "layer": 2}}
            p.write_text(json.dumps(rec))
        write_report(root, tmp_path / f"out{run}")
        outs.append(_files(tmp_path / f"out{run}"))
    assert outs[0] == outs[1]
    md = outs[0]["REPORT.md"].decode()
    assert "`chosen.layer` | 2" in md  # what the method chose is kept
    assert "durations" not in md and "fit_seconds" not in md and "`pid`" not in md


def test_report_names_bad_cells_and_missing_base(tmp_path: Path) -> None:
    spec = SyntheticSpec(targets=("sentiment",), methods={"dpo": METHODS["dpo"]}, budgets=(8, 64), with_base=False,
                         seeds=(0,), samples=0)
    write_results(tmp_path, spec)
    (tmp_path / "cells" / "broken.json").write_text('{"run_id": "broken", "status": "ok", "rows": [', "utf-8")
    (tmp_path / "cells" / "oom.json").write_text(json.dumps({"run_id": "oom", "status": "failed",
                                                             "error": "CUDA out of memory\ntrace"}), "utf-8")
    summary = write_report(tmp_path, tmp_path / "out")
    md = (tmp_path / "out" / "REPORT.md").read_text()
    assert "| broken.json | not valid JSON" in md and "| oom | CUDA out of memory |" in md
    assert summary["skipped_files"][0]["name"] == "broken.json"
    assert summary["failed_cells"] == [{"error": "CUDA out of memory\ntrace", "run_id": "oom"}]
    assert any("no base model" in n for n in summary["notes"])
    assert any("single seed" in n for n in summary["notes"])
    assert "(n=1, no CI)" in md


def test_report_on_an_empty_store(tmp_path: Path) -> None:
    (tmp_path / "cells").mkdir()
    summary = write_report(tmp_path, tmp_path / "out")
    assert summary["headline"] == [] and "No ok cells" in (tmp_path / "out" / "REPORT.md").read_text()


def test_stale_figures_are_removed(report: tuple[Path, dict], tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(report[0], out)
    assert (out / "figures" / "behavior_vs_anticipation.png").is_file()
    assert (out / "figures" / "behavior_vs_anticipation.csv").is_file()
    one = tmp_path / "one"
    write_results(one, SyntheticSpec(targets=("sentiment",), methods={"dpo": METHODS["dpo"]}, budgets=(8, 64),
                                     samples=0))
    summary = write_report(one, out)
    assert summary["figures"]["behavior_vs_anticipation"] is None
    assert not (out / "figures" / "behavior_vs_anticipation.png").exists()
    assert not (out / "figures" / "behavior_vs_anticipation.csv").exists()  # its data goes with it
    assert (out / "figures" / "behavior_vs_cost.png").is_file()
    assert (out / "figures" / "behavior_vs_cost.csv").is_file()
    assert "behavior_vs_anticipation.csv" not in (out / "REPORT.md").read_text()


def test_report_imports_no_training_stack(tmp_path: Path) -> None:
    store = tmp_path / "results"
    write_results(store, SyntheticSpec(targets=("sentiment",), methods={"steering": METHODS["steering"]},
                                       budgets=(8, 64)))
    code = (
        "import sys\n"
        "from analysis.report import write_report\n"
        f"write_report({str(store)!r}, {str(tmp_path / 'out')!r})\n"
        "heavy = {'torch', 'transformers', 'trl', 'peft', 'study', 'methods'}\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONHASHSEED="12345")  # another hash seed than this process
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    # The same store reported in this process (another hash seed) gives the same files.
    write_report(store, tmp_path / "here")
    assert _files(tmp_path / "out") == _files(tmp_path / "here")


def test_headline_reads_the_reference_condition(rich: Path) -> None:
    res = read_results(rich)
    assert M.reference_condition(res.table) == {"anticipation": 0.5, "labeler_noise": 0.0, "labeler_misspec": 0.0}
    assert isinstance(res.table, pd.DataFrame) and len(res.cells) == res.table["run_id"].nunique()


def test_a_report_reads_only_the_cells_its_study_json_lists(tmp_path: Path) -> None:
    """A results directory that holds cells of an earlier version of a study reports the current one (study.json),
    counts the others apart, and a damaged index stops `study report` with one line (exit 2) and writes nothing."""
    old = SyntheticSpec(targets=("sentiment",), methods={"dpo": METHODS["dpo"]}, budgets=(8, 64), samples=0)
    new = SyntheticSpec(targets=("sentiment",), methods={"sft": METHODS["sft"]}, budgets=(8, 64), samples=0)
    root = tmp_path / "store"
    (root / "cells").mkdir(parents=True)
    for name, spec in (("old", old), ("new", new)):
        write_results(tmp_path / name, spec)
        for p in (tmp_path / name / "cells").iterdir():
            shutil.copy(p, root / "cells" / p.name)
    new_ids = sorted(p.stem for p in (tmp_path / "new" / "cells").glob("*.json"))
    everything = read_results(root)
    assert {"dpo", "sft"} <= set(everything.table["method"]) and everything.others == []  # no index: every cell
    (root / "study.json").write_text(json.dumps({"name": "x", "run_ids": new_ids}))
    res = read_results(root)
    n_other = len(list((root / "cells").glob("*.json"))) - len(new_ids)
    assert sorted(res.cells) == new_ids and "dpo" not in set(res.table["method"]) and len(res.others) == n_other > 0
    summary = write_report(root, tmp_path / "out")
    assert summary["setup"]["cells"]["other_studies"] == n_other
    assert f"{n_other} other cell files in the directory are not this study's" in (tmp_path / "out" /
                                                                                    "REPORT.md").read_text()
    (root / "study.json").write_text('{"name": "x", "run_ids": ')
    with pytest.raises(ValueError, match="study.json"):
        read_results(root)
    proc = subprocess.run([sys.executable, "-m", "study.cli", "report", "--results", str(root), "--out",
                           str(tmp_path / "out2")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and "study.json" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "out2").exists()
