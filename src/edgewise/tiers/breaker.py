"""Per-endpoint health: a circuit breaker and live latency estimates.

Circuit breaker (Nygard, *Release It!*)::

    CLOSED --(failure_threshold consecutive failures)--> OPEN
    OPEN   --(cooldown elapsed)--> HALF_OPEN   (one trial request or probe allowed)
    HALF_OPEN --success--> CLOSED      HALF_OPEN --failure--> OPEN (cooldown restarts)

An OPEN endpoint is skipped by the router at no cost — no request is spent
rediscovering that it is down. The cooldown equals the health-probe interval, so a dead
tier stops receiving traffic within one probe interval and a recovered one is tried
again within one more.

Latency: EWMA of time-to-first-token and of decode tokens/s, ``x ← α·new + (1-α)·x``.
Written by hand: the breaker libraries on PyPI (pybreaker, aiobreaker) have no
half-open probe hook or injectable clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["BreakerState", "CircuitBreaker", "LatencyEstimate"]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(self, *, failure_threshold: int = 3, cooldown_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._state = BreakerState.CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self._trial_in_flight = False
        self.last_error: str | None = None

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self.clock() - self.opened_at >= self.cooldown_s:
            self._state = BreakerState.HALF_OPEN
            self._trial_in_flight = False
        return self._state

    def available(self) -> bool:
        """Whether a request may be sent now (without claiming the half-open trial)."""
        state = self.state
        return state is BreakerState.CLOSED or (
            state is BreakerState.HALF_OPEN and not self._trial_in_flight)

    def acquire(self) -> bool:
        """Claim permission to send one request; in HALF_OPEN only one trial at a time."""
        if not self.available():
            return False
        if self._state is BreakerState.HALF_OPEN:
            self._trial_in_flight = True
        return True

    def record_success(self) -> None:
        self.failures = 0
        self._state = BreakerState.CLOSED
        self._trial_in_flight = False
        self.last_error = None

    def trip(self, error: str) -> None:
        """Open at once (a failed active probe is conclusive: nothing is listening)."""
        self.last_error = error
        self.failures = max(self.failures, self.failure_threshold)
        self._state = BreakerState.OPEN
        self.opened_at = self.clock()
        self._trial_in_flight = False

    def record_failure(self, error: str) -> None:
        self.last_error = error
        self.failures += 1
        if self._state is BreakerState.HALF_OPEN or self.failures >= self.failure_threshold:
            self._state = BreakerState.OPEN
            self.opened_at = self.clock()
            self._trial_in_flight = False


@dataclass
class LatencyEstimate:
    """EWMA of TTFT (s) and decode speed (tokens/s); ``None`` until first observed."""

    alpha: float = 0.3
    ttft_s: float | None = None
    tokens_per_s: float | None = None

    def observe(self, ttft_s: float | None, tokens_per_s: float | None) -> None:
        if ttft_s is not None and ttft_s >= 0:
            self.ttft_s = ttft_s if self.ttft_s is None else (
                self.alpha * ttft_s + (1 - self.alpha) * self.ttft_s)
        if tokens_per_s is not None and tokens_per_s > 0:
            self.tokens_per_s = tokens_per_s if self.tokens_per_s is None else (
                self.alpha * tokens_per_s + (1 - self.alpha) * self.tokens_per_s)

    def expected_s(self, max_tokens: int) -> float | None:
        """Expected time for an answer of ``max_tokens`` (None: no data yet)."""
        if self.ttft_s is None or self.tokens_per_s is None:
            return None
        return self.ttft_s + max_tokens / self.tokens_per_s
