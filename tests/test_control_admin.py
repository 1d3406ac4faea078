"""The control plane's admin side under attack, over real TLS on loopback: access tokens
on the admin routes (expired, another fleet's key, another audience or issuer, alg=none,
HS256 with the public key, too long-lived, the wrong scope), bad values on admin routes,
central config (validated with the node config's key paths, versioned per target, applied
by a real node at its next heartbeat, rejected by it with the reason shown), the admin CLI
both ways (``--dir`` on the host, ``--url`` with a token), and two replicas sharing one
real PostgreSQL.

Enrolment and CSRs are in test_control.py, node routes and revocation in
test_control_mtls.py; fixtures and the checks every refusal gets in control_helpers.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import yaml
from typer.testing import CliRunner, Result

from conftest import closed_port
from control_helpers import (
    FLEET,
    audit_text,
    audited,
    bearer,
    control_plane,
    fresh,
    https,
    mark,
    refused,
    serving,
    wait_for,
)
from edgewise.cli import app as cli
from edgewise.config import parse_config
from edgewise.errors import ConfigError
from edgewise.fleet.agent import join
from edgewise.fleet.state import FleetState
from edgewise.security.pki import (
    csr_pem,
    generate_key,
    identity_of,
    load_chain,
    load_private_key,
    make_csr,
)
from edgewise.security.tokens import AccessTokenIssuer, fleet_audience
from fleet_harness import ControlServer, NodeServer, control_dir, join_node
from postgres import fresh_postgres_url, postgres_server  # noqa: F401


@pytest.fixture(scope="module")
def cs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlServer]:
    yield from control_plane(tmp_path_factory, "control")


@pytest.fixture(scope="module")
def impostor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlServer]:
    yield from control_plane(tmp_path_factory, "impostor")


# -- access tokens on the admin routes ------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": f"spiffe://{FLEET}/control", "sub": "mallory", "aud": f"edgewise:{FLEET}",
              "iat": now, "nbf": now, "exp": now + 300, "jti": "j", "scope": "admin"}
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())


def _alg_none(cs: ControlServer, imp: ControlServer) -> str:
    return _unsigned({"alg": "none", "typ": "JWT"}, _claims()) + "."


def _hs256_with_public_key(cs: ControlServer, imp: ControlServer) -> str:
    """The key-confusion forgery: HMAC keyed with the (public) verification key's PEM."""
    head = _unsigned({"alg": "HS256", "typ": "JWT"}, _claims())
    sig = hmac.new(cs.cp.files.signing_pub.read_bytes(), head.encode(), hashlib.sha256)
    return head + "." + _b64(sig.digest())


def _our_key(cs: ControlServer) -> Any:
    return load_private_key(cs.cp.files.signing_key.read_bytes())


#: name: (make(cs, impostor) -> token, status, message fragment, audit outcome)
BAD_TOKENS: dict[str, tuple[Callable[[ControlServer, ControlServer], str], int, str, str]] = {
    "expired": (lambda cs, imp: cs.cp.issuer.issue(
        subject="old", scopes=["admin"], audience=fleet_audience(FLEET),
        ttl=timedelta(minutes=5), now=datetime.now(UTC) - timedelta(minutes=20)),
        401, "access token expired at", "refused:unauthenticated"),
    "not valid yet": (lambda cs, imp: cs.cp.issuer.issue(
        subject="early", scopes=["admin"], audience=fleet_audience(FLEET),
        now=datetime.now(UTC) + timedelta(hours=1)),
        401, "access token is not valid before", "refused:unauthenticated"),
    "another fleet's key": (lambda cs, imp: imp.access_token("admin"),
                            401, "access token signature does not verify against the "
                                 "control plane's key", "refused:unauthenticated"),
    "another node's audience": (lambda cs, imp: cs.access_token("admin", node="n-1"),
                                401, f"access token is for audience edgewise:{FLEET}:n-1, "
                                     "not this node", "refused:unauthenticated"),
    "another fleet's audience": (lambda cs, imp: cs.cp.issuer.issue(
        subject="x", scopes=["admin"], audience="edgewise:beta"),
        401, "access token is for audience edgewise:beta", "refused:unauthenticated"),
    "another issuer, our key": (lambda cs, imp: AccessTokenIssuer(
        _our_key(cs), issuer="spiffe://beta/control").issue(
        subject="x", scopes=["admin"], audience=fleet_audience(FLEET)),
        401, "access token was issued by spiffe://beta/control", "refused:unauthenticated"),
    "alg none": (_alg_none, 401, "not signed with ES256", "refused:unauthenticated"),
    "HS256 with the public key": (_hs256_with_public_key, 401, "not signed with ES256",
                                  "refused:unauthenticated"),
    "lives a day": (lambda cs, imp: jwt.encode(
        _claims(exp=int(time.time()) + 86400), _our_key(cs), algorithm="ES256"),
        401, "access token lives 86400 s", "refused:unauthenticated"),
    "no scope claim": (lambda cs, imp: jwt.encode(_claims(scope=None), _our_key(cs),
                                                  algorithm="ES256"),
                       401, "malformed access token: no scope claim",
                       "refused:unauthenticated"),
    "garbage": (lambda cs, imp: "not-a-jwt-at-all", 401, "malformed access token",
                "refused:unauthenticated"),
    "9000 characters": (lambda cs, imp: "e" * 9000, 401, "malformed access token",
                        "refused:unauthenticated"),
    "infer scope": (lambda cs, imp: cs.access_token("infer", subject="app-1"),
                    403, "access token of app-1 has scopes infer; this route needs admin",
                    "refused:forbidden"),
    "metrics scope": (lambda cs, imp: cs.access_token("metrics", "infer", subject="prom"),
                      403, "has scopes infer metrics; this route needs admin",
                      "refused:forbidden"),
}


@pytest.mark.parametrize("case", BAD_TOKENS)
def test_a_bad_access_token_is_refused_and_audited_as_a_failed_login(
        case: str, cs: ControlServer, impostor: ControlServer) -> None:
    make, status, fragment, outcome = BAD_TOKENS[case]
    token, since = make(cs, impostor), mark(cs)
    with https(cs) as c:
        refused(c.get("/v1/admin/nodes", headers=bearer(token)), status, fragment,
                secret=token)
    [entry] = audited(cs, since, "login")
    assert (entry.outcome, entry.requester) == (outcome, "127.0.0.1")
    assert fragment in entry.reason
    assert token not in audit_text(cs)
    serving(cs)


ADMIN_ROUTES = [
    ("GET", "/v1/admin/nodes", None),
    ("POST", "/v1/admin/tokens", {"node": "x", "tier": "device"}),
    ("POST", "/v1/admin/nodes/x/revoke", None),
    ("POST", "/v1/admin/config", {"target_kind": "node", "target": "x", "body": {}}),
    ("GET", "/v1/admin/config", None),
    ("POST", "/v1/admin/access-tokens", {"subject": "x", "scopes": ["admin"]}),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES,
                         ids=[f"{m} {p}" for m, p, _ in ADMIN_ROUTES])
def test_every_admin_route_needs_the_admin_scope(method: str, path: str, body: Any,
                                                 cs: ControlServer) -> None:
    infer = cs.access_token("infer", subject="app-1")
    since = mark(cs)
    with https(cs) as c:
        refused(c.request(method, path, json=body), 401,
                "this route needs an access token with the admin scope")
        refused(c.request(method, path, json=body, headers={"Authorization": "Basic eDp5"}),
                401, "needs an access token with the admin scope")
        refused(c.request(method, path, json=body, headers=bearer(infer)), 403,
                "this route needs admin", secret=infer)
    assert [e.outcome for e in audited(cs, since, "login")] == [
        "refused:unauthenticated", "refused:unauthenticated", "refused:forbidden"]
    assert cs.cp.node("x") is None and not cs.cp.store.configs(target="x")
    assert not [t for t in cs.cp.store.join_tokens() if t.node == "x"]


def test_an_admin_token_opens_the_admin_routes(cs: ControlServer) -> None:
    admin = cs.access_token("admin", subject="ops-alice")
    with https(cs) as c:
        r = c.post("/v1/admin/tokens", headers=bearer(admin),
                   json={"node": fresh(), "tier": "device", "ttl_s": 60})
        assert r.status_code == 200, r.text
        assert re.fullmatch(r"ewj_[A-Za-z0-9_-]{43}", r.json()["token"])
        r = c.post("/v1/admin/access-tokens", headers=bearer(admin),
                   json={"subject": "app-2", "scopes": ["infer"], "ttl_s": 60})
        assert r.status_code == 200, r.text
        claims = cs.cp.verifier.verify(r.json()["token"])
        assert (claims.subject, sorted(claims.scopes)) == ("app-2", ["infer"])
        assert c.get("/v1/admin/nodes", headers=bearer(admin)).status_code == 200


@pytest.mark.parametrize(("path", "body", "fragment"), [
    ("/v1/admin/tokens", {"node": "Bad Name", "tier": "device"},
     "node name 'Bad Name' is not allowed"),
    ("/v1/admin/tokens", {"node": "ok", "tier": "Tier!"}, "tier name 'Tier!' is not allowed"),
    ("/v1/admin/tokens", {"node": "control", "tier": "device"},
     "node name 'control' is the control plane's own"),
    ("/v1/admin/access-tokens", {"subject": "bad subject!", "scopes": ["infer"]},
     "access token subject must be"),
    ("/v1/admin/access-tokens", {"subject": "ok", "scopes": ["infer"], "node": "No!"},
     "node name 'No!' is not allowed"),
    ("/v1/admin/access-tokens", {"subject": "ok", "scopes": ["root"]},
     "invalid value for 'scopes[0]': Input should be 'infer', 'admin' or 'metrics'"),
    ("/v1/admin/config", {"target_kind": "node", "target": "Bad Name", "body": {}},
     "node name 'Bad Name' is not allowed"),
    ("/v1/admin/tokens", {"node": "ok", "tier": "device", "hosts": [f"victim.node.{FLEET}"]},
     f"host victim.node.{FLEET} is a fleet identity name"),
    ("/v1/admin/tokens", {"node": "ok", "tier": "device", "hosts": [f"control.{FLEET}"]},
     f"host control.{FLEET} is a fleet identity name"),
    ("/v1/admin/tokens", {"node": "ok", "tier": "device", "hosts": ["evil_host!"]},
     "host 'evil_host!' is not a DNS name or an IP address"),
    ("/v1/admin/tokens", {"node": "ok", "tier": "device", "hosts": ["h"] * 33},
     "invalid value for 'hosts'"),
])
def test_a_bad_value_on_an_admin_route_is_400_not_500(path: str, body: dict[str, Any],
                                                      fragment: str, cs: ControlServer) -> None:
    admin = cs.access_token("admin")
    with https(cs) as c:
        refused(c.post(path, json=body, headers=bearer(admin)), 400, fragment, secret=admin)
    serving(cs)


# -- central config ----------------------------------------------------------------------

def _tiers(**device: Any) -> list[dict[str, Any]]:
    return [{"name": "device", "endpoints": [{"engine": "fake", **device}]}]


@pytest.mark.parametrize(("body", "key_path"), [
    ({"tiers": [{"name": "device", "endpoints": [{"engine": "fake"}], "clearance": "secret"}]},
     "tiers.0.clearance"),
    ({"tiers": _tiers(), "routing": {"default_sensitivity": "top-secret"}},
     "routing.default_sensitivity"),
    ({"tiers": [{"name": "device", "endpoints": [{"engine": "fake", "url": "http://x"}]}]},
     "tiers.0.endpoints.0"),
    ({"privacy": {"min_score": 7}}, "privacy.min_score"),
])
def test_a_config_that_does_not_validate_gets_the_node_configs_key_path_message(
        body: dict[str, Any], key_path: str, cs: ControlServer) -> None:
    target, since = fresh(), mark(cs)
    with pytest.raises(ConfigError) as as_node:
        parse_config(body, source="node.yaml")
    with https(cs) as c:
        msg = refused(c.post("/v1/admin/config", headers=bearer(cs.access_token("admin")),
                             json={"target_kind": "node", "target": target, "body": body}),
                      400, key_path, one_line=False)
    assert msg.splitlines()[0] == f"node {target}: invalid configuration"
    assert msg.splitlines()[1:] == str(as_node.value).splitlines()[1:]
    assert cs.cp.store.configs(target=target) == []
    [entry] = audited(cs, since, "config_push")
    assert entry.outcome == "refused:invalid_config"
    serving(cs)


@pytest.mark.parametrize(("body", "status", "fragment"), [
    ({"engine": {"kind": "llamacpp"}}, 400,
     "engine: not held centrally; a central config may set only tiers, routing, privacy"),
    ({"tiers": _tiers(), "fleet": {"state_dir": "/"}, "audit": {}}, 400,
     "audit, fleet: not held centrally"),
    ([{"tiers": []}], 400, "Input should be a valid dictionary"),
    ("tiers: []", 400, "Input should be a valid dictionary"),
])
def test_a_config_body_that_is_not_central_config_is_400(body: Any, status: int, fragment: str,
                                                         cs: ControlServer) -> None:
    target = fresh()
    with https(cs) as c:
        refused(c.post("/v1/admin/config", headers=bearer(cs.access_token("admin")),
                       json={"target_kind": "node", "target": target, "body": body}),
                status, fragment)
        refused(c.post("/v1/admin/config", headers=bearer(cs.access_token("admin")),
                       json={"target_kind": "cluster", "target": target, "body": {}}),
                400, "invalid value for 'target_kind'")
    assert cs.cp.store.configs(target=target) == []
    serving(cs)


def test_a_config_body_that_is_not_a_mapping_is_named_in_the_message(cs: ControlServer) -> None:
    with https(cs) as c:
        r = c.post("/v1/admin/config", headers=bearer(cs.access_token("admin")),
                   json={"target_kind": "node", "target": fresh(), "body": ["tiers"]})
    refused(r, 400, "invalid value for 'body': Input should be a valid dictionary")


def test_a_config_with_a_number_json_cannot_carry_is_400(cs: ControlServer) -> None:
    raw = json.dumps({"target_kind": "node", "target": fresh(), "body": {"tiers": [
        {"name": "device", "endpoints": [{"engine": "fake"}], "cost_per_1k_tokens": 1.5}]}})
    with https(cs) as c:
        r = c.post("/v1/admin/config", content=raw.replace("1.5", "Infinity"),
                   headers={**bearer(cs.access_token("admin")),
                            "content-type": "application/json"})
    refused(r, 400, "cost_per_1k_tokens")


def test_config_versions_count_per_target(cs: ControlServer) -> None:
    node, tier, since = fresh(), fresh("tier"), mark(cs)
    admin = bearer(cs.access_token("admin", subject="ops-bob"))
    with https(cs) as c:
        def push(kind: str, target: str) -> dict[str, Any]:
            r = c.post("/v1/admin/config", headers=admin,
                       json={"target_kind": kind, "target": target, "body": {"tiers": _tiers()}})
            assert r.status_code == 200, r.text
            return dict(r.json())
        a, b, t = push("node", node), push("node", node), push("tier", tier)
        listed = c.get("/v1/admin/config", headers=admin).json()["configs"]
    assert (a["version"], b["version"], t["version"]) == (1, 2, 1)
    assert a["id"] < b["id"] < t["id"]
    assert (a["target"], t["target"]) == (f"node:{node}", f"tier:{tier}")
    mine = [x for x in listed if x["target"] in (f"node:{node}", f"tier:{tier}")]
    assert [(x["version"], x["created_by"]) for x in mine] == [
        (1, "ops-bob"), (2, "ops-bob"), (1, "ops-bob")]
    entries = audited(cs, since, "config_push")
    assert [e.outcome for e in entries] == ["answered"] * 3
    assert "config v2" in entries[1].reason


def test_a_node_applies_config_at_its_next_heartbeat_and_rejects_a_model_change(
        cs: ControlServer, tmp_path: Path) -> None:
    name = fresh("edge")
    state = join_node(cs, name, "device", tmp_path / "node" / "fleet")
    other = join_node(cs, fresh(), "device", tmp_path / "other")
    admin = bearer(cs.access_token("admin"))
    with closed_port() as port, NodeServer(state.dir) as ns, https(cs) as c:
        agent = ns.agent

        def poke() -> None:  # the agent lives on the server's event loop
            assert agent._task is not None
            agent._task.get_loop().call_soon_threadsafe(agent.poke)

        def node_row() -> dict[str, Any]:
            rows = c.get("/v1/admin/nodes", headers=admin).json()["nodes"]
            return next(dict(r) for r in rows if r["name"] == name)

        def tier_names() -> list[str]:
            return [t.name for t in ns.app.state.router.fleet.tiers]

        assert tier_names() == ["device"]
        cloud = {"name": "cloud", "clearance": "internal",
                 "endpoints": [{"url": f"http://127.0.0.1:{port}/v1"}]}
        good = {"tiers": [*_tiers(), cloud]}
        v1 = c.post("/v1/admin/config", headers=admin,
                    json={"target_kind": "node", "target": name, "body": good}).json()
        wait_for("the config to apply", lambda: tier_names() == ["device", "cloud"],
                 each=poke)
        assert agent.status.applied_config == v1["id"]
        assert getattr(state.last_config(), "id", None) == v1["id"]
        wait_for("the control plane to hear of it",
                 lambda: node_row()["applied_config"] == v1["id"], each=poke)

        bad = {"tiers": _tiers(model="some-other-model")}
        v2 = c.post("/v1/admin/config", headers=admin,
                    json={"target_kind": "node", "target": name, "body": bad}).json()
        assert v2["version"] == 2
        row = wait_for("the rejection to be reported",
                       lambda: (lambda r: r if r["config_error"] else None)(node_row()),
                       each=poke)
        assert row["config_error"].startswith(f"config id {v2['id']} rejected: ")
        assert "may not change the served model" in row["config_error"]
        assert row["applied_config"] == v1["id"]
        assert tier_names() == ["device", "cloud"]
        assert getattr(state.last_config(), "id", None) == v1["id"]
        # it keeps serving on its last good config
        r = httpx.post(f"{ns.url}/v1/chat/completions", timeout=15, json={
            "model": "auto", "messages": [{"role": "user", "content": "hello"}]})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"]

        # and a revocation reaches its deny list (and its disk) at the next heartbeat
        victim = other.identity()
        cs.cp.revoke(victim.node, by="test")
        wait_for("the deny list", lambda: victim.serial in agent.deny.serials, each=poke)
        assert victim.node in json.loads(state.deny_file.read_text())["nodes"]


# -- the admin CLI, on the host and remotely ----------------------------------------------

def run_cli(*argv: str) -> Result:
    return CliRunner().invoke(cli, list(argv), env={"COLUMNS": "400"})


def remote(cs: ControlServer, token: str) -> list[str]:
    return ["--url", cs.url, "--token", token, "--ca-sha256", cs.fingerprint]


def test_token_create_prints_the_token_alone_on_the_last_line(cs: ControlServer) -> None:
    name = fresh()
    out = run_cli("control", "token", "create", "--dir", str(cs.dir), "--node", name,
                  "--tier", "device", "--ttl", "90s")
    assert out.exit_code == 0, out.output
    token = out.stdout.splitlines()[-1]
    assert re.fullmatch(r"ewj_[A-Za-z0-9_-]{43}", token)
    assert f"join token for node {name}" in out.stderr
    with https(cs) as c:
        r = c.post("/v1/join", json={"token": token, "node": name, "csr": csr_pem(
            make_csr(generate_key(), name)).decode()})
    assert r.status_code == 200, r.text

    out = run_cli("control", "token", "create", "--dir", str(cs.dir), "--node", name,
                  "--tier", "cloud", "--host", "Edge.Example.com", "--host", "10.0.0.7",
                  "--json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert sorted(data) == ["expires_at", "hosts", "node", "tier", "token"]
    assert (data["node"], data["tier"]) == (name, "cloud")
    assert data["hosts"] == ["Edge.Example.com", "10.0.0.7"]
    other = fresh()  # the same hosts, granted to another name, end up in its certificate
    out = run_cli("control", "token", "create", "--dir", str(cs.dir), "--node", other,
                  "--tier", "cloud", "--host", "Edge.Example.com", "--host", "10.0.0.7")
    with https(cs) as c:
        r = c.post("/v1/join", json={"token": out.stdout.splitlines()[-1], "node": other,
                                     "csr": csr_pem(make_csr(generate_key(), other)).decode()})
    assert identity_of(load_chain(r.json()["certificate"].encode())[0]).hosts == (
        "edge.example.com", "10.0.0.7")
    expires = datetime.fromisoformat(data["expires_at"])
    assert timedelta(minutes=14) < expires - datetime.now(UTC) <= timedelta(minutes=15)


def test_token_create_remotely_prints_the_same_shape(cs: ControlServer) -> None:
    admin = cs.access_token("admin", subject="ops-carol")
    since = mark(cs)
    out = run_cli("control", "token", "create", *remote(cs, admin), "--node", fresh(),
                  "--tier", "device")
    assert out.exit_code == 0, out.output
    assert re.fullmatch(r"ewj_[A-Za-z0-9_-]{43}", out.stdout.splitlines()[-1])
    [entry] = audited(cs, since, "token_create")
    assert entry.requester == "ops-carol"
    assert admin not in out.output


def test_nodes_lists_the_same_fleet_both_ways(cs: ControlServer, tmp_path: Path) -> None:
    name = fresh()
    state = join_node(cs, name, "gateway", tmp_path / name)
    with https(cs, state) as c:
        assert c.post("/v1/heartbeat", json={"version": "9.9", "model": "m-1"}).status_code == 200
    local = run_cli("control", "nodes", "--dir", str(cs.dir), "--json")
    far = run_cli("control", "nodes", *remote(cs, cs.access_token("admin")), "--json")
    assert local.exit_code == 0 and far.exit_code == 0, local.output + far.output
    rows_local, rows_far = json.loads(local.stdout), json.loads(far.stdout)
    assert [r["name"] for r in rows_local] == [r["name"] for r in rows_far]
    [row] = [r for r in rows_far if r["name"] == name]
    assert (row["tier"], row["status"], row["spiffe_id"]) == (
        "gateway", "online", f"spiffe://{FLEET}/node/{name}")
    assert row["heartbeat"]["model"] == "m-1"
    table = run_cli("control", "nodes", "--dir", str(cs.dir))
    assert table.exit_code == 0 and name in table.stdout and "m-1" in table.stdout


def test_revoke_remotely(cs: ControlServer, tmp_path: Path) -> None:
    name = fresh()
    state = join_node(cs, name, "device", tmp_path / name)
    admin = cs.access_token("admin", subject="ops-dan")
    since = mark(cs)
    out = run_cli("control", "revoke", name, *remote(cs, admin))
    assert out.exit_code == 0, out.output
    assert f"node {name} revoked (1 certificate(s) denied)" in out.stderr
    assert cs.cp.store.is_denied(state.identity().serial)
    [entry] = audited(cs, since, "revoke")
    assert (entry.requester, entry.node) == ("ops-dan", name)
    out = run_cli("control", "revoke", "ghost", *remote(cs, admin))
    assert out.exit_code == 2
    assert out.stderr.strip() == "error: no node named ghost; `edgewise control nodes` lists them"


@pytest.mark.parametrize("case", ["infer token", "no token", "wrong pin", "both ways",
                                  "expired token"])
def test_a_remote_admin_command_that_may_not_run_fails_in_one_line(
        case: str, cs: ControlServer, impostor: ControlServer) -> None:
    token = cs.access_token("infer", subject="app-1")
    argv = ["control", "nodes", *remote(cs, token)]
    expected = "access token of app-1 has scopes infer; this route needs admin"
    if case == "no token":
        argv = ["control", "nodes", "--url", cs.url, "--ca-sha256", cs.fingerprint]
        expected = "--url needs an admin access token"
    elif case == "wrong pin":
        token = cs.access_token("admin")
        argv = ["control", "nodes", *remote(cs, token)[:-1], impostor.fingerprint]
        expected = "refusing to send the admin token"
    elif case == "both ways":
        argv = ["control", "nodes", "--dir", str(cs.dir), *remote(cs, token)]
        expected = "give exactly one of --dir DIR"
    elif case == "expired token":
        token = cs.cp.issuer.issue(subject="old", scopes=["admin"],
                                   audience=fleet_audience(FLEET),
                                   now=datetime.now(UTC) - timedelta(hours=1))
        argv = ["control", "revoke", "x", *remote(cs, token)]
        expected = "access token expired at"
    since = mark(cs)
    out = run_cli(*argv)
    assert out.exit_code == 2, out.output
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("error: ") and expected in line
    assert out.stdout == ""
    assert token not in out.output
    logins = audited(cs, since, "login")
    if case in ("infer token", "expired token"):
        assert [e.outcome.split(":")[0] for e in logins] == ["refused"]
    else:  # the token never reached the control plane
        assert logins == []


def test_config_push_and_access_token_from_the_cli(cs: ControlServer, tmp_path: Path) -> None:
    name = fresh()
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"tiers": [{"name": "device", "clearance": "secret",
                                              "endpoints": [{"engine": "fake"}]}]}))
    out = run_cli("control", "config", "push", str(bad), "--node", name, "--dir", str(cs.dir))
    assert out.exit_code == 2
    assert "tiers.0.clearance" in out.stderr and cs.cp.store.configs(target=name) == []
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"tiers": _tiers()}))
    out = run_cli("control", "config", "push", str(good), "--node", name, "--dir", str(cs.dir))
    assert out.exit_code == 0, out.output
    assert "config v1 (id " in out.stderr and f"stored for node:{name}" in out.stderr
    admin = run_cli("control", "access-token", "--dir", str(cs.dir), "--subject", "ci",
                    "--scope", "admin", "--ttl", "2m").stdout.splitlines()[-1]
    out = run_cli("control", "config", "push", str(good), "--node", name,
                  *remote(cs, admin))
    assert out.exit_code == 0, out.output
    assert "config v2" in out.stderr
    assert [c.version for c in cs.cp.store.configs(target=name)] == [1, 2]
    out = run_cli("control", "config", "list", *remote(cs, admin), "--json")
    assert [r["version"] for r in json.loads(out.stdout) if r["target"] == f"node:{name}"] \
        == [1, 2]


def test_join_from_the_cli(cs: ControlServer, impostor: ControlServer, tmp_path: Path) -> None:
    name = fresh()
    token = cs.token(name, "device")
    out = run_cli("join", cs.url, "--token", token, "--ca-sha256", impostor.fingerprint,
                  "--node", name, "--state-dir", str(tmp_path / "fleet"))
    assert out.exit_code == 2
    [line] = out.stderr.strip().splitlines()
    assert "not the pinned" in line and token not in out.output
    out = run_cli("join", cs.url, "--token", token, "--ca-sha256", cs.fingerprint,
                  "--node", name, "--state-dir", str(tmp_path / "fleet"))
    assert out.exit_code == 0, out.output
    assert f"as spiffe://{FLEET}/node/{name}" in out.stderr
    out = run_cli("join", cs.url, "--token", token, "--ca-sha256", cs.fingerprint,
                  "--node", name, "--state-dir", str(tmp_path / "again"))
    assert out.exit_code == 2
    assert "already used" in out.stderr and token not in out.output


# -- two replicas on one PostgreSQL ---------------------------------------------------------

def test_two_replicas_on_one_postgresql_agree(fresh_postgres_url: str,  # noqa: F811
                                              tmp_path: Path) -> None:
    d = tmp_path / "control"
    control_dir(d, fleet=FLEET, heartbeat_s=30, database_url=fresh_postgres_url)
    with ControlServer(d) as a, ControlServer(d) as b:
        assert a.cp.store.url_for_display == b.cp.store.url_for_display
        assert "postgresql" in a.cp.store.url_for_display
        # a token made on A joins through B, once across both
        token = a.token("edge-1", "device")
        join(b.url, token=token, ca_sha256=b.fingerprint, state_dir=tmp_path / "e1",
             node="edge-1")
        edge1 = FleetState(tmp_path / "e1")
        with https(a) as c:
            refused(c.post("/v1/join", json={"token": token, "node": "edge-1", "csr": csr_pem(
                make_csr(generate_key(), "edge-1")).decode()}), 401, "already used",
                secret=token)
        edge2 = join_node(b, "edge-2", "gateway", tmp_path / "e2")
        # a heartbeat through A is what B lists
        with https(a, edge1) as h:
            assert h.post("/v1/heartbeat", json={"version": "1", "model": "m-a",
                                                 "queue_depth": 3}).status_code == 200
        # A writes heartbeats in batches (every 0.5 s): B sees it within one flush
        deadline = time.monotonic() + 10
        while True:
            with https(b) as c:
                rows = c.get("/v1/admin/nodes", headers=bearer(a.access_token("admin"))).json()
            by_name = {r["name"]: r for r in rows["nodes"]}
            if by_name["edge-1"]["heartbeat"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert sorted(by_name) == ["edge-1", "edge-2"]
        assert by_name["edge-1"]["heartbeat"]["queue_depth"] == 3
        assert by_name["edge-1"]["status"] == "online"
        assert by_name["edge-2"]["status"] == "enrolled"
        # revoked through B: A refuses it and tells the other node
        with https(b) as c:
            r = c.post("/v1/admin/nodes/edge-1/revoke", headers=bearer(b.access_token("admin")))
        assert r.json()["revoked_serials"] == [edge1.identity().serial]
        # A answers heartbeats from a view of the store it refreshes every second
        # (control/heartbeats.py): the revocation made on B is in it within that
        revoked_at = time.monotonic()
        while True:
            with https(a, edge2) as h:
                deny = h.post("/v1/heartbeat", json={"version": "1"}).json()["deny"]
            if deny["nodes"] or time.monotonic() - revoked_at > 10:
                break
            time.sleep(0.1)
        assert time.monotonic() - revoked_at < 3
        assert edge1.identity().serial in deny["serials"] and deny["nodes"] == ["edge-1"]
        with https(a, edge1) as h:
            refused(h.post("/v1/heartbeat", json={"version": "1"}), 403, "revoked")
            refused(h.post("/v1/renew", json={"csr": csr_pem(make_csr(
                generate_key(), "edge-1")).decode()}), 403, "revoked")
        # config pushed on A, then on B: versions 1 and 2 of one sequence
        versions = []
        for replica in (a, b):
            with https(replica) as c:
                r = c.post("/v1/admin/config", headers=bearer(replica.access_token("admin")),
                           json={"target_kind": "tier", "target": "gateway",
                                 "body": {"tiers": [{"name": "gateway",
                                                     "endpoints": [{"engine": "fake"}]}]}})
                versions.append(r.json()["version"])
        assert versions == [1, 2]
        pushed = time.monotonic()  # B's push reaches A's heartbeat answers within ~1 s
        while True:
            with https(a, edge2) as h:
                cfg = h.post("/v1/heartbeat", json={"version": "1"}).json()["config"]
            if cfg["version"] == 2 or time.monotonic() - pushed > 10:
                break
            time.sleep(0.1)
        assert (cfg["version"], cfg["target"]) == (2, "tier:gateway")
        assert time.monotonic() - pushed < 3


def test_a_heartbeat_postgresql_cannot_store_is_a_400_not_a_503(
        fresh_postgres_url: str, tmp_path: Path) -> None:  # noqa: F811
    raw = b'{"version": "1\\u0000"}'
    d = tmp_path / "control"
    control_dir(d, fleet=FLEET, database_url=fresh_postgres_url)
    with ControlServer(d) as a:
        node = join_node(a, "edge-1", "device", tmp_path / "e1")
        with https(a, node) as h:
            r = h.post("/v1/heartbeat", content=raw, headers={"content-type": "application/json"})
            assert r.status_code == 400, r.text
            assert h.post("/v1/heartbeat", json={"version": "1"}).status_code == 200
