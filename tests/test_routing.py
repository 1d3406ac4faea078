"""Tiered routing end to end, in-process: a device node whose `cloud` tier is another
edgewise node reached through an httpx transport that a test can cut and restore."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from conftest import make_config
from edgewise.api.app import create_app
from edgewise.config import parse_config
from edgewise.engines.fake import FakeEngine
from edgewise.node import Node
from edgewise.routing.service import Router
from fake_detector import FakeDetector
from scripted_engine import ScriptedEngine

CLOUD_URL = "http://cloud.test/v1"
CHAT = "/v1/chat/completions"
MSG = [{"role": "user", "content": "hi"}]


class Switch(httpx.AsyncBaseTransport):
    """Forwards to the cloud app while `up`; refuses connections while down."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.up = True
        self.calls = 0  # chat requests only (health probes are not counted)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/chat/completions"):
            self.calls += 1
        if not self.up:
            raise httpx.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)


@dataclass
class Tiered:
    client: httpx.AsyncClient
    router: Router
    switch: Switch
    cloud_node: Node


def tiered_config(tmp_path: Any, *, cascade: bool, threshold: float = 0.5,
                  **cascade_keys: Any) -> Any:
    return parse_config({
        "node": {"name": "clinic-1"},
        "engine": {"kind": "fake", "n_ctx": 512},
        "tiers": [
            {"name": "device", "endpoints": [{"engine": "fake", "model": "auto"}],
             "clearance": "phi", "cost_per_1k_tokens": 0.0},
            {"name": "cloud", "endpoints": [{"url": CLOUD_URL}], "clearance": "public",
             "cost_per_1k_tokens": 0.6},
        ],
        "routing": {"cascade": {"enabled": cascade, "threshold": threshold, **cascade_keys},
                    "health": {"probe_interval_s": 0.2, "failure_threshold": 2},
                    "jobs_path": str(tmp_path / "jobs.sqlite")},
        "audit": {"path": str(tmp_path / "audit.sqlite")},
    })


async def make_tiered(tmp_path: Any, *, device: FakeEngine | None = None, **kw: Any
                      ) -> AsyncIterator[Tiered]:
    cloud_node = Node(make_config(node={"name": "cloud-1", "tier": "cloud"}),
                      FakeEngine(model="cloud-model"))
    await cloud_node.start()
    cloud_app = create_app(cloud_node, manage_lifecycle=False)
    switch = Switch(httpx.ASGITransport(app=cloud_app))
    node = Node(tiered_config(tmp_path, **kw), device or FakeEngine(model="device-model"))
    await node.start()
    app = create_app(node, manage_lifecycle=False, transports={CLOUD_URL: switch},
                     detector=FakeDetector())
    router: Router = app.state.router
    router.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://device") as client:
        yield Tiered(client, router, switch, cloud_node)
    await router.stop()
    await node.stop()
    await cloud_node.stop()


@pytest.fixture
async def no_cascade(tmp_path: Any) -> AsyncIterator[Tiered]:
    async for t in make_tiered(tmp_path, cascade=False):
        yield t


@pytest.fixture
async def always_escalate(tmp_path: Any) -> AsyncIterator[Tiered]:
    async for t in make_tiered(tmp_path, cascade=True, threshold=0.999):
        yield t


@pytest.fixture
async def never_escalate(tmp_path: Any) -> AsyncIterator[Tiered]:
    async for t in make_tiered(tmp_path, cascade=True, threshold=0.0):
        yield t


def cloud_requests(t: Tiered) -> float:
    text = t.cloud_node.metrics.render().decode()
    for line in text.splitlines():
        if line.startswith('edgewise_requests_total{endpoint="/v1/chat/completions",status="200"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_cheapest_tier_answers_and_says_why(no_cascade: Tiered) -> None:
    r = await no_cascade.client.post(CHAT, json={"model": "auto", "messages": MSG,
                                                 "max_tokens": 5})
    assert r.status_code == 200, r.text
    assert r.headers["x-edgewise-tier"] == "device"
    assert r.headers["x-edgewise-route-reason"] == "cheapest eligible tier"
    assert r.headers["x-edgewise-escalations"] == "0"
    assert r.json()["model"] == "device-model"
    assert cloud_requests(no_cascade) == 0


async def test_explicit_tier_and_clearance(no_cascade: Tiered) -> None:
    r = await no_cascade.client.post(CHAT, json={"model": "cloud", "messages": MSG,
                                                 "max_tokens": 3})
    assert r.headers["x-edgewise-tier"] == "cloud"
    assert r.json()["model"] == "cloud-model"
    r = await no_cascade.client.post(CHAT, json={"model": "cloud", "messages": MSG},
                                     headers={"x-edgewise-sensitivity": "pii"})
    assert r.status_code == 403 and r.headers["x-edgewise-tier"] == "none"
    assert r.json()["error"]["code"] == "clearance"
    assert "pii data may not be sent to cloud" in r.json()["error"]["message"]
    r = await no_cascade.client.post(CHAT, json={"model": "auto", "messages": MSG},
                                     headers={"x-edgewise-min-tier": "cloud"})
    assert r.headers["x-edgewise-tier"] == "cloud"


async def test_bad_steering_headers_are_400(no_cascade: Tiered) -> None:
    for name, value in [("x-edgewise-sensitivity", "secret"),
                        ("x-edgewise-max-latency-ms", "soon"),
                        ("x-edgewise-max-cost", "-1")]:
        r = await no_cascade.client.post(CHAT, json={"model": "auto", "messages": MSG},
                                         headers={name: value})
        assert r.status_code == 400, (name, r.text)
        assert r.json()["error"]["param"] == name


async def test_cascade_escalates_low_confidence(always_escalate: Tiered) -> None:
    r = await always_escalate.client.post(CHAT, json={"model": "auto", "messages": MSG,
                                                      "max_tokens": 5})
    assert r.status_code == 200
    assert r.headers["x-edgewise-tier"] == "cloud"
    assert r.headers["x-edgewise-escalations"] == "1"
    assert "confidence" in r.headers["x-edgewise-route-reason"]
    assert r.json()["model"] == "cloud-model"
    assert r.json()["choices"][0]["logprobs"] is None  # client did not ask
    assert cloud_requests(always_escalate) == 1


async def test_cascade_keeps_confident_answers_local(never_escalate: Tiered) -> None:
    r = await never_escalate.client.post(CHAT, json={"model": "auto", "messages": MSG,
                                                     "max_tokens": 5, "logprobs": True})
    assert r.headers["x-edgewise-tier"] == "device"
    assert 0 < float(r.headers["x-edgewise-confidence"]) <= 1
    assert len(r.json()["choices"][0]["logprobs"]["content"]) == 5
    assert cloud_requests(never_escalate) == 0


async def test_sensitive_requests_never_escalate(always_escalate: Tiered) -> None:
    r = await always_escalate.client.post(CHAT, json={"model": "auto", "messages": MSG,
                                                      "max_tokens": 5},
                                          headers={"x-edgewise-sensitivity": "phi"})
    assert r.status_code == 200
    assert r.headers["x-edgewise-tier"] == "device"
    assert always_escalate.switch.calls == 0  # not a single byte went to the cloud


async def test_dead_tier_degrades_to_low_confidence_answer_and_breaker_opens(
        always_escalate: Tiered) -> None:
    t = always_escalate
    t.switch.up = False
    r = await t.client.post(CHAT, json={"model": "auto", "messages": MSG, "max_tokens": 5})
    assert r.status_code == 200
    assert r.headers["x-edgewise-tier"] == "device"
    assert "every tier above it failed" in r.headers["x-edgewise-route-reason"]
    await t.router.fleet.probe_once()  # one probe interval
    calls = t.switch.calls
    for _ in range(5):
        r = await t.client.post(CHAT, json={"model": "auto", "messages": MSG, "max_tokens": 3})
        assert r.status_code == 200 and r.headers["x-edgewise-tier"] == "device"
    assert t.switch.calls == calls  # no request wasted on the open breaker
    assert "skipped cloud (breaker open" in r.headers["x-edgewise-route-reason"]
    metrics = (await t.client.get("/metrics")).text
    assert 'edgewise_breaker_open{endpoint="http://cloud.test/v1",tier="cloud"} 1.0' in metrics
    # The tier comes back: the next probe closes the breaker and escalation resumes.
    t.switch.up = True
    await t.router.fleet.probe_once()
    r = await t.client.post(CHAT, json={"model": "auto", "messages": MSG, "max_tokens": 3})
    assert r.headers["x-edgewise-tier"] == "cloud"


async def test_no_eligible_tier_up_gives_503_or_a_durable_job(no_cascade: Tiered) -> None:
    t = no_cascade
    t.switch.up = False
    await t.router.fleet.probe_once()
    headers = {"x-edgewise-min-tier": "cloud"}
    r = await t.client.post(CHAT, json={"model": "auto", "messages": MSG}, headers=headers)
    assert r.status_code == 503 and r.headers["x-edgewise-tier"] == "none"
    assert "no eligible tier is reachable: cloud (breaker open" in r.json()["error"]["message"]
    assert "Retry-After" in r.headers
    r = await t.client.post(CHAT, json={"model": "auto", "messages": MSG, "max_tokens": 4},
                            headers={**headers, "x-edgewise-async": "true"})
    assert r.status_code == 202
    job_id = r.json()["id"]
    assert r.headers["location"] == f"/v1/edgewise/jobs/{job_id}"
    assert (await t.client.get(f"/v1/edgewise/jobs/{job_id}")).json()["status"] == "pending"
    assert await t.router.deliver_once() == 0  # still down: stays queued
    assert (await t.client.get(f"/v1/edgewise/jobs/{job_id}")).json()["status"] == "pending"
    t.switch.up = True
    await t.router.fleet.probe_once()
    assert await t.router.deliver_once() == 1
    job = (await t.client.get(f"/v1/edgewise/jobs/{job_id}")).json()
    assert job["status"] == "done" and job["tier"] == "cloud"
    assert job["result"]["choices"][0]["message"]["content"]
    assert job["result"]["usage"]["completion_tokens"] == 4
    assert (await t.client.get("/v1/edgewise/jobs/job-nope")).status_code == 404


def sse(text: str) -> list[Any]:
    return [b[6:] if b[6:] == "[DONE]" else json.loads(b[6:])
            for b in text.split("\n\n") if b.startswith("data: ")]


async def test_streaming_cascade_buffers_then_streams_the_top_tier(
        always_escalate: Tiered) -> None:
    r = await always_escalate.client.post(CHAT, json={
        "model": "auto", "messages": MSG, "max_tokens": 6, "stream": True,
        "stream_options": {"include_usage": True}})
    assert r.status_code == 200
    assert r.headers["x-edgewise-tier"] == "cloud"
    events = sse(r.text)
    assert events[-1] == "[DONE]"
    assert events[-2]["usage"]["completion_tokens"] == 6
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-2]
                   if e["choices"])
    plain = await always_escalate.client.post(CHAT, json={
        "model": "cloud", "messages": MSG, "max_tokens": 6, "temperature": 0})
    assert text and plain.status_code == 200


async def test_streaming_confident_answer_is_replayed(never_escalate: Tiered) -> None:
    r = await never_escalate.client.post(CHAT, json={
        "model": "auto", "messages": MSG, "max_tokens": 6, "stream": True, "temperature": 0,
        "logprobs": True})
    assert r.headers["x-edgewise-tier"] == "device"
    events = sse(r.text)
    streamed = [e for e in events[1:-2]]
    assert sum(len(e["choices"][0]["logprobs"]["content"]) for e in streamed) == 6
    full = await never_escalate.client.post(CHAT, json={
        "model": "auto", "messages": MSG, "max_tokens": 6, "temperature": 0})
    assert "".join(e["choices"][0]["delta"]["content"] for e in streamed) == \
        full.json()["choices"][0]["message"]["content"]


async def test_streaming_fails_over_before_the_first_byte(no_cascade: Tiered) -> None:
    t = no_cascade
    t.switch.up = False  # breaker still closed: the stream attempt itself fails
    r = await t.client.post(CHAT, json={"model": "auto", "messages": MSG, "max_tokens": 3,
                                        "stream": True},
                            headers={"x-edgewise-max-latency-ms": "1"})
    assert r.status_code == 200
    assert sse(r.text)[-1] == "[DONE]"


async def test_probe_treats_a_node_without_a_loaded_model_as_down(tmp_path: Any) -> None:
    loading = Node(make_config(), FakeEngine())  # never started: lists no models
    app = create_app(loading, manage_lifecycle=False)
    node = Node(tiered_config(tmp_path, cascade=False), FakeEngine())
    await node.start()
    fleet_app = create_app(node, manage_lifecycle=False,
                           transports={CLOUD_URL: httpx.ASGITransport(app=app)})
    router: Router = fleet_app.state.router
    await router.fleet.probe_once()
    cloud = router.fleet.endpoints["cloud"][0]
    assert cloud.breaker.state.value == "open"
    assert "no model loaded yet" in (cloud.breaker.last_error or "")
    await router.fleet.stop()
    await node.stop()


# -- confidence scorers through the router ------------------------------------------------

async def routed(tmp_path: Any, replies: list[str | None], body: dict[str, Any], **cascade: Any
                 ) -> tuple[httpx.Response, ScriptedEngine, Tiered]:
    engine = ScriptedEngine(replies, model="device-model")
    out = None
    async for t in make_tiered(tmp_path, device=engine, cascade=True, **cascade):
        out = await t.client.post(CHAT, json={"model": "auto", "messages": MSG, **body}), t
    assert out is not None  # the fleet was torn down when the loop ended
    return out[0], engine, out[1]


AGREEMENT = {"scorer": "agreement", "samples": 5, "sample_temperature": 0.9,
             "threshold": 0.6}  # keep with 3 of 5 samples agreeing


async def test_agreement_keeps_an_answer_its_samples_agree_with(tmp_path: Any) -> None:
    r, engine, t = await routed(
        tmp_path, ["6 * 7 = 42\n#### 42", "#### 42", "so 42", "#### 42.0", "#### 41"],
        {"max_tokens": 20, "temperature": 0, "seed": 7}, **AGREEMENT)
    assert r.status_code == 200, r.text
    assert r.headers["x-edgewise-tier"] == "device"
    assert r.json()["choices"][0]["message"]["content"] == "6 * 7 = 42\n#### 42"
    # Three samples agreed: 3/5 >= 0.6 whatever the other two say, so they were not drawn.
    assert float(r.headers["x-edgewise-confidence"]) == pytest.approx(0.6)
    assert [(p.temperature, p.seed) for p in engine.calls] == [
        (0.0, 7), (0.9, 8), (0.9, 9), (0.9, 10)]
    assert all(p.max_tokens == 20 for p in engine.calls)
    assert t.switch.calls == 0


async def test_agreement_escalates_an_answer_its_samples_disagree_with(tmp_path: Any) -> None:
    r, engine, t = await routed(
        tmp_path, ["#### 42", "#### 41", "#### 40", "#### 42", "#### 39", "#### 42"],
        {"max_tokens": 20}, **AGREEMENT)
    assert r.status_code == 200
    assert r.headers["x-edgewise-tier"] == "cloud"
    assert r.json()["model"] == "cloud-model"
    # 41, 40, 42, 39: after four samples at most 2/5 can agree (< 0.6): escalated.
    assert len(engine.calls) == 5
    assert "device: confidence 0.20 < 0.60, escalated" in r.headers["x-edgewise-route-reason"]
    assert t.switch.calls == 1


async def test_a_failed_sample_counts_as_disagreeing(tmp_path: Any) -> None:
    # Without the failure the second sample would agree (2/3 >= 0.6) and the answer stay.
    r, engine, _ = await routed(tmp_path, ["#### 5", "#### 5", None, "#### 5"],
                                {"max_tokens": 20}, scorer="agreement", samples=3,
                                threshold=0.6)
    assert r.headers["x-edgewise-tier"] == "cloud"
    assert len(engine.calls) == 3  # no sample after the failure
    assert "confidence 0.33 < 0.60" in r.headers["x-edgewise-route-reason"]


async def test_streaming_agreement_samples_before_the_first_byte(tmp_path: Any) -> None:
    r, engine, _ = await routed(tmp_path, ["#### 8", "#### 8"],
                                {"max_tokens": 20, "stream": True}, **AGREEMENT)
    assert r.headers["x-edgewise-tier"] == "device"
    assert float(r.headers["x-edgewise-confidence"]) == pytest.approx(0.6)
    events = sse(r.text)
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1]
                   if e["choices"]) == "#### 8"
    assert len(engine.calls) == 4


async def test_the_top_tier_is_never_sampled(tmp_path: Any) -> None:
    # Pinned to one tier: the plan has no tier above it, so nothing is scored or sampled.
    r, engine, _ = await routed(tmp_path, ["#### 1", "#### 2"],
                                {"max_tokens": 20, "model": "device"}, **AGREEMENT)
    assert r.headers["x-edgewise-tier"] == "device"
    assert "x-edgewise-confidence" not in r.headers
    assert len(engine.calls) == 1


async def test_margin_asks_for_alternatives_and_the_client_gets_what_it_asked(
        tmp_path: Any) -> None:
    # Every token at logprob -0.1, runner-up at -3.0: margin e^-0.1 - e^-3 = 0.855.
    r, engine, _ = await routed(tmp_path, ["#### 12"],
                                {"max_tokens": 20, "logprobs": True}, scorer="margin",
                                threshold=0.8)
    assert r.headers["x-edgewise-tier"] == "device"
    assert float(r.headers["x-edgewise-confidence"]) == pytest.approx(
        math.exp(-0.1) - math.exp(-3.0), abs=1e-3)
    assert engine.calls[0].top_logprobs == 2  # the scorer's need
    content = r.json()["choices"][0]["logprobs"]["content"]
    assert content and all(i["top_logprobs"] == [] for i in content)  # the client's
    r, _, _ = await routed(tmp_path, ["#### 12"], {"max_tokens": 20, "logprobs": True,
                                                   "top_logprobs": 1},
                           scorer="margin", threshold=0.9)
    assert r.headers["x-edgewise-tier"] == "cloud"  # 0.855 < 0.9
