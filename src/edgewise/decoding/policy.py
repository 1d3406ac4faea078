"""When to speculate, and how far: the draft length from the measured acceptance rate
and the measured cost of verifying, so speculation only runs where it pays.

Costs (:class:`CostModel`, one per engine): the seconds of a plain decode step of one
sequence, of a verify pass over ``r`` rows of one sequence, and of drafting one token,
each an exponential moving average of what the engine timed. Until a cost is measured,
a prior stands in (verifying ``r`` rows costs ``1 + 0.25 (r − 1)`` plain steps — about
what a memory-bound CPU decode shows — and drafting costs nothing).

Acceptance (:class:`Speculation`, one per sequence): ``alpha``, a moving average of the
share of drafted tokens the target kept. With per-token acceptance ``alpha``, a draft
of ``k`` yields ``(1 − alpha^(k+1)) / (1 − alpha)`` tokens per verify pass (Leviathan et
al.); speculating with ``k`` pays when that, divided by the pass's cost in plain steps,
exceeds 1 by a margin. :meth:`Speculation.length` picks the ``k`` (≤ ``k_max``) with
the best ratio, or 0 — decode plainly. A sequence that stopped speculating probes again
(``k`` = 1) after ``probe_after`` plain tokens, doubling the wait after each failed
probe, so a text that turns repetitive later is caught, and open chat costs at most a
rare one-token probe.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CostModel", "Speculation", "SpeculativeOptions"]

@dataclass(frozen=True)
class SpeculativeOptions:
    """How an engine speculates (``engine.speculative`` in the node's config)."""

    #: A registered drafter (:func:`edgewise.decoding.drafters.drafter_names`).
    drafter: str
    #: The drafter's own options (``prompt_lookup``: ``ngram_max``, ``ngram_min``).
    options: dict[str, Any] = field(default_factory=dict)
    #: The longest draft one verify pass checks.
    k_max: int = 8
    #: Speculate only while at most this many sequences are decoding: a verify pass is
    #: a decode call of its own, and every other stream in the batch waits for it.
    max_batch: int = 1
    #: The expected speed-up a draft must promise (:class:`Speculation`).
    margin: float = 1.05
    #: What the engine loaded for the drafter (the ``model`` drafter's
    #: :class:`~edgewise.decoding.model_drafter.DraftModel`), handed to its factory.
    context: Any = None


#: Weight of a new measurement in the moving averages.
_EMA = 0.1


@dataclass
class CostModel:
    """Measured seconds of plain steps, verify passes by rows, and drafted tokens."""

    plain_s: float | None = None
    verify_s: dict[int, float] = field(default_factory=dict)
    draft_token_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def plain(self, seconds: float) -> None:
        with self._lock:
            self.plain_s = seconds if self.plain_s is None else (
                (1 - _EMA) * self.plain_s + _EMA * seconds)

    def verify(self, rows: int, seconds: float) -> None:
        with self._lock:
            old = self.verify_s.get(rows)
            self.verify_s[rows] = seconds if old is None else (1 - _EMA) * old + _EMA * seconds

    def drafted(self, tokens: int, seconds: float) -> None:
        if tokens > 0:
            with self._lock:
                self.draft_token_s = (1 - _EMA) * self.draft_token_s + _EMA * seconds / tokens

    def ratio(self, k: int) -> float:
        """A pass drafting and verifying ``k`` tokens, in plain steps."""
        with self._lock:
            plain, measured = self.plain_s, self.verify_s.get(k + 1)
            draft = self.draft_token_s
        if plain is None or plain <= 0:
            return 1.0 + 0.25 * k
        verify = measured if measured is not None else plain * (1.0 + 0.25 * k)
        return (verify + k * draft) / plain


@dataclass
class Speculation:
    """One sequence's acceptance estimate and draft-length choice (module docstring)."""

    costs: CostModel
    k_max: int = 8
    #: Speculate only when the expected speed-up over plain decoding is at least this.
    margin: float = 1.05
    alpha: float = 0.6
    probe_after: int = 16
    drafted: int = 0
    accepted: int = 0
    passes: int = 0
    _wait: int = 0
    _backoff: int = 0
    _probe: bool = False

    def expected(self, k: int) -> float:
        """Tokens a verify pass of a ``k``-token draft yields, on average."""
        a = min(self.alpha, 0.999)
        return (1 - a ** (k + 1)) / (1 - a)

    def length(self, room: int) -> int:
        """The draft length to ask for now (0: decode plainly); ``room``: the most
        tokens the sequence may still take (budget, KV cells)."""
        limit = min(self.k_max, room)
        if limit <= 0:
            return 0
        if self._wait > 0:
            self._wait -= 1
            return 0
        if self._probe:  # the wait is over: one token, to measure again
            self._probe = False
            return 1
        best, best_gain = 0, self.margin
        for k in range(1, limit + 1):
            gain = self.expected(k) / self.costs.ratio(k)
            if gain > best_gain:
                best, best_gain = k, gain
        if best == 0:  # not worth it now: decode plainly, probe later
            self._backoff = min(max(self.probe_after, 2 * self._backoff), 1024)
            self._wait, self._probe = self._backoff, True
            return 0
        self._backoff = 0
        return best

    def update(self, drafted: int, accepted: int) -> None:
        """What the last verify pass kept."""
        if drafted <= 0:
            return
        self.drafted += drafted
        self.accepted += accepted
        self.passes += 1
        rate = accepted / drafted
        w = min(0.5, 0.15 * drafted)  # a longer draft says more
        self.alpha = (1 - w) * self.alpha + w * rate
