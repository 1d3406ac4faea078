"""Admission queue, 429s, client disconnects, engine failures and draining, on a real
uvicorn server (in a thread) over a deliberately slow fake engine."""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from conftest import LiveServer, make_config
from edgewise.engines.fake import FakeEngine
from edgewise.node import Node

CHAT = "/v1/chat/completions"


def body(**kw: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": "hi"}], **kw}


def stream_all(url: str, **kw: Any) -> tuple[int, str]:
    with httpx.stream("POST", url + CHAT, json=body(stream=True, **kw), timeout=60) as r:
        return r.status_code, r.read().decode()


def wait_until(pred: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def test_queue_full_answers_429_with_retry_after(live_fake: LiveServer) -> None:
    node = live_fake.node
    assert node.admission is not None
    with ThreadPoolExecutor(3) as pool:
        # 1 running + 2 queued fills the node (max_queue=2).
        futures = [pool.submit(stream_all, live_fake.url, max_tokens=15) for _ in range(3)]
        wait_until(lambda: node.admission is not None and node.admission.active == 1
                   and node.admission.waiting == 2)
        r = httpx.post(live_fake.url + CHAT, json=body(max_tokens=2), timeout=10)
        assert r.status_code == 429
        assert int(r.headers["Retry-After"]) >= 1
        err = r.json()["error"]
        assert err["type"] == "rate_limit_error" and err["code"] == "queue_full"
        assert "queue limit 2" in err["message"]
        rs = httpx.post(live_fake.url + CHAT, json=body(max_tokens=2, stream=True), timeout=10)
        assert rs.status_code == 429  # streams are refused before their 200 goes out
        # Everyone admitted finishes normally: nothing lost.
        results = [f.result() for f in futures]
    assert all(status == 200 and text.endswith("data: [DONE]\n\n") for status, text in results)
    assert httpx.post(live_fake.url + CHAT, json=body(max_tokens=2)).status_code == 200


def test_client_disconnect_mid_stream_stops_generation(live_fake: LiveServer) -> None:
    engine = live_fake.node.engine
    assert isinstance(engine, FakeEngine)
    with httpx.stream("POST", live_fake.url + CHAT, json=body(stream=True, max_tokens=1500),
                      timeout=30) as r:
        lines = r.iter_lines()
        for _ in range(10):
            next(lines)
    # The response is closed; within a few tokens the engine must stop.
    wait_until(lambda: live_fake.node.admission is not None
               and live_fake.node.admission.active == 0, timeout=5)
    stopped_at = engine.tokens_generated
    time.sleep(0.3)
    assert engine.tokens_generated == stopped_at
    assert stopped_at < 100  # far fewer than the 1500 asked for
    metrics = httpx.get(live_fake.url + "/metrics").text
    assert "edgewise_cancelled_generations_total 1.0" in metrics
    # The slot was handed back: a new request is served at once.
    assert httpx.post(live_fake.url + CHAT, json=body(max_tokens=3)).status_code == 200


def test_client_disconnect_non_streaming_stops_generation(live_fake: LiveServer) -> None:
    engine = live_fake.node.engine
    assert isinstance(engine, FakeEngine)
    with contextlib.suppress(httpx.ReadTimeout):
        httpx.post(live_fake.url + CHAT, json=body(max_tokens=1500), timeout=0.5)
    wait_until(lambda: live_fake.node.admission is not None
               and live_fake.node.admission.active == 0, timeout=5)
    assert engine.tokens_generated < 100


def test_engine_failure_is_one_clear_error_and_node_keeps_serving() -> None:
    engine = FakeEngine(n_ctx=512, eos_after=1000, fail_after=3)
    node = Node(make_config(), engine)
    with LiveServer(node) as server:
        r = httpx.post(server.url + CHAT, json=body(max_tokens=20), timeout=10)
        assert r.status_code == 500
        err = r.json()["error"]
        assert err["code"] == "engine_error" and "\n" not in err["message"]
        status, text = stream_all(server.url, max_tokens=20)
        assert status == 200
        assert '"code": "engine_error"' in text or '"code":"engine_error"' in text
        # the error event, then the end of the stream (clients stop reading at [DONE])
        assert text.endswith("data: [DONE]\n\n") and text.count("[DONE]") == 1
        assert text.rindex('"engine_error"') < text.rindex("[DONE]")
        engine.fail_after = None
        assert httpx.post(server.url + CHAT, json=body(max_tokens=3)).status_code == 200
        metrics = httpx.get(server.url + "/metrics").text
        assert 'edgewise_errors_total{error_type="engine_error"} 2.0' in metrics


def test_shutdown_drains_in_flight_streams() -> None:
    engine = FakeEngine(n_ctx=2048, eos_after=10_000, token_delay_s=0.02)
    node = Node(make_config(engine={"n_ctx": 2048}), engine)
    server = LiveServer(node).__enter__()
    results: dict[str, Any] = {}

    def client() -> None:
        results["r"] = stream_all(server.url, max_tokens=50)  # ~1 s of generation

    t = threading.Thread(target=client)
    t.start()
    wait_until(lambda: engine.tokens_generated > 5)
    server.server.should_exit = True  # what SIGTERM / Ctrl-C do
    t.join(timeout=20)
    server.thread.join(timeout=20)
    status, text = results["r"]
    assert status == 200 and text.endswith("data: [DONE]\n\n")
    assert text.count('"content"') >= 50
    assert not server.thread.is_alive()
