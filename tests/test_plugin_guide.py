"""The plugin guide (docs/adding_a_method.md) is complete and true: its imports work, `study.testing.micro_context`
fits the guide's example method for real, and `select_score` charges what the guide says."""

from __future__ import annotations

import importlib
import math
import re
from pathlib import Path

import pytest
import torch

from conftest import TEST_CACHE

REPO = Path(__file__).resolve().parents[1]
GUIDE = (REPO / "docs" / "adding_a_method.md").read_text()


def test_every_import_in_the_guide_works():
    imports = [line.split("#")[0].strip() for block in re.findall(r"```python\n(.*?)```", GUIDE, re.S)
               for line in block.splitlines() if line.startswith(("from methods", "from study"))]
    assert {"from methods.base import FitContext, Intervention, Stacked", "from study.core.config import check",
            "from study.feedback.labeler import BudgetExhausted", "from study.lm.models import LoadedModel",
            "from study.testing import micro_context"} <= set(imports)
    for line in imports:  # each `from module import a, b` names importable attributes
        module, names = line.removeprefix("from ").split(" import ")
        loaded = importlib.import_module(module)
        assert all(hasattr(loaded, name.strip()) for name in names.split(",")), line


@pytest.mark.parametrize("needle", ["super().__init__()", "ctx.prior.prompt(", "**`None`: unreadable**",
                                    "BudgetExhausted", "before charging anything", "study.testing"])
def test_the_guide_covers(needle):
    assert needle in GUIDE


@pytest.fixture(scope="module")
def example(micro_organism):
    import sys

    sys.path.insert(0, str(REPO))
    from docs.examples import logit_bias

    yield logit_bias
    sys.path.remove(str(REPO))


def test_micro_context_fits_the_guide_example_within_its_budget_and_the_hook_is_exact(example):
    from study.lm.models import LoadedModel
    from study.testing import micro_context

    ctx = micro_context(example.LogitBiasConfig(), target="sentiment", budget=16, seed=0, cache_dir=TEST_CACHE)
    assert isinstance(ctx.model, LoadedModel) and ctx.budget == 16 and ctx.pool and ctx.select
    iv = example.LogitBias(ctx.config).fit(ctx)
    assert ctx.labeler.account.spent <= 16 and iv.chosen["pairs"] == 4  # half the budget, 2 units a pair
    assert_adds_exactly_its_bias(iv, ctx.model.model, ctx.model.tokenizer)


def assert_adds_exactly_its_bias(iv, model, tok) -> None:
    """Inside `with iv` the logits move by exactly strength x bias; outside, they are the base's and no hook is left."""
    batch = tok(["review of hotel : the bed was"], return_tensors="pt")
    with torch.no_grad():
        base = model(**batch).logits
        with iv:
            steered = model(**batch).logits
        after = model(**batch).logits
    assert torch.allclose(steered - base, (iv.strength * iv.bias).expand_as(base), atol=1e-5)
    assert torch.equal(after, base) and not model.get_output_embeddings()._forward_hooks


def test_select_score_charges_one_unit_per_new_judgment_and_nothing_when_it_cannot_pay(micro_organism):
    from methods.base import Intervention
    from study.feedback.labeler import BudgetExhausted
    from study.testing import micro_context

    ctx = micro_context(None, budget=6, cache_dir=TEST_CACHE)
    r = ctx.select_score(Intervention(), max_labels=4)
    assert r["labels"] == 4 == ctx.labeler.account.spent and r["n"] == 4
    assert 0.0 <= r["fluency"] <= 1.0 and (math.isnan(r["behavior"]) or 0.0 <= r["behavior"] <= 1.0)
    assert ctx.select_score(Intervention(), max_labels=4)["labels"] == 0  # the same questions again: free
    with pytest.raises(BudgetExhausted):
        ctx.select_score(Intervention(), max_labels=4, seed=1)  # 4 new judgments, 2 units left
    assert ctx.labeler.account.spent == 4


def test_an_intervention_without_super_init_fails_as_the_guide_warns():
    from methods.base import Intervention

    class Forgetful(Intervention):
        def __init__(self):  # no super().__init__()
            self.x = 1

    with pytest.raises(AttributeError):
        with Forgetful():
            pass


def test_micro_context_refuses_a_target_it_does_not_have():
    from study.core.errors import UserError
    from study.testing import micro_context

    with pytest.raises(UserError, match="expected one of"):
        micro_context(None, target="honesty", cache_dir=TEST_CACHE)
