"""The ``export`` stage: the working model as deployable files — GGUF and ONNX.

* **GGUF** (llama.cpp, the node's engine): llama.cpp's ``convert_hf_to_gguf.py`` at
  F16 (or F32/BF16); see :mod:`edgewise.supply.convert`. LoRA adapters are exported to
  GGUF by the ``finetune`` stage itself (base + adapter served together).
* **ONNX** (onnxruntime): ``torch.onnx.export(..., dynamo=True)`` of a wrapper that maps
  ``input_ids [batch, seq]`` to ``logits [batch, seq, vocab]`` without a KV cache (the
  TorchScript exporter fails on current transformers models; a cache-less graph is what
  exports reliably). Generation with it recomputes the whole sequence per token, which
  ``evaluate`` measures as such. Weights go to an external-data file next to the graph.
  The tokenizer files are copied alongside so the folder is self-contained.

Only the export plumbing is written here; the conversions are llama.cpp's and PyTorch's.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import with_config

from edgewise.artifacts.variant import Variant
from edgewise.supply.convert import hf_to_gguf
from edgewise.supply.deps import require
from edgewise.supply.stage import STRICT, ModelState, Stage, StageContext, StageResult
from edgewise.supply.training import copy_tokenizer

__all__ = ["Export", "ExportParams", "export_onnx", "variant_prefix"]


@with_config(STRICT)
@dataclass
class ExportParams:
    formats: list[Literal["gguf", "onnx"]] = field(default_factory=lambda: ["gguf"])
    #: Float type of the GGUF file.
    gguf_type: Literal["F16", "F32", "BF16"] = "F16"
    #: Variant name prefix (default: the input stage's id and a dot; none for the base).
    prefix: str | None = None


def variant_prefix(ctx: StageContext, prefix: str | None) -> str:
    """``<input stage>.`` for a variant of an intermediate model, ``""`` for the base."""
    if prefix is not None:
        return prefix
    return "" if len(ctx.lineage) < 2 else f"{ctx.lineage[-2]}."


def export_onnx(state: ModelState, out_dir: Path, *, threads: int) -> Path:
    """Export a checkpoint to ``out_dir/model.onnx`` (+ ``model.onnx.data``, tokenizer)."""
    require("torch", "transformers", "onnx", "onnxscript", feature="ONNX export")
    import torch

    from edgewise.supply.vocab import check_not_pruned

    check_not_pruned(state.hf_dir, "ONNX export")
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(str(state.hf_dir), dtype=torch.float32)
    model.eval()

    class LogitsOnly(torch.nn.Module):  # type: ignore[misc]
        """input_ids [B, T] -> logits [B, T, V]; no KV cache (see module docstring)."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.inner(input_ids=input_ids, use_cache=False).logits

    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / "model.onnx"
    example = torch.tensor([[model.config.bos_token_id or 1, 2, 3, 4, 5, 6, 7, 8]])
    seq = torch.export.Dim("seq", min=2, max=8192)
    batch = torch.export.Dim("batch", min=1, max=64)
    # torch.export's own internals raise FutureWarnings about APIs they still use
    # (pytree LeafSpec…); not ours to fix, and tests turn warnings into errors.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(LogitsOnly(model).eval(), (example,), str(dest), dynamo=True,
                          input_names=["input_ids"], output_names=["logits"],
                          dynamic_shapes={"input_ids": {0: batch, 1: seq}},
                          external_data=True, verbose=False)
    copy_tokenizer(state.hf_dir, out_dir, extra=("config.json",))
    return dest


class Export(Stage):
    """Write the working model as F16 GGUF and/or ONNX variants."""

    kind = "export"
    Params = ExportParams

    def run(self, params: ExportParams, ctx: StageContext) -> StageResult:
        prefix = variant_prefix(ctx, params.prefix)
        variants = []
        steps = len(params.formats)
        for i, fmt in enumerate(params.formats):
            ctx.progress(i, steps, f"exporting {fmt}")
            if fmt == "gguf":
                q = params.gguf_type
                path = hf_to_gguf(ctx.model, ctx.out_dir / f"model.{q.lower()}.gguf",
                                  outtype=q.lower())
                variants.append(Variant(name=f"{prefix}{q.lower()}", format="gguf",
                                        path=ctx.rel(path), quantization=q, stage=ctx.stage_id,
                                        size_bytes=path.stat().st_size))
            else:
                onnx = export_onnx(ctx.model, ctx.out_dir / "onnx", threads=ctx.threads)
                size = sum(p.stat().st_size for p in onnx.parent.glob("model.onnx*"))
                variants.append(Variant(name=f"{prefix}onnx", format="onnx",
                                        path=ctx.rel(onnx), quantization="F32",
                                        stage=ctx.stage_id, size_bytes=size))
        ctx.progress(steps, steps, "done")
        return StageResult(variants=variants)
