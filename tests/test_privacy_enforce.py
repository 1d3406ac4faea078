"""The privacy guard's enforcement, end to end in-process: a device node (clearance phi)
whose cloud tier (clearance public) is a recording, echoing upstream. What reaches the
upstream is searched for the values; what reaches the client must have them restored.

Detection here is the small regex FakeDetector (these tests are about routing,
redaction and restoration); detection quality and the adversarial cases run against
the real Presidio guard in tests/test_privacy_leaks.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from edgewise.api.app import create_app
from edgewise.config import parse_config
from edgewise.engines.fake import FakeEngine
from edgewise.node import Node
from edgewise.privacy import Detection
from edgewise.routing.service import Router
from edgewise.testing.upstream import RecordingUpstream
from fake_detector import FakeDetector
from test_routing import Switch

CLOUD_URL = "http://cloud.test/v1"
CHAT = "/v1/chat/completions"
SECRET = "Patient Jane Doe (jane.doe@example.org, SSN 078-05-1120) asks about dosage."
VALUES = ("Jane Doe", "jane.doe@example.org", "078-05-1120")
KEY_A, KEY_B, KEY_PHI = "sk-test-a", "sk-test-b", "sk-test-phi"


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class Fleet:
    client: httpx.AsyncClient
    router: Router
    upstream: RecordingUpstream
    switch: Switch
    detector: FakeDetector


def config(tmp_path: Any, escalation: str, *, threshold: float = 0.999,
           keys: bool = False) -> Any:
    data: dict[str, Any] = {
        "node": {"name": "clinic-1"},
        "engine": {"kind": "fake", "n_ctx": 512},
        "tiers": [
            {"name": "device", "endpoints": [{"engine": "fake"}], "clearance": "phi"},
            {"name": "cloud", "endpoints": [{"url": CLOUD_URL}], "clearance": "public",
             "cost_per_1k_tokens": 0.6, "escalation": escalation},
        ],
        "routing": {"cascade": {"enabled": True, "threshold": threshold},
                    "health": {"probe_interval_s": 0.2, "failure_threshold": 1},
                    "jobs_path": str(tmp_path / "jobs.sqlite")},
        "audit": {"path": str(tmp_path / "audit.sqlite")},
    }
    if keys:
        data["auth"] = {"keys": [{"name": "app-a", "sha256": sha(KEY_A)},
                                 {"name": "app-b", "sha256": sha(KEY_B)},
                                 {"name": "ward", "sha256": sha(KEY_PHI),
                                  "sensitivity": "phi"}]}
    return parse_config(data)


async def make_fleet(cfg: Any, detector: FakeDetector | None = None
                     ) -> AsyncIterator[Fleet]:
    upstream = RecordingUpstream()
    switch = Switch(httpx.ASGITransport(app=upstream.app))
    node = Node(cfg, FakeEngine(model="device-model"))
    await node.start()
    detector = detector or FakeDetector()
    app = create_app(node, manage_lifecycle=False, transports={CLOUD_URL: switch},
                     detector=detector)
    router: Router = app.state.router
    router.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://device") as client:
        yield Fleet(client, router, upstream, switch, detector)
    await router.stop()
    await node.stop()


@pytest.fixture
async def redact_fleet(tmp_path: Any) -> AsyncIterator[Fleet]:
    async for f in make_fleet(config(tmp_path, "redact")):
        yield f


def ask(content: str = SECRET, **kw: Any) -> dict[str, Any]:
    return {"model": "auto", "max_tokens": 8,
            "messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": content}], **kw}


def sse_text(raw: str) -> tuple[str, list[str]]:
    pieces = []
    for line in raw.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            event = json.loads(line[6:])
            for c in event.get("choices", []):
                pieces.append(c["delta"].get("content") or "")
    return "".join(pieces), pieces


def assert_no_values(text: str) -> None:
    for v in VALUES:
        assert v not in text


async def test_redacted_escalation_round_trip(redact_fleet: Fleet) -> None:
    r = await redact_fleet.client.post(CHAT, json=ask(logprobs=True))
    assert r.status_code == 200, r.text
    assert r.headers["x-edgewise-tier"] == "cloud"
    assert r.headers["x-edgewise-sensitivity"] == "phi"
    assert r.headers["x-edgewise-redacted"] == "3"
    # the upstream saw placeholders only...
    sent = redact_fleet.upstream.received[-1]["messages"][1]["content"]
    assert sent == ("Patient <PERSON_1> (<EMAIL_ADDRESS_1>, SSN <US_SSN_1>) asks about "
                    "dosage.")
    assert_no_values(redact_fleet.upstream.seen())
    # ...and the client gets the original values back, without the redacted logprobs
    choice = r.json()["choices"][0]
    assert choice["message"]["content"] == "You said: " + SECRET
    assert choice["logprobs"] is None


async def test_redacted_streaming_round_trip_never_shows_a_placeholder(
        redact_fleet: Fleet) -> None:
    # cascade buffered: the device answer is scored first, then the cloud streams live
    r = await redact_fleet.client.post(CHAT, json=ask(stream=True))
    assert r.status_code == 200 and r.headers["x-edgewise-tier"] == "cloud"
    text, pieces = sse_text(r.text)
    assert text == "You said: " + SECRET
    assert not any("<" in p or "_1" in p for p in pieces)
    assert len([p for p in pieces if p]) > 5  # still streamed in pieces
    assert_no_values(redact_fleet.upstream.seen())


async def test_placeholders_are_stable_across_turns(redact_fleet: Fleet) -> None:
    history = [{"role": "user", "content": "I am Jane Doe."},
               {"role": "assistant", "content": "Hello Jane Doe."},
               {"role": "user", "content": "Mail John Smith and Jane Doe, patient."}]
    r = await redact_fleet.client.post(CHAT, json={"model": "auto", "messages": history})
    assert r.status_code == 200
    sent = [m["content"] for m in redact_fleet.upstream.received[-1]["messages"]]
    assert sent == ["I am <PERSON_1>.", "Hello <PERSON_1>.",
                    "Mail <PERSON_2> and <PERSON_1>, patient."]
    assert r.json()["choices"][0]["message"]["content"] == (
        "You said: Mail John Smith and Jane Doe, patient.")


async def test_public_text_goes_up_unredacted(redact_fleet: Fleet) -> None:
    r = await redact_fleet.client.post(CHAT, json=ask("What is the boiling point of water?"))
    assert r.headers["x-edgewise-tier"] == "cloud"
    assert r.headers["x-edgewise-sensitivity"] == "public"
    assert "x-edgewise-redacted" not in r.headers
    assert "boiling point" in redact_fleet.upstream.received[-1]["messages"][1]["content"]


async def test_forbid_keeps_sensitive_requests_below(tmp_path: Any) -> None:
    async for f in make_fleet(config(tmp_path, "forbid")):
        r = await f.client.post(CHAT, json=ask())
        assert r.status_code == 200 and r.headers["x-edgewise-tier"] == "device"
        assert f.upstream.received == []
        r = await f.client.post(CHAT, json={**ask(), "model": "cloud"})
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "clearance"
        assert r.json()["error"]["message"] == (
            "phi data may not be sent to cloud (clearance public, escalation forbid)")
        assert_no_values(r.text)
        assert f.upstream.received == []


async def test_allow_sends_as_is_and_says_so(tmp_path: Any) -> None:
    async for f in make_fleet(config(tmp_path, "allow")):
        r = await f.client.post(CHAT, json=ask())
        assert r.headers["x-edgewise-tier"] == "cloud"
        assert "Jane Doe" in f.upstream.seen()  # the operator accepted the risk
        assert "x-edgewise-redacted" not in r.headers


async def test_a_declared_label_is_not_lifted_by_redaction(redact_fleet: Fleet) -> None:
    r = await redact_fleet.client.post(CHAT, json=ask("Nothing to find here."),
                                       headers={"x-edgewise-sensitivity": "pii"})
    assert r.headers["x-edgewise-tier"] == "device"
    assert r.headers["x-edgewise-sensitivity"] == "pii"
    assert redact_fleet.upstream.received == []
    r = await redact_fleet.client.post(CHAT, json=ask("Nothing here.", model="cloud"),
                                       headers={"x-edgewise-sensitivity": "internal"})
    assert r.status_code == 403
    assert "a declared label is not lifted by redaction" in r.json()["error"]["message"]


class Stubborn(FakeDetector):
    """Finds the request phi even once redacted (a rule over the remaining text)."""

    def detect(self, segments: Any, declared: str | None = None) -> Detection:
        d = super().detect(segments, declared)
        return Detection.build(level="phi", detected="phi", declared=declared,
                               findings=d.findings, phi_rule=True, segments=d.segments)


async def test_a_tier_redaction_cannot_clear_is_skipped(tmp_path: Any) -> None:
    async for f in make_fleet(config(tmp_path, "redact"), Stubborn()):
        r = await f.client.post(CHAT, json=ask())
        assert r.status_code == 200
        assert r.headers["x-edgewise-tier"] == "device"  # the low-confidence answer
        reason = r.headers["x-edgewise-route-reason"]
        assert "cloud: redaction cannot bring the request within its clearance (public)" \
            in reason
        assert f.upstream.received == []


async def test_api_keys_identify_and_declare(tmp_path: Any) -> None:
    async for f in make_fleet(config(tmp_path, "redact", keys=True)):
        r = await f.client.post(CHAT, json=ask("hello"))
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_api_key"
        r = await f.client.post(CHAT, json=ask("hello"),
                                headers={"authorization": "Bearer nope"})
        assert r.status_code == 401 and "unknown API key" in r.json()["error"]["message"]
        r = await f.client.get("/healthz")
        assert r.status_code == 200  # health needs no key
        r = await f.client.post(CHAT, json=ask("hello"),
                                headers={"authorization": f"Bearer {KEY_A}"})
        assert r.status_code == 200 and r.headers["x-edgewise-tier"] == "cloud"
        # the ward key declares phi: nothing leaves the device, redacted or not
        r = await f.client.post(CHAT, json=ask("hello"),
                                headers={"authorization": f"Bearer {KEY_PHI}"})
        assert r.headers["x-edgewise-tier"] == "device"
        assert r.headers["x-edgewise-sensitivity"] == "phi"
        assert len(f.upstream.received) == 1


async def test_async_jobs_are_redacted_at_delivery_and_private_to_their_owner(
        tmp_path: Any) -> None:
    async for f in make_fleet(config(tmp_path, "redact", keys=True)):
        f.switch.up = False
        await f.router.fleet.probe_once()  # the cloud's breaker opens
        a = {"authorization": f"Bearer {KEY_A}"}
        r = await f.client.post(CHAT, json=ask(model="cloud"),
                                headers={**a, "x-edgewise-async": "true"})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        r = await f.client.get(f"/v1/edgewise/jobs/{job_id}",
                               headers={"authorization": f"Bearer {KEY_B}"})
        assert r.status_code == 404  # another client's job does not exist for it
        f.switch.up = True
        await f.router.fleet.probe_once()
        assert await f.router.deliver_once() == 1
        assert_no_values(f.upstream.seen())
        r = await f.client.get(f"/v1/edgewise/jobs/{job_id}", headers=a)
        body = r.json()
        assert body["status"] == "done" and body["tier"] == "cloud"
        assert body["result"]["choices"][0]["message"]["content"] == "You said: " + SECRET


async def test_guard_not_loaded_means_no_routing(tmp_path: Any) -> None:
    node = Node(config(tmp_path, "redact"), FakeEngine())
    await node.start()
    app = create_app(node, manage_lifecycle=False)  # no detector given, none loaded yet
    router: Router = app.state.router
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://device") as client:
        r = await client.post(CHAT, json=ask())
        assert r.status_code == 503
        assert r.json()["error"]["message"] == (
            "the privacy guard is still loading; retry in a moment")
        r = await client.get("/readyz")
        assert r.status_code == 503 and "privacy guard" in r.json()["reason"]
    assert not router.guard_ready
    await node.stop()


async def test_no_value_reaches_logs_metrics_or_errors(redact_fleet: Fleet,
                                                       caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    caplog.set_level(logging.DEBUG)
    for body in (ask(), ask(stream=True), {**ask(), "model": "nope"},
                 {**ask(), "max_tokens": -1}, {**ask(), "temperature": "hot"}):
        r = await redact_fleet.client.post(CHAT, json=body)
        if r.status_code >= 400:
            assert_no_values(r.text)
    redact_fleet.switch.up = False  # a failing upstream: failover notes and warnings
    r = await redact_fleet.client.post(CHAT, json=ask())
    assert r.status_code == 200
    assert_no_values(r.headers.get("x-edgewise-route-reason", ""))
    assert_no_values("\n".join(rec.getMessage() for rec in caplog.records))
    metrics = (await redact_fleet.client.get("/metrics")).text
    assert_no_values(metrics)


TOOLS = [{"type": "function", "function": {
    "name": "lookup_patient", "description": "Find a patient record.",
    "parameters": {"type": "object", "properties": {"email": {"type": "string"}}}}}]
AGENT = [
    {"role": "user", "content": "Find the record and summarise it."},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {
            "name": "lookup_patient",
            "arguments": json.dumps({"email": "jane.doe@example.org", "note": 'say "hi"'})}}]},
    {"role": "tool", "tool_call_id": "call_1",
     "content": json.dumps({"name": "Jane Doe", "ssn": "078-05-1120", "ward": "B"})},
    {"role": "user", "content": "Now email Jane Doe the summary, patient follow-up."},
]


async def test_tool_arguments_and_results_are_redacted_and_restored(
        redact_fleet: Fleet) -> None:
    for stream in (False, True):
        r = await redact_fleet.client.post(CHAT, json={
            "model": "auto", "messages": AGENT, "tools": TOOLS, "stream": stream})
        assert r.status_code == 200, r.text
        assert r.headers["x-edgewise-tier"] == "cloud"  # the local engine calls no tools
        sent = redact_fleet.upstream.received[-1]
        assert_no_values(redact_fleet.upstream.seen())
        args = json.loads(sent["messages"][1]["tool_calls"][0]["function"]["arguments"])
        assert args == {"email": "<EMAIL_ADDRESS_1>", "note": 'say "hi"'}
        assert json.loads(sent["messages"][2]["content"]) == {
            "name": "<PERSON_1>", "ssn": "<US_SSN_1>", "ward": "B"}
        assert sent["messages"][2]["tool_call_id"] == "call_1"
        assert sent["tools"] == TOOLS
        if stream:
            pieces = [t for line in r.text.splitlines()
                      if line.startswith("data: {")
                      for c in json.loads(line[6:])["choices"]
                      for t in c["delta"].get("tool_calls") or ()]
            # OpenAI's shape: id, type and name first, then the arguments in pieces
            assert pieces[0]["id"] and pieces[0]["type"] == "function"
            call = {"function": {
                "name": pieces[0]["function"]["name"],
                "arguments": "".join(p["function"].get("arguments", "") for p in pieces
                                     if p["index"] == 0)}}
            finish = [c["finish_reason"] for line in r.text.splitlines()
                      if line.startswith("data: {")
                      for c in json.loads(line[6:])["choices"] if c["finish_reason"]]
            assert finish == ["tool_calls"]
        else:
            choice = r.json()["choices"][0]
            assert choice["finish_reason"] == "tool_calls"
            assert choice["message"]["content"] is None
            call = choice["message"]["tool_calls"][0]
        assert call["function"]["name"] == "lookup_patient"
        echoed = json.loads(call["function"]["arguments"])["echo"]
        assert echoed == "You said: Now email Jane Doe the summary, patient follow-up."


async def test_a_node_without_remote_tiers_refuses_tool_traffic(client: httpx.AsyncClient
                                                                ) -> None:
    r = await client.post(CHAT, json={"model": "auto", "messages": AGENT})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "messages[1]"
    r = await client.post(CHAT, json={"model": "auto", "messages": AGENT[:1], "tools": TOOLS})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools"


async def test_tool_message_shapes_are_checked(redact_fleet: Fleet) -> None:
    bad = [({"role": "tool", "content": "x"}, "messages[0].tool_call_id"),
           ({"role": "user", "content": None}, "messages[0].content"),
           ({"role": "user", "content": "x", "tool_calls": AGENT[1]["tool_calls"]},
            "messages[0].tool_calls")]
    for message, param in bad:
        r = await redact_fleet.client.post(CHAT, json={"model": "auto", "messages": [message]})
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


async def test_tool_requests_need_a_tier_that_calls_functions(tmp_path: Any) -> None:
    async for f in make_fleet(config(tmp_path, "forbid")):
        r = await f.client.post(CHAT, json={"model": "auto", "messages": AGENT, "tools": TOOLS})
        assert r.status_code == 403  # phi: only the device, which cannot call tools
        assert r.json()["error"]["message"] == (
            "phi data may not be sent to cloud, the only tiers that call functions "
            "(clearance too low)")
        r = await f.client.post(CHAT, json={
            "model": "device", "messages": [{"role": "user", "content": "hi"}],
            "tools": TOOLS})
        assert r.status_code == 400
        assert r.json()["error"]["message"] == (
            "the request uses tools and no eligible tier calls functions (a local llama.cpp "
            "engine or a remote tier does)")


def test_redaction_that_would_break_tool_json_is_refused() -> None:
    from edgewise.chat import ChatRequest, Message, ToolCall
    from edgewise.privacy.enforce import segments_of, with_segments

    req = ChatRequest((Message("user", "hi", name="jane_doe"),
                       Message("assistant", "", tool_calls=(
                           ToolCall("c1", "f", '{"a": "Jane Doe"}'),))))
    assert segments_of(req) == ["hi", "jane_doe", "", "f", '{"a": "Jane Doe"}']
    ok = with_segments(req, ["hi", "<PERSON_1>", "", "f", '{"a": "<PERSON_1>"}'])
    assert ok.messages[1].tool_calls[0].arguments == '{"a": "<PERSON_1>"}'
    assert ok.messages[0].name is None  # a redacted name is dropped, not sent
    assert with_segments(req, segments_of(req)).messages[0].name == "jane_doe"
    with pytest.raises(ValueError, match="break the JSON"):
        with_segments(req, ["hi", "jane_doe", "", "f", '{"a": "<PERSON_1>}'])
    with pytest.raises(ValueError, match="rename a tool call"):
        with_segments(req, ["hi", "jane_doe", "", "<X_1>", '{"a": "x"}'])


async def test_a_node_never_queues_data_above_its_own_clearance(tmp_path: Any) -> None:
    """A gateway cleared for pii holds phi only in memory: it refuses to persist it."""
    cfg = config(tmp_path, "redact")
    cfg.tiers[0].clearance = "pii"
    async for f in make_fleet(cfg):
        f.switch.up = False
        await f.router.fleet.probe_once()
        r = await f.client.post(CHAT, json=ask(model="cloud"),
                                headers={"x-edgewise-async": "true"})
        assert r.status_code == 503
        assert r.json()["error"]["message"] == (
            "phi data cannot be queued on this node (its own tier is cleared for pii); retry "
            "when an eligible tier is up, or send it to a node cleared for it")
        assert f.router.jobs is not None and f.router.jobs.claim(limit=10) == []
        r = await f.client.post(CHAT, json=ask("A public question.", model="cloud"),
                                headers={"x-edgewise-async": "true"})
        assert r.status_code == 202  # what it may hold, it queues


def audit_rows(f: Fleet) -> list[Any]:
    assert f.router.audit is not None
    return [e.record for e in f.router.audit.query()]


async def test_every_routing_decision_is_audited_without_values(tmp_path: Any) -> None:
    from edgewise.security import AuditLog

    async for f in make_fleet(config(tmp_path, "redact", keys=True)):
        a = {"authorization": f"Bearer {KEY_A}"}
        assert (await f.client.post(CHAT, json=ask(), headers=a)).status_code == 200
        r = await f.client.post(CHAT, json=ask(stream=True), headers=a)
        assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")
        r = await f.client.post(CHAT, json={**ask(), "model": "nope"}, headers=a)
        assert r.status_code == 404
        f.switch.up = False
        await f.router.fleet.probe_once()
        r = await f.client.post(CHAT, json=ask(model="cloud"),
                                headers={**a, "x-edgewise-async": "true"})
        assert r.status_code == 202
        f.switch.up = True
        await f.router.fleet.probe_once()
        assert await f.router.deliver_once() == 1
        for _ in range(50):  # the stream's record is written as the stream ends
            if len(audit_rows(f)) == 5:
                break
            await asyncio.sleep(0.01)
        rows = audit_rows(f)
        # the stream's record lands when its background append runs: order aside, these
        assert sorted(r.outcome for r in rows) == [
            "answered", "answered", "answered", "queued", "refused:model_not_found"]
        answered = rows[0]
        assert answered.requester == "app-a"
        assert (answered.declared_level, answered.detected_level) == ("public", "phi")
        assert dict(answered.entities) == {"EMAIL_ADDRESS": 1, "PERSON": 1, "US_SSN": 1}
        assert answered.tier == "cloud" and answered.plan == ("device", "cloud")
        assert answered.escalations == 1
        assert answered.redaction.placeholders == 3 and answered.redaction.tiers == ("cloud",)
        assert {r.outcome for r in rows if r.request_id.startswith("job-")} == {
            "queued", "answered"}
        path = f.router.audit.path
    raw = path.read_bytes() + b"".join(
        p.read_bytes() for p in path.parent.glob(path.name + "-*"))
    for v in VALUES:
        assert v.encode() not in raw
    with AuditLog(path, readonly=True) as log:
        report = log.verify()
    assert report.ok and report.records == 5, str(report)


async def test_allow_overrides_are_audited(tmp_path: Any) -> None:
    async for f in make_fleet(config(tmp_path, "allow")):
        assert (await f.client.post(CHAT, json=ask())).status_code == 200
        (rec,) = audit_rows(f)
        assert rec.clearance_override == ("cloud",) and rec.redaction.placeholders == 0


async def test_a_failing_audit_log_makes_the_node_not_ready(redact_fleet: Fleet,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    from edgewise.errors import AuditError

    def broken(record: Any) -> tuple[int, str]:
        raise AuditError("audit.sqlite: disk full; free space")

    assert redact_fleet.router.audit is not None
    monkeypatch.setattr(redact_fleet.router.audit, "append", broken)
    r = await redact_fleet.client.post(CHAT, json=ask())
    assert r.status_code == 200  # the answer exists; the failure is reported elsewhere
    ready = await redact_fleet.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["reason"] == "the audit log cannot be written: audit.sqlite: disk " \
                                     "full; free space"
    assert "edgewise_audit_failures_total 1.0" in (
        await redact_fleet.client.get("/metrics")).text
    monkeypatch.undo()
    await redact_fleet.client.post(CHAT, json=ask())
    assert (await redact_fleet.client.get("/readyz")).status_code == 200


class Broken(FakeDetector):
    def detect(self, segments: Any, declared: str | None = None) -> Detection:
        from edgewise.errors import EdgewiseError

        raise EdgewiseError("NLP pipeline failed")


async def test_a_failing_guard_fails_closed(tmp_path: Any) -> None:
    async for f in make_fleet(config(tmp_path, "allow"), Broken()):
        r = await f.client.post(CHAT, json=ask())
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "privacy_guard_failed"
        assert f.upstream.received == []
        (rec,) = audit_rows(f)
        assert rec.outcome == "refused:privacy_guard_failed"
