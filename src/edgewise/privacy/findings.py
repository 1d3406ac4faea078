"""What the guard found: :class:`Finding` (one span) and :class:`Detection` (a request).

Neither holds any scanned text: a finding is an entity type, a level, a score and
offsets into one segment's **original** text (``text[start:end]`` is the value), so
neither ``str``/``repr`` nor a log line or a JSON dump can leak a value.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgewise.levels import Level

__all__ = ["Detection", "Finding", "Span"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One sensitive span in one segment of a request."""

    #: Entity type, e.g. ``EMAIL_ADDRESS``, ``MRN``, ``GITHUB_TOKEN``.
    entity: str
    #: Sensitivity of this finding (raised to ``phi`` by the PHI rule).
    level: str
    #: Recognizer confidence in [0, 1].
    score: float
    #: Index of the segment (message content, tool arguments…) in ``detect``'s input.
    segment: int
    #: ``[start, end)`` in that segment's original text.
    start: int
    end: int
    #: How it was found: ``text`` (the segment), ``digits`` (digits joined across
    #: separators), ``words`` (numbers written in words read as digits) or ``across``
    #: (a value split over consecutive segments; each segment's piece is its own
    #: finding).
    via: str = "text"

    def to_dict(self) -> dict[str, Any]:
        return {"entity": self.entity, "level": self.level, "score": round(self.score, 4),
                "segment": self.segment, "start": self.start, "end": self.end,
                "via": self.via}


@dataclass(frozen=True, slots=True)
class Span:
    """A merged range to redact: the union of overlapping findings."""

    start: int
    end: int
    #: The entity type of the most sensitive (then highest scoring) finding inside.
    entity: str
    level: str


@dataclass(frozen=True)
class Detection:
    """The guard's verdict on a request: its level and every finding."""

    #: ``max(declared, detected)``: what the router must respect.
    level: str
    #: The level from the findings and the PHI rule alone.
    detected: str
    #: The label the request or its API key declared (``None``: none).
    declared: str | None
    findings: tuple[Finding, ...]
    #: Whether health information next to an identifier made the request ``phi``.
    phi_rule: bool
    #: Number of segments scanned.
    segments: int
    #: Findings per entity type.
    counts: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def build(cls, *, level: str, detected: str, declared: str | None,
              findings: tuple[Finding, ...], phi_rule: bool, segments: int) -> Detection:
        counts = dict(sorted(Counter(f.entity for f in findings).items()))
        return cls(level=level, detected=detected, declared=declared, findings=findings,
                   phi_rule=phi_rule, segments=segments, counts=counts)

    def in_segment(self, segment: int) -> tuple[Finding, ...]:
        """The findings of one segment, in text order."""
        return tuple(f for f in self.findings if f.segment == segment)

    def spans_above(self, segment: int, clearance: str) -> list[Span]:
        """Non-overlapping ranges of ``segment`` to hide from a tier cleared for ``clearance``.

        Findings whose level is above ``clearance`` are merged with every finding that
        overlaps them (so a partial overlap is never half-redacted), sorted by start.
        """
        limit = Level.parse(clearance).rank
        mine = sorted(self.in_segment(segment), key=lambda f: (f.start, -f.end))
        hot = [f for f in mine if Level.parse(f.level).rank > limit]
        if not hot:
            return []
        spans: list[Span] = []
        group: list[Finding] = []
        end = -1
        for f in mine:
            if group and f.start >= end:
                spans.extend(_merged(group, limit))
                group = []
            group.append(f)
            end = max(end, f.end) if len(group) > 1 else f.end
        spans.extend(_merged(group, limit))
        return spans

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "detected": self.detected, "declared": self.declared,
                "phi_rule": self.phi_rule, "segments": self.segments,
                "counts": dict(self.counts), "findings": [f.to_dict() for f in self.findings]}


def _merged(group: list[Finding], limit: int) -> list[Span]:
    """One span over an overlapping group, if any member is above the clearance."""
    if not any(Level.parse(f.level).rank > limit for f in group):
        return []
    top = max(group, key=lambda f: (Level.parse(f.level).rank, f.score, f.end - f.start))
    return [Span(min(f.start for f in group), max(f.end for f in group), top.entity,
                 top.level)]
