"""The one shape every pipeline stage has.

A stage is a class with a ``kind`` (its name in recipes), a ``Params`` dataclass (the
keys a recipe may set, with defaults; validated by :mod:`edgewise.supply.recipe`) and a
:meth:`Stage.run` that reads its input from a :class:`StageContext` and writes
everything it produces under ``ctx.out_dir``::

    class Quantize(Stage):
        kind = "quantize"
        Params = QuantizeParams

        def run(self, params: QuantizeParams, ctx: StageContext) -> StageResult:
            ...
            return StageResult(variants=[Variant(...)], metrics={...})

What flows between stages is a *working model* — a Hugging Face checkpoint folder
(:class:`ModelState`) that a stage may replace (``finetune`` with ``merge``, ``prune``,
``distill``) — and *variants*: deployable files (GGUF for llama.cpp, ONNX for
onnxruntime) that ``quantize``, ``export`` and ``finetune`` add to the artifact and
``evaluate`` measures. The pipeline owns atomicity: ``ctx.out_dir`` is a temporary
folder that is renamed into place only when :meth:`Stage.run` returns, and the stage
counts as done only once its manifest entry is written.

Stages join recipes by name through the registry in :mod:`edgewise.supply.stages` (the
built-ins live there, one file per method; a plug-in uses ``register_stage``). This
module imports none of them. Stage modules import torch & co. inside :meth:`Stage.run`,
never at import time, so a recipe can be validated (and ``import edgewise`` stays light)
without the ``supply`` extra.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pydantic

from edgewise.artifacts.variant import Variant

__all__ = [
    "STRICT",
    "ModelState",
    "Stage",
    "StageContext",
    "StageResult",
]


#: pydantic config for every ``Params`` dataclass: unknown recipe keys are errors.
STRICT = pydantic.ConfigDict(extra="forbid")


@dataclass(frozen=True)
class ModelState:
    """A Hugging Face checkpoint folder plus what converting it back to GGUF needs."""

    #: ``config.json``, ``*.safetensors`` and the tokenizer files.
    hf_dir: Path
    #: A GGUF whose ``tokenizer.*`` keys are copied on conversion (the model came from it).
    vocab_gguf: Path | None = None
    #: BPE pre-tokenizer name for llama.cpp when its hash is not recognised.
    pre_tokenizer: str | None = None
    #: A GGUF holding exactly these weights (the source file), if one exists: a LoRA
    #: adapter trained on this model can be served on top of it.
    gguf: Path | None = None


#: progress(done, total, note): total None while unknown.
ProgressFn = Callable[[float, float | None, str], None]


@dataclass
class StageContext:
    """Everything a stage may read, and where it writes."""

    stage_id: str
    #: Empty temporary folder; renamed to ``stages/<id>/`` when the stage succeeds.
    out_dir: Path
    #: The artifact folder (for resolving variant paths).
    artifact_dir: Path
    #: The working model this stage starts from.
    model: ModelState
    #: The recipe's base model (after conversion to a checkpoint).
    base: ModelState
    #: Working models of earlier stages, by stage id (``base`` included).
    models: Mapping[str, ModelState]
    #: Variants produced so far, by name.
    variants: Mapping[str, Variant]
    #: Stage ids from the base to this stage's input, oldest first.
    lineage: list[str]
    #: Resolved dataset files, by recipe name.
    datasets: Mapping[str, Any]
    seed: int
    threads: int
    progress: ProgressFn
    log: logging.Logger

    def variant_path(self, variant: Variant) -> Path:
        """Absolute path of a variant's file."""
        p = Path(variant.path)
        return p if p.is_absolute() else self.artifact_dir / p

    def adapter_path(self, variant: Variant) -> Path | None:
        if variant.adapter is None:
            return None
        p = Path(variant.adapter)
        return p if p.is_absolute() else self.artifact_dir / p

    def rel(self, path: Path) -> str:
        """Where a file written under ``out_dir`` will live, relative to the artifact."""
        return str(Path("stages") / self.stage_id / path.relative_to(self.out_dir))


@dataclass
class StageResult:
    """What a stage hands back to the pipeline."""

    #: A new working model written under ``out_dir`` (HF checkpoint), or None.
    model: Path | None = None
    #: Variants written under ``out_dir`` (paths via :meth:`StageContext.rel`).
    variants: list[Variant] = field(default_factory=list)
    #: Stage-level measurements (losses, sparsity, timings …).
    metrics: dict[str, Any] = field(default_factory=dict)
    #: Measurements of existing variants, by variant name (``evaluate``).
    variant_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)


class Stage(ABC):
    """One step of the supply chain. Subclasses set ``kind`` and ``Params``."""

    #: The name used in recipes (``- quantize: {...}``).
    kind: ClassVar[str]
    #: A dataclass whose fields are the stage's recipe keys (all with defaults or required).
    Params: ClassVar[type]
    #: Params fields whose value names a recipe dataset (checked when the recipe loads).
    dataset_fields: ClassVar[tuple[str, ...]] = ()
    #: Params fields whose value names another model (``base`` or an earlier stage id).
    model_fields: ClassVar[tuple[str, ...]] = ()
    #: Whether the result depends on every earlier stage's variants (``evaluate``): its
    #: fingerprint then covers all of them, so it is redone when any of them changes.
    reads_variants: ClassVar[bool] = False
    #: The version of the stage's method. Raising it above 1 makes a rebuild redo the
    #: stage (and what depends on it) even with unchanged parameters.
    version: ClassVar[int] = 1

    def produces_model(self, params: Any) -> bool:
        """Whether, with these params, the stage replaces the working model (so later
        stages start from it by default). Most stages never do."""
        return False

    @abstractmethod
    def run(self, params: Any, ctx: StageContext) -> StageResult:
        """Do the work, writing only under ``ctx.out_dir``; raise on failure."""

    def models(self, params: Any) -> list[str]:
        """Stage ids (or ``base``) of the extra models this stage reads (a teacher…)."""
        return [v for f in self.model_fields if isinstance(v := getattr(params, f, None), str)]

    def datasets(self, params: Any) -> list[str]:
        """Names of the recipe datasets this stage reads (for digests and validation)."""
        names = []
        for f in self.dataset_fields:
            value = getattr(params, f, None)
            if isinstance(value, str):
                names.append(value)
            elif isinstance(value, list):
                names.extend(v for v in value if isinstance(v, str))
        return names

