"""Shared plumbing of the trained methods (lora_sft, dpo, rlhf, bon): their config bases, buying feedback, the LoRA
intervention, the training-length rule, and keeping the shared base model untouched by TRL. The template that the LoRA
methods fill in is `methods.lora_template.LoraMethod`; the budget split and the judged selection of snapshots are
`methods.selection`'s, the same as every other method's.

The budget rule, the same for every method and every budget (`methods.selection.split_budget`): a share
`select_share` of the cell's budget (`SELECT_SHARE`, as steering keeps) is kept for judged selection when it pays one
judgment per snapshot in the first round of successive halving; the rest buys the method's training labels
(comparisons or demonstrations); whatever training labels cannot use (a demonstration costs 4) is judged too.
Candidates are adapter snapshots along one training run (fractions of its steps), judged on the same select prompts
with the adapter active, by successive halving; ties go to the last snapshot (the label-free default). Without a
selection budget the last snapshot is used. Training length (`steps_for`): `epochs` passes over the bought examples,
ceil(epochs * n / batch_size) steps, clamped to [min_steps, max_steps]: more labels, more steps.

    fit_units, select_units = split_budget(ctx.labeler, ctx.budget, share=SELECT_SHARE, candidates=4)
    pairs = buy_comparisons(ctx, fit_units)                  # two base samples per pool prompt, compared by the labeler
    best, table = select_best(ctx, candidates, select_units) # judged with each candidate active
"""

from __future__ import annotations

import copy
import json
import math
import random
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from methods.adapter_slot import release, slot_of
from methods.base import FitContext, Intervention
from methods.trl_presets import silence_trainer
from study.core.config import check
from study.core.timing import phase
from study.lm.generation import generate, render


# ---- the configs' shared fields: each method's Config subclasses the bases whose fields it has -------------------
@dataclass(frozen=True)
class TrainedConfig:
    """Every trained method (lora_sft, dpo, rlhf, bon). A subclass redeclares a field to give it its own default."""

    precision: str = "auto"  # auto (bf16 on a GPU that has it, fp32 elsewhere), fp32, bf16

    def validate(self) -> None:
        check(self.precision in ("auto", "fp32", "bf16"), "precision", self.precision, "auto, fp32 or bf16")


@dataclass(frozen=True)
class ComparisonsConfig(TrainedConfig):
    """The methods that buy comparisons of base-model samples (dpo, rlhf, bon)."""

    temperature: float = 1.0  # of the base-model samples shown to the labeler
    train_on_ties: bool = False  # a tie carries no preference; it is paid for either way

    def validate(self) -> None:
        super().validate()
        check(self.temperature > 0, "temperature", self.temperature,
              "must be positive (at 0 both samples are the same greedy completion: nothing to compare)")


def steps_for(n_examples: int, epochs: float, batch_size: int, min_steps: int, max_steps: int) -> int:
    """The training-length rule of lora_sft, dpo, the reward model and learned steering vectors: `epochs` passes over
    `n_examples` in batches of `batch_size`, clamped to [min_steps, max_steps]."""
    return max(min_steps, min(max_steps, math.ceil(epochs * n_examples / batch_size)))


# ---- buying feedback -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Preference:
    prompt: str  # the record's prompt, as the labeler saw it
    chosen: str
    rejected: str
    tie: bool


def _records(ctx: FitContext, salt: str) -> list:
    recs = list(ctx.pool)
    random.Random(f"{ctx.seed}:{salt}").shuffle(recs)
    return recs


def rendered(ctx: FitContext, prompt: str) -> str:
    """The prompt as the model reads it: rewritten by earlier parts of a stack, then in the chat template."""

    return render(ctx.model.tokenizer, ctx.prior, prompt, ctx.target.chat)


def buy_comparisons(ctx: FitContext, units: int, *, temperature: float = 1.0, max_rounds: int = 8) -> list[Preference]:
    """Spend `units` on comparisons. Organism-style targets: two completions sampled from the base model for each
    feedback prompt, compared by the labeler (identical or already-answered pairs are not asked). Data-set targets:
    each record's own pair (one record = one label)."""

    labeler, cost = ctx.labeler, ctx.labeler.cost("compare", record_backed=ctx.target.dataset_labels)
    start, out = labeler.account.spent, []
    left = lambda: units - (labeler.account.spent - start)  # noqa: E731
    recs = _records(ctx, "compare")
    if ctx.target.dataset_labels:
        for r in recs * max_rounds:
            if left() < cost:
                break
            if labeler.is_cached("compare", r.prompt, r.positive, r.negative):
                continue
            c = labeler.compare(r.prompt, r.positive, r.negative)
            out.append(Preference(r.prompt, c.chosen, c.rejected, c.tie))
        return out
    for rnd in range(max_rounds):
        if left() < cost:
            break
        batch = (recs * (left() // len(recs) + 2))[: int(left() / cost * 1.25) + 8]
        comps = generate(ctx.model.model, ctx.model.tokenizer, [rendered(ctx, r.prompt) for r in batch], None, n=2,
                         temperature=temperature, max_new_tokens=ctx.target.max_new_tokens,
                         seed=ctx.seed * 7919 + rnd)
        for r, (a, b) in zip(batch, comps):
            if left() < cost:
                break
            if a == b or labeler.is_cached("compare", r.prompt, a, b):
                continue
            c = labeler.compare(r.prompt, a, b)
            out.append(Preference(r.prompt, c.chosen, c.rejected, c.tie))
    return out


def buy_contrasts(ctx: FitContext, units: int, max_rounds: int = 8) -> list[Preference]:
    """Spend what `units` can pay on contrast pairs of pool prompts (`labeler.contrast`: the behavior and its
    opposite), as preferences (chosen = the behavior's side): the label type of steering, offered to the trained
    methods for the method x label-type crossings (`labels: contrast`)."""
    labeler, cost = ctx.labeler, ctx.labeler.cost("contrast", record_backed=True)
    start, out = labeler.account.spent, []
    for r in _records(ctx, "contrast") * max_rounds:
        if units - (labeler.account.spent - start) < cost:
            break
        if labeler.is_cached("contrast", r.prompt, r.positive, r.negative):
            continue
        pair = labeler.contrast(r)
        out.append(Preference(r.prompt, pair.positive, pair.negative, False))
    return out


def buy_demonstrations(ctx: FitContext, units: int, max_rounds: int = 8) -> list[tuple[str, str]]:
    """Spend what `units` can pay on written demonstrations of pool prompts: (prompt, completion) pairs."""
    labeler, cost = ctx.labeler, ctx.labeler.cost("demonstrate", record_backed=True)
    start, out = labeler.account.spent, []
    for r in _records(ctx, "demonstrate") * max_rounds:
        if units - (labeler.account.spent - start) < cost:
            break
        if labeler.is_cached("demonstrate", r.prompt, r.positive, r.negative):
            continue
        out.append((r.prompt, labeler.demonstrate(r)))
    return out


# ---- the shared base model stays the base model --------------------------------------------------------------------
@contextmanager
def isolated_training(model: Any) -> Iterator[None]:
    """Undo what a TRL trainer leaves on the shared model: parameter freezing, train mode, the fused-LM-head forward
    it patches onto the instance, tags, and generation/config edits. Adapters are removed by the caller (unload)."""
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    was_training = model.training
    keys = set(model.__dict__)
    gen = copy.deepcopy(getattr(model, "generation_config", None))
    text_cfg = model.config.get_text_config()
    cfg_ids = {k: getattr(text_cfg, k, None) for k in ("pad_token_id", "eos_token_id", "bos_token_id")}
    try:
        yield
    finally:
        strip_adapters(model)  # a trainer that failed after wrapping the model leaves its adapter behind
        for k in set(model.__dict__) - keys:
            del model.__dict__[k]
        for n, p in model.named_parameters():
            p.requires_grad_(flags.get(n, p.requires_grad))
        if gen is not None:
            model.generation_config = gen
        for k, v in cfg_ids.items():
            setattr(text_cfg, k, v)
        model.train(was_training)


def strip_adapters(model: Any) -> None:
    """Put back the original module wherever PEFT injected an adapter layer into `model`."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer) and name:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            if getattr(parent, child, None) is module:
                setattr(parent, child, module.get_base_layer())


def adapter_state(peft_model: Any) -> dict[str, Any]:
    """The trainable adapter weights of a PeftModel (PEFT's own key format), detached copies on the CPU."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().to("cpu", copy=True) for k, v in get_peft_model_state_dict(peft_model).items()}


def snapshot_callback(steps: list[int], store: dict[int, dict]) -> Any:
    """A TrainerCallback that copies the adapter weights at each of `steps` into `store` (step -> state dict)."""
    from transformers import TrainerCallback

    wanted = set(steps)

    class _Snapshots(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step in wanted and model is not None:
                store[state.global_step] = adapter_state(model)

    return _Snapshots()


def snapshot_steps(max_steps: int, fractions: tuple[float, ...]) -> list[int]:
    return sorted({max(1, min(max_steps, round(f * max_steps))) for f in fractions} | {max_steps})


@dataclass(frozen=True)
class TrainedAdapter:
    peft_config: Any  # the adapter's PEFT config
    snapshots: dict[int, dict]  # step -> adapter weights
    trainer: Any  # the TRL trainer, for its log history
    modules: list[str]  # sorted names (in the base model) of the modules that got a LoRA layer


def train_adapter(model: Any, make_trainer: Any, snapshots: list[int]) -> TrainedAdapter:
    """Run the TRL trainer that `make_trainer(callbacks)` builds around `model` (it wraps the model with its
    `peft_config`), copying the adapter at each step of `snapshots`; then unload the adapter, so the shared model is
    the base model again."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    store: dict[int, dict] = {}
    release(model)  # an adapter parked by an earlier part of the cell (methods.adapter_slot)
    with isolated_training(model):
        with phase("trainer_build"):
            trainer = silence_trainer(make_trainer([snapshot_callback(snapshots, store)]))
        peft_model = trainer.accelerator.unwrap_model(trainer.model)
        modules = sorted(n for n, m in peft_model.get_base_model().named_modules() if isinstance(m, BaseTunerLayer))
        try:
            with phase("train"):
                trainer.train()
        finally:
            peft_config = peft_model.peft_config["default"]
            peft_model.unload()
    return TrainedAdapter(peft_config, store, trainer, modules)


# ---- the interventions ---------------------------------------------------------------------------------------------
class AttachedOnce(Intervention):
    """An intervention that changes the shared model itself: `_attach` on the outermost `with`, `_detach` when it
    exits, so nested activations (a stack, the evaluator inside a selection) change the model once.

    A subclass that can make its change inert (`resident = True`, with `_suspend` and `_resume`) stays attached
    across the activations of one `session()`: the first activation attaches, leaving one suspends, the next resumes,
    and the session's end detaches. Suspended, it must compute exactly what the detached model computes."""

    resident = False

    def __init__(self) -> None:
        super().__init__()
        self._depth = 0
        self._sessions = 0
        self._attached = False

    @contextmanager
    def session(self) -> Iterator[Intervention]:
        self._sessions += 1
        try:
            yield self
        finally:
            self._sessions -= 1
            if self._sessions == 0 and self._attached and self._depth == 0:
                self._attached = False
                self._detach()

    @contextmanager
    def _activate(self, prompt_width: int | None) -> Iterator[None]:
        if self._depth == 0:
            if self._attached:
                self._resume()
            else:
                self._attach()
                self._attached = True
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                if self.resident and self._sessions:
                    self._suspend()
                else:
                    self._attached = False
                    self._detach()

    def _attach(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define _attach and _detach")

    def _detach(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define _attach and _detach")

    def _suspend(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} sets resident but does not define _suspend and _resume")

    def _resume(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} sets resident but does not define _suspend and _resume")


class LoraIntervention(AttachedOnce):
    """A trained LoRA adapter. Inside `with`, it is injected into the shared model (PEFT); on exit the original
    modules are put back, so outside the block the model is the base model, bit for bit. Within a `session()` it is
    injected once and disabled between activations (PEFT's disabled LoRA layer returns its base layer's output)."""

    resident = True

    def __init__(self, model: Any = None, peft_config: Any = None, state: dict | None = None,
                 chosen: dict | None = None):
        super().__init__()
        self.model, self.peft_config, self.state = model, peft_config, state or {}
        self.chosen = dict(chosen or {})
        self._name = f"rvs_{id(self):x}"
        self._adapter, self._parked = self._name, False

    def _attach(self) -> None:
        from peft import inject_adapter_in_model, set_peft_model_state_dict
        from peft.tuners.tuners_utils import BaseTunerLayer

        slot, signature = slot_of(self.model), json.dumps(self.peft_config.to_dict(), sort_keys=True, default=str)
        if slot is not None and slot.name is not None and not slot.busy:
            if slot.signature == signature:  # load into the parked layers (methods.adapter_slot)
                self._flags, self._had_cfg, self._adapter = slot.owner["flags"], slot.owner["had_cfg"], slot.name
                self._load(set_peft_model_state_dict)
                self._resume()
                slot.busy, self._parked = True, True
                return
            slot.clear()  # another config: strip it and inject anew
        if any(isinstance(m, BaseTunerLayer) for m in self.model.modules()):
            raise RuntimeError("another adapter is already active on this model: stack at most one adapter method "
                               "(e.g. dpo+steering, not dpo+lora_sft)")
        cfg = copy.deepcopy(self.peft_config)
        cfg.inference_mode = True
        self._flags = {n: p.requires_grad for n, p in self.model.named_parameters()}
        self._had_cfg = "peft_config" in self.model.__dict__
        self._adapter = self._name
        inject_adapter_in_model(cfg, self.model, adapter_name=self._name)
        self._load(set_peft_model_state_dict)
        self._parked = slot is not None
        if slot is not None:
            slot.name, slot.signature, slot.busy = self._name, signature, True
            slot.owner, slot.strip = {"flags": self._flags, "had_cfg": self._had_cfg}, self._strip

    def _load(self, set_state: Any) -> None:
        try:
            result = set_state(self.model, self.state, adapter_name=self._adapter)
        except BaseException:
            self._unload()
            raise
        if result.unexpected_keys:
            self._unload()
            raise RuntimeError(f"adapter weights do not fit the model: unexpected keys {result.unexpected_keys[:3]}")

    def _unload(self) -> None:
        """Strip the layers after a failed load; parked ones through their slot, so it names no stripped adapter."""
        slot = slot_of(self.model)
        if slot is not None and slot.name == self._adapter:
            slot.clear()
        else:
            self._strip()

    def _layers(self) -> list:
        from peft.tuners.tuners_utils import BaseTunerLayer

        return [m for m in self.model.modules() if isinstance(m, BaseTunerLayer)]

    def _suspend(self) -> None:
        for m in self._layers():
            m.enable_adapters(False)

    def _resume(self) -> None:
        for m in self._layers():
            m.enable_adapters(True)  # PEFT also makes the adapter trainable again; as injected, it is not
            for name in m.adapter_layer_names:
                getattr(m, name).requires_grad_(False)

    def _detach(self) -> None:
        slot = slot_of(self.model)
        if self._parked and slot is not None and slot.name == self._adapter:
            self._suspend()  # parked: inert until the next adapter of this config, stripped at the scope's end
            slot.busy = False
            return
        self._strip()

    def _strip(self) -> None:
        strip_adapters(self.model)
        if not self._had_cfg:
            self.model.__dict__.pop("peft_config", None)
        for n, p in self.model.named_parameters():
            p.requires_grad_(self._flags.get(n, p.requires_grad))

    def num_parameters(self) -> int:
        """How many numbers the adapter trained (its LoRA matrices)."""
        return sum(v.numel() for v in self.state.values())

    # ---- save/load: PEFT's own format (adapter_config.json + adapter_model.safetensors) -------------------------
    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.peft_config.save_pretrained(str(path))
        save_file({k: v.contiguous() for k, v in self.state.items()}, str(path / "adapter_model.safetensors"))
        (path / "intervention.json").write_text(json.dumps({"type": type(self).__name__, "chosen": self.chosen},
                                                           sort_keys=True, default=str))

    @classmethod
    def load(cls, path: str | Path, model: Any) -> "LoraIntervention":
        from peft import PeftConfig
        from safetensors.torch import load_file

        path = Path(path)
        model = getattr(model, "model", model)  # a LoadedModel or the transformers model itself
        meta = json.loads((path / "intervention.json").read_text())
        return cls(model, PeftConfig.from_pretrained(str(path)), load_file(str(path / "adapter_model.safetensors")),
                   meta["chosen"])


