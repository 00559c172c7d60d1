"""Model loading: the embedded organism or any Hugging Face causal LM, with its decoder blocks located for hooks.

    lm = load_model("gpt2")                      # or a local folder, or "organism" with organism_config=...
    with steer(lm.blocks, {6: vector}):          # study.lm.hooks
        out = lm.model.generate(**lm.tokenizer(chat_format(lm.tokenizer, "Hi"), return_tensors="pt"))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study.core.errors import UserError

# Where each family keeps its decoder blocks and final norm, relative to the *ForCausalLM model. An image-text
# model (Gemma 3's *ForConditionalGeneration) keeps its language model's blocks under model.language_model, beside
# a vision tower whose own `layers` are not the decoder.
_BLOCK_PATHS = {"transformer.h": "gpt2, gptj", "model.layers": "llama, qwen2, mistral, gemma, gemma3_text, phi, phi3",
                "gpt_neox.layers": "gpt_neox", "model.language_model.layers": "gemma3 (image-text)"}
_NORM_PATHS = ("transformer.ln_f", "model.norm", "model.final_layernorm", "gpt_neox.final_layer_norm",
               "model.language_model.norm")
SUPPORTED_FAMILIES = ("gpt2", "llama", "qwen2", "mistral", "gemma", "gemma3", "phi", "phi3", "gptj", "gpt_neox")


@dataclass
class LoadedModel:
    """A causal LM ready for generation (eval mode, pad token set, left padding) and its decoder blocks."""

    model: Any
    tokenizer: Any
    name: str
    family: str
    blocks: list
    hidden_size: int
    num_layers: int

    @property
    def final_norm(self) -> Any:
        """The norm applied after the last block (the residual stream read by the unembedding)."""
        return final_norm(self.model)


def unwrap(model: Any) -> Any:
    """The transformers model inside `model` (itself when not wrapped)."""
    # A PeftModel wraps the transformers model as base_model.model; get_base_model() undoes every layer of that.
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _get_path(obj: Any, path: str) -> Any | None:
    for attr in path.split("."):
        obj = getattr(obj, attr, None)
        if obj is None:
            return None
    return obj


def decoder_blocks(model: Any) -> list:
    """The decoder blocks of `model` in order (see SUPPORTED_FAMILIES; PEFT-wrapped too; an image-text model's are
    its language model's)."""
    inner = unwrap(model)
    for path in _BLOCK_PATHS:
        blocks = _get_path(inner, path)
        if blocks is not None:
            return list(blocks)
    raise UserError(f"cannot find the decoder blocks of {type(inner).__name__}: supported families are "
                    f"{', '.join(SUPPORTED_FAMILIES)} (blocks at {', '.join(_BLOCK_PATHS)})")


def final_norm(model: Any) -> Any:
    """The final norm of `model` (see decoder_blocks for the supported families)."""
    inner = unwrap(model)
    for path in _NORM_PATHS:
        norm = _get_path(inner, path)
        if norm is not None:
            return norm
    raise UserError(f"cannot find the final norm of {type(inner).__name__}: supported families are "
                    f"{', '.join(SUPPORTED_FAMILIES)}")


def chat_format(tokenizer: Any, user_text: str) -> str:
    """`user_text` as one user turn in the tokenizer's chat template, ready for the reply; unchanged without one."""
    if not getattr(tokenizer, "chat_template", None):
        return user_text
    return tokenizer.apply_chat_template([{"role": "user", "content": user_text}], tokenize=False,
                                         add_generation_prompt=True)


def torch_dtype(dtype: str) -> Any:
    import torch

    if dtype == "auto":
        return "auto"
    value = getattr(torch, dtype, None)
    if not isinstance(value, torch.dtype):
        raise UserError(f"dtype {dtype!r}: expected 'auto' or a torch dtype name such as float32, bfloat16")
    return value


def _load_tokenizer(path: str, trust_remote_code: bool, cache_dir: str | Path | None) -> Any:
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    from transformers.models.auto.tokenization_auto import get_tokenizer_config

    # transformers 5 ignores a declared generic class for some model types (qwen2, phi3, ...) and rebuilds the
    # tokenizer as that family's own class, which silently changes a custom tokenizer (other pre-tokenizer, extra
    # special tokens). A folder that declares the generic class gets exactly what it saved.
    declared = get_tokenizer_config(path, cache_dir=cache_dir).get("tokenizer_class")
    if declared in ("TokenizersBackend", "PreTrainedTokenizerFast"):
        return PreTrainedTokenizerFast.from_pretrained(path, cache_dir=cache_dir)
    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, cache_dir=cache_dir)


def _load_hf(spec: str, dtype: Any, trust_remote_code: bool, cache_dir: str | Path | None) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM

    looks_local = spec.startswith((".", "/", "~")) or Path(spec).expanduser().exists()
    if looks_local and not Path(spec).expanduser().is_dir():
        raise UserError(f"model {spec!r}: no such folder")
    if looks_local and not (Path(spec).expanduser() / "config.json").is_file():
        raise UserError(f"model {spec!r}: the folder holds no config.json (not a save_pretrained model folder)")
    path = str(Path(spec).expanduser()) if looks_local else spec
    try:
        tokenizer = _load_tokenizer(path, trust_remote_code, cache_dir)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code,
                                                     cache_dir=cache_dir)
    except (OSError, ValueError) as err:  # hub/offline errors subclass these; their text spans many lines
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"model {spec!r}: cannot load it ({reason})") from None
    return model, tokenizer


def load_model(spec: str, *, device: str | None = None, dtype: str = "auto", trust_remote_code: bool = False,
               cache_dir: str | Path | None = None) -> LoadedModel:
    """Load `spec` (a Hugging Face name or a local folder) in eval mode on `device` (default: cuda if available),
    with a pad token (eos if missing) and left padding, so batched generation works. The organism loads through
    `study.organism.organism_model`, which prepares it the same way."""
    model, tokenizer = _load_hf(spec, torch_dtype(dtype), trust_remote_code, cache_dir)
    return prepare(model, tokenizer, spec, device=device)


def prepare(model: Any, tokenizer: Any, name: str, *, device: str | None = None) -> LoadedModel:
    """A loaded causal LM made ready for the harness: a pad token, left padding, eval mode, its blocks located."""
    import torch

    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UserError(f"model {name!r}: its tokenizer has neither a pad nor an eos token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    # Left padding keeps every prompt's last token at the end, where generation continues from.
    tokenizer.padding_side = "left"
    if getattr(model, "generation_config", None) is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    blocks = decoder_blocks(model)
    config = model.config.get_text_config()
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, family=config.model_type, blocks=blocks,
                       hidden_size=config.hidden_size, num_layers=len(blocks))
