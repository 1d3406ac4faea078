"""Bad input gets a clear 4xx in OpenAI's error shape, and the node keeps serving."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

CHAT = "/v1/chat/completions"
MSG = [{"role": "user", "content": "hi"}]


def assert_error(r: httpx.Response, status: int, *, param: str | None = "__any__",
                 contains: str = "") -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"] and "\n" not in err["message"]
    assert "Traceback" not in r.text
    if param != "__any__":
        assert err["param"] == param
    assert contains in err["message"]
    return dict(err)


async def still_serving(client: httpx.AsyncClient) -> None:
    r = await client.post(CHAT, json={"model": "auto", "messages": MSG, "max_tokens": 2})
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("payload", "param", "fragment"),
    [
        ({"messages": MSG}, "model", "missing required parameter 'model'"),
        ({"model": "auto"}, "messages", "missing required parameter 'messages'"),
        ({"model": "auto", "messages": []}, "messages", "at least 1"),
        ({"model": "auto", "messages": "hi"}, "messages", "invalid value"),
        ({"model": "auto", "messages": [{"role": "wizard", "content": "x"}]},
         "messages[0].role", "'system'"),
        ({"model": "auto", "messages": [{"role": "user"}]}, "messages[0].content", "missing"),
        ({"model": "auto", "messages": [{"role": "user", "content": 5}]},
         "messages[0].content", "invalid value"),
        ({"model": 7, "messages": MSG}, "model", "invalid value"),
        ({"model": "auto", "messages": MSG, "max_tokens": 0}, "max_tokens", "greater than"),
        ({"model": "auto", "messages": MSG, "max_tokens": -5}, "max_tokens", "greater than"),
        ({"model": "auto", "messages": MSG, "max_tokens": "ten"}, "max_tokens", "integer"),
        ({"model": "auto", "messages": MSG, "temperature": 3}, "temperature", "less than"),
        ({"model": "auto", "messages": MSG, "temperature": "0.5"}, "temperature", "number"),
        ({"model": "auto", "messages": MSG, "top_p": 1.5}, "top_p", "less than"),
        ({"model": "auto", "messages": MSG, "top_logprobs": 50}, "top_logprobs", "less than"),
        ({"model": "auto", "messages": MSG, "stop": ["a", "b", "c", "d", "e"]}, "stop", "4"),
        ({"model": "auto", "messages": MSG, "stream": "yes"}, "stream", "boolean"),
    ],
)
async def test_validation_errors_are_400_with_param(
    client: httpx.AsyncClient, payload: dict[str, Any], param: str, fragment: str
) -> None:
    r = await client.post(CHAT, json=payload)
    err = assert_error(r, 400, param=param, contains=fragment)
    assert err["type"] == "invalid_request_error"
    await still_serving(client)


@pytest.mark.parametrize(
    ("payload", "param", "fragment"),
    [
        ({"n": 2, "stream": True}, "n", "n > 1 with stream: true is not supported"),
        ({"tool_choice": "auto"}, "tool_choice", "needs tools"),
        ({"tools": [{"type": "function", "function": {"name": "a b"}}]},
         "tools[0].function.name", "letters, digits"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "tools"),
        ({"logit_bias": {"5": 1.0}}, "logit_bias", "send response_format with a json_schema"),
        ({"functions": [{"name": "f", "parameters": {}}]}, "functions", "send `tools`"),
        ({"response_format": {"type": "json_object"}}, "response_format",
         "cannot constrain decoding"),  # the fake engine has no grammar sampler
        ({"response_format": {"type": "xml"}}, "response_format.type", "'xml' is not"),
        ({"response_format": {"type": "json_schema", "json_schema": {
            "name": "n", "schema": {"type": "object", "properties": {
                "n": {"type": "number", "minimum": 0}}}}}},
         "response_format.json_schema.schema", "schema.properties.n.minimum"),
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
         "response_format.json_schema.name", "name is required"),
        ({"top_logprobs": 2}, "top_logprobs", "requires logprobs=true"),
        ({"stop": [""]}, "stop", "must not be empty"),
    ],
)
async def test_unsupported_features_are_refused_not_ignored(
    client: httpx.AsyncClient, payload: dict[str, Any], param: str, fragment: str
) -> None:
    r = await client.post(CHAT, json={"model": "auto", "messages": MSG, **payload})
    assert_error(r, 400, param=param, contains=fragment)


@pytest.mark.parametrize(("payload", "param", "fragment"), [
    ({"suffix": "}"}, "suffix", "send the text before and after the gap"),
    ({"best_of": 3}, "best_of", "send n with logprobs"),
    ({"n": 2, "stream": True}, "n", "send stream: false"),
])
async def test_unsupported_completion_features_name_the_alternative(
    client: httpx.AsyncClient, payload: dict[str, Any], param: str, fragment: str
) -> None:
    r = await client.post("/v1/completions", json={"model": "auto", "prompt": "x", **payload})
    assert_error(r, 400, param=param, contains=fragment)


async def test_unknown_model_is_404_and_lists_what_is_served(
        client: httpx.AsyncClient) -> None:
    r = await client.post(CHAT, json={"model": "gpt-4o", "messages": MSG})
    err = assert_error(r, 404, param="model", contains="'fake-tiny'")
    assert err["code"] == "model_not_found"


async def test_prompt_longer_than_context(client: httpx.AsyncClient) -> None:
    long = [{"role": "user", "content": "x" * 5000}]  # n_ctx is 512 byte-tokens
    r = await client.post(CHAT, json={"model": "auto", "messages": long})
    err = assert_error(r, 400, param="messages", contains="context window is 512 tokens")
    assert err["code"] == "context_length_exceeded"
    r = await client.post("/v1/completions", json={"model": "auto", "prompt": "y" * 5000})
    assert_error(r, 400, param="prompt", contains="context window")
    await still_serving(client)


async def test_absurd_max_tokens(client: httpx.AsyncClient) -> None:
    r = await client.post(CHAT, json={"model": "auto", "messages": MSG,
                                      "max_tokens": 10**9})
    assert_error(r, 400, param="max_tokens", contains="larger than this node allows")
    r = await client.post(CHAT, json={"model": "auto", "messages": MSG,
                                      "max_completion_tokens": 10**9})
    assert_error(r, 400, param="max_completion_tokens")


async def test_max_tokens_beyond_remaining_context_stops_at_the_window(
        client: httpx.AsyncClient) -> None:
    # 500 fits the window (512) but not after the prompt: answer until the window is full.
    r = await client.post("/v1/completions", json={"model": "auto", "prompt": "z" * 480,
                                                   "max_tokens": 500, "temperature": 0})
    assert r.status_code == 200
    usage = r.json()["usage"]
    assert usage["prompt_tokens"] + usage["completion_tokens"] <= 512


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"model": "auto", "messages": [', "not valid JSON"),
        (b"", "request body is empty"),
        (b"[1, 2, 3]", "must be a JSON object"),
        (b"null", ""),
        (b'{"model": "auto", "messages": [{"role": "user", "content": "\xff\xfe"}]}', ""),
        (b"\xff\xfe\xfd", ""),
        (b'{"model": "auto", "messages": [{"role": "user", "content": "\\ud800"}]}',
         "invalid Unicode"),
    ],
)
async def test_malformed_bodies(client: httpx.AsyncClient, content: bytes, fragment: str
                                ) -> None:
    r = await client.post(CHAT, content=content, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    assert_error(r, r.status_code, contains=fragment)
    await still_serving(client)


async def test_lone_surrogates_are_refused_everywhere(client: httpx.AsyncClient) -> None:
    for path, body in [
        (CHAT, b'{"model":"auto","messages":[{"role":"user","content":"a\\udc80b"}]}'),
        (CHAT, b'{"model":"auto","messages":[{"role":"user","content":"a"}],"stop":"\\ud800"}'),
        ("/v1/completions", b'{"model":"auto","prompt":"\\udfff"}'),
    ]:
        r = await client.post(path, content=body, headers={"content-type": "application/json"})
        assert_error(r, 400, contains="invalid Unicode")
    await still_serving(client)


async def test_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    big = {"model": "auto", "messages": [{"role": "user", "content": "a" * (5 * 2**20)}]}
    r = await client.post(CHAT, json=big)
    err = assert_error(r, 413, contains="larger than the node's limit")
    assert err["code"] == "payload_too_large"
    await still_serving(client)


async def test_oversized_chunked_body_is_413(client: httpx.AsyncClient) -> None:
    async def gen():  # type: ignore[no-untyped-def]
        for _ in range(6):
            yield b"a" * 2**20

    r = await client.post(CHAT, content=gen(), headers={"content-type": "application/json"})
    assert_error(r, 413)


async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/nothing"), 404, contains="no route GET /v1/nothing")
    assert_error(await client.get(CHAT), 405, contains="not allowed")


async def test_error_messages_do_not_echo_request_content(client: httpx.AsyncClient) -> None:
    secret = "patient John Smith MRN 12345678"
    bad = [
        {"model": secret, "messages": MSG},
        {"model": "auto", "messages": [{"role": secret, "content": secret}]},
        {"model": "auto", "messages": [{"role": "user", "content": secret * 400}]},
    ]
    for payload in bad:
        r = await client.post(CHAT, json=payload)
        assert r.status_code >= 400
        assert "John Smith" not in r.text and "12345678" not in r.text, r.text
