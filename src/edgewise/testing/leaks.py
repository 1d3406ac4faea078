"""Did a sensitive value cross a boundary? A strict check for tests and benchmarks.

``leaked(value, received)`` searches ``received`` (what an upstream got: JSON bodies, say)
for ``value`` in every spelling the privacy guard is meant to see through, so a guard
cannot "pass" by letting a value out in a form the check does not recognise:

- Unicode compatibility forms (full-width digits → ASCII: NFKC), Cyrillic/Greek
  look-alike letters, zero-width and other invisible characters;
- JSON ``\\uXXXX`` escapes, however many times the backslash itself was escaped, and
  literal ``\\n``/``\\t``/``\\r`` (they read as breaks: ``\\nShawn`` holds the name Shawn);
- numbers with separators: a value made of digits (and spaces/dashes) leaks if its
  digits appear as one run in ``received`` once spaces, dashes, dots, slashes,
  parentheses, ``+`` and invisible characters are removed from digit runs;
- other values: case-insensitive, as a whole word when they start and end with a word
  character (so the name "Al" is not found inside "Alice"), and also with whitespace
  squeezed out (``D E 8 9…``).
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

__all__ = ["leaked", "normalize_received", "strings_of"]

_LOOKALIKE = str.maketrans("аеорсхуіїАЕОРСХІΑΒΕΗΙΚΜΝΟΡΤΧΥΖον",
                           "aeopcxyiiAEOPCXIABEHIKMNOPTXYZov")
_INVISIBLE = re.compile(r"[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_DIGIT_RUN = re.compile(r"[\d\s\-./()+]{6,}")
_SEPARATORS = re.compile(r"[\s\-./()+]")


def strings_of(obj: Any) -> str:
    """Every string in a JSON value (keys too), one per line — what a model upstream
    would actually read. A string that is itself JSON (tool-call arguments) is walked as
    well, so its escapes are decoded."""
    out: list[str] = []

    def walk(x: Any, depth: int) -> None:
        if isinstance(x, str):
            out.append(x)
            if depth < 4 and x[:1] in "{[":
                try:
                    inner = json.loads(x)
                except ValueError:
                    return
                walk(inner, depth + 1)
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(k, depth)
                walk(v, depth)
        elif isinstance(x, list):
            for v in x:
                walk(v, depth)

    walk(obj, 0)
    return "\n".join(out)


def normalize_received(received: str) -> str:
    """``received`` with escapes decoded and look-alikes, invisibles and compatibility
    forms mapped to plain ASCII where they have one."""
    text = re.sub(r"\\+u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), received)
    text = re.sub(r"\\+[ntr]", " ", text)  # a literal "\n" reads as a line break
    text = unicodedata.normalize("NFKC", text).translate(_LOOKALIKE)
    return _INVISIBLE.sub("", text)


def _digit_runs(text: str) -> list[str]:
    return [_SEPARATORS.sub("", run) for run in _DIGIT_RUN.findall(text)]


def leaked(value: str, received: str, *, normalized: str | None = None) -> bool:
    """Whether ``value`` appears in ``received`` in any spelling above.

    Pass ``normalized=normalize_received(received)`` when checking many values against
    one text.
    """
    value = normalize_received(value).strip()
    if not value:
        return False
    text = normalize_received(received) if normalized is None else normalized
    digits = re.sub(r"\D", "", value)
    if digits and len(digits) >= 6 and not re.sub(r"[\d\s\-./()+]", "", value):
        return any(digits in run for run in _digit_runs(text))
    pattern = re.escape(value)
    if value[0].isalnum() or value[0] == "_":
        pattern = r"(?<![\w])" + pattern
    if value[-1].isalnum() or value[-1] == "_":
        pattern += r"(?![\w])"
    if re.search(pattern, text, re.IGNORECASE):
        return True
    squeezed = re.sub(r"\s", "", value)
    return len(squeezed) >= 8 and squeezed.casefold() in re.sub(r"\s", "", text).casefold()
