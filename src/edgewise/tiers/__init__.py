"""Tier endpoints (local engine, remote OpenAI-compatible servers), their health, and
the fleet."""

from edgewise.tiers.base import Endpoint, EndpointError, TierView
from edgewise.tiers.breaker import BreakerState, CircuitBreaker, LatencyEstimate

__all__ = ["BreakerState", "CircuitBreaker", "Endpoint", "EndpointError", "LatencyEstimate",
           "TierView"]
