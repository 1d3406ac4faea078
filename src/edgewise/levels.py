"""Sensitivity levels: the one ordered type for a request's sensitivity and a tier's
clearance.

``public < internal < pii < phi``. A :class:`Level` *is* its lower-case name (a
``StrEnum``), so it reads from YAML and headers and writes to JSON, logs and the audit
log as the plain word, and it compares by rank, so ``max()``, ``<`` and ``sorted()`` do
the right thing::

    >>> Level("pii") > Level.INTERNAL
    True
    >>> max(Level.PUBLIC, Level.parse("phi"))
    <Level.PHI: 'phi'>

What each level means, and which entity types map to which, is in
``edgewise.privacy.levels``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any

__all__ = ["LEVEL_NAMES", "Level"]


class Level(enum.StrEnum):
    """A sensitivity level (of data) or clearance (of a tier), ordered by rank."""

    PUBLIC = "public"
    INTERNAL = "internal"
    PII = "pii"
    PHI = "phi"

    @property
    def rank(self) -> int:
        """Position in the order: public=0 … phi=3."""
        return _RANK[self]

    @classmethod
    def parse(cls, name: Any) -> Level:
        """The level named ``name``; ``ValueError`` naming the valid ones otherwise."""
        if isinstance(name, Level):
            return name
        try:
            return cls(name)
        except ValueError:
            raise ValueError(f"unknown sensitivity level {name!r}; valid levels: "
                             f"{', '.join(LEVEL_NAMES)}") from None

    @classmethod
    def highest(cls, levels: Iterable[Level | str | None]) -> Level:
        """The most sensitive of ``levels`` (``None`` entries ignored; empty → public)."""
        best = cls.PUBLIC
        for lv in levels:
            if lv is not None:
                best = max(best, cls.parse(lv))
        return best

    # Ordered by rank, not alphabetically (a StrEnum would otherwise compare as str).
    def __lt__(self, other: object) -> bool:
        return self.rank < Level.parse(other).rank

    def __le__(self, other: object) -> bool:
        return self.rank <= Level.parse(other).rank

    def __gt__(self, other: object) -> bool:
        return self.rank > Level.parse(other).rank

    def __ge__(self, other: object) -> bool:
        return self.rank >= Level.parse(other).rank

    __hash__ = enum.StrEnum.__hash__


_RANK = {lv: i for i, lv in enumerate(Level)}

#: The level names, least to most sensitive.
LEVEL_NAMES: tuple[str, ...] = tuple(lv.value for lv in Level)
