"""Join tokens and ES256 access tokens: round trip, and every way a token must be refused
(expired, future, long-lived, wrong audience/issuer/key, alg=none, HS256 key confusion,
tampered, malformed, missing claims, missing scope)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from edgewise.errors import AuthenticationError, ConfigError, ForbiddenError, PKIError
from edgewise.levels import Level
from edgewise.security.pki import generate_key, load_private_key, public_pem
from edgewise.security.tokens import (
    JOIN_TOKEN_PREFIX,
    MAX_ACCESS_TTL,
    SCOPES,
    AccessClaims,
    AccessTokenIssuer,
    AccessTokenVerifier,
    check_join_token,
    fleet_audience,
    join_token_digest,
    key_id,
    new_join_token,
    node_audience,
    signing_key_pair,
)

ISS = "spiffe://acme/control"
T0 = datetime(2030, 5, 1, 12, 0, 0, tzinfo=UTC)
KEY = generate_key()
ISSUER = AccessTokenIssuer(KEY, issuer=ISS)
NODE_AUDS = [fleet_audience("acme"), node_audience("acme", "gateway")]
VERIFIER = AccessTokenVerifier(KEY.public_key(), issuer=ISS, audiences=NODE_AUDS)


def token(**kw: Any) -> str:
    args: dict[str, Any] = {"subject": "alice", "scopes": ["infer"],
                            "audience": fleet_audience("acme"), "now": T0}
    args.update(kw)
    return ISSUER.issue(**args)


def claims(**over: Any) -> dict[str, Any]:
    iat = int(T0.timestamp())
    out: dict[str, Any] = {"iss": ISS, "sub": "alice", "aud": "edgewise:acme", "iat": iat,
                           "nbf": iat, "exp": iat + 600, "jti": "j1", "scope": "infer"}
    out.update(over)
    return {k: v for k, v in out.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def verify(tok: str, **kw: Any) -> AccessClaims:
    kw.setdefault("now", T0 + timedelta(minutes=1))
    return VERIFIER.verify(tok, **kw)


# -- round trip ------------------------------------------------------------------------------

def test_round_trip() -> None:
    tok = token(scopes=["metrics", "infer", "infer"], sensitivity="pii",
                ttl=timedelta(minutes=10))
    header = jwt.get_unverified_header(tok)
    assert header["alg"] == "ES256" and header["kid"] == ISSUER.kid == key_id(KEY.public_key())
    assert re.fullmatch(r"[0-9a-f]{16}", ISSUER.kid)
    raw = jwt.decode(tok, options={"verify_signature": False})
    assert raw["scope"] == "infer metrics" and raw["exp"] - raw["iat"] == 600
    assert raw["nbf"] == raw["iat"] == int(T0.timestamp()) and len(raw["jti"]) >= 20
    got = verify(tok, scope="metrics")
    assert got == AccessClaims(subject="alice", scopes=frozenset({"infer", "metrics"}),
                               audience="edgewise:acme", issuer=ISS, issued_at=T0,
                               expires_at=T0 + timedelta(minutes=10), token_id=raw["jti"],
                               sensitivity=Level.PII)
    assert got.has("infer") and not got.has("admin")
    assert verify(token()).sensitivity is None
    assert token() != token()  # a fresh jti each time


def test_node_audience_and_other_nodes() -> None:
    mine = token(audience=node_audience("acme", "gateway"))
    assert verify(mine).audience == "edgewise:acme:gateway"
    with pytest.raises(AuthenticationError, match=re.escape(
            "access token is for audience edgewise:acme:other, not this node "
            "(edgewise:acme, edgewise:acme:gateway)")):
        verify(token(audience=node_audience("acme", "other")))
    with pytest.raises(AuthenticationError, match=r"audience edgewise:rival,"):
        verify(token(audience=fleet_audience("rival")))
    listed = jwt.encode(claims(aud=["x", "edgewise:acme:gateway"]), KEY, algorithm="ES256")
    assert verify(listed).audience == "edgewise:acme:gateway"
    assert fleet_audience("acme") == "edgewise:acme"
    with pytest.raises(ConfigError, match=r"node name"):
        node_audience("acme", "a:b")  # would read as another fleet's audience


def test_missing_scope_is_forbidden() -> None:
    with pytest.raises(ForbiddenError, match=r"^access token of alice has scopes infer; this "
                                             r"route needs admin$"):
        verify(token(), scope="admin")
    with pytest.raises(ConfigError, match=r"unknown scope 'root'"):
        verify(token(), scope="root")


# -- time ---------------------------------------------------------------------------------------

def test_expiry_with_leeway() -> None:
    tok = token(ttl=timedelta(minutes=5))
    exp = T0 + timedelta(minutes=5)
    assert verify(tok, now=exp + timedelta(seconds=4)).subject == "alice"
    with pytest.raises(AuthenticationError,
                       match=re.escape(f"access token expired at {exp.isoformat()}")):
        verify(tok, now=exp + timedelta(seconds=6))
    real = ISSUER.issue(subject="bob", scopes=["infer"], audience="edgewise:acme",
                        now=datetime.now(UTC) - timedelta(minutes=20))
    with pytest.raises(AuthenticationError, match=r"^access token expired at"):
        VERIFIER.verify(real)  # the real clock by default


def test_future_token_is_refused() -> None:
    tok = token(now=T0 + timedelta(minutes=2))
    assert verify(tok, now=T0 + timedelta(minutes=2) - timedelta(seconds=4))
    with pytest.raises(AuthenticationError, match=r"not valid before .*check the clocks"):
        verify(tok, now=T0)
    nbf = jwt.encode(claims(nbf=int(T0.timestamp()) + 120), KEY, algorithm="ES256")
    with pytest.raises(AuthenticationError, match=r"not valid before"):
        verify(nbf)


@pytest.mark.parametrize("ttl", [timedelta(minutes=15, seconds=1), timedelta(hours=24),
                                 timedelta(0), timedelta(seconds=-5)])
def test_issue_refuses_ttl_outside_15_minutes(ttl: timedelta) -> None:
    with pytest.raises(ConfigError, match=r"at most 15 minutes; got"):
        token(ttl=ttl)


def test_long_lived_token_is_refused_even_if_signed() -> None:
    assert verify(token(ttl=MAX_ACCESS_TTL)).expires_at == T0 + MAX_ACCESS_TTL
    iat = int(T0.timestamp())
    forged = jwt.encode(claims(exp=iat + 3600), KEY, algorithm="ES256")
    with pytest.raises(AuthenticationError, match=r"^access token lives 3600 s; .* at most 900 s"):
        verify(forged)
    edge = jwt.encode(claims(exp=iat + 905), KEY, algorithm="ES256")  # within leeway
    assert verify(edge).subject == "alice"


# -- signatures and algorithms ----------------------------------------------------------------

def test_token_from_another_key() -> None:
    other = AccessTokenIssuer(generate_key(), issuer=ISS)
    tok = other.issue(subject="alice", scopes=["admin"], audience="edgewise:acme", now=T0)
    assert jwt.get_unverified_header(tok)["kid"] != ISSUER.kid
    with pytest.raises(AuthenticationError, match=r"^access token signature does not verify "
                                                  r"against the control plane's key$"):
        verify(tok)


def test_tampered_payload() -> None:
    head, _, sig = token().split(".")
    body = b64(json.dumps(claims(scope="infer admin")).encode())
    with pytest.raises(AuthenticationError, match=r"signature does not verify"):
        verify(f"{head}.{body}.{sig}", scope="admin")


def test_alg_none_is_refused() -> None:
    head = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims(scope="admin")).encode())
    for tok in (f"{head}.{body}.", f"{head}.{body}.{token().split('.')[2]}"):
        with pytest.raises(AuthenticationError, match=r"not signed with ES256"):
            verify(tok)


def test_hs256_key_confusion_is_refused() -> None:
    """HMAC keyed with the public key's PEM, which every node has: classic confusion."""
    secret = public_pem(KEY.public_key())
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims(scope="admin")).encode())
    sig = b64(hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest())
    with pytest.raises(AuthenticationError, match=r"not signed with ES256"):
        verify(f"{head}.{body}.{sig}", scope="admin")
    es384 = jwt.encode(claims(), ec.generate_private_key(ec.SECP384R1()), algorithm="ES384")
    with pytest.raises(AuthenticationError, match=r"not signed with ES256"):
        verify(es384)


# -- claims -------------------------------------------------------------------------------------

@pytest.mark.parametrize("claim", ["exp", "iat", "aud", "iss", "sub", "scope"])
def test_required_claims(claim: str) -> None:
    tok = jwt.encode(claims(**{claim: None}), KEY, algorithm="ES256")
    with pytest.raises(AuthenticationError, match=f"^malformed access token: no {claim} claim$"):
        verify(tok)


@pytest.mark.parametrize("over", [{"exp": "soon"}, {"iat": True}, {"scope": ["infer"]},
                                  {"sub": 7}, {"aud": 5}, {"aud": []},
                                  {"sensitivity": "secret"}])
def test_claims_of_the_wrong_type(over: dict[str, Any]) -> None:
    tok = jwt.encode(claims(**over), KEY, algorithm="ES256")
    with pytest.raises(AuthenticationError, match=r"^malformed access token: "):
        verify(tok)


def test_wrong_issuer() -> None:
    tok = jwt.encode(claims(iss="spiffe://rival/control"), KEY, algorithm="ES256")
    with pytest.raises(AuthenticationError, match=re.escape(
            "issued by spiffe://rival/control, not this fleet's control plane "
            "(spiffe://acme/control)")):
        verify(tok)


@pytest.mark.parametrize("tok", ["", "abc", "a.b.c", "x" * 9000, "ewj_" + "a" * 43,
                                 "Bearer abc.def.ghi", None, 42])
def test_malformed_tokens(tok: Any) -> None:
    with pytest.raises(AuthenticationError, match=r"^malformed access token$"):
        verify(tok)


# -- issuing ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kw", "message"), [
    ({"scopes": ["infer", "root"]}, "unknown scope root; valid scopes: infer, admin, metrics"),
    ({"scopes": []}, "unknown scope .none given.; valid scopes"),
    ({"subject": ""}, "subject must be 1-128"), ({"subject": "a b"}, "subject must be"),
    ({"subject": "-x"}, "subject must be"), ({"subject": "a" * 129}, "subject must be"),
    ({"audience": ""}, "audience must be"),
    ({"sensitivity": "secret"}, "unknown sensitivity level 'secret'"),
])
def test_issue_validates(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        token(**kw)


def test_subject_shapes_allowed() -> None:
    for sub in ("alice@example.com", "spiffe://acme/node/gateway", "svc:batch_1+x=y", "a"):
        assert verify(token(subject=sub)).subject == sub
    assert SCOPES == ("infer", "admin", "metrics")


def test_key_pair_and_keys() -> None:
    private, public = signing_key_pair()
    key = load_private_key(private)
    assert isinstance(key.curve, ec.SECP256R1) and b"ENCRYPTED" not in private
    verifier = AccessTokenVerifier.from_pem(public, issuer=ISS, audiences=["edgewise:acme"])
    tok = AccessTokenIssuer(key, issuer=ISS).issue(subject="ops", scopes=["admin"],
                                                   audience="edgewise:acme", now=T0)
    assert verifier.verify(tok, scope="admin", now=T0).subject == "ops"
    with pytest.raises(PKIError, match=r"not a PEM public key"):
        AccessTokenVerifier.from_pem(b"junk", issuer=ISS, audiences=["edgewise:acme"])
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(PKIError, match=r"P-256"):
        AccessTokenIssuer(p384, issuer=ISS)
    with pytest.raises(PKIError, match=r"P-256"):
        AccessTokenVerifier.from_pem(public_pem(p384.public_key()), issuer=ISS,
                                     audiences=["edgewise:acme"])
    with pytest.raises(ConfigError, match=r"audiences"):
        AccessTokenVerifier(KEY.public_key(), issuer=ISS, audiences="edgewise:acme")


# -- join tokens --------------------------------------------------------------------------------

def test_join_token_format() -> None:
    tokens = {new_join_token() for _ in range(50)}
    assert len(tokens) == 50
    for tok in tokens:
        assert tok.startswith(JOIN_TOKEN_PREFIX) and len(tok) == 4 + 43
        assert len(base64.urlsafe_b64decode(tok[4:] + "=")) == 32
        assert check_join_token(tok) == tok
        assert check_join_token(f"  {tok}\n") == tok


def test_join_token_digest() -> None:
    tok = new_join_token()
    digest = join_token_digest(tok)
    assert digest == hashlib.sha256(tok.encode()).hexdigest() and len(digest) == 64
    assert join_token_digest(f" {tok} ") == digest
    assert join_token_digest(new_join_token()) != digest


@pytest.mark.parametrize("bad", ["", "ewj_", "ewj_" + "a" * 42, "ewj_" + "a" * 44,
                                 "EWJ_" + "a" * 43, "ewk_" + "a" * 43, "ewj_" + "a" * 42 + "!",
                                 "ewj_" + "a" * 42 + "=", "ewj_" + "a" * 21 + " " + "a" * 21,
                                 "secret-password-123", None])
def test_check_join_token_refuses_without_echo(bad: Any) -> None:
    with pytest.raises(AuthenticationError) as err:
        check_join_token(bad)
    assert str(err.value) == ("not an edgewise join token (expected ewj_ followed by 43 "
                              "characters)")
    with pytest.raises(AuthenticationError):
        join_token_digest(bad)
