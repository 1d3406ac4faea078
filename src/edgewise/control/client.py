"""Admin operations, on the control plane's host (``--dir``) or against a remote control
plane (``--url`` with an ``admin``-scoped access token): one interface, two ways.

:class:`LocalAdmin` calls :class:`~edgewise.control.service.ControlPlane` directly (whoever
can read the control directory is its administrator). :class:`RemoteAdmin` calls
``/v1/admin/...`` over TLS, trusting the fleet root it is given or one whose sha256
matches a pin (fetched like ``edgewise join`` does).

A remote publish reads the artifact folder here and sends only what the control plane
lacks: it asks which blobs are missing, streams each of those (hashing it as it goes; a
file that does not match the manifest is refused here, naming it, and by the control
plane, which stores nothing), hashes the others, then asks for the version to be
created from the uploaded manifest.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import httpx

from edgewise.control.publish import Kind, local_file, read_directory, tampered
from edgewise.control.service import ControlPlane
from edgewise.errors import AuthenticationError, FleetError, ForbiddenError, InvalidRequestError
from edgewise.security.pki import client_context, fingerprint, load_cert, parse_fingerprint
from edgewise.wire import error_message

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
    def publish(self, directory: Path, name: str, kind: Kind | None, alias: str | None,
                why: str) -> dict[str, Any]: ...
    def models(self) -> list[dict[str, Any]]: ...
    def model(self, name: str, ref: str | None) -> dict[str, Any]: ...
    def alias_set(self, name: str, version: int, alias: str, why: str) -> dict[str, Any]: ...
    def rollout_start(self, ref: str, **plan: Any) -> dict[str, Any]: ...
    def rollouts(self, model: str | None) -> list[dict[str, Any]]: ...
    def rollout(self, rid: int) -> dict[str, Any]: ...
    def rollout_action(self, rid: int, action: str, why: str) -> dict[str, Any]: ...
    def close(self) -> None: ...


#: Read files in blocks of this size when hashing and uploading.
_CHUNK = 1 << 20


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

    def publish(self, directory: Path, name: str, kind: Kind | None, alias: str | None,
                why: str) -> dict[str, Any]:
        version, move = self.cp.registry_publish(directory, name=name, kind=kind,
                                                 alias=alias, why=why, by=self.by)
        return {"version": version.to_json(), "alias": move.to_json() if move else None}

    def models(self) -> list[dict[str, Any]]:
        return [a.to_json() for a in self.cp.registry.artifacts()]

    def model(self, name: str, ref: str | None) -> dict[str, Any]:
        return self.cp.registry.detail(name, ref).to_json()

    def alias_set(self, name: str, version: int, alias: str, why: str) -> dict[str, Any]:
        return self.cp.alias_set(name, version, alias, why=why, by=self.by).to_json()

    def rollout_start(self, ref: str, **plan: Any) -> dict[str, Any]:
        probes = plan.pop("probes", None)
        return self.cp.rollout_start(
            ref, by=self.by, selector=plan.pop("nodes", None),
            probes=probes.encode("utf-8") if probes is not None else None, **plan).to_json()

    def rollouts(self, model: str | None) -> list[dict[str, Any]]:
        return [r.to_json() for r in self.cp.rollout_list(name=model)]

    def rollout(self, rid: int) -> dict[str, Any]:
        return self.cp.rollout(rid).to_json()

    def rollout_action(self, rid: int, action: str, why: str) -> dict[str, Any]:
        return self.cp.rollout_action(rid, action, by=self.by, why=why).to_json()

    def close(self) -> None:
        self.cp.close()


def _raise_for(r: httpx.Response) -> None:
    if r.status_code < 400:
        return
    msg = error_message(r.content, f"HTTP {r.status_code}")
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

    def publish(self, directory: Path, name: str, kind: Kind | None, alias: str | None,
                why: str) -> dict[str, Any]:
        pub, data = read_directory(directory)
        digests = sorted({f.sha256 for f in pub.files})
        lacking = set(self._call("POST", "/v1/admin/registry/blobs/missing",
                                 json={"sha256": digests})["missing"])
        for f in pub.files[1:]:  # [0] is the manifest, sent last from ``data``
            src = local_file(directory, f)
            if f.sha256 in lacking:
                actual = self._upload(f.sha256, _read(src, src.stat().st_size))
                lacking.discard(f.sha256)
            else:
                actual = _digest(src)
            if actual != f.sha256:
                raise tampered(directory, f, actual)
        if pub.manifest_sha256 in lacking:
            self._upload(pub.manifest_sha256, (len(data), iter([data])))
        return dict(self._call("POST", "/v1/admin/registry/versions", json={
            "name": name, "manifest_sha256": pub.manifest_sha256, "kind": kind,
            "alias": alias, "why": why}))

    def _upload(self, sha256: str, body: tuple[int, Iterator[bytes]]) -> str:
        """PUT one blob, streamed; returns the digest of what was sent. The control plane
        refuses bytes that do not hash to ``sha256``; the caller names the file."""
        size, chunks = body
        h = hashlib.sha256()

        def hashed() -> Iterator[bytes]:
            for block in chunks:
                h.update(block)
                yield block

        try:
            r = self.http.put(f"/v1/admin/registry/blobs/sha256/{sha256}", content=hashed(),
                              headers={"Content-Type": "application/octet-stream",
                                       "Content-Length": str(size)},
                              timeout=httpx.Timeout(30, read=600))
        except httpx.HTTPError as exc:
            raise FleetError(f"cannot upload to the control plane: {type(exc).__name__}: "
                             f"{exc}") from exc
        if h.hexdigest() == sha256:
            _raise_for(r)
        return h.hexdigest()

    def models(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/admin/registry/models")["models"])

    def model(self, name: str, ref: str | None) -> dict[str, Any]:
        params = {"ref": ref} if ref is not None else None
        return dict(self._call("GET", f"/v1/admin/registry/models/{_seg(name)}",
                               params=params))

    def alias_set(self, name: str, version: int, alias: str, why: str) -> dict[str, Any]:
        return dict(self._call("PUT", f"/v1/admin/registry/models/{_seg(name)}/aliases/"
                                      f"{_seg(alias)}", json={"version": version, "why": why}))

    def rollout_start(self, ref: str, **plan: Any) -> dict[str, Any]:
        return dict(self._call("POST", "/v1/admin/rollouts", json={"ref": ref, **plan}))

    def rollouts(self, model: str | None) -> list[dict[str, Any]]:
        params = {"model": model} if model else None
        return list(self._call("GET", "/v1/admin/rollouts", params=params)["rollouts"])

    def rollout(self, rid: int) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/admin/rollouts/{int(rid)}"))

    def rollout_action(self, rid: int, action: str, why: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/admin/rollouts/{int(rid)}/{_seg(action)}",
                               json={"why": why}))

    def close(self) -> None:
        self.http.close()


def _seg(text: str) -> str:
    """``text`` as one URL path segment."""
    from urllib.parse import quote

    return quote(text, safe="")


def _read(path: Path, size: int) -> tuple[int, Iterator[bytes]]:
    def blocks() -> Iterator[bytes]:
        with path.open("rb") as f:
            yield from iter(lambda: f.read(_CHUNK), b"")
    return size, blocks()


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    for block in _read(path, 0)[1]:
        h.update(block)
    return h.hexdigest()
