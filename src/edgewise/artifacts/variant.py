"""A variant: one deployable model file of an artifact, and what was measured about it.

The supply chain's stages write variants (``quantize``, ``export``, ``finetune``) and
measure them (``evaluate``); the manifest lists them (:mod:`edgewise.artifacts.manifest`);
a node picks one to serve (:mod:`edgewise.artifacts.choose`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Format", "Variant"]

Format = Literal["gguf", "onnx"]


@dataclass
class Variant:
    """A deployable model file in the artifact, and what was measured about it."""

    #: Unique within the artifact, e.g. ``q4_k_m`` or ``wanda50.f16``.
    name: str
    format: Format
    #: Relative to the artifact folder (or absolute, for a file outside it such as the
    #: source GGUF a LoRA adapter is served on).
    path: str
    #: Quantisation: ``F16``, ``Q8_0``, ``Q4_K_M``, ``int8`` …
    quantization: str
    #: The stage that produced it.
    stage: str
    #: Stage ids from the base to this variant, oldest first.
    lineage: list[str] = field(default_factory=list)
    #: GGUF LoRA adapter applied on top of ``path`` (relative to the artifact).
    adapter: str | None = None
    #: Bytes on disk: the file plus the adapter (what a device must store).
    size_bytes: int = 0
    #: Filled by ``evaluate``: perplexity, task_accuracy, tokens_per_s, ttft_ms, peak_rss_mb …
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (
            "name", "format", "path", "quantization", "stage", "lineage", "adapter",
            "size_bytes", "metrics")}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Variant:
        return cls(**{k: data[k] for k in (
            "name", "format", "path", "quantization", "stage", "lineage", "adapter",
            "size_bytes", "metrics") if k in data})
