"""The node's ASGI application: OpenAI routes, health and metrics, errors, middleware.

Every node builds its router (``routing/service.py``) — a node without ``tiers`` is a
ladder of one — so every chat request takes the same path. The interactive docs
(``/docs``, ``/redoc``) are served from files inside the installed ``fastapi-offline``
package: they work on a machine with no internet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline

from edgewise import __version__
from edgewise.api.auth import ApiKeys, FleetAuth
from edgewise.api.chat import router as chat_router
from edgewise.api.completions import router as completions_router
from edgewise.api.embeddings import router as embeddings_router
from edgewise.api.errors import install_error_handlers, public_message
from edgewise.api.middleware import AccessLog, BodyLimit, Draining, NodeHeaders
from edgewise.api.models import router as models_router
from edgewise.api.verify import router as verify_router
from edgewise.errors import EdgewiseError
from edgewise.fleet.agent import NodeAgent
from edgewise.fleet.member import FleetMember, with_central
from edgewise.node import Node
from edgewise.privacy.enforce import DetectorLike
from edgewise.routing.service import Router
from edgewise.security.peers import PeerRule
from edgewise.tiers.fleet import Fleet

__all__ = ["create_app"]

log = logging.getLogger("edgewise.node")


def create_app(node: Node, *, manage_lifecycle: bool = True,
               transports: dict[str, httpx.AsyncBaseTransport] | None = None,
               detector: DetectorLike | None = None,
               member: FleetMember | None = None,
               control_transport: httpx.AsyncBaseTransport | None = None) -> FastAPI:
    """Build the app for a node. With ``manage_lifecycle`` the app's lifespan loads the
    engine and starts the router at start-up, and drains and unloads at shutdown (tests
    that drive the app in-process start them by hand). ``transports`` maps upstream
    URLs to httpx transports (tests reach other nodes in-process that way); ``detector``
    is an already-built privacy detector (else the router loads one in the background
    when some tier needs it). ``member``: the fleet membership of a joined node (its
    agent then runs beside the app: heartbeats, renewal, deny list, central config)."""
    agent: NodeAgent | None = None
    if member is not None:
        last = member.state.last_config()
        if last is not None:  # offline first: start with the last good central config
            try:
                node.config = with_central(node.config, last.body, source=(
                    f"central config {last.target} v{last.version}"))
            except EdgewiseError as exc:
                log.warning("not using the last central config (%s); starting with the "
                            "local one", " ".join(str(exc).split()))
    router = Router(node.config, Fleet(node.config, node, transports=transports,
                                       peer_tls=member.peer_tls if member else None),
                    node.metrics, detector=detector)

    async def start() -> None:
        await node.start()
        router.start()
        if agent is not None:
            agent.start()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not manage_lifecycle:
            yield
            return
        # Load in the background: /healthz answers at once, /readyz once loaded.
        loading = asyncio.create_task(start())
        try:
            yield
        finally:
            await loading  # a load in progress cannot be interrupted (it is in a thread)
            if agent is not None:
                await agent.stop()
            await app.state.router.stop()
            await node.stop()

    app = FastAPIOffline(
        title="edgewise node",
        version=__version__,
        description="OpenAI-compatible API of an edgewise node.",
        lifespan=lifespan,
    )
    app.state.node = node
    app.state.router = router
    if member is not None:
        from edgewise.api.membership import config_applier, heartbeat_report, model_follower

        follower = model_follower(node, member, lambda: app.state.router)
        agent = NodeAgent(member.state, report=heartbeat_report(node, lambda: app.state.router),
                          follower=follower,
                          apply_config=config_applier(node, app.state, member,
                                                      transports=transports),
                          server_context=member.server_tls, client_tls=member.client_tls,
                          deny=member.deny, heartbeat_s=node.config.fleet.heartbeat_s,
                          transport=control_transport)
    app.state.agent = agent
    install_error_handlers(app)
    app.include_router(chat_router)
    app.include_router(completions_router)
    app.include_router(embeddings_router)
    app.include_router(models_router)
    app.include_router(verify_router)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness: the process is up and serving HTTP."""
        return {"status": "ok", "node": node.name, "tier": node.tier}

    @app.get("/readyz", responses={503: {"description": "not ready (loading, draining…)"}})
    async def readyz() -> JSONResponse:
        """Readiness: the model is loaded and requests will be answered. ``split``: the
        A/B split in force (labels of versions a and b, b's share of requesters), or
        null."""
        if node.draining:
            reason = "the node is shutting down"
        elif not node.ready:
            reason = node.load_error or "model loading"
        elif not router.guard_ready:
            reason = router.guard_unavailable().message
        elif router.audit_error is not None:
            reason = f"the audit log cannot be written: {router.audit_error}"
        else:
            info, split = node.info, node.split_state
            return JSONResponse({"status": "ready", "model": info.model, "n_ctx": info.n_ctx,
                                 "split": split.as_dict() if split is not None else None})
        return JSONResponse({"status": "not_ready", "reason": public_message(reason)},
                            status_code=503)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        """Prometheus metrics of this node (``edgewise_ab_split`` while an A/B split is on)."""
        if node.servings:  # both versions' queues during an A/B split
            node.metrics.queue_depth.set(sum(s.admission.waiting for s in node.servings))
            node.metrics.active.set(sum(s.admission.active for s in node.servings))
        for tier, endpoints in app.state.router.fleet.endpoints.items():
            for e in endpoints:
                node.metrics.breaker_open.labels(tier, e.label).set(
                    0 if e.breaker.state.value == "closed" else 1)
        return Response(node.metrics.render(),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    # Outermost first: headers on everything (413s included), then the access log.
    app.add_middleware(BodyLimit, max_bytes=node.config.serving.max_body_bytes,
                       timeout_s=node.config.serving.body_timeout_s)
    fleet_auth = None
    if member is not None:
        tls = node.config.serving.tls
        fleet_auth = FleetAuth(fleet=member.membership.fleet, deny=member.deny,
                               verifier=member.verifier,
                               allow=tuple(PeerRule.parse(r) for r in tls.allow),
                               certs_required=tls.enabled and tls.client_certs == "required",
                               metrics_scope=node.config.auth.metrics_scope)
    # before the body is read
    app.add_middleware(ApiKeys, config=node.config.auth, fleet=fleet_auth)
    app.add_middleware(Draining, node=node)
    app.add_middleware(AccessLog, metrics=node.metrics)
    app.add_middleware(NodeHeaders, node=node.name, tier=node.tier)
    return app
