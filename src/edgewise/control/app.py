"""The control plane's HTTP API and fleet page (``edgewise control serve``), over TLS.

Who may call what:

=====================================  ==============================================
``GET /healthz``, ``GET /v1/fleet/ca``   anyone (the CA is public; a joining node pins
                                         its sha256 before trusting it)
``POST /v1/join``                        a join token (single use, bound to the node
                                         name, rate-limited per client address)
``POST /v1/renew``, ``/v1/heartbeat``    a node's certificate (mutual TLS: verified by
                                         the handshake, checked against the deny list)
``/v1/admin/...``                        an access token with the ``admin`` scope
                                         (the model registry too: ``/v1/admin/registry``)
``/``, ``/nodes/<name>``                 the fleet page: ``admin`` scope, as a bearer
                                         token or the cookie ``/login`` sets
=====================================  ==============================================

The TLS listener asks for a client certificate but does not require one (joining nodes
have none yet); routes that need one check it. Every refusal is one line in OpenAI's
error shape and an audit record (:mod:`edgewise.control.service`).

Request bodies are bounded at 1 MiB and 30 s, except a registry blob upload (``PUT
/v1/admin/registry/blobs/sha256/<hex>``), which streams to a temporary file up to
:data:`~edgewise.control.blobs.MAX_BLOB_BYTES`, each chunk within
:data:`UPLOAD_IDLE_S`, and is stored only if its bytes hash to its name. A remote
publish asks which blobs are missing, uploads those, then creates the version from the
uploaded manifest (:class:`~edgewise.control.client.RemoteAdmin`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from importlib.resources import files
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi import Path as PathParam
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from edgewise import __version__
from edgewise.api.errors import error_response, install_error_handlers, public_message
from edgewise.api.middleware import BodyLimit
from edgewise.control.blobs import check_digest
from edgewise.control.page import FleetPage, NodeRow
from edgewise.control.service import ControlPlane
from edgewise.control.store import NodeRecord
from edgewise.errors import (
    AuthenticationError,
    ConfigError,
    ControlStoreError,
    InvalidRequestError,
    PayloadTooLargeError,
    RequestError,
)
from edgewise.security.peers import peer_identity_from_scope
from edgewise.security.pki import NodeIdentity
from edgewise.security.tokens import AccessClaims

__all__ = ["BLOB_ROUTE", "UPLOAD_IDLE_S", "create_control_app"]

log = logging.getLogger("edgewise.control")

T = TypeVar("T")
_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)  # JSON has no inf/NaN
_COOKIE = "edgewise_admin"
#: Where registry blobs are uploaded: ``PUT BLOB_ROUTE<sha256 hex>``.
BLOB_ROUTE = "/v1/admin/registry/blobs/sha256/"
#: The longest an upload may go without sending a byte.
UPLOAD_IDLE_S = 60.0
_SHA256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
_Name = Annotated[str, Field(max_length=64)]
_Why = Annotated[str, Field(max_length=500)]
_CSP = ("default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


class JoinBody(BaseModel):
    model_config = _STRICT
    token: Annotated[str, Field(max_length=256)]
    node: Annotated[str, Field(max_length=64)]
    csr: Annotated[str, Field(max_length=16384)]


class RenewBody(BaseModel):
    model_config = _STRICT
    csr: Annotated[str, Field(max_length=16384)]


_Label = Annotated[str, Field(max_length=256)]


class TierStat(BaseModel):
    model_config = _STRICT
    breaker: Annotated[str, Field(max_length=32)] = "closed"
    requests: Annotated[int, Field(ge=0)] = 0


class ProbeStat(BaseModel):
    """A canary's probe-set result for a rollout (its quality gate)."""

    model_config = _STRICT
    rollout: Annotated[int, Field(ge=1, lt=2**31)]
    version: Annotated[int, Field(ge=1, lt=2**31)]
    incumbent: Annotated[int, Field(ge=1, lt=2**31)]
    n: Annotated[int, Field(ge=0, le=100_000)]
    accuracy: Annotated[float, Field(ge=0, le=1)]
    incumbent_accuracy: Annotated[float, Field(ge=0, le=1)]


class SplitStat(BaseModel):
    """The version a node serves beside ``installed`` in an A/B rollout, and its share."""

    model_config = _STRICT
    version: Annotated[int, Field(ge=1, lt=2**31)]
    share: Annotated[float, Field(ge=0, le=1)]


class ModelStat(BaseModel):
    """One served version's telemetry (:mod:`edgewise.fleet.stats`, ``by_model``)."""

    model_config = _STRICT
    requests: Annotated[int, Field(ge=0)] = 0
    errors: Annotated[int, Field(ge=0)] = 0
    interval_requests: Annotated[int, Field(ge=0)] = 0
    error_rate: Annotated[float, Field(ge=0, le=1)] | None = None
    tokens_per_s: Annotated[float, Field(ge=0)] | None = None
    ttft_p95_ms: Annotated[float, Field(ge=0)] | None = None
    decode_tps_p50: Annotated[float, Field(ge=0)] | None = None


class UpdateStat(BaseModel):
    """A node's signed-update state (``fleet.update``)."""

    model_config = _STRICT
    model: Annotated[str, Field(max_length=64)]
    alias: Annotated[str, Field(max_length=64)]
    installed: Annotated[int, Field(ge=0)] | None = None
    state: Literal["idle", "current", "updating", "refused", "unreachable"] = "idle"
    error: Annotated[str, Field(max_length=500)] | None = None
    target: Annotated[int, Field(ge=0)] | None = None
    probe: ProbeStat | None = None
    split: SplitStat | None = None


class HeartbeatBody(BaseModel):
    """What a node reports (:mod:`edgewise.fleet.agent`); every field bounded."""

    model_config = _STRICT
    version: Annotated[str, Field(max_length=64)]
    model: _Label | None = None
    model_digest: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    tiers: Annotated[dict[Annotated[str, Field(max_length=64)], TierStat],
                     Field(max_length=64)] = Field(default_factory=dict)
    queue_depth: Annotated[int, Field(ge=0)] = 0
    tokens_per_s: Annotated[float, Field(ge=0)] | None = None
    ttft_p50_ms: Annotated[float, Field(ge=0)] | None = None
    ttft_p95_ms: Annotated[float, Field(ge=0)] | None = None
    error_rate: Annotated[float, Field(ge=0, le=1)] | None = None
    requests: Annotated[int, Field(ge=0)] = 0
    interval_requests: Annotated[int, Field(ge=0)] = 0
    decode_tps_p50: Annotated[float, Field(ge=0)] | None = None
    escalations: Annotated[int, Field(ge=0)] = 0
    redactions: Annotated[int, Field(ge=0)] = 0
    energy_j: Annotated[float, Field(ge=0)] | None = None
    audit_head: Annotated[str, Field(max_length=128)] | None = None
    applied_config: Annotated[int, Field(ge=0)] | None = None
    config_error: Annotated[str, Field(max_length=2000)] | None = None
    update: UpdateStat | None = None
    #: Per version label (A/B: both versions a node serves, and one just replaced).
    by_model: Annotated[dict[_Label, ModelStat], Field(max_length=8)] = Field(
        default_factory=dict)

    @model_validator(mode="after")
    def _printable(self) -> HeartbeatBody:
        # Shown on the fleet page and stored as JSON (PostgreSQL's jsonb has no NUL):
        # every text a node reports must be one printable line.
        def texts(value: Any) -> list[str]:
            if isinstance(value, str):
                return [value]
            if isinstance(value, dict):
                return [t for k, v in value.items() for t in (*texts(k), *texts(v))]
            if isinstance(value, BaseModel):
                return texts(value.model_dump())
            return []
        for text in texts(self.model_dump()):
            if not text.isprintable():
                raise ValueError("heartbeat fields must be printable text (no control "
                                 "characters)")
        return self


class TokenBody(BaseModel):
    model_config = _STRICT
    node: Annotated[str, Field(max_length=64)]
    tier: Annotated[str, Field(max_length=64)]
    ttl_s: Annotated[float, Field(gt=0, le=7 * 86400)] | None = None
    hosts: Annotated[list[Annotated[str, Field(max_length=253)]], Field(max_length=32)] = (
        Field(default_factory=list))


class AccessTokenBody(BaseModel):
    model_config = _STRICT
    subject: Annotated[str, Field(max_length=128)]
    scopes: Annotated[list[Literal["infer", "admin", "metrics"]], Field(min_length=1)]
    ttl_s: Annotated[float, Field(gt=0, le=900)] = 900
    node: Annotated[str, Field(max_length=64)] | None = None
    sensitivity: Literal["public", "internal", "pii", "phi"] | None = None


class ConfigBody(BaseModel):
    model_config = _STRICT
    target_kind: Literal["node", "tier"]
    target: Annotated[str, Field(max_length=64)]
    body: dict[str, Any]


class MissingBody(BaseModel):
    model_config = _STRICT
    sha256: Annotated[list[_SHA256], Field(max_length=10_000)]


class PublishBody(BaseModel):
    model_config = _STRICT
    name: _Name
    manifest_sha256: _SHA256
    kind: Literal["base", "variant", "adapter"] | None = None
    alias: _Name | None = None
    why: _Why = ""


class AliasBody(BaseModel):
    model_config = _STRICT
    version: Annotated[int, Field(ge=1, lt=2**31)]
    why: _Why = ""


class RolloutBody(BaseModel):
    model_config = _STRICT
    ref: Annotated[str, Field(min_length=3, max_length=200)]  # NAME@VERSION
    alias: Annotated[str, Field(max_length=63)] = "stable"
    steps: Annotated[str, Field(max_length=200)] = "1,25,100"
    gates: Annotated[list[Annotated[str, Field(max_length=100)]], Field(max_length=20)] = []
    bake_s: Annotated[float, Field(ge=0, le=7 * 86400)] = 600.0
    nodes: Annotated[str, Field(max_length=2000)] | None = None
    #: The probe set's JSONL text (its quality gate).
    probes: Annotated[str, Field(max_length=16 * 2**20)] | None = None
    step_timeout_s: Annotated[float, Field(ge=1, le=86400)] = 600.0
    #: A/B: the percentage of each step node's requesters on the new version (checked,
    #: with its own message, by ``rollouts.parse_split``).
    split: float | None = None


class RolloutActionBody(BaseModel):
    model_config = _STRICT
    why: _Why = ""


class _BodyLimitExceptBlobs:
    """:class:`BodyLimit` for every request but a blob upload, which its route streams
    and bounds itself (module docstring)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.limited = BodyLimit(app, max_bytes=max_bytes, timeout_s=timeout_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "PUT" \
                and str(scope["path"]).startswith(BLOB_ROUTE):
            await self.app(scope, receive, send)
        else:
            await self.limited(scope, receive, send)


def node_row(rec: NodeRecord, *, now: datetime, heartbeat_s: float) -> NodeRow:
    """The fleet page's view of a node record and its latest heartbeat."""
    hb = rec.heartbeat or {}
    tiers = hb.get("tiers") or {}
    total = sum(int(t.get("requests", 0)) for t in tiers.values()) if isinstance(tiers, dict) else 0
    share = {name: int(t.get("requests", 0)) / total for name, t in tiers.items()} if total else {}
    return NodeRow(
        name=rec.name, spiffe_id=rec.spiffe_id, tier=rec.tier,
        status=rec.status(now, heartbeat_s), cert_not_after=rec.cert_not_after,
        last_seen=rec.last_seen, version=hb.get("version"), model=hb.get("model"),
        model_digest=hb.get("model_digest"), queue_depth=hb.get("queue_depth"),
        tokens_per_s=hb.get("tokens_per_s"), ttft_p50_ms=hb.get("ttft_p50_ms"),
        ttft_p95_ms=hb.get("ttft_p95_ms"), error_rate=hb.get("error_rate"),
        requests=hb.get("requests"), tier_share=share,
        escalations=hb.get("escalations"), redactions=hb.get("redactions"),
        breakers={n: str(t.get("breaker", "closed")) for n, t in tiers.items()},
        energy_j=hb.get("energy_j"), audit_head=hb.get("audit_head"),
        config_version=None if rec.applied_config is None else str(rec.applied_config),
        config_error=rec.config_error, update=_update_text(hb.get("update")))


def _update_text(u: Any) -> str | None:
    """One line for a node's update state (its heartbeat's ``update``)."""
    if not isinstance(u, dict):
        return None
    at = f"{u.get('model')}@{u.get('installed')}" if u.get("installed") else str(u.get("model"))
    split = u.get("split")
    if isinstance(split, dict):  # A/B: the version served beside, and its share
        at += f" + v{split.get('version')} for {float(split.get('share') or 0):.0%}"
    text = f"{at} ({u.get('alias')}), {u.get('state')}"
    return f"{text}: {u['error']}" if u.get("error") else text


def node_json(rec: NodeRecord, *, now: datetime, heartbeat_s: float) -> dict[str, Any]:
    return {"name": rec.name, "tier": rec.tier, "spiffe_id": rec.spiffe_id,
            "status": rec.status(now, heartbeat_s), "serial": rec.serial,
            "cert_not_after": rec.cert_not_after.isoformat(),
            "enrolled_at": rec.enrolled_at.isoformat(),
            "last_seen": rec.last_seen.isoformat() if rec.last_seen else None,
            "revoked_at": rec.revoked_at.isoformat() if rec.revoked_at else None,
            "applied_config": rec.applied_config, "config_error": rec.config_error,
            "heartbeat": rec.heartbeat}


def create_control_app(cp: ControlPlane) -> FastAPI:
    async def keep_timestamp_fresh() -> None:
        # The timestamp expires after a day (an indefinite freeze is detectable); re-sign
        # it with the online timestamp key while half a day is left.
        while cp.releases is not None:
            try:
                left = cp.releases.repo.timestamp_expires() - datetime.now(UTC)
                if left < timedelta(hours=12):
                    await run(cp.releases.repo.refresh_timestamp)
                    log.info("TUF timestamp re-signed")
            except Exception as exc:  # keep trying; nodes see expiry, not a crash
                log.error("TUF timestamp refresh failed: %s", exc)
            await asyncio.sleep(600)

    async def tick_rollouts() -> None:
        # Gates are evaluated every second; a failing one rolls back at once, and the
        # nodes hear it in their next heartbeat answer.
        while True:
            try:
                await run(cp.rollout_tick)
            except Exception as exc:  # a store outage: keep ticking
                log.error("rollout tick failed: %s", exc)
            await asyncio.sleep(1.0)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        cp.desk.start()  # heartbeats answered from memory, written in batches
        fresh = asyncio.create_task(keep_timestamp_fresh())
        ticks = asyncio.create_task(tick_rollouts())
        try:
            yield
        finally:
            ticks.cancel()
            fresh.cancel()
            await asyncio.to_thread(cp.desk.close)

    app = FastAPI(title=f"edgewise control plane ({cp.fleet})", version=__version__,
                  docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.control = cp
    install_error_handlers(app)
    page = FleetPage(fleet=cp.fleet, refresh_s=max(2, int(cp.settings.heartbeat_s)))
    ca_fpr = cp.ca.root_fingerprint

    @app.exception_handler(ControlStoreError)
    async def _store_down(request: Request, exc: ControlStoreError) -> JSONResponse:
        # The detail (which database, why) is for the operator's log, not for callers.
        log.error("control store: %s", exc)
        return JSONResponse({"error": {"message": "the control plane's store is unavailable; "
                                                  "retry shortly", "type": "service_unavailable",
                                       "param": None, "code": "store_unavailable"}},
                            status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(ConfigError)  # a bad name, ttl or scope in an admin request
    async def _bad_value(request: Request, exc: ConfigError) -> JSONResponse:
        return error_response(400, public_message(str(exc)), "invalid_request_error")

    async def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(partial(fn, *args, **kwargs))

    def client_of(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    def peer_of(request: Request) -> NodeIdentity:
        try:
            ident = peer_identity_from_scope(request.scope, cp.fleet)
            if ident is None:
                raise AuthenticationError("this route needs the node's fleet certificate "
                                          "(mutual TLS); join first with `edgewise join`")
        except AuthenticationError as exc:
            cp.refused(request.url.path.rsplit("/", 1)[-1], exc, by=client_of(request))
            raise
        return ident

    def bearer(request: Request) -> str | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None

    async def admin(request: Request) -> AccessClaims:
        return await run(cp.authorize, bearer(request), scope="admin",
                         client=client_of(request))

    @app.middleware("http")
    async def _headers(request: Request, call_next: Callable[[Request], Any]) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", _CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "fleet": cp.fleet}

    @app.get("/v1/fleet/ca")
    async def fleet_ca() -> dict[str, Any]:
        """The fleet's root CA: a joining node checks its sha256 against --ca-sha256."""
        return {"fleet": cp.fleet, "ca": cp.ca.root_pem().decode("ascii"),
                "sha256": ca_fpr}

    @app.post("/v1/join")
    async def join(body: JoinBody, request: Request) -> dict[str, Any]:
        res = await run(cp.join, token=body.token, node=body.node, csr_pem=body.csr,
                        client=client_of(request))
        return {"fleet": res.fleet, "node": res.node, "tier": res.tier,
                "spiffe_id": res.spiffe_id, "certificate": res.certificate, "ca": res.ca,
                "token_key": res.token_key, "token_issuer": res.token_issuer,
                "heartbeat_s": res.heartbeat_s, "not_after": res.not_after.isoformat(),
                "tuf_root": res.tuf_root, "release_key": res.release_key}

    @app.post("/v1/renew")
    async def renew(body: RenewBody, request: Request) -> dict[str, Any]:
        chain, not_after = await run(cp.renew, peer_of(request), body.csr)
        return {"certificate": chain, "not_after": not_after.isoformat()}

    @app.post("/v1/heartbeat")
    async def heartbeat(body: HeartbeatBody, request: Request) -> dict[str, Any]:
        data = body.model_dump(exclude={"applied_config", "config_error"})
        # In memory (control/heartbeats.py): no thread, no database round trip.
        return cp.heartbeat(peer_of(request), data, applied_config=body.applied_config,
                            config_error=body.config_error)

    # -- admin ----------------------------------------------------------------------------
    @app.post("/v1/admin/tokens")
    async def create_token(body: TokenBody, request: Request) -> dict[str, Any]:
        who = await admin(request)
        ttl = timedelta(seconds=body.ttl_s) if body.ttl_s else None
        token, expires = await run(cp.create_join_token, node=body.node, tier=body.tier,
                                   ttl=ttl, by=who.subject, hosts=body.hosts)
        return {"token": token, "node": body.node, "tier": body.tier, "hosts": body.hosts,
                "expires_at": expires.isoformat()}

    @app.get("/v1/admin/nodes")
    async def list_nodes(request: Request) -> dict[str, Any]:
        await admin(request)
        now = datetime.now(UTC)
        recs = await run(cp.nodes)
        return {"nodes": [node_json(r, now=now, heartbeat_s=cp.settings.heartbeat_s)
                          for r in recs]}

    @app.post("/v1/admin/nodes/{name}/revoke")
    async def revoke(name: str, request: Request) -> dict[str, Any]:
        who = await admin(request)
        serials = await run(cp.revoke, name, by=who.subject)
        return {"node": name, "revoked_serials": serials}

    @app.post("/v1/admin/config")
    async def push_config(body: ConfigBody, request: Request) -> dict[str, Any]:
        who = await admin(request)
        v = await run(cp.push_config, target_kind=body.target_kind, target=body.target,
                      body=body.body, by=who.subject, source=f"{body.target_kind} {body.target}")
        return {"id": v.id, "version": v.version, "target": f"{v.target_kind}:{v.target}"}

    @app.get("/v1/admin/config")
    async def list_configs(request: Request) -> dict[str, Any]:
        await admin(request)
        rows = await run(cp.store.configs)
        return {"configs": [{"id": c.id, "version": c.version,
                             "target": f"{c.target_kind}:{c.target}",
                             "created_at": c.created_at.isoformat(),
                             "created_by": c.created_by} for c in rows]}

    @app.post("/v1/admin/access-tokens")
    async def access_token(body: AccessTokenBody, request: Request) -> dict[str, Any]:
        who = await admin(request)
        token = await run(cp.issue_access_token, subject=body.subject, scopes=body.scopes,
                          ttl=timedelta(seconds=body.ttl_s), node=body.node,
                          sensitivity=body.sensitivity, by=who.subject)
        return {"token": token, "expires_in": body.ttl_s}

    # -- the model registry ---------------------------------------------------------------
    @app.get("/v1/admin/registry/models")
    async def registry_models(request: Request) -> dict[str, Any]:
        await admin(request)
        return {"models": [a.to_json() for a in await run(cp.registry.artifacts)]}

    @app.get("/v1/admin/registry/models/{name}")
    async def registry_model(name: str, request: Request, ref: str | None = None
                             ) -> dict[str, Any]:
        """One version (``ref``: a number, an alias; the newest without) with the
        model's aliases, their history and its versions."""
        await admin(request)
        return (await run(cp.registry.detail, name, ref)).to_json()

    @app.put("/v1/admin/registry/models/{name}/aliases/{alias}")
    async def registry_alias(name: str, alias: str, body: AliasBody, request: Request
                             ) -> dict[str, Any]:
        who = await admin(request)
        move = await run(cp.alias_set, name, body.version, alias, by=who.subject,
                         why=body.why)
        return move.to_json()

    @app.post("/v1/admin/registry/blobs/missing")
    async def registry_missing(body: MissingBody, request: Request) -> dict[str, Any]:
        await admin(request)
        return {"missing": await run(cp.registry_missing, body.sha256)}

    @app.put(BLOB_ROUTE + "{digest}", response_model=None)
    async def registry_blob(digest: str, request: Request) -> Response:
        who = await admin(request)  # before a byte of the body is read
        try:
            check_digest(digest)
            length = request.headers.get("content-length", "")
            if length.isdigit() and int(length) > cp.blobs.max_bytes:
                raise PayloadTooLargeError(f"the file is {length} bytes, over the registry's "
                                           f"limit of {cp.blobs.max_bytes}")
            writer = await run(cp.blobs.writer)
        except RequestError as exc:
            cp.refused("registry_blob", exc, by=who.subject)
            raise
        try:
            try:
                await _receive_into(request, writer.write, run)
            except RequestError as exc:
                cp.refused("registry_blob", exc, by=who.subject)
                raise
            except ClientDisconnect:
                return Response(status_code=400)  # nobody is listening; nothing is kept
            fresh = await run(cp.registry_blob, writer, digest, by=who.subject)
        finally:
            writer.discard()
        return JSONResponse({"sha256": digest, "size_bytes": writer.size, "stored": fresh},
                            status_code=201 if fresh else 200)

    @app.post("/v1/admin/registry/versions")
    async def registry_publish(body: PublishBody, request: Request) -> dict[str, Any]:
        who = await admin(request)
        version, move = await run(cp.registry_create, name=body.name,
                                  manifest_sha256=body.manifest_sha256, kind=body.kind,
                                  alias=body.alias, why=body.why, by=who.subject)
        return {"version": version.to_json(), "alias": move.to_json() if move else None}

    # -- rollouts ----------------------------------------------------------------------------
    @app.post("/v1/admin/rollouts")
    async def rollout_start(body: RolloutBody, request: Request) -> dict[str, Any]:
        who = await admin(request)
        r = await run(cp.rollout_start, body.ref, by=who.subject, alias=body.alias,
                      steps=body.steps, gates=body.gates, bake_s=body.bake_s,
                      selector=body.nodes,
                      probes=body.probes.encode("utf-8") if body.probes is not None else None,
                      step_timeout_s=body.step_timeout_s, split=body.split)
        return r.to_json()

    @app.get("/v1/admin/rollouts")
    async def rollout_list(request: Request, model: str | None = None) -> dict[str, Any]:
        await admin(request)
        return {"rollouts": [r.to_json() for r in await run(cp.rollout_list, name=model)]}

    @app.get("/v1/admin/rollouts/{rid}")
    async def rollout_get(rid: Annotated[int, PathParam(ge=1, lt=2**31)], request: Request
                          ) -> dict[str, Any]:
        await admin(request)
        return (await run(cp.rollout, rid)).to_json()

    @app.post("/v1/admin/rollouts/{rid}/{action}")
    async def rollout_action(rid: Annotated[int, PathParam(ge=1, lt=2**31)], action: str,
                             body: RolloutActionBody, request: Request) -> dict[str, Any]:
        who = await admin(request)
        if action not in ("pause", "resume", "abort"):
            raise InvalidRequestError(f"unknown action {action[:20]!r}: pause, resume or "
                                      "abort", param="action")
        return (await run(cp.rollout_action, rid, action, by=who.subject,
                          why=body.why)).to_json()

    # -- the fleet page ---------------------------------------------------------------------
    async def page_admin(request: Request) -> AccessClaims | None:
        token = bearer(request) or request.cookies.get(_COOKIE)
        if not token:
            return None
        try:
            return await run(cp.authorize, token, scope="admin", client=client_of(request))
        except (AuthenticationError, InvalidRequestError):
            return None

    def to_login(path: str) -> RedirectResponse:
        return RedirectResponse(f"/login?next={quote(path, safe='/')}", status_code=303)

    @app.get("/", response_class=HTMLResponse, response_model=None)
    async def fleet_page(request: Request) -> Response:
        if await page_admin(request) is None:
            return to_login("/")
        now = datetime.now(UTC)
        recs = await run(cp.nodes)
        rows = [node_row(r, now=now, heartbeat_s=cp.settings.heartbeat_s) for r in recs]
        rollouts = [r.to_json() for r in (await run(cp.rollout_list))[:10]]
        federated = await run(cp.federated_runs)
        return HTMLResponse(page.fleet(rows, now=now, ca_fingerprint=ca_fpr, admin=True,
                                       rollouts=rollouts, federated=federated))

    @app.get("/nodes/{name}", response_class=HTMLResponse, response_model=None)
    async def node_page(name: str, request: Request) -> Response:
        if await page_admin(request) is None:
            return to_login(f"/nodes/{quote(name)}")
        rec = await run(cp.node, name)
        if rec is None:
            return JSONResponse({"error": {"message": f"no node named {name!r}",
                                           "type": "not_found_error", "param": None,
                                           "code": "not_found"}}, status_code=404)
        now = datetime.now(UTC)
        return HTMLResponse(page.node(node_row(rec, now=now,
                                               heartbeat_s=cp.settings.heartbeat_s),
                                      now=now, admin=True))

    @app.get("/login", response_class=HTMLResponse)
    async def login_form(next: str = "/") -> HTMLResponse:
        return HTMLResponse(page.login(next_path=_local_path(next)))

    @app.post("/login", response_class=HTMLResponse, response_model=None)
    async def login(request: Request) -> Response:
        form = (await request.body()).decode("utf-8", "replace")
        from urllib.parse import parse_qs

        fields = parse_qs(form, max_num_fields=4)
        token = (fields.get("token") or [""])[0].strip()
        nxt = _local_path((fields.get("next") or ["/"])[0])
        try:
            claims = await run(cp.authorize, token, scope="admin", client=client_of(request))
        except (AuthenticationError, InvalidRequestError) as exc:
            return HTMLResponse(page.login(error=exc.message, next_path=nxt), status_code=401)
        except Exception as exc:  # ForbiddenError: a token without admin scope
            msg = getattr(exc, "message", "not allowed")
            return HTMLResponse(page.login(error=msg, next_path=nxt), status_code=403)
        resp = RedirectResponse(nxt, status_code=303)
        max_age = max(1, int((claims.expires_at - datetime.now(UTC)).total_seconds()))
        resp.set_cookie(_COOKIE, token, max_age=max_age, httponly=True, secure=True,
                        samesite="strict")
        return resp

    # -- signed distribution: the TUF repository, for nodes (their certificate) ----------------
    _TUF_METADATA = re.compile(r"(?:[0-9]{1,10}\.(?:root|targets|snapshot)|timestamp)\.json")

    async def node_or_admin(request: Request) -> None:
        if peer_identity_from_scope(request.scope, cp.fleet) is not None:
            await run(cp.check_peer, peer_of(request))
        else:
            await admin(request)

    @app.get("/tuf/metadata/{name}", response_model=None)
    async def tuf_metadata(name: str, request: Request) -> Response:
        """TUF metadata (verified by the node's updater, so served as it is)."""
        await node_or_admin(request)
        if cp.releases is None or not _TUF_METADATA.fullmatch(name):
            return _not_found(name)
        path = cp.releases.repo.metadata_dir / name
        if not path.is_file():
            return _not_found(name)
        return Response(path.read_bytes(), media_type="application/json")

    @app.get("/tuf/targets/{path:path}", response_model=None)
    async def tuf_target(path: str, request: Request) -> Response:
        """A target file by its consistent-snapshot name (<sha256>.<file>), from blobs."""
        await node_or_admin(request)
        blob = cp.releases.target_file(path) if cp.releases is not None else None
        if blob is None:
            return _not_found(path)
        return FileResponse(blob, media_type="application/octet-stream")

    @app.get("/static/fleet.css")
    async def stylesheet() -> Response:
        css = files("edgewise.control").joinpath("static/fleet.css").read_text("utf-8")
        return Response(css, media_type="text/css")

    app.add_middleware(_BodyLimitExceptBlobs, max_bytes=1 << 20, timeout_s=30.0)
    return app


async def _receive_into(request: Request, write: Callable[[bytes], None],
                        run: Callable[..., Any]) -> None:
    """Stream the request body to ``write`` (in a thread, in blocks of at least 1 MiB),
    refusing an upload that sends nothing for :data:`UPLOAD_IDLE_S`."""
    stream = request.stream().__aiter__()
    buffer = bytearray()
    while True:
        try:
            async with asyncio.timeout(UPLOAD_IDLE_S):
                chunk = await anext(stream)
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise InvalidRequestError(f"the upload sent nothing for {UPLOAD_IDLE_S:.0f} s; "
                                      "nothing was stored, upload it again",
                                      code="upload_stalled") from None
        buffer += chunk
        if len(buffer) >= 1 << 20:
            await run(write, bytes(buffer))
            buffer.clear()
    if buffer:
        await run(write, bytes(buffer))


def _not_found(what: str) -> JSONResponse:
    return JSONResponse({"error": {"message": f"no such file in the fleet's TUF repository: "
                                              f"{what[:100]}", "type": "not_found_error",
                                   "param": None, "code": "not_found"}}, status_code=404)


def _local_path(path: str) -> str:
    """Only same-site paths after login (no open redirect)."""
    ok = path.startswith("/") and not path.startswith("//") and "\\" not in path \
        and all(c.isprintable() for c in path)
    return path if ok else "/"
