"""Random-init tiny causal LMs of real architectures, built from configs, for tests (no downloads).

    from tiny_models import tiny_model       # pytest puts tests/ on sys.path (no tests/__init__.py)
    model, tokenizer = tiny_model("llama")   # 2 layers, hidden 32, word-level vocab of 109, eval mode
    model, tokenizer = tiny_model("gemma3")  # Gemma3ForConditionalGeneration: a tiny vision tower beside the LM
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

FAMILIES = ("gpt2", "llama", "qwen2", "mistral", "gemma", "gpt_neox")
# More architectures, with other projection layouts (fused qkv/gate_up, fc_in/fc_out, fc1/fc2) or an image-text
# wrapper ("gemma3": Gemma3ForConditionalGeneration; "gemma3_text": Gemma3ForCausalLM).
MORE_FAMILIES = ("phi3", "phi", "gptj", "gemma3_text", "gemma3")
SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]
WORDS = [f"w{i}" for i in range(96)] + ["the", "cat", "sat", "on", "a", "mat", "user", "assistant", ":"]
VOCAB = {token: i for i, token in enumerate(SPECIALS + WORDS)}
PAD, UNK, BOS, EOS = range(4)

# Per-family config fields: GPT-2 and GPT-NeoX spell their sizes differently from the Llama family.
_SIZES: dict[str, dict] = {
    "gpt2": dict(n_embd=32, n_layer=2, n_head=2, n_positions=64, n_inner=64),
    "gpt_neox": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=64),
    "gemma": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                  intermediate_size=64, max_position_embeddings=64),
    "gemma3_text": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                        head_dim=16, intermediate_size=64, max_position_embeddings=64),
    "gptj": dict(n_embd=32, n_layer=2, n_head=2, n_positions=64, n_inner=64, rotary_dim=8),
    "phi": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                max_position_embeddings=64),
}
# Gemma 3's image-text model: the text model above, a 1-layer SigLIP tower, and image/boi/eoi tokens past VOCAB.
_GEMMA3_VISION = dict(model_type="siglip_vision_model", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, image_size=16, patch_size=4)
_LLAMA_LIKE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                   intermediate_size=64, max_position_embeddings=64)


def tiny_tokenizer(chat_template: str | None = None) -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer without a pad token (like GPT-2), so loaders must set one."""
    backend = Tokenizer(models.WordLevel(vocab=VOCAB, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<bos>",
                                        eos_token="<eos>")
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def tiny_model(family: str, seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A random-init 2-layer model of `family` (one of FAMILIES or MORE_FAMILIES) in eval mode, and its tokenizer."""
    ids = dict(bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
    if family == "gemma3":
        text = dict(model_type="gemma3_text", vocab_size=len(VOCAB) + 3, **ids, **_SIZES["gemma3_text"])
        config = AutoConfig.for_model("gemma3", text_config=text, vision_config=_GEMMA3_VISION, mm_tokens_per_image=4,
                                      boi_token_index=len(VOCAB), eoi_token_index=len(VOCAB) + 1,
                                      image_token_index=len(VOCAB) + 2, tie_word_embeddings=False, **ids)
    else:
        config = AutoConfig.for_model(family, vocab_size=len(VOCAB), tie_word_embeddings=False, **ids,
                                      **_SIZES.get(family, _LLAMA_LIKE))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    return model, tiny_tokenizer()
