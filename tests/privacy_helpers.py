"""One loaded privacy detector per test session (Presidio + spaCy take seconds to load).

Test modules import :func:`default_detector` / :func:`detector_for`; detectors for
other configs share the default one's NLP engine, so only one model is ever loaded.
"""

from __future__ import annotations

import functools
from typing import Any

from edgewise.config import PrivacyConfig, parse_config
from edgewise.privacy import Detection, Detector


@functools.cache
def default_detector() -> Detector:
    return Detector(PrivacyConfig())


def detector_for(privacy: dict[str, Any], **kwargs: Any) -> Detector:
    cfg = parse_config({"privacy": privacy}).privacy
    return Detector(cfg, nlp_engine=default_detector().nlp_engine, **kwargs)


def found(detection: Detection, segments: list[str]) -> set[tuple[str, str]]:
    """(entity, original text) of every finding."""
    return {(f.entity, segments[f.segment][f.start:f.end]) for f in detection.findings}


def scan(text: str, detector: Detector | None = None) -> set[tuple[str, str]]:
    d = detector or default_detector()
    return found(d.detect([text]), [text])


def entities(text: str, detector: Detector | None = None) -> set[str]:
    return {e for e, _ in scan(text, detector)}
