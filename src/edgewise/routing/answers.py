"""The final answer of a reply, found one way for everything that compares answers: the
calibration graders (``edgewise calibrate``) and the ``agreement`` scorer.

The *final answer span* of a reply is, in order: the last match of an answer pattern
(``routing.cascade.answer_pattern``; its first group if it has one), else what follows
the last ``####`` (GSM8K style), else the content of the last ``\\boxed{…}`` (the LaTeX
convention of maths models), else none; surrounding whitespace is not part of it.
"""

from __future__ import annotations

import re

__all__ = ["answer_span", "canonical", "final_answer", "parse_choice", "parse_number"]

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_CHOICE = re.compile(r"(?<![A-Za-z])([A-H])(?![A-Za-z])")


def _strip(text: str, a: int, b: int) -> tuple[int, int] | None:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return (a, b) if b > a else None


def answer_span(text: str, pattern: re.Pattern[str] | None = None) -> tuple[int, int] | None:
    """Character span ``[a, b)`` of the final answer in ``text`` (module docstring), or
    ``None`` when there is none to single out (use the whole reply)."""
    if pattern is not None:
        last = None
        for last in pattern.finditer(text):  # noqa: B007 - we want the last match
            pass
        if last is not None:
            group = 1 if pattern.groups else 0
            if last.start(group) >= 0:
                return _strip(text, last.start(group), last.end(group))
    if "####" in text:
        return _strip(text, text.rindex("####") + 4, len(text))
    boxed = None
    for boxed in _BOXED.finditer(text):  # noqa: B007 - the last one
        pass
    if boxed is not None:
        return _strip(text, boxed.start(1), boxed.end(1))
    return None


def _to_float(token: str) -> float | None:
    try:
        return float(token.replace(",", ""))
    except ValueError:
        return None


def canonical(text: str) -> str | None:
    """A number in canonical form if ``text`` holds one (``$1,250.0`` → ``1250``), else
    the text case-folded with runs of whitespace collapsed and a final ``.`` dropped."""
    found = _NUMBER.findall(text.replace("$", ""))
    if found:
        x = _to_float(found[0])
        if x is not None:
            return str(int(x)) if x.is_integer() else repr(x)
    norm = " ".join(text.split()).casefold().rstrip(".").strip()
    return norm or None


def final_answer(text: str, pattern: re.Pattern[str] | None = None) -> str | None:
    """The comparable final answer of a reply: the answer span in canonical form;
    without one, the reply's last number; without a number, the whole reply normalised.
    ``None`` for an empty reply."""
    span = answer_span(text, pattern)
    if span is not None:
        return canonical(text[span[0]:span[1]])
    numbers = _NUMBER.findall(text.replace("$", ""))
    if numbers:
        return canonical(numbers[-1])
    return canonical(text)


def parse_number(text: str, pattern: re.Pattern[str] | None = None) -> float | None:
    """The answer number of a reply: the first number of its answer span, else its last
    number; ``$`` and ``,`` are ignored."""
    span = answer_span(text, pattern)
    if span is not None:
        found = _NUMBER.findall(text[span[0]:span[1]].replace("$", ""))
        if found:
            return _to_float(found[0])
    found = _NUMBER.findall(text.replace("$", ""))
    return _to_float(found[-1]) if found else None


def parse_choice(text: str) -> str | None:
    """The first standalone letter A–H of a reply (``"B"``, ``"(B)"``, ``"B. Paris"``)."""
    m = _CHOICE.search(text)
    return m.group(1) if m else None
