"""Client identity: API keys, and on a joined node also fleet certificates and the
control plane's access tokens (pure ASGI middleware).

With ``auth.keys`` configured, every ``/v1/`` request must carry one of them as
``Authorization: Bearer <key>`` (the OpenAI SDK's ``api_key``); anything else gets 401 in
OpenAI's error shape before the app reads the body. The node stores only each key's
sha256 and compares digests in constant time. A matching key gives the request an
identity (the key's ``name``: the requester in the audit log, the owner of its async
jobs) and, optionally, a declared sensitivity floor (``auth.keys[].sensitivity``).

Without keys, requests are ``anonymous`` and carry no declared floor. Health, readiness
and the API docs never need a key.

On a joined node (:class:`FleetAuth`), two more credentials are accepted, checked first:

* **a fleet peer's certificate** (mutual TLS, ``serving.tls``): the handshake verified it
  against the fleet root; here it must be a node certificate of this fleet, not on the
  deny list, and allowed by ``serving.tls.allow`` (403 otherwise). The request's
  identity is the peer's SPIFFE ID. ``client_certs: required`` makes it the only way in.
* **an access token** (``Authorization: Bearer <JWT>``, ``auth.access_tokens``), verified
  offline against the control plane's public key: audience this fleet or this node,
  at most 15 minutes, and the ``infer`` scope for ``/v1`` (an ``admin`` or ``metrics``
  token gets 403 there). Its subject is the identity and its ``sensitivity`` claim the
  declared floor. ``auth.metrics_scope`` makes ``/metrics`` need the ``metrics`` scope.

A credential that is present but bad is refused even where none is needed: a revoked
peer does not become ``anonymous`` by being revoked.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from edgewise.api.middleware import send_error
from edgewise.config import AuthConfig
from edgewise.errors import AuthenticationError, ForbiddenError, RequestError
from edgewise.security.peers import DenyList, PeerRule, peer_identity_from_scope
from edgewise.security.tokens import AccessTokenVerifier

__all__ = ["ANONYMOUS", "ApiKeys", "FleetAuth", "Identity", "identity_of"]


@dataclass(frozen=True)
class FleetAuth:
    """What a joined node checks fleet credentials against."""

    fleet: str
    deny: DenyList
    verifier: AccessTokenVerifier | None  # None: auth.access_tokens is off
    allow: tuple[PeerRule, ...] = ()
    certs_required: bool = False
    metrics_scope: bool = False


@dataclass(frozen=True)
class Identity:
    name: str
    #: Sensitivity declared for every request with this key (``None``: none).
    sensitivity: str | None = None


ANONYMOUS = Identity("anonymous")


def identity_of(scope: MutableMapping[str, Any]) -> Identity:
    """The identity :class:`ApiKeys` attached to a request (``anonymous`` if none)."""
    state = scope.get("state")
    found = state.get("identity") if isinstance(state, dict) else None
    return found if isinstance(found, Identity) else ANONYMOUS


def _looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")


class ApiKeys:
    def __init__(self, app: ASGIApp, *, config: AuthConfig,
                 fleet: FleetAuth | None = None) -> None:
        self.app = app
        self.keys = [(bytes.fromhex(k.sha256), Identity(k.name, k.sensitivity))
                     for k in config.keys]
        self.fleet = fleet
        self.required = config.required

    def _fleet_identity(self, scope: Scope, authorization: bytes | None,
                        need: str) -> Identity | None:
        """The identity a fleet credential gives (``None``: no fleet credential)."""
        f = self.fleet
        if f is None:
            return None
        # A peer certificate stands for `infer` only: /metrics needs a metrics token.
        peer = peer_identity_from_scope(scope, f.fleet) if need == "infer" else None
        if peer is not None:
            why = f.deny.why_denied(peer)
            if why is not None:
                raise ForbiddenError(why)
            if f.allow and not any(rule.matches(peer) for rule in f.allow):
                raise ForbiddenError(
                    f"{peer.spiffe_id} (tier {peer.tier}) may not call this node "
                    f"(serving.tls.allow: {', '.join(str(r) for r in f.allow)})")
            return Identity(peer.spiffe_id)
        if f.verifier is None or authorization is None:
            return None
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not _looks_like_jwt(token):
            return None
        claims = f.verifier.verify(token, scope=need)
        return Identity(claims.subject, None if claims.sensitivity is None
                        else str(claims.sensitivity))

    def _lookup(self, authorization: bytes | None) -> Identity | None:
        if authorization is None:
            return None
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        digest = hashlib.sha256(token.strip().encode("utf-8", "surrogateescape")).digest()
        found = None
        for known, ident in self.keys:  # compare with every key: no early exit timing
            if hmac.compare_digest(known, digest):
                found = ident
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        metrics = path == "/metrics" and self.fleet is not None and self.fleet.metrics_scope
        if not (path.startswith("/v1/") or metrics):
            await self.app(scope, receive, send)
            return
        authorization = dict(scope.get("headers", [])).get(b"authorization")
        try:
            fleet_ident = self._fleet_identity(scope, authorization,
                                               "metrics" if metrics else "infer")
        except RequestError as exc:
            await send_error(send, exc.status, exc.message, exc.code or "forbidden",
                             type_=exc.error_type,
                             headers=((b"www-authenticate", b'Bearer realm="edgewise"'),)
                             if isinstance(exc, AuthenticationError) else ())
            return
        if fleet_ident is not None:
            scope.setdefault("state", {})["identity"] = fleet_ident
            await self.app(scope, receive, send)
            return
        if metrics:
            await send_error(send, 401, "/metrics on this node needs an access token with "
                             "the metrics scope (auth.metrics_scope)", "unauthenticated",
                             type_="authentication_error")
            return
        required = self.required or bool(self.keys) or (
            self.fleet is not None and self.fleet.certs_required)
        if not required:
            await self.app(scope, receive, send)
            return
        ident = self._lookup(authorization) if self.keys else None
        if ident is None:
            if authorization is None:
                why = ("this node requires an API key: send 'Authorization: Bearer <key>' "
                       "with one of the keys in its auth.keys")
                if self.fleet is not None:
                    why = ("this node requires a credential: an API key, a fleet access "
                           "token or a fleet node certificate")
            else:
                why = "unknown API key (auth.keys lists the sha256 of each valid key)"
            await send_error(send, 401, why, "invalid_api_key",
                             headers=((b"www-authenticate", b'Bearer realm="edgewise"'),))
            return
        scope.setdefault("state", {})["identity"] = ident
        await self.app(scope, receive, send)
