"""Real TLS handshakes on loopback with the fleet's certificates: a client picks a node or a
tier through the SNI name, trusts only its fleet's root; mutual TLS; hot certificate reload."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from edgewise.errors import AuthenticationError, ConfigError, PKIError
from edgewise.security.pki import (
    CAFiles,
    FleetCA,
    client_context,
    generate_key,
    init_ca,
    make_csr,
    node_dns,
    peer_chain,
    private_pem,
    reload_cert,
    server_context,
    tier_dns,
    write_private,
    write_public,
)

PASS = b"pass"


@pytest.fixture(scope="module")
def acme(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FleetCA]:
    d = tmp_path_factory.mktemp("acme") / "control"
    return d, init_ca(d, fleet="acme", passphrase=PASS)


@pytest.fixture(scope="module")
def impostor(tmp_path_factory: pytest.TempPathFactory) -> FleetCA:
    """Another CA that calls its fleet "acme" too."""
    return init_ca(tmp_path_factory.mktemp("impostor") / "c", fleet="acme", passphrase=PASS)


def files(ca: FleetCA, dest: Path, node: str = "gateway",
          tier: str = "edge") -> tuple[Path, Path, x509.Certificate]:
    """A node certificate (chain file, key file, leaf) issued by ``ca`` under ``dest``."""
    key = generate_key()
    cert = ca.issue_node(make_csr(key, node), node=node, tier=tier)
    chain, keyf = dest / f"{node}-{cert.serial_number:x}.pem", dest / f"{node}.key"
    write_public(chain, ca.chain_pem(cert))
    write_private(keyf, private_pem(key))
    return chain, keyf, cert


def sans_of(cert: x509.Certificate) -> list[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [f"{type(n).__name__}:{n.value}" for n in ext]


class TLSServer:
    """A loopback TLS echo server in threads; records each client's chain and errors."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.errors: list[Exception] = []
        self.peers: list[list[x509.Certificate]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> TLSServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._handle, args=(raw,), daemon=True).start()

    def _handle(self, raw: socket.socket) -> None:
        raw.settimeout(5)
        try:
            with self.ctx.wrap_socket(raw, server_side=True) as tls:
                try:
                    self.peers.append(peer_chain(tls))
                except AuthenticationError:
                    self.peers.append([])
                while data := tls.recv(1024):
                    tls.sendall(data)
        except (ssl.SSLError, OSError) as exc:
            self.errors.append(exc)

    def wait_error(self, seen: int) -> str:
        """The first error after the ``seen`` already recorded."""
        deadline = time.monotonic() + 5
        while len(self.errors) <= seen and time.monotonic() < deadline:
            time.sleep(0.01)
        return str(self.errors[seen])


def connect(port: int, ctx: ssl.SSLContext, hostname: str) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        return ctx.wrap_socket(raw, server_hostname=hostname)
    except BaseException:
        raw.close()
        raise


def echo(tls: ssl.SSLSocket) -> bytes:
    tls.sendall(b"ping")
    return tls.recv(16)


def served_serial(tls: ssl.SSLSocket) -> int:
    return peer_chain(tls)[0].serial_number


@pytest.fixture(scope="module")
def tlsdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tls")


def test_sni_names_pick_a_node_or_a_tier(acme: tuple[Path, FleetCA], impostor: FleetCA,
                                         tlsdir: Path) -> None:
    d, ca = acme
    chain, key, cert = files(ca, tlsdir)
    root = CAFiles.under(d).root_cert
    client = client_context(root)
    with TLSServer(server_context(chain, key, root, client_certs="none")) as server:
        for name in (node_dns("acme", "gateway"), tier_dns("acme", "edge")):
            with connect(server.port, client, name) as tls:
                assert served_serial(tls) == cert.serial_number and echo(tls) == b"ping"
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
        for name in (tier_dns("acme", "cloud"), node_dns("acme", "other"), "localhost"):
            with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
                connect(server.port, client, name)
        impostor_root = tlsdir / "impostor-root.pem"
        write_public(impostor_root, impostor.root_pem())
        with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
            connect(server.port, client_context(impostor_root), node_dns("acme", "gateway"))


def test_control_plane_server_certificate(acme: tuple[Path, FleetCA]) -> None:
    f = CAFiles.under(acme[0])
    client = client_context(f.root_cert)
    with TLSServer(server_context(f.server_cert, f.server_key, f.root_cert,
                                  client_certs="none")) as server:
        for name in ("127.0.0.1", "localhost", "control.acme"):
            with connect(server.port, client, name) as tls:
                leaf = peer_chain(tls)[0]
                assert echo(tls) == b"ping"
    assert sans_of(leaf) == ["UniformResourceIdentifier:spiffe://acme/control",
                             "DNSName:control.acme", "DNSName:localhost",
                             "IPAddress:127.0.0.1", "IPAddress:::1"]
    assert {a.value for a in leaf.subject} == {"control", "acme"}
    life = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert life == timedelta(days=90, minutes=1)
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku


@pytest.fixture(scope="module")
def mtls(acme: tuple[Path, FleetCA], impostor: FleetCA,
         tlsdir: Path) -> Iterator[tuple[TLSServer, dict[str, ssl.SSLContext]]]:
    d, ca = acme
    root = CAFiles.under(d).root_cert
    chain, key, _ = files(ca, tlsdir, "cloud-1", "cloud")
    client_chain, client_key, _ = files(ca, tlsdir, "gateway", "edge")
    fake_chain, fake_key, _ = files(impostor, tlsdir / "impostor", "gateway", "edge")
    clients = {"node": client_context(root, cert_chain=client_chain, key=client_key),
               "none": client_context(root),
               "impostor": client_context(root, cert_chain=fake_chain, key=fake_key)}
    with TLSServer(server_context(chain, key, root, client_certs="required")) as server:
        yield server, clients


def test_mtls_required_accepts_a_fleet_node(acme: tuple[Path, FleetCA],
                                            mtls: tuple[TLSServer, dict[str, ssl.SSLContext]]
                                            ) -> None:
    server, clients = mtls
    with connect(server.port, clients["node"], tier_dns("acme", "cloud")) as tls:
        assert echo(tls) == b"ping"
    seen = server.peers[-1]
    assert len(seen) == 1  # Python 3.11: the leaf only
    assert acme[1].verify_node(seen).spiffe_id == "spiffe://acme/node/gateway"


@pytest.mark.parametrize(("client", "server_says"), [
    ("none", "PEER_DID_NOT_RETURN_A_CERTIFICATE"), ("impostor", "CERTIFICATE_VERIFY_FAILED")])
def test_mtls_required_refuses(mtls: tuple[TLSServer, dict[str, ssl.SSLContext]],
                               client: str, server_says: str) -> None:
    server, clients = mtls
    before = len(server.errors)
    # TLS 1.3: the client's handshake completes before the server checks its certificate,
    # so the refusal shows at the first read (an alert, or a closed connection).
    with (pytest.raises((ssl.SSLError, ConnectionError)),
          connect(server.port, clients[client], tier_dns("acme", "cloud")) as tls):
        assert echo(tls) != b"ping"
        raise ConnectionError("server closed without answering")
    assert server_says in server.wait_error(before)


def test_optional_client_certs(acme: tuple[Path, FleetCA], tlsdir: Path) -> None:
    d, ca = acme
    root = CAFiles.under(d).root_cert
    chain, key, _ = files(ca, tlsdir, "hub", "edge")
    with TLSServer(server_context(chain, key, root, client_certs="optional")) as server:
        with connect(server.port, client_context(root), "hub.node.acme") as tls:
            assert echo(tls) == b"ping"
        assert server.peers == [[]]


def test_reload_cert_new_handshakes_only(acme: tuple[Path, FleetCA], tlsdir: Path) -> None:
    d, ca = acme
    root = CAFiles.under(d).root_cert
    old_chain, old_key, old = files(ca, tlsdir / "old", "relay", "edge")
    new_chain, new_key, new = files(ca, tlsdir / "new", "relay", "edge")
    ctx = server_context(old_chain, old_key, root, client_certs="none")
    client = client_context(root)
    with TLSServer(ctx) as server:
        first = connect(server.port, client, "relay.node.acme")
        assert echo(first) == b"ping" and served_serial(first) == old.serial_number
        reload_cert(ctx, new_chain, new_key)
        with connect(server.port, client, "relay.node.acme") as second:
            assert echo(second) == b"ping" and served_serial(second) == new.serial_number
        assert echo(first) == b"ping" and served_serial(first) == old.serial_number
        first.close()
        with pytest.raises(PKIError, match="belong together"):
            reload_cert(ctx, old_chain, new_key)  # a key that does not match
        with connect(server.port, client, "relay.node.acme") as third:
            assert served_serial(third) == new.serial_number


def test_context_errors(tmp_path: Path, acme: tuple[Path, FleetCA]) -> None:
    f = CAFiles.under(acme[0])
    with pytest.raises(PKIError, match="cannot load the CA certificate"):
        client_context(tmp_path / "missing.pem")
    with pytest.raises(PKIError, match="cannot load the certificate"):
        server_context(tmp_path / "x.pem", f.server_key, f.root_cert, client_certs="none")
    with pytest.raises(ConfigError, match="one of none, optional, required"):
        server_context(f.server_cert, f.server_key, f.root_cert,
                       client_certs="maybe")  # type: ignore[arg-type]
    ctx = client_context(f.root_cert)
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
