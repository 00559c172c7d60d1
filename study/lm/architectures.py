"""Which modules LoRA adapts, the same roles on every architecture: the attention and MLP projections of the
decoder blocks, found by looking at the model's actual Linear/Conv1D modules rather than by a fixed name list.

    lora_target_modules(phi3)    # ['o_proj', 'qkv_proj', 'gate_up_proj', 'down_proj']
    lora_target_modules(gpt2)    # ['c_attn', 'c_proj', 'c_fc']
    adapted_modules(peft_model)  # ['model.layers.0.self_attn.q_proj', ...]: what get_peft_model really wrapped
"""

from __future__ import annotations

from typing import Any

from study.core.errors import UserError
from study.lm.models import decoder_blocks, unwrap

# Leaf names of attention projections: separate (q/k/v), fused (qkv_proj, c_attn, query_key_value, Wqkv, W_pack,
# wqkv), low-rank (DeepSeek's q_a/q_b/kv_a/kv_b) and the output projection (o_proj, out_proj).
ATTENTION_NAMES = ("q_proj", "k_proj", "v_proj", "qkv_proj", "c_attn", "query_key_value", "Wqkv", "W_pack", "wqkv",
                   "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "out_proj")
# Leaf names of MLP projections: gated (gate/up/down, fused gate_up, w1/w2/w3) and plain two-layer MLPs.
MLP_NAMES = ("gate_proj", "up_proj", "down_proj", "gate_up_proj", "fc1", "fc2", "fc_in", "fc_out", "c_fc",
             "dense_h_to_4h", "dense_4h_to_h", "w1", "w2", "w3")
# Names an architecture uses for either role (GPT-2's c_proj ends both; NeoX/Phi's attention output is `dense`,
# InternLM2's is `wo`): the enclosing module's name decides.
EITHER_NAMES = ("c_proj", "dense", "wo")


def _describe(model: Any) -> str:
    inner = unwrap(model)
    config = getattr(inner, "config", None)
    name = getattr(config, "name_or_path", "") or getattr(config, "model_type", "") or "?"
    return f"model {name!r} (architecture {type(inner).__name__})"


def _is_projection(module: Any) -> bool:
    import torch
    from transformers.pytorch_utils import Conv1D

    # A PEFT-wrapped projection keeps the original layer as `base_layer`.
    return isinstance(getattr(module, "base_layer", module), (torch.nn.Linear, Conv1D))


def projection_role(path: str) -> str | None:
    """'attention', 'mlp' or None for a module at dotted `path` (relative to anything), judged by its leaf name."""
    *parents, leaf = path.split(".")
    if leaf in ATTENTION_NAMES:
        return "attention"
    if leaf in MLP_NAMES:
        return "mlp"
    if leaf in EITHER_NAMES:
        return "attention" if any("attn" in p or "attention" in p for p in parents) else "mlp"
    return None


def lora_target_modules(model: Any) -> list[str]:
    """The leaf names (PEFT `target_modules`) of the attention and MLP projections in `model`'s decoder blocks, in
    model order. Raises UserError if the blocks hold no projection of either kind, so that LoRA never silently
    adapts only half of what it adapts on other architectures (for example a MoE whose experts are fused tensors)."""
    names: list[str] = []
    roles: dict[str, list[str]] = {"attention": [], "mlp": []}
    linear: list[str] = []
    for block in decoder_blocks(model):
        for path, module in block.named_modules():
            if not path or not _is_projection(module):
                continue
            leaf = path.rsplit(".", 1)[-1]
            linear.append(leaf)
            role = projection_role(path)
            if role is not None and leaf not in roles[role]:
                roles[role].append(leaf)
            if role is not None and leaf not in names:
                names.append(leaf)
    known = ", ".join(ATTENTION_NAMES + MLP_NAMES + EITHER_NAMES)
    seen = ", ".join(dict.fromkeys(linear)) or "none"
    if not names:
        raise UserError(f"{_describe(model)}: no attention or MLP projection found for LoRA; its decoder blocks "
                        f"hold Linear/Conv1D modules named: {seen}; known projection names: {known}")
    for role, other in (("attention", "mlp"), ("mlp", "attention")):
        if not roles[role]:
            raise UserError(f"{_describe(model)}: LoRA found {other} projections ({', '.join(roles[other])}) but "
                            f"no {role} projection in the decoder blocks, so it would adapt other roles than on "
                            f"other architectures; Linear/Conv1D modules there: {seen}; known names: {known}")
    return names


def modules_outside_blocks(model: Any, targets: list[str]) -> list[str]:
    """Full names of the projections named like `targets` that lie outside the decoder blocks (a vision tower's
    q_proj, say), for PEFT's `exclude_modules`: leaf names alone would adapt them too."""
    inner = unwrap(model)
    inside = {id(m) for block in decoder_blocks(inner) for m in block.modules()}
    return [path for path, module in inner.named_modules()
            if path.rsplit(".", 1)[-1] in targets and id(module) not in inside and _is_projection(module)]


def adapted_modules(model: Any) -> list[str]:
    """Full names (relative to the transformers model, in model order) of the modules holding a PEFT LoRA layer;
    empty for a model without adapters. `sorted({n.rsplit('.', 1)[-1] for n in ...})` gives the leaf names."""
    from peft.tuners.lora import LoraLayer

    return [path for path, module in unwrap(model).named_modules() if isinstance(module, LoraLayer)]
