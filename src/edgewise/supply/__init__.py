"""The model supply chain: a base model → a portfolio of edge-ready variants, measured.

``edgewise build RECIPE.yaml`` runs a pipeline of registered stages (``finetune``,
``distill``, ``prune``, ``quantize``, ``export``, ``evaluate``: :mod:`edgewise.supply.stages`;
the interface is :mod:`edgewise.supply.stage`) into an artifact folder with a manifest,
resumable stage by stage (:mod:`edgewise.supply.pipeline`), and reports which variant
fits each hardware profile best. The artifact format itself — variants, the manifest,
hardware profiles and the serve-time choice of a variant — is :mod:`edgewise.artifacts`,
a lower layer that a serving node uses without this package.

Layout::

    recipe.py     typed recipe, YAML loading with key-path errors
    stage.py      the Stage ABC, ModelState / StageContext / StageResult
    stages/       the stage registry (STAGES) and the built-in stages, one file per method:
                  finetune.py distill.py prune.py quantize.py export.py evaluate.py
    pipeline.py   run & resume, atomic stage outputs, fingerprints
    report.py     progress bar, variant table and profile choices
    data.py       chat / completion / text datasets with file:line errors
    training.py   shared training pieces (batches, LR schedule)
    convert.py    GGUF ↔ checkpoint, quantize (llama.cpp), LoRA → GGUF
    vocab.py      vocabulary pruning: which tokens to keep, the GGUF vocabulary filter
    measure.py    one variant measured in its own process (for ``evaluate``)
    tools.py      llama.cpp's conversion scripts from the llama-cpp-python sdist
    _worker.py    the subprocess that runs them
    deps.py       the one check for the ``supply`` extra

Importing this package imports neither torch nor transformers (they are the ``supply``
extra, checked in :mod:`edgewise.supply.deps`).
"""

from __future__ import annotations

# The artifact format's names, re-exported: they were defined here before edgewise.artifacts.
from edgewise.artifacts import HardwareProfile, Manifest, Variant, best_variant, evaluate_profile
from edgewise.supply.pipeline import build
from edgewise.supply.recipe import Recipe, load_recipe, parse_recipe
from edgewise.supply.stage import ModelState, Stage, StageContext, StageResult
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
