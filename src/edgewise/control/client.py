"""Admin operations, on the control plane's host (``--dir``) or against a remote control
plane (``--url`` with an ``admin``-scoped access token): one interface, two ways.

:class:`LocalAdmin` calls :class:`~edgewise.control.service.ControlPlane` directly (whoever
can read the control directory is its administrator). :class:`RemoteAdmin` calls
``/v1/admin/...`` over TLS, trusting the fleet root it is given or one whose sha256
matches a pin (fetched like ``edgewise join`` does).
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import httpx

from edgewise.control.service import ControlPlane
from edgewise.errors import AuthenticationError, FleetError, ForbiddenError, InvalidRequestError
from edgewise.security.pki import client_context, fingerprint, load_cert, parse_fingerprint

__all__ = ["AdminClient", "LocalAdmin", "RemoteAdmin"]


class AdminClient(Protocol):
    def create_token(self, node: str, tier: str, ttl: timedelta | None,
                     hosts: list[str] | None = None) -> dict[str, Any]: ...
    def nodes(self) -> list[dict[str, Any]]: ...
    def revoke(self, node: str) -> list[str]: ...
    def push_config(self, kind: str, target: str, body: Any, source: str) -> dict[str, Any]: ...
    def configs(self) -> list[dict[str, Any]]: ...
    def access_token(self, subject: str, scopes: list[str], ttl: timedelta, node: str | None,
                     sensitivity: str | None) -> str: ...
    def close(self) -> None: ...


class LocalAdmin:
    def __init__(self, directory: Path, *, database_url: str | None = None,
                 by: str = "local-admin") -> None:
        self.cp = ControlPlane(directory, database_url=database_url)
        self.by = by

    def create_token(self, node: str, tier: str, ttl: timedelta | None,
                     hosts: list[str] | None = None) -> dict[str, Any]:
        token, expires = self.cp.create_join_token(node=node, tier=tier, ttl=ttl, by=self.by,
                                                   hosts=hosts or [])
        return {"token": token, "node": node, "tier": tier, "hosts": hosts or [],
                "expires_at": expires.isoformat()}

    def nodes(self) -> list[dict[str, Any]]:
        from edgewise.control.app import node_json

        now = datetime.now(UTC)
        return [node_json(r, now=now, heartbeat_s=self.cp.settings.heartbeat_s)
                for r in self.cp.nodes()]

    def revoke(self, node: str) -> list[str]:
        return self.cp.revoke(node, by=self.by)

    def push_config(self, kind: str, target: str, body: Any, source: str) -> dict[str, Any]:
        v = self.cp.push_config(target_kind=kind, target=target, body=body, by=self.by,
                                source=source)
        return {"id": v.id, "version": v.version, "target": f"{v.target_kind}:{v.target}"}

    def configs(self) -> list[dict[str, Any]]:
        return [{"id": c.id, "version": c.version, "target": f"{c.target_kind}:{c.target}",
                 "created_at": c.created_at.isoformat(), "created_by": c.created_by}
                for c in self.cp.store.configs()]

    def access_token(self, subject: str, scopes: list[str], ttl: timedelta, node: str | None,
                     sensitivity: str | None) -> str:
        return self.cp.issue_access_token(subject=subject, scopes=scopes, ttl=ttl, node=node,
                                          sensitivity=sensitivity, by=self.by)

    def close(self) -> None:
        self.cp.close()


def _raise_for(r: httpx.Response) -> None:
    if r.status_code < 400:
        return
    try:
        msg = str(r.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        msg = f"HTTP {r.status_code}"
    if r.status_code == 401:
        raise AuthenticationError(msg)
    if r.status_code == 403:
        raise ForbiddenError(msg)
    if r.status_code < 500:
        raise InvalidRequestError(msg)
    raise FleetError(f"the control plane answered {r.status_code}: {msg}")


class RemoteAdmin:
    def __init__(self, url: str, *, token: str, ca_file: Path | None = None,
                 ca_sha256: str | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        if not url.startswith("https://"):
            raise FleetError(f"--url must be https:// (got {url!r})")
        if not token:
            raise AuthenticationError("--url needs an admin access token: --token or "
                                      "$EDGEWISE_ADMIN_TOKEN (`edgewise control "
                                      "access-token --scope admin` on the control host)")
        base = url.rstrip("/")
        if ca_file is None:
            if ca_sha256 is None:
                raise FleetError("--url needs the fleet CA: --ca FILE or --ca-sha256 FPR")
            pin = parse_fingerprint(ca_sha256)
            with httpx.Client(verify=False, transport=transport, timeout=10) as c:
                pem = str(c.get(f"{base}/v1/fleet/ca").json()["ca"]).encode("ascii")
            if fingerprint(load_cert(pem)) != pin:
                raise FleetError(f"the control plane's CA is not {pin}: refusing to send "
                                 "the admin token")
            with tempfile.TemporaryDirectory() as tmp:
                f = Path(tmp) / "ca.pem"
                f.write_bytes(pem)
                ctx = client_context(f)
        else:
            ctx = client_context(ca_file)
        self.http = httpx.Client(base_url=base, verify=ctx, transport=transport, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"})

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise FleetError(f"cannot reach the control plane: {type(exc).__name__}: {exc}") \
                from exc
        _raise_for(r)
        return r.json()

    def create_token(self, node: str, tier: str, ttl: timedelta | None,
                     hosts: list[str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"node": node, "tier": tier, "hosts": hosts or []}
        if ttl is not None:
            body["ttl_s"] = ttl.total_seconds()
        return dict(self._call("POST", "/v1/admin/tokens", json=body))

    def nodes(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/admin/nodes")["nodes"])

    def revoke(self, node: str) -> list[str]:
        return list(self._call("POST", f"/v1/admin/nodes/{node}/revoke")["revoked_serials"])

    def push_config(self, kind: str, target: str, body: Any, source: str) -> dict[str, Any]:
        return dict(self._call("POST", "/v1/admin/config",
                               json={"target_kind": kind, "target": target, "body": body}))

    def configs(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/admin/config")["configs"])

    def access_token(self, subject: str, scopes: list[str], ttl: timedelta, node: str | None,
                     sensitivity: str | None) -> str:
        return str(self._call("POST", "/v1/admin/access-tokens", json={
            "subject": subject, "scopes": scopes, "ttl_s": ttl.total_seconds(), "node": node,
            "sensitivity": sensitivity})["token"])

    def close(self) -> None:
        self.http.close()
