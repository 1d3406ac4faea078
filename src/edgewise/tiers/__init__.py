"""Tier endpoints (local engine, remote OpenAI-compatible servers) and the fleet."""

from edgewise.tiers.base import ChatAnswer, ChatRequest, Delta, Endpoint, EndpointError

__all__ = ["ChatAnswer", "ChatRequest", "Delta", "Endpoint", "EndpointError"]
