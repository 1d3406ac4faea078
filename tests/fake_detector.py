"""A small regex detector with the real detector's shape, for tests of routing and
enforcement that are not about detection quality (those use the real Presidio guard)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

LEVELS = ("public", "internal", "pii", "phi")
_RULES = [
    ("EMAIL_ADDRESS", "pii", re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")),
    ("US_SSN", "pii", re.compile(r"\b\d{3}-\d{2}-\d{4}\b")),
    ("PERSON", "pii", re.compile(r"\b(?:Jane Doe|John Smith|Ann Lee)\b")),
    ("MRN", "phi", re.compile(r"\bMRN[: ]*\d{6,8}\b")),
    ("INTERNAL_HOSTNAME", "internal", re.compile(r"\b[\w-]+\.corp\b")),
]
_PHI_CONTEXT = re.compile(r"\b(?:patient|diagnos\w*)\b", re.I)


@dataclass(frozen=True)
class Finding:
    entity: str
    level: str
    score: float
    segment: int
    start: int
    end: int


@dataclass
class Detection:
    level: str
    findings: list[Finding] = field(default_factory=list)


class FakeDetector:
    def __init__(self) -> None:
        self.calls = 0

    def detect(self, segments: Sequence[str], declared: str | None = None) -> Detection:
        self.calls += 1
        findings = [Finding(entity, lvl, 1.0, i, m.start(), m.end())
                    for i, text in enumerate(segments)
                    for entity, lvl, rx in _RULES for m in rx.finditer(text)]
        top = max((LEVELS.index(f.level) for f in findings), default=0)
        if top >= LEVELS.index("pii") and any(_PHI_CONTEXT.search(t) for t in segments):
            top = LEVELS.index("phi")
            findings = [Finding(f.entity, "phi", f.score, f.segment, f.start, f.end)
                        if f.level == "pii" else f for f in findings]
        if declared is not None:
            top = max(top, LEVELS.index(declared))
        return Detection(LEVELS[top], findings)
