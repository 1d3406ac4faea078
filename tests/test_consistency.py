"""Consistency: what the node says about itself matches what it does — when it drains,
when a client goes away, in its docs, in routed answers, in the audit log and on the
command line. Each test is a problem a user found; each fails without its fix."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from conftest import LiveServer, make_config
from edgewise.api.app import create_app
from edgewise.cli import app as cli
from edgewise.config import parse_config
from edgewise.engines.fake import FakeEngine
from edgewise.models import CATALOGUE
from edgewise.node import Node
from edgewise.security import AuditLog, AuditRecord
from fake_detector import FakeDetector
from node_process import EDGEWISE, NodeProcess

CHAT = "/v1/chat/completions"
MSG = [{"role": "user", "content": "hi"}]


def sse_events(lines: list[str]) -> list[Any]:
    """The ``data:`` payloads of an SSE stream, JSON-decoded ("[DONE]" stays a string)."""
    out: list[Any] = []
    for line in lines:
        if line.startswith("data: "):
            data = line[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


# -- B: drain ---------------------------------------------------------------------------

LONG = {"max_tokens": 1500, "temperature": 1.0, "seed": 1, "stream": True}
LONG_REQUESTS = {
    "chat": (CHAT, {"model": "auto", "messages": [
        {"role": "user", "content": "Write a very long story about a dragon."}], **LONG}),
    "completions": ("/v1/completions", {"model": "auto", "prompt": "Once upon a time", **LONG}),
}


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.parametrize("route", ["chat", "completions"])
def test_sigterm_cuts_a_long_stream_at_the_drain_timeout(tmp_path: Path, route: str) -> None:
    """``serving.drain_timeout_s: 1``: a stream still running a second after SIGTERM ends
    with an ``error`` event and ``[DONE]``; a request arriving meanwhile gets 503 +
    Retry-After (the listener is still open); the node exits 0. A completions stream
    used to run on until uvicorn killed it 8 s later, ending with a ``stop`` that looked
    like a complete answer."""
    path, body = LONG_REQUESTS[route]
    with NodeProcess(tmp_path, "serving: {drain_timeout_s: 1}\nengine: {n_ctx: 2048}\n") as node:
        node.wait_ready()
        with httpx.stream("POST", node.url + path, json=body, timeout=60) as r:
            lines = r.iter_lines()
            head = [next(lines) for _ in range(20)]  # ten events: generating
            node.terminate()
            signalled = time.monotonic()
            time.sleep(0.3)  # the drain has begun
            late = httpx.post(node.url + CHAT, json={"model": "auto", "messages": MSG},
                              timeout=10)
            ready = httpx.get(node.url + "/readyz", timeout=10)
            rest = list(lines)
            cut_after = time.monotonic() - signalled
        status = node.wait(timeout=30)
        exited_after = time.monotonic() - signalled
        output = node.output()
    print(f"\n{route}: stream cut {cut_after:.2f} s after SIGTERM, exit {status} after "
          f"{exited_after:.2f} s")
    assert late.status_code == 503 and late.headers["retry-after"] == "5"
    assert late.json()["error"]["code"] == "shutting_down"
    assert ready.status_code == 503 and ready.json()["reason"] == "the node is shutting down"
    events = sse_events(head + rest)
    assert events[-1] == "[DONE]"
    assert events[-2] == {"error": {
        "message": "the node shut down (drain timeout) before the answer was complete; "
                   "retry on another node", "type": "service_unavailable", "param": None,
        "code": "shutting_down"}}
    finished = [e for e in events[:-2] if e["choices"] and e["choices"][0]["finish_reason"]]
    assert finished == []  # no "stop": the answer is not presented as complete
    assert 0.9 < cut_after < 4
    assert status == 0, output
    assert "Traceback" not in output


@pytest.mark.slow
@pytest.mark.model
def test_sigterm_lets_a_short_stream_finish(tmp_path: Path) -> None:
    with NodeProcess(tmp_path, "serving: {drain_timeout_s: 10}\nengine: {n_ctx: 2048}\n") as node:
        node.wait_ready()
        with httpx.stream("POST", node.url + CHAT, timeout=60, json={
                "model": "auto", "messages": [{"role": "user", "content": "Say hello."}],
                "max_tokens": 24, "temperature": 0, "stream": True}) as r:
            lines = r.iter_lines()
            head = [next(lines)]
            node.terminate()
            signalled = time.monotonic()
            rest = list(lines)
            finished_after = time.monotonic() - signalled
        status = node.wait(timeout=30)
        output = node.output()
    print(f"\nshort stream finished {finished_after:.2f} s after SIGTERM, exit {status}")
    events = sse_events(head + rest)
    assert events[-1] == "[DONE]"
    assert not any("error" in e for e in events[:-1])
    assert events[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    assert status == 0, output
    assert "drain timed out" not in output


# -- D: a client that goes away ---------------------------------------------------------


def metric_lines(url: str, prefix: str) -> list[str]:
    return [line for line in httpx.get(url + "/metrics").text.splitlines()
            if line.startswith(prefix)]


def test_a_non_streaming_client_that_disconnects_is_a_cancellation(
        live_fake: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edgewise.access")
    engine = live_fake.node.engine
    assert isinstance(engine, FakeEngine)
    body = json.dumps({"model": "auto", "messages": MSG, "max_tokens": 1000}).encode()
    with socket.create_connection(("127.0.0.1", live_fake.port)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: node\r\n"
                     b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                     % (len(body), body))
        time.sleep(0.5)  # ~25 tokens of 1000 (20 ms each)
    closed = engine.tokens_generated
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not [
            r for r in caplog.records
            if r.name == "edgewise.access" and "/v1/chat" in r.getMessage()]:
        time.sleep(0.05)
    time.sleep(0.2)
    assert engine.tokens_generated - closed <= 2  # stopped within a token
    access = [r.getMessage() for r in caplog.records if r.name == "edgewise.access"
              and "/v1/chat" in r.getMessage()]
    assert len(access) == 1 and re.fullmatch(r"POST /v1/chat/completions 499 \d+\.\dms",
                                             access[0]), access
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    url = live_fake.url
    assert metric_lines(url, "edgewise_cancelled_generations_total ") == [
        "edgewise_cancelled_generations_total 1.0"]
    assert metric_lines(url, 'edgewise_requests_total{endpoint="/v1/chat/completions"') == [
        'edgewise_requests_total{endpoint="/v1/chat/completions",status="499"} 1.0']
    assert metric_lines(url, "edgewise_errors_total{") == []  # a cancellation, no error
    # the audit log says what happened too
    with AuditLog(live_fake.node.config.audit.path, readonly=True) as log:
        outcomes = [(e.record.route, e.record.outcome) for e in log.query()]
    assert outcomes == [("chat", "failed:disconnected")]


# -- E: /docs offline -------------------------------------------------------------------


@pytest.mark.parametrize("page, title", [("/docs", "Swagger UI"), ("/redoc", "ReDoc")])
async def test_the_docs_need_no_internet(client: httpx.AsyncClient, page: str,
                                         title: str) -> None:
    r = await client.get(page)
    assert r.status_code == 200 and f"<title>edgewise node - {title}</title>" in r.text
    assert "cdn" not in r.text and "http://" not in r.text and "https://" not in r.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    kinds = {a.rsplit(".", 1)[-1] for a in assets}
    assert {"js"} <= kinds and (page == "/redoc" or "css" in kinds)
    for asset in assets:
        assert asset.startswith("/") and not asset.startswith("//"), asset
        got = await client.get(asset)
        assert got.status_code == 200, asset
        kind = asset.rsplit(".", 1)[-1]
        expected = {"js": "javascript", "css": "text/css", "png": "image/png"}[kind]
        assert expected in got.headers["content-type"], asset
        assert len(got.content) > (100_000 if kind in ("js", "css") else 100), asset
    spec = re.search(r"""(?:url: |spec-url=)['"]([^'"]+)['"]""", r.text)
    assert spec is not None and spec.group(1) == "/openapi.json"
    assert (await client.get("/openapi.json")).json()["info"]["title"] == "edgewise node"


# -- F: routed answers ------------------------------------------------------------------

CLOUD_URL = "http://cloud.test/v1"


@dataclass
class Fleet:
    client: httpx.AsyncClient
    audit_path: str


async def _fleet(tmp_path: Path, threshold: float | None) -> AsyncIterator[Fleet]:
    """A device node (fake engine, model ``device-model``) with a ``cloud`` tier that is
    another node (``cloud-model``) reached in-process; with ``threshold``, a cascade."""
    cloud = Node(make_config(node={"name": "cloud-1", "tier": "cloud"}),
                 FakeEngine(model="cloud-model"))
    await cloud.start()
    cfg = parse_config({
        "node": {"name": "clinic-1"}, "engine": {"kind": "fake", "n_ctx": 512},
        "tiers": [
            {"name": "device", "endpoints": [{"engine": "fake", "model": "auto"}],
             "clearance": "phi", "cost_per_1k_tokens": 0.0},
            {"name": "cloud", "endpoints": [{"url": CLOUD_URL}], "clearance": "public",
             "cost_per_1k_tokens": 0.6}],
        "routing": {"cascade": {"enabled": threshold is not None,
                                "threshold": 0.5 if threshold is None else threshold},
                    "jobs_path": str(tmp_path / "jobs.sqlite")},
        "audit": {"path": str(tmp_path / "audit.sqlite")}})
    node = Node(cfg, FakeEngine(model="device-model"))
    await node.start()
    app = create_app(node, manage_lifecycle=False, detector=FakeDetector(),
                     transports={CLOUD_URL: httpx.ASGITransport(
                         app=create_app(cloud, manage_lifecycle=False))})
    app.state.router.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://device") as c:
        yield Fleet(c, cfg.audit.path)
    await app.state.router.stop()
    await node.stop()
    await cloud.stop()


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    async for f in _fleet(tmp_path, None):
        yield f


async def _stream(client: httpx.AsyncClient, body: dict[str, Any]
                  ) -> tuple[httpx.Response, list[Any]]:
    async with client.stream("POST", CHAT, json={**body, "stream": True}) as r:
        lines = [line async for line in r.aiter_lines()]
    return r, sse_events(lines)


@pytest.mark.parametrize("threshold, model, answered_by", [
    (None, "cloud", "cloud-model"),  # the tier by name
    (None, "auto", "device-model"),  # the cheapest
    (0.0, "auto", "device-model"),   # a cascade that keeps the device's answer
    (0.999, "auto", "cloud-model"),  # and one that escalates
])
async def test_routed_answers_name_the_model_that_answered(
        tmp_path: Path, threshold: float | None, model: str, answered_by: str) -> None:
    async for f in _fleet(tmp_path, threshold):
        body = {"model": model, "messages": MSG, "max_tokens": 5}
        r = await f.client.post(CHAT, json=body)
        assert r.status_code == 200, r.text
        rid = r.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{24}", rid) and r.json()["id"] == f"chatcmpl-{rid}"
        assert r.json()["model"] == r.headers["x-edgewise-model"] == answered_by
        s, events = await _stream(f.client, body)
        assert s.status_code == 200
        rid = s.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{24}", rid)
        chunks = [e for e in events if e != "[DONE]"]
        assert len(chunks) >= 3 and events[-1] == "[DONE]"
        assert {c["id"] for c in chunks} == {f"chatcmpl-{rid}"}
        assert {c["model"] for c in chunks} == {answered_by}  # never the tier's name
        assert s.headers["x-edgewise-model"] == answered_by


async def test_every_model_id_the_fleet_lists_resolves(fleet: Fleet) -> None:
    listed = [m["id"] for m in (await fleet.client.get("/v1/models")).json()["data"]]
    assert listed == ["device-model", "all-minilm-l6-v2", "device", "cloud"]
    for mid in listed:
        r = await fleet.client.get(f"/v1/models/{mid}")
        assert r.status_code == 200 and r.json()["id"] == mid
    cloud = (await fleet.client.get("/v1/models/cloud")).json()
    assert cloud["edgewise"]["tier"] == "cloud" and cloud["edgewise"]["clearance"] == "public"
    r = await fleet.client.post(CHAT, json={"model": "cloud", "messages": MSG, "max_tokens": 3})
    assert r.status_code == 200 and r.headers["x-edgewise-tier"] == "cloud"


async def test_completions_on_a_fleet_node_are_audited(fleet: Fleet) -> None:
    plain = await fleet.client.post("/v1/completions", json={
        "model": "auto", "prompt": "Once", "max_tokens": 3})
    assert plain.status_code == 200
    async with fleet.client.stream("POST", "/v1/completions", json={
            "model": "auto", "prompt": "Once", "max_tokens": 3, "stream": True}) as s:
        assert [line async for line in s.aiter_lines()][-2] == "data: [DONE]"
    for _ in range(50):  # a stream's record is written as it ends
        with AuditLog(fleet.audit_path, readonly=True) as log:
            records = [e.record for e in log.query()]
        if len(records) == 2:
            break
        time.sleep(0.02)
    assert [(r.route, r.outcome, r.tier, r.request_id) for r in records] == [
        ("completions", "answered", "device", plain.headers["x-request-id"]),
        ("completions", "answered", "device", s.headers["x-request-id"])]
    assert records[0].reason == "device: this node's engine"


# -- H: the command line ----------------------------------------------------------------


def lines_of(text: str) -> list[str]:
    return text.splitlines()


def whole_on_a_line(name: str, text: str) -> bool:
    return any(re.search(rf"(?<![\w.@:/+=-]){re.escape(name)}(?![\w.@:/+=-])", line)
               for line in lines_of(text))


def test_models_at_80_columns_keeps_names_whole() -> None:
    r = CliRunner().invoke(cli, ["models", "--no-verify"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    assert max(len(line) for line in lines_of(r.stdout)) <= 80
    for name in CATALOGUE:
        assert whole_on_a_line(name, r.stdout), name


AUDITED = [  # requester, tier, outcome: identifiers that must never be cut
    ("clinic-frontdesk-app", "regional-gpu-cluster", "answered"),
    ("ops@example.org", None, "refused:context_length_exceeded"),
    ("spiffe://clinic/ward-7", "device", "failed:disconnected"),
]


@pytest.fixture
def audit_log(tmp_path: Path) -> Path:
    path = tmp_path / "audit.sqlite"
    with AuditLog(path) as log:
        for i, (requester, tier, outcome) in enumerate(AUDITED):
            log.append(AuditRecord(
                requester=requester, request_id=f"chatcmpl-{i:024x}", route="chat",
                node="clinic-1", tier=tier, plan=("device", "regional-gpu-cluster"),
                outcome=outcome, entities={"PERSON": 2, "PHONE_NUMBER": 1},
                declared_level="public", detected_level="pii",
                reason="cascade: device confidence 0.33 < 0.62, escalated to the next tier"))
    return path


@pytest.mark.parametrize("columns", [80, 120, 250])
def test_audit_show_keeps_identifiers_whole(audit_log: Path, columns: int) -> None:
    r = CliRunner().invoke(cli, ["audit", "show", "--path", str(audit_log)],
                           env={"COLUMNS": str(columns)})
    assert r.exit_code == 0, r.output
    assert max(len(line) for line in lines_of(r.stdout)) <= columns
    for requester, tier, outcome in AUDITED:
        for name in (requester, tier, outcome):
            if name is not None:
                assert whole_on_a_line(name, r.stdout), (name, r.stdout)
    assert ("┃ requester" in r.stdout) == (columns == 250)  # a table where one fits


class Recording(FakeEngine):
    """A fake engine that records how many messages each chat prompt had."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.conversations: list[int] = []

    def chat_prompt(self, messages: Any, tools: Any = ()) -> list[int]:
        self.conversations.append(len(messages))
        return super().chat_prompt(messages, tools)


@pytest.mark.slow
@pytest.mark.parametrize("system, sent, said", [
    ([], [1, 3, 1], "conversation reset"),
    (["--system", "Be brief."], [2, 4, 2], "conversation reset (system prompt kept)"),
])
def test_chat_reset_says_so_and_forgets(system: list[str], sent: list[int],
                                        said: str) -> None:
    engine = Recording(eos_after=4)
    with LiveServer(Node(make_config(), engine)) as server:
        r = subprocess.run([EDGEWISE, "chat", "--url", server.url + "/v1", *system],
                           input="hello\nagain\n/reset\nfresh\n/exit\n", capture_output=True,
                           text=True, timeout=60,
                           env={**os.environ, "COLUMNS": "200", "TERM": "dumb"})
    assert r.returncode == 0, r.stderr
    assert [line for line in lines_of(r.stdout) if "reset" in line and "you>" in line] == [
        f"you> {said}"]
    assert engine.conversations == sent


@pytest.mark.slow
def test_a_fleet_node_does_not_log_every_health_probe(tmp_path: Path) -> None:
    cloud = Node(make_config(node={"name": "cloud-1", "tier": "cloud"}), FakeEngine())
    with LiveServer(cloud) as remote, NodeProcess(tmp_path, f"""
node: {{name: fleet-1}}
tiers:
  - {{name: device, clearance: phi, endpoints: [{{engine: fake, model: auto}}]}}
  - {{name: cloud, clearance: public, endpoints: [{{url: "{remote.url}/v1"}}]}}
routing: {{health: {{probe_interval_s: 0.2}}}}
privacy: {{enabled: false}}
""", "--log-level", "info") as node:
        node.wait_ready()
        time.sleep(2)
        node.terminate()
        assert node.wait() == 0
        probes = metric_lines(remote.url, 'edgewise_requests_total{endpoint="/v1/models"')
    output = node.output()
    print(f"\nfleet node, 2 s at --log-level info: {probes[0] if probes else 'no probes'}")
    assert probes and float(probes[0].rsplit(" ", 1)[1]) >= 5  # it did probe, often
    assert "INFO" in output and "edgewise.node: model fake-tiny ready" in output
    assert "HTTP Request:" not in output
