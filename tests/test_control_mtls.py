"""The control plane's node routes under attack, over real TLS on loopback: heartbeat and
renewal without a client certificate, with one from another fleet's CA, expired, from the
fleet CA but not a node's, of a node that never joined, of a revoked node; renewal into
another identity; malformed heartbeat bodies (wrong types, unknown keys, huge strings,
numbers JSON cannot carry, 2 MB, 100 000 levels deep, not UTF-8); and revocation reaching
the other nodes with their next heartbeat.

Fixtures and the checks every refusal gets are in control_helpers.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from control_helpers import (
    FLEET,
    NODE_CERT_HOURS,
    audited,
    bearer,
    cert_files,
    control_plane,
    csr_text,
    fresh,
    https,
    joined,
    mark,
    post_join,
    refused,
    serving,
    token_used,
)
from edgewise.security.pki import CLOCK_SKEW, generate_key, identity_of, load_chain, make_csr
from fleet_harness import ControlServer, join_node


@pytest.fixture(scope="module")
def cs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlServer]:
    yield from control_plane(tmp_path_factory, "control")


@pytest.fixture(scope="module")
def impostor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlServer]:
    yield from control_plane(tmp_path_factory, "impostor")


# -- routes that need the node's certificate ---------------------------------------------

@pytest.mark.parametrize("route", ["/v1/heartbeat", "/v1/renew"])
def test_without_a_client_certificate_node_routes_are_401(route: str,
                                                          cs: ControlServer) -> None:
    body = {"version": "1"} if route == "/v1/heartbeat" else {"csr": csr_text("n")}
    with https(cs) as c:
        refused(c.post(route, json=body), 401,
                "this route needs the node's fleet certificate (mutual TLS)")
    serving(cs)


def test_an_unauthenticated_peer_is_audited(cs: ControlServer) -> None:
    since = mark(cs)
    with https(cs) as c:
        assert c.post("/v1/heartbeat", json={"version": "1"}).status_code == 401
    [entry] = audited(cs, since, "heartbeat")
    assert entry.outcome == "refused:unauthenticated"


@pytest.mark.parametrize("route", ["/v1/heartbeat", "/v1/renew"])
def test_a_certificate_from_another_fleets_ca_fails_the_handshake(
        route: str, cs: ControlServer, impostor: ControlServer, tmp_path: Path) -> None:
    """Same fleet name, same node name, same SPIFFE ID: only the CA differs."""
    real = joined(cs, tmp_path)
    name = real.identity().node
    fake = join_node(impostor, name, "device", tmp_path / "fake")
    assert fake.identity().spiffe_id == real.identity().spiffe_id
    body = {"version": "1"} if route == "/v1/heartbeat" else {"csr": csr_text(name)}
    with https(cs, fake) as c, pytest.raises(httpx.TransportError):
        c.post(route, json=body)
    rec = cs.cp.node(name)
    assert rec is not None and rec.last_seen is None and rec.serial == real.identity().serial
    serving(cs)


def test_an_expired_node_certificate_fails_the_handshake(cs: ControlServer,
                                                         tmp_path: Path) -> None:
    state = joined(cs, tmp_path)
    name = state.identity().node
    key = generate_key()
    old = cs.cp.ca.issue_node(make_csr(key, name), node=name, tier="device",
                              lifetime=timedelta(hours=1),
                              now=datetime.now(UTC) - timedelta(hours=3))
    files = cert_files(tmp_path / "expired", cs.cp.ca.chain_pem(old), key)
    with https(cs, cert=files) as c:
        for route, body in (("/v1/heartbeat", {"version": "1"}),
                            ("/v1/renew", {"csr": csr_text(name)})):
            with pytest.raises(httpx.TransportError):
                c.post(route, json=body)
    rec = cs.cp.node(name)
    assert rec is not None and rec.last_seen is None
    serving(cs)


def test_a_fleet_certificate_that_is_not_a_node_certificate_is_401(cs: ControlServer) -> None:
    """The control plane's own certificate chains to the root and has clientAuth, but
    names no node."""
    files = (cs.cp.files.server_cert, cs.cp.files.server_key)
    with https(cs, cert=files) as c:
        refused(c.post("/v1/heartbeat", json={"version": "1"}), 401,
                f"certificate is not an edgewise node certificate of fleet {FLEET}")
    serving(cs)


def test_a_ca_signed_certificate_of_a_node_that_never_joined_is_403(
        cs: ControlServer, tmp_path: Path) -> None:
    name, since = fresh("ghost"), mark(cs)
    key = generate_key()
    cert = cs.cp.ca.issue_node(make_csr(key, name), node=name, tier="device")
    with https(cs, cert=cert_files(tmp_path, cs.cp.ca.chain_pem(cert), key)) as c:
        refused(c.post("/v1/heartbeat", json={"version": "1"}), 403,
                f"node {name} is not enrolled in fleet {FLEET}")
        refused(c.post("/v1/renew", json={"csr": csr_text(name)}), 403, "is not enrolled")
    outcomes = [(r.route, r.outcome, r.node) for r in
                audited(cs, since, "heartbeat") + audited(cs, since, "renew")]
    assert outcomes == [("control/heartbeat", "refused:forbidden", name),
                        ("control/renew", "refused:forbidden", name)]
    serving(cs)


def test_renewal_gives_a_new_certificate_for_the_same_identity_only(
        cs: ControlServer, tmp_path: Path) -> None:
    state = joined(cs, tmp_path)
    before = state.identity()
    since = mark(cs)
    with https(cs, state) as c:
        refused(c.post("/v1/renew", json={"csr": csr_text("victim")}), 403,
                f"CSR asks for CN=victim but the join token is for node {before.node}")
        r = c.post("/v1/renew", json={"csr": csr_text(before.node)})
        assert r.status_code == 200, r.text
        new = identity_of(load_chain(r.json()["certificate"].encode())[0])
        assert (new.spiffe_id, new.tier) == (before.spiffe_id, before.tier)
        assert new.serial != before.serial
        assert new.lifetime == timedelta(hours=NODE_CERT_HOURS) + CLOCK_SKEW
        # the old certificate works until it expires (the reply could have been lost)
        assert c.post("/v1/heartbeat", json={"version": "1"}).status_code == 200
    assert cs.cp.node(before.node).serial == new.serial  # type: ignore[union-attr]
    assert [e.outcome for e in audited(cs, since, "renew")] == ["refused:forbidden", "answered"]


def test_a_revoked_node_can_neither_heartbeat_nor_renew(cs: ControlServer,
                                                        tmp_path: Path) -> None:
    state = joined(cs, tmp_path)
    ident = state.identity()
    with https(cs, state) as c:
        assert c.post("/v1/heartbeat", json={"version": "1"}).status_code == 200
        assert cs.cp.revoke(ident.node, by="test") == [ident.serial]
        since = mark(cs)
        refused(c.post("/v1/heartbeat", json={"version": "1"}), 403,
                f"node {ident.node} is revoked", ident.serial[:16])
        refused(c.post("/v1/renew", json={"csr": csr_text(ident.node)}), 403,
                f"node {ident.node} is revoked")
    assert [(e.outcome, e.node) for e in audited(cs, since, "heartbeat")
            + audited(cs, since, "renew")] == [("refused:forbidden", ident.node)] * 2
    rec = cs.cp.node(ident.node)
    assert rec is not None and rec.revoked_at is not None and rec.serial == ident.serial
    serving(cs)


def test_a_revoked_name_cannot_join_again(cs: ControlServer, tmp_path: Path) -> None:
    state = joined(cs, tmp_path)
    name = state.identity().node
    cs.cp.revoke(name, by="test")
    token = cs.token(name, "device")
    with https(cs) as c:
        refused(post_join(c, token, name), 403, f"node {name} was revoked at",
                "create the join token for a new node name", secret=token)
    assert cs.cp.node(name).serial == state.identity().serial  # type: ignore[union-attr]
    serving(cs)


def test_a_revoked_name_joining_again_is_audited_and_keeps_its_token(
        cs: ControlServer, tmp_path: Path) -> None:
    name = joined(cs, tmp_path).identity().node
    cs.cp.revoke(name, by="test")
    token, since = cs.token(name, "device"), mark(cs)
    with https(cs) as c:
        assert post_join(c, token, name).status_code == 403
    [entry] = audited(cs, since, "join")
    assert entry.outcome == "refused:forbidden"
    assert not token_used(cs, token)


# -- hostile heartbeat bodies ---------------------------------------------------------------

def _nested(depth: int) -> bytes:
    return b'{"version": "1", "tiers": ' + b"[" * depth + b"]" * depth + b"}"


#: (raw body or JSON value, content type, status, message fragment)
HOSTILE_HEARTBEATS: dict[str, tuple[Any, str, int, str]] = {
    "wrong type": ({"version": 5}, "json", 400, "invalid value for 'version'"),
    "no version": ({}, "json", 400, "missing required parameter 'version'"),
    "unknown key": ({"version": "1", "admin": True}, "json", 400,
                    "invalid value for 'admin': Extra inputs are not permitted"),
    "huge string": ({"version": "x" * 100_000}, "json", 400,
                    "invalid value for 'version': String should have at most 64"),
    "huge model name": ({"version": "1", "model": "m" * 5000}, "json", 400,
                        "invalid value for 'model'"),
    "65 tiers": ({"version": "1", "tiers": {f"t{i}": {} for i in range(65)}}, "json", 400,
                 "invalid value for 'tiers'"),
    "negative queue": ({"version": "1", "queue_depth": -1}, "json", 400,
                       "invalid value for 'queue_depth'"),
    "error rate 2": ({"version": "1", "error_rate": 2}, "json", 400,
                     "invalid value for 'error_rate'"),
    "digest not hex": ({"version": "1", "model_digest": "zz" * 32}, "json", 400,
                       "invalid value for 'model_digest'"),
    "tier not an object": ({"version": "1", "tiers": {"a": "open"}}, "json", 400,
                           "invalid value for 'tiers.a'"),
    "a list": ([{"version": "1"}], "json", 400, "request body must be a JSON object"),
    "NaN": (b'{"version": "1", "tokens_per_s": NaN}', "json", 400,
            "invalid value for 'tokens_per_s': Input should be a finite number"),
    "Infinity": (b'{"version": "1", "energy_j": Infinity}', "json", 400,
                 "invalid value for 'energy_j': Input should be a finite number"),
    "truncated": (b'{"version": ', "json", 400, "request body is not valid JSON"),
    "not UTF-8": (b'{"version": "\xff\xfe"}', "json", 400, "request body is not valid UTF-8"),
    "nested 100k deep": (_nested(100_000), "json", 400, "nested too deeply"),
    "not JSON": (b"version=1", "text/plain", 400, "request body must be JSON"),
    "2 MB": (b'{"version": "' + b"x" * (2 << 20) + b'"}', "json", 413,
             "request body is larger than"),
}


@pytest.mark.parametrize("case", HOSTILE_HEARTBEATS)
def test_a_malformed_heartbeat_is_refused_and_changes_nothing(
        case: str, cs: ControlServer, tmp_path: Path) -> None:
    body, ctype, status, fragment = HOSTILE_HEARTBEATS[case]
    state = joined(cs, tmp_path)
    name = state.identity().node
    with https(cs, state) as c:
        good = {"version": "1.0", "queue_depth": 2}
        assert c.post("/v1/heartbeat", json=good).status_code == 200
        before = cs.cp.node(name)
        assert before is not None
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"content-type": "application/json" if ctype == "json" else ctype}
        refused(c.post("/v1/heartbeat", content=raw, headers=headers), status, fragment)
        after = cs.cp.node(name)
        assert after is not None
        assert (after.heartbeat, after.last_seen) == (before.heartbeat, before.last_seen)
        assert after.heartbeat["queue_depth"] == 2
        # the same connection, and the control plane, carry on
        assert c.post("/v1/heartbeat", json=good).status_code == 200
    serving(cs)


# -- revocation reaches the other nodes ---------------------------------------------------

def test_a_revocation_reaches_another_node_with_its_next_heartbeat(
        cs: ControlServer, tmp_path: Path) -> None:
    victim, witness = joined(cs, tmp_path), joined(cs, tmp_path, tier="gateway")
    vid = victim.identity()
    admin = bearer(cs.access_token("admin", subject="ops-alice"))
    with https(cs, witness) as w, https(cs, victim) as v, https(cs) as c:
        before = w.post("/v1/heartbeat", json={"version": "1"}).json()["deny"]
        assert vid.serial not in before["serials"]
        since = mark(cs)
        r = c.post(f"/v1/admin/nodes/{vid.node}/revoke", headers=admin)
        assert r.status_code == 200, r.text
        assert r.json() == {"node": vid.node, "revoked_serials": [vid.serial]}
        deny = w.post("/v1/heartbeat", json={"version": "1"}).json()["deny"]
        assert vid.serial in deny["serials"] and vid.node in deny["nodes"]
        assert deny["version"] > before["version"]
        refused(v.post("/v1/renew", json={"csr": csr_text(vid.node)}), 403, "revoked")
        # revoking again changes nothing and is not an error
        again = c.post(f"/v1/admin/nodes/{vid.node}/revoke", headers=admin)
        assert again.json()["revoked_serials"] == [vid.serial]
        assert w.post("/v1/heartbeat", json={"version": "1"}).json()["deny"] == deny
    [entry, _] = audited(cs, since, "revoke")
    assert (entry.outcome, entry.node, entry.requester) == ("answered", vid.node, "ops-alice")
    assert "1 certificate(s) denied" in entry.reason


@pytest.mark.parametrize(("path", "status", "fragment"), [
    ("ghost", 400, "no node named ghost; `edgewise control nodes` lists them"),
    ("Bad%20Name", 400, "no node named Bad Name"),
    ("a%2Fb", 404, "no route POST"),
])
def test_revoking_a_node_that_does_not_exist_is_400(
        path: str, status: int, fragment: str, cs: ControlServer) -> None:
    admin = bearer(cs.access_token("admin"))
    serials = cs.cp.store.deny_list().serials
    with https(cs) as c:
        refused(c.post(f"/v1/admin/nodes/{path}/revoke", headers=admin), status, fragment)
    assert cs.cp.store.deny_list().serials == serials
    serving(cs)
