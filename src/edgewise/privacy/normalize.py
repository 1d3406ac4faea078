"""Undo formatting tricks before detection, keeping a map back to the original offsets.

Detection runs on a *normalized* copy of each text; every span found there is mapped
back to the exact character range of the original it came from, so redaction can cut
the original. Each normalized character records ``[start, end)`` of the original text
it was produced from (several characters can share one source: a ligature ``ﬁ`` → ``fi``;
one character can stand for several: ``\\u0040`` → ``@``). The map is monotone, so a
normalized span ``[s, e)`` maps to ``[starts[s], ends[e - 1])``.

What :func:`normalize` undoes, in order, per source group:

1. **JSON escapes** (any number of backslashes, so JSON inside a JSON string works):
   ``\\uXXXX`` (surrogate pairs joined), ``\\n \\r \\t`` → whitespace, ``\\" \\/`` → the
   character. Text copied out of tool-call arguments or logs reads as it displays.
2. **Obfuscated e-mail punctuation**: ``[at]``, ``(at)``, ``{at}`` → ``@`` and ``[dot]``
   (same brackets) → ``.``, with the spaces around them.
3. **Invisible characters** are dropped: format characters (Unicode category Cf: zero
   width space/joiners, BOM, soft hyphen, bidi controls, tag characters), control
   characters other than tab/newline/return, variation selectors, the combining
   grapheme joiner and Hangul filler letters. ``4111\\u200b1111`` reads ``41111111``.
4. **Decorative combining marks** are dropped (after NFKD): accents, enclosing keycaps,
   combining underlines/strike-throughs (``J̲o̲h̲n̲`` → ``John``).
5. **NFKC**: full-width ``４１１１`` → ``4111``, mathematical letters 𝐉𝐨𝐡𝐧 → John, ligatures,
   circled digits, non-breaking and other Unicode spaces → space; line/paragraph
   separators → newline.
6. **Look-alikes**: Cyrillic, Greek and Armenian letters that render like Latin ones
   → Latin (``jоhn@exаmple.com`` with Cyrillic о/а → ASCII); decimal digits of any
   script (Arabic-Indic, Devanagari…) → ASCII digits. Real Cyrillic or Greek text is
   garbled by this; the English NER model cannot read it anyway, and the regular
   expressions all expect ASCII.

:func:`collapse_separators` builds a second view in which digits broken up by spaces,
dots, dashes, slashes or newlines (``4 1 1 1 . 1 1 1 1 …``, an IBAN wrapped over two
lines) are joined into one number; only structured recognizers run on it (see
``edgewise.privacy.detector``). :func:`edgewise.privacy.spelled.spell_digits` builds a
third, in which numbers written in words read as digits.
"""

from __future__ import annotations

import re
import unicodedata
from array import array
from dataclasses import dataclass

__all__ = ["NormalizedText", "collapse_separators", "identity", "normalize"]


@dataclass(frozen=True, eq=False)
class NormalizedText:
    """A normalized text and, per character, the ``[start, end)`` it came from."""

    text: str
    starts: array[int]
    ends: array[int]
    #: Length of the source text (what offsets point into).
    source_length: int

    def __repr__(self) -> str:  # never the text: it may be sensitive
        return (f"NormalizedText(len={len(self.text)}, source_length={self.source_length}, "
                f"changed={self.changed})")

    @property
    def changed(self) -> bool:
        """Whether normalization changed anything (else offsets are the identity)."""
        return len(self.text) != self.source_length or any(
            s != i or e != i + 1 for i, (s, e) in enumerate(zip(self.starts, self.ends,
                                                                 strict=True)))

    def to_source(self, start: int, end: int) -> tuple[int, int]:
        """The source range ``[a, b)`` that the normalized range ``[start, end)`` came from.

        Every source character that contributed to ``text[start:end]`` is inside
        ``[a, b)``, and ``a``/``b`` are boundaries of whole source groups (an escape
        sequence, a character with its combining marks) — never the middle of one.
        """
        if not 0 <= start <= end <= len(self.text):
            raise ValueError(f"span [{start}, {end}) is outside the normalized text "
                             f"(length {len(self.text)})")
        if start == end:
            pos = self.starts[start] if start < len(self.text) else self.source_length
            return pos, pos
        return self.starts[start], self.ends[end - 1]

    def then(self, inner: NormalizedText) -> NormalizedText:
        """Compose: ``inner`` normalizes ``self.text``; the result maps to self's source."""
        if inner.source_length != len(self.text):
            raise ValueError("inner normalization is not of this text")
        starts = array("l", (self.starts[s] for s in inner.starts))
        ends = array("l", (self.ends[e - 1] if e > 0 else 0 for e in inner.ends))
        return NormalizedText(inner.text, starts, ends, self.source_length)


def identity(text: str) -> NormalizedText:
    """The trivial normalization (each character maps to itself)."""
    n = len(text)
    return NormalizedText(text, array("l", range(n)), array("l", range(1, n + 1)), n)


# -- step tables -------------------------------------------------------------------------

# Latin look-alikes (Unicode TR39 confusables, restricted to letters that render the same
# in common fonts). Greek/Cyrillic lower and upper case, Armenian, a few Latin variants.
_CONFUSABLES: dict[str, str] = {
    # Cyrillic lower
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o",
    "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i",
    "ј": "j", "һ": "h", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ӏ": "l", "ь": "b", "ɡ": "g",
    "ү": "y", "ս": "u", "օ": "o", "հ": "h", "ո": "n", "ց": "g", "զ": "q", "ա": "w",
    # Cyrillic upper
    "А": "A", "В": "B", "Е": "E", "Ё": "E", "К": "K", "М": "M", "Н": "H", "О": "O",
    "Р": "P", "С": "C", "Т": "T", "У": "Y", "Х": "X", "Ѕ": "S", "І": "I", "Ї": "I",
    "Ј": "J", "Ү": "Y", "Ԛ": "Q", "Ԝ": "W", "Ӏ": "I", "Ь": "b", "Ꮪ": "S", "Ꭺ": "A",
    "Ꭼ": "E", "Ꮋ": "H", "Ꭻ": "J", "Ꮶ": "K", "Ꮇ": "M", "Ꮲ": "P", "Ꭲ": "T",
    # Greek lower
    "α": "a", "β": "b", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x", "γ": "y", "ω": "w", "ϲ": "c", "ϳ": "j",
    # Greek upper
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M",
    "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X", "Ϲ": "C",
    # Latin variants NFKC keeps
    "ı": "i", "ȷ": "j", "ɑ": "a", "ǀ": "l", "ℓ": "l", "ʏ": "y", "ɪ": "i", "ᴏ": "o",
}

# Decorative combining marks: diacritics, extended/supplement blocks, marks for symbols
# (enclosing keycap, circles, combining underline/overline), half marks.
_DECORATIVE_MARK = re.compile(
    "[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
_INVISIBLE_EXTRA = frozenset("\u034f\u115f\u1160\u3164\uffa0")


def _invisible(ch: str) -> bool:
    cat = unicodedata.category(ch)
    if cat == "Cf":
        return True
    if cat == "Cc":
        return ch not in "\t\n\r"
    if ch in _INVISIBLE_EXTRA:
        return True
    cp = ord(ch)
    return 0xFE00 <= cp <= 0xFE0F or 0xE0100 <= cp <= 0xE01EF  # variation selectors


# Everything outside printable ASCII (plus tab/newline/return), backslashes and brackets
# (for "[at]") starts a group that needs attention; the rest is copied as is.
_SPECIAL = re.compile(r"[^\t\n\r\x20-\x27\x29-\x5a\x5d-\x7a\x7c-\x7e]")
_ESCAPE = re.compile(
    r"\\+(?:u(?P<hi>[dD][89abAB][0-9a-fA-F]{2})\\+u(?P<lo>[dD][c-fC-F][0-9a-fA-F]{2})"
    r"|u(?P<u>[0-9a-fA-F]{4})|(?P<c>[nrt\"/]))")
_OBFUSCATED = re.compile(
    r"\s*(?:\[\s*(?P<a1>at|dot)\s*\]|\(\s*(?P<a2>at|dot)\s*\)|\{\s*(?P<a3>at|dot)\s*\})\s*",
    re.IGNORECASE)
_SIMPLE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "/": "/"}


def _normalize_char(ch: str) -> str:
    """Steps 3–6 for one character (with its combining marks already attached)."""
    if len(ch) == 1:
        if ch < "\x7f" and (ch >= " " or ch in "\t\n\r"):
            return ch
        if _invisible(ch):
            return ""
        if ch in "\u2028\u2029":
            return "\n"
    decomposed = _DECORATIVE_MARK.sub("", unicodedata.normalize("NFKD", ch))
    out = []
    for c in unicodedata.normalize("NFKC", decomposed):
        if _invisible(c):
            continue
        c = _CONFUSABLES.get(c, c)
        if not c.isascii() and unicodedata.category(c) == "Nd":
            c = str(unicodedata.decimal(c))
        out.append(c)
    return "".join(out)


def normalize(text: str) -> NormalizedText:
    """Normalize ``text`` for detection, with the map back to its offsets (see module)."""
    chars: list[str] = []
    starts = array("l")
    ends = array("l")

    def emit(s: str, a: int, b: int) -> None:
        for c in s:
            chars.append(c)
            starts.append(a)
            ends.append(b)

    n = len(text)
    i = 0
    groups: set[int] = set()  # where "[at]"-style groups start (spaces before them go)
    for m in _SPECIAL.finditer(text):
        j = m.start()
        if j < i:  # inside a group already consumed
            continue
        if j > i:  # a plain ASCII run: copy it
            chars.append(text[i:j])
            starts.extend(range(i, j))
            ends.extend(range(i + 1, j + 1))
        i = j
        ch = text[j]
        if ch == "\\":
            esc = _ESCAPE.match(text, j)
            if esc is not None:
                if esc["c"]:
                    decoded = _SIMPLE_ESCAPES[esc["c"]]
                elif esc["u"]:
                    decoded = chr(int(esc["u"], 16))
                else:
                    decoded = (chr(int(esc["hi"], 16)) + chr(int(esc["lo"], 16))).encode(
                        "utf-16", "surrogatepass").decode("utf-16")
                emit(_normalize_char(decoded) if decoded not in "\n\r\t" else decoded,
                     j, esc.end())
                i = esc.end()
                continue
            emit(ch, j, j + 1)
            i = j + 1
            continue
        if ch in "[({":
            # "[at]" — the group may start with the whitespace before the bracket, which
            # was copied already; take the bracket and what follows.
            ob = _OBFUSCATED.match(text, j)
            if ob is not None:
                word = (ob["a1"] or ob["a2"] or ob["a3"]).lower()
                emit("@" if word == "at" else ".", j, ob.end())
                groups.add(j)
                i = ob.end()
                continue
            emit(ch, j, j + 1)
            i = j + 1
            continue
        k = j + 1
        while k < n and (unicodedata.combining(text[k]) or _invisible_mark(text[k])):
            k += 1
        emit(_normalize_char(text[j:k]), j, k)
        i = k
    if i < n:
        chars.append(text[i:])
        starts.extend(range(i, n))
        ends.extend(range(i + 1, n + 1))
    out = "".join(chars)
    if groups:
        out = _strip_obfuscation_spaces(out, starts, ends, groups)
    return NormalizedText(out, starts, ends, n)


def _invisible_mark(ch: str) -> bool:
    # Variation selectors and the grapheme joiner are category Mn but not "combining"
    # in unicodedata's sense; keep them in the cluster so they are dropped with it.
    cp = ord(ch)
    return 0xFE00 <= cp <= 0xFE0F or cp == 0x34F or 0xE0100 <= cp <= 0xE01EF


def _strip_obfuscation_spaces(out: str, starts: array[int], ends: array[int],
                              groups: set[int]) -> str:
    """Drop the spaces before an ``[at]``-style group (copied before it was seen);
    ``groups``: the source offsets where such groups start (an ``@`` that is an escape,
    ``\\u0040``, is not one).

    ``john [at] example [dot] com`` → ``john@example.com``: the group itself swallowed
    the spaces after it; here the spaces before ``@``/``.`` that came from such a group
    are removed and their source folded into it, so the map stays monotone.
    """
    keep = [True] * len(out)
    for idx, c in enumerate(out):
        if c not in "@." or starts[idx] not in groups:
            continue
        k = idx - 1
        while k >= 0 and keep[k] and out[k] in " \t" and ends[k] - starts[k] == 1:
            keep[k] = False
            k -= 1
        if k < idx - 1:
            starts[idx] = starts[k + 1]
    if all(keep):
        return out
    kept = [i for i, flag in enumerate(keep) if flag]
    new_starts = array("l", (starts[i] for i in kept))
    new_ends = array("l", (ends[i] for i in kept))
    starts[:] = new_starts
    ends[:] = new_ends
    return "".join(out[i] for i in kept)


# A run of digit groups broken up by spacing separators; it may start with (part of) an
# IBAN head (country code + check digits: "GB82", "G B 8 2") and contain short
# upper-case groups after it, which keeps "GB82 WEST 1234\n5698 7654 32" together (but
# not a word like "IBAN" before it).
_RUN = re.compile(
    r"(?<![A-Za-z0-9])(?:[0-9]{1,6}|[A-Z]{1,2}[0-9]{0,2})"
    r"(?:[ \t\r\n.\-_/|·•()]{1,3}(?:[0-9]{1,6}|[A-Z]{1,4}[0-9]{0,4}))+(?![A-Za-z0-9])")
_SEPARATOR = re.compile(r"[ \t\r\n.\-_/|·•()]+")
_MIN_DIGITS = 7
# A run that is just a date (2024-03-05, 05.03.2024, 3/5/2024) is left alone.
_DATE = re.compile(r"\d{4}([\-./])\d{1,2}\1\d{1,2}|\d{1,2}([\-./])\d{1,2}\2\d{2,4}")


def collapse_separators(text: str) -> NormalizedText | None:
    """Join digits broken up by separators; ``None`` when there is nothing to join.

    Only runs with at least seven digits are joined (shorter ones are versions, prices,
    counts), and not a run that is exactly a date. The result maps back to ``text``'s
    offsets; a removed separator belongs to no character, so a span across it maps to
    the range including it.
    """
    pieces: list[tuple[int, int]] = []  # kept [a, b) ranges of text
    pos = 0
    for run in _RUN.finditer(text):
        body = run.group()
        if sum(c.isdigit() for c in body) < _MIN_DIGITS or _DATE.fullmatch(body):
            continue
        a = run.start()
        for sep in _SEPARATOR.finditer(body):
            pieces.append((pos, a + sep.start()))
            pos = a + sep.end()
    if not pieces:
        return None
    pieces.append((pos, len(text)))
    chars: list[str] = []
    starts = array("l")
    ends = array("l")
    for a, b in pieces:
        chars.append(text[a:b])
        starts.extend(range(a, b))
        ends.extend(range(a + 1, b + 1))
    return NormalizedText("".join(chars), starts, ends, len(text))
