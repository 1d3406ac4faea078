"""A small regex detector with the real detector's interface and result types, for tests
of routing and enforcement that are not about detection quality (those use the real
Presidio guard)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from edgewise.levels import Level
from edgewise.privacy import Detection, Finding

_RULES = [
    ("EMAIL_ADDRESS", "pii", re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")),
    ("US_SSN", "pii", re.compile(r"\b\d{3}-\d{2}-\d{4}\b")),
    ("PERSON", "pii", re.compile(r"\b(?:Jane Doe|John Smith|Ann Lee)\b")),
    ("MRN", "phi", re.compile(r"\bMRN[: ]*\d{6,8}\b")),
    ("INTERNAL_HOSTNAME", "internal", re.compile(r"\b[\w-]+\.corp\b")),
]
_PHI_CONTEXT = re.compile(r"\b(?:patient|diagnos\w*)\b", re.I)


class FakeDetector:
    def __init__(self) -> None:
        self.calls = 0

    def detect(self, segments: Sequence[str], declared: str | None = None) -> Detection:
        self.calls += 1
        findings = [Finding(entity, lvl, 1.0, i, m.start(), m.end())
                    for i, text in enumerate(segments)
                    for entity, lvl, rx in _RULES for m in rx.finditer(text)]
        top = Level.highest(f.level for f in findings)
        phi = top >= Level.PII and any(_PHI_CONTEXT.search(t) for t in segments)
        if phi:  # the PHI rule: identifiers next to health information become phi
            top = Level.PHI
            findings = [Finding(f.entity, "phi", f.score, f.segment, f.start, f.end)
                        if f.level == "pii" else f for f in findings]
        detected = str(top)
        level = str(max(top, Level.parse(declared))) if declared else detected
        return Detection.build(level=level, detected=detected, declared=declared,
                               findings=tuple(findings), phi_rule=phi,
                               segments=len(segments))
