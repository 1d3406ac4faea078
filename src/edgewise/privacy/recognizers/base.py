"""One shape for edgewise's regex recognizers: rules with value groups and context windows.

Presidio's ``PatternRecognizer`` reports the whole match and boosts scores from the
lemmas of the five words before it, which needs the spaCy pipeline. Edgewise's rules
instead name the group that holds the value (``MRN: 12345678`` reports ``12345678``),
and look for their context words in a character window around the match with a plain
regular expression, so they run the same on the cheap views (collapsed digits, message
junctions) that never go through spaCy. The rule computes its own score, and the
recognizer declares no Presidio context, so Presidio's enhancer leaves it alone.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from presidio_analyzer import LocalRecognizer, RecognizerResult

__all__ = ["RegexRecognizer", "Rule", "luhn_ok", "shannon_entropy", "words"]


def words(terms: Iterable[str]) -> re.Pattern[str]:
    """A case-insensitive regex matching any of ``terms`` as whole words."""
    alts = sorted({re.escape(t) for t in terms}, key=len, reverse=True)
    return re.compile(r"(?<![A-Za-z0-9])(?:" + "|".join(alts) + r")(?![A-Za-z0-9])",
                      re.IGNORECASE)


@dataclass(frozen=True)
class Rule:
    """One regular expression for one entity type."""

    entity: str
    name: str
    regex: re.Pattern[str]
    #: Score without context (0: the rule only counts with context).
    score: float
    #: Which group holds the value (0: the whole match).
    group: int | str = 0
    #: Context words; found within the window, the score becomes ``context_score``.
    context: re.Pattern[str] | None = None
    context_score: float = 0.0
    #: Characters before / after the value searched for context.
    window: tuple[int, int] = (48, 16)
    #: Extra check of the value (checksums, entropy); False drops the match.
    validate: Callable[[str], bool] | None = None


class RegexRecognizer(LocalRecognizer):
    """A Presidio recognizer made of :class:`Rule` objects."""

    def __init__(self, name: str, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        self.recognizer_name = name
        entities = sorted({r.entity for r in self.rules})
        super().__init__(supported_entities=entities, name=name, supported_language="en",
                         context=[])

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None,
                ) -> list[RecognizerResult]:
        wanted = set(entities) if entities else set(self.supported_entities)
        results: list[RecognizerResult] = []
        for rule in self.rules:
            if rule.entity not in wanted:
                continue
            for m in rule.regex.finditer(text):
                start, end = m.span(rule.group)
                if start < 0 or start == end:
                    continue
                value = text[start:end]
                if rule.validate is not None and not rule.validate(value):
                    continue
                score = rule.score
                if rule.context is not None and score < rule.context_score:
                    before, after = rule.window
                    lo, hi = max(0, m.start() - before), min(len(text), m.end() + after)
                    # Context inside the value itself does not count ("key" in a key).
                    if (rule.context.search(text, lo, start)
                            or rule.context.search(text, end, hi)):
                        score = rule.context_score
                if score <= 0:
                    continue
                results.append(RecognizerResult(
                    entity_type=rule.entity, start=start, end=end, score=score,
                    recognition_metadata={
                        RecognizerResult.RECOGNIZER_NAME_KEY: self.recognizer_name,
                        RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                        "rule": rule.name,
                    }))
        return results


def luhn_ok(value: str) -> bool:
    """The Luhn (mod 10) checksum of the digits in ``value``."""
    digits = [int(c) for c in value if c.isdigit()]
    if len(digits) < 2:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def shannon_entropy(value: str) -> float:
    """Bits per character of ``value``'s character distribution."""
    if not value:
        return 0.0
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())
