"""The OpenAI-compatible API over the fake engine, in-process (httpx.ASGITransport)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from edgewise.api.app import create_app
from edgewise.node import Node

CHAT = "/v1/chat/completions"


def sse_events(body: str) -> list[Any]:
    events = []
    for block in body.split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


async def test_chat_completion_shape_and_usage(client: httpx.AsyncClient) -> None:
    r = await client.post(CHAT, json={
        "model": "fake-tiny", "max_tokens": 8, "temperature": 0,
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "Hello"}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "fake-tiny"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    assert choice["finish_reason"] == "length"
    assert choice["logprobs"] is None
    usage = body["usage"]
    assert usage["completion_tokens"] == 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + 8
    assert r.headers["x-edgewise-node"] == "test-node"
    assert r.headers["x-edgewise-tier"] == "device"


async def test_every_response_has_node_headers(client: httpx.AsyncClient) -> None:
    for method, path in [("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/v1/models"),
                         ("GET", "/metrics"), ("GET", "/nope"), ("POST", CHAT)]:
        r = await client.request(method, path, json={} if method == "POST" else None)
        assert r.headers["x-edgewise-node"] == "test-node", path
        assert r.headers["x-edgewise-tier"] == "device", path


async def test_model_aliases_are_accepted(client: httpx.AsyncClient) -> None:
    for name in ("auto", "default", "device", "fake-tiny"):
        r = await client.post(CHAT, json={"model": name, "max_tokens": 2,
                                          "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200, (name, r.text)


async def test_greedy_is_deterministic_and_seed_reproduces(client: httpx.AsyncClient) -> None:
    async def ask(**kw: Any) -> str:
        r = await client.post(CHAT, json={"model": "auto", "max_tokens": 12,
                                          "messages": [{"role": "user", "content": "hi"}], **kw})
        return str(r.json()["choices"][0]["message"]["content"])

    assert await ask(temperature=0) == await ask(temperature=0)
    assert await ask(temperature=1, seed=5) == await ask(temperature=1, seed=5)
    outs = {await ask(temperature=1, seed=s) for s in range(6)}
    assert len(outs) > 1


async def test_stop_strings(client: httpx.AsyncClient) -> None:
    r = await client.post(CHAT, json={"model": "auto", "max_tokens": 40, "temperature": 0,
                                      "messages": [{"role": "user", "content": "hi"}]})
    full = r.json()["choices"][0]["message"]["content"]
    cut_at = full[len(full) // 2:].split()[0]
    r = await client.post(CHAT, json={"model": "auto", "max_tokens": 40, "temperature": 0,
                                      "stop": [cut_at],
                                      "messages": [{"role": "user", "content": "hi"}]})
    stopped = r.json()["choices"][0]
    assert stopped["finish_reason"] == "stop"
    assert stopped["message"]["content"] == full[: full.index(cut_at)]


async def test_logprobs_and_top_logprobs(client: httpx.AsyncClient) -> None:
    r = await client.post(CHAT, json={"model": "auto", "max_tokens": 6, "temperature": 0,
                                      "logprobs": True, "top_logprobs": 3,
                                      "messages": [{"role": "user", "content": "hi"}]})
    choice = r.json()["choices"][0]
    content = choice["logprobs"]["content"]
    assert len(content) == 6
    assert "".join(t["token"] for t in content) == choice["message"]["content"]
    for t in content:
        assert t["logprob"] <= 0
        assert len(t["top_logprobs"]) == 3
        assert t["top_logprobs"][0]["token"] == t["token"]  # greedy picks the argmax
        assert bytes(t["bytes"]).decode("utf-8", "replace") == t["token"]


async def test_streaming_chat(client: httpx.AsyncClient) -> None:
    r = await client.post(CHAT, json={"model": "auto", "max_tokens": 10, "temperature": 0,
                                      "stream": True, "stream_options": {"include_usage": True},
                                      "logprobs": True,
                                      "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    first, *middle, finish, usage, _ = events
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert finish["choices"][0]["finish_reason"] == "length"
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 10
    text = "".join(e["choices"][0]["delta"]["content"] for e in middle)
    n_tokens = sum(len(e["choices"][0]["logprobs"]["content"]) for e in middle)
    assert n_tokens == 10
    plain = await client.post(CHAT, json={"model": "auto", "max_tokens": 10, "temperature": 0,
                                          "messages": [{"role": "user", "content": "hi"}]})
    assert text == plain.json()["choices"][0]["message"]["content"]


async def test_stream_without_usage_has_no_usage_chunk(client: httpx.AsyncClient) -> None:
    r = await client.post(CHAT, json={"model": "auto", "max_tokens": 3, "stream": True,
                                      "messages": [{"role": "user", "content": "hi"}]})
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    assert all("usage" not in e for e in events[:-1])


async def test_legacy_completion_with_echo_and_logprobs(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/completions", json={
        "model": "auto", "prompt": "the edge node", "max_tokens": 5, "temperature": 0,
        "echo": True, "logprobs": 2})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["text"].startswith("the edge node")
    lp = choice["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["text_offset"])
    assert lp["token_logprobs"][0] is None  # the first prompt token has no context
    assert all(x <= 0 for x in lp["token_logprobs"][1:])
    assert "".join(lp["tokens"]).endswith(choice["text"][len("the edge node"):])
    assert lp["text_offset"] == sorted(lp["text_offset"])
    assert r.json()["object"] == "text_completion"


async def test_legacy_completion_default_max_tokens_is_16(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/completions", json={"model": "auto", "prompt": "hi",
                                                   "temperature": 0})
    assert r.json()["usage"]["completion_tokens"] == 16


async def test_legacy_completion_stream_and_token_prompt(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/completions", json={
        "model": "auto", "prompt": [2 + ord("h"), 2 + ord("i")], "max_tokens": 4,
        "stream": True, "echo": True})
    events = sse_events(r.text)
    assert events[0]["choices"][0]["text"] == "hi"
    assert events[-1] == "[DONE]"


async def test_models_endpoint(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/models")
    data = r.json()["data"]
    assert [m["id"] for m in data] == ["fake-tiny", "all-minilm-l6-v2"]  # chat, embeddings
    assert data[0]["edgewise"]["n_ctx"] == 512
    assert (await client.get("/v1/models/fake-tiny")).status_code == 200
    assert (await client.get("/v1/models/gpt-4")).status_code == 404


async def test_health_and_readiness(fake_node: Node) -> None:
    node = Node(fake_node.config, fake_node.engine)  # not started: not ready
    app = create_app(node, manage_lifecycle=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://n") as c:
        assert (await c.get("/healthz")).status_code == 200
        r = await c.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "not_ready"
        r = await c.post(CHAT, json={"model": "auto",
                                     "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 503 and "loading" in r.json()["error"]["message"]
        assert "Retry-After" in r.headers
        await node.start()
        assert (await c.get("/readyz")).json()["status"] == "ready"
        await node.stop()


async def test_metrics_count_requests_tokens_and_errors(client: httpx.AsyncClient) -> None:
    await client.post(CHAT, json={"model": "auto", "max_tokens": 4, "temperature": 0,
                                  "messages": [{"role": "user", "content": "hi"}]})
    await client.post(CHAT, json={"model": "gpt-4", "messages": [{"role": "user",
                                                                  "content": "secret"}]})
    text = (await client.get("/metrics")).text
    assert ('edgewise_requests_total{endpoint="/v1/chat/completions",status="200"} 1.0'
            in text)
    assert 'edgewise_completion_tokens_total{model="fake-tiny",tier="device"} 4.0' in text
    assert 'edgewise_errors_total{error_type="model_not_found"} 1.0' in text
    assert "edgewise_time_to_first_token_seconds_bucket" in text
    assert "edgewise_generation_tokens_per_second_bucket" in text
    assert "edgewise_queue_depth" in text
    # Request content and unknown model names never become label values.
    assert "gpt-4" not in text and "secret" not in text


async def test_openai_sdk_works_unchanged(fake_node: Node) -> None:
    app = create_app(fake_node, manage_lifecycle=False)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node")
    sdk = openai.AsyncOpenAI(base_url="http://node/v1", api_key="x", http_client=http,
                             max_retries=0)
    res = await sdk.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hi"}], max_tokens=5,
        temperature=0, logprobs=True, top_logprobs=2)
    assert res.choices[0].message.content
    assert res.usage is not None and res.usage.completion_tokens == 5
    assert res.choices[0].logprobs is not None
    assert len(res.choices[0].logprobs.content or []) == 5
    stream = await sdk.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hi"}], max_tokens=5,
        temperature=0, stream=True, stream_options={"include_usage": True})
    parts = [p async for p in stream]
    assert "".join(p.choices[0].delta.content or "" for p in parts if p.choices) == \
        res.choices[0].message.content
    assert parts[-1].usage is not None and parts[-1].usage.completion_tokens == 5
    comp = await sdk.completions.create(model="auto", prompt="the", max_tokens=3)
    assert comp.choices[0].text is not None
    models = await sdk.models.list()
    assert [m.id for m in models.data] == ["fake-tiny", "all-minilm-l6-v2"]
    # the SDK asks for base64 unless told otherwise, and decodes it
    emb = await sdk.embeddings.create(model="all-minilm-l6-v2", input=["one", "two"])
    floats = await sdk.embeddings.create(model="all-minilm-l6-v2", input=["one", "two"],
                                         encoding_format="float")
    assert [len(d.embedding) for d in emb.data] == [384, 384]
    assert emb.data[1].embedding == pytest.approx(floats.data[1].embedding, abs=1e-6)
    with pytest.raises(openai.NotFoundError):
        await sdk.chat.completions.create(model="gpt-4", messages=[{"role": "user",
                                                                    "content": "x"}])
    await http.aclose()


async def test_n_choices_are_independent_samples(client: httpx.AsyncClient) -> None:
    """n > 1: n choices from the same tier (the fake engine samples by seed), seeded
    seed + i when a seed is given, so a seeded request is reproducible; usage counts
    every choice's tokens once and the prompt once."""
    body = {"model": "auto", "messages": [{"role": "user", "content": "Hello there"}],
            "n": 3, "temperature": 1.0, "seed": 7, "max_tokens": 8}
    r = await client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    assert [c["index"] for c in data["choices"]] == [0, 1, 2]
    texts = [c["message"]["content"] for c in data["choices"]]
    assert len(set(texts)) > 1, texts  # different seeds, different samples
    again = (await client.post("/v1/chat/completions", json=body)).json()
    assert [c["message"]["content"] for c in again["choices"]] == texts
    one = (await client.post("/v1/chat/completions", json={**body, "n": 1})).json()
    assert one["choices"][0]["message"]["content"] == texts[0]  # choice 0 = seed 7
    assert data["usage"]["prompt_tokens"] == one["usage"]["prompt_tokens"]
    assert data["usage"]["completion_tokens"] >= 3
    r = await client.post("/v1/completions", json={"model": "auto", "prompt": "Hello",
                                                   "n": 2, "max_tokens": 4, "seed": 3,
                                                   "temperature": 1.0})
    assert r.status_code == 200, r.text
    assert [c["index"] for c in r.json()["choices"]] == [0, 1]


def test_n_choices_on_the_wire() -> None:
    from edgewise.chat import ChatAnswer
    from edgewise.wire import answer_from_body, completion_body

    body = {"model": "up", "usage": {"prompt_tokens": 5, "completion_tokens": 9},
            "choices": [
                {"index": 1, "message": {"content": "b"}, "finish_reason": "length"},
                {"index": 0, "message": {"content": "a"}, "finish_reason": "stop"}]}
    answer = answer_from_body(body)
    assert (answer.text, [a.text for a in answer.alternatives]) == ("a", ["b"])
    assert answer.alternatives[0].finish_reason == "length"
    assert (answer.prompt_tokens, answer.completion_tokens) == (5, 9)
    out = completion_body(answer, "c", 0, include_logprobs=False)
    assert [(c["index"], c["message"]["content"], c["finish_reason"])
            for c in out["choices"]] == [(0, "a", "stop"), (1, "b", "length")]
    assert isinstance(answer.alternatives[0], ChatAnswer)
