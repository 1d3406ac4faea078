"""A joined node: mutual TLS to fleet peers (identity checked before a byte is sent),
callers authorized by identity, the deny list, certificate rotation under load, access
tokens, central config applied or rejected, and life without the control plane.

Real TLS on loopback throughout (``fleet_harness``): a control plane and fake-engine
nodes in threads of this process.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgewise.fleet.state import FleetState
from edgewise.fleet.stats import quantile_from_buckets
from edgewise.security.pki import generate_key, private_pem
from fleet_harness import ControlServer, NodeServer, control_dir, join_node, node_client

CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


@pytest.fixture
def control(tmp_path: Path) -> Iterator[ControlServer]:
    control_dir(tmp_path / "ctl", heartbeat_s=1.0)
    with ControlServer(tmp_path / "ctl") as c:
        yield c


def _gateway(control: ControlServer, tmp: Path, name: str = "gw1", tier: str = "gateway",
             **sections: Any) -> NodeServer:
    join_node(control, name, tier, tmp / name / "fleet")
    sections.setdefault("serving", {"tls": {"enabled": True}})
    sections.setdefault("fleet", {"heartbeat_s": 3600})  # heartbeats by hand (poke)
    return NodeServer(tmp / name / "fleet", **sections)


def _device(control: ControlServer, tmp: Path, upstream: NodeServer, *, peer: str,
            name: str = "dev1", **sections: Any) -> NodeServer:
    join_node(control, name, "device", tmp / name / "fleet")
    tiers = [{"name": "device", "clearance": "internal", "endpoints": [{"engine": "fake"}]},
             {"name": "gateway", "clearance": "phi",
              "endpoints": [{"url": f"https://127.0.0.1:{upstream.port}/v1", "peer": peer}]}]
    sections.setdefault("serving", {"tls": {"enabled": True}})
    sections.setdefault("fleet", {"heartbeat_s": 3600})
    return NodeServer(tmp / name / "fleet", tiers=tiers, **sections)


def _escalate(node: NodeServer) -> httpx.Response:
    with node_client(node) as c:
        return c.post("/v1/chat/completions", json=CHAT,
                      headers={"x-edgewise-min-tier": "gateway"}, timeout=30)


def _chat_requests(node: NodeServer) -> float:
    """Chat requests ``node`` answered (its own metrics)."""
    total = 0.0
    for family in node.node.metrics.registry.collect():
        for s in family.samples:
            if s.name == "edgewise_requests_total" and \
                    s.labels.get("endpoint") == "/v1/chat/completions":
                total += s.value
    return total


def _heartbeat(node: NodeServer) -> None:
    """One heartbeat round of ``node``'s agent, run on the node's own event loop."""
    loop = node.server._loop
    assert loop is not None
    asyncio.run_coroutine_threadsafe(node.agent.heartbeat_once(), loop).result(timeout=30)


def _renew(node: NodeServer) -> bool:
    loop = node.server._loop
    assert loop is not None
    return bool(asyncio.run_coroutine_threadsafe(node.agent.renew(), loop).result(timeout=30))


# -- node to node over mutual TLS -------------------------------------------------------------

def test_escalation_to_a_fleet_peer_goes_over_mutual_tls(control: ControlServer,
                                                        tmp_path: Path) -> None:
    with _gateway(control, tmp_path) as gw, \
            _device(control, tmp_path, gw, peer="tier:gateway") as dev:
        r = _escalate(dev)
        assert r.status_code == 200, r.text
        assert r.headers["x-edgewise-tier"] == "gateway"
        assert _chat_requests(gw) == 1
        # the gateway saw the device's certificate: the audit log names its SPIFFE ID
        entries = list(gw.app.state.router.audit.query())
        assert [e.record.requester for e in entries] == ["spiffe://acme/node/dev1"]


def test_a_peer_with_another_identity_is_refused_before_the_request_is_sent(
        control: ControlServer, tmp_path: Path) -> None:
    # The device expects node gw2 at the gateway's address, where gw1 answers.
    with _gateway(control, tmp_path) as gw, \
            _device(control, tmp_path, gw, peer="node:gw2") as dev:
        r = _escalate(dev)
        assert r.status_code == 503, r.text  # no eligible tier: the only one is not gw2
        assert _chat_requests(gw) == 0  # not a byte of the request reached gw1
        why = dev.app.state.router.fleet.endpoints["gateway"][0].breaker.last_error or ""
        assert "TLS handshake failed" in why and "gw2.node.acme" in why, why
    with _gateway(control, tmp_path, name="gw3") as gw, \
            _device(control, tmp_path, gw, peer="tier:cloud", name="dev2") as dev:
        assert _escalate(dev).status_code == 503  # a gateway is not a cloud node
        assert _chat_requests(gw) == 0


def test_a_peer_from_another_fleet_ca_is_refused(control: ControlServer,
                                                 tmp_path: Path) -> None:
    control_dir(tmp_path / "other-ctl", fleet="acme")  # same fleet name, another CA
    with ControlServer(tmp_path / "other-ctl") as other, \
            _gateway(other, tmp_path / "o") as impostor, \
            _device(control, tmp_path, impostor, peer="tier:gateway") as dev:
        assert _escalate(dev).status_code == 503
        assert _chat_requests(impostor) == 0


def test_allow_rules_and_revocation_are_enforced_on_both_ends(control: ControlServer,
                                                               tmp_path: Path) -> None:
    with _gateway(control, tmp_path, serving={"tls": {"enabled": True,
                                                      "allow": ["tier:device"]}}) as gw, \
            _device(control, tmp_path, gw, peer="tier:gateway") as dev:
        assert _escalate(dev).status_code == 200
        # a cloud node's certificate is not allowed on the gateway's /v1
        cloud_state = join_node(control, "cloud1", "cloud", tmp_path / "cloud1" / "fleet")
        with node_client(gw, via=cloud_state) as c:
            r = c.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 403
        assert "may not call this node" in r.json()["error"]["message"]
        # revoke the device: once the gateway has the new deny list it refuses it
        control.cp.revoke("dev1", by="test")
        _heartbeat(gw)
        with node_client(gw, via=FleetState(tmp_path / "dev1" / "fleet")) as c:
            r = c.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 403
        assert r.json()["error"]["message"] == "node dev1 (spiffe://acme/node/dev1) is revoked"
        # the device's own escalations now fail (the gateway refuses it): no 4xx relayed
        # to the client; the tier is unusable from this node and its breaker says why
        assert _escalate(dev).status_code == 503
        endpoint = dev.app.state.router.fleet.endpoints["gateway"][0]
        assert "refused this node (HTTP 403" in (endpoint.breaker.last_error or "")


def test_a_revoked_server_is_refused_even_on_a_pooled_connection(control: ControlServer,
                                                                tmp_path: Path) -> None:
    with _gateway(control, tmp_path) as gw, \
            _device(control, tmp_path, gw, peer="tier:gateway") as dev:
        assert _escalate(dev).status_code == 200  # a keep-alive connection is now pooled
        control.cp.revoke("gw1", by="test")
        _heartbeat(dev)
        assert dev.member.deny.nodes == {"gw1"}
        assert _escalate(dev).status_code == 503
        assert _chat_requests(gw) == 1  # only the first request reached it


def test_client_certificates_required_means_fleet_nodes_only(control: ControlServer,
                                                            tmp_path: Path) -> None:
    with _gateway(control, tmp_path, serving={"tls": {"enabled": True,
                                                      "client_certs": "required"}}) as gw:
        with node_client(gw) as c, pytest.raises(httpx.HTTPError):
            c.get("/healthz")  # the handshake itself refuses a client without a certificate
        dev_state = join_node(control, "dev1", "device", tmp_path / "dev1" / "fleet")
        with node_client(gw, via=dev_state) as c:
            assert c.post("/v1/chat/completions", json=CHAT).status_code == 200


# -- access tokens on a node --------------------------------------------------------------------

def test_access_tokens_least_privilege_on_a_node(control: ControlServer, tmp_path: Path) -> None:
    keys = {"keys": [{"name": "ops", "sha256": "0" * 64}], "metrics_scope": True}
    with _gateway(control, tmp_path, auth=keys) as gw, node_client(gw) as c:
        def call(path: str, token: str | None, body: Any = None) -> httpx.Response:
            headers = {"authorization": f"Bearer {token}"} if token else {}
            if body is None:
                return c.get(path, headers=headers)
            return c.post(path, json=body, headers=headers)

        assert call("/v1/chat/completions", None, CHAT).status_code == 401
        infer = control.access_token("infer", subject="app1")
        r = call("/v1/chat/completions", infer, CHAT)
        assert r.status_code == 200, r.text
        entries = list(gw.app.state.router.audit.query())
        assert entries[-1].record.requester == "app1"
        metrics = control.access_token("metrics", subject="prom")
        r = call("/v1/chat/completions", metrics, CHAT)
        assert r.status_code == 403
        assert "this route needs infer" in r.json()["error"]["message"]
        assert call("/metrics", None).status_code == 401
        assert call("/metrics", infer).status_code == 403
        assert call("/metrics", metrics).status_code == 200
        other_node = control.access_token("infer", node="someone-else")
        r = call("/v1/chat/completions", other_node, CHAT)
        assert r.status_code == 401
        assert "audience" in r.json()["error"]["message"]
        expired = control.cp.issuer.issue(subject="app1", scopes=["infer"],
                                          audience="edgewise:acme",
                                          now=datetime.now(UTC) - timedelta(minutes=20))
        r = call("/v1/chat/completions", expired, CHAT)
        assert r.status_code == 401
        assert "expired" in r.json()["error"]["message"]


def test_a_node_can_require_a_credential_without_api_keys(control: ControlServer,
                                                         tmp_path: Path) -> None:
    with _gateway(control, tmp_path, auth={"required": True}) as gw, node_client(gw) as c:
        r = c.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 401
        assert "requires a credential" in r.json()["error"]["message"]
        token = control.access_token("infer", subject="app1")
        assert c.post("/v1/chat/completions", json=CHAT,
                      headers={"authorization": f"Bearer {token}"}).status_code == 200
    dev = join_node(control, "dev1", "device", tmp_path / "dev1" / "fleet")
    with NodeServer(tmp_path / "gw1" / "fleet", auth={"required": True},
                    serving={"tls": {"enabled": True}}, fleet={"heartbeat_s": 3600}) as gw, \
            node_client(gw, via=dev) as c:  # a fleet peer's certificate is a credential
        assert c.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_declared_sensitivity_in_a_token_floors_the_request(control: ControlServer,
                                                           tmp_path: Path) -> None:
    with _gateway(control, tmp_path) as gw, node_client(gw) as c:
        token = control.cp.issue_access_token(subject="clinic-app", scopes=["infer"],
                                              ttl=timedelta(minutes=5), sensitivity="phi",
                                              by="test")
        r = c.post("/v1/chat/completions", json=CHAT,
                   headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 200
        assert r.headers["x-edgewise-sensitivity"] == "phi"


# -- rotation -------------------------------------------------------------------------------------

def test_certificates_rotate_under_load_without_a_failed_request(control: ControlServer,
                                                                tmp_path: Path) -> None:
    with _gateway(control, tmp_path) as gw, \
            _device(control, tmp_path, gw, peer="tier:gateway") as dev:
        failures: list[str] = []
        done = threading.Event()
        count = 0

        def load() -> None:
            nonlocal count
            with node_client(dev) as c:
                while not done.is_set():
                    r = c.post("/v1/chat/completions", json=CHAT,
                               headers={"x-edgewise-min-tier": "gateway"}, timeout=30)
                    count += 1
                    if r.status_code != 200 or r.headers.get("x-edgewise-tier") != "gateway":
                        failures.append(f"{r.status_code} {r.text[:200]}")

        serials = {gw.member.state.identity().serial, dev.member.state.identity().serial}
        t = threading.Thread(target=load)
        t.start()
        try:
            for _ in range(3):
                time.sleep(0.3)
                assert _renew(gw) and _renew(dev)
                serials |= {gw.member.state.identity().serial,
                            dev.member.state.identity().serial}
                # a fresh connection to the gateway now gets the renewed certificate
                with node_client(gw) as c:
                    assert c.get("/healthz").status_code == 200
            time.sleep(0.3)
        finally:
            done.set()
            t.join(timeout=30)
        assert failures == []
        assert count > 10
        assert len(serials) == 8  # 2 nodes x (1 + 3 renewals)
        assert gw.agent.status.renewals == 3
        rec = control.cp.node("gw1")
        assert rec is not None and rec.serial == gw.member.state.identity().serial


def test_applications_reach_a_node_by_the_hosts_its_token_granted(control: ControlServer,
                                                                  tmp_path: Path) -> None:
    join_node(control, "gw1", "gateway", tmp_path / "gw1" / "fleet",
              hosts=("127.0.0.1", "localhost"))
    with NodeServer(tmp_path / "gw1" / "fleet", serving={"tls": {"enabled": True}},
                    fleet={"heartbeat_s": 3600}) as gw:
        ca = str(gw.member.state.ca_file)
        for _ in range(2):  # as joined, and after a renewal (which keeps the hosts)
            for host in ("127.0.0.1", "localhost"):
                r = httpx.post(f"https://{host}:{gw.port}/v1/chat/completions", json=CHAT,
                               verify=ssl.create_default_context(cafile=ca))
                assert r.status_code == 200, r.text
            assert _renew(gw)
        assert gw.member.state.identity().hosts == ("localhost", "127.0.0.1")


def test_renewal_is_due_at_half_the_lifetime(control: ControlServer, tmp_path: Path) -> None:
    with _gateway(control, tmp_path) as gw:
        ident = gw.member.state.identity()
        issued = ident.not_before + timedelta(minutes=1)  # the CA back-dates by 1 min
        half = issued + (ident.not_after - issued) / 2
        assert not gw.agent.renewal_due(half - timedelta(seconds=1))
        assert gw.agent.renewal_due(half + timedelta(seconds=1))


def test_a_revoked_node_cannot_renew(control: ControlServer, tmp_path: Path) -> None:
    with _gateway(control, tmp_path) as gw:
        serial = gw.member.state.identity().serial
        control.cp.revoke("gw1", by="test")
        assert not _renew(gw)
        assert gw.agent.status.revoked
        assert gw.member.state.identity().serial == serial  # kept what it had


# -- central config and offline life --------------------------------------------------------------

def test_central_config_is_applied_at_the_next_heartbeat(control: ControlServer,
                                                         tmp_path: Path) -> None:
    with _gateway(control, tmp_path) as gw:
        assert [t.name for t in gw.app.state.router.fleet.tiers] == ["gateway"]
        body = {"tiers": [{"name": "gateway", "clearance": "pii",
                           "endpoints": [{"engine": "fake"}]}],
                "routing": {"energy_weight": 0.5}}
        v = control.cp.push_config(target_kind="tier", target="gateway", body=body, by="test")
        _heartbeat(gw)
        router = gw.app.state.router
        assert router.fleet.tiers[0].clearance == "pii"
        assert router.config.routing.energy_weight == 0.5
        assert gw.agent.status.applied_config == v.id
        assert gw.member.state.last_config() is not None
        with node_client(gw) as c:  # still serving, on the new config
            assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
        _heartbeat(gw)  # the control plane now knows it is applied
        rec = control.cp.node("gw1")
        assert rec is not None and rec.applied_config == v.id and rec.config_error is None


def test_a_config_that_does_not_validate_on_the_node_is_rejected(control: ControlServer,
                                                                 tmp_path: Path) -> None:
    with _gateway(control, tmp_path) as gw:
        served = gw.app.state.router.fleet.tiers[0].endpoints[0].model
        bad = {"tiers": [{"name": "gateway",
                          "endpoints": [{"engine": "fake", "model": "qwen2.5-coder-1.5b"}]}]}
        v = control.cp.push_config(target_kind="node", target="gw1", body=bad, by="test")
        _heartbeat(gw)
        assert gw.agent.status.rejected_config == v.id
        assert "may not change the served model" in (gw.agent.status.config_error or "")
        assert gw.app.state.router.fleet.tiers[0].endpoints[0].model == served
        _heartbeat(gw)  # reported, and not retried
        rec = control.cp.node("gw1")
        assert rec is not None and "may not change the served model" in (rec.config_error or "")
        with node_client(gw) as c:
            assert c.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_a_node_keeps_serving_and_its_config_without_the_control_plane(tmp_path: Path) -> None:
    control_dir(tmp_path / "ctl", heartbeat_s=1.0)
    control = ControlServer(tmp_path / "ctl")
    gw = _gateway(control, tmp_path)
    body = {"tiers": [{"name": "gateway", "clearance": "pii", "endpoints": [{"engine": "fake"}]}]}
    control.cp.push_config(target_kind="tier", target="gateway", body=body, by="test")
    lost = join_node(control, "dev9", "device", tmp_path / "dev9" / "fleet")
    control.cp.revoke("dev9", by="test")
    _heartbeat(gw)
    control.stop()
    _heartbeat(gw)  # unreachable now
    assert gw.agent.status.control_reachable is False
    with node_client(gw) as c:
        assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
    gw.stop()
    # a restart without the control plane starts from the last good config
    with NodeServer(tmp_path / "gw1" / "fleet", serving={"tls": {"enabled": True}},
                    fleet={"heartbeat_s": 3600}) as again:
        assert again.app.state.router.fleet.tiers[0].clearance == "pii"
        with node_client(again) as c:
            assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
        # ... and with the last deny list it had: the revoked node stays refused
        assert again.member.deny.nodes == {"dev9"}
        with node_client(again, via=lost) as c:
            assert c.post("/v1/chat/completions", json=CHAT).status_code == 403


# -- pieces -------------------------------------------------------------------------------------

def test_an_interrupted_key_rotation_is_finished_at_start(tmp_path: Path) -> None:
    state = FleetState(tmp_path)
    state.save_pair(b"old-key", b"old-cert")
    new_key = private_pem(generate_key())
    # crash after renaming the key, before the certificate: node.pem.next is left
    (tmp_path / "node.pem.next").write_bytes(b"new-cert")
    state.key_file.write_bytes(new_key)
    state.recover()
    assert state.cert_file.read_bytes() == b"new-cert"
    assert not (tmp_path / "node.pem.next").exists()
    # crash before any rename: both .next files go, the old pair stays
    (tmp_path / "node.key.next").write_bytes(b"k")
    (tmp_path / "node.pem.next").write_bytes(b"c")
    state.recover()
    assert state.cert_file.read_bytes() == b"new-cert"
    assert state.key_file.read_bytes() == new_key
    assert oct(state.key_file.stat().st_mode & 0o777) == "0o600"


def test_ttft_quantiles_from_histogram_buckets() -> None:
    inf = float("inf")
    # 10 observations: 5 under 0.1 s, 4 in (0.1, 0.5], 1 above 1 s
    buckets = [(0.1, 5.0), (0.5, 9.0), (1.0, 9.0), (inf, 10.0)]
    assert quantile_from_buckets(0.5, buckets) == pytest.approx(0.1)
    assert quantile_from_buckets(0.7, buckets) == pytest.approx(0.1 + 0.4 * 0.5)
    assert quantile_from_buckets(0.99, buckets) == 1.0  # past the last finite bound
    assert quantile_from_buckets(0.5, [(0.1, 0.0), (inf, 0.0)]) is None


def test_control_init_from_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography import x509
    from typer.testing import CliRunner

    from edgewise.cli import app
    from edgewise.security.pki import FleetCA, load_chain

    runner = CliRunner()
    d = tmp_path / "ctl"
    monkeypatch.delenv("EDGEWISE_CA_PASSPHRASE", raising=False)
    r = runner.invoke(app, ["control", "init", "--dir", str(d), "--fleet", "acme"])
    assert r.exit_code == 2 and "EDGEWISE_CA_PASSPHRASE" in r.output
    assert not (d / "ca" / "root.pem").exists()
    monkeypatch.setenv("EDGEWISE_CA_PASSPHRASE", "correct horse battery staple")
    r = runner.invoke(app, ["control", "init", "--dir", str(d), "--fleet", "acme",
                            "--host", "ctl.example.org", "--host", "10.0.0.5"])
    assert r.exit_code == 0, r.output
    fingerprint = r.stdout.strip().splitlines()[-1]
    assert fingerprint == FleetCA.load(d).root_fingerprint
    server = load_chain((d / "tls" / "server.pem").read_bytes())[0]
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = {str(v) for v in sans.get_values_for_type(x509.DNSName)} | {
        str(v) for v in sans.get_values_for_type(x509.IPAddress)}
    assert {"localhost", "127.0.0.1", "::1", "ctl.example.org", "10.0.0.5"} <= names
    assert b"ENCRYPTED" in (d / "ca" / "root.key").read_bytes()
    again = runner.invoke(app, ["control", "init", "--dir", str(d), "--fleet", "acme"])
    assert again.exit_code == 2 and "already initialised" in again.output
