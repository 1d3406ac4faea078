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

from cryptography import x509
from cryptography.hazmat.primitives import serialization

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
from edgewise.control.rollouts import (
    DEFAULT_GATES,
    Evidence,
    Plan,
    Rollout,
    RolloutStore,
    deployed,
    evaluate,
    gather,
    missing,
    parse_gate,
    parse_split,
    parse_steps,
    select_nodes,
)
from edgewise.control.settings import ControlSettings, load_settings
from edgewise.control.store import ConfigVersion, ControlStore, NodeRecord
from edgewise.errors import (
    AuthenticationError,
    ConfigError,
    ConflictError,
    DatasetError,
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
from edgewise.federated.status import RunStatus, indexed_runs
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
        self.rollouts = RolloutStore(self.store)
        #: What each step's gates have seen so far (per replica; rollouts.py).
        self._evidence: dict[int, Evidence] = {}
        #: The incumbent's telemetry at an earlier step, for a step with no incumbent left.
        self._baselines: dict[int, dict[str, Any]] = {}
        #: The latest gate values of each active rollout (status between decisions).
        self.gate_values: dict[int, dict[str, Any]] = {}
        #: name -> (aliases, active rollout pointer): what heartbeat answers tell nodes.
        self._pointers: dict[str, tuple[dict[str, int], dict[str, Any] | None]] = {}
        self._pointer_lock = threading.Lock()

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
                             serial=ident.serial, not_after=ident.not_after, now=now,
                             public_key=_key_pem(cert))
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
                         not_after=ident.not_after, now=datetime.now(UTC),
                         public_key=_key_pem(cert))
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
        update = body.get("update")
        if isinstance(update, dict) and isinstance(update.get("model"), str):
            want = self.desired(peer.node, update["model"], str(update.get("alias")))
            if want is not None:  # the node checks its signed pointer now if it differs
                answer["update"] = {"version": want}
        return answer

    def desired(self, node: str, name: str, alias: str) -> int | None:
        """The version ``node`` should serve of ``name`` under ``alias``, as
        the signed pointer says; from memory (refreshed by rollout ticks and moves)."""
        entry = self._pointers.get(name)
        if entry is None:
            try:
                entry = self._refresh_pointer(name)
            except EdgewiseError:
                return None
        aliases, rollout = entry
        if rollout is not None and rollout["alias"] == alias and node in rollout["nodes"]:
            return int(rollout["version"])
        return aliases.get(alias)

    def _refresh_pointer(self, name: str, active: Sequence[Rollout] | None = None
                         ) -> tuple[dict[str, int], dict[str, Any] | None]:
        """Re-read ``name``'s aliases and active rollout (``active``: the active rollouts
        the caller just read) into the heartbeat answers' cache."""
        try:
            aliases = self.registry.aliases(name)
        except UnknownModelError:
            aliases = {}
        mine = [r for r in (self.rollouts.active() if active is None else active)
                if r.name == name]
        entry = (aliases, self._rollout_pointer(mine[0]) if mine else None)
        with self._pointer_lock:
            if len(self._pointers) > 10_000:
                self._pointers.clear()
            self._pointers[name] = entry
        return entry

    def _rollout_pointer(self, r: Rollout) -> dict[str, Any]:
        probes = f"{r.name}/rollouts/{r.id}/probes.jsonl" if r.plan.probes else None
        return r.pointer(probes)

    def _sign_pointer(self, name: str) -> None:
        """Re-sign ``name``'s alias pointer with its aliases and active rollout."""
        aliases, rollout = self._refresh_pointer(name)
        if self.releases is not None:
            self.releases.aliases_moved(name, aliases, rollout)

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
                self._sign_pointer(name)
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
            aliases, rollout = self._refresh_pointer(version.name)
            paths = self.releases.release(version, aliases, rollout)
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

    # -- rollouts (rollouts.py) --------------------------------------------------------
    def rollout_start(self, ref: str, *, by: str, alias: str = "stable",
                      steps: str | Sequence[str] = "1,25,100",
                      gates: Sequence[str] = (), bake_s: float = 600.0,
                      selector: str | None = None,
                      probes: bytes | None = None, step_timeout_s: float = 600.0,
                      split: float | None = None) -> Rollout:
        """Plan and start a rollout of ``NAME@VERSION`` (module rollouts.py); its first
        step's nodes are told through the signed pointer at once. ``split``: an A/B
        rollout, this percentage of each step node's requesters on the new version."""
        try:
            if self.releases is None or not self.releases.passphrase:
                raise ForbiddenError("a rollout re-signs the alias pointer at every step: the "
                                     "control plane needs its TUF repository and "
                                     "$EDGEWISE_CA_PASSPHRASE")
            name, number = parse_ref(ref)
            check_alias(alias)
            version = self.registry.resolve(name, number)
            aliases = self.registry.aliases(name)
            if alias not in aliases:
                raise InvalidRequestError(
                    f"{name} has no alias {alias}: the rollout replaces what it names (the "
                    f"incumbent); set it first with `edgewise control alias set "
                    f"{name}@VERSION {alias}`", param="alias")
            incumbent = aliases[alias]
            if incumbent == version.version:
                raise InvalidRequestError(f"{alias} already names {version.ref}: nothing to "
                                          "roll out", param="version")
            if not 0 <= bake_s <= 7 * 86400 or not 1 <= step_timeout_s <= 86400:
                raise InvalidRequestError("--bake must be 0 s to 7 days and --step-timeout "
                                          "1 s to a day", param="bake_s")
            gate_list = [parse_gate(g) for g in (list(gates) or list(DEFAULT_GATES))]
            probes_sha = None
            probes_n = 0
            if probes is not None:
                probes_n = _check_probes(probes)
                probes_sha = self.blobs.put(probes)
                if not any(g.metric == "accuracy_drop" for g in gate_list):
                    gate_list.append(parse_gate("accuracy_drop<=0.02"))
            elif any(g.metric == "accuracy_drop" for g in gate_list):
                raise InvalidRequestError("the accuracy_drop gate needs a probe set: "
                                          "--probes FILE.jsonl", param="probes")
            plan = Plan(steps=parse_steps(steps), gates=gate_list, bake_s=float(bake_s),
                        selector=selector, probes=probes_sha, probes_n=probes_n,
                        step_timeout_s=float(step_timeout_s), split=parse_split(split))
            eligible = select_nodes(self.nodes(), name=name, alias=alias, selector=selector)
            if not eligible:
                raise InvalidRequestError(
                    f"no node follows {name} under alias {alias}"
                    + (f" and matches --nodes {selector}" if selector else "")
                    + ": a node says what it follows in its heartbeats (fleet.update in its "
                      "config)", param="nodes")
            r = self.rollouts.create(name=name, version=version.version, incumbent=incumbent,
                                     alias=alias, plan=plan, eligible=eligible, by=by,
                                     now=datetime.now(UTC))
        except RequestError as exc:
            self.refused("rollout_start", exc, by=by)
            raise
        except DatasetError as exc:
            err = InvalidRequestError(f"--probes: {exc}", param="probes")
            self.refused("rollout_start", err, by=by)
            raise err from exc
        if probes is not None:
            self.releases.add_probes(name, r.id, r.version, probes)
        self._sign_pointer(name)
        self.record("rollout_start", by=by,
                    reason=f"rollout {r.id}: {r.ref} replacing v{incumbent} under {alias}, "
                           + (f"A/B {split:g}% of requesters, " if split is not None else "")
                           + f"steps {','.join(s.text for s in plan.steps)}, gates "
                           f"{' '.join(g.text for g in plan.gates)}, bake {bake_s:g} s; "
                           f"step 1 on {', '.join(r.assigned)}")
        log.info("rollout %d of %s started: step 1 of %d on %s", r.id, r.ref,
                 len(plan.steps), ", ".join(r.assigned))
        return r

    def rollout(self, rid: int) -> Rollout:
        r = self.rollouts.get(rid, events=True)
        if r is None:
            raise UnknownModelError(f"no rollout {rid}", param="rollout")
        if r.active and rid in self.gate_values:
            r = _with_values(r, self.gate_values[rid])
        return r

    def federated_runs(self, *, limit: int = 10) -> list[tuple[str, RunStatus | None]]:
        """The newest federated deployment runs started against this fleet
        (``edgewise federate run --superlink --dir``), with their status."""
        return indexed_runs(self.dir / "federated", limit=limit)

    def rollout_list(self, *, name: str | None = None) -> list[Rollout]:
        return [_with_values(r, self.gate_values[r.id])
                if r.active and r.id in self.gate_values else r
                for r in self.rollouts.list(name=name)]

    def rollout_action(self, rid: int, action: str, *, by: str, why: str = "") -> Rollout:
        """``pause``, ``resume`` or ``abort`` rollout ``rid``."""
        check_why(why)
        r = self.rollout(rid)
        now = datetime.now(UTC)
        try:
            if not r.active:
                raise ConflictError(f"rollout {rid} is {r.state.replace('_', ' ')}: only an "
                                    "active rollout can be paused, resumed or aborted")
            if action == "pause":
                if r.state == "paused":
                    return r
                got = self.rollouts.change(r, now=now, by=by, kind="pause",
                                           detail={"why": why}, state="paused")
            elif action == "resume":
                if r.state == "running":
                    return r
                # the bake starts over: what was seen while paused is not a clean bake
                got = self.rollouts.change(r, now=now, by=by, kind="resume",
                                           detail={"why": why}, state="running",
                                           phase_at=now)
            elif action == "abort":
                got = self._roll_back(r, now=now, by=by, state="aborted",
                                      reason=f"aborted by {by}" + (f": {why}" if why else ""),
                                      values=r.gate_values)
            else:
                raise InvalidRequestError(f"unknown action {action!r}: pause, resume or abort")
            if got is None:
                raise ConflictError(f"rollout {rid} changed meanwhile (another replica "
                                    "decided); look at its status and retry")
        except RequestError as exc:
            self.refused(f"rollout_{action}", exc, by=by)
            raise
        self.record(f"rollout_{action}", by=by,
                    reason=f"rollout {rid} ({r.ref}) {action}" + (f": {why}" if why else ""))
        return self.rollout(rid)

    def rollout_tick(self, now: datetime | None = None) -> list[Rollout]:
        """Move every active rollout on: deploy, bake, gates, the next step, completion or
        rollback (rollouts.py). Called every second by ``control serve``; returns the
        rollouts it changed."""
        active = self.rollouts.active()
        live = {r.id for r in active}
        for gone in [k for k in self._evidence if k not in live]:
            self._evidence.pop(gone, None)
            self._baselines.pop(gone, None)
            self.gate_values.pop(gone, None)
        if not active:
            return []
        now = now or datetime.now(UTC)
        nodes = {n.name: n for n in self.nodes()}
        changed = []
        for r in active:
            try:
                got = self._tick(r, nodes, now)
            except EdgewiseError as exc:  # the store or the keys: try again next tick
                log.error("rollout %d: %s", r.id, exc)
                continue
            if got is not None:
                changed.append(got)  # _sign_pointer refreshed its cache entry
            else:
                self._refresh_pointer(r.name, active)
        return changed

    def _tick(self, r: Rollout, nodes: dict[str, NodeRecord], now: datetime) -> Rollout | None:
        step = r.step + 1
        elapsed = (now - r.phase_at).total_seconds()
        if r.phase == "deploying":
            done, refused = deployed(r, nodes)
            if refused:
                return self._roll_back(r, now=now, reason=f"step {step}: {refused[0]}")
            if set(done) >= set(r.assigned):
                return self.rollouts.change(
                    r, now=now, by="control", kind="deployed",
                    detail={"step": step, "nodes": r.assigned,
                            "took_s": round(elapsed, 3)}, phase="baking", phase_at=now)
            if elapsed > r.plan.step_timeout_s:
                late = sorted(set(r.assigned) - set(done))
                return self._roll_back(
                    r, now=now, reason=f"step {step}: {', '.join(late[:5])} did not serve "
                                       f"v{r.version} within {r.plan.step_timeout_s:g} s")
            return None
        key = (r.id, r.step, r.phase_at.isoformat())
        ev = self._evidence.get(r.id)
        if ev is None or ev.key != key:
            ev = self._evidence[r.id] = Evidence(key=key)
        gather(ev, r, nodes)
        values, failed = evaluate(r, ev, self._baselines.get(r.id))
        values["elapsed_s"] = round(elapsed, 3)
        self.gate_values[r.id] = values
        if failed is not None:
            return self._roll_back(r, now=now, reason=f"step {step}: {failed}", values=values)
        if r.state != "running":
            return None
        need = missing(r, ev)
        if elapsed < r.plan.bake_s:
            return None
        if need:
            if elapsed > r.plan.bake_s + r.plan.step_timeout_s:
                return self._roll_back(r, now=now, values=values,
                                       reason=f"step {step}: no {need[0]} within "
                                              f"{r.plan.step_timeout_s:g} s of the bake")
            return None
        if values["incumbent"].get("requests"):
            self._baselines[r.id] = values["incumbent"]
        if r.step + 1 < len(r.plan.steps):
            nxt = r.plan.steps[r.step + 1]
            assigned = r.eligible[:nxt.nodes(len(r.eligible))]
            got = self.rollouts.change(
                r, now=now, by="control", kind="step",
                detail={"passed": step, "gates": values, "nodes": assigned},
                step=r.step + 1, assigned=assigned, phase="deploying", phase_at=now,
                gate_values=values)
            if got is not None:
                self._sign_pointer(r.name)
                log.info("rollout %d of %s: step %d passed; step %d on %d node(s)", r.id,
                         r.ref, step, step + 1, len(assigned))
            return got
        got = self.rollouts.change(r, now=now, by="control", kind="complete",
                                   detail={"gates": values}, state="completed", phase="done",
                                   gate_values=values, finished_at=now,
                                   reason=f"every step passed; {r.alias} now names v{r.version}")
        if got is not None:
            self.registry.set_alias(r.name, r.alias, r.version, by=f"rollout/{r.id}",
                                    why=f"rollout {r.id} passed every step", now=now)
            self._sign_pointer(r.name)
            self.record("rollout_complete", by="control",
                        reason=f"rollout {r.id}: {r.ref} passed {len(r.plan.steps)} step(s); "
                               f"{r.alias} moved v{r.incumbent} -> v{r.version}")
            log.info("rollout %d of %s completed: %s now names v%d", r.id, r.ref, r.alias,
                     r.version)
        return got

    def _roll_back(self, r: Rollout, *, now: datetime, reason: str, by: str = "control",
                   state: str = "rolled_back", values: dict[str, Any] | None = None
                   ) -> Rollout | None:
        """Every node of ``r`` back to the incumbent: the pointer is re-signed without
        the rollout; nodes hear it in their next heartbeat answer."""
        got = self.rollouts.change(r, now=now, by=by, kind="rollback" if state == "rolled_back"
                                   else state, detail={"reason": reason, "gates": values or {},
                                                       "nodes": r.assigned},
                                   state=state, phase="done", reason=reason[:2000],
                                   gate_values=values or r.gate_values, finished_at=now)
        if got is None:
            return None
        self._sign_pointer(r.name)
        self.record("rollout_rollback", by=by, outcome="refused:gate"
                    if state == "rolled_back" else "answered",
                    reason=f"rollout {r.id} ({r.ref}) {state.replace('_', ' ')} on "
                           f"{', '.join(r.assigned)}: {reason}")
        log.warning("rollout %d of %s %s: %s; nodes %s return to v%d", r.id, r.ref,
                    state.replace("_", " "), reason, ", ".join(r.assigned), r.incumbent)
        return got

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


def _check_probes(data: bytes) -> int:
    """How many examples a probe set holds (``DatasetError`` naming the line otherwise)."""
    import tempfile

    from edgewise.supply.probe import load_probe_set

    if len(data) > 16 * 2**20:
        raise DatasetError(f"the probe set is {len(data)} bytes; at most 16 MiB")
    with tempfile.TemporaryDirectory(prefix="edgewise-probes-") as tmp:
        path = Path(tmp) / "probes.jsonl"
        path.write_bytes(data)
        try:
            return len(load_probe_set(path))
        except DatasetError as exc:  # name the upload, not the temporary copy
            raise DatasetError(str(exc).replace(str(path), "the probe set")) from None


def _with_values(r: Rollout, values: dict[str, Any]) -> Rollout:
    import dataclasses

    return dataclasses.replace(r, gate_values=values)


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


def _key_pem(cert: x509.Certificate) -> str:
    """The certificate's public key as PEM (SubjectPublicKeyInfo), as the store keeps it."""
    return cert.public_key().public_bytes(serialization.Encoding.PEM,
                                          serialization.PublicFormat.SubjectPublicKeyInfo
                                          ).decode("ascii")
