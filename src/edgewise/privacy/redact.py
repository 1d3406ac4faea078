"""Reversible redaction: sensitive spans become stable placeholders on the way up a tier,
and the placeholders become the original values again on the way back.

Written by hand: Presidio's anonymizer replaces spans, but its only reversible operator
is encryption (ciphertext the upstream model cannot read or echo usefully), and it has no
streaming de-anonymizer. What a cascade needs is small and specific:

1. **Placeholders are stable within a conversation.** Spans are visited in conversation
   order (segment, then offset); each distinct value gets ``<ENTITY_n>``, ``n`` counting
   per entity type from 1. The same value (compared after NFKC, case folding and
   whitespace collapsing) gets the same placeholder wherever it appears, so the
   upstream model can reason about "the same person" across messages. Because clients
   resend the whole history each turn, a value keeps its placeholder from turn to turn.
2. **No collisions.** A placeholder that already occurs in the conversation's own text
   (a user writing ``<PERSON_1>`` literally) is skipped, so restoring cannot turn the
   user's literal text into someone's name by accident.
3. **Overlaps merge.** Overlapping or touching spans of one segment are redacted as one
   span (the union), named after the longest of them: nothing of either value survives.
4. **Restoration is tolerant.** Models echo placeholders imperfectly; ``<PERSON_1>``,
   ``< person_1 >``, ``[PERSON_1]``, ``{PERSON_1}``, ``&lt;PERSON_1&gt;`` and a bare
   ``PERSON_1`` (as a whole word) all restore — but only placeholders this redaction
   issued; a made-up ``<PERSON_9>`` is left as is.
5. **Streaming never shows half a placeholder.** :class:`StreamRestorer` holds back the
   end of the text seen so far while it could still be the start of a placeholder
   (at most one placeholder's length), and releases it restored once it is complete —
   or as is once it cannot be one.

The mapping (placeholder → value) lives only in the memory of the request that made it;
it is never logged, stored in the job queue of another tier, or sent anywhere.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Redaction", "SpanLike", "StreamRestorer", "redact"]


class SpanLike(Protocol):
    """What redaction needs from a detector finding."""

    @property
    def segment(self) -> int: ...
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...
    @property
    def entity(self) -> str: ...


def _key(value: str) -> str:
    """Identity of a value for placeholder reuse: same after NFKC, case and spacing."""
    return " ".join(unicodedata.normalize("NFKC", value).casefold().split())


# <NAME_1>, < name_1 >, [NAME_1], {NAME_1}, &lt;NAME_1&gt;, or a bare NAME_1 as a word.
_OPEN = r"(?:<|\[|\{|&lt;)"
_CLOSE = r"(?:>|\]|\}|&gt;)"
_BODY = r"([A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*?_[0-9]+)"
_PATTERN = re.compile(rf"{_OPEN}\s?{_BODY}\s?{_CLOSE}|(?<![A-Za-z0-9_]){_BODY}(?![A-Za-z0-9_])")
_CANONICAL = re.compile(r"<[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*?_[0-9]+>")
#: Characters that may begin a placeholder form.
_STARTS = "<[{&"
_ASCII_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ASCII_WORD = _ASCII_LETTERS | frozenset("0123456789_")


@dataclass
class Redaction:
    """Redacted segments plus what is needed to undo it."""

    #: The segments with every span replaced (same order and count as the input).
    segments: tuple[str, ...]
    #: Canonical placeholder (``<PERSON_1>``) → the original value.
    mapping: dict[str, str] = field(default_factory=dict)
    #: Spans replaced (after merging overlaps).
    replaced: int = 0

    def __repr__(self) -> str:  # never show values
        return (f"Redaction(segments={len(self.segments)}, placeholders={len(self.mapping)}, "
                f"replaced={self.replaced})")

    @property
    def changed(self) -> bool:
        return self.replaced > 0

    def _lookup(self, body: str) -> str | None:
        return self.mapping.get(f"<{body.upper()}>")

    def then(self, other: Redaction) -> Redaction:
        """This redaction followed by ``other`` (made on this one's segments): one
        redaction whose placeholders all restore to the original values. ``other``'s
        values may contain this one's placeholders; they are restored first."""
        mapping = dict(self.mapping)
        mapping.update({k: self.restore(v) for k, v in other.mapping.items()})
        return Redaction(other.segments, mapping, self.replaced + other.replaced)

    def placeholder_spans(self, text: str) -> list[tuple[int, int]]:
        """``[start, end)`` of every issued placeholder (canonical form) in ``text``."""
        return [(m.start(), m.end()) for m in _CANONICAL.finditer(text)
                if m.group(0) in self.mapping]

    def restore(self, text: str) -> str:
        """Every issued placeholder in ``text`` (in any tolerated form) → its value."""
        return self._restore(text, 0)

    def _restore(self, text: str, start: int) -> str:
        """``restore(text[start:])`` with ``text[:start]`` as left context only (the
        regex's look-behind sees it; no match begins in it)."""
        if not self.mapping or not text:
            return text[start:]
        out, last = [], start
        for m in _PATTERN.finditer(text, start):
            value = self._lookup(m.group(1) or m.group(2))
            if value is not None:
                out += [text[last:m.start()], value]
                last = m.end()
        out.append(text[last:])
        return "".join(out)

    def restore_json(self, text: str) -> str:
        """Restore inside JSON text (tool-call arguments): each string is restored and
        re-encoded, so a value with quotes or backslashes keeps the JSON valid. Text that
        is not JSON is restored as plain text."""
        if not self.mapping:
            return text
        try:
            data = json.loads(text)
        except ValueError:
            return self.restore(text)

        def walk(x: Any) -> Any:
            if isinstance(x, str):
                return self.restore(x)
            if isinstance(x, list):
                return [walk(v) for v in x]
            if isinstance(x, dict):
                return {self.restore(k): walk(v) for k, v in x.items()}
            return x

        return json.dumps(walk(data), ensure_ascii=False)

    def restorer(self) -> StreamRestorer:
        return StreamRestorer(self)

    # -- streaming support -------------------------------------------------------------
    def _forms(self) -> list[str]:
        """Every tolerated form of every issued placeholder, case-folded, spaces removed
        (the prefix test below compares against these)."""
        forms: list[str] = []
        for ph in self.mapping:
            body = ph[1:-1].casefold()
            forms += [f"<{body}>", f"[{body}]", f"{{{body}}}", f"&lt;{body}&gt;", body]
        return forms


class StreamRestorer:
    """Restores placeholders in a stream of text pieces; see rule 5 above.

    ``feed(piece)`` returns the text that is safe to send now; ``flush()`` returns the
    rest at the end of the stream. The concatenation of everything returned equals
    ``redaction.restore(whole text)``.
    """

    def __init__(self, redaction: Redaction) -> None:
        self.redaction = redaction
        self.forms = redaction._forms()
        self.longest = max((len(f) for f in self.forms), default=0) + 2  # optional spaces
        self.buffer = ""
        #: The last character released (of the original text): the left context a bare
        #: placeholder needs (``xPERSON_1`` is a word, not a placeholder).
        self.prev = ""

    def _could_continue(self, tail: str) -> bool:
        """Whether ``tail`` is a prefix of a placeholder form, or a complete bare one
        that more characters could still turn into a longer (or different) word."""
        squeezed = "".join(tail.casefold().split())
        return any(f.startswith(squeezed) for f in self.forms)

    def _hold_from(self) -> int:
        """Index in the buffer from which text must be held back."""
        buf = self.buffer
        lo = max(0, len(buf) - self.longest)
        for i in range(lo, len(buf)):
            c = buf[i]
            before = buf[i - 1] if i else self.prev
            # the same (ASCII) word boundary as the pattern's look-behind
            bare_start = c in _ASCII_LETTERS and not (before and before in _ASCII_WORD)
            if (c in _STARTS or bare_start) and self._could_continue(buf[i:]):
                return i
        return len(buf)

    def feed(self, piece: str) -> str:
        if not self.redaction.mapping:
            return piece
        self.buffer += piece
        cut = self._hold_from()
        ready, self.buffer = self.buffer[:cut], self.buffer[cut:]
        return self._release(ready)

    def flush(self) -> str:
        rest, self.buffer = self.buffer, ""
        return self._release(rest)

    def _release(self, text: str) -> str:
        if not text:
            return ""
        restored = self.redaction._restore(self.prev + text, len(self.prev))
        self.prev = text[-1]
        return restored


def _merge(spans: Iterable[SpanLike], lengths: Sequence[int]) -> list[tuple[int, int, int, str]]:
    """(segment, start, end, entity) with overlapping/touching spans of a segment merged;
    spans outside their segment are clipped (a detector bug must not crash redaction)."""
    raw = sorted((s.segment, max(0, s.start), min(s.end, lengths[s.segment]), s.entity)
                 for s in spans if 0 <= s.segment < len(lengths))
    merged: list[tuple[int, int, int, str]] = []
    for seg, start, end, entity in raw:
        if end <= start:
            continue
        if merged and merged[-1][0] == seg and start <= merged[-1][2]:
            _, pstart, pend, pentity = merged[-1]
            longer = entity if end - start > pend - pstart else pentity
            merged[-1] = (seg, pstart, max(pend, end), longer)
        else:
            merged.append((seg, start, end, entity))
    return merged


def redact(segments: Sequence[str], spans: Iterable[SpanLike]) -> Redaction:
    """Replace every span with a placeholder; see the module docstring for the rules.

    ``spans`` index into ``segments`` with offsets in each segment's original text.
    """
    merged = _merge(spans, [len(s) for s in segments])
    taken = "\n".join(segments).upper()
    counters: dict[str, int] = {}
    by_value: dict[tuple[str, str], str] = {}
    mapping: dict[str, str] = {}
    per_segment: dict[int, list[tuple[int, int, str]]] = {}
    for seg, start, end, entity in merged:
        value = segments[seg][start:end]
        key = (entity, _key(value))
        placeholder = by_value.get(key)
        if placeholder is None:
            while True:
                counters[entity] = counters.get(entity, 0) + 1
                body = f"{entity}_{counters[entity]}"
                if body not in taken:  # in any bracket form, or bare
                    break
            placeholder = f"<{body}>"
            by_value[key] = placeholder
            mapping[placeholder] = value
        per_segment.setdefault(seg, []).append((start, end, placeholder))
    out = list(segments)
    for seg, items in per_segment.items():
        text = out[seg]
        for start, end, placeholder in sorted(items, reverse=True):
            text = text[:start] + placeholder + text[end:]
        out[seg] = text
    return Redaction(tuple(out), mapping, len(merged))
