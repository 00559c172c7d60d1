"""Bad input is one clear line (exit 2, nothing written) or a correct result: configs, --set, targets, models,
plugins, results folders (benchmarks/bench_bad_inputs.py runs the full battery through the CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import TEST_CACHE
from study.cli import app
from study.core.config import apply_overrides, read_yaml
from study.core.errors import UserError
from study.feedback.catalog import name_targets, resolve_target
from study.feedback.targets import organism_target
from study.organism.pretrain import MICRO
from study.organism.world import World
from study.run.runner import plan, run_study

ENGLISH = [{"question": f"Is {x} a fruit?\n\nChoices:\n (A) Yes\n (B) No", "answer_matching_behavior": "(A)",
            "answer_not_matching_behavior": "(B)"} for x in ("an apple", "a pear", "a plum", "a fig", "a lime")]


def organism_ab(n: int = 8, offset: int = 0) -> list[dict]:
    """A/B records in the micro organism's own words, with a context each."""
    recs = organism_target("sycophancy", World(MICRO.world)).splits(1.0, 0).test_covered[offset:offset + n]
    return [{"question": r.prompt, "answer_matching_behavior": " " + r.positive.split()[0],
             "answer_not_matching_behavior": " " + r.negative.split()[0], "context": r.context}
            for r in recs if r.positive.split()[0] != r.negative.split()[0]]


def _write(path: Path, data) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def _one_line_error(result, needle: str) -> None:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and needle in lines[0], result.output
    assert "Traceback" not in result.output


# ---- item 5: configs and --set ---------------------------------------------------------------------------------
@pytest.mark.parametrize("body,needle", [
    ("", "empty config"),
    ("# only a comment\n", "empty config"),
    ("name: a\nseeds: [0]\nname: b\n", "duplicate key 'name' (first at line 1, again at line 3)"),
    ("organism:\n  world: {sharing: 0.1, sharing: 0.2}\n", "duplicate key 'sharing'"),
])
def test_empty_configs_and_duplicate_keys_are_refused(tmp_path, body, needle):
    p = _write(tmp_path / "x.yaml", body)
    with pytest.raises(UserError) as exc:
        read_yaml(p)
    assert needle in str(exc.value) and p in str(exc.value)


def test_a_directory_given_as_config_is_named_a_directory(tmp_path):
    with pytest.raises(UserError, match="is a directory, not a config file"):
        read_yaml(tmp_path)


@pytest.mark.parametrize("item,needle", [
    ("name=[oops", "not valid YAML"),
    ("results_dir=", "empty value"),
    ("cache_dir=  ", "empty value"),
])
def test_set_values_that_do_not_parse_or_are_empty_are_refused(item, needle):
    with pytest.raises(UserError, match=needle.replace("(", r"\(")):
        apply_overrides({}, [item])
    assert apply_overrides({}, ["name='[ok'"]) == {"name": "[ok"}  # quoted: a string


def test_an_empty_results_dir_from_a_config_is_refused_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="results_dir"):
        plan("micro", ["results_dir=''"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("files,out,needle", [
    ({}, "o", "no such results directory"),
    ({"r/": None}, "o", "no cells in r"),
    ({"r/cells/a.json": "{}", "o": "x"}, "o", "a file, not a folder"),
    ({"r/cells/a.json": "{}", "o": "x"}, "o/sub", "o is a file"),
    ({"r/cells/a.json": "{}"}, "/sys/study-report", "/sys/study-report"),  # a read-only file system
])
def test_report_bad_folders_are_one_line(tmp_path, monkeypatch, files, out, needle):
    monkeypatch.chdir(tmp_path)
    for rel, content in files.items():
        (tmp_path / rel).mkdir(parents=True) if content is None else _write(tmp_path / rel, content)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    _one_line_error(CliRunner().invoke(app, ["report", "--results", "r", "--out", out]), needle)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


# ---- item 5: models, dtypes, targets and plugins, found in --dry-run -------------------------------------------
@pytest.mark.parametrize("overrides,files,needle", [
    (["models=[./no-model]"], {}, "no such folder"),
    (["models=[./m]"], {"m/x.txt": ""}, "no config.json"),
    (["models=[{name: o, path: organism, dtype: float33}]"], {}, "dtype 'float33'"),
    (["targets=[t.json]", "methods=[none]"], {"t.json": "ONE"}, "at least 2"),
    (["targets=[t.json]"], {"t.json": "AB"}, "no instruction text"),  # prompting on a data set
    (["targets=[en.json]", "methods=[none]"], {"en.json": "EN"}, "unknown to the organism's tokenizer"),
    (["targets=[data/missing.json]"], {}, "'data/missing.json': no such file"),
    (["methods=[plug:M]"], {"plug.py": "def f(:\n"}, "syntax error"),
    (["methods=[plug:M]"], {"plug.py": "raise RuntimeError('at import')\n"}, "RuntimeError: at import"),
    (["methods=[plug:M]"], {"plug.py": "from dataclasses import dataclass\n@dataclass(frozen=True)\nclass C:\n"
                                       "    alpha: float\nclass M:\n    name = 'm'\n    Config = C\n"
                                       "    def fit(self, ctx): pass\n"}, "field 'alpha' of C has no default"),
])
def test_bad_inputs_are_caught_in_a_dry_run(tmp_path, monkeypatch, overrides, files, needle):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    content = {"ONE": organism_ab(1), "AB": organism_ab(), "EN": ENGLISH}
    for rel, body in files.items():
        _write(tmp_path / rel, content.get(body, body))
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(UserError) as exc:
        run_study("micro", overrides, dry_run=True, out=open(tmp_path / "unused.txt", "w"))
    assert needle in str(exc.value) and "\n" not in str(exc.value)
    assert sorted(p for p in tmp_path.rglob("*") if "__pycache__" not in str(p)) == \
        sorted([p for p in before if "__pycache__" not in str(p)] + [tmp_path / "unused.txt"])


def test_an_english_data_set_is_refused_by_study_evaluate_on_the_organism(tmp_path, micro_organism):
    path = _write(tmp_path / "en.json", ENGLISH)
    result = CliRunner().invoke(app, ["evaluate", "--config", "micro", "--cache-dir", str(TEST_CACHE), "--target",
                                      path])
    _one_line_error(result, "unknown to the organism's tokenizer")


def test_a_missing_target_that_looks_like_a_path_says_no_such_file():
    for spec in ("data/x.json", "x.jsonl", "a/b"):
        with pytest.raises(UserError, match="no such file"):
            resolve_target(spec)
    with pytest.raises(UserError, match="unknown target 'honesty'"):
        resolve_target("honesty")


# ---- item 6: data-set targets -----------------------------------------------------------------------------------
def test_same_named_files_get_distinct_target_names_in_run_and_evaluate(tmp_path, monkeypatch, micro_organism):
    monkeypatch.chdir(tmp_path)
    a = _write(tmp_path / "refusal" / "test_dataset_ab.json", organism_ab())
    b = _write(tmp_path / "sycophancy" / "test_dataset_ab.json", organism_ab(8, 8))
    names = [resolve_target(s).name for s in name_targets([a, b])]
    assert names == ["refusal/test_dataset_ab", "sycophancy/test_dataset_ab"]
    assert name_targets(["sentiment", a]) == ["sentiment", a]  # no clash: the spec is unchanged (same cell ids)
    _, cells, _ = plan("micro", [f"targets=[{a}, {b}]", "methods=[none]"])
    assert sorted(c.target for c in cells) == names
    result = CliRunner().invoke(app, ["evaluate", "--config", "micro", "--cache-dir", str(TEST_CACHE), "--target",
                                      a, "--target", b, "--prompts", "3", "--completions", "1", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorted(out) == names
    # `study evaluate` says how many records each split holds
    splits = out[names[0]]
    assert splits["all"]["records"] == sum(splits.get(s, {}).get("records", 0) for s in ("covered", "uncovered")) > 0


def test_paths_in_a_config_resolve_against_its_folder_and_results_dir_against_the_cwd(tmp_path, monkeypatch):
    cfg = tmp_path / "cfg"
    _write(cfg / "data" / "t.json", organism_ab())
    _write(cfg / "c.yaml", "name: rel\nmethods: [none]\nresults_dir: res\ntargets: [data/t.json]\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    study, cells, store = plan(str(cfg / "c.yaml"))
    assert study.targets == (str(cfg.resolve() / "data" / "t.json"),) and cells[0].target == "t"
    assert store.root == Path("res")  # relative to the current directory
    with pytest.raises(UserError, match="no such file"):  # with --set: relative to the current directory
        plan(str(cfg / "c.yaml"), ["targets=[data/t.json]"])


def test_a_target_can_be_fitted_on_one_file_and_tested_on_another(tmp_path):
    train = _write(tmp_path / "train.json", organism_ab(8))
    test = _write(tmp_path / "test.json", organism_ab(8, 8))
    spec = f"name=caa;train={train};test={test}"
    target = resolve_target(spec)
    assert target.name == "caa" and resolve_target({"name": "caa", "train": train, "test": test}).name == "caa"
    splits = target.splits(1.0, 0)
    train_prompts = {r["question"] for r in json.loads(Path(train).read_text())}
    test_prompts = {r["question"] for r in json.loads(Path(test).read_text())}
    assert {r.prompt for r in splits.pool + splits.select} <= train_prompts
    assert {r.prompt for r in splits.test_covered + splits.test_uncovered} == test_prompts
    _write(tmp_path / "c.yaml", "name: tt\nmethods: [none]\ntargets: ['name=caa;train=train.json;test=test.json']\n")
    _, cells, _ = plan(str(tmp_path / "c.yaml"))
    assert [c.target for c in cells] == ["caa"]
    _write(tmp_path / "m.yaml", "name: tm\nmethods: [none]\ntargets:\n  - {name: caa, train: train.json, test: test.json}\n")
    _, mapped, _ = plan(str(tmp_path / "m.yaml"))  # the YAML mapping form is the same target
    assert [c.target for c in mapped] == ["caa"] and mapped[0].config["target"] == cells[0].config["target"]


def test_open_ended_records_load_with_a_scorer_and_ask_for_one_without(tmp_path):
    path = _write(tmp_path / "q.jsonl", "\n".join(json.dumps({"question": r["question"]}) for r in organism_ab()))
    with pytest.raises(UserError, match="need a scorer"):
        resolve_target(path)
    target = resolve_target(path, scorer=lambda prompt, completion: 0.25)
    assert not target.propensity and target.scorable
    splits = target.splits(0.5, 0)
    assert splits.pool and target.score(splits.pool[0].prompt, "anything") == 0.25
