"""Adversarial leak tests with the real privacy guard (Presidio + the offline spaCy
model): a device node (clearance phi) whose cloud tier (clearance public) is a recording,
echoing upstream. For each case, nothing the guard claims to cover may reach the
upstream — in any spelling (spaced or fullwidth digits, look-alike letters, zero-width
characters) — streaming or not; with `redact` the client still gets its values back,
and with `forbid` the upstream gets nothing at all.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from edgewise.api.app import create_app
from edgewise.config import parse_config
from edgewise.engines.fake import FakeEngine
from edgewise.node import Node
from edgewise.routing.service import Router
from edgewise.testing.answers import answer_text
from edgewise.testing.leaks import leaked
from edgewise.testing.upstream import RecordingUpstream
from privacy_helpers import default_detector

CLOUD_URL = "http://cloud.test/v1"
CHAT = "/v1/chat/completions"


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def call(args: dict[str, Any], name: str = "lookup") -> dict[str, Any]:
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": name, "arguments": json.dumps(args)}}]}


TOOLS = [{"type": "function", "function": {
    "name": "lookup", "description": "Look a record up.",
    "parameters": {"type": "object", "properties": {}}}}]


@dataclass(frozen=True)
class Case:
    name: str
    messages: list[dict[str, Any]]
    #: Values that must never reach the upstream (checked in every spelling).
    values: tuple[str, ...]
    tools: bool = False


CASES = [
    Case("split across messages",
         [user("Charge my card 4111 1111"), user("1111 1111 for the co-pay, please.")],
         ("4111111111111111", "41111111")),
    Case("in the system prompt",
         [{"role": "system", "content": "You help the clinic. Current patient: MRN "
                                        "00482913, email m.garcia@clinic-mail.com."},
          user("Summarise the follow-up plan in one line.")],
         ("00482913", "m.garcia@clinic-mail.com")),
    Case("spaced digits",
         [user("My social security number is 0 7 8 - 0 5 - 1 1 2 0, update it.")],
         ("078051120",)),
    Case("fullwidth digits and look-alike letters",
         [user("SSN ０７８-０５-１１２０; write to jоhn.smith@exаmple.com")],  # Cyrillic о, а
         ("078051120", "john.smith@example.com")),
    Case("zero-width characters",
         [user("Card 4111\u200b1111\u200b1111\u200b1111 expires soon.")],
         ("4111111111111111",)),
    Case("inside a JSON block",
         [user('Fix this record:\n```json\n{"email": "rchen@mail.com", "phone": '
               '"+1 415-555-0132", "iban": "DE89 3704 0044 0532 0130 00"}\n```')],
         ("rchen@mail.com", "4155550132", "DE89370400440532013000")),
    Case("inside a code block",
         [user("Why does this fail?\n```python\nimport boto3\n"
               's3 = boto3.client("s3", aws_access_key_id="AKIAIOSFODNN7EXAMPLE")\n'
               'gh = Github("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")\n```')],
         ("AKIAIOSFODNN7EXAMPLE", "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")),
    Case("in tool arguments and results",
         [user("Find the patient record."),
          call({"email": "jane.roe@example.org", "phone": "(212) 555-0199"}),
          {"role": "tool", "tool_call_id": "call_1",
           "content": json.dumps({"ssn": "219-09-9999", "mrn": "MRN 7734521"})},
          user("Summarise it.")],
         ("jane.roe@example.org", "2125550199", "219099999", "7734521"), tools=True),
    Case("JSON unicode escapes",
         [user('payload: {"contact": "ops\\u0040acme-corp.com", "card": "5555\\u00205555'
               '\\u00205555\\u00204444"}')],
         ("ops@acme-corp.com", "5555555555554444")),
]


@dataclass
class Fleet:
    client: httpx.AsyncClient
    router: Router
    upstream: RecordingUpstream


async def make_fleet(tmp_path: Any, escalation: str) -> AsyncIterator[Fleet]:
    cfg = parse_config({
        "node": {"name": "clinic-1"},
        "engine": {"kind": "fake", "n_ctx": 4096},
        "tiers": [
            {"name": "device", "endpoints": [{"engine": "fake"}], "clearance": "phi"},
            {"name": "cloud", "endpoints": [{"url": CLOUD_URL}], "clearance": "public",
             "cost_per_1k_tokens": 0.6, "escalation": escalation},
        ],
        "routing": {"cascade": {"enabled": True, "threshold": 0.999},
                    "jobs_path": str(tmp_path / "jobs.sqlite")},
        "audit": {"path": str(tmp_path / "audit.sqlite")},
    })
    upstream = RecordingUpstream()
    node = Node(cfg, FakeEngine(model="device-model", n_ctx=4096))
    await node.start()
    app = create_app(node, manage_lifecycle=False,
                     transports={CLOUD_URL: httpx.ASGITransport(app=upstream.app)},
                     detector=default_detector())
    router: Router = app.state.router
    router.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://device") as client:
        yield Fleet(client, router, upstream)
    await router.stop()
    await node.stop()


@pytest.fixture
async def redacting(tmp_path: Any) -> AsyncIterator[Fleet]:
    async for f in make_fleet(tmp_path, "redact"):
        yield f


def _body(case: Case, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "auto", "messages": case.messages, "max_tokens": 16,
                            "stream": stream}
    if case.tools:
        body["tools"] = TOOLS
    return body


def test_the_leak_check_itself_sees_every_spelling() -> None:
    for value, spelling in [("078051120", "SSN ０７８-０５-１１２０"),
                            ("4111111111111111", "4111\u200b1111 1111-1111"),
                            ("john.smith@example.com", "jоhn.smith@exаmple.com"),
                            ("ops@acme-corp.com", '"ops\\u0040acme-corp.com"'),
                            ("ops@acme-corp.com", '"ops\\\\u0040acme-corp.com"'),
                            ("DE89370400440532013000", "DE89 3704 0044 0532 0130 00")]:
        assert leaked(value, spelling), (value, spelling)
    assert not leaked("078051120", "<US_SSN_1> and 078-05")
    assert not leaked("Al Smith", "Alice Smithers") and leaked("Al Smith", "dear al smith,")
    assert leaked("DE89 3704 0044 0532 0130 00", "D E 8 9 3704 0044 0532 0130 00")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_nothing_leaks_and_the_client_gets_its_values_back(
        redacting: Fleet, case: Case, stream: bool) -> None:
    r = await redacting.client.post(CHAT, json=_body(case, stream))
    assert r.status_code == 200, r.text
    assert r.headers["x-edgewise-tier"] == "cloud", r.headers.get("x-edgewise-route-reason")
    received = redacting.upstream.seen()
    assert received, "the upstream was never asked"
    for value in case.values:
        assert not leaked(value, received), f"{case.name}: a value reached the upstream"
    # the upstream echoes the last user message: the client sees it restored, exactly
    last_user = next(m["content"] for m in reversed(case.messages) if m["role"] == "user")
    assert "You said: " + last_user in answer_text(r.text, stream=stream)
    assert "<" not in answer_text(r.text, stream=stream).replace("<", "", last_user.count("<"))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_forbid_sends_nothing_sensitive_up(tmp_path: Any, case: Case) -> None:
    async for f in make_fleet(tmp_path, "forbid"):
        r = await f.client.post(CHAT, json=_body(case, False))
        assert r.status_code in (200, 403), r.text
        for value in case.values:
            assert not leaked(value, f.upstream.seen())
        if r.status_code == 200:
            assert r.headers["x-edgewise-tier"] == "device"


async def test_nothing_leaks_into_logs_errors_or_the_audit_log(
        redacting: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    for case in CASES:
        await redacting.client.post(CHAT, json=_body(case, False))
        r = await redacting.client.post(CHAT, json={**_body(case, False), "model": "cloud"},
                                        headers={"x-edgewise-sensitivity": "phi"})
        assert r.status_code == 403
        for value in case.values:
            assert not leaked(value, r.text)
    logs = "\n".join(rec.getMessage() for rec in caplog.records)
    metrics = (await redacting.client.get("/metrics")).text
    assert redacting.router.audit is not None
    path = redacting.router.audit.path
    audit = "".join(p.read_bytes().decode("latin-1")
                    for p in path.parent.glob(path.name + "*"))
    for case in CASES:
        for value in case.values:
            assert not leaked(value, logs) and not leaked(value, metrics)
            assert not leaked(value, audit)
