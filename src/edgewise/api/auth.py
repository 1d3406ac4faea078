"""Client identity from API keys (pure ASGI middleware).

With ``auth.keys`` configured, every ``/v1/`` request must carry one of them as
``Authorization: Bearer <key>`` (the OpenAI SDK's ``api_key``); anything else gets 401 in
OpenAI's error shape before the app reads the body. The node stores only each key's
sha256 and compares digests in constant time. A matching key gives the request an
identity (the key's ``name``: the requester in the audit log, the owner of its async
jobs) and, optionally, a declared sensitivity floor (``auth.keys[].sensitivity``).

Without keys, requests are ``anonymous`` and carry no declared floor. Health, readiness,
metrics and the API docs never need a key.
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

__all__ = ["ANONYMOUS", "ApiKeys", "Identity", "identity_of"]


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


class ApiKeys:
    def __init__(self, app: ASGIApp, *, config: AuthConfig) -> None:
        self.app = app
        self.keys = [(bytes.fromhex(k.sha256), Identity(k.name, k.sensitivity))
                     for k in config.keys]

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
        if scope["type"] != "http" or not self.keys or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        authorization = dict(scope.get("headers", [])).get(b"authorization")
        ident = self._lookup(authorization)
        if ident is None:
            if authorization is None:
                why = ("this node requires an API key: send 'Authorization: Bearer <key>' "
                       "with one of the keys in its auth.keys")
            else:
                why = "unknown API key (auth.keys lists the sha256 of each valid key)"
            await send_error(send, 401, why, "invalid_api_key",
                             headers=((b"www-authenticate", b'Bearer realm="edgewise"'),))
            return
        scope.setdefault("state", {})["identity"] = ident
        await self.app(scope, receive, send)
