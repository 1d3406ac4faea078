"""Drafters: what proposes the tokens a target model then verifies in one pass.

A drafter is made per sequence (:func:`make_drafter`), is told every token of the
sequence as it is fixed (the prompt at the start, then each accepted or sampled token:
:meth:`Drafter.extend`), and proposes up to ``k`` tokens to follow (:meth:`Drafter.draft`).
A draft is a list of token ids and, for a drafter that samples from a distribution of
its own, that distribution at each drafted position (``q``) — what the speculative
sampling rule needs to stay exact (:mod:`edgewise.decoding.verify`); a drafter that
proposes deterministically (``prompt_lookup``) leaves ``q`` empty: a point mass.

``prompt_lookup``: the continuation of the most recent earlier occurrence of the last
``n`` tokens (``n`` from ``ngram_max`` down to ``ngram_min``) in the prompt and the text
generated so far — copying from the input is what summaries, extraction, RAG answers
and code edits do. Written by hand (it is a dictionary of n-gram positions, updated per
token): llama-cpp-python's ``LlamaPromptLookupDecoding`` re-scans the whole context
with numpy on every call and needs the ``logits_all`` path.

Drafters register by name (:func:`register_drafter`); ``model`` (a small model with the
target's tokenizer) lives in :mod:`edgewise.decoding.model_drafter`, since it needs
llama.cpp.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = ["Draft", "Drafter", "NoDraft", "PromptLookup", "drafter_names", "make_drafter",
           "register_drafter"]


@dataclass
class Draft:
    """Proposed tokens, and the drafter's distribution at each of them (empty: each
    token was proposed with certainty)."""

    tokens: list[int]
    q: list[np.ndarray] = field(default_factory=list)
    #: Seconds the drafter spent reading a long stretch of the sequence (a draft
    #: model's first look at the prompt) — not a cost of drafting these tokens.
    catch_up_s: float = 0.0


class Drafter(Protocol):
    """One sequence's drafter (module docstring)."""

    def extend(self, tokens: Sequence[int]) -> None:
        """Tokens now fixed at the end of the sequence (the prompt first)."""

    def draft(self, k: int) -> Draft:
        """Up to ``k`` tokens to follow the sequence (none: nothing worth verifying)."""

    def close(self) -> None:
        """Free what the drafter holds (a draft model's KV cells)."""


class NoDraft:
    """A drafter that never proposes anything (a sequence with no draft slot free, or
    one whose draft comes from elsewhere)."""

    def extend(self, tokens: Sequence[int]) -> None:
        pass

    def draft(self, k: int) -> Draft:
        return Draft([])

    def close(self) -> None:
        pass


class PromptLookup:
    """The ``prompt_lookup`` drafter (module docstring). ``ngram_max`` ≥ ``ngram_min``
    ≥ 1; the longest n-gram that occurred before wins, and among its occurrences the
    most recent one."""

    def __init__(self, *, ngram_max: int = 3, ngram_min: int = 1) -> None:
        if not 1 <= ngram_min <= ngram_max:
            raise ValueError("prompt_lookup needs 1 <= ngram_min <= ngram_max")
        self.ngram_max = ngram_max
        self.ngram_min = ngram_min
        self._tokens: list[int] = []
        #: n-gram → the position right after its latest occurrence that is not the
        #: sequence's current end (the previous one is kept aside in ``_last``).
        self._next: dict[tuple[int, ...], int] = {}
        self._last: dict[tuple[int, ...], int] = {}

    def extend(self, tokens: Sequence[int]) -> None:
        for t in tokens:
            self._tokens.append(t)
            end = len(self._tokens)
            for n in range(self.ngram_min, min(self.ngram_max, end) + 1):
                gram = tuple(self._tokens[end - n:end])
                prev = self._last.get(gram)
                if prev is not None:
                    self._next[gram] = prev  # an occurrence with tokens after it
                self._last[gram] = end

    def draft(self, k: int) -> Draft:
        toks = self._tokens
        end = len(toks)
        for n in range(min(self.ngram_max, end), self.ngram_min - 1, -1):
            after = self._next.get(tuple(toks[end - n:]))
            if after is not None and after < end:
                return Draft(toks[after:min(after + k, end)])
        return Draft([])

    def close(self) -> None:
        self._tokens.clear()
        self._next.clear()
        self._last.clear()


#: name → factory(options) of a per-sequence drafter. A factory may need the engine
#: (a draft model loads once per engine): it gets the engine's ``context`` object too.
DrafterFactory = Callable[[dict[str, Any], Any], Drafter]
_DRAFTERS: dict[str, DrafterFactory] = {}


def register_drafter(name: str, factory: DrafterFactory) -> None:
    _DRAFTERS[name] = factory


def drafter_names() -> list[str]:
    return sorted(_DRAFTERS)


def make_drafter(name: str, options: dict[str, Any], context: Any = None) -> Drafter:
    try:
        factory = _DRAFTERS[name]
    except KeyError:
        raise ValueError(f"unknown drafter {name!r}; known: "
                         f"{', '.join(drafter_names())}") from None
    return factory(options, context)


register_drafter("prompt_lookup", lambda opts, _ctx: PromptLookup(
    ngram_max=int(opts.get("ngram_max", 3)), ngram_min=int(opts.get("ngram_min", 1))))
