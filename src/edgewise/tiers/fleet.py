"""The fleet as this node sees it: every tier's endpoints, their breakers and latency
estimates, active health probes, and load balancing within a tier."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

import httpx

from edgewise.config import EdgewiseConfig, TierConfig
from edgewise.errors import ConfigError
from edgewise.node import Node
from edgewise.security.peers import PeerRule, PeerTLS
from edgewise.tiers.base import Endpoint, EndpointError, TierView
from edgewise.tiers.breaker import BreakerState
from edgewise.tiers.local import LocalEndpoint
from edgewise.tiers.remote import RemoteEndpoint
from edgewise.tiers.speculative import SpeculativeEndpoint

__all__ = ["Fleet"]

log = logging.getLogger("edgewise.fleet")


class Fleet:
    def __init__(self, config: EdgewiseConfig, node: Node | None, *,
                 transports: dict[str, httpx.AsyncBaseTransport] | None = None,
                 rng: random.Random | None = None, peer_tls: PeerTLS | None = None) -> None:
        """``transports`` maps an endpoint URL to the httpx transport to reach it
        (tests: ``httpx.ASGITransport`` of another node; default: the network).
        ``peer_tls``: a joined node's mutual TLS, for endpoints whose ``peer`` names a
        fleet node or tier."""
        self.config = config
        self.health = config.routing.health
        self.tiers: list[TierConfig] = config.ladder()
        self.endpoints: dict[str, list[Endpoint]] = {}
        self.rng = rng or random.Random(0)
        transports = transports or {}
        for tier in self.tiers:
            eps: list[Endpoint] = []
            for ep in tier.endpoints:
                if ep.engine is not None:
                    if node is None:
                        raise ValueError("a local endpoint needs the node's engine")
                    eps.append(LocalEndpoint(tier.name, node))
                else:
                    assert ep.url is not None
                    transport = transports.get(ep.url)
                    if ep.peer is not None and transport is None:
                        if peer_tls is None:
                            raise ConfigError(
                                f"tier {tier.name!r} endpoint {ep.url} names fleet peer "
                                f"{ep.peer}, but this node has not joined a fleet "
                                "(`edgewise join`, fleet.state_dir)")
                        transport = peer_tls.transport(PeerRule.parse(ep.peer))
                    if ep.verify:
                        if node is None:
                            raise ValueError("a verify endpoint drafts with the node's engine")
                        eps.append(SpeculativeEndpoint(tier.name, ep, self.health, node,
                                                       timeout=tier.timeout,
                                                       transport=transport))
                        continue
                    eps.append(RemoteEndpoint(tier.name, ep, self.health, timeout=tier.timeout,
                                              transport=transport))
            self.endpoints[tier.name] = eps
        self._probe_task: asyncio.Task[None] | None = None

    @property
    def serves_tools(self) -> bool:
        """Whether any tier of this node can call functions (a remote one)."""
        return any(e.tools for eps in self.endpoints.values() for e in eps)

    @property
    def local(self) -> LocalEndpoint | None:
        """This node's own engine, as a tier endpoint."""
        return next((e for eps in self.endpoints.values() for e in eps
                     if isinstance(e, LocalEndpoint)), None)

    def tier(self, name: str) -> TierConfig:
        return next(t for t in self.tiers if t.name == name)

    def views(self, max_tokens: int) -> list[TierView]:
        """Every tier as the router sees it now; ``max_tokens`` (the expected answer
        length) sizes the latency estimates."""
        views = []
        for t in self.tiers:
            eps = self.endpoints[t.name]
            ready = [e for e in eps if e.ready()]
            estimates = [x for e in ready if (x := e.latency.expected_s(max_tokens)) is not None]
            down = None
            if not ready:
                errors = [e.breaker.last_error for e in eps if e.breaker.last_error]
                down = "breaker open" + (f": {errors[0]}" if errors else "") if any(
                    e.breaker.state is not BreakerState.CLOSED for e in eps) else next(
                    (e.why_not_ready() for e in eps if isinstance(e, LocalEndpoint)),
                    "not ready")
            windows = [w for w in (t.max_context, *(e.n_ctx() for e in eps
                                                    if isinstance(e, LocalEndpoint)
                                                    and e.ready())) if w is not None]
            views.append(TierView(
                name=t.name, clearance=t.clearance, cost_per_1k_tokens=t.cost_per_1k_tokens,
                energy_per_token_j=t.energy_per_token_j,
                max_context=min(windows) if windows else None,
                models=tuple(m for e in eps for m in e.models), available=len(ready),
                expected_s=min(estimates) if estimates else None, down_reason=down,
                escalation=t.escalation, tools=all(e.tools for e in eps)))
        return views

    def pick(self, tier: str) -> Endpoint | None:
        """A ready endpoint of ``tier``, weighted by config weight over expected latency;
        claims the breaker's half-open trial if that is what lets it through."""
        ready = [e for e in self.endpoints[tier] if e.ready()]
        if not ready:
            return None
        weights = []
        for e in ready:
            w = getattr(getattr(e, "cfg", None), "weight", 1.0)
            est = e.latency.expected_s(64)
            weights.append(w / est if est else w)
        chosen = self.rng.choices(ready, weights=weights)[0]
        return chosen if chosen.breaker.acquire() else None

    async def probe_once(self) -> None:
        """Probe every remote endpoint: a failed probe opens its breaker at once; a good
        probe closes a half-open one (the tier is back)."""
        remotes = [e for eps in self.endpoints.values() for e in eps
                   if isinstance(e, RemoteEndpoint)]

        async def one(e: RemoteEndpoint) -> None:
            try:
                await e.probe()
            except EndpointError as exc:
                if e.breaker.state is not BreakerState.OPEN:
                    log.warning("tier %s endpoint %s down: %s", e.tier, e.label, exc)
                e.breaker.trip(str(exc))
                return
            if e.breaker.state is not BreakerState.CLOSED:
                log.info("tier %s endpoint %s is back", e.tier, e.label)
                e.breaker.record_success()

        await asyncio.gather(*(one(e) for e in remotes))

    async def _probe_loop(self) -> None:
        while True:
            await self.probe_once()
            await asyncio.sleep(self.health.probe_interval_s)

    def start(self) -> None:
        if self._probe_task is None and any(
                isinstance(e, RemoteEndpoint) for eps in self.endpoints.values() for e in eps):
            self._probe_task = asyncio.create_task(self._probe_loop())

    async def stop(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
            self._probe_task = None
        for eps in self.endpoints.values():
            for e in eps:
                await e.aclose()
