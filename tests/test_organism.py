"""The organism: tokenizer, deterministic pretraining and its weights hash, the cache, the convergence and behavior
checks, and `study organism`."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

from study.core.errors import UserError
from study.organism.pretrain import MICRO, build_tokenizer, ensure_organism, load_organism, organism_dir, \
    organism_info, weights_hash
from study.organism.world import World

TINY = dataclasses.replace(MICRO, train=dataclasses.replace(MICRO.train, steps=20, eval_docs=50, check_docs=200,
                                                            max_gap=10.0, behavior_max_error=1.0))


def test_tokenizer_has_one_token_per_world_word_and_round_trips():
    world = World(MICRO.world)
    tok = build_tokenizer(world)
    text = "review of hotel : the bed was cozy . the pool was spacious !"
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id and len(ids) == len(text.split()) + 1
    assert tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert all(tok.convert_tokens_to_ids(w) != tok.unk_token_id for w in world.vocabulary())


def test_pretraining_is_deterministic_hashed_and_cached(tmp_path):
    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    a, _ = load_organism(TINY, cache_dir=tmp_path / "a")
    b, _ = load_organism(TINY, cache_dir=tmp_path / "b")
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before  # settings restored
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name
    info_a, info_b = organism_info(TINY, tmp_path / "a"), organism_info(TINY, tmp_path / "b")
    assert info_a["weights_sha256"] == info_b["weights_sha256"] == weights_hash(a) == weights_hash(b)
    other_draw = dataclasses.replace(TINY, train=dataclasses.replace(TINY.train, seed=1))
    c, _ = load_organism(other_draw, cache_dir=tmp_path / "a")
    assert organism_info(other_draw, tmp_path / "a")["weights_sha256"] == weights_hash(c) != weights_hash(a)
    path = organism_dir(TINY, tmp_path / "a")
    assert (path / "model.safetensors").is_file() and not list(path.glob("*.bin"))
    info = json.loads((path / "organism.json").read_text())
    assert info["params"] == sum(p.numel() for p in a.parameters())
    assert info["entropy_floor"] > 0 and info["heldout_loss"] > info["entropy_floor"] - 0.02
    check = info["behavior_check"]
    assert check["episodes"] > 100 and check["max_error"] == max(
        v["error"] for v in check["buckets"].values() if v["n"] >= check["min_n"])
    assert info["behavior_tol"] == TINY.train.behavior_tol and info["behavior_ok"] is False  # 20 steps learn little
    # the verdict limits judge a cached organism; they are not part of what makes it
    strict = dataclasses.replace(TINY, train=dataclasses.replace(TINY.train, max_gap=1e-3, behavior_tol=0.9,
                                                                 behavior_max_error=0.95))
    assert organism_dir(strict, tmp_path / "a") == path
    assert organism_info(strict, tmp_path / "a")["behavior_ok"] is True
    with pytest.raises(UserError, match="max_gap = 0.001"):
        ensure_organism(strict, tmp_path / "a")
    mtime = (path / "model.safetensors").stat().st_mtime
    load_organism(TINY, cache_dir=tmp_path / "a")  # from the cache: nothing rewritten
    assert (path / "model.safetensors").stat().st_mtime == mtime
    other = dataclasses.replace(TINY, world=dataclasses.replace(TINY.world, sharing=0.9))
    assert organism_dir(other, tmp_path / "a") != path


def test_weights_hash_sees_one_changed_bit():
    from study.organism.pretrain import build_model

    world = World(MICRO.world)
    tok = build_tokenizer(world)
    torch.manual_seed(0)
    model = build_model(MICRO.model, len(tok), tok)
    h = weights_hash(model)
    assert len(h) == 64 and h == weights_hash(model)
    with torch.no_grad():
        w = model.model.norm.weight
        w[0] = torch.nextafter(w[0], torch.tensor(2.0))
    assert weights_hash(model) != h


def test_an_organism_that_stalled_above_the_floor_is_refused(tmp_path):
    stalled = dataclasses.replace(TINY, train=dataclasses.replace(TINY.train, steps=2, max_gap=0.01))
    with pytest.raises(UserError, match="entropy floor"):
        load_organism(stalled, cache_dir=tmp_path)


def test_an_organism_grossly_off_the_worlds_behavior_is_refused(tmp_path):
    off = dataclasses.replace(TINY, train=dataclasses.replace(TINY.train, steps=2, behavior_tol=0.01,
                                                              behavior_max_error=0.02))
    with pytest.raises(UserError, match="behavior_max_error"):
        load_organism(off, cache_dir=tmp_path)


def test_cli_organism_json(tmp_path, monkeypatch):
    env = {**os.environ, "RLHF_VS_STEERING_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "study.cli", "organism", "--config", "micro", "--json", "--set",
           "organism.train.steps=12", "--set", "organism.train.max_gap=10", "--set",
           "organism.train.behavior_max_error=1", "--set", "organism.train.check_docs=100", "--samples", "20",
           "--prompts", "2"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for key in ("params", "pretrain_seconds", "fluency", "base_rates", "samples", "heldout_loss", "entropy_floor"):
        assert key in out
    world = World(MICRO.world)
    assert set(out["base_rates"]) == {"sentiment", "sycophancy", "refusal"}
    assert set(out["base_rates"]["sentiment"]) == set(world.contexts)
    assert 0.0 <= out["fluency"] <= 1.0 and out["samples"]
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert json.loads(again.stdout)["pretrain_seconds"] == out["pretrain_seconds"]  # loaded, not retrained
    assert sorted(os.listdir(tmp_path)) == ["cache"]  # nothing written outside the named cache


def test_ensuring_an_organism_removes_folders_abandoned_by_killed_runs(tmp_path):
    """A run killed while pretraining leaves `organism-<key>.tmp<pid>/`; the next ensure removes it if that process
    is dead, and leaves the folders of live processes (a pretraining still under way) alone."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out = organism_dir(TINY, tmp_path)
        out.mkdir(parents=True)  # a cached organism: ensuring it must not pretrain
        (out / "organism.json").write_text(json.dumps({"gap": 0.0}))
        other = organism_dir(dataclasses.replace(TINY, world=dataclasses.replace(TINY.world, sharing=0.9)), tmp_path)
        abandoned = [out.with_name(out.name + f".tmp{dead.pid}"), other.with_name(other.name + f".tmp{dead.pid}")]
        running = other.with_name(other.name + f".tmp{live.pid}")
        for d in abandoned + [running]:
            (d / "trainer").mkdir(parents=True)
            (d / "trainer" / "partial.bin").write_bytes(b"half")
        assert ensure_organism(TINY, tmp_path) == out
        assert not any(d.exists() for d in abandoned)
        assert (running / "trainer" / "partial.bin").is_file()
        assert (out / "organism.json").is_file()
    finally:
        live.kill()
        live.wait()
