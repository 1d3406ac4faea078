"""Enforcing a request's sensitivity on its way through the tiers.

The router (``routing/policy.py``) decides *which* tiers may receive a request and how
(``clear``, ``redact``, ``allow``); this module holds, per request, what that needs:

- the request's **segments** — every piece of text a tier would receive (each message's
  content, whatever its role, tool-call arguments and tool definitions) — and the
  detector's findings in them;
- its **levels**: the declared floor (request header, API key, or
  ``routing.default_sensitivity``) and the effective level
  ``max(declared, detected)`` (the detector can raise a label, never lower it);
- for a tier in ``redact`` mode, the **redacted request**, built once per clearance:

  1. replace every finding whose level is above the tier's clearance;
  2. scan the redacted text again. The placeholders hide the identifiers, so the PHI
     rule no longer fires (a diagnosis without a name is not PHI) — but NER depends on
     context, and with its neighbours replaced a name the first pass missed is often
     found now. Findings that lie within our own placeholders (no letter or digit of
     real text in them) are ignored; any other finding above the clearance is
     replaced too, and the text scanned again — at most three rounds. Each round only
     removes more text, and :meth:`Redaction.then` keeps one mapping back to the
     original values;
  3. if the text still does not fit the clearance, the tier is skipped — the request is
     never sent to a tier its redacted form is not cleared for. Likewise if a
     placeholder would break the JSON of a tool call's arguments: skipped.

Nothing here logs or raises with request text; findings carry offsets and entity
types, never values.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from edgewise.chat import ChatRequest
from edgewise.errors import EdgewiseError
from edgewise.levels import Level
from edgewise.privacy.redact import Redaction, SpanLike, redact

__all__ = ["DetectionLike", "DetectorLike", "RequestGuard", "segments_of", "with_segments"]


class FindingLike(SpanLike, Protocol):
    @property
    def level(self) -> str: ...


class DetectionLike(Protocol):
    @property
    def level(self) -> str: ...
    @property
    def findings(self) -> Sequence[FindingLike]: ...


class DetectorLike(Protocol):
    def detect(self, segments: Sequence[str], declared: str | None = None
               ) -> DetectionLike: ...


def _pieces(req: ChatRequest) -> list[tuple[tuple[str, int, int], str]]:
    """(address, text) of every piece of text of ``req``: message contents, message
    ``name`` fields, tool-call function names and arguments, the tool definitions."""
    out: list[tuple[tuple[str, int, int], str]] = []
    for i, m in enumerate(req.messages):
        out.append((("content", i, 0), m.content))
        if m.name:
            out.append((("name", i, 0), m.name))
        for j, c in enumerate(m.tool_calls):
            out += [(("function", i, j), c.name), (("arguments", i, j), c.arguments)]
    if req.tools:
        out.append((("tools", 0, 0), json.dumps(list(req.tools), ensure_ascii=False)))
    return out


def segments_of(req: ChatRequest) -> list[str]:
    """Every piece of text of ``req`` a tier would receive, in conversation order:
    message contents (every role), names, tool-call names and arguments, tool
    definitions."""
    return [text for _, text in _pieces(req)]


def _still_json(before: str, after: str) -> bool:
    """Redaction must not break JSON that was valid (placeholders go inside strings)."""
    try:
        json.loads(before)
    except ValueError:
        return True
    try:
        json.loads(after)
    except ValueError:
        return False
    return True


def with_segments(req: ChatRequest, segments: Sequence[str]) -> ChatRequest:
    """``req`` with its text pieces replaced (the inverse of :func:`segments_of`).

    A message ``name`` that changed is dropped (names are identifiers OpenAI restricts
    to ``[A-Za-z0-9_-]``; a placeholder would be refused upstream). Raises
    ``ValueError`` if the count does not match, if a tool-call function name changed
    (the call would be meaningless), or if redacted tool arguments or definitions are no
    longer the valid JSON they were.
    """
    pieces = _pieces(req)
    if len(segments) != len(pieces):
        raise ValueError("segment count does not match the request")
    new = dict(zip((addr for addr, _ in pieces), segments, strict=True))
    for (addr, before), after in zip(pieces, segments, strict=True):
        if addr[0] == "function" and after != before:
            raise ValueError("redaction would rename a tool call's function")
        if addr[0] in ("arguments", "tools") and not _still_json(before, after):
            raise ValueError("redaction would break the JSON of a tool call or definition")

    def name(i: int, old: str | None) -> str | None:
        return old if old is None or new[("name", i, 0)] == old else None

    messages = tuple(
        dataclasses.replace(m, content=new[("content", i, 0)], name=name(i, m.name),
                            tool_calls=tuple(
                                dataclasses.replace(c, arguments=new[("arguments", i, j)])
                                for j, c in enumerate(m.tool_calls)))
        for i, m in enumerate(req.messages))
    tools = tuple(json.loads(new[("tools", 0, 0)])) if req.tools else ()
    return dataclasses.replace(req, messages=messages, tools=tools)


def _only_placeholders(r: Redaction, text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` holds no letter or digit outside ``r``'s placeholders
    (a detector that tags a placeholder itself found nothing new)."""
    keep = list(text[start:end])
    for a, b in r.placeholder_spans(text):
        for i in range(max(a, start), min(b, end)):
            keep[i - start] = " "
    return not any(c.isalnum() for c in keep)


@dataclass
class RequestGuard:
    """A request's sensitivity, and its redacted forms as tiers need them."""

    detector: DetectorLike | None
    segments: list[str]
    detection: DetectionLike | None
    #: The declared floor (``public`` when nothing was declared).
    declared: Level = Level.PUBLIC
    _redacted: dict[str, Redaction | None] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @classmethod
    async def build(cls, detector: DetectorLike | None, req: ChatRequest,
                    declared: Level | str) -> RequestGuard:
        """Scan ``req`` (in a worker thread: detection is CPU work)."""
        segments = segments_of(req)
        detection = None
        if detector is not None:
            # Labels are applied here, not by the detector, so ``detected`` stays pure.
            detection = await asyncio.to_thread(detector.detect, segments, None)
        return cls(detector, segments, detection, Level.parse(declared))

    @property
    def detected(self) -> Level:
        """What the detector found, labels aside (``public`` without a detector)."""
        return Level.parse(self.detection.level) if self.detection is not None \
            else Level.PUBLIC

    @property
    def level(self) -> Level:
        """The effective level: ``max(declared, detected)``."""
        return max(self.declared, self.detected)

    def entity_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for f in self.detection.findings if self.detection is not None else ():
            counts[f.entity] = counts.get(f.entity, 0) + 1
        return dict(sorted(counts.items()))

    async def redacted_for(self, clearance: Level) -> Redaction | None:
        """The request redacted to fit ``clearance``, or ``None`` if it cannot be."""
        async with self._lock:
            if clearance not in self._redacted:
                self._redacted[clearance] = await asyncio.to_thread(self._redact, clearance)
            return self._redacted[clearance]

    def _redact(self, clearance: Level) -> Redaction | None:
        if self.detection is None or self.detector is None:
            return None  # nothing to redact with: cannot clear anything
        if self.declared > clearance:
            return None
        limit = clearance
        r = redact(self.segments, [f for f in self.detection.findings
                                   if Level.parse(f.level) > limit])
        for _round in range(3):  # step 2
            try:
                residual = self.detector.detect(list(r.segments), None)
            except EdgewiseError:  # cannot confirm it is clear: do not send it
                return None
            if Level.parse(residual.level) <= limit:
                return r
            above = [f for f in residual.findings if Level.parse(f.level) > limit]
            if not above:  # a level no finding explains: cannot redact it away
                return None
            extra = [f for f in above
                     if not _only_placeholders(r, r.segments[f.segment], f.start, f.end)]
            if not extra:  # only our placeholders were tagged: nothing real is left
                return r
            r = r.then(redact(r.segments, extra))
        return None

    async def request_for(self, req: ChatRequest, clearance: Level
                          ) -> tuple[ChatRequest, Redaction] | None:
        r = await self.redacted_for(clearance)
        if r is None:
            return None
        try:
            return with_segments(req, r.segments), r
        except ValueError:  # the redacted JSON would not parse: do not send it
            return None
