"""Trained methods through the runner's cell pipeline (study.run.cell.run_cell) on the micro organism: the cell record
carries the trainer, the labels, the adapted modules and, for rlhf, the learned reward beside the true reward on the
same samples."""

from __future__ import annotations

from pathlib import Path

import pytest

from study.run.grid import expand
from study.run.study_config import load_study

pytestmark = pytest.mark.usefixtures("one_thread")

CACHE = str(Path(__file__).resolve().parent.parent / ".cache" / "test-organism")
RLHF_FAST = "{steps: 4, batch_size: 8, num_generations: 2, rm_epochs: 1.0, train_on_ties: true}"
DPO_FAST = "{min_steps: 4, max_steps: 6, batch_size: 8, train_on_ties: true}"




def cells(micro_organism, methods: str, budget: int, method_config: str):
    study = load_study("micro", [f"cache_dir={CACHE}", f"methods=[{methods}]", f"budgets=[{budget}]",
                                 "method_budgets={}", f"method_config={method_config}", "targets=[sentiment]",
                                 "anticipations=[0.5]", "seeds=[0]", "labeler_noise=[0.0]", "labeler_misspec=[0.0]"])
    return expand(study, "micro", CACHE)


def test_rlhf_cell_records_learned_beside_true_reward(micro_organism):
    from study.run.cell import run_cell

    (cell,) = cells(micro_organism, "rlhf", 32, f"{{rlhf: {RLHF_FAST}}}")
    res = run_cell(cell)
    assert res.status == "ok", res.error
    chosen = res.provenance["chosen"]
    assert chosen["trainer"] == "trl.RLOOTrainer" and chosen["reward_model"]["trainer"] == "trl.RewardTrainer"
    # the adapter's shape goes with the cell: which modules got a LoRA layer, and how many numbers it trained
    assert chosen["lora_modules"] and all(n.startswith("model.layers.") for n in chosen["lora_modules"])
    assert chosen["trainable_parameters"] > 0
    assert res.provenance["labels"]["counts"] == {"compare": 24, "judge": 8}  # a quarter of 32 kept for judged selection
    assert {r["feedback_cost"] for r in res.rows} == {32.0}
    metrics = {(r["split"], r["metric"]) for r in res.rows}
    for split in ("covered", "uncovered", "rl_first", "rl_last"):
        assert (split, "learned_reward") in metrics and (split, "true_reward") in metrics
    paired = [s for s in res.samples if "learned_reward" in s]
    assert paired and all("true_reward" in s and "completion" in s for s in paired)


@pytest.mark.slow
def test_dpo_then_steering_stack(micro_organism):
    from study.run.cell import run_cell

    (cell,) = cells(micro_organism, "dpo+steering", 64, f"{{dpo: {DPO_FAST}}}")
    res = run_cell(cell)
    assert res.status == "ok", res.error
    chosen = res.provenance["chosen"]
    assert chosen["0.trainer"] == "trl.DPOTrainer"
    assert chosen["0.comparisons"] == res.provenance["labels"]["counts"]["compare"] == 32  # half the stack's budget
    assert all(r["feedback_cost"] <= 64 for r in res.rows)
