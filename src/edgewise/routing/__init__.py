"""Routing: which tier answers a request, and when to escalate."""

from edgewise.routing.breaker import BreakerState, CircuitBreaker, LatencyEstimate
from edgewise.routing.confidence import SCORERS, register_scorer, score
from edgewise.routing.policy import Decision, RouteRequest, TierView, level, route

__all__ = [
    "SCORERS",
    "BreakerState",
    "CircuitBreaker",
    "Decision",
    "LatencyEstimate",
    "RouteRequest",
    "TierView",
    "level",
    "register_scorer",
    "route",
    "score",
]
