"""The built-in stages, one file per method, and the registry recipes name stages in.

Layout::

    distill.py    knowledge distillation into the working model from a teacher
    evaluate.py   quality, size, memory and speed of every variant (+ supply/measure.py)
    export.py     the working model as GGUF and ONNX files
    finetune.py   LoRA fine-tuning with peft (merged, or served as a GGUF adapter)
    prune.py      Wanda / magnitude, layer, MLP-channel and vocabulary pruning
    quantize.py   GGUF quantizations (llama.cpp), int8 ONNX (onnxruntime)

A stage module imports :mod:`edgewise.supply.stage` (the shape every stage has) and the
helper modules next to it, never this registry: :data:`STAGES` imports and registers the
built-ins itself on its first lookup. Were the modules to register themselves, they would
import this module while its loader imports them — an import cycle. Importing this
package therefore stays cheap (the stage modules are loaded only when a recipe is
validated), and none of them imports torch before :meth:`Stage.run`.

A stage defined elsewhere (a plug-in, a test) joins with :func:`register_stage`::

    @register_stage
    class Sparsify(Stage):
        kind = "sparsify"
        ...
"""

from __future__ import annotations

from edgewise.errors import RecipeError
from edgewise.registry import Registry
from edgewise.supply.stage import Stage

__all__ = ["STAGES", "get_stage", "register_stage", "registered_stages"]


def _load_builtin() -> None:
    from edgewise.supply.stages.distill import Distill
    from edgewise.supply.stages.evaluate import Evaluate
    from edgewise.supply.stages.export import Export
    from edgewise.supply.stages.finetune import Finetune
    from edgewise.supply.stages.prune import Prune
    from edgewise.supply.stages.quantize import Quantize

    for cls in (Distill, Evaluate, Export, Finetune, Prune, Quantize):
        STAGES.register(cls.kind, cls)


#: Stage classes by ``kind`` (their name in recipes). An unknown name is a
#: :class:`~edgewise.errors.RecipeError` that lists the registered ones.
STAGES: Registry[type[Stage]] = Registry("stage", error=RecipeError, loader=_load_builtin)


def register_stage(cls: type[Stage]) -> type[Stage]:
    """Class decorator: make a stage available to recipes under ``cls.kind``.

    Raises:
        ValueError: ``kind`` is not set, or another stage already has that name.
    """
    kind = getattr(cls, "kind", None)
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"{cls.__name__} must set a non-empty `kind`")
    # Registering does not load the built-ins; a lookup does. Load them first, so a stage
    # taking a built-in's name is refused here rather than breaking the first lookup.
    STAGES.names()
    return STAGES.register(kind, cls)


def get_stage(kind: str) -> type[Stage]:
    """The stage class registered as ``kind``.

    Raises:
        RecipeError: no such stage (the message lists the registered ones).
    """
    return STAGES.get(kind)


def registered_stages() -> dict[str, type[Stage]]:
    """Every registered stage, by name."""
    return STAGES.items()
