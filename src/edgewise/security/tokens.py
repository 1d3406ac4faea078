"""Join tokens and scoped access tokens: the fleet's two kinds of bearer credential.

**Join tokens** (``ewj_`` + 43 base64url characters = 256 random bits) let a node enrol
once: the admin creates one for a node name and tier, the node sends it with its CSR.
The control plane stores only :func:`join_token_digest` — SHA-256 of the token, without
salt. Salt (and slow hashes) exist to protect *guessable* secrets such as passwords from
precomputed tables and dictionaries; a uniformly random 256-bit token cannot be guessed
or tabulated, so one SHA-256 is as good as any KDF here, and an unsalted digest is a
deterministic key the store can look up in one indexed query.

**Access tokens** are ES256 JWTs (RFC 7519) the control plane signs with its P-256 key
(``tokens/signing.key``) and every node verifies offline with the public half it got at
join time. They carry least privilege: a subject, scopes (``infer``, ``admin``,
``metrics``), an audience (``edgewise:<fleet>`` for every node, or
``edgewise:<fleet>:<node>`` for one) and optionally the highest sensitivity level the
holder may send. They live at most 15 minutes, and the verifier enforces that from the
token's own ``iat``/``exp`` too, so a key that signed a long-lived token by mistake (or
a hand-forged one) is still refused. Only ES256 is accepted: ``alg: none`` and the
HS256 key-confusion trick (HMAC keyed with the public key's PEM) are rejected before any
signature check.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edgewise.errors import AuthenticationError, ConfigError, ForbiddenError, PKIError
from edgewise.levels import Level
from edgewise.security.pki import check_name, generate_key, private_pem, public_pem

__all__ = [
    "JOIN_TOKEN_PREFIX",
    "MAX_ACCESS_TTL",
    "SCOPES",
    "AccessClaims",
    "AccessTokenIssuer",
    "AccessTokenVerifier",
    "check_join_token",
    "fleet_audience",
    "join_token_digest",
    "key_id",
    "new_join_token",
    "node_audience",
    "signing_key_pair",
]

JOIN_TOKEN_PREFIX = "ewj_"
_JOIN_RE = re.compile(r"ewj_[A-Za-z0-9_-]{43}")
SCOPES: tuple[str, ...] = ("infer", "admin", "metrics")
MAX_ACCESS_TTL = timedelta(minutes=15)
_SUBJECT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@:/+=-]{0,127}")
_MAX_TOKEN_CHARS = 8192
_REQUIRED = ("exp", "iat", "aud", "iss", "sub", "scope")


# -- join tokens ------------------------------------------------------------------------

def new_join_token() -> str:
    """A new join token: ``ewj_`` + base64url of 32 random bytes, unpadded."""
    raw = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")
    return JOIN_TOKEN_PREFIX + raw


def check_join_token(token: str) -> str:
    """``token`` without surrounding whitespace if it has the join-token shape;
    AuthenticationError (that never repeats the input) otherwise."""
    clean = token.strip() if isinstance(token, str) else ""
    if _JOIN_RE.fullmatch(clean) is None:
        raise AuthenticationError("not an edgewise join token (expected ewj_ followed by 43 "
                                  "characters)")
    return clean


def join_token_digest(token: str) -> str:
    """Hex SHA-256 of a (checked, stripped) join token: what the control plane stores.
    No salt: see the module docstring."""
    return hashlib.sha256(check_join_token(token).encode("ascii")).hexdigest()


# -- access tokens ----------------------------------------------------------------------

def fleet_audience(fleet: str) -> str:
    """``edgewise:<fleet>``: an access token every node of the fleet accepts."""
    return f"edgewise:{check_name('fleet', fleet)}"


def node_audience(fleet: str, node: str) -> str:
    """``edgewise:<fleet>:<node>``: an access token only that node accepts."""
    return f"edgewise:{check_name('fleet', fleet)}:{check_name('node', node)}"


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """The ``kid`` of a signing key: the first 16 hex digits of SHA-256 of its DER
    SubjectPublicKeyInfo (names the key in headers and logs; proves nothing)."""
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:16]


def signing_key_pair() -> tuple[bytes, bytes]:
    """A new ES256 key pair: (private PKCS#8 PEM, public SubjectPublicKeyInfo PEM)."""
    key = generate_key()
    return private_pem(key), public_pem(key.public_key())


def _p256(key: object, what: str) -> None:
    curve = getattr(key, "curve", None)
    if not isinstance(curve, ec.SECP256R1):
        raise PKIError(f"the access-token {what} must be an ECDSA P-256 key (ES256)")


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    return now if now.tzinfo is not None else now.replace(tzinfo=UTC)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


@dataclass(frozen=True)
class AccessClaims:
    """The verified claims of an access token."""

    subject: str
    scopes: frozenset[str]
    audience: str
    issuer: str
    issued_at: datetime
    expires_at: datetime
    token_id: str
    sensitivity: Level | None

    def has(self, scope: str) -> bool:
        """Whether the token grants ``scope``."""
        return scope in self.scopes


class AccessTokenIssuer:
    """Signs access tokens with the control plane's P-256 key; ``issuer`` is
    ``spiffe://<fleet>/control``."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey, *, issuer: str) -> None:
        _p256(private_key, "signing key")
        self._key = private_key
        self.issuer = issuer
        self.kid = key_id(private_key.public_key())

    def issue(self, *, subject: str, scopes: Iterable[str], audience: str,
              ttl: timedelta = MAX_ACCESS_TTL, sensitivity: Level | str | None = None,
              now: datetime | None = None) -> str:
        """A signed token for ``subject``; ConfigError for an unknown scope, a subject of
        the wrong shape, an empty audience or a ``ttl`` outside (0, 15 min]."""
        granted = sorted(set(scopes))
        unknown = [s for s in granted if s not in SCOPES]
        if unknown or not granted:
            raise ConfigError(f"unknown scope {', '.join(unknown) or '(none given)'}; valid "
                              f"scopes: {', '.join(SCOPES)}")
        if not isinstance(subject, str) or _SUBJECT_RE.fullmatch(subject) is None:
            raise ConfigError("access token subject must be 1-128 characters of letters, "
                              "digits and _.@:/+=- starting with a letter or digit")
        if not isinstance(audience, str) or not audience:
            raise ConfigError("access token audience must be fleet_audience(...) or "
                              "node_audience(...)")
        if not timedelta(0) < ttl <= MAX_ACCESS_TTL:
            raise ConfigError(f"access token ttl must be more than 0 and at most "
                              f"{int(MAX_ACCESS_TTL.total_seconds() // 60)} minutes; got {ttl}")
        try:
            level = Level.parse(sensitivity) if sensitivity is not None else None
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        iat = int(_utc(now).timestamp())
        claims: dict[str, Any] = {
            "iss": self.issuer, "sub": subject, "aud": audience, "iat": iat, "nbf": iat,
            "exp": iat + math.ceil(ttl.total_seconds()), "jti": secrets.token_urlsafe(16),
            "scope": " ".join(granted)}
        if level is not None:
            claims["sensitivity"] = level.value
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self.kid})


class AccessTokenVerifier:
    """Verifies access tokens offline against the control plane's public key, for one
    issuer and the audiences this service answers to."""

    def __init__(self, public_key: ec.EllipticCurvePublicKey, *, issuer: str,
                 audiences: Sequence[str], leeway_s: float = 5) -> None:
        _p256(public_key, "verification key")
        if isinstance(audiences, str) or not audiences:
            raise ConfigError("audiences must be a non-empty list of audience strings")
        self._key = public_key
        self.issuer = issuer
        self.audiences = tuple(audiences)
        self.leeway_s = float(leeway_s)

    @classmethod
    def from_pem(cls, pem: bytes, *, issuer: str,
                 audiences: Sequence[str]) -> AccessTokenVerifier:
        """A verifier for the PEM public key the control plane handed out at join time."""
        try:
            key = serialization.load_pem_public_key(pem)
        except (ValueError, TypeError):
            raise PKIError("the access-token key is not a PEM public key") from None
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise PKIError("the access-token key must be an ECDSA P-256 key (ES256)")
        return cls(key, issuer=issuer, audiences=audiences)

    def verify(self, token: str, *, scope: str | None = None,
               now: datetime | None = None) -> AccessClaims:
        """The claims of ``token`` if it is a valid, current ES256 token of this issuer
        for one of our audiences (AuthenticationError otherwise) that grants ``scope``
        when one is named (ForbiddenError otherwise)."""
        if scope is not None and scope not in SCOPES:
            raise ConfigError(f"unknown scope {scope!r}; valid scopes: {', '.join(SCOPES)}")
        if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN_CHARS:
            raise AuthenticationError("malformed access token")
        try:
            # Signature only (algorithms pins ES256); every claim is checked below, with
            # our own clock (``now``) and one clear message each.
            claims = jwt.decode(token.strip(), self._key, algorithms=["ES256"],
                                options={"verify_exp": False, "verify_iat": False,
                                         "verify_nbf": False, "verify_aud": False,
                                         "verify_iss": False, "verify_sub": False,
                                         "verify_jti": False})
        except jwt.InvalidAlgorithmError:
            raise AuthenticationError("access token is not signed with ES256, the only "
                                      "algorithm edgewise accepts") from None
        except jwt.InvalidSignatureError:
            raise AuthenticationError("access token signature does not verify against the "
                                      "control plane's key") from None
        except jwt.PyJWTError:
            raise AuthenticationError("malformed access token") from None
        return self._check(claims, scope=scope, now=_utc(now).timestamp())

    def _check(self, claims: dict[str, Any], *, scope: str | None,
               now: float) -> AccessClaims:
        missing = [c for c in _REQUIRED if c not in claims]
        if missing:
            raise AuthenticationError(f"malformed access token: no {missing[0]} claim")
        times = {c: claims[c] for c in ("iat", "exp", "nbf") if c in claims}
        strings = {c: claims[c] for c in ("sub", "iss", "scope", "jti") if c in claims}
        if (any(isinstance(v, bool) or not isinstance(v, int | float) for v in times.values())
                or any(not isinstance(v, str) for v in strings.values())):
            raise AuthenticationError("malformed access token: a claim has the wrong type")
        iat, exp, leeway = float(claims["iat"]), float(claims["exp"]), self.leeway_s
        if exp - iat > MAX_ACCESS_TTL.total_seconds() + leeway:
            raise AuthenticationError(
                f"access token lives {exp - iat:.0f} s; edgewise access tokens live at most "
                f"{MAX_ACCESS_TTL.total_seconds():.0f} s")
        if now > exp + leeway:
            raise AuthenticationError(f"access token expired at {_iso(exp)}")
        if max(iat, float(claims.get("nbf", iat))) > now + leeway:
            raise AuthenticationError(f"access token is not valid before "
                                      f"{_iso(max(iat, float(claims.get('nbf', iat))))}; "
                                      "check the clocks")
        if claims["iss"] != self.issuer:
            raise AuthenticationError(f"access token was issued by {_cut(claims['iss'])}, "
                                      f"not this fleet's control plane ({self.issuer})")
        aud = claims["aud"]
        auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not all(isinstance(a, str) for a in auds) or not auds:
            raise AuthenticationError("malformed access token: aud must be a string")
        if not set(auds) & set(self.audiences):
            raise AuthenticationError(f"access token is for audience {_cut(' '.join(auds))}, "
                                      f"not this node ({', '.join(self.audiences)})")
        try:
            level = (Level.parse(claims["sensitivity"])
                     if claims.get("sensitivity") is not None else None)
        except ValueError:
            raise AuthenticationError("malformed access token: unknown sensitivity") from None
        scopes = frozenset(claims["scope"].split())
        subject = claims["sub"]
        if scope is not None and scope not in scopes:
            raise ForbiddenError(f"access token of {_cut(subject)} has scopes "
                                 f"{' '.join(sorted(scopes)) or '(none)'}; this route needs "
                                 f"{scope}")
        matched = next(a for a in auds if a in self.audiences)
        return AccessClaims(subject=subject, scopes=scopes, audience=matched,
                            issuer=claims["iss"], issued_at=datetime.fromtimestamp(iat, UTC),
                            expires_at=datetime.fromtimestamp(exp, UTC),
                            token_id=claims.get("jti", ""), sensitivity=level)


def _cut(text: str, limit: int = 80) -> str:
    """Claim text in an error line: printable ASCII, bounded (signed by our key, but a
    subject can still be long)."""
    clean = "".join(c if " " <= c <= "~" else "?" for c in text)
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."
