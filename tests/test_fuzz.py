"""Property-based passes: schemathesis over the node's OpenAPI schema against a running
server, and Hypothesis-generated JSON / bytes thrown at the endpoints. The node must
answer every one of them without a 5xx, in OpenAI's error shape, and keep serving."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import LiveServer, make_config
from edgewise.api.app import create_app
from edgewise.engines.fake import FakeEngine
from edgewise.node import Node

schema = schemathesis.openapi.from_dict(
    create_app(Node(make_config(), FakeEngine()), manage_lifecycle=False).openapi()
)


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[LiveServer]:
    engine = FakeEngine(n_ctx=512, eos_after=8)
    node = Node(make_config(serving={"max_queue": 64, "max_body_bytes": 65536}), engine)
    with LiveServer(node) as server:
        yield server


def check_response(r: httpx.Response | Any) -> None:
    assert r.status_code < 500, f"{r.status_code}: {r.text[:500]}"
    node_header = r.headers.get("x-edgewise-node")
    assert node_header in ("test-node", ["test-node"])  # schemathesis lists header values
    if r.status_code >= 400:
        err = r.json()["error"]
        assert isinstance(err["message"], str) and err["message"]
        assert "Traceback" not in r.text


@schema.parametrize()
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_schemathesis_no_server_errors(case: schemathesis.Case, fuzz_server: LiveServer
                                       ) -> None:
    response = case.call(base_url=fuzz_server.url, timeout=30)
    check_response(response)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
messages = st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", ""]),
     "content": st.one_of(st.text(max_size=50), st.integers(), st.none())}), max_size=3)
chat_bodies = st.fixed_dictionaries(
    {"model": st.sampled_from(["auto", "fake-tiny", "nope", ""]), "messages": messages},
    optional={"max_tokens": st.integers(-5, 10**7), "temperature": st.floats(-1, 3),
              "top_p": st.floats(-1, 2), "stream": st.booleans(), "logprobs": st.booleans(),
              "top_logprobs": st.integers(-1, 30), "seed": st.integers(-(2**70), 2**70),
              "stop": st.one_of(st.text(max_size=5), st.lists(st.text(max_size=5),
                                                               max_size=6)),
              "n": st.integers(-1, 3), "extra": json_values},
)


@given(payload=chat_bodies)
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_random_chat_bodies(payload: dict[str, Any], fuzz_server: LiveServer) -> None:
    r = httpx.post(fuzz_server.url + "/v1/chat/completions", json=payload, timeout=30)
    check_response(r)


@given(raw=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_random_bytes(raw: bytes, fuzz_server: LiveServer) -> None:
    for path in ("/v1/chat/completions", "/v1/completions"):
        r = httpx.post(fuzz_server.url + path, content=raw, timeout=30,
                       headers={"content-type": "application/json"})
        check_response(r)
    assert httpx.get(fuzz_server.url + "/readyz").status_code == 200
