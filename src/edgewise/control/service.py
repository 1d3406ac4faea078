"""The control plane's decisions, without HTTP: enrolment, renewal, revocation,
heartbeats, central config, access tokens, the model registry — each admin action and
each refusal an audit record.

:class:`ControlPlane` is what ``edgewise control serve`` exposes over TLS
(:mod:`edgewise.control.app`) and what the admin commands call directly with
``--dir`` on the control plane's host. Its state lives in the
:class:`~edgewise.control.store.ControlStore` (SQLite, or PostgreSQL shared by several
replicas) and, for the CA, in files under the control directory (see
:mod:`edgewise.security.pki`). Methods are synchronous (the app runs them in a thread).

Trust decisions, in order, for a join: the join token's format, then the store's atomic
single-use redemption bound to the node name (a replica race cannot enrol twice), then
the CSR (its self-signature, and no name the token does not grant). Renewal and
heartbeats authenticate with the node's current certificate, verified by the TLS
handshake against the fleet root and checked here against the deny list.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from edgewise.config import parse_config
from edgewise.control.blobs import BlobStore, BlobWriter
from edgewise.control.heartbeats import HeartbeatDesk
from edgewise.control.publish import (
    MAX_MANIFEST_BYTES,
    Kind,
    Publication,
    local_file,
    parse_ref,
    read_directory,
    read_manifest,
    tampered,
)
from edgewise.control.registry import (
    AliasMove,
    ArtifactVersion,
    RegistryStore,
    check_alias,
    check_why,
)
from edgewise.control.release import Releases
from edgewise.control.settings import ControlSettings, load_settings
from edgewise.control.store import ConfigVersion, ControlStore, NodeRecord
from edgewise.errors import (
    AuthenticationError,
    ConfigError,
    EdgewiseError,
    ForbiddenError,
    InvalidRequestError,
    ModelError,
    ModelNotFoundError,
    PKIError,
    RateLimitedError,
    RequestError,
    UnknownModelError,
)
from edgewise.security.audit import AuditLog
from edgewise.security.audit_record import AuditRecord
from edgewise.security.pki import (
    CAFiles,
    FleetCA,
    NodeIdentity,
    check_hosts,
    check_name,
    identity_of,
    load_csr,
    load_private_key,
)
from edgewise.security.tokens import (
    AccessClaims,
    AccessTokenIssuer,
    AccessTokenVerifier,
    check_join_token,
    fleet_audience,
    join_token_digest,
    new_join_token,
    node_audience,
)

__all__ = ["CONFIG_SECTIONS", "ControlPlane", "JoinResult", "validate_central_config"]

log = logging.getLogger("edgewise.control")

#: The sections of a node's config the control plane holds centrally.
CONFIG_SECTIONS = ("tiers", "routing", "privacy")


def validate_central_config(body: Any, *, source: str) -> dict[str, Any]:
    """Check a central config body: only :data:`CONFIG_SECTIONS`, and valid as a node
    config (``ConfigError`` with the same key-path messages as a node's YAML)."""
    if not isinstance(body, dict):
        raise ConfigError(f"{source}: a central config is a mapping of "
                          f"{', '.join(CONFIG_SECTIONS)}, got {type(body).__name__}")
    bad = _non_finite(body)  # it is stored and sent as JSON, which has no NaN/Infinity
    if bad is not None:
        raise ConfigError(f"{source}: {bad}: must be a finite number (got NaN or Infinity)")
    extra = sorted(set(body) - set(CONFIG_SECTIONS))
    if extra:
        raise ConfigError(f"{source}: {', '.join(extra)}: not held centrally; a central "
                          f"config may set only {', '.join(CONFIG_SECTIONS)}")
    parse_config(body, source=source)
    return body


def _non_finite(value: Any, path: str = "") -> str | None:
    """The key path of the first NaN/Infinity in ``value`` (``None``: there is none)."""
    if isinstance(value, float) and not math.isfinite(value):
        return path or "(top level)"
    items = value.items() if isinstance(value, dict) else enumerate(value) \
        if isinstance(value, list) else ()
    for key, item in items:
        found = _non_finite(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


@dataclass(frozen=True)
class JoinResult:
    fleet: str
    node: str
    tier: str
    spiffe_id: str
    certificate: str  # leaf + intermediate, PEM
    ca: str  # the root, PEM
    token_key: str  # public key of access tokens, PEM
    token_issuer: str
    heartbeat_s: float
    not_after: datetime
    #: The fleet's TUF root (the node's updater is bootstrapped with it) and the public
    #: release key model-signing signatures are checked with; None before a repository.
    tuf_root: str | None = None
    release_key: str | None = None


class _FailureWindow:
    """Failed join attempts per client address in the last minute (brute-force guard;
    per replica, in memory: a replica restart forgets it, which only helps an attacker
    by one minute's worth of attempts against 256-bit tokens)."""

    def __init__(self, limit: int, window_s: float = 60.0) -> None:
        self.limit = limit
        self.window_s = window_s
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            q = self._seen.get(client)
            while q and now - q[0] > self.window_s:
                q.popleft()
            if q and len(q) >= self.limit:
                raise RateLimitedError(
                    f"too many failed join attempts from {client}; wait "
                    f"{self.window_s - (now - q[0]):.0f} s",
                    retry_after=self.window_s - (now - q[0]))

    def failed(self, client: str) -> None:
        with self._lock:
            self._seen.setdefault(client, deque()).append(time.monotonic())
            if len(self._seen) > 100_000:  # bounded memory under a flood of addresses
                self._seen.pop(next(iter(self._seen)))


class ControlPlane:
    """One fleet's control plane, opened from its directory (module docstring)."""

    def __init__(self, directory: str | Path, *, database_url: str | None = None) -> None:
        self.dir = Path(directory)
        self.settings: ControlSettings = load_settings(self.dir)
        self.fleet = self.settings.fleet
        self.files = CAFiles.under(self.dir)
        self.ca = FleetCA.load(self.dir)
        url = database_url or self.settings.database_url or \
            f"sqlite:///{(self.dir / 'control.sqlite').resolve()}"
        self.store = ControlStore.open(url)
        self.desk = HeartbeatDesk(self.store, fleet=self.fleet)
        self.registry = RegistryStore(self.store)
        self.blobs = BlobStore(self.dir / "registry")
        #: The fleet's TUF repository (``control init`` makes it): published versions and
        #: alias moves become signed targets nodes update from. ``None``: a control
        #: directory from before it existed, which registers versions but releases none.
        self.releases: Releases | None = None
        if (self.dir / "tuf" / "metadata" / "timestamp.json").is_file():
            phrase = os.environ.get("EDGEWISE_CA_PASSPHRASE", "").encode("utf-8") or None
            self.releases = Releases(self.dir / "tuf", self.blobs, passphrase=phrase)
        self.audit = AuditLog(self.dir / "audit.sqlite")
        key = load_private_key(self.files.signing_key.read_bytes(),
                               source=str(self.files.signing_key))
        self.issuer_name = f"spiffe://{self.fleet}/control"
        self.issuer = AccessTokenIssuer(key, issuer=self.issuer_name)
        self.verifier = AccessTokenVerifier(key.public_key(), issuer=self.issuer_name,
                                            audiences=[fleet_audience(self.fleet),
                                                       node_audience(self.fleet, "control")])
        self.token_key_pem = self.files.signing_pub.read_text(encoding="ascii")
        self._failures = _FailureWindow(self.settings.join_failures_per_minute)

    def close(self) -> None:
        self.desk.close()
        self.store.close()
        self.audit.close()

    # -- audit ------------------------------------------------------------------------
    def record(self, action: str, *, by: str, node: str | None = None,
               outcome: str = "answered", reason: str = "") -> None:
        """One audit record of an admin action or a refusal (never a secret)."""
        try:
            self.audit.append(AuditRecord(
                requester=by, request_id=f"ctl-{secrets.token_hex(8)}",
                route=f"control/{action}", node=node or "control", outcome=outcome,
                reason=reason[:500]))
        except (EdgewiseError, ValueError) as exc:  # never lose the action over the log
            log.error("audit record for control/%s failed: %s", action, exc)

    def refused(self, action: str, exc: RequestError, *, by: str,
                node: str | None = None) -> None:
        code = (exc.code or exc.error_type or "refused").replace("-", "_")
        self.record(action, by=by, node=node if node and _safe(node) else None,
                    outcome=f"refused:{code}", reason=exc.message)

    # -- join tokens and enrolment ------------------------------------------------------
    def create_join_token(self, *, node: str, tier: str, ttl: timedelta | None = None,
                          by: str, hosts: Sequence[str] = ()) -> tuple[str, datetime]:
        """A join token for ``node``; ``hosts`` (DNS names, addresses) go into its
        certificate too, so applications can reach it over HTTPS by them."""
        check_name("node", node)
        check_name("tier", tier)
        granted = check_hosts(self.fleet, hosts)
        if node == "control":
            raise ConfigError("node name 'control' is the control plane's own; pick another")
        ttl = ttl or timedelta(minutes=self.settings.join_token_minutes)
        if ttl <= timedelta(0) or ttl > timedelta(days=7):
            raise ConfigError("--ttl must be between 1 s and 7 days")
        token = new_join_token()
        now = datetime.now(UTC)
        self.store.add_join_token(join_token_digest(token), node=node, tier=tier,
                                  expires_at=now + ttl, created_by=by, now=now, hosts=granted)
        self.record("token_create", by=by, node=node,
                    reason=f"join token for node {node} tier {tier}, valid {ttl}"
                           + (f", hosts {' '.join(granted)}" if granted else ""))
        return token, now + ttl

    def join(self, *, token: str, node: str, csr_pem: str, client: str) -> JoinResult:
        """Enrol ``node``: check its join token, its CSR against what the token grants,
        and that the name is not revoked — all before the token is spent, so a refused
        CSR leaves the token usable — then redeem the token (atomically: of two racing
        joins one wins) and sign."""
        self._failures.check(client)
        try:
            check_name("node", node)
            check_join_token(token)
            csr = load_csr(csr_pem)
            now = datetime.now(UTC)
            digest = join_token_digest(token)
            grant = self.store.peek_join_token(digest, node=node, now=now)
            known = self.store.node(node)
            if known is not None and known.revoked_at is not None:
                raise ForbiddenError(
                    f"node {node} was revoked at {known.revoked_at:%Y-%m-%dT%H:%M:%SZ}; a "
                    "revoked name is not enrolled again: create the join token for a new "
                    "node name")
            cert = self.ca.issue_node(csr, node=node, tier=grant.tier, hosts=grant.hosts,
                                      lifetime=timedelta(hours=self.settings.node_cert_hours))
            self.store.redeem_join_token(digest, node=node, now=now)
            ident = identity_of(cert, fleet=self.fleet)
            self.store.enrol(node=node, tier=grant.tier, spiffe_id=ident.spiffe_id,
                             serial=ident.serial, not_after=ident.not_after, now=now)
            self.desk.changed()
        except ConfigError as exc:
            err = InvalidRequestError(str(exc), param="node")
            self._failures.failed(client)
            self.refused("join", err, by=client, node=None)
            raise err from exc
        except RequestError as exc:
            self._failures.failed(client)
            self.refused("join", exc, by=_requester(client), node=node)
            raise
        self.record("join", by=_requester(client), node=node,
                    reason=f"enrolled {ident.spiffe_id} tier {ident.tier} serial "
                           f"{ident.serial[:16]}")
        return JoinResult(fleet=self.fleet, node=node, tier=grant.tier,
                          spiffe_id=ident.spiffe_id,
                          certificate=self.ca.chain_pem(cert).decode("ascii"),
                          ca=self.ca.root_pem().decode("ascii"), token_key=self.token_key_pem,
                          token_issuer=self.issuer_name, heartbeat_s=self.settings.heartbeat_s,
                          not_after=ident.not_after,
                          tuf_root=self.releases.repo.root_bytes().decode("utf-8")
                          if self.releases else None,
                          release_key=self.releases.release_pub.read_text("ascii")
                          if self.releases else None)

    def check_peer(self, peer: NodeIdentity) -> NodeRecord:
        """A node presenting a certificate the TLS layer verified: refuse it if it is
        revoked or unknown (a certificate from before a re-enrolment counts as revoked
        once its serial is on the deny list)."""
        if self.store.is_denied(peer.serial):
            raise ForbiddenError(f"node {peer.node} is revoked; its certificate "
                                 f"{peer.serial[:16]} is no longer accepted")
        rec = self.store.node(peer.node)
        if rec is None:
            raise ForbiddenError(f"node {peer.node} is not enrolled in fleet {self.fleet}")
        if rec.revoked_at is not None:
            raise ForbiddenError(f"node {peer.node} is revoked")
        return rec

    def renew(self, peer: NodeIdentity, csr_pem: str) -> tuple[str, datetime]:
        try:
            rec = self.check_peer(peer)
            csr = load_csr(csr_pem)
            cert = self.ca.issue_node(csr, node=peer.node, tier=rec.tier, hosts=peer.hosts,
                                      lifetime=timedelta(hours=self.settings.node_cert_hours))
        except RequestError as exc:
            self.refused("renew", exc, by=peer.spiffe_id, node=peer.node)
            raise
        ident = identity_of(cert, fleet=self.fleet)
        self.store.renew(node=peer.node, old_serial=peer.serial, serial=ident.serial,
                         not_after=ident.not_after, now=datetime.now(UTC))
        self.record("renew", by=peer.spiffe_id, node=peer.node,
                    reason=f"certificate {ident.serial[:16]} until "
                           f"{ident.not_after:%Y-%m-%dT%H:%MZ}")
        return self.ca.chain_pem(cert).decode("ascii"), ident.not_after

    def revoke(self, node: str, *, by: str) -> list[str]:
        serials = self.store.revoke(node, now=datetime.now(UTC))
        self.desk.changed()
        self.record("revoke", by=by, node=node if _safe(node) else None,
                    reason=f"revoked node {node}: {len(serials)} certificate(s) denied")
        return serials

    # -- heartbeats and config -----------------------------------------------------------
    def heartbeat(self, peer: NodeIdentity, body: dict[str, Any], *,
                  applied_config: int | None, config_error: str | None) -> dict[str, Any]:
        """Take a node's heartbeat; the answer carries the deny list and, when the node
        has not applied it yet, its newest config. From memory (:mod:`.heartbeats`)."""
        try:
            deny, cfg = self.desk.accept(peer, body, applied_config=applied_config,
                                         config_error=config_error)
        except RequestError as exc:
            self.refused("heartbeat", exc, by=peer.spiffe_id, node=peer.node)
            raise
        answer: dict[str, Any] = {
            "heartbeat_s": self.settings.heartbeat_s,
            "deny": {"version": deny.version, "serials": list(deny.serials),
                     "nodes": list(deny.nodes)},
            "config": None,
        }
        if cfg is not None and cfg.id != applied_config:
            answer["config"] = {"id": cfg.id, "version": cfg.version,
                                "target": f"{cfg.target_kind}:{cfg.target}", "body": cfg.body}
        return answer

    def push_config(self, *, target_kind: str, target: str, body: Any, by: str,
                    source: str = "config") -> ConfigVersion:
        check_name(target_kind, target)
        try:
            validate_central_config(body, source=source)
        except ConfigError as exc:
            self.record("config_push", by=by, outcome="refused:invalid_config",
                        reason=f"config for {target_kind} {target} does not validate")
            raise InvalidRequestError(str(exc), param="body") from exc
        if target_kind not in ("node", "tier"):
            raise InvalidRequestError("target must be a node or a tier")
        version = self.store.push_config(target_kind=target_kind,  # type: ignore[arg-type]
                                         target=target, body=body, created_by=by,
                                         now=datetime.now(UTC))
        self.desk.changed()
        self.record("config_push", by=by, node=target if target_kind == "node" else None,
                    reason=f"config v{version.version} (id {version.id}) for "
                           f"{target_kind} {target}")
        return version

    # -- the model registry ----------------------------------------------------------------
    def registry_publish(self, directory: Path, *, name: str, by: str, kind: Kind | None = None,
                         alias: str | None = None, why: str = ""
                         ) -> tuple[ArtifactVersion, AliasMove | None]:
        """Publish the artifact folder ``directory`` (on this host) as ``name``'s next
        version: each file the manifest lists is hashed while it is copied into the blob
        store, and the first that does not match refuses the publish (files copied
        before it stay, as blobs no version lists; a corrected publish reuses them)."""
        try:
            self._check_publish(name, kind, alias, why)
            pub, data = read_directory(directory)
            for f in pub.files[1:]:  # [0] is the manifest, written from ``data`` below
                actual = self.blobs.ingest(local_file(directory, f), f.sha256)
                if actual != f.sha256:
                    raise tampered(directory, f, actual)
            if not self.blobs.has(pub.manifest_sha256):
                with self.blobs.writer() as w:
                    w.write(data)
                    w.commit(pub.manifest_sha256)
        except (RequestError, ModelError) as exc:
            self._publish_refused(exc, by=by)
            raise
        return self._publish(pub, name=name, kind=kind, alias=alias, why=why, by=by)

    def registry_missing(self, digests: Sequence[str]) -> list[str]:
        """Which of ``digests`` the blob store lacks (a remote publish uploads those)."""
        return [d for d in digests if not self.blobs.has(d)]

    def registry_blob(self, writer: BlobWriter, sha256: str, *, by: str) -> bool:
        """Commit an uploaded blob if its bytes hash to ``sha256`` (its URL's name);
        returns whether it was new. A mismatch is refused and nothing stays."""
        fresh = not self.blobs.has(sha256)
        if writer.hexdigest() != sha256:
            writer.discard()
            exc = InvalidRequestError(
                f"the upload hashes to sha256 {writer.hexdigest()[:16]}…, not the "
                f"{sha256[:16]}… its URL names: nothing was stored; upload the file's exact "
                "bytes", param="sha256", code="digest_mismatch")
            self.refused("registry_blob", exc, by=by)
            raise exc
        writer.commit(sha256)
        self.record("registry_blob", by=by,
                    reason=f"blob sha256 {sha256} ({writer.size} bytes"
                           + (", new)" if fresh else ", already stored)"))
        return fresh

    def registry_create(self, *, name: str, manifest_sha256: str, by: str,
                        kind: Kind | None = None, alias: str | None = None,
                        why: str = "") -> tuple[ArtifactVersion, AliasMove | None]:
        """Publish from uploaded blobs: the manifest blob ``manifest_sha256`` and every
        file it lists must be stored already (each was verified as it was uploaded)."""
        try:
            self._check_publish(name, kind, alias, why)
            data = self.blobs.read_bytes(manifest_sha256, limit=MAX_MANIFEST_BYTES)
            pub = read_manifest(data, source=f"manifest {manifest_sha256[:16]}…")
            for f in pub.files:
                size = self.blobs.size(f.sha256)
                if size is None:
                    raise InvalidRequestError(
                        f"{f.path} (sha256 {f.sha256[:16]}…) is not uploaded: PUT it to "
                        f"/v1/admin/registry/blobs/sha256/{f.sha256} first", param="files")
                if size != f.size_bytes:
                    raise InvalidRequestError(
                        f"{f.path}: the manifest records {f.size_bytes} bytes, its blob has "
                        f"{size}: the manifest does not describe these files", param="files")
        except RequestError as exc:
            self._publish_refused(exc, by=by)
            raise
        return self._publish(pub, name=name, kind=kind, alias=alias, why=why, by=by)

    def alias_set(self, name: str, version: int, alias: str, *, by: str,
                  why: str = "") -> AliasMove:
        """Point ``alias`` at ``name@version``; the move is kept in its history."""
        try:
            move = self.registry.set_alias(name, alias, version, by=by, why=why,
                                           now=datetime.now(UTC))
        except RequestError as exc:
            self.refused("alias_set", exc, by=by)
            raise
        self.record("alias_set", by=by, reason=_move_reason(move))
        if self.releases is not None:
            try:
                self.releases.aliases_moved(name, self.registry.aliases(name))
            except PKIError as exc:
                raise ForbiddenError(f"{alias} moved in the registry but nodes are not told: "
                                     f"{exc}") from exc
        return move

    def _check_publish(self, name: str, kind: str | None, alias: str | None,
                       why: str) -> None:
        """The request's own values, before any file is read."""
        try:
            check_name("model", name)
        except ConfigError as exc:
            raise InvalidRequestError(str(exc), param="name") from None
        if kind is not None and kind not in ("base", "variant", "adapter"):
            raise InvalidRequestError(f"--kind {kind!r}: use base, variant or adapter",
                                      param="kind")
        if alias is not None:
            check_alias(alias)
        check_why(why)

    def _publish(self, pub: Publication, *, name: str, kind: Kind | None, alias: str | None,
                 why: str, by: str) -> tuple[ArtifactVersion, AliasMove | None]:
        try:
            parent = self._parent(pub, name)
            version, move = self.registry.publish(pub, name=name, kind=kind or pub.kind,
                                                  by=by, now=datetime.now(UTC),
                                                  parent=parent, alias=alias, why=why)
        except RequestError as exc:
            self._publish_refused(exc, by=by)
            raise
        self.record("registry_publish", by=by,
                    reason=f"published {version.ref} ({version.kind}, {len(version.files)} "
                           f"files, {version.total_bytes} bytes, manifest sha256 "
                           f"{version.manifest_sha256})"
                           + (f", parent {version.lineage.parent}" if parent else "")
                           + (f": {why}" if why else ""))
        if move is not None:
            self.record("alias_set", by=by, reason=_move_reason(move))
        self._release(version, by=by)
        return version, move

    def _release(self, version: ArtifactVersion, *, by: str) -> None:
        """Sign a registered version as TUF targets for the nodes (module release.py)."""
        if self.releases is None:
            return
        try:
            paths = self.releases.release(version, self.registry.aliases(version.name))
        except PKIError as exc:
            self.record("release", by=by, outcome="refused:keys_offline",
                        reason=f"{version.ref} registered but not released: {exc}")
            raise ForbiddenError(f"{version.ref} is registered but not released to nodes: "
                                 f"{exc}") from exc
        self.record("release", by=by, reason=f"released {version.ref} as {len(paths)} TUF "
                                             "targets with a model-signing signature")

    def _parent(self, pub: Publication, name: str) -> tuple[str, int] | None:
        """The parent the manifest names, else the version holding its source model."""
        if pub.lineage.parent is not None:
            parent, number = parse_ref(pub.lineage.parent)
            if int(number or 0) >= 2**31:
                raise UnknownModelError(f"the manifest's parent {pub.lineage.parent[:80]} is "
                                        "not in the registry", param="parent")
            return parent, int(number or 0)
        source = pub.lineage.source.get("sha256")
        if isinstance(source, str):
            return self.registry.version_holding(source, besides=name)
        return None

    def _publish_refused(self, exc: RequestError | ModelError, *, by: str) -> None:
        if isinstance(exc, RequestError):
            self.refused("registry_publish", exc, by=by)
        else:
            code = "missing_file" if isinstance(exc, ModelNotFoundError) else "integrity"
            self.record("registry_publish", by=by, reason=str(exc), outcome=f"refused:{code}")

    # -- access tokens -------------------------------------------------------------------
    def issue_access_token(self, *, subject: str, scopes: list[str], ttl: timedelta,
                           node: str | None = None, sensitivity: str | None = None,
                           by: str) -> str:
        audience = node_audience(self.fleet, node) if node else fleet_audience(self.fleet)
        token = self.issuer.issue(subject=subject, scopes=scopes, audience=audience, ttl=ttl,
                                  sensitivity=sensitivity)
        self.record("access_token", by=by,
                    reason=f"token for {subject} scopes {' '.join(sorted(scopes))} "
                           f"audience {audience} valid {ttl}")
        return token

    def authorize(self, token: str | None, *, scope: str, client: str) -> AccessClaims:
        """The claims of a bearer token that has ``scope``; a refusal is audited as a
        failed login."""
        try:
            if not token:
                raise AuthenticationError(
                    f"this route needs an access token with the {scope} scope: send "
                    "'Authorization: Bearer <token>' (`edgewise control access-token`)")
            return self.verifier.verify(token, scope=scope)
        except RequestError as exc:
            self.record("login", by=_requester(client), outcome="refused:"
                        + (exc.code or "unauthenticated"), reason=exc.message)
            raise

    def nodes(self) -> list[NodeRecord]:
        """Every node, with the heartbeats taken so far written first."""
        self.desk.flush()
        return self.store.nodes()

    def node(self, name: str) -> NodeRecord | None:
        self.desk.flush()
        return self.store.node(name)


def _move_reason(move: AliasMove) -> str:
    was = "new" if move.from_version is None else f"v{move.from_version}"
    return (f"{move.name} alias {move.alias}: {was} -> v{move.to_version}"
            + (f": {move.why}" if move.why else ""))


def _requester(client: str) -> str:
    """An audit requester for a client address (``ip:port`` shapes are fine)."""
    return client if _safe(client) else "unknown"


def _safe(name: str) -> bool:
    import re

    return re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@:/+=\-]{0,63}", name) is not None
