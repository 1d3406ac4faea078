"""The ``quantize`` stage: GGUF quantizations with llama.cpp, int8 ONNX with onnxruntime.

GGUF: the working model is converted to F16 GGUF (llama.cpp's converter), then
``llama_model_quantize`` writes each requested type (``Q8_0``, ``Q5_K_M``, ``Q4_K_M``,
…; the mixes are llama.cpp's: e.g. ``Q4_K_M`` keeps half of the attention-V and FFN-down
tensors at Q6_K and the output/tied embedding at Q6_K). ``embedding_type`` overrides the
token-embedding tensor's type — it matters for models whose vocabulary dominates their
size (Gemma 3 270M: 168M of its 268M parameters are the 262k×640 embedding).

ONNX int8 of an F32 ONNX export (only the int8 file is kept), two ways:

* ``dynamic`` (default): ``onnxruntime.quantization.quantize_dynamic`` — weights int8 per
  output channel, activations quantized to uint8 on the fly per tensor; every MatMul and
  the embedding Gather are int8, so the file is ~¼ of F32. Models with large activation
  outliers lose quality to the activation quantization (Gemma 3 does).
* ``weight_only``: ``MatMulNBitsQuantizer`` at 8 bits, blocks of 32 — weights int8,
  activations stay float, near-lossless. onnxruntime quantizes ``Gather`` (the token
  embedding) only at 4 bits, so the embedding stays float: for a large vocabulary the
  file is then *bigger* than F16 GGUF.

No quantization code is written here: both are the libraries' own.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import with_config

from edgewise.artifacts.variant import Variant
from edgewise.supply.convert import (
    QUANT_TYPES,
    TENSOR_TYPES,
    gguf_quantization,
    hf_to_gguf,
    quantize_gguf,
)
from edgewise.supply.deps import require
from edgewise.supply.stage import STRICT, Stage, StageContext, StageResult
from edgewise.supply.stages.export import export_onnx, variant_prefix

__all__ = ["Quantize", "QuantizeParams"]


@with_config(STRICT)
@dataclass
class QuantizeParams:
    #: llama.cpp types to write (``F16`` keeps the unquantized conversion as a variant).
    types: list[str] = field(default_factory=lambda: ["Q4_K_M"])
    #: Also write an int8 ONNX variant (onnxruntime).
    onnx_int8: bool = False
    #: ``dynamic`` (weights and activations int8) or ``weight_only`` (MatMul weights only).
    onnx_int8_method: Literal["dynamic", "weight_only"] = "dynamic"
    #: Override the token-embedding tensor type (e.g. ``Q4_K``); default: llama.cpp's mix.
    embedding_type: str | None = None
    #: Variant name prefix (default: the input stage's id and a dot; none for the base).
    prefix: str | None = None

    def __post_init__(self) -> None:
        bad = [t for t in self.types if t not in QUANT_TYPES]
        if bad:
            raise ValueError(f"types: unknown {', '.join(map(repr, bad))}; choose from "
                             f"{', '.join(QUANT_TYPES)}")
        if len(set(self.types)) != len(self.types):
            raise ValueError("types: each type may appear once")
        if self.embedding_type is not None and self.embedding_type not in TENSOR_TYPES:
            raise ValueError(f"embedding_type: unknown {self.embedding_type!r}; choose from "
                             f"{', '.join(TENSOR_TYPES)}")
        if not self.types and not self.onnx_int8:
            raise ValueError("nothing to do: give `types` and/or `onnx_int8: true`")


def _onnx_int8(src: Any, dest: Any, *, weight_only: bool) -> None:
    if weight_only:
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import (
            DefaultWeightOnlyQuantConfig,
            MatMulNBitsQuantizer,
        )

        cfg = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=True, bits=8)
        q = MatMulNBitsQuantizer(onnx.load(str(src)), algo_config=cfg)
        q.process()
        q.model.save_model_to_file(str(dest), use_external_data_format=True)
    else:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(src), str(dest), weight_type=QuantType.QInt8, per_channel=True,
                         use_external_data_format=True)


def _source_grid(ctx: StageContext) -> str | None:
    """The quantisation of the recipe's source GGUF when the working model is derived
    from it (not the source itself), else None."""
    if ctx.base.gguf is None or ctx.model.gguf is not None:
        return None
    q = gguf_quantization(ctx.base.gguf)
    return None if q in ("?", "F16", "F32", "BF16") or q.startswith("ftype") else q


class Quantize(Stage):
    """Quantize the working model to each GGUF type (and int8 ONNX)."""

    kind = "quantize"
    Params = QuantizeParams

    def run(self, params: QuantizeParams, ctx: StageContext) -> StageResult:
        prefix = variant_prefix(ctx, params.prefix)
        suffix = f".emb-{params.embedding_type.lower()}" if params.embedding_type else ""
        steps = len(params.types) + (1 if params.types else 0) + 2 * params.onnx_int8
        done = 0
        variants: list[Variant] = []
        metrics: dict[str, Any] = {}

        def add(name: str, fmt: Any, path: Any, quant: str, size: int) -> None:
            variants.append(Variant(name=name, format=fmt, path=ctx.rel(path),
                                    quantization=quant, stage=ctx.stage_id, size_bytes=size))

        source_q = _source_grid(ctx)
        if source_q in params.types:
            warning = (
                f"{ctx.stage_id}: this model was derived from {ctx.base.gguf} "
                f"({source_q}); re-quantising it to {source_q} rounds changes smaller than "
                "half a quantisation step (a merged LoRA, light pruning) back to the "
                "source's values — compare its task accuracy, or serve the base GGUF + "
                "adapter instead (measured on Gemma 3 270M: 91.0 % → 60.5 %)")
            ctx.log.warning("%s", warning)
            metrics["warnings"] = [warning]
        if params.types:
            ctx.progress(done, steps, "converting to F16 GGUF")
            f16 = hf_to_gguf(ctx.model, ctx.out_dir / "model.f16.gguf")
            done += 1
            for q in params.types:
                if q == "F16":
                    continue
                ctx.progress(done, steps, f"quantizing to {q}")
                dest = ctx.out_dir / f"model.{q.lower()}{suffix}.gguf"
                quantize_gguf(f16, dest, q, threads=ctx.threads,
                              embedding_type=params.embedding_type)
                add(f"{prefix}{q.lower()}{suffix}", "gguf", dest, q, dest.stat().st_size)
                done += 1
            if "F16" in params.types:
                add(f"{prefix}f16", "gguf", f16, "F16", f16.stat().st_size)
                done += 1
            else:
                f16.unlink()  # an intermediate only
        if params.onnx_int8:
            require("onnxruntime", feature="int8 ONNX quantization")
            ctx.progress(done, steps, "exporting ONNX (F32)")
            fp32_dir = ctx.out_dir / ".onnx-f32"
            fp32 = export_onnx(ctx.model, fp32_dir, threads=ctx.threads)
            done += 1
            ctx.progress(done, steps, "quantizing ONNX to int8")
            wo = params.onnx_int8_method == "weight_only"
            out_dir = ctx.out_dir / ("onnx-int8-wo" if wo else "onnx-int8")
            out_dir.mkdir()
            dest = out_dir / "model.onnx"
            _onnx_int8(fp32, dest, weight_only=wo)
            for f in fp32_dir.iterdir():
                if not f.name.startswith("model.onnx"):
                    shutil.copy2(f, out_dir / f.name)
            shutil.rmtree(fp32_dir)
            size = sum(p.stat().st_size for p in out_dir.glob("model.onnx*"))
            add(f"{prefix}{out_dir.name}", "onnx", dest, "int8 weight-only" if wo else "int8",
                size)
            done += 1
        ctx.progress(done, steps, "done")
        metrics["sizes"] = {v.name: v.size_bytes for v in variants}
        return StageResult(variants=variants, metrics=metrics)
