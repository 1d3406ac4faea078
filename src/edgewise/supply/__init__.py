"""The model supply chain: a base model → a portfolio of edge-ready variants, measured.

``edgewise build RECIPE.yaml`` runs a pipeline of registered stages (``finetune``,
``distill``, ``prune``, ``quantize``, ``export``, ``evaluate``, in
:mod:`edgewise.supply.stages`; see :mod:`edgewise.supply.stage` for the interface) into
an artifact folder with a manifest
(:mod:`edgewise.supply.manifest`), resumable stage by stage
(:mod:`edgewise.supply.pipeline`), and reports which variant fits each hardware profile
best (:mod:`edgewise.supply.profiles`); ``edgewise serve`` with ``model: auto`` picks
one for the machine it runs on (:mod:`edgewise.supply.choose`).

Layout::

    recipe.py     typed recipe, YAML loading with key-path errors
    stage.py      Stage ABC, ModelState / Variant / StageContext / StageResult
    stages/       the registry (STAGES) and the built-in stages, one file per method:
                  finetune.py distill.py prune.py quantize.py export.py evaluate.py
    pipeline.py   run & resume, atomic stage outputs, fingerprints
    manifest.py   the artifact manifest (digests, params, metrics, tool versions)
    profiles.py   hardware profiles; which variant fits and is best
    choose.py     serve-time choice of an installed variant (no torch)
    data.py       chat / completion / text datasets with file:line errors
    training.py   shared training pieces (batches, LR schedule)
    convert.py    GGUF ↔ checkpoint, quantize (llama.cpp), LoRA → GGUF
    tools.py      llama.cpp's conversion scripts from the llama-cpp-python sdist
    vocab.py      vocabulary pruning: which tokens to keep, the GGUF vocabulary filter
    measure.py    one variant measured in its own process (for the evaluate stage)
    deps.py       the check for the ``supply`` extra

Importing this package imports neither torch nor transformers (they are the ``supply``
extra, checked in :mod:`edgewise.supply.deps`).
"""

from __future__ import annotations

from edgewise.supply.manifest import Manifest
from edgewise.supply.pipeline import build
from edgewise.supply.profiles import HardwareProfile, best_variant, evaluate_profile
from edgewise.supply.recipe import Recipe, load_recipe, parse_recipe
from edgewise.supply.stage import ModelState, Stage, StageContext, StageResult, Variant
from edgewise.supply.stages import get_stage, register_stage, registered_stages

__all__ = [
    "HardwareProfile",
    "Manifest",
    "ModelState",
    "Recipe",
    "Stage",
    "StageContext",
    "StageResult",
    "Variant",
    "best_variant",
    "build",
    "evaluate_profile",
    "get_stage",
    "load_recipe",
    "parse_recipe",
    "register_stage",
    "registered_stages",
]
