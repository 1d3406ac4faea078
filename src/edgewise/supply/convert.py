"""Moving a model between formats: GGUF → Hugging Face checkpoint → GGUF / quantized GGUF.

* **GGUF → checkpoint**: transformers reads GGUF (``from_pretrained(dir, gguf_file=…)``,
  de-quantising every tensor to float32; ~60–80 s and ~3 GB for Gemma 3 270M). It then
  refuses ``save_pretrained`` until the GGUF "quantizer" is detached
  (``model.hf_quantizer = None`` and ``config.quantization_config`` deleted). The result
  is cached once per source digest (``<model cache>/hf/<name>.<sha12>/``; reload ~4 s),
  written to a temp folder and renamed, so a crash never leaves half a checkpoint.
  A model whose GGUF was Q4_K_M is therefore the *de-quantised* Q4_K_M: every later
  variant (the "F16" one included) inherits its quantisation error.
* **checkpoint → GGUF**: llama.cpp's ``convert_hf_to_gguf.py`` from the sdist of the
  pinned llama-cpp-python (see :mod:`edgewise.supply.tools`), with the tokenizer copied
  from the source GGUF when there is one.
* **GGUF → quantized GGUF**: ``llama_cpp.llama_model_quantize`` (llama.cpp's own
  quantizer, the one behind ``llama-quantize``).
* **LoRA adapter → GGUF adapter**: ``convert_lora_to_gguf.py``.

Every output is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgewise.errors import ModelNotFoundError, StageError, SupplyError
from edgewise.supply.deps import require
from edgewise.supply.stage import ModelState
from edgewise.supply.tools import convert_tools, run_worker

__all__ = [
    "QUANT_TYPES",
    "SourceModel",
    "gguf_quantization",
    "gguf_to_hf",
    "hf_to_gguf",
    "lora_to_gguf",
    "quantize_gguf",
    "resolve_source",
]

#: Quantisation names accepted in recipes → llama.cpp ``llama_ftype``.
QUANT_TYPES: dict[str, int] = {
    "F32": 0, "F16": 1, "BF16": 32, "Q8_0": 7, "Q6_K": 18, "Q5_K_M": 17, "Q5_K_S": 16,
    "Q5_0": 8, "Q4_K_M": 15, "Q4_K_S": 14, "Q4_0": 2, "IQ4_NL": 25, "IQ4_XS": 30,
    "Q3_K_M": 12, "Q3_K_S": 11, "Q2_K": 10,
}
#: Tensor types for ``embedding_type`` overrides → ``ggml_type``.
TENSOR_TYPES: dict[str, int] = {
    "F16": 1, "Q8_0": 8, "Q6_K": 14, "Q5_K": 13, "Q5_0": 6, "Q4_K": 12, "Q4_0": 2,
    "Q3_K": 11, "Q2_K": 10,
}


class SourceModel:
    """The recipe's base, resolved: a checkpoint plus where it came from."""

    def __init__(self, state: ModelState, info: dict[str, Any]) -> None:
        self.state = state
        #: For the manifest: name, path, format, sha256, size_bytes.
        self.info = info


def resolve_source(base: str, *, pre_tokenizer: str | None = None,
                   progress: Callable[[str], None] | None = None) -> SourceModel:
    """Turn a recipe's ``base`` (catalogue name, ``.gguf`` file or checkpoint folder)
    into a checkpoint, converting (once, cached) when it is a GGUF.

    Raises:
        ModelNotFoundError: nothing by that name or path.
    """
    from edgewise.models import CATALOGUE, file_sha256, resolve_model

    path = Path(base).expanduser()
    if base in CATALOGUE or path.suffix == ".gguf":
        resolved = resolve_model(base if base in CATALOGUE else str(path), verify=True)
        hf = gguf_to_hf(resolved.path, resolved.sha256, name=resolved.name, progress=progress)
        info = {"name": resolved.name, "path": str(resolved.path), "format": "gguf",
                "sha256": resolved.sha256, "size_bytes": resolved.size_bytes,
                "checkpoint": str(hf)}
        return SourceModel(ModelState(hf_dir=hf, vocab_gguf=resolved.path,
                                      gguf=resolved.path), info)
    if path.is_dir() and (path / "config.json").is_file():
        weights = sorted(path.glob("*.safetensors"))
        if not weights:
            raise ModelNotFoundError(f"{path} has a config.json but no *.safetensors weights")
        import hashlib

        h = hashlib.sha256()
        size = 0
        for f in sorted(path.iterdir()):
            if f.is_file():
                h.update(f.name.encode() + b"\0" + file_sha256(f).encode())
                size += f.stat().st_size
        info = {"name": path.name, "path": str(path.resolve()), "format": "hf",
                "sha256": h.hexdigest(), "size_bytes": size,
                "digest_of": "sha256 over (file name, file sha256) of every file, sorted"}
        return SourceModel(ModelState(hf_dir=path.resolve(), pre_tokenizer=pre_tokenizer),
                           info)
    known = ", ".join(sorted(CATALOGUE))
    raise ModelNotFoundError(
        f"base {base!r} is not a catalogue model ({known}), a .gguf file or a Hugging Face "
        "checkpoint folder (with config.json and *.safetensors)")


def _hf_cache() -> Path:
    from edgewise.models import model_dir

    return model_dir() / "hf"


def gguf_to_hf(gguf: Path, sha256: str, *, name: str = "model",
               progress: Callable[[str], None] | None = None) -> Path:
    """A float32 checkpoint of a GGUF file (cached by digest; see the module docstring)."""
    dest = _hf_cache() / f"{name}.{sha256[:12]}"
    if (dest / "config.json").is_file():
        return dest
    require("torch", "transformers", "gguf", feature="converting a GGUF model to train it")
    if progress:
        progress(f"converting {gguf.name} to a checkpoint (once; ~1 min for 270M)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        try:
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        except (ValueError, OSError, KeyError) as exc:
            raise SupplyError(f"transformers cannot read {gguf}: {exc}") from exc
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


@contextlib.contextmanager
def _atomic_file(dest: Path) -> Any:
    """Yield a temp path next to ``dest``; rename it onto ``dest`` if the block succeeds."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; model files are not secrets
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def hf_to_gguf(state: ModelState, dest: Path, *, outtype: str = "f16") -> Path:
    """Convert a checkpoint to a GGUF file with llama.cpp's converter."""
    require("torch", "transformers", "safetensors", feature="GGUF conversion")
    tools = convert_tools()
    with _atomic_file(dest) as tmp:
        keep = state.hf_dir / "vocab_keep.json"   # a pruned vocabulary (supply.vocab)
        run_worker({"kind": "hf-to-gguf", "model": str(state.hf_dir), "out": str(tmp),
                    "outtype": outtype,
                    "vocab_from": str(state.vocab_gguf) if state.vocab_gguf else None,
                    "vocab_keep": str(keep) if keep.is_file() else None,
                    "pre_tokenizer": state.pre_tokenizer},
                   what=f"converting {state.hf_dir.name} to GGUF", tools=tools)
    return dest


def lora_to_gguf(adapter_dir: Path, base_dir: Path, dest: Path) -> Path:
    """Convert a peft LoRA adapter to a GGUF adapter llama.cpp applies at load time."""
    require("torch", "transformers", "safetensors", feature="LoRA adapter conversion")
    tools = convert_tools()
    with _atomic_file(dest) as tmp:
        run_worker({"kind": "lora-to-gguf", "adapter": str(adapter_dir),
                    "base": str(base_dir), "out": str(tmp)},
                   what="converting the LoRA adapter to GGUF", tools=tools)
    return dest


def quantize_gguf(src: Path, dest: Path, qtype: str, *, threads: int = 0,
                  embedding_type: str | None = None) -> Path:
    """Quantize a GGUF file with llama.cpp (``qtype`` from :data:`QUANT_TYPES`)."""
    if qtype not in QUANT_TYPES:
        raise StageError(f"unknown quantization {qtype!r}; choose from "
                         f"{', '.join(QUANT_TYPES)}")
    job: dict[str, Any] = {"kind": "quantize", "src": str(src), "ftype": QUANT_TYPES[qtype],
                           "threads": threads}
    if embedding_type is not None:
        job["token_embedding_type"] = TENSOR_TYPES[embedding_type]
    with _atomic_file(dest) as tmp:
        job["dst"] = str(tmp)
        run_worker(job, what=f"quantizing {src.name} to {qtype}")
    return dest


def gguf_quantization(path: Path) -> str:
    """The ``general.file_type`` of a GGUF file as a name (``Q4_K_M``…), ``?`` if unknown."""
    try:
        import gguf

        field_ = gguf.GGUFReader(str(path)).fields.get("general.file_type")
        code = int(field_.contents()) if field_ is not None else None
    except (ImportError, OSError, ValueError):
        return "?"
    names = {v: k for k, v in QUANT_TYPES.items()}
    return names.get(code, f"ftype {code}") if code is not None else "?"
