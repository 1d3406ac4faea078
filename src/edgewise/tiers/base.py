"""The Endpoint protocol that local engines and remote OpenAI-compatible servers both
implement, and :class:`TierView`, what the (pure) router may know about a tier."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from edgewise.chat import ChatAnswer, ChatRequest, Delta
from edgewise.errors import EdgewiseError
from edgewise.levels import Level
from edgewise.tiers.breaker import CircuitBreaker, LatencyEstimate

__all__ = ["Endpoint", "EndpointError", "TierView"]


class EndpointError(EdgewiseError):
    """A tier endpoint failed (unreachable, timed out, 5xx) or could not take the request
    now (the local queue is full): fail over, count it in the breaker. The message names
    the endpoint, never request content. ``cause``: for this node's own engine, what
    went wrong (its queue is full: 429; it is draining: 503; the engine failed: 500),
    returned to the client as is when no other tier was there to answer."""

    def __init__(self, message: str, *, cause: EdgewiseError | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class Endpoint(Protocol):
    tier: str
    label: str
    breaker: CircuitBreaker
    latency: LatencyEstimate

    @property
    def models(self) -> tuple[str, ...]:
        """Model names this endpoint answers to (for ``model: "<name>"`` steering)."""

    @property
    def tools(self) -> bool:
        """Whether this endpoint can serve function calling."""

    def ready(self) -> bool:
        """Whether the endpoint can take a request now (breaker and local state)."""

    async def chat(self, req: ChatRequest) -> ChatAnswer:
        """Answer in full; raise :class:`EndpointError` if the endpoint failed."""

    def stream(self, req: ChatRequest) -> AsyncIterator[Delta]:
        """Answer piece by piece; the last item is a ``Delta`` with ``final`` set."""

    async def probe(self) -> None:
        """A cheap health check; raise :class:`EndpointError` when unhealthy."""

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class TierView:
    """What the router may know about a tier right now (pure data)."""

    name: str
    clearance: Level
    cost_per_1k_tokens: float = 0.0
    energy_per_token_j: float = 0.0
    #: Largest prompt + completion the tier accepts (``None``: unknown, no limit).
    max_context: int | None = None
    #: Model names the tier's endpoints serve (for ``model: "<name>"`` steering).
    models: tuple[str, ...] = ()
    #: Endpoints whose breaker lets a request through now.
    available: int = 1
    #: Live estimate of seconds for this request (None: unknown).
    expected_s: float | None = None
    #: Why the tier is down, for the reason string (e.g. "breaker open").
    down_reason: str | None = None
    #: Policy for requests above its clearance: ``forbid``, ``redact`` or ``allow``.
    escalation: str = "forbid"
    #: Whether the tier serves function calling (remote tiers and a local engine that
    #: constrains decoding do; the fake engine does not).
    tools: bool = False
