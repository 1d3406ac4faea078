"""Who is on the other end of a fleet connection, and whether they may be.

Three pieces, shared by a node's server side (callers of its ``/v1`` API) and its client
side (calls to tiers that are other fleet nodes):

* :class:`DenyList` — revoked nodes and certificate serials, as the control plane last
  sent them with a heartbeat (kept on disk, so an offline node keeps the last list).
* :class:`PeerRule` — ``node:<name>``, ``tier:<tier>`` or a SPIFFE ID: what
  ``serving.tls.allow`` and a tier endpoint's ``peer`` say.
* :class:`PeerTransport` — an httpx transport for mutual TLS to one fleet peer. Python's
  ``ssl`` has no certificate-verification callback, so identity is checked in two steps,
  both before a request byte is written: (1) the TLS handshake verifies the chain to the
  fleet root and the *hostname* — the transport sends the SNI name ``<node>.node.<fleet>``
  or ``<tier>.tier.<fleet>``, which node certificates carry as DNS SANs, so a certificate
  of another node or tier fails the handshake; (2) right after the handshake, a wrapper
  around httpcore's network backend reads the peer certificate and refuses it if its
  serial or node is on the deny list or its SPIFFE ID is not the expected one. When the
  deny list changes, pooled connections are dropped, so a revoked peer's open
  keep-alive connection is not reused either. (httpx exposes no network-backend option:
  the transport replaces its httpcore pool, ``_pool``, with one built the same way plus
  that backend.)
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx
from cryptography import x509

from edgewise.errors import AuthenticationError, ForbiddenError
from edgewise.security.pki import NodeIdentity, identity_of, node_dns, spiffe_id, tier_dns

__all__ = ["DenyList", "PeerRule", "PeerTLS", "PeerTransport", "peer_identity_from_scope"]

log = logging.getLogger("edgewise.peers")


class DenyList:
    """Revoked certificate serials and node names; ``version`` grows with each change
    the control plane makes. Read from the event loop and written by the node agent."""

    def __init__(self) -> None:
        self.version = 0
        self.serials: frozenset[str] = frozenset()
        self.nodes: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def update(self, version: int, serials: Iterable[str], nodes: Iterable[str]) -> bool:
        """Take a newer list; returns whether it changed anything."""
        with self._lock:
            if version <= self.version:
                return False
            self.version = version
            self.serials = frozenset(s.lower() for s in serials)
            self.nodes = frozenset(nodes)
            return True

    def why_denied(self, ident: NodeIdentity) -> str | None:
        if ident.serial.lower() in self.serials or ident.node in self.nodes:
            return f"node {ident.node} ({ident.spiffe_id}) is revoked"
        return None


@dataclass(frozen=True)
class PeerRule:
    """``node:<name>``, ``tier:<tier>`` or ``spiffe://<fleet>/node/<name>``."""

    kind: str  # node | tier | spiffe
    value: str

    @classmethod
    def parse(cls, text: str) -> PeerRule:
        if text.startswith("spiffe://"):
            return cls("spiffe", text)
        kind, sep, value = text.partition(":")
        if not sep or kind not in ("node", "tier") or not value:
            raise ValueError(f"peer rule {text!r}: expected node:<name>, tier:<tier> or a "
                             "SPIFFE ID")
        return cls(kind, value)

    def matches(self, ident: NodeIdentity) -> bool:
        if self.kind == "node":
            return ident.node == self.value
        if self.kind == "tier":
            return ident.tier == self.value
        return ident.spiffe_id == self.value

    def sni_name(self, fleet: str) -> str:
        """The DNS SAN a matching certificate carries (what the handshake checks)."""
        if self.kind == "node":
            return node_dns(fleet, self.value)
        if self.kind == "tier":
            return tier_dns(fleet, self.value)
        raise ValueError("a SPIFFE ID rule has no SNI name; use node:<name>")

    def __str__(self) -> str:
        return self.value if self.kind == "spiffe" else f"{self.kind}:{self.value}"


def peer_identity_from_scope(scope: MutableMapping[str, Any], fleet: str) -> NodeIdentity | None:
    """The fleet identity in the client certificate of a request (``None``: no
    certificate). :mod:`edgewise.serving.server` puts the verified certificate in the
    ASGI TLS extension (``scope["extensions"]["tls"]["client_cert_chain"]``, PEM).

    Raises:
        AuthenticationError: a certificate that is not a node certificate of ``fleet``.
    """
    tls = (scope.get("extensions") or {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or []
    if not chain:
        return None
    cert = x509.load_pem_x509_certificate(chain[0].encode("ascii"))
    return identity_of(cert, fleet=fleet)


class _CheckedStream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream, check: PeerTransport) -> None:
        self._inner = inner
        self._check = check

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.start_tls(ssl_context, server_hostname, timeout)
        obj = stream.get_extra_info("ssl_object")
        der = obj.getpeercert(binary_form=True) if obj is not None else None
        try:
            if not der:
                raise AuthenticationError("the peer presented no certificate")
            self._check.check_peer(identity_of(x509.load_der_x509_certificate(der),
                                               fleet=self._check.fleet))
        except (AuthenticationError, ForbiddenError) as exc:
            await stream.aclose()
            log.warning("refused fleet peer for %s: %s", self._check.rule, exc)
            raise httpcore.ConnectError(f"refused fleet peer: {exc}") from exc
        return stream

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _CheckingBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, check: PeerTransport) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._check = check

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None
                          ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address,
                                               socket_options)
        return _CheckedStream(stream, self._check)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None
                                  ) -> httpcore.AsyncNetworkStream:  # pragma: no cover
        raise httpcore.ConnectError("fleet peers are reached over TCP")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PeerTransport(httpx.AsyncHTTPTransport):
    """Mutual TLS to the fleet peer ``rule`` names (module docstring).

    ``context`` is the node's client context (fleet root + its certificate); reloading
    its certificate after a renewal affects new connections.
    """

    def __init__(self, context: ssl.SSLContext, *, fleet: str, rule: PeerRule,
                 deny: DenyList) -> None:
        super().__init__(verify=context)
        self.fleet = fleet
        self.rule = rule
        self.deny = deny
        self.sni = rule.sni_name(fleet)
        self._context = context
        self._seen_version = deny.version
        self._pool = self._new_pool()

    def _new_pool(self) -> httpcore.AsyncConnectionPool:
        return httpcore.AsyncConnectionPool(ssl_context=self._context, http1=True,
                                            network_backend=_CheckingBackend(self))

    def check_peer(self, ident: NodeIdentity) -> None:
        why = self.deny.why_denied(ident)
        if why is not None:
            raise ForbiddenError(why)
        if not self.rule.matches(ident):
            raise ForbiddenError(f"expected {self.rule}, the peer is {ident.spiffe_id} "
                                 f"(tier {ident.tier})")
        if self.rule.kind == "node" and ident.spiffe_id != spiffe_id(self.fleet, self.rule.value):
            raise ForbiddenError(f"expected {spiffe_id(self.fleet, self.rule.value)}, "
                                 f"the peer is {ident.spiffe_id}")

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.deny.version != self._seen_version:
            # Revocations arrived: connections checked against the old list are dropped.
            self._seen_version = self.deny.version
            old, self._pool = self._pool, self._new_pool()
            await old.aclose()
        request.extensions = {**request.extensions, "sni_hostname": self.sni}
        return await super().handle_async_request(request)


@dataclass
class PeerTLS:
    """What a joined node needs to call fleet peers: its client TLS context (fleet root +
    its certificate, reloaded on renewal), its fleet and the shared deny list."""

    context: ssl.SSLContext
    fleet: str
    deny: DenyList

    def transport(self, rule: PeerRule) -> PeerTransport:
        return PeerTransport(self.context, fleet=self.fleet, rule=rule, deny=self.deny)
