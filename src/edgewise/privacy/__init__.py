"""The privacy guard: sensitivity detection before routing, enforcement and reversible
redaction.

``Detector(config.privacy).detect(segments, declared)`` → :class:`Detection` (a level
``public < internal < pii < phi`` and exact spans). Importing this package loads
nothing heavy: Presidio and spaCy are loaded when a :class:`Detector` is built.

| module | concept |
|---|---|
| ``levels.py`` | default entity → level table, the PHI rule's entity sets |
| ``normalize.py`` | undo escapes, invisible characters, look-alikes; offset maps |
| ``findings.py`` | ``Finding``, ``Detection``, ``Span`` (no values inside) |
| ``nlp.py`` | the pinned offline spaCy model and Presidio's NLP engine |
| ``recognizers/`` | edgewise's Presidio recognizers (medical, secrets, network, identity, config) |
| ``detector.py`` | ``Detector``: per-segment scan, cross-segment scan, cache, verdict |
| ``redact.py`` | reversible placeholders and their (streaming) restoration |
| ``enforce.py`` | per request: the declared floor, the level, the redacted form per clearance |
"""

from __future__ import annotations

from edgewise.privacy.detector import CacheInfo, Detector, resolve_levels
from edgewise.privacy.findings import Detection, Finding, Span
from edgewise.privacy.levels import DEFAULT_LEVELS

__all__ = [
    "DEFAULT_LEVELS",
    "CacheInfo",
    "Detection",
    "Detector",
    "Finding",
    "Span",
    "resolve_levels",
]
