"""A joined node's app side of fleet membership: what its heartbeats report, and how a
central config is applied to the running app (the node agent calls both).

Applying a config (:func:`config_applier`): the central ``tiers`` / ``routing`` /
``privacy`` sections replace the node's own, the result is validated exactly as the
node's YAML would be, and a new :class:`~edgewise.tiers.fleet.Fleet` is built (that checks
tier URLs, API-key variables and fleet peers). Only then does the router switch to it
(:meth:`~edgewise.routing.service.Router.reconfigure`); requests in flight finish on the
previous fleet, which is closed once they have had ``drain_s`` to do so. A config that
fails any step is rejected with its one-line reason and the node keeps the last good one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from edgewise.errors import EdgewiseError
from edgewise.fleet.member import FleetMember, with_central
from edgewise.fleet.state import StoredConfig
from edgewise.fleet.stats import HeartbeatStats
from edgewise.node import Node
from edgewise.routing.service import Router
from edgewise.tiers.fleet import Fleet

__all__ = ["config_applier", "heartbeat_report"]

log = logging.getLogger("edgewise.fleet")


def heartbeat_report(node: Node, router_of: Callable[[], Router]) -> Callable[[], dict[str, Any]]:
    """The heartbeat fields of this node (see :class:`~edgewise.fleet.agent.NodeAgent`)."""
    stats = HeartbeatStats(node.metrics, energy_per_token_j={
        t.name: t.energy_per_token_j for t in node.config.ladder()})

    def report() -> dict[str, Any]:
        router = router_of()
        stats.energy_per_token_j = {t.name: t.energy_per_token_j for t in router.fleet.tiers}
        s = stats.read()
        routed = s.pop("routed")
        tiers = {}
        for name, endpoints in router.fleet.endpoints.items():
            states = [e.breaker.state.value for e in endpoints]
            worst = "open" if "open" in states else "half_open" if "half_open" in states \
                else "closed"
            tiers[name] = {"breaker": worst, "requests": routed.get(name, 0)}
        model = digest = None
        if node.ready:
            info = node.info
            model = info.model
            digest = info.sha256 if len(info.sha256) == 64 else None
        head = router.audit.head() if router.audit is not None else None
        return {**s, "model": model, "model_digest": digest, "tiers": tiers,
                "queue_depth": node.admission.waiting if node.admission else 0,
                "audit_head": f"{head[0]}:{head[1][:16]}" if head else None}

    return report


def config_applier(node: Node, app_state: Any, member: FleetMember, *,
                   transports: dict[str, httpx.AsyncBaseTransport] | None = None,
                   drain_s: float = 60.0) -> Callable[[StoredConfig], Awaitable[str | None]]:
    """The agent's ``apply_config`` for this app (module docstring)."""
    retired: set[asyncio.Task[None]] = set()

    async def close_later(fleet: Fleet) -> None:
        await asyncio.sleep(drain_s)
        with contextlib.suppress(Exception):
            await fleet.stop()

    async def apply(stored: StoredConfig) -> str | None:
        source = f"central config {stored.target} v{stored.version}"
        try:
            cfg = with_central(node.config, stored.body, source=source)
            fleet = Fleet(cfg, node, transports=transports, peer_tls=member.peer_tls)
        except EdgewiseError as exc:
            return " ".join(str(exc).split())  # one line
        router: Router = app_state.router
        old = router.reconfigure(cfg, fleet)
        node.config = cfg
        task = asyncio.create_task(close_later(old))
        retired.add(task)
        task.add_done_callback(retired.discard)
        return None

    return apply
