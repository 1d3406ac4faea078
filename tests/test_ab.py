"""A/B serving: a node serves two versions at once (``Node.split``), each requester
always on the same one, ``share`` of them on "b"; per-version metrics and heartbeat
stats tell the versions apart; splitting, replacing "b" and ending the split never fail
a request, and a version that fails to load changes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from conftest import make_config
from edgewise.api.app import create_app
from edgewise.chat import Message
from edgewise.engines.fake import FakeEngine
from edgewise.errors import ConfigError, EngineError
from edgewise.fleet.stats import HeartbeatStats
from edgewise.node import Node, request_split_key, split_key, split_point

CHAT = "/v1/chat/completions"
KEYS = {f"key-{name}": name for name in ("alice", "bob", "carol", "dave", "erin", "frank")}


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _engine(model: str, **kw: Any) -> FakeEngine:
    return FakeEngine(n_ctx=2048, model=model, **kw)


class BrokenEngine(FakeEngine):
    def load(self) -> None:
        raise EngineError("model file is truncated")


@contextlib.asynccontextmanager
async def _serve(**sections: Any) -> AsyncIterator[tuple[Node, httpx.AsyncClient]]:
    cfg = make_config(engine={"n_ctx": 2048}, serving={"max_queue": 256}, **sections)
    node = Node(cfg, _engine("model-v1", token_delay_s=0.002))
    app = create_app(node, manage_lifecycle=False)
    await node.start()
    app.state.router.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://node") as client:
        yield node, client
    await app.state.router.stop()
    await node.stop()


@pytest.fixture
async def served() -> AsyncIterator[tuple[Node, httpx.AsyncClient]]:
    async with _serve() as got:
        yield got


@pytest.fixture
async def keyed() -> AsyncIterator[tuple[Node, httpx.AsyncClient]]:
    """A node whose clients send API keys (so the requester is known)."""
    async with _serve(auth={"keys": [{"name": n, "sha256": _sha(k)}
                                     for k, n in KEYS.items()]}) as got:
        yield got


def _body(text: str = "hi", **kw: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}],
            "max_tokens": 4, **kw}


async def _model(client: httpx.AsyncClient, key: str | None = None, **kw: Any) -> str:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    r = await client.post(CHAT, json=_body(**kw), headers=headers)
    assert r.status_code == 200, r.text
    model = r.json()["model"]
    assert isinstance(model, str)
    return model


def _expected(key: str, share: float) -> str:
    return "model-v2" if split_point(key) < share else "model-v1"


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of the one sample of ``name`` with exactly these labels (0 if none)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if m and ",".join(sorted(m.group(1).split(","))) == want:
            return float(m.group(2))
    return 0.0


# -- the split key and its hash --------------------------------------------------------

def test_split_key_is_the_requester_else_user_else_first_user_message() -> None:
    convo = (Message("system", "be brief"), Message("user", "first"),
             Message("assistant", "ok"), Message("user", "second"))
    assert split_key(requester="alice", user="u1", messages=convo) == "requester:alice"
    # no API key, or a peer node relaying someone else's request: not a requester
    assert split_key(requester="anonymous", user="u1", messages=convo) == "user:u1"
    assert split_key(requester="spiffe://fleet/node/n2", user="u1") == "user:u1"
    assert split_key(requester="anonymous", messages=convo) == "messages:first"
    # a conversation keeps its key from turn to turn
    assert split_key(messages=convo[:2]) == split_key(messages=convo)
    assert split_key(messages=(Message("system", "only"),)) == "messages:only"
    assert split_key() == "messages:"
    # kinds are prefixed: the same string as requester and as user are two keys
    assert split_key(requester="x") != split_key(user="x")


def test_split_point_is_stable_and_spreads_keys_evenly() -> None:
    points = [split_point(f"requester:user-{i}") for i in range(2000)]
    assert points[:50] == [split_point(f"requester:user-{i}") for i in range(50)]
    assert all(0.0 <= p < 1.0 for p in points)
    for share in (0.05, 0.25, 0.5, 0.9):
        below = sum(p < share for p in points) / len(points)
        assert abs(below - share) < 0.03, (share, below)
    # sha256 is the documented hash: the first 53 bits over 2**53
    digest = hashlib.sha256(b"requester:alice").digest()
    assert split_point("requester:alice") == (
        int.from_bytes(digest[:8], "big") >> 11) / 2**53


# -- picking a version -----------------------------------------------------------------

async def test_the_share_of_keys_on_b_is_the_share_asked_for(
        served: tuple[Node, httpx.AsyncClient]) -> None:
    node, _ = served
    await node.split(_engine("model-v2"), share=0.3, label="model-v2@2")
    keys = [f"requester:r{i}" for i in range(1000)]
    on_b = [node.current(k).label == "model-v2@2" for k in keys]
    assert abs(sum(on_b) / len(keys) - 0.3) < 0.04
    assert [node.current(k).label == "model-v2@2" for k in keys] == on_b  # stable
    # raising the share only moves requesters from a to b
    node.set_split_share(0.6)
    on_b_later = [node.current(k).label == "model-v2@2" for k in keys]
    assert abs(sum(on_b_later) / len(keys) - 0.6) < 0.04
    assert all(later for before, later in zip(on_b, on_b_later, strict=True) if before)
    # without a key: a random draw per request, at the same share
    drawn = sum(node.current().label == "model-v2@2" for _ in range(2000)) / 2000
    assert 0.5 < drawn < 0.7
    node.set_split_share(0.0)
    assert {node.current(k).label for k in keys} == {"model-v1"}
    node.set_split_share(1.0)
    assert {node.current(k).label for k in keys} == {"model-v2@2"}


async def test_the_same_requester_lands_on_the_same_version_every_time(
        served: tuple[Node, httpx.AsyncClient], keyed: tuple[Node, httpx.AsyncClient]
        ) -> None:
    share = 0.5
    node, client = keyed
    await node.split(_engine("model-v2"), share=share, label="model-v2")
    seen: dict[str, set[str]] = {}
    for turn in range(4):
        for key, name in KEYS.items():  # by API key, whatever the body says
            got = await _model(client, key, text=f"question {turn}", user=f"u{turn}")
            assert got == _expected(f"requester:{name}", share)
            seen.setdefault(name, set()).add(got)
    node, client = served
    await node.split(_engine("model-v2"), share=share, label="model-v2")
    for turn in range(4):
        for i in range(6):  # no API key: by the OpenAI `user` field
            got = await _model(client, user=f"end-user-{i}", text=f"q{turn}")
            assert got == _expected(f"user:end-user-{i}", share)
            seen.setdefault(f"user-{i}", set()).add(got)
        for i in range(6):  # neither: by the first user message, turn after turn
            history = [{"role": "user", "content": f"conversation {i}"}]
            for t in range(turn):
                history += [{"role": "assistant", "content": f"answer {t}"},
                            {"role": "user", "content": f"follow-up {t}"}]
            r = await client.post(CHAT, json={"model": "auto", "messages": history,
                                              "max_tokens": 3})
            assert r.json()["model"] == _expected(f"messages:conversation {i}", share)
            seen.setdefault(f"conversation-{i}", set()).add(r.json()["model"])
    assert all(len(models) == 1 for models in seen.values())
    assert {m for models in seen.values() for m in models} == {"model-v1", "model-v2"}


async def test_streams_and_completions_pick_by_the_same_key(
        served: tuple[Node, httpx.AsyncClient], keyed: tuple[Node, httpx.AsyncClient]
        ) -> None:
    node, client = keyed
    await node.split(_engine("model-v2"), share=0.5, label="model-v2")
    for name in ("alice", "bob", "carol", "dave"):
        want = _expected(f"requester:{name}", 0.5)
        headers = {"authorization": f"Bearer key-{name}"}
        models = set()
        async with client.stream("POST", CHAT, json=_body(stream=True),
                                 headers=headers) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    models.add(json.loads(line[6:])["model"])
        assert models == {want}
        r = await client.post("/v1/completions", headers=headers, json={
            "model": "auto", "prompt": "Hello", "max_tokens": 3})
        assert r.status_code == 200 and r.json()["model"] == want
    node, client = served
    await node.split(_engine("model-v2"), share=0.5, label="model-v2")
    for i in range(6):  # no API key: the `user` field, else the prompt
        r = await client.post("/v1/completions", json={
            "model": "auto", "prompt": [5, 6, 7], "max_tokens": 2, "user": f"u{i}"})
        assert r.json()["model"] == _expected(f"user:u{i}", 0.5)
        r = await client.post("/v1/completions", json={
            "model": "auto", "prompt": f"Hello {i}", "max_tokens": 2})
        assert r.json()["model"] == _expected(f"messages:Hello {i}", 0.5)


async def test_the_local_tier_keys_a_request_outside_the_router_by_its_messages(
        served: tuple[Node, httpx.AsyncClient]) -> None:
    from edgewise.chat import ChatRequest
    from edgewise.tiers.local import LocalEndpoint

    node, _ = served
    await node.split(_engine("model-v2"), share=0.5, label="model-v2")
    local = LocalEndpoint("device", node)
    for i in range(8):
        req = ChatRequest(messages=(Message("user", f"m{i}"),), max_tokens=2)
        assert (await local.chat(req)).model == _expected(f"messages:m{i}", 0.5)
        token = request_split_key.set("requester:alice")  # as the router sets it
        try:
            assert (await local.chat(req)).model == _expected("requester:alice", 0.5)
        finally:
            request_split_key.reset(token)


# -- metrics and heartbeat stats -------------------------------------------------------

async def test_metrics_are_per_version_label(
        served: tuple[Node, httpx.AsyncClient]) -> None:
    node, client = served
    # the same model file in two builds: only the labels tell them apart
    await node.swap(_engine("model"), label="model@3")
    await node.split(_engine("model", fail_after=2), share=0.5, label="model@4")
    assert node.info.model == "model" and node.model_id == "model"
    stats = HeartbeatStats(node.metrics, by_model=True)
    stats.read()
    tokens = {"model@3": 0, "model@4": 0}
    answers = {"model@3": 0, "model@4": 0}
    for i in range(40):
        label = "model@4" if split_point(f"user:u{i}") < 0.5 else "model@3"
        r = await client.post(CHAT, json=_body(user=f"u{i}", max_tokens=6))
        answers[label] += 1
        if label == "model@4":  # it fails after 2 tokens
            assert r.status_code == 500, r.text
        else:
            assert r.status_code == 200
            tokens[label] += r.json()["usage"]["completion_tokens"]
    assert answers["model@3"] > 10 and answers["model@4"] > 10
    await asyncio.sleep(0.05)
    beat = stats.read()
    text = (await client.get("/metrics")).text
    for label in ("model@3", "model@4"):
        assert _metric(text, "edgewise_model_loaded", model=label) == 1
    assert _metric(text, "edgewise_model_loaded", model="model-v1") == 0
    assert _metric(text, "edgewise_model_answers_total", model="model@3",
                   outcome="ok") == answers["model@3"]
    assert _metric(text, "edgewise_model_answers_total", model="model@3",
                   outcome="error") == 0
    assert _metric(text, "edgewise_model_answers_total", model="model@4",
                   outcome="error") == answers["model@4"]
    assert _metric(text, "edgewise_completion_tokens_total", model="model@3",
                   tier="device") == tokens["model@3"]
    assert _metric(text, "edgewise_completion_tokens_total", model="model@4",
                   tier="device") == 2 * answers["model@4"]
    assert _metric(text, "edgewise_time_to_first_token_seconds_count", model="model@3",
                   tier="device") == answers["model@3"]

    by = beat["by_model"]
    assert set(by) == {"model@3", "model@4"}  # model-v1 is gone and idle
    a, b = by["model@3"], by["model@4"]
    assert (a["requests"], a["errors"], a["error_rate"]) == (answers["model@3"], 0, 0.0)
    assert (b["requests"], b["errors"], b["error_rate"]) == (
        answers["model@4"], answers["model@4"], 1.0)
    assert a["interval_requests"] == answers["model@3"]
    assert a["tokens_per_s"] > 0 and b["tokens_per_s"] > 0
    assert a["ttft_p95_ms"] is not None and a["ttft_p95_ms"] > 0
    # the node-wide rate is over both versions
    assert beat["error_rate"] == pytest.approx(answers["model@4"] / 40)

    assert "by_model" not in HeartbeatStats(node.metrics).read()  # off by default
    again = stats.read()["by_model"]  # nothing in this interval
    assert again["model@3"]["requests"] == answers["model@3"]
    assert again["model@3"]["error_rate"] is None
    assert again["model@3"]["tokens_per_s"] == 0.0
    assert again["model@3"]["ttft_p95_ms"] is None


async def test_readyz_and_metrics_say_when_a_split_is_on(
        served: tuple[Node, httpx.AsyncClient]) -> None:
    node, client = served
    r = await client.get("/readyz")
    assert r.json() == {"status": "ready", "model": "model-v1", "n_ctx": 2048, "split": None}
    assert node.split_state is None
    await node.split(_engine("model-v2"), share=0.25, label="model-v2@7")
    assert node.split_state is not None
    assert node.split_state.as_dict() == {"a": "model-v1", "b": "model-v2@7", "share": 0.25}
    r = await client.get("/readyz")
    assert r.json()["split"] == {"a": "model-v1", "b": "model-v2@7", "share": 0.25}
    assert r.json()["model"] == "model-v1"  # the node's model is still version a
    text = (await client.get("/metrics")).text
    assert _metric(text, "edgewise_ab_split", a="model-v1", b="model-v2@7") == 0.25
    node.set_split_share(0.5)
    text = (await client.get("/metrics")).text
    assert _metric(text, "edgewise_ab_split", a="model-v1", b="model-v2@7") == 0.5
    assert (await client.get("/v1/models")).status_code == 200
    await node.unsplit("b")
    assert (await client.get("/readyz")).json()["split"] is None
    text = (await client.get("/metrics")).text
    assert "edgewise_ab_split{" not in text
    assert _metric(text, "edgewise_model_loaded", model="model-v1") == 0
    assert _metric(text, "edgewise_model_loaded", model="model-v2@7") == 1


# -- changing versions -----------------------------------------------------------------

async def test_split_and_unsplit_under_load_fail_no_request(
        served: tuple[Node, httpx.AsyncClient]) -> None:
    node, client = served
    results: list[tuple[int, str]] = []
    stop = asyncio.Event()

    async def load(worker: int) -> None:
        i = 0
        while not stop.is_set():
            stream = i % 3 == 0
            body = _body(user=f"w{worker}-{i % 7}", max_tokens=6, stream=stream)
            if stream:
                async with client.stream("POST", CHAT, json=body) as r:
                    text = "".join([line async for line in r.aiter_lines()])
                ok = '"finish_reason":"' in text.replace(" ", "") and "error" not in text
                results.append((r.status_code if ok else 599, "stream"))
            else:
                r = await client.post(CHAT, json=body)
                results.append((r.status_code, r.json().get("model", r.text)))
            i += 1

    async def answered(n: int) -> None:
        """Let ``n`` more requests be answered (each phase under load, however slow the
        machine is)."""
        want = len(results) + n
        for _ in range(3000):
            if len(results) >= want:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"only {len(results)} of {want} answers after 30 s")

    engines = [_engine(f"model-v{n}", token_delay_s=0.003) for n in (2, 3, 4)]
    first = node.engine
    workers = [asyncio.create_task(load(w)) for w in range(6)]
    await answered(20)
    await node.split(engines[0], share=0.5, label="v2")
    await answered(20)
    await node.split(engines[1], share=0.5, label="v3")  # replaces b
    await answered(20)
    await node.unsplit("b")  # v3 serves everything
    await answered(20)
    await node.split(engines[2], share=0.5, label="v4")
    await answered(20)
    await node.unsplit("a")  # v3 again
    await answered(20)
    stop.set()
    await asyncio.gather(*workers)

    assert len(results) > 60
    assert {status for status, _ in results} == {200}, [r for r in results if r[0] != 200]
    models = {m for _, m in results}
    assert {"model-v1", "model-v2", "model-v3", "model-v4"} <= models
    # every version that stopped serving was freed once its requests finished
    assert isinstance(first, FakeEngine)
    assert not first._loaded and not engines[0]._loaded and not engines[2]._loaded
    assert engines[1]._loaded and node.info.model == "model-v3"
    assert node.split_state is None and node.servings == (node.serving,)
    assert engines[0].generations_started > 0 and engines[2].generations_started > 0


async def test_a_split_whose_engine_fails_to_load_changes_nothing(
        served: tuple[Node, httpx.AsyncClient]) -> None:
    node, client = served
    before = (await client.get("/metrics")).text
    with pytest.raises(EngineError, match="truncated"):
        await node.split(BrokenEngine(model="model-v2"), share=0.5, label="model-v2")
    assert node.split_state is None and len(node.servings) == 1
    assert {await _model(client, user=f"u{i}") for i in range(10)} == {"model-v1"}
    after = (await client.get("/metrics")).text
    assert "edgewise_ab_split{" not in after
    assert _metric(after, "edgewise_model_loaded", model="model-v2") == 0
    assert _metric(before, "edgewise_model_loaded", model="model-v1") == 1
    assert _metric(after, "edgewise_model_loaded", model="model-v1") == 1

    # a split in force keeps its "b" when a replacement fails to load
    await node.split(_engine("model-v2"), share=0.5, label="model-v2")
    with pytest.raises(EngineError, match="truncated"):
        await node.split(BrokenEngine(model="model-v3"), share=0.9, label="model-v3")
    assert node.split_state is not None
    assert node.split_state.as_dict() == {"a": "model-v1", "b": "model-v2", "share": 0.5}
    for i in range(10):
        assert await _model(client, user=f"u{i}") == _expected(f"user:u{i}", 0.5)


async def test_unsplit_keeps_a_or_b_and_frees_the_other(
        served: tuple[Node, httpx.AsyncClient]) -> None:
    node, client = served
    a = node.engine
    b = _engine("model-v2")
    await node.split(b, share=0.5, label="model-v2")
    info = await node.unsplit("a")
    assert info.model == "model-v1" and node.split_state is None
    assert isinstance(a, FakeEngine) and a._loaded and not b._loaded
    assert {await _model(client, user=f"u{i}") for i in range(10)} == {"model-v1"}

    b = _engine("model-v2")
    await node.split(b, share=0.1, label="model-v2")
    info = await node.unsplit("b")
    assert info.model == "model-v2" and node.info.model == "model-v2"
    assert node.serving is not None and node.serving.label == "model-v2"
    assert not a._loaded and b._loaded
    assert {await _model(client, user=f"u{i}") for i in range(10)} == {"model-v2"}

    # no split on: keeping a is a no-op, keeping b an error that says why
    assert (await node.unsplit("a")).model == "model-v2"
    with pytest.raises(ConfigError, match="no A/B split is on"):
        await node.unsplit("b")
    with pytest.raises(ConfigError, match="no A/B split is on"):
        node.set_split_share(0.5)


async def test_bad_splits_are_refused_before_loading(
        served: tuple[Node, httpx.AsyncClient]) -> None:
    node, _ = served
    engine = _engine("model-v2")
    for share in (-0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="between 0 and 1"):
            await node.split(engine, share=share, label="model-v2")
    with pytest.raises(ConfigError, match="label of its own"):
        await node.split(engine, share=0.5, label="model-v1")
    assert not engine._loaded and node.split_state is None

    idle = Node(make_config(), _engine("model-v1"))  # not started: nothing to split
    with pytest.raises(Exception, match="still loading"):
        await idle.split(engine, share=0.5, label="model-v2")
    assert not engine._loaded


async def test_a_swap_during_a_split_replaces_both_versions(
        served: tuple[Node, httpx.AsyncClient]) -> None:
    node, client = served
    a, b = node.engine, _engine("model-v2", token_delay_s=0.01)
    await node.split(b, share=1.0, label="model-v2")
    in_flight = asyncio.create_task(client.post(CHAT, json=_body(max_tokens=20)))
    await asyncio.sleep(0.05)  # generating on b
    info = await node.swap(_engine("model-v3"), label="model-v3@1")
    assert info.model == "model-v3" and node.split_state is None
    r = await in_flight
    assert r.status_code == 200 and r.json()["model"] == "model-v2"
    assert isinstance(a, FakeEngine) and not a._loaded and not b._loaded
    assert {await _model(client, user=f"u{i}") for i in range(6)} == {"model-v3"}
    text = (await client.get("/metrics")).text
    assert _metric(text, "edgewise_model_loaded", model="model-v3@1") == 1
    assert _metric(text, "edgewise_model_loaded", model="model-v2") == 0


async def test_stop_frees_both_versions() -> None:
    a, b = _engine("model-v1"), _engine("model-v2")
    node = Node(make_config(), a)
    await node.start()
    await node.split(b, share=0.5, label="model-v2")
    await node.stop()
    assert not a._loaded and not b._loaded
    assert node.servings == () and node.split_state is None
    text = node.metrics.render().decode()
    assert _metric(text, "edgewise_model_loaded", model="model-v1") == 0
    assert _metric(text, "edgewise_model_loaded", model="model-v2") == 0
