"""The operator's own recognizers from the config: ``privacy.patterns`` and ``deny_lists``.

Both become Presidio ``PatternRecognizer`` objects, so they run with Presidio's regex
engine (the ``regex`` module, with a per-match timeout) and its context enhancement:
a pattern's ``context`` words among the five words before a match raise its score by
0.35. Patterns are case-sensitive unless they say ``(?i)``; deny-list terms match as
whole words, ignoring case.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import regex
from presidio_analyzer import Pattern, PatternRecognizer

from edgewise.config import DenyListConfig, PatternConfig
from edgewise.errors import ConfigError

__all__ = ["deny_list_recognizers", "pattern_recognizers"]

_PATTERN_FLAGS = re.DOTALL | re.MULTILINE


def pattern_recognizers(patterns: Sequence[PatternConfig]) -> list[PatternRecognizer]:
    """One recognizer per ``privacy.patterns`` entry.

    Raises:
        ConfigError: a regex Python accepts but Presidio's ``regex`` engine does not.
    """
    out = []
    for i, p in enumerate(patterns):
        try:
            regex.compile(p.regex, flags=_PATTERN_FLAGS)
        except regex.error as exc:
            raise ConfigError(f"privacy.patterns[{i}].regex: not a valid regular "
                              f"expression for Presidio's regex engine: {exc}") from exc
        out.append(PatternRecognizer(
            supported_entity=p.entity, name=f"EdgewisePattern{i}_{p.entity}",
            patterns=[Pattern(name=f"privacy.patterns[{i}]", regex=p.regex, score=p.score)],
            context=list(p.context), global_regex_flags=_PATTERN_FLAGS))
    return out


def deny_list_recognizers(deny_lists: Sequence[DenyListConfig]) -> list[PatternRecognizer]:
    """One recognizer per ``privacy.deny_lists`` entry (whole words, any case)."""
    return [PatternRecognizer(supported_entity=d.entity, name=f"EdgewiseDenyList{i}_{d.entity}",
                              deny_list=list(d.terms), deny_list_score=1.0,
                              global_regex_flags=re.DOTALL | re.MULTILINE | re.IGNORECASE)
            for i, d in enumerate(deny_lists)]
