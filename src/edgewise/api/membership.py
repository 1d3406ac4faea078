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
import dataclasses
import logging
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from edgewise.engines import Engine, engine_factory
from edgewise.errors import EdgewiseError
from edgewise.fleet.member import FleetMember, with_central
from edgewise.fleet.state import StoredConfig
from edgewise.fleet.stats import HeartbeatStats
from edgewise.fleet.updates import ModelFollower
from edgewise.node import Node, engine_config, resolve_engine_model
from edgewise.routing.service import Router
from edgewise.security.audit_record import AuditRecord
from edgewise.supply.data import Example
from edgewise.supply.probe import ProbeScore, load_probe_set, probe_accuracy
from edgewise.tiers.fleet import Fleet

__all__ = ["NodeInstaller", "config_applier", "heartbeat_report", "model_follower"]

log = logging.getLogger("edgewise.fleet")


def heartbeat_report(node: Node, router_of: Callable[[], Router]) -> Callable[[], dict[str, Any]]:
    """The heartbeat fields of this node (see :class:`~edgewise.fleet.agent.NodeAgent`)."""
    stats = HeartbeatStats(node.metrics, energy_per_token_j={
        t.name: t.energy_per_token_j for t in node.config.ladder()}, by_model=True)

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


def model_follower(node: Node, member: FleetMember, router_of: Callable[[], Router]
                   ) -> ModelFollower | None:
    """The node's follower of ``fleet.update.model`` (``None``: it takes no updates):
    an installed release is served by swapping in an engine built from it (the variant
    that fits this machine best, ``model: auto``); its decisions go to the audit log."""
    cfg = node.config.fleet.update
    if cfg.model is None or not member.state.tuf_root_file.is_file():
        return None
    audit = _update_audit(node, member, router_of)
    return ModelFollower(member.state, cfg, control_url=member.membership.control_url,
                         client_tls=member.client_tls,
                         installer=NodeInstaller(node, cfg.model), audit=audit)


class NodeInstaller:
    """:class:`~edgewise.fleet.updates.Installer` for this node's engine. A release
    serves under the version label ``NAME@VERSION`` (metrics, heartbeats ``by_model``)."""

    def __init__(self, node: Node, model: str) -> None:
        self.node = node
        self.model = model

    def label(self, version: int | str) -> str:
        return f"{self.model}@{version}"

    def _engine(self, folder: Path) -> Engine:
        ec = dataclasses.replace(engine_config(self.node.config), model="auto",
                                 artifacts=str(folder))
        return engine_factory(ec.kind)(ec, lambda: resolve_engine_model(ec))

    async def serve(self, folder: Path, version: int) -> None:
        await self.node.swap(self._engine(folder), label=self.label(version))

    async def split(self, folder: Path, version: int, share: float) -> None:
        label = self.label(version)
        b = self.node.serving_b
        if b is not None and b.label == label:
            self.node.set_split_share(share)
            return
        await self.node.split(self._engine(folder), share=share, label=label)

    async def unsplit(self, keep_new: bool) -> None:
        await self.node.unsplit("b" if keep_new else "a")

    async def probe(self, probes: Path, new: Path, old: Path) -> dict[str, Any]:
        """Score the probe set on both versions: each on the engine serving it, if it
        serves (its worker thread: no second copy in memory; during an A/B split both
        do), else loaded for the probe from its kept folder and freed after."""
        examples = await asyncio.to_thread(load_probe_set, probes)
        new_score = await self._score(new, examples)
        old_score = await self._score(old, examples)
        return {"n": new_score.n, "accuracy": new_score.accuracy,
                "incumbent_accuracy": old_score.accuracy}

    async def _score(self, folder: Path, examples: list[Example]) -> ProbeScore:
        serving = next((s for s in self.node.servings if s.label == self.label(folder.name)),
                       None)
        if serving is not None:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(serving.executor, probe_accuracy,
                                              serving.engine, examples)
        engine = self._engine(folder)

        def run() -> ProbeScore:
            engine.load()
            try:
                return probe_accuracy(engine, examples)
            finally:
                engine.close()

        return await asyncio.to_thread(run)


def _update_audit(node: Node, member: FleetMember, router_of: Callable[[], Router]
                  ) -> Callable[[str, str], Awaitable[None]]:
    async def audit(outcome: str, reason: str) -> None:
        router = router_of()
        if router.audit is None:
            return
        rec = AuditRecord(requester=member.membership.spiffe_id,
                          request_id=f"upd-{uuid.uuid4().hex[:16]}", route="fleet/update",
                          node=node.name, outcome=outcome, reason=" ".join(reason.split()))
        with contextlib.suppress(EdgewiseError, ValueError):
            await asyncio.to_thread(router.audit.append, rec)

    return audit


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
