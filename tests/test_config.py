"""Study configuration: YAML into typed dataclasses; overrides; bad input exits 2 with one line and writes nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from study.core.config import apply_overrides, list_configs
from study.core.errors import ConfigError, UserError
from study.run.study_config import StudyConfig, load_study

STUDY = [sys.executable, "-m", "study.cli"]


def test_named_configs_load_and_overrides_apply():
    assert {"default", "micro"} <= set(list_configs())
    cfg = load_study("default")
    assert isinstance(cfg, StudyConfig) and cfg.name == "default"
    cfg2 = load_study("default", ["organism.world.sharing=0.7", "organism.train.steps=10"])
    assert cfg2.organism.world.sharing == 0.7 and cfg2.organism.train.steps == 10
    assert cfg.organism.key() != cfg2.organism.key()
    assert load_study("default").organism.key() == cfg.organism.key()  # the cache key is stable


def test_every_shipped_config_expands_into_its_grid():
    from study.run.grid import expand

    sizes = {name: len(expand(load_study(name), source=name)) for name in list_configs()}
    assert {"default", "dial", "full", "micro"} <= set(sizes)
    # 3 draws x 2 seeds x 3 targets x (none 6 + prompting 7 + 5 labeled methods x (4 budgets + 5 dial cells) + ceiling 1)
    assert sizes["default"] == 1062  # the README's figure rests on it
    assert sizes["dial"] == 180 and all(n > 0 for n in sizes.values())


def test_int_is_accepted_for_float_but_not_the_reverse(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("organism:\n  world:\n    sharing: 1\n")
    assert load_study(str(p)).organism.world.sharing == 1.0
    p.write_text("organism:\n  train:\n    steps: 1.5\n")
    with pytest.raises(ConfigError, match="organism.train.steps"):
        load_study(str(p))


@pytest.mark.parametrize("body,needle", [
    ("organism:\n  world:\n    sharing: [1\n", "malformed YAML"),
    ("organism:\n  wrld: {}\n", "organism.wrld"),
    ("organism:\n  world:\n    sharing: high\n", "organism.world.sharing"),
    ("organism:\n  train:\n    batch_size: -4\n", "organism.train.batch_size"),
    ("- just\n- a list\n", "mapping"),
])
def test_bad_config_errors_name_file_and_field(tmp_path, body, needle):
    p = tmp_path / "bad.yaml"
    p.write_text(body)
    with pytest.raises(UserError) as exc:
        load_study(str(p))
    msg = str(exc.value)
    assert needle in msg and str(p) in msg and "\n" not in msg


def test_override_syntax_errors():
    with pytest.raises(UserError, match="key=value"):
        apply_overrides({}, ["no-equals-sign"])
    with pytest.raises(UserError, match="not a section"):
        apply_overrides({"a": 1}, ["a.b=2"])


@pytest.mark.parametrize("body,needle", [
    ("organism:\n  world: {sharing: [1\n", "malformed YAML"),
    ("organism:\n  color: blue\n", "organism.color"),
    ("organism:\n  model:\n    num_layers: four\n", "organism.model.num_layers"),
    ("organism:\n  train:\n    steps: -1\n", "organism.train.steps"),
])
def test_cli_bad_config_exits_2_with_one_line_and_writes_nothing(tmp_path, body, needle):
    p = tmp_path / "bad.yaml"
    p.write_text(body)
    cache = tmp_path / "cache"
    env = {**os.environ, "RLHF_VS_STEERING_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    before = sorted(os.listdir(tmp_path))
    r = subprocess.run(STUDY + ["organism", "--config", str(p), "--json"], capture_output=True, text=True, env=env,
                       cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0] and str(p) in lines[0], r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert sorted(os.listdir(tmp_path)) == before and not cache.exists()


def test_cli_unknown_config_name(tmp_path):
    r = subprocess.run(STUDY + ["organism", "--config", "nonexistent"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and "no such config file" in r.stderr and "default" in r.stderr


def test_organism_draws_and_ceiling_from_a_file(tmp_path):
    p = tmp_path / "draws.yaml"
    p.write_text("organism_draws: [0, 1, 2]\nceiling: {method: dpo, budget: 256}\n")
    cfg = load_study(str(p))
    assert cfg.organism_draws == (0, 1, 2) and cfg.draws() == (0, 1, 2)
    assert (cfg.ceiling.method, cfg.ceiling_budget()) == ("dpo", 256)
    assert load_study("micro").organism_draws is None and load_study("micro").ceiling is None
    assert load_study("micro").draws() == (load_study("micro").organism.train.seed,)
    assert load_study("default").draws() == (0, 1, 2) and load_study("default").ceiling.method == "lora_sft"
    p.write_text("organism_draws: [2, 2]\n")
    with pytest.raises(UserError) as exc:
        load_study(str(p))
    assert "organism_draws" in str(exc.value) and str(p) in str(exc.value) and "twice" in str(exc.value)


def test_a_world_dial_that_is_off_leaves_the_organisms_cache_key_alone():
    """A default-off world dial added after format v4 (pretrain.LATER_DIALS) does not enter the key while off, so
    cached organisms stay valid; set, it makes a new organism. The pinned key is the default study's draw 0 on v4."""
    from study.run.grid import with_seed

    off = load_study("default").organism
    assert with_seed(off, 0).key() == "1723d334c251e8be"
    on = load_study("default", ["organism.world.bridge_scale=[0.0,1.0,1.0]"]).organism
    assert on.world.bridge_scale == (0.0, 1.0, 1.0) and on.key() != off.key()
