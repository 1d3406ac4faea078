"""The fleet PKI: names, CA files and modes, node certificates, hostile CSRs and
verification (the TLS handshakes with these certificates are in test_tls.py)."""

from __future__ import annotations

import base64
import ipaddress
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgewise.errors import (
    AuthenticationError,
    ConfigError,
    ForbiddenError,
    InvalidRequestError,
    PKIError,
)
from edgewise.security.pki import (
    CAFiles,
    FleetCA,
    NodeIdentity,
    cert_pem,
    check_hosts,
    check_name,
    control_dns,
    csr_pem,
    fingerprint,
    generate_key,
    identity_of,
    init_ca,
    load_cert,
    load_chain,
    load_csr,
    load_private_key,
    make_csr,
    node_dns,
    parse_fingerprint,
    private_pem,
    rotate_server_cert,
    server_context,
    spiffe_id,
    tier_dns,
    write_private,
    write_public,
)

PASS = b"correct horse battery staple"


@pytest.fixture(scope="module")
def acme(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FleetCA]:
    d = tmp_path_factory.mktemp("acme") / "control"
    return d, init_ca(d, fleet="acme", passphrase=PASS)


@pytest.fixture(scope="module")
def ca(acme: tuple[Path, FleetCA]) -> FleetCA:
    return acme[1]


@pytest.fixture(scope="module")
def impostor(tmp_path_factory: pytest.TempPathFactory) -> FleetCA:
    """Another CA that calls its fleet "acme" too: only the root key tells them apart."""
    return init_ca(tmp_path_factory.mktemp("impostor") / "c", fleet="acme", passphrase=b"x")


def issue(ca: FleetCA, node: str = "gateway", tier: str = "edge",
          **kw: object) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = generate_key()
    return key, ca.issue_node(make_csr(key, node), node=node, tier=tier, **kw)  # type: ignore[arg-type]


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def sans_of(cert: x509.Certificate) -> list[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [f"{type(n).__name__}:{n.value}" for n in ext]


# -- names, fingerprints, files ---------------------------------------------------------

@pytest.mark.parametrize("name", ["a", "edge-1", "0", "x" * 63, "a-b-c"])
def test_valid_names(name: str) -> None:
    assert check_name("node", name) == name


@pytest.mark.parametrize("name", ["", "-a", "a-", "A", "a_b", "a.b", "x" * 64, "abc\n",
                                  "é", " a"])
def test_invalid_names_say_what_is_allowed(name: str) -> None:
    with pytest.raises(ConfigError, match=r"^tier name .* lowercase letters, digits and '-'"):
        check_name("tier", name)


def test_identity_names() -> None:
    assert spiffe_id("acme", "gateway") == "spiffe://acme/node/gateway"
    assert node_dns("acme", "gateway") == "gateway.node.acme"
    assert tier_dns("acme", "edge") == "edge.tier.acme"
    assert control_dns("acme") == "control.acme"
    with pytest.raises(ConfigError, match="fleet name"):
        node_dns("acme.evil", "gateway")


def test_fingerprint_forms(ca: FleetCA) -> None:
    fp = fingerprint(ca.root)
    hexpart = fp.removeprefix("sha256:")
    assert fp == ca.root_fingerprint and len(hexpart) == 64 and hexpart == hexpart.lower()
    assert hexpart == ca.root.fingerprint(hashes.SHA256()).hex()
    colons = ":".join(hexpart[i:i + 2] for i in range(0, 64, 2))
    for form in (fp, hexpart, hexpart.upper(), colons, colons.upper(), f" SHA256:{colons} "):
        assert parse_fingerprint(form) == fp
    with pytest.raises(ConfigError, match=r"--ca-sha256 must be .* got 63 hex digits$"):
        parse_fingerprint(hexpart[:-1])
    with pytest.raises(ConfigError, match="got 63 hex digits and other characters"):
        parse_fingerprint(hexpart[:-1] + "g")
    with pytest.raises(ConfigError, match="got 0 hex digits"):
        parse_fingerprint("")


def test_write_private_is_atomic_0600_in_0700_dirs(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "secret.key"
    write_private(target, b"one")
    assert target.read_bytes() == b"one" and mode(target) == 0o600
    assert mode(tmp_path / "a") == 0o700 and mode(tmp_path / "a" / "b") == 0o700
    target.chmod(0o644)
    write_private(target, b"two")  # replaced by a new 0600 file, not rewritten in place
    assert target.read_bytes() == b"two" and mode(target) == 0o600
    write_public(tmp_path / "a" / "cert.pem", b"pub")
    assert mode(tmp_path / "a" / "cert.pem") == 0o644
    assert sorted(p.name for p in (tmp_path / "a").rglob("*")) == ["b", "cert.pem",
                                                                    "secret.key"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(PKIError, match=r"cannot write .*file/k"):
        write_private(tmp_path / "file" / "k", b"x")


def test_garbage_certificates_and_keys() -> None:
    with pytest.raises(PKIError, match=r"^ca.pem is not a PEM certificate$"):
        load_cert(b"nope", "ca.pem")
    with pytest.raises(PKIError, match="not a PEM bundle"):
        load_chain(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(PKIError, match=r"^node.key is not a PEM private key$"):
        load_private_key(b"garbage", source="node.key")
    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    with pytest.raises(PKIError, match="not an ECDSA private key"):
        load_private_key(rsa_pem)
    with pytest.raises(PKIError, match="empty passphrase"):
        private_pem(generate_key(), b"")


# -- init_ca ------------------------------------------------------------------------------

def test_init_ca_writes_every_file_with_its_mode(acme: tuple[Path, FleetCA]) -> None:
    d, ca = acme
    f = CAFiles.under(d)
    assert f.root_cert == d / "ca" / "root.pem" and f.signing_pub == d / "tokens" / "signing.pub"
    for p in (f.root_key, f.intermediate_key, f.server_key, f.signing_key):
        assert mode(p) == 0o600, p
    for p in (f.root_cert, f.intermediate_cert, f.server_cert, f.signing_pub):
        assert mode(p) == 0o644, p
    for sub in ("ca", "tls", "tokens"):
        assert mode(d / sub) == 0o700
    assert not [p for p in d.rglob("*.tmp")]
    assert load_cert(f.root_cert.read_bytes()) == ca.root
    server, inter = load_chain(f.server_cert.read_bytes())
    assert inter == ca.intermediate
    assert load_private_key(f.server_key.read_bytes()).public_key() == server.public_key()
    token_key = load_private_key(f.signing_key.read_bytes())
    assert isinstance(token_key.curve, ec.SECP256R1)
    assert serialization.load_pem_public_key(f.signing_pub.read_bytes()) == \
        token_key.public_key()


def test_root_key_is_encrypted_at_rest(acme: tuple[Path, FleetCA]) -> None:
    d, ca = acme
    data = CAFiles.under(d).root_key.read_bytes()
    assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(PKIError, match=r"root\.key is encrypted \(set \$EDGEWISE_CA_PASS"):
        load_private_key(data, source="root.key")
    with pytest.raises(PKIError, match=r"^wrong passphrase for root.key") as err:
        load_private_key(data, passphrase=b"hunter2-wrong", source="root.key")
    assert "hunter2" not in str(err.value) and PASS.decode() not in str(err.value)
    key = load_private_key(data, passphrase=PASS)
    assert key.public_key() == ca.root.public_key()
    assert b"ENCRYPTED" not in CAFiles.under(d).intermediate_key.read_bytes()


def test_chain_shape(ca: FleetCA) -> None:
    now = datetime.now(UTC)
    bc = ca.root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 1
    assert ca.root.issuer == ca.root.subject
    ca.root.verify_directly_issued_by(ca.root)
    life = ca.root.not_valid_after_utc - now
    assert timedelta(days=3649) < life <= timedelta(days=3650)
    ibc = ca.intermediate.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert ibc.ca and ibc.path_length == 0
    ca.intermediate.verify_directly_issued_by(ca.root)
    ilife = ca.intermediate.not_valid_after_utc - now
    assert timedelta(days=364) < ilife <= timedelta(days=365)
    ku = ca.intermediate.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature


def test_init_refuses_reinit_and_empty_passphrase(acme: tuple[Path, FleetCA],
                                                  tmp_path: Path) -> None:
    with pytest.raises(PKIError, match="already initialised"):
        init_ca(acme[0], fleet="acme", passphrase=PASS)
    with pytest.raises(PKIError, match=r"set \$EDGEWISE_CA_PASSPHRASE"):
        init_ca(tmp_path / "d", fleet="acme", passphrase=b"")
    with pytest.raises(ConfigError, match="fleet name"):
        init_ca(tmp_path / "d", fleet="Acme", passphrase=PASS)
    with pytest.raises(ConfigError, match="host 'bad_host!'"):
        init_ca(tmp_path / "d", fleet="acme", passphrase=PASS, hosts=["bad_host!"])
    assert not (tmp_path / "d").exists()


def test_load_names_missing_files_and_mismatches(acme: tuple[Path, FleetCA],
                                                 impostor: FleetCA, tmp_path: Path) -> None:
    loaded = FleetCA.load(acme[0])
    assert loaded.fleet == "acme" and loaded.root_fingerprint == acme[1].root_fingerprint
    assert loaded.root_pem() == CAFiles.under(acme[0]).root_cert.read_bytes()
    with pytest.raises(PKIError, match=r"root\.pem is missing: run `edgewise control init "
                                       r"--dir .*nowhere` first"):
        FleetCA.load(tmp_path / "nowhere")
    d = tmp_path / "mixed"
    init_ca(d, fleet="acme", passphrase=PASS)
    write_public(CAFiles.under(d).intermediate_cert, cert_pem(impostor.intermediate))
    with pytest.raises(PKIError, match="do not belong together"):
        FleetCA.load(d)


# -- node certificates --------------------------------------------------------------------

def test_node_certificate_contents(ca: FleetCA) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    _, cert = issue(ca, now=now)
    subject = {a.oid: a.value for a in cert.subject}
    assert subject == {NameOID.COMMON_NAME: "gateway", NameOID.ORGANIZATIONAL_UNIT_NAME: "edge",
                       NameOID.ORGANIZATION_NAME: "acme"}
    assert sans_of(cert) == ["UniformResourceIdentifier:spiffe://acme/node/gateway",
                             "DNSName:gateway.node.acme", "DNSName:edge.tier.acme"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_before_utc == now - timedelta(minutes=1)
    assert cert.not_valid_after_utc == now + timedelta(hours=24)
    assert cert.issuer == ca.intermediate.subject
    cert.verify_directly_issued_by(ca.intermediate)
    serials = {issue(ca)[1].serial_number for _ in range(16)} | {cert.serial_number}
    assert len(serials) == 17 and all(0 < s < 2 ** 128 for s in serials)
    assert max(s.bit_length() for s in serials) > 120  # random, not counted


def test_identity_round_trip(ca: FleetCA) -> None:
    _, cert = issue(ca, "sensor-7", "device", lifetime=timedelta(hours=2))
    ident = identity_of(cert, fleet="acme")
    assert ident == NodeIdentity(fleet="acme", node="sensor-7", tier="device",
                                 spiffe_id="spiffe://acme/node/sensor-7",
                                 serial=f"{cert.serial_number:032x}",
                                 not_before=cert.not_valid_before_utc,
                                 not_after=cert.not_valid_after_utc)
    assert len(ident.serial) == 32 and ident.lifetime == timedelta(hours=2, minutes=1)
    assert timedelta(hours=1, minutes=59) < ident.remaining() <= timedelta(hours=2)
    assert identity_of(cert) == ident
    with pytest.raises(AuthenticationError, match=r"of fleet rival: .*in fleet acme"):
        identity_of(cert, fleet="rival")


def test_identity_of_rejects_non_node_certificates(acme: tuple[Path, FleetCA]) -> None:
    d, ca = acme
    server = load_chain(CAFiles.under(d).server_cert.read_bytes())[0]
    for cert in (server, ca.root, ca.intermediate):
        with pytest.raises(AuthenticationError, match="not an edgewise node certificate"):
            identity_of(cert, fleet="acme")


def forge(acme: tuple[Path, FleetCA], subject: dict[str, str], sans: list[x509.GeneralName],
          life: timedelta = timedelta(hours=1)) -> x509.Certificate:
    """A certificate the real intermediate signs, with names that do not agree."""
    d, ca = acme
    key = load_private_key(CAFiles.under(d).intermediate_key.read_bytes())
    oids = {"CN": NameOID.COMMON_NAME, "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
            "O": NameOID.ORGANIZATION_NAME}
    now = datetime.now(UTC)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(oids[k], v) for k, v in subject.items()]))
            .issuer_name(ca.intermediate.subject).public_key(generate_key().public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + life)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))


URI, DNS = x509.UniformResourceIdentifier, x509.DNSName
GOOD = {"CN": "gateway", "OU": "edge", "O": "acme"}


@pytest.mark.parametrize(("subject", "sans", "reason"), [
    (GOOD, [URI("spiffe://acme/node/gateway"), DNS("other.node.acme"), DNS("edge.tier.acme")],
     "DNS SANs"),
    (GOOD, [URI("spiffe://acme/node/gateway"), DNS("gateway.node.acme"),
            DNS("cloud.tier.acme")], "DNS SANs"),
    ({**GOOD, "OU": "cloud"}, [URI("spiffe://acme/node/gateway"), DNS("gateway.node.acme"),
                               DNS("edge.tier.acme")], "DNS SANs"),
    ({**GOOD, "CN": "other"}, [URI("spiffe://acme/node/gateway"), DNS("gateway.node.acme"),
                               DNS("edge.tier.acme")], "CN/O"),
    (GOOD, [URI("spiffe://acme/node/gateway"), DNS("gateway.node.acme"), DNS("edge.tier.acme"),
            x509.RFC822Name("n1@acme.example")], "SANs other than"),
    (GOOD, [URI("spiffe://acme/workload/gateway"), DNS("gateway.node.acme")], "URI SAN"),
    (GOOD, [URI("spiffe://acme/node/gateway"), URI("spiffe://acme/node/admin")], "URI SAN"),
    ({"CN": "gateway", "O": "acme"}, [URI("spiffe://acme/node/gateway")], "tier"),
])
def test_identity_of_rejects_names_that_disagree(acme: tuple[Path, FleetCA],
                                                 subject: dict[str, str],
                                                 sans: list[x509.GeneralName],
                                                 reason: str) -> None:
    cert = forge(acme, subject, sans)
    with pytest.raises(AuthenticationError, match=f"node certificate of fleet acme: .*{reason}"):
        acme[1].verify_node([cert])


def test_lifetime_is_capped_by_the_intermediate(tmp_path: Path) -> None:
    short = init_ca(tmp_path / "c", fleet="acme", passphrase=PASS,
                    intermediate_lifetime=timedelta(hours=2))
    _, cert = issue(short)
    assert cert.not_valid_after_utc == short.intermediate.not_valid_after_utc
    with pytest.raises(ConfigError, match="lifetime must be positive"):
        issue(short, lifetime=timedelta(0))
    with pytest.raises(PKIError, match="intermediate CA expired"):
        issue(short, now=datetime.now(UTC) + timedelta(hours=3))


# -- hostile CSRs ---------------------------------------------------------------------------

def csr_with(key: object = None, cn: str | None = "gateway",
             sans: list[x509.GeneralName] | None = None,
             ca_ext: bool = False) -> x509.CertificateSigningRequest:
    key = key or generate_key()
    b = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else []))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if ca_ext:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return b.sign(key, None if isinstance(key, ed25519.Ed25519PrivateKey)  # type: ignore[arg-type]
                  else hashes.SHA256())


@pytest.mark.parametrize(("csr_kw", "message"), [
    ({"cn": "evil"}, "^CSR asks for CN=evil but the join token is for node gateway$"),
    ({"sans": [DNS("evil.example")]}, "^CSR asks for DNS:evil.example, which node gateway "
                                      "may not have$"),
    ({"sans": [URI("spiffe://acme/node/admin")]}, "URI:spiffe://acme/node/admin"),
    ({"sans": [URI("spiffe://rival/node/gateway")]}, "URI:spiffe://rival/node/gateway"),
    ({"sans": [DNS("cloud.tier.acme")]}, "DNS:cloud.tier.acme"),
    ({"sans": [DNS("control.acme")]}, "DNS:control.acme"),
    ({"sans": [x509.IPAddress(ipaddress.ip_address("10.0.0.1"))]}, "IP:10.0.0.1"),
    ({"sans": [x509.RFC822Name("a@b.c")]}, "email:a@b.c"),
    ({"ca_ext": True}, "CSR asks to be a CA"),
])
def test_hostile_csr_is_forbidden(ca: FleetCA, csr_kw: dict[str, object], message: str) -> None:
    csr = load_csr(csr_pem(csr_with(**csr_kw)))  # type: ignore[arg-type]
    with pytest.raises(ForbiddenError, match=message):
        ca.issue_node(csr, node="gateway", tier="edge")


def test_csr_may_ask_for_a_subset_of_its_own_names(ca: FleetCA) -> None:
    subsets: list[list[x509.GeneralName] | None] = [
        [URI("spiffe://acme/node/gateway")], [DNS("GATEWAY.node.acme"), DNS("edge.tier.acme")],
        None]
    for sans in subsets:
        cert = ca.issue_node(csr_with(sans=sans, cn=None), node="gateway", tier="edge")
        assert sans_of(cert)[1] == "DNSName:gateway.node.acme"
        assert len(sans_of(cert)) == 3


def pem_of(der: bytes) -> bytes:
    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return ("-----BEGIN CERTIFICATE REQUEST-----\n" + "\n".join(lines)
            + "\n-----END CERTIFICATE REQUEST-----\n").encode()


def test_malformed_csrs(ca: FleetCA) -> None:
    der = csr_with().public_bytes(serialization.Encoding.DER)
    assert der.count(b"gateway") == 1
    tampered = der.replace(b"gateway", b"gatewaz")
    cases: list[tuple[bytes | str, str]] = [
        (b"", "not a PEM certificate signing request"),
        (b"hello", "not a PEM certificate signing request"),
        (pem_of(b"\x30\x03\x02\x01\x00"), "not a PEM"),
        (b"-" * (16 * 1024 + 1), "larger than 16 KiB"),
        (pem_of(tampered), "self-signature does not verify"),
        (csr_pem(csr_with(rsa.generate_private_key(public_exponent=65537, key_size=2048))),
         "RSAPublicKey; use ECDSA P-256 or P-384"),
        (csr_pem(csr_with(ec.generate_private_key(ec.SECP521R1()))), "curve secp521r1"),
        (csr_pem(csr_with(ed25519.Ed25519PrivateKey.generate())), "use ECDSA P-256"),
    ]
    for data, message in cases:
        with pytest.raises(InvalidRequestError, match=f"^malformed CSR: .*{message}"):
            load_csr(data)
    with pytest.raises(InvalidRequestError, match="self-signature"):
        ca.issue_node(x509.load_der_x509_csr(tampered), node="gateway", tier="edge")
    p384 = load_csr(csr_pem(csr_with(ec.generate_private_key(ec.SECP384R1()))).decode())
    assert identity_of(ca.issue_node(p384, node="gateway", tier="edge")).node == "gateway"
    with pytest.raises(ConfigError, match="node name"):
        ca.issue_node(p384, node="Gateway", tier="edge")


# -- verify_node ----------------------------------------------------------------------------

def test_verify_node(ca: FleetCA, impostor: FleetCA, acme: tuple[Path, FleetCA]) -> None:
    _, cert = issue(ca)
    assert ca.verify_node([cert, ca.intermediate]).spiffe_id == "spiffe://acme/node/gateway"
    assert ca.verify_node([cert]).tier == "edge"
    _, fake = issue(impostor)
    for chain in ([fake], [fake, impostor.intermediate], [fake, impostor.intermediate,
                                                          impostor.root]):
        with pytest.raises(AuthenticationError,
                           match=r"^certificate is not signed by fleet acme's CA$"):
            ca.verify_node(chain)
    with pytest.raises(AuthenticationError, match="not signed"):
        ca.verify_node([impostor.intermediate])
    with pytest.raises(AuthenticationError, match="no certificate"):
        ca.verify_node([])
    server = load_chain(CAFiles.under(acme[0]).server_cert.read_bytes())[0]
    with pytest.raises(AuthenticationError, match="not an edgewise node certificate"):
        ca.verify_node([server])


def test_verify_node_checks_time(acme: tuple[Path, FleetCA]) -> None:
    ca = acme[1]
    now = datetime.now(UTC)
    _, old = issue(ca, now=now - timedelta(hours=25))
    with pytest.raises(AuthenticationError, match=r"^certificate expired at 20.*[+]00:00$"):
        ca.verify_node([old])
    _, cert = issue(ca)
    assert ca.verify_node([cert], now=now + timedelta(hours=23)).node == "gateway"
    with pytest.raises(AuthenticationError, match=r"^certificate expired at"):
        ca.verify_node([cert], now=now + timedelta(hours=25))
    with pytest.raises(AuthenticationError, match="not valid before"):
        ca.verify_node([cert], now=now - timedelta(minutes=5))
    # A leaf that outlives the intermediate (forged with its key), checked after that.
    long = forge(acme, GOOD, [URI("spiffe://acme/node/gateway"), DNS("gateway.node.acme"),
                              DNS("edge.tier.acme")], life=timedelta(days=800))
    assert ca.verify_node([long]).node == "gateway"
    with pytest.raises(AuthenticationError, match="intermediate CA is not valid at 20"):
        ca.verify_node([long], now=now + timedelta(days=400))


def test_rotate_server_cert_changes_hosts_keeps_key(tmp_path: Path) -> None:
    d = tmp_path / "c"
    init_ca(d, fleet="acme", passphrase=PASS)
    f = CAFiles.under(d)
    key_before = f.server_key.read_bytes()
    rotate_server_cert(d, ["ctl.example.com", "10.1.2.3"])
    leaf = load_chain(f.server_cert.read_bytes())[0]
    assert sans_of(leaf)[2:] == ["DNSName:ctl.example.com", "IPAddress:10.1.2.3"]
    assert f.server_key.read_bytes() == key_before and mode(f.server_cert) == 0o644
    server_context(f.server_cert, f.server_key, f.root_cert, client_certs="optional")


def test_join_token_hosts_go_into_the_node_certificate(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ctl", fleet="acme", passphrase=b"pass-phrase")
    csr = make_csr(generate_key(), "gw1")
    cert = ca.issue_node(csr, node="gw1", tier="gateway",
                         hosts=["GW1.Example.org.", "10.0.0.7", "10.0.0.7", "::1"])
    ident = identity_of(cert, fleet="acme")
    assert ident.hosts == ("gw1.example.org", "10.0.0.7", "::1")
    assert ca.verify_node([cert]).hosts == ident.hosts


@pytest.mark.parametrize("host", ["gw2.node.acme", "cloud.tier.acme", "control.acme",
                                  "GW2.NODE.ACME.", "tier.acme"])
def test_a_host_may_not_be_a_fleet_identity_name(tmp_path: Path, host: str) -> None:
    ca = init_ca(tmp_path / "ctl", fleet="acme", passphrase=b"pass-phrase")
    with pytest.raises(ConfigError, match="fleet identity name"):
        ca.issue_node(make_csr(generate_key(), "gw1"), node="gw1", tier="gateway",
                      hosts=[host])
    with pytest.raises(ConfigError, match="not a DNS name or an IP address"):
        check_hosts("acme", ["bad_host!"])
