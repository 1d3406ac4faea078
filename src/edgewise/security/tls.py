"""TLS contexts for the fleet (stdlib :mod:`ssl`): servers, clients, hot reload, peers.

Every context speaks TLS 1.2 or newer and trusts exactly one CA file, the fleet root
(never the system store). A client always checks the server's name: which name it asks
for (``server_hostname``) is how it says which node or tier it wants (see
:mod:`edgewise.security.pki`). Re-exported by :mod:`edgewise.security.pki`; kept apart
because it needs nothing of the CA.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Literal

from cryptography import x509

from edgewise.errors import AuthenticationError, ConfigError, PKIError

__all__ = ["client_context", "peer_chain", "reload_cert", "server_context"]

_CLIENT_CERT_MODES = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL,
                      "required": ssl.CERT_REQUIRED}


def _load_chain_into(ctx: ssl.SSLContext, cert_chain: Path, key: Path | None) -> None:
    try:
        ctx.load_cert_chain(cert_chain, key)
    except (ssl.SSLError, OSError) as exc:
        raise PKIError(f"cannot load the certificate {cert_chain} with key {key}: "
                       f"{exc.strerror or exc}; check that both exist and belong together"
                       ) from exc


def _load_ca_into(ctx: ssl.SSLContext, ca: Path) -> None:
    try:
        ctx.load_verify_locations(cafile=ca)
    except (ssl.SSLError, OSError) as exc:
        raise PKIError(f"cannot load the CA certificate {ca}: {exc.strerror or exc}") from exc


def server_context(cert_chain: Path, key: Path, ca: Path, *,
                   client_certs: Literal["none", "optional", "required"]) -> ssl.SSLContext:
    """A server context presenting ``cert_chain`` (leaf + intermediate) and ``key``.

    With ``optional`` or ``required``, client certificates are verified against ``ca``
    (a client that presents a bad one always fails the handshake; with ``optional`` one
    that presents none gets in, and the application decides what it may do).
    """
    if client_certs not in _CLIENT_CERT_MODES:
        raise ConfigError("client_certs must be one of none, optional, required; "
                          f"got {client_certs!r}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain_into(ctx, cert_chain, key)
    if client_certs != "none":
        _load_ca_into(ctx, ca)
    ctx.verify_mode = _CLIENT_CERT_MODES[client_certs]
    return ctx


def client_context(ca: Path, *, cert_chain: Path | None = None,
                   key: Path | None = None) -> ssl.SSLContext:
    """A client context that trusts only ``ca`` and checks the server's name
    (``check_hostname``, ``CERT_REQUIRED``); with ``cert_chain`` (and ``key``, unless
    the chain file holds it) it also presents a client certificate for mutual TLS."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    _load_ca_into(ctx, ca)
    if cert_chain is not None:
        _load_chain_into(ctx, cert_chain, key)
    return ctx


def reload_cert(ctx: ssl.SSLContext, cert_chain: Path, key: Path) -> None:
    """Make ``ctx`` present a new certificate (after a renewal) without a restart.

    This is ``ctx.load_cert_chain`` again. OpenSSL copies the context's certificate into
    each connection when the connection is created, so handshakes that start after this
    call present the new certificate, and connections already open keep the one they
    were set up with until they close. The files are first loaded into a scratch
    context: a failed ``load_cert_chain`` can leave a context with the new certificate
    and the old key (every handshake then fails), so if they do not load (a key that does
    not match), PKIError is raised and ``ctx`` keeps presenting the old certificate.
    """
    _load_chain_into(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), cert_chain, key)
    _load_chain_into(ctx, cert_chain, key)


def peer_chain(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> list[x509.Certificate]:
    """The peer's verified certificate chain, leaf first.

    Python 3.11 exposes only the leaf (``getpeercert(binary_form=True)``), so there it is
    ``[leaf]``; on 3.13+ ``get_verified_chain()`` gives the whole chain. Only meaningful
    on a context that verifies the peer (a client context, or a server context with
    client certificates ``optional``/``required``). AuthenticationError if the peer
    presented no certificate.
    """
    verified = getattr(ssl_object, "get_verified_chain", None)  # Python 3.13+
    chain = verified() if verified is not None else None
    if chain:
        return [x509.load_der_x509_certificate(bytes(der)) for der in chain]
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise AuthenticationError("the peer presented no certificate")
    return [x509.load_der_x509_certificate(der)]
