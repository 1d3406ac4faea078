"""``GET /v1/models``, ``GET /v1/models/{id}`` and ``GET /v1/edgewise/jobs/{id}``.

The model list has the local model (with its context size, digest and engine) and, on
a node with a tier ladder, one entry per tier (its clearance, and the models its
endpoints name): the ids a request's ``model`` field may use. Each of them — and a
single node's tier name — resolves with ``/v1/models/{id}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from edgewise.api.auth import identity_of
from edgewise.api.errors import error_response
from edgewise.errors import UnknownModelError
from edgewise.node import Node
from edgewise.routing.service import Router

__all__ = ["router"]

router = APIRouter()


def _cards(node: Node, rt: Router, *, tiers: bool = True) -> dict[str, dict[str, Any]]:
    created = int(node.started_at)
    cards: dict[str, dict[str, Any]] = {}
    if node.ready:
        info = node.info
        cards[info.model] = {
            "id": info.model, "object": "model", "created": created, "owned_by": "edgewise",
            "edgewise": {"engine": info.kind, "n_ctx": info.n_ctx, "sha256": info.sha256,
                         "size_bytes": info.size_bytes, "tier": node.tier, "node": node.name}}
    embedding = node.config.embeddings.model
    if embedding is not None:
        from edgewise.api.embeddings import EMBEDDING_MODELS

        cards[embedding] = {
            "id": embedding, "object": "model", "created": created, "owned_by": "edgewise",
            "edgewise": {"kind": "embedding", "dimensions": EMBEDDING_MODELS[embedding],
                         "tier": node.tier, "node": node.name}}
    for tier in rt.fleet.tiers if tiers else ():
        models = [m for e in rt.fleet.endpoints[tier.name] for m in e.models]
        if tier.name not in cards:
            cards[tier.name] = {
                "id": tier.name, "object": "model", "created": created,
                "owned_by": "edgewise",
                "edgewise": {"tier": tier.name, "clearance": str(tier.clearance),
                             "models": models, "node": node.name}}
        for m in models:
            cards.setdefault(m, {"id": m, "object": "model", "created": created,
                                 "owned_by": "edgewise",
                                 "edgewise": {"tier": tier.name, "node": node.name}})
    return cards


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    node: Node = request.app.state.node
    if not node.ready:  # a probe sees "no model yet" (remote tiers rely on it)
        return {"object": "list", "data": []}
    # A node without a configured ladder lists its model only (its tier name still
    # resolves below); a fleet node lists every tier and the models they name.
    cards = _cards(node, request.app.state.router, tiers=bool(node.config.tiers))
    return {"object": "list", "data": list(cards.values())}


@router.get("/v1/models/{model_id}")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    node: Node = request.app.state.node
    cards = _cards(node, request.app.state.router)
    if model_id in ("auto", "default"):
        # node.model_id is a 503 (loading, or why the load failed) before the model is
        # ready: "auto" exists, it only has no model yet.
        return cards[node.model_id]
    if model_id not in cards:
        # The requested name is not echoed: error messages never quote request content.
        raise UnknownModelError(
            f"no such model on node {node.name!r}; available: "
            + ", ".join(repr(k) for k in cards) + " (or 'auto')", param="model")
    return cards[model_id]


@router.get("/v1/edgewise/jobs/{job_id}")
async def get_job(job_id: str, request: Request) -> JSONResponse:
    """Status (and, once delivered, the completion) of an async request."""
    rt: Router = request.app.state.router
    job = rt.jobs.get(job_id) if rt.jobs is not None else None
    owner = (job.payload.get("requester") or "anonymous") if job is not None else None
    if job is None or owner != identity_of(request.scope).name:  # others' jobs: not found
        return error_response(404, "no such job on this node", "not_found_error",
                              param="job_id", code="job_not_found")
    return JSONResponse({
        "id": job.id, "object": "edgewise.job", "status": job.state.value,
        "created_at": job.created_at, "updated_at": job.updated_at,
        "attempts": job.attempts, "tier": job.tier, "error": job.error, "result": job.result,
    })
