"""The node agent: joins a fleet, then keeps the node's identity, deny list and central
config current, beside the API in the same process.

**Join** (:func:`join`, ``edgewise join``) works like ``kubeadm join``'s CA pinning: the
node fetches the fleet's root CA over TLS *without* trusting it yet, compares its sha256
with ``--ca-sha256`` (printed by ``edgewise control init``) and stops if they differ; only
then does it trust that root, make its key pair locally (the private key never leaves
the node, mode 0600), and send a CSR with the one-time join token over TLS verified
against the pinned root.

**Running** (:class:`NodeAgent`, started by ``edgewise serve`` on a joined node):

1. every ``heartbeat_s`` (default 10 s) a heartbeat over mutual TLS: identity (the
   certificate), version, model and digest, tiers with breaker states and request
   counts, queue depth, tokens/s, TTFT p50/p95, error rate, energy estimate, audit head,
   and which config version is applied (or why the last one was rejected);
2. the answer carries the deny list (applied at once to the node's server and its tier
   clients, and saved, so an offline node keeps the last list) and, when the control
   plane holds a newer config for this node or its tier, that config: the node validates
   it as its own config would be validated and applies it (``apply_config`` callback),
   or rejects it and reports why, keeping the last good one; and, for a node following a
   model (``fleet.update``), the version the signed pointer names for it: when that is
   not what it serves (a rollout step, a rollback), the update check runs right after
   this heartbeat instead of at the next ``interval_s`` — a hint only, the signed pointer
   decides what is installed. The check runs beside the heartbeats, not between them (a
   download of a large model or a probe set takes longer than an interval, and the node
   must keep reporting and receiving deny lists meanwhile); when it changed the node's
   update state, a heartbeat reports it at once;
3. at half its certificate's lifetime it renews: a fresh key pair, a CSR authenticated by
   the current certificate; the new pair replaces the old on disk (crash-safe, see
   :meth:`FleetState.save_pair`) and is loaded into the live TLS contexts, so new
   handshakes use it while open connections finish on the old one — no failed request.

When the control plane is unreachable the node keeps serving with what it has; it
retries at the heartbeat interval and logs the outage once, and its recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from edgewise.errors import EdgewiseError, FleetError
from edgewise.fleet.state import FleetState, Membership, StoredConfig
from edgewise.fleet.updates import ModelFollower
from edgewise.security.peers import DenyList
from edgewise.security.pki import (
    CLOCK_SKEW,
    check_name,
    client_context,
    csr_pem,
    fingerprint,
    generate_key,
    identity_of,
    load_cert,
    load_chain,
    make_csr,
    parse_fingerprint,
    private_pem,
    reload_cert,
)
from edgewise.wire import error_message

__all__ = ["ApplyConfig", "NodeAgent", "join"]

log = logging.getLogger("edgewise.fleet")

#: ``apply_config(stored)`` applies a central config; returns ``None`` or why it was
#: rejected (one line).
ApplyConfig = Callable[[StoredConfig], Awaitable[str | None]]


def _version() -> str:
    # Not ``edgewise.__version__``: importing the package root from here would be an
    # import of the layers above (it re-exports the app).
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgewise")
    except PackageNotFoundError:  # pragma: no cover - a source tree without metadata
        return "unknown"


def _error_message(r: httpx.Response) -> str:
    return error_message(r.content, f"HTTP {r.status_code}")


def join(control_url: str, *, token: str, ca_sha256: str, state_dir: str | Path,
         node: str, transport: httpx.BaseTransport | None = None,
         timeout: float = 15.0) -> Membership:
    """Join the fleet whose control plane is at ``control_url`` (module docstring).

    Raises:
        FleetError: a CA that does not match the pin, a refused token, an unreachable
            control plane — one line that says what to do.
    """
    check_name("node", node)
    pin = parse_fingerprint(ca_sha256)
    base = control_url.rstrip("/")
    if not base.startswith("https://"):
        raise FleetError(f"the control plane URL must be https:// (got {control_url!r})")
    state = FleetState(state_dir)
    # 1. The CA, fetched without verification: it is trusted only if it matches the pin.
    try:
        with httpx.Client(verify=False, timeout=timeout, transport=transport) as c:
            r = c.get(f"{base}/v1/fleet/ca")
    except httpx.HTTPError as exc:
        raise FleetError(f"cannot reach the control plane at {base}: "
                         f"{type(exc).__name__}; check the URL and that "
                         "`edgewise control serve` runs") from exc
    if r.status_code != 200:
        raise FleetError(f"{base}/v1/fleet/ca answered {r.status_code}: is this an "
                         "edgewise control plane?")
    try:
        ca_pem = str(r.json()["ca"]).encode("ascii")
        root = load_cert(ca_pem, source="the control plane's CA")
    except (ValueError, KeyError, TypeError, EdgewiseError) as exc:
        raise FleetError(f"{base} did not send a CA certificate") from exc
    got = fingerprint(root)
    if got != pin:
        raise FleetError(f"the control plane's CA is {got}, not the pinned {pin}: a wrong "
                         "--ca-sha256, another fleet, or someone in between; refusing to "
                         "join (`edgewise control init` printed the right digest)")
    # 2. Key and CSR made here; the private key never leaves this machine.
    key = generate_key()
    csr = make_csr(key, node)
    with tempfile.TemporaryDirectory() as tmp:
        ca_file = Path(tmp) / "ca.pem"
        ca_file.write_bytes(ca_pem)
        ctx = client_context(ca_file)
    try:
        with httpx.Client(verify=ctx, timeout=timeout, transport=transport) as c:
            r = c.post(f"{base}/v1/join", json={"token": token.strip(), "node": node,
                                                 "csr": csr_pem(csr).decode("ascii")})
    except httpx.HTTPError as exc:
        raise FleetError(f"join request to {base} failed: {type(exc).__name__}: {exc}") from exc
    if r.status_code != 200:
        raise FleetError(f"the control plane refused the join ({r.status_code}): "
                         f"{_error_message(r)}")
    body = r.json()
    chain = body["certificate"].encode("ascii")
    ident = identity_of(load_chain(chain)[0], fleet=body["fleet"])
    if ident.node != node:
        raise FleetError(f"the control plane issued a certificate for {ident.node}, not {node}")
    state.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    state.save_pair(private_pem(key), chain)
    state.ca_file.write_bytes(ca_pem)
    state.token_key_file.write_text(body["token_key"], encoding="ascii")
    if body.get("tuf_root"):  # what signed model updates are checked against
        state.tuf_root_file.write_text(body["tuf_root"], encoding="utf-8")
        state.release_key_file.write_text(body["release_key"], encoding="ascii")
    m = Membership(fleet=body["fleet"], node=node, tier=body["tier"],
                   spiffe_id=body["spiffe_id"], control_url=base, ca_sha256=pin,
                   heartbeat_s=float(body["heartbeat_s"]), token_issuer=body["token_issuer"],
                   joined_at=datetime.now(UTC).isoformat())
    state.save_membership(m)
    return m


@dataclass
class AgentStatus:
    """What the agent last saw (``/readyz`` and ``edgewise doctor`` can show it)."""

    last_heartbeat: datetime | None = None
    control_reachable: bool | None = None
    last_error: str | None = None
    revoked: bool = False
    applied_config: int | None = None
    rejected_config: int | None = None
    config_error: str | None = None
    renewals: int = 0


class NodeAgent:
    """The agent of one joined node (module docstring).

    ``report()`` returns the heartbeat's statistics; ``apply_config`` applies a central
    config; ``server_context`` is the node's HTTPS context when ``serving.tls`` is on.
    """

    def __init__(self, state: FleetState, *, report: Callable[[], dict[str, Any]],
                 apply_config: ApplyConfig | None = None,
                 server_context: ssl.SSLContext | None = None,
                 client_tls: ssl.SSLContext | None = None, deny: DenyList | None = None,
                 heartbeat_s: float | None = None,
                 transport: httpx.AsyncBaseTransport | None = None,
                 follower: ModelFollower | None = None) -> None:
        """``client_tls`` and ``deny`` are shared with the node's tier clients and server
        (so a renewal and a revocation reach them too); made here if not given."""
        self.state = state
        self.membership = state.membership()
        if deny is None:
            deny = DenyList()
            state.load_deny_list(deny)
        self.deny = deny
        self.report = report
        self.apply_config = apply_config
        self.server_context = server_context
        self.client_context = client_tls or client_context(
            state.ca_file, cert_chain=state.cert_file, key=state.key_file)
        self.heartbeat_s = heartbeat_s or self.membership.heartbeat_s
        self._fixed_interval = heartbeat_s is not None
        self.status = AgentStatus()
        last = state.last_config()
        if last is not None:
            self.status.applied_config = last.id
        self._transport = transport
        #: Signed model updates (``fleet.update``), checked after heartbeats.
        self.follower = follower
        self._next_update = 0.0
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._update_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    @property
    def identity(self) -> Any:
        return self.state.identity()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.membership.control_url, verify=self.client_context,
                transport=self._transport, timeout=httpx.Timeout(10.0, connect=5.0))
        return self._client

    # -- one round ------------------------------------------------------------------------
    async def heartbeat_once(self) -> dict[str, Any] | None:
        """Send one heartbeat and act on the answer; ``None`` if the control plane could
        not be reached or refused it (the node carries on with what it has)."""
        report = self.report()
        body = {"version": _version(), **report,
                "applied_config": self.status.applied_config,
                "config_error": self.status.config_error}
        if self.follower is not None:
            body["update"] = self.follower.status.to_json()
        try:
            r = await self._http().post("/v1/heartbeat", json=body)
        except httpx.HTTPError as exc:
            self._unreachable(f"{type(exc).__name__}: {exc}")
            return None
        if r.status_code != 200:
            msg = _error_message(r)
            if r.status_code == 403:
                if not self.status.revoked:
                    log.error("the control plane refuses this node: %s", msg)
                self.status.revoked = True
            else:
                self._unreachable(f"heartbeat answered {r.status_code}: {msg}")
            return None
        if self.status.control_reachable is False:
            log.info("control plane %s reachable again", self.membership.control_url)
        self.status.control_reachable = True
        self.status.last_error = None
        self.status.last_heartbeat = datetime.now(UTC)
        answer: dict[str, Any] = r.json()
        deny = answer.get("deny") or {}
        if self.deny.update(int(deny.get("version", 0)), deny.get("serials", []),
                            deny.get("nodes", [])):
            log.info("deny list v%d: %d node(s) revoked", self.deny.version,
                     len(self.deny.nodes))
            self.state.save_deny_list(self.deny)
        if not self._fixed_interval and answer.get("heartbeat_s"):
            self.heartbeat_s = float(answer["heartbeat_s"])
        cfg = answer.get("config")
        if cfg and cfg["id"] not in (self.status.applied_config, self.status.rejected_config):
            await self._apply(StoredConfig(id=int(cfg["id"]), version=int(cfg["version"]),
                                           target=str(cfg["target"]), body=cfg["body"]))
        want = answer.get("update")
        if self.follower is not None and isinstance(want, dict):
            try:
                if self.follower.wants(int(want["version"])):
                    self._next_update = 0.0  # a rollout step or a rollback: check now
            except (KeyError, TypeError, ValueError):
                pass
        return answer

    async def update_once(self, *, force: bool = False) -> None:
        """Check for a signed model update (:mod:`edgewise.fleet.updates`) when one is
        due (``fleet.update.interval_s``; default: every heartbeat)."""
        if self.follower is None or self.status.revoked:
            return
        now = time.monotonic()
        # What the heartbeat answer said is only a hint to check now: what is served
        # comes from the signed pointer alone.
        if not force and now < self._next_update:
            return
        self._next_update = now + (self.follower.cfg.interval_s or 0.0)
        await self.follower.check()

    def _start_update(self) -> None:
        """The loop's update check, as a task of its own (at most one at a time)."""
        if self.follower is None or (self._update_task is not None
                                     and not self._update_task.done()):
            return
        self._update_task = asyncio.create_task(self._update())

    async def _update(self) -> None:
        assert self.follower is not None
        before = self.follower.status.to_json()
        try:
            await self.update_once()
        except Exception as exc:  # the agent must never take the node down
            log.exception("model update check failed: %s", exc)
        if self.follower.status.to_json() != before:
            self.poke()  # report the new state now (a rollout waits for it)

    def _unreachable(self, why: str) -> None:
        if self.status.control_reachable is not False:
            log.warning("control plane %s unreachable (%s); serving with the last "
                        "certificate, deny list and config", self.membership.control_url, why)
        self.status.control_reachable = False
        self.status.last_error = why

    async def _apply(self, cfg: StoredConfig) -> None:
        if self.apply_config is None:
            return
        why = await self.apply_config(cfg)
        if why is None:
            self.state.save_config(cfg)
            self.status.applied_config = cfg.id
            self.status.rejected_config = None
            self.status.config_error = None
            log.info("applied central config %s v%d (id %d)", cfg.target, cfg.version, cfg.id)
        else:
            self.status.rejected_config = cfg.id
            self.status.config_error = f"config id {cfg.id} rejected: {why}"[:2000]
            log.error("rejected central config %s v%d (id %d): %s; keeping the last good "
                      "one", cfg.target, cfg.version, cfg.id, why)

    # -- renewal --------------------------------------------------------------------------
    def renewal_due(self, now: datetime | None = None) -> bool:
        """Half the certificate's lifetime has passed, counted from when it was issued
        (its ``not_before`` is back-dated by the CA's clock-skew allowance)."""
        ident = self.state.identity()
        now = now or datetime.now(UTC)
        issued = min(ident.not_before + CLOCK_SKEW, ident.not_after)
        return now >= issued + (ident.not_after - issued) / 2

    async def renew(self) -> bool:
        """Renew the certificate now; True when a new one is in place."""
        key = generate_key()
        ident = self.state.identity()
        csr = make_csr(key, ident.node)
        try:
            r = await self._http().post("/v1/renew",
                                        json={"csr": csr_pem(csr).decode("ascii")})
        except httpx.HTTPError as exc:
            self._unreachable(f"renewal: {type(exc).__name__}")
            return False
        if r.status_code != 200:
            log.error("certificate renewal refused (%d): %s", r.status_code, _error_message(r))
            if r.status_code == 403:
                self.status.revoked = True
            return False
        chain = r.json()["certificate"].encode("ascii")
        new = identity_of(load_chain(chain)[0], fleet=self.membership.fleet)
        self.state.save_pair(private_pem(key), chain)
        for ctx in (self.client_context, self.server_context):
            if ctx is not None:
                reload_cert(ctx, self.state.cert_file, self.state.key_file)
        self.status.renewals += 1
        log.info("certificate renewed: serial %s… valid until %s", new.serial[:12],
                 new.not_after.isoformat())
        return True

    # -- lifecycle ------------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            try:
                if self.renewal_due():
                    await self.renew()
                await self.heartbeat_once()
                self._start_update()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the agent must never take the node down
                log.exception("node agent round failed: %s", exc)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.heartbeat_s)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop())

    def poke(self) -> None:
        """Run the next round now (tests, and after a local event)."""
        self._wake.set()

    async def stop(self) -> None:
        for task in (self._task, self._update_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._update_task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
