"""Subprocess worker for llama.cpp's conversion scripts and quantizer (see ``tools.py``).

Run as ``python _worker.py '<json job>'``; writes a JSON result to ``job["result"]``.
It imports nothing from edgewise, so the sdist's ``gguf-py`` is the ``gguf`` every
conversion module sees. Jobs:

* ``hf-to-gguf``: ``convert_hf_to_gguf.py`` with two hooks the scripts lack:
  ``vocab_from`` copies every ``tokenizer.*`` key from a reference GGUF instead of
  rebuilding the vocabulary from ``tokenizer.json`` (a model that came *from* a GGUF,
  like Gemma 3 270M here, has no ``tokenizer.model``, and its re-serialised
  ``tokenizer.json`` is not one the script recognises — the tokenizer never changes in
  the supply chain, so copying it is exact); ``pre_tokenizer`` names the BPE
  pre-tokenizer when the script does not recognise its hash (tokenizers trained in
  tests). The chat template, if any, is left out: the supply chain trains and
  evaluates chat data in the plain transcript a node uses for a model without one. For
  Gemma 3 it also writes the per-layer sliding-window pattern from ``layer_types``, so a
  model with layers removed keeps each layer's attention type (llama.cpp otherwise
  assumes "every 6th layer is global").
* ``lora-to-gguf``: ``convert_lora_to_gguf.py``.
* ``quantize``: ``llama_cpp.llama_model_quantize``.
"""

from __future__ import annotations

import sys

# Run by path, this file's folder is sys.path[0]; its modules must not shadow the
# standard library or the conversion scripts' imports.
if sys.path and sys.path[0] == str(__import__("pathlib").Path(__file__).resolve().parent):
    sys.path.pop(0)

import json
import runpy
from pathlib import Path
from typing import Any


def _use_tools(tools: str) -> None:
    sys.path.insert(0, str(Path(tools) / "gguf-py"))
    sys.path.insert(0, tools)


_PER_TOKEN = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type")


def _copy_vocab(writer: Any, source: str, keep_file: str | None) -> None:
    """Copy the ``tokenizer.*`` keys; with ``keep_file`` (a pruned vocabulary, see
    edgewise/supply/vocab.py) keep only those tokens, renumbered in order, only the
    merges whose parts and result survive, and remap the special-token ids."""
    import gguf

    reader = gguf.GGUFReader(source)
    keep = json.loads(Path(keep_file).read_text())["keep"] if keep_file else None
    new_id = {old: new for new, old in enumerate(keep)} if keep is not None else {}
    kept_text: set[str] = set()
    if keep is not None:
        tokens = reader.fields["tokenizer.ggml.tokens"].contents()
        kept_text = {tokens[i] for i in keep}
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer.") or name == "tokenizer.chat_template":
            continue
        vtype = gguf.GGUFValueType(field.types[0])
        sub = gguf.GGUFValueType(field.types[-1]) if vtype == gguf.GGUFValueType.ARRAY else None
        value = field.contents()
        if keep is not None:
            if name in _PER_TOKEN:
                value = [value[i] for i in keep]
            elif name == "tokenizer.ggml.merges":
                value = [m for m in value if (p := m.partition(" "))[0] in kept_text
                         and p[2] in kept_text and p[0] + p[2] in kept_text]
            elif name.endswith("_token_id"):
                if int(value) not in new_id:
                    continue
                value = new_id[int(value)]
        writer.add_key_value(name, value, vtype, sub_type=sub)


def _hf_to_gguf(job: dict[str, Any]) -> dict[str, Any]:
    _use_tools(job["tools"])
    import conversion
    from conversion import base

    original_get = conversion.get_model_class
    vocab_from = job.get("vocab_from")
    pre_tokenizer = job.get("pre_tokenizer")

    def get_model_class(name: str, mmproj: bool = False) -> Any:
        cls = original_get(name, mmproj=mmproj)

        class Patched(cls):  # type: ignore[misc, valid-type]
            model_arch = cls.model_arch  # the scripts require it in every subclass

            def set_vocab(self) -> None:
                if vocab_from:
                    _copy_vocab(self.gguf_writer, vocab_from, job.get("vocab_keep"))
                else:
                    super().set_vocab()
                # Variants are trained and evaluated on the plain transcript a node uses
                # for a model without a chat template; so they carry none.
                self.gguf_writer.remove_key("tokenizer.chat_template")

            def set_gguf_parameters(self) -> None:
                super().set_gguf_parameters()
                types = self.hparams.get("layer_types")
                if types and self.model_arch.name == "GEMMA3":
                    self.gguf_writer.add_sliding_window_pattern(
                        [t == "sliding_attention" for t in types])

        Patched.__name__ = cls.__name__
        return Patched

    conversion.get_model_class = get_model_class
    if pre_tokenizer:
        original_pre = base.TextModel.get_vocab_base_pre

        def get_vocab_base_pre(self: Any, tokenizer: Any) -> str:
            try:
                return str(original_pre(self, tokenizer))
            except NotImplementedError:
                return str(pre_tokenizer)

        base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    sys.argv = ["convert_hf_to_gguf.py", job["model"], "--outfile", job["out"],
                "--outtype", job.get("outtype", "f16")]
    runpy.run_path(str(Path(job["tools"]) / "convert_hf_to_gguf.py"), run_name="__main__")
    return {"out": job["out"]}


def _lora_to_gguf(job: dict[str, Any]) -> dict[str, Any]:
    _use_tools(job["tools"])
    sys.argv = ["convert_lora_to_gguf.py", job["adapter"], "--base", job["base"],
                "--outfile", job["out"], "--outtype", job.get("outtype", "f16")]
    runpy.run_path(str(Path(job["tools"]) / "convert_lora_to_gguf.py"), run_name="__main__")
    return {"out": job["out"]}


def _quantize(job: dict[str, Any]) -> dict[str, Any]:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(job["ftype"])
    params.nthread = int(job.get("threads") or 0)
    if job.get("token_embedding_type") is not None:
        params.token_embedding_type = int(job["token_embedding_type"])
    if job.get("output_tensor_type") is not None:
        params.output_tensor_type = int(job["output_tensor_type"])
    import ctypes

    status = llama_cpp.llama_model_quantize(
        job["src"].encode(), job["dst"].encode(), ctypes.byref(params))
    if status != 0:
        raise SystemExit(f"llama_model_quantize returned {status}")
    return {"out": job["dst"]}


def main() -> None:
    job = json.loads(sys.argv[1])
    handlers = {"hf-to-gguf": _hf_to_gguf, "lora-to-gguf": _lora_to_gguf,
                "quantize": _quantize}
    result = handlers[job["kind"]](job)
    Path(job["result"]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
