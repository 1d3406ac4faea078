"""The artifact format: what ``edgewise build`` writes and what a node reads to serve it.

An *artifact* is a folder with a ``manifest.json`` that lists its *variants*: deployable
model files (GGUF, ONNX), each with its sha256 and what was measured about it. A
*hardware profile* says which variants fit a class of device and which of them is best.
``edgewise serve`` with ``engine.model: auto`` uses that to pick the variant for the
machine it runs on.

Layout::

    variant.py    Variant: one deployable file of an artifact and its metrics
    manifest.py   manifest.json: digests, stages, variants, tool versions; atomic writes
    profiles.py   hardware profiles; which variant fits and is best
    choose.py     serve-time choice of an installed variant, checked against its digest

This package is shared by the supply chain (:mod:`edgewise.supply` writes artifacts), the
node (reads them) and, later, the model registry. So it depends only on the base
install: ``edgewise.errors``, ``edgewise.config``, ``edgewise.models``, the standard
library, pydantic and yaml. It never imports ``edgewise.supply``, torch or transformers.
"""

from __future__ import annotations

from edgewise.artifacts.choose import Choice, choose_variant, installed_variants
from edgewise.artifacts.manifest import MANIFEST, SCHEMA, Manifest, StageRecord
from edgewise.artifacts.profiles import (
    Fit,
    HardwareProfile,
    LatencyTarget,
    ProfileReport,
    best_variant,
    evaluate_profile,
    load_profile,
    machine_profile,
    parse_profile,
)
from edgewise.artifacts.variant import Variant

__all__ = [
    "MANIFEST",
    "SCHEMA",
    "Choice",
    "Fit",
    "HardwareProfile",
    "LatencyTarget",
    "Manifest",
    "ProfileReport",
    "StageRecord",
    "Variant",
    "best_variant",
    "choose_variant",
    "evaluate_profile",
    "installed_variants",
    "load_profile",
    "machine_profile",
    "parse_profile",
]
