"""Routing: which tier answers a request, and when to escalate."""

from edgewise.routing.confidence import SCORERS, register_scorer, score
from edgewise.routing.policy import Decision, RouteRequest, route

__all__ = ["SCORERS", "Decision", "RouteRequest", "register_scorer", "route", "score"]
