"""The control plane under attack, over real TLS on loopback: enrolment — the join
(identity files, key mode, SPIFFE certificate, lifetime, a private key that never leaves),
join tokens reused, expired, for another name, not tokens at all, guessed by brute force
(rate-limited per address), a CA that is not the pinned one, and hostile CSRs.

Mutual-TLS routes, heartbeats and revocation are in test_control_mtls.py; admin tokens,
central config, the admin CLI and two replicas on PostgreSQL in test_control_admin.py.
Fixtures and the checks every refusal gets (status, one line, no secret, audited, still
serving) are in control_helpers.py.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import stat
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from control_helpers import (
    FLEET,
    NODE_CERT_HOURS,
    audit_text,
    audited,
    cert_files,
    control_plane,
    csr_text,
    fresh,
    https,
    mark,
    post_join,
    refused,
    serving,
    token_used,
)
from edgewise.errors import ConfigError, FleetError
from edgewise.fleet.agent import join
from edgewise.fleet.state import FleetState
from edgewise.security.pki import (
    CLOCK_SKEW,
    client_context,
    csr_pem,
    fingerprint,
    generate_key,
    identity_of,
    load_cert,
    load_chain,
    load_private_key,
    make_csr,
)
from edgewise.security.tokens import new_join_token
from fleet_harness import ControlServer, control_dir


@pytest.fixture(scope="module")
def cs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlServer]:
    yield from control_plane(tmp_path_factory, "control")


@pytest.fixture(scope="module")
def impostor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlServer]:
    yield from control_plane(tmp_path_factory, "impostor")


# -- join: the happy path --------------------------------------------------------------------

class Recorder(httpx.HTTPTransport):
    """Keeps every request body the join sends (to show the private key is not in one)."""

    def __init__(self, ca: Path) -> None:
        super().__init__(verify=client_context(ca))
        self.bodies: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(request.read())
        return super().handle_request(request)


def test_join_writes_the_identity_with_a_private_key_that_never_left(
        cs: ControlServer, tmp_path: Path) -> None:
    name, since = fresh(), mark(cs)
    token = cs.token(name, "gateway")
    wire = Recorder(cs.cp.files.root_cert)
    state_dir = tmp_path / "fleet"
    started = datetime.now(UTC)
    m = join(cs.url, token=token, ca_sha256=cs.fingerprint, state_dir=state_dir, node=name,
             transport=wire)

    state = FleetState(state_dir)
    assert sorted(p.name for p in state_dir.iterdir()) == [
        "ca.pem", "fleet.json", "node.key", "node.pem", "token-key.pem"]
    assert stat.S_IMODE(os.stat(state.key_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(state_dir).st_mode) == 0o700
    assert (m.fleet, m.node, m.tier, m.ca_sha256) == (FLEET, name, "gateway", cs.fingerprint)
    assert m.spiffe_id == f"spiffe://{FLEET}/node/{name}"
    assert json.loads(state.membership_file.read_text())["spiffe_id"] == m.spiffe_id
    assert fingerprint(load_cert(state.ca_file.read_bytes())) == cs.fingerprint
    assert state.token_key_file.read_text() == cs.cp.files.signing_pub.read_text()

    leaf, inter = load_chain(state.cert_file.read_bytes())
    assert inter == cs.cp.ca.intermediate
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [m.spiffe_id]
    assert set(sans.get_values_for_type(x509.DNSName)) == {
        f"{name}.node.{FLEET}", f"gateway.tier.{FLEET}"}
    assert leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value \
        == "gateway"
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == {
        ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    ident = cs.cp.ca.verify_node([leaf, inter])
    assert (ident.node, ident.tier, ident.spiffe_id) == (name, "gateway", m.spiffe_id)
    # node_cert_hours, counted from the moment of issue (not_before is CLOCK_SKEW earlier)
    assert ident.lifetime == timedelta(hours=NODE_CERT_HOURS) + CLOCK_SKEW
    assert abs(ident.not_after - (started + timedelta(hours=NODE_CERT_HOURS))) \
        < timedelta(seconds=10)

    key = load_private_key(state.key_file.read_bytes())
    assert key.public_key() == leaf.public_key()
    secret = key.private_numbers().private_value
    key_der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    assert len(wire.bodies) == 2  # GET /v1/fleet/ca, then POST /v1/join
    for body in wire.bodies:
        for form in (str(secret), f"{secret:x}", base64.b64encode(key_der).decode()[:40]):
            assert form.encode() not in body

    rec = cs.cp.node(name)
    assert rec is not None
    assert (rec.tier, rec.serial, rec.spiffe_id) == ("gateway", ident.serial, m.spiffe_id)
    [entry] = audited(cs, since, "join")
    assert (entry.outcome, entry.node, entry.requester) == ("answered", name, "127.0.0.1")
    assert m.spiffe_id in entry.reason
    assert token not in audit_text(cs)
    assert token_used(cs, token)


# -- join: refused tokens --------------------------------------------------------------------

def test_a_join_token_works_once(cs: ControlServer, tmp_path: Path) -> None:
    name = fresh()
    token = cs.token(name, "device")
    join(cs.url, token=token, ca_sha256=cs.fingerprint, state_dir=tmp_path / "a", node=name)
    since = mark(cs)
    with https(cs) as c:
        refused(post_join(c, token, name), 401, "join token was already used at", secret=token)
    with pytest.raises(FleetError, match=r"refused the join \(401\).*already used") as err:
        join(cs.url, token=token, ca_sha256=cs.fingerprint, state_dir=tmp_path / "b",
             node=name)
    assert token not in str(err.value)
    assert not (tmp_path / "b" / "fleet.json").exists()
    entries = audited(cs, since, "join")
    assert [e.outcome for e in entries] == ["refused:unauthenticated"] * 2
    assert all("already used" in e.reason and e.node == name for e in entries)
    assert token not in audit_text(cs)
    serving(cs)


def test_an_expired_join_token_is_refused(cs: ControlServer) -> None:
    name = fresh()
    token = cs.token(name, "device", ttl=timedelta(milliseconds=300))
    time.sleep(0.4)
    since = mark(cs)
    with https(cs) as c:
        refused(post_join(c, token, name), 401, "join token expired at", secret=token)
    [entry] = audited(cs, since, "join")
    assert entry.outcome == "refused:unauthenticated"
    assert cs.cp.node(name) is None
    serving(cs)


def test_a_token_of_another_node_is_forbidden_and_not_consumed(cs: ControlServer) -> None:
    owner, thief = fresh("owner"), fresh("thief")
    token = cs.token(owner, "device")
    since = mark(cs)
    with https(cs) as c:
        refused(post_join(c, token, thief), 403, f"join token is for node {owner}, not {thief}",
                secret=token)
        assert not token_used(cs, token)
        assert cs.cp.node(thief) is None
        assert post_join(c, token, owner).status_code == 200
    assert cs.cp.node(owner) is not None
    outcomes = [(e.outcome, e.node) for e in audited(cs, since, "join")]
    assert outcomes == [("refused:forbidden", thief), ("answered", owner)]
    serving(cs)


@pytest.mark.parametrize("case", ["wrong pin", "impostor at the URL"])
def test_a_ca_that_is_not_the_pinned_one_gets_no_token(
        case: str, cs: ControlServer, impostor: ControlServer, tmp_path: Path) -> None:
    name = fresh()
    token = cs.token(name, "device")
    url, pin = ((cs.url, impostor.fingerprint) if case == "wrong pin"
                else (impostor.url, cs.fingerprint))
    since_cs, since_imp = mark(cs), mark(impostor)
    with pytest.raises(FleetError, match="not the pinned") as err:
        join(url, token=token, ca_sha256=pin, state_dir=tmp_path / "fleet", node=name)
    assert "\n" not in str(err.value) and token not in str(err.value)
    assert not (tmp_path / "fleet").exists()
    # nobody saw the token: neither control plane logged a join, and it still works
    assert audited(cs, since_cs, "join") == [] == audited(impostor, since_imp, "join")
    assert not token_used(cs, token)
    join(cs.url, token=token, ca_sha256=cs.fingerprint, state_dir=tmp_path / "fleet", node=name)
    assert FleetState(tmp_path / "fleet").identity().node == name


def test_a_malformed_pin_is_refused_before_anything_is_sent(cs: ControlServer,
                                                            tmp_path: Path) -> None:
    since = mark(cs)
    with pytest.raises(ConfigError, match="64 hex digits"):
        join(cs.url, token=new_join_token(), ca_sha256="sha256:" + "zz" * 32,
             state_dir=tmp_path / "fleet", node=fresh())
    with pytest.raises(FleetError, match="must be https://"):
        join(cs.url.replace("https", "http"), token=new_join_token(),
             ca_sha256=cs.fingerprint, state_dir=tmp_path / "fleet", node=fresh())
    assert audited(cs, since, "join") == []


@pytest.mark.parametrize(("token", "status", "fragment"), [
    ("garbage", 401, "not an edgewise join token"),
    ("", 401, "not an edgewise join token"),
    ("ewj_" + "A" * 42, 401, "not an edgewise join token"),
    ("ewj_" + "é" * 43, 401, "not an edgewise join token"),
    ("\u202eewj_" + "A" * 43, 401, "not an edgewise join token"),
    ("ewj_" + "A" * 43, 401, "unknown join token"),
    ("Z" * 10_000, 400, "invalid value for 'token': String should have at most 256"),
    (12345, 400, "invalid value for 'token'"),
    (None, 400, "invalid value for 'token'"),
], ids=["garbage", "empty", "short", "unicode", "bidi", "unknown", "10 KB", "number", "null"])
def test_what_is_not_a_join_token_is_refused_in_one_line(
        token: Any, status: int, fragment: str, cs: ControlServer) -> None:
    name, since = fresh(), mark(cs)
    with https(cs) as c:
        refused(post_join(c, token, name), status, fragment,
                secret=token if isinstance(token, str) and len(token) > 3 else None)
    entries = audited(cs, since, "join")
    if status == 401:  # reached the control plane's checks: audited, without the input
        [entry] = entries
        assert entry.outcome == "refused:unauthenticated"
        if token:
            assert str(token) not in audit_text(cs)
    else:  # refused by the body's schema, before any check
        assert entries == []
    assert cs.cp.node(name) is None
    serving(cs)


@pytest.mark.parametrize(("node", "fragment"), [
    ("Node_1", "node name 'Node_1' is not allowed"),
    ("../../etc", "node name '../../etc' is not allowed"),
    ("a\nb", "node name 'a?b' is not allowed"),
    ("a" * 65, "invalid value for 'node': String should have at most 64"),
])
def test_a_hostile_node_name_is_refused_in_one_line(node: str, fragment: str,
                                                    cs: ControlServer) -> None:
    token = cs.token(fresh(), "device")
    with https(cs) as c:
        refused(post_join(c, token, node, csr=csr_text("x")), 400, fragment, secret=token)
    assert not token_used(cs, token)
    serving(cs)


def test_brute_force_on_join_tokens_is_rate_limited_per_address(tmp_path: Path) -> None:
    control_dir(tmp_path / "cp", fleet=FLEET, join_failures_per_minute=3)
    with ControlServer(tmp_path / "cp") as cs, https(cs) as c:
        name = fresh()
        good = cs.token(name, "device")
        for _ in range(3):
            guess = new_join_token()
            refused(post_join(c, guess, name), 401, "unknown join token", secret=guess)
        guess = new_join_token()
        r = post_join(c, guess, name)
        refused(r, 429, "too many failed join attempts from 127.0.0.1; wait", secret=guess)
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        # while limited, even the right token is refused, and it is not spent
        r = post_join(c, good, name)
        refused(r, 429, "too many failed join attempts", secret=good)
        assert not token_used(cs, good)
        assert cs.cp.node(name) is None
        serving(cs)
        # the limit is per client address: another one joins with that token
        with https(cs, local_address="127.0.0.2") as other:
            assert post_join(other, good, name).status_code == 200
        assert cs.cp.node(name) is not None
        failures = [e for e in audited(cs, 0, "join") if e.outcome != "answered"]
        assert [e.outcome for e in failures] == ["refused:unauthenticated"] * 3
        assert good not in audit_text(cs)


# -- hostile CSRs -----------------------------------------------------------------------------

def _ca_csr(key: ec.EllipticCurvePrivateKey, node: str) -> str:
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node)]))
           .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
           .sign(key, hashes.SHA256()))
    return csr_pem(csr).decode("ascii")


#: CSRs that parse and are self-signed but ask for what the token does not grant.
FORBIDDEN_CSRS: dict[str, tuple[Callable[[ec.EllipticCurvePrivateKey, str], str], str]] = {
    "extra DNS SAN": (lambda k, n: csr_text(n, k, extra_sans=[x509.DNSName("evil.example")]),
                      "CSR asks for DNS:evil.example, which node {n} may not have"),
    "another node's SPIFFE ID": (
        lambda k, n: csr_text(n, k, extra_sans=[
            x509.UniformResourceIdentifier(f"spiffe://{FLEET}/node/victim")]),
        f"CSR asks for URI:spiffe://{FLEET}/node/victim, which node {{n}} may not have"),
    "IP SAN": (lambda k, n: csr_text(n, k, extra_sans=[
        x509.IPAddress(ipaddress.ip_address("10.0.0.1"))]),
        "CSR asks for IP:10.0.0.1, which node {n} may not have"),
    "another tier's DNS name": (
        lambda k, n: csr_text(n, k, extra_sans=[x509.DNSName(f"cloud.tier.{FLEET}")]),
        f"CSR asks for DNS:cloud.tier.{FLEET}, which node {{n}} may not have"),
    "CN of another node": (lambda k, n: csr_text("victim", k),
                           "CSR asks for CN=victim but the join token is for node {n}"),
    "CA=true": (_ca_csr, "CSR asks to be a CA; node certificates may not sign certificates"),
}


@pytest.mark.parametrize("case", FORBIDDEN_CSRS)
def test_a_csr_asking_for_more_than_the_token_grants_is_forbidden(
        case: str, cs: ControlServer) -> None:
    make, message = FORBIDDEN_CSRS[case]
    name, since = fresh(), mark(cs)
    token = cs.token(name, "device")
    with https(cs) as c:
        refused(post_join(c, token, name, make(generate_key(), name)), 403,
                message.format(n=name), secret=token)
    assert cs.cp.node(name) is None
    [entry] = audited(cs, since, "join")
    assert (entry.outcome, entry.node) == ("refused:forbidden", name)
    serving(cs)


@pytest.mark.parametrize("case", ["extra DNS SAN", "CN of another node", "CA=true"])
def test_a_forbidden_csr_does_not_burn_the_token(case: str, cs: ControlServer) -> None:
    make, _ = FORBIDDEN_CSRS[case]
    name = fresh()
    token = cs.token(name, "device")
    with https(cs) as c:
        assert post_join(c, token, name, make(generate_key(), name)).status_code == 403
        assert not token_used(cs, token)
        assert post_join(c, token, name).status_code == 200


def test_a_csr_may_repeat_the_names_the_node_will_get(cs: ControlServer) -> None:
    """The check refuses extra names, not names: the node's own SANs are fine."""
    name = fresh()
    own = [x509.UniformResourceIdentifier(f"spiffe://{FLEET}/node/{name}"),
           x509.DNSName(f"{name.upper()}.node.{FLEET}"), x509.DNSName(f"device.tier.{FLEET}")]
    with https(cs) as c:
        r = post_join(c, cs.token(name, "device"), name, csr_text(name, extra_sans=own))
    assert r.status_code == 200, r.text
    assert identity_of(load_chain(r.json()["certificate"].encode())[0]).node == name


def test_a_token_grants_host_names_and_the_csr_gets_those_and_no_more(
        cs: ControlServer, tmp_path: Path) -> None:
    name = fresh()
    hosts = [x509.DNSName("edge-7.example.com"), x509.IPAddress(ipaddress.ip_address("10.1.2.3"))]

    def token() -> str:
        return cs.cp.create_join_token(node=name, tier="device", by="test",
                                       hosts=["Edge-7.example.com", "10.1.2.3"])[0]
    with https(cs) as c:
        for extra in (x509.DNSName("other.example.com"),
                      x509.IPAddress(ipaddress.ip_address("10.1.2.4")),
                      x509.DNSName(f"device.tier.{FLEET}.evil")):
            refused(post_join(c, token(), name, csr_text(name, extra_sans=[*hosts, extra])),
                    403, "which node", f"{name} may not have")
        key = generate_key()
        r = post_join(c, token(), name, csr_text(name, key, extra_sans=hosts))
    assert r.status_code == 200, r.text
    chain = r.json()["certificate"].encode()
    ident = identity_of(load_chain(chain)[0])
    assert ident.hosts == ("edge-7.example.com", "10.1.2.3")
    # renewal keeps them (and only them)
    with https(cs, cert=cert_files(tmp_path / "n", chain, key)) as c:
        r = c.post("/v1/renew", json={"csr": csr_text(name, extra_sans=hosts)})
    assert r.status_code == 200, r.text
    assert identity_of(load_chain(r.json()["certificate"].encode())[0]).hosts == ident.hosts


def _tampered(node: str) -> str:
    der = bytearray(make_csr(generate_key(), node).public_bytes(serialization.Encoding.DER))
    der[-10] ^= 0x01  # inside the signature: still parses, no longer verifies
    body = base64.encodebytes(bytes(der)).decode("ascii")
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"


def _a_certificate(node: str) -> str:
    """A (self-signed) certificate where a CSR should be."""
    key = generate_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + timedelta(hours=1)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _other_key(node: str, key: Any) -> str:
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node)]))
           .sign(key, hashes.SHA256()))
    return csr_pem(csr).decode("ascii")


#: CSRs refused before the token is looked at (so it is not consumed).
MALFORMED_CSRS: dict[str, tuple[Callable[[str], str], str]] = {
    "not PEM": (lambda n: "hello", "malformed CSR: not a PEM certificate signing request"),
    "PEM of garbage": (lambda n: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
                                 "-----END CERTIFICATE REQUEST-----\n",
                       "malformed CSR: not a PEM certificate signing request"),
    "a certificate": (_a_certificate, "malformed CSR: not a PEM certificate signing request"),
    "bad signature": (_tampered, "malformed CSR: its self-signature does not verify"),
    "RSA key": (lambda n: _other_key(n, rsa.generate_private_key(65537, 2048)),
                "malformed CSR: its key is RSAPublicKey; use ECDSA P-256 or P-384"),
    "curve secp256k1": (lambda n: _other_key(n, ec.generate_private_key(ec.SECP256K1())),
                        "malformed CSR: its key is on curve secp256k1"),
    "16 K characters": (lambda n: "A" * 16_385,
                        "invalid value for 'csr': String should have at most 16384"),
    "16 KiB of UTF-8": (lambda n: "é" * 9_000, "malformed CSR: larger than 16 KiB"),
}


@pytest.mark.parametrize("case", MALFORMED_CSRS)
def test_a_malformed_csr_is_refused_and_the_token_survives(case: str,
                                                           cs: ControlServer) -> None:
    make, message = MALFORMED_CSRS[case]
    name, since = fresh(), mark(cs)
    token = cs.token(name, "device")
    with https(cs) as c:
        refused(post_join(c, token, name, make(name)), 400, message, secret=token)
        assert not token_used(cs, token)
        serving(cs)
        assert post_join(c, token, name).status_code == 200
    entries = audited(cs, since, "join")
    if "invalid value" in message:  # the body's schema refused it: not the service
        assert [e.outcome for e in entries] == ["answered"]
    else:
        assert [e.outcome.split(":")[0] for e in entries] == ["refused", "answered"]
