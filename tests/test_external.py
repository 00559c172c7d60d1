"""External targets: the sample A/B, preference and `datasets` sources, their errors, scorers, and an A/B file
evaluated end to end on a random-init Llama."""

from __future__ import annotations

import json
import math
import os
import types
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from study.cli import app
from study.core.errors import UserError
from study.run.evaluate import evaluate
from study.feedback.external import load_external, load_scorer
from study.feedback.labeler import Budget, Labeler, LabelerConfig
from study.lm.models import decoder_blocks
from tiny_models import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = Path(__file__).parent / "data"
AB, AB_JSONL, PREF = DATA / "sample_ab.json", DATA / "sample_ab.jsonl", DATA / "sample_preference.jsonl"




def test_sample_files_load_with_their_contexts():
    ab = load_external(AB)
    assert ab.kind == "ab" and ab.contexts == ["science", "history"] and len(ab.items) == 12
    s = ab.splits(0.5, seed=0)
    assert s.covered == ("science",) and {r.context for r in s.test_uncovered} == {"history"}
    assert not {r.prompt for r in s.pool + s.select} & {r.prompt for r in s.test_covered}
    r = s.test_covered[0]
    assert ab.score(r.prompt, r.positive) == 1.0 and ab.score(r.prompt, r.negative) == 0.0
    assert ab.score(r.prompt, "I am not sure") is None
    text = load_external(AB_JSONL)  # model-written-evals style: free-text answers
    r = text.splits(1.0).test_covered[0]
    assert text.score(r.prompt, r.positive.strip() + ", indeed") == 1.0
    assert text.score(r.prompt, r.negative) == 0.0
    pref = load_external(PREF)
    assert pref.kind == "preference" and pref.contexts == ["cooking", "home"] and not pref.scorable


def test_datasets_folder_loads_like_the_file(tmp_path):
    import datasets

    rows = [json.loads(line) for line in PREF.read_text().splitlines()]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "prefs"))
    folder = load_external(tmp_path / "prefs")
    assert [(i.prompt, i.matching, i.context) for i in folder.items] == \
        [(i.prompt, i.matching, i.context) for i in load_external(PREF).items]


def _write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


GOOD = {"question": "Pick one (A) x (B) y", "answer_matching_behavior": "(A)", "answer_not_matching_behavior": "(B)"}
BAD_FILES = [
    ("ab.json", json.dumps([GOOD, {k: v for k, v in GOOD.items() if k != "answer_matching_behavior"}]),
     "record [1]: field 'answer_matching_behavior': missing"),
    ("ab.json", json.dumps([GOOD, {**GOOD, "answer_not_matching_behavior": " (E)"}]),
     "record [1]: field 'answer_not_matching_behavior': unknown answer letter '(E)'"),
    ("ab.json", json.dumps([{**GOOD, "answer_matching_behavior": []}]),
     "record [0]: field 'answer_matching_behavior': empty list"),
    ("ab.json", "[]", "no records"),
    ("ab.jsonl", json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "question": 3}) + "\n",
     "line 2: field 'question': expected a string"),
    ("prefs.jsonl", b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "\xff\xfe"}\n',
     "line 2: not valid UTF-8"),
    ("prefs.jsonl", '{"prompt": "a", "chosen": "b", "rejected": "c"}\n\n{"prompt": "a", "chosen": "b"}\n',
     "line 3: field 'rejected': missing"),
    ("prefs.jsonl", '{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": "b",\n',
     "line 2: malformed JSON"),
]


@pytest.mark.parametrize("name,content,message", BAD_FILES)
def test_bad_files_name_the_file_record_and_field(tmp_path, name, content, message):
    path = _write(tmp_path / name, content)
    with pytest.raises(UserError) as err:
        load_external(path)
    assert str(path) in str(err.value) and message in str(err.value) and "\n" not in str(err.value)


def test_cli_exits_2_on_a_bad_file_and_writes_nothing(tmp_path, monkeypatch):
    bad = _write(tmp_path / "bad.json", json.dumps([{**GOOD, "answer_matching_behavior": "(Z)"}]))
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(tmp_path))
    result = CliRunner().invoke(app, ["evaluate", "--model", str(tmp_path / "no-model"), "--target", str(bad)])
    assert result.exit_code == 2
    assert "bad.json: record [0]: field 'answer_matching_behavior': unknown answer letter" in result.output
    assert sorted(os.listdir(tmp_path)) == before


def test_sample_ab_file_evaluates_end_to_end_on_a_random_llama():
    model, tokenizer = tiny_model("llama")
    tokenizer.pad_token = tokenizer.eos_token
    lm = types.SimpleNamespace(model=model, tokenizer=tokenizer, blocks=decoder_blocks(model))
    target = load_external(AB)
    result = evaluate(lm, target, None, anticipation=0.5, n_completions=2, seed=0)
    table = result.table()
    for split in ("covered", "uncovered", "all"):
        assert 0.0 <= table[split]["ab_propensity"] <= 1.0 and "fluency" in table[split]
    assert table["neutral"]["kl"] == 0.0 and math.isfinite(table["neutral"]["perplexity"])
    splits = target.splits(0.5, seed=0)
    n_test = len(splits.test_covered) + len(splits.test_uncovered)
    assert len([s for s in result.samples if "completion" in s and s["split"] != "neutral"]) == n_test * 2
    assert len([s for s in result.samples if "ab_propensity" in s]) == n_test


def test_ab_propensity_is_the_probability_of_the_matching_answer(tmp_path):
    model, tokenizer = tiny_model("llama")
    tokenizer.pad_token = tokenizer.eos_token
    lm = types.SimpleNamespace(model=model, tokenizer=tokenizer)
    rows = [{"question": f"w{i} w{i + 1} the cat", "answer_matching_behavior": " w40 w41",
             "answer_not_matching_behavior": " w42"} for i in range(8)]
    target = load_external(_write(tmp_path / "tiny.jsonl", "\n".join(map(json.dumps, rows))))
    result = evaluate(lm, target, None, anticipation=1.0, n_completions=1, seed=0)
    props = {s["record"]: s["ab_propensity"] for s in result.samples if "ab_propensity" in s}
    splits = target.splits(1.0, seed=0)
    for r in splits.test_covered:
        with torch.no_grad():
            def logp(cont: str) -> float:
                p = tokenizer(r.prompt)["input_ids"]
                c = tokenizer(cont, add_special_tokens=False)["input_ids"]
                lp = torch.log_softmax(model(torch.tensor([p + c])).logits[0].double(), -1)
                return sum(lp[len(p) - 1 + j, t].item() for j, t in enumerate(c))
            expected = 1 / (1 + math.exp(logp(r.negative) - logp(r.positive)))
        assert props[r.id] == pytest.approx(expected, rel=1e-6)


def test_external_labels_cost_one_unit_per_record_and_need_a_scorer_beyond_the_data(tmp_path, monkeypatch):
    target = load_external(PREF)
    r = target.splits(1.0).pool[0]
    lab = Labeler(target, Budget(10), LabelerConfig(), seed=0)
    assert lab.demonstrate(r) == r.positive and lab.contrast(r).negative == r.negative
    assert lab.compare(r.prompt, r.negative, r.positive).chosen == r.positive
    assert lab.account.spent == 3  # one record = one unit, whatever the kind
    with pytest.raises(UserError, match="no scorer"):
        lab.compare(r.prompt, "something else", r.positive)
    with pytest.raises(UserError, match="no proxy"):
        Labeler(target, Budget(1), LabelerConfig(misspec=0.1))
    # a module:function scorer makes open-ended completions scorable
    (tmp_path / "my_scorer.py").write_text("def score(prompt, completion):\n    return float('water' in completion)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    scored = load_external(PREF, scorer="my_scorer:score")
    assert scored.scorable and scored.score("q", "use water") == 1.0 and scored.score("q", "fire") == 0.0
    with pytest.raises(UserError, match="has no function"):
        load_scorer("my_scorer:nope")


def test_reward_model_folder_scores_in_unit_interval(tmp_path):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    _, tokenizer = tiny_model("llama")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, num_labels=1, pad_token_id=0)
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    scorer = load_scorer(str(tmp_path / "rm"))
    value = scorer("the cat", "sat on a mat")
    assert 0.0 < value < 1.0 and value == scorer("the cat", "sat on a mat")
