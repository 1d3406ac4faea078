"""The fleet's PKI: names, a two-level CA, node certificates with SPIFFE IDs.

Chain of trust::

    root CA        self-signed, 10 years, pathlen 1; key encrypted at rest
     │             (``$EDGEWISE_CA_PASSPHRASE``), read only by ``edgewise control init``
     └ intermediate CA   online (the control plane signs with it), 1 year, pathlen 0
        ├ node certificates   24 h, CN=<node> OU=<tier> O=<fleet>, SANs
        │                     spiffe://<fleet>/node/<node>, <node>.node.<fleet>,
        │                     <tier>.tier.<fleet>; serverAuth + clientAuth
        └ control plane server certificate   90 days, spiffe://<fleet>/control,
                              control.<fleet> + its hosts

Clients trust only the root (pinned by its SHA-256 fingerprint at join time); servers
present leaf + intermediate. The URI SAN is the identity (SPIFFE); the two DNS SANs exist
so that a plain TLS client can say which peer it wants *before* sending a byte: connect
with ``server_hostname=node_dns(fleet, "gateway")`` for that exact node, or
``tier_dns(fleet, "edge")`` for any node of that tier, and Python's hostname check does
the rest. A node certificate's lifetime is short (24 h) because that is the revocation
that always works offline; the control plane's deny list covers the hours in between.

The CA lives in a control directory (:class:`CAFiles`). This module is the one to import:
it re-exports the key and file helpers of :mod:`edgewise.security.keys` and the TLS
contexts of :mod:`edgewise.security.tls` (split out only to keep files short).
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from edgewise.errors import (
    AuthenticationError,
    ConfigError,
    ForbiddenError,
    InvalidRequestError,
    PKIError,
)
from edgewise.security.keys import (
    generate_key,
    load_private_key,
    private_pem,
    public_pem,
    write_private,
    write_public,
)
from edgewise.security.tls import client_context, peer_chain, reload_cert, server_context

__all__ = [
    "CLOCK_SKEW",
    "NAME_RE",
    "CAFiles",
    "FleetCA",
    "NodeIdentity",
    "cert_pem",
    "check_hosts",
    "check_name",
    "client_context",
    "control_dns",
    "csr_pem",
    "fingerprint",
    "generate_key",
    "identity_of",
    "init_ca",
    "load_cert",
    "load_chain",
    "load_csr",
    "load_private_key",
    "make_csr",
    "node_dns",
    "parse_fingerprint",
    "peer_chain",
    "private_pem",
    "public_pem",
    "reload_cert",
    "reserved_host",
    "rotate_server_cert",
    "server_context",
    "spiffe_id",
    "tier_dns",
    "write_private",
    "write_public",
]

#: A fleet, node or tier name: one DNS label (lowercase), so it fits in a hostname.
NAME_RE: re.Pattern[str] = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_SPIFFE_NODE_RE = re.compile(r"spiffe://([a-z0-9-]{1,63})/node/([a-z0-9-]{1,63})")

ROOT_LIFETIME = timedelta(days=3650)
#: Certificates start this far in the past, so a peer whose clock is a little behind
#: still accepts a certificate issued a moment ago.
CLOCK_SKEW = timedelta(minutes=1)
MAX_CSR_BYTES = 16 * 1024
_CSR_CURVES = (ec.SECP256R1, ec.SECP384R1)


def check_name(kind: str, value: str) -> str:
    """``value`` if it is a valid ``kind`` name (a DNS label); ConfigError otherwise."""
    if not isinstance(value, str) or NAME_RE.fullmatch(value) is None:
        raise ConfigError(f"{kind} name {_short(str(value))!r} is not allowed: use 1-63 "
                          "lowercase letters, digits and '-', starting and ending with a "
                          "letter or digit")
    return value


def spiffe_id(fleet: str, node: str) -> str:
    """The node's SPIFFE ID, ``spiffe://<fleet>/node/<node>``: its identity."""
    return f"spiffe://{check_name('fleet', fleet)}/node/{check_name('node', node)}"


def node_dns(fleet: str, node: str) -> str:
    """``<node>.node.<fleet>``: the SNI name that asks for exactly this node."""
    return f"{check_name('node', node)}.node.{check_name('fleet', fleet)}"


def tier_dns(fleet: str, tier: str) -> str:
    """``<tier>.tier.<fleet>``: the SNI name that accepts any node of this tier."""
    return f"{check_name('tier', tier)}.tier.{check_name('fleet', fleet)}"


def control_dns(fleet: str) -> str:
    """``control.<fleet>``: the control plane's name inside the fleet."""
    return f"control.{check_name('fleet', fleet)}"


def _short(text: str, limit: int = 80) -> str:
    """Printable ASCII only, at most ``limit`` characters (for untrusted names in errors)."""
    clean = "".join(c if " " <= c <= "~" else "?" for c in text)
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def _now(now: datetime | None = None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    return now if now.tzinfo is not None else now.replace(tzinfo=UTC)


def _read(path: Path, directory: Path | None = None) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        hint = f": run `edgewise control init --dir {directory}` first" if directory else ""
        raise PKIError(f"{path} is missing{hint}") from None
    except OSError as exc:
        raise PKIError(f"cannot read {path}: {exc.strerror or exc}") from exc


# -- certificates -----------------------------------------------------------------------

def fingerprint(cert: x509.Certificate) -> str:
    """``sha256:`` + 64 lowercase hex digits of the certificate's DER."""
    return "sha256:" + cert.fingerprint(hashes.SHA256()).hex()


def parse_fingerprint(text: str) -> str:
    """Canonical ``sha256:<hex>`` from ``sha256:HEX`` or ``HEX``, with or without colons,
    in any case; ConfigError otherwise."""
    body = text.strip().lower()
    if body.startswith("sha256:"):
        body = body[len("sha256:"):]
    body = body.replace(":", "")
    digits = sum(c in "0123456789abcdef" for c in body)
    if len(body) != 64 or digits != 64:
        extra = "" if digits == len(body) else " and other characters"
        raise ConfigError("--ca-sha256 must be the root CA's SHA-256 fingerprint as "
                          "`edgewise control init` prints it (64 hex digits, optionally "
                          f"prefixed by 'sha256:'); got {digits} hex digits{extra}")
    return "sha256:" + body


def cert_pem(cert: x509.Certificate) -> bytes:
    """PEM of ``cert``."""
    return cert.public_bytes(serialization.Encoding.PEM)


def load_cert(data: bytes, source: str = "certificate") -> x509.Certificate:
    """The first certificate in PEM ``data``; PKIError naming ``source``."""
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise PKIError(f"{source} is not a PEM certificate") from None


def load_chain(data: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle, leaf first."""
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise PKIError("certificate chain is not a PEM bundle of certificates") from None


def make_csr(key: ec.EllipticCurvePrivateKey, node: str, *,
             extra_sans: Sequence[x509.GeneralName] = ()) -> x509.CertificateSigningRequest:
    """A CSR for ``node`` (subject CN=node; the CA decides every other name)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        _name(CN=check_name("node", node)))
    if extra_sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(extra_sans)),
                                        critical=False)
    return builder.sign(key, hashes.SHA256())


def csr_pem(csr: x509.CertificateSigningRequest) -> bytes:
    """PEM of ``csr``."""
    return csr.public_bytes(serialization.Encoding.PEM)


def _check_csr(csr: x509.CertificateSigningRequest) -> ec.EllipticCurvePublicKey:
    """Self-signature, key type and extensions that parse; InvalidRequestError if not."""
    def bad(reason: str) -> InvalidRequestError:
        return InvalidRequestError(f"malformed CSR: {reason}", param="csr")
    try:
        if not csr.is_signature_valid:
            raise bad("its self-signature does not verify")
        key = csr.public_key()
        _ = csr.extensions
    except (ValueError, UnsupportedAlgorithm, TypeError):
        raise bad("its key, signature or extensions cannot be parsed") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise bad(f"its key is {type(key).__name__.lstrip('_')}; use ECDSA P-256 or P-384")
    if not isinstance(key.curve, _CSR_CURVES):
        raise bad(f"its key is on curve {key.curve.name}; use ECDSA P-256 or P-384")
    return key


def load_csr(data: bytes | str) -> x509.CertificateSigningRequest:
    """Parse and check an untrusted PEM CSR (at most 16 KiB, self-signed, EC P-256/P-384)."""
    if isinstance(data, str):
        data = data.encode("utf-8", "replace")
    if len(data) > MAX_CSR_BYTES:
        raise InvalidRequestError(f"malformed CSR: larger than {MAX_CSR_BYTES // 1024} KiB",
                                  param="csr")
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError:
        raise InvalidRequestError("malformed CSR: not a PEM certificate signing request",
                                  param="csr") from None
    _check_csr(csr)
    return csr


def _san_text(name: x509.GeneralName) -> str:
    prefix = {x509.DNSName: "DNS", x509.UniformResourceIdentifier: "URI",
              x509.IPAddress: "IP", x509.RFC822Name: "email"}.get(type(name))
    return f"{prefix}:{_short(str(name.value))}" if prefix else type(name).__name__


def _serial() -> int:
    """A random 128-bit serial (never 0, which RFC 5280 forbids)."""
    return secrets.randbits(128) or 1


def _name(**attrs: str) -> x509.Name:
    oids = {"CN": NameOID.COMMON_NAME, "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
            "O": NameOID.ORGANIZATION_NAME}
    return x509.Name([x509.NameAttribute(oids[k], v) for k, v in attrs.items()])


def _certificate(*, subject: x509.Name, issuer: x509.Name,
                 public_key: ec.EllipticCurvePublicKey,
                 issuer_key: ec.EllipticCurvePrivateKey, not_before: datetime,
                 not_after: datetime, ca_path_length: int | None = None,
                 eku: Sequence[x509.ObjectIdentifier] = (),
                 sans: Sequence[x509.GeneralName] = ()) -> x509.Certificate:
    """One certificate with the extensions a strict (WebPKI-style) verifier expects."""
    is_ca = ca_path_length is not None
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
         .public_key(public_key).serial_number(_serial())
         .not_valid_before(not_before).not_valid_after(not_after)
         .add_extension(x509.BasicConstraints(ca=is_ca, path_length=ca_path_length),
                        critical=True)
         .add_extension(x509.KeyUsage(digital_signature=not is_ca, content_commitment=False,
                                      key_encipherment=False, data_encipherment=False,
                                      key_agreement=False, key_cert_sign=is_ca,
                                      crl_sign=is_ca, encipher_only=False,
                                      decipher_only=False), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
             issuer_key.public_key()), critical=False))
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


@dataclass(frozen=True)
class NodeIdentity:
    """Who a node certificate says its holder is. ``serial`` is 32 lowercase hex digits."""

    fleet: str
    node: str
    tier: str
    spiffe_id: str
    serial: str
    not_before: datetime
    not_after: datetime
    #: Extra names its join token granted (DNS names, IP addresses): how applications
    #: reach the node over HTTPS.
    hosts: tuple[str, ...] = ()

    @property
    def lifetime(self) -> timedelta:
        """How long the certificate is valid in all."""
        return self.not_after - self.not_before

    def remaining(self, now: datetime | None = None) -> timedelta:
        """Time left until it expires (negative once it has)."""
        return self.not_after - _now(now)


def _serial_hex(cert: x509.Certificate) -> str:
    return f"{cert.serial_number:032x}"


def identity_of(cert: x509.Certificate, *, fleet: str | None = None) -> NodeIdentity:
    """The identity in a node certificate (of ``fleet`` when given). Its URI SAN, subject
    and DNS SANs must all agree; AuthenticationError otherwise. Checks names only: the
    signature is :meth:`FleetCA.verify_node`'s (or the TLS handshake's) business."""
    where = f" of fleet {fleet}" if fleet else ""

    def bad(reason: str) -> AuthenticationError:
        return AuthenticationError(
            f"certificate is not an edgewise node certificate{where}: {reason}")
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise bad("it lacks subjectAltName or basicConstraints") from None
    except ValueError:
        raise bad("its extensions do not parse") from None
    if bc.ca:
        raise bad("it is a CA certificate")
    uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    match = _SPIFFE_NODE_RE.fullmatch(uris[0]) if len(uris) == 1 else None
    if match is None or not all(NAME_RE.fullmatch(g) for g in match.groups()):
        raise bad("its URI SAN is not one spiffe://<fleet>/node/<node>")
    cert_fleet, node = match.groups()
    if fleet is not None and cert_fleet != fleet:
        raise bad(f"its SPIFFE ID is in fleet {cert_fleet}")

    def attr(oid: x509.ObjectIdentifier) -> str | None:
        values = cert.subject.get_attributes_for_oid(oid)
        return str(values[0].value) if len(values) == 1 else None
    tier = attr(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if tier is None or NAME_RE.fullmatch(tier) is None:
        raise bad("its subject does not name one tier (OU)")
    if attr(NameOID.COMMON_NAME) != node or attr(NameOID.ORGANIZATION_NAME) != cert_fleet:
        raise bad("its subject CN/O do not match its SPIFFE ID")
    dns = [d.lower() for d in sans.get_values_for_type(x509.DNSName)]
    own = {node_dns(cert_fleet, node), tier_dns(cert_fleet, tier)}
    if not own <= set(dns):
        raise bad("its DNS SANs lack <node>.node.<fleet> or <tier>.tier.<fleet>")
    extra = [d for d in dns if d not in own]
    for name in extra:  # a host name may not stand for another fleet identity
        if reserved_host(cert_fleet, name):
            raise bad(f"its DNS SAN {name} is a fleet identity name")
    ips = [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    if len(sans) != 3 + len(extra) + len(ips):
        raise bad("it carries SANs other than its SPIFFE ID, DNS names and addresses")
    return NodeIdentity(fleet=cert_fleet, node=node, tier=tier, spiffe_id=uris[0],
                        serial=_serial_hex(cert), not_before=cert.not_valid_before_utc,
                        not_after=cert.not_valid_after_utc, hosts=(*extra, *ips))


def reserved_host(fleet: str, name: str) -> bool:
    """Whether DNS name ``name`` is one the fleet's identities use (``*.node.<fleet>``,
    ``*.tier.<fleet>``, ``control.<fleet>``): never a node's extra host name, or a node
    could pose as another node, a tier or the control plane in an SNI check."""
    name = name.lower().rstrip(".")
    return (name.endswith((f".node.{fleet}", f".tier.{fleet}")) or name == control_dns(fleet)
            or name in (f"node.{fleet}", f"tier.{fleet}"))


def check_hosts(fleet: str, hosts: Sequence[str]) -> tuple[str, ...]:
    """``hosts`` as they go into a node certificate (canonical DNS names or addresses);
    ConfigError for a malformed one or a fleet identity name."""
    out = []
    for h in hosts:
        san = _host_san(h)
        value = str(san.value)
        if isinstance(san, x509.DNSName) and reserved_host(fleet, value):
            raise ConfigError(f"host {value} is a fleet identity name (*.node.{fleet}, "
                              f"*.tier.{fleet}, control.{fleet}); pick another")
        if value not in out:
            out.append(value)
    return tuple(out)


# -- the CA -----------------------------------------------------------------------------

@dataclass
class CAFiles:
    """Where a control directory keeps the CA, the server's TLS files and the token key."""

    root_cert: Path
    root_key: Path
    intermediate_cert: Path
    intermediate_key: Path
    server_cert: Path
    server_key: Path
    signing_key: Path
    signing_pub: Path

    @classmethod
    def under(cls, directory: Path) -> CAFiles:
        """The standard layout under ``directory`` (ca/, tls/, tokens/)."""
        return cls(*(Path(directory) / p for p in (
            "ca/root.pem", "ca/root.key", "ca/intermediate.pem", "ca/intermediate.key",
            "tls/server.pem", "tls/server.key", "tokens/signing.key", "tokens/signing.pub")))


class FleetCA:
    """The online part of the fleet's CA: the root certificate (trust anchor) and the
    intermediate certificate and key that sign every node and server certificate."""

    def __init__(self, *, fleet: str, root: x509.Certificate,
                 intermediate: x509.Certificate,
                 intermediate_key: ec.EllipticCurvePrivateKey) -> None:
        self.fleet = check_name("fleet", fleet)
        self.root = root
        self.intermediate = intermediate
        self._key = intermediate_key

    @classmethod
    def load(cls, directory: Path) -> FleetCA:
        """Load the CA from a control directory made by :func:`init_ca`."""
        f = CAFiles.under(directory)
        root = load_cert(_read(f.root_cert, directory), str(f.root_cert))
        inter = load_cert(_read(f.intermediate_cert, directory), str(f.intermediate_cert))
        key = load_private_key(_read(f.intermediate_key, directory),
                               source=str(f.intermediate_key))
        orgs = root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        try:
            inter.verify_directly_issued_by(root)
            ok = key.public_key() == inter.public_key() and len(orgs) == 1
        except (ValueError, TypeError, InvalidSignature):
            ok = False
        if not ok:
            raise PKIError(f"{f.root_cert}, {f.intermediate_cert} and {f.intermediate_key} "
                           "do not belong together; restore all three from one backup")
        return cls(fleet=str(orgs[0].value), root=root, intermediate=inter,
                   intermediate_key=key)

    @property
    def root_fingerprint(self) -> str:
        """``sha256:<hex>`` of the root certificate: what a joining node pins."""
        return fingerprint(self.root)

    def root_pem(self) -> bytes:
        """The root certificate as PEM (the only thing clients trust)."""
        return cert_pem(self.root)

    def _validity(self, now: datetime | None, lifetime: timedelta) -> tuple[datetime, datetime]:
        if lifetime <= timedelta(0):
            raise ConfigError(f"certificate lifetime must be positive, got {lifetime}")
        start = _now(now)
        not_after = min(start + lifetime, self.intermediate.not_valid_after_utc)
        if not_after <= start:
            raise PKIError(f"fleet {self.fleet}'s intermediate CA expired at "
                           f"{self.intermediate.not_valid_after_utc.isoformat()}; "
                           "re-initialise the CA")
        return start - CLOCK_SKEW, not_after

    def issue_node(self, csr: x509.CertificateSigningRequest, *, node: str, tier: str,
                   lifetime: timedelta = timedelta(hours=24),
                   now: datetime | None = None,
                   hosts: Sequence[str] = ()) -> x509.Certificate:
        """Sign a node certificate for ``csr``. The CSR contributes only its key: its CN
        must be ``node`` (if any), its SANs a subset of the node's own, and it may not ask
        to be a CA (ForbiddenError); the lifetime never outlives the intermediate.
        ``hosts``: extra DNS names or addresses the join token granted."""
        check_name("node", node)
        check_name("tier", tier)
        granted = check_hosts(self.fleet, hosts)
        key = _check_csr(csr)
        for cn in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
            if cn.value != node:
                raise ForbiddenError(f"CSR asks for CN={_short(str(cn.value))} but the join "
                                     f"token is for node {node}", param="csr")
        sans: list[x509.GeneralName] = [
            x509.UniformResourceIdentifier(spiffe_id(self.fleet, node)),
            x509.DNSName(node_dns(self.fleet, node)), x509.DNSName(tier_dns(self.fleet, tier)),
            *(_host_san(h) for h in granted)]
        allowed = {(type(s), s.value) for s in sans}
        for ext in csr.extensions:  # never copied into the certificate; checked to refuse
            if isinstance(ext.value, x509.SubjectAlternativeName):
                for asked in ext.value:
                    value = asked.value.lower() if isinstance(asked, x509.DNSName) else asked.value
                    if (type(asked), value) not in allowed:
                        raise ForbiddenError(f"CSR asks for {_san_text(asked)}, which node "
                                             f"{node} may not have", param="csr")
            elif isinstance(ext.value, x509.BasicConstraints) and ext.value.ca:
                raise ForbiddenError("CSR asks to be a CA; node certificates may not sign "
                                     "certificates", param="csr")
        not_before, not_after = self._validity(now, lifetime)
        return _certificate(subject=_name(CN=node, OU=tier, O=self.fleet),
                            issuer=self.intermediate.subject, public_key=key,
                            issuer_key=self._key, not_before=not_before, not_after=not_after,
                            eku=(ExtendedKeyUsageOID.SERVER_AUTH,
                                 ExtendedKeyUsageOID.CLIENT_AUTH), sans=sans)

    def issue_server(self, public_key: ec.EllipticCurvePublicKey, *, hosts: Sequence[str],
                     lifetime: timedelta = timedelta(days=90)) -> x509.Certificate:
        """The control plane's TLS certificate: spiffe://<fleet>/control, control.<fleet>
        and ``hosts`` (DNS names or IP addresses)."""
        sans: list[x509.GeneralName] = [
            x509.UniformResourceIdentifier(f"spiffe://{self.fleet}/control"),
            x509.DNSName(control_dns(self.fleet)), *(_host_san(h) for h in hosts)]
        not_before, not_after = self._validity(None, lifetime)
        return _certificate(subject=_name(CN="control", O=self.fleet),
                            issuer=self.intermediate.subject, public_key=public_key,
                            issuer_key=self._key, not_before=not_before, not_after=not_after,
                            eku=(ExtendedKeyUsageOID.SERVER_AUTH,
                                 ExtendedKeyUsageOID.CLIENT_AUTH), sans=sans)

    def chain_pem(self, leaf: x509.Certificate) -> bytes:
        """``leaf`` + the intermediate, as a server (or mTLS client) presents them."""
        return cert_pem(leaf) + cert_pem(self.intermediate)

    def verify_node(self, chain: Sequence[x509.Certificate], *,
                    now: datetime | None = None) -> NodeIdentity:
        """Check a presented node certificate (leaf first) against this fleet's root and
        return its identity; AuthenticationError if it is expired, signed by anyone else,
        or not a node certificate of this fleet."""
        if not chain:
            raise AuthenticationError("no certificate was presented")
        leaf, when = chain[0], _now(now)
        if when > leaf.not_valid_after_utc:
            raise AuthenticationError(
                f"certificate expired at {leaf.not_valid_after_utc.isoformat()}")
        if when < leaf.not_valid_before_utc:
            raise AuthenticationError(
                f"certificate is not valid before {leaf.not_valid_before_utc.isoformat()}")
        # cryptography's WebPKI-profile client verifier handles these certificates (URI +
        # DNS SANs, EKU clientAuth): path building to the root as the only anchor,
        # signatures, validity of every link, basic constraints and path lengths. Presented
        # intermediates cannot add trust: whatever they are, the path must end at our root.
        verifier = PolicyBuilder().store(Store([self.root])).time(when).build_client_verifier()
        try:
            verifier.verify(leaf, [*chain[1:], self.intermediate])
        except VerificationError:
            inter = self.intermediate
            if leaf.issuer == inter.subject and not (
                    inter.not_valid_before_utc <= when <= inter.not_valid_after_utc):
                raise AuthenticationError(f"fleet {self.fleet}'s intermediate CA is not valid "
                                          f"at {when.isoformat()}") from None
            raise AuthenticationError(
                f"certificate is not signed by fleet {self.fleet}'s CA") from None
        return identity_of(leaf, fleet=self.fleet)


def _host_san(host: str) -> x509.GeneralName:
    with contextlib.suppress(ValueError):
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    name = host.strip().rstrip(".").lower()
    if len(name) > 253 or not all(NAME_RE.fullmatch(x) for x in name.split(".")):
        raise ConfigError(f"host {_short(host)!r} is not a DNS name or an IP address")
    return x509.DNSName(name)


def init_ca(directory: Path, *, fleet: str, passphrase: bytes,
            hosts: Sequence[str] = ("localhost", "127.0.0.1", "::1"),
            intermediate_lifetime: timedelta = timedelta(days=365)) -> FleetCA:
    """Create a fleet's CA and control plane credentials under ``directory``: root
    (key encrypted with ``passphrase``), intermediate, the server certificate for
    ``hosts`` and the ES256 access-token signing key pair. Refuses to overwrite."""
    check_name("fleet", fleet)
    if not passphrase:
        raise PKIError("set $EDGEWISE_CA_PASSPHRASE to the passphrase that will encrypt the "
                       "fleet's root CA key (it is empty)")
    if intermediate_lifetime <= timedelta(0):
        raise ConfigError(f"intermediate lifetime must be positive, got {intermediate_lifetime}")
    files = CAFiles.under(directory)
    if files.root_cert.exists():
        raise PKIError(f"{directory} is already initialised ({files.root_cert} exists); "
                       "use it as it is, or choose another --dir")
    now = _now()
    root_key, inter_key = generate_key(), generate_key()
    root_name = _name(CN=f"edgewise {fleet} root CA", O=fleet)
    root = _certificate(subject=root_name, issuer=root_name, public_key=root_key.public_key(),
                        issuer_key=root_key, not_before=now - CLOCK_SKEW,
                        not_after=now + ROOT_LIFETIME, ca_path_length=1)
    inter = _certificate(subject=_name(CN=f"edgewise {fleet} intermediate CA", O=fleet),
                         issuer=root_name, public_key=inter_key.public_key(),
                         issuer_key=root_key, not_before=now - CLOCK_SKEW,
                         not_after=min(now + intermediate_lifetime,
                                       root.not_valid_after_utc), ca_path_length=0)
    ca = FleetCA(fleet=fleet, root=root, intermediate=inter, intermediate_key=inter_key)
    server_key = generate_key()
    server = ca.issue_server(server_key.public_key(), hosts=hosts)
    # The access-token key is another P-256 key (ES256); tokens.signing_key_pair makes
    # the same pair, but tokens imports this module, so the pair is built here directly.
    token_key = generate_key()
    write_private(files.root_key, private_pem(root_key, passphrase))
    write_private(files.intermediate_key, private_pem(inter_key))
    write_public(files.intermediate_cert, cert_pem(inter))
    write_private(files.server_key, private_pem(server_key))
    write_public(files.server_cert, ca.chain_pem(server))
    write_private(files.signing_key, private_pem(token_key))
    write_public(files.signing_pub, public_pem(token_key.public_key()))
    # Last: root.pem existing is what "initialised" means, so a crash before this line
    # leaves a directory that init can simply run on again.
    write_public(files.root_cert, cert_pem(root))
    return ca


def rotate_server_cert(directory: Path, hosts: Sequence[str]) -> None:
    """Reissue ``tls/server.pem`` for ``hosts`` from the intermediate. The existing server
    key is kept (only the certificate file changes, atomically, so a reader never sees a
    certificate and key that do not match); a missing or unreadable key is replaced."""
    ca, files = FleetCA.load(directory), CAFiles.under(directory)
    try:
        key = load_private_key(files.server_key.read_bytes(), source=str(files.server_key))
    except (OSError, PKIError):
        key = generate_key()
        write_private(files.server_key, private_pem(key))
    write_public(files.server_cert, ca.chain_pem(ca.issue_server(key.public_key(),
                                                                 hosts=hosts)))
