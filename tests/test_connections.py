"""Connection limits of the HTTP server (``edgewise.serving.server``), against real
servers on free loopback ports: silent sockets and half-sent heads are closed after
``serving.header_timeout_s``, slow bodies get 408 after ``serving.body_timeout_s``,
idle keep-alive connections go after ``serving.keepalive_timeout_s``, and at
``serving.max_connections`` — also the one derived from a low ``ulimit -n`` in a child
process — new connections replace idle ones, so ``/healthz`` keeps answering."""

from __future__ import annotations

import json
import os
import resource
import select
import selectors
import socket
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from conftest import free_port, make_config
from edgewise.api.app import create_app
from edgewise.engines.fake import FakeEngine
from edgewise.errors import ConfigError
from edgewise.node import Node
from edgewise.serving.server import FD_RESERVE, build_server, connection_cap

PARTIAL_BODY = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: node\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                b'{"model": ')  # 10 of the 1000 bytes
PARTIAL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: node\r\n"  # no blank line: never ends


class ThreadServer:
    """The node's real server (``build_server``) in a thread of this process, so a test
    can count its connections."""

    def __init__(self, tmp_path: Path, **serving: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = make_config(node={"port": self.port}, serving=serving,
                          audit={"path": str(tmp_path / "audit.sqlite")},
                          routing={"jobs_path": str(tmp_path / "jobs.sqlite")})
        node = Node(cfg, FakeEngine(n_ctx=512))
        self.server = build_server(create_app(node), cfg, log_level="warning")
        self.slots = self.server.config.slots  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        wait_ready(self.url)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        assert not self.thread.is_alive()

    def connections(self) -> int:
        return len(self.server.server_state.connections)


def wait_ready(url: str, timeout: float = 30, proc: subprocess.Popen[str] | None = None
               ) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.communicate()[0]}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("server never became ready")


def open_sockets(port: int, n: int, payload: bytes = b"") -> tuple[list[socket.socket],
                                                                     list[float]]:
    """n connections (each sending ``payload``), with the time each was opened."""
    socks, opened = [], []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if payload:
            s.sendall(payload)
        socks.append(s)
        opened.append(time.monotonic())
    return socks, opened


@dataclass
class Ending:
    closed_at: float | None = None  # when the server closed it (EOF or reset)
    data: bytes = b""  # what the server sent before


def watch(socks: list[socket.socket], timeout: float) -> list[Ending]:
    """Read every socket until the server closes it or ``timeout`` passes."""
    endings = [Ending() for _ in socks]
    sel = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
    deadline = time.monotonic() + timeout
    while sel.get_map() and (left := deadline - time.monotonic()) > 0:
        for key, _ in sel.select(left):
            i = key.data
            try:
                chunk = socks[i].recv(65536)
            except ConnectionResetError:
                chunk = b""
            if chunk:
                endings[i].data += chunk
                continue
            endings[i].closed_at = time.monotonic()
            sel.unregister(socks[i])
    sel.close()
    return endings


def healthz_latencies(url: str, n: int) -> list[float]:
    """Seconds for ``/healthz`` on n new connections, one after the other (all 200)."""
    out = []
    # ``connection: close``: the server closes each one, so every request connects anew.
    with httpx.Client(base_url=url, timeout=5, headers={"connection": "close"}) as client:
        for _ in range(n):
            t = time.perf_counter()
            r = client.get("/healthz")
            out.append(time.perf_counter() - t)
            assert r.status_code == 200
    return out


def close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        s.close()


def report(name: str, **numbers: float) -> None:
    print(f"\n{name}: " + ", ".join(f"{k}={v:.4g}" for k, v in numbers.items()))


def test_config_keys_defaults_and_ranges() -> None:
    serving = make_config().serving
    assert (serving.header_timeout_s, serving.body_timeout_s, serving.keepalive_timeout_s,
            serving.max_connections) == (10.0, 30.0, 5.0, None)
    with pytest.raises(ConfigError, match=r"serving.header_timeout_s: Input should be "
                                          r"greater than 0"):
        make_config(serving={"header_timeout_s": 0})
    with pytest.raises(ConfigError, match=r"serving.max_connections: Input should be "
                                          r"greater than or equal to 1"):
        make_config(serving={"max_connections": 0})


def test_connection_cap_follows_the_descriptor_limit() -> None:
    assert connection_cap(None, soft_limit=20_000) == 1024
    assert connection_cap(None, soft_limit=256) == 256 - FD_RESERVE
    assert connection_cap(None, soft_limit=resource.RLIM_INFINITY) == 1024
    assert connection_cap(None, soft_limit=40) == 1  # warns: ulimit -n leaves no room
    assert connection_cap(5000, soft_limit=256) == 5000  # explicit wins (with a warning)


def test_silent_sockets_closed_after_header_timeout(tmp_path: Path) -> None:
    timeout = 0.5
    with ThreadServer(tmp_path, header_timeout_s=timeout) as srv:
        socks, opened = open_sockets(srv.port, 300)
        lat = healthz_latencies(srv.url, 10)
        still_open = srv.slots.open  # the 300 were all there while /healthz answered
        endings = watch(socks, timeout=timeout + 3)
        close_all(socks)
        after = [e.closed_at - t for e, t in zip(endings, opened, strict=True)
                 if e.closed_at is not None]
        report("300 silent sockets", closed=len(after), first_s=min(after),
               last_s=max(after), healthz_p50_ms=statistics.median(lat) * 1e3,
               healthz_max_ms=max(lat) * 1e3)
        assert still_open >= 300
        assert max(lat) < 0.1
        assert len(after) == 300  # every one closed by the server ...
        assert all(e.data == b"" for e in endings)  # ... silently: it sent nothing
        assert timeout - 0.05 <= min(after) and max(after) <= timeout + 1.0
        time.sleep(0.1)
        assert srv.slots.open == 0 and srv.connections() == 0


def test_partial_head_gets_408_after_header_timeout(tmp_path: Path) -> None:
    timeout = 0.5
    with ThreadServer(tmp_path, header_timeout_s=timeout) as srv:
        socks, opened = open_sockets(srv.port, 20, PARTIAL_HEAD)
        endings = watch(socks, timeout=timeout + 3)
        close_all(socks)
        after = [e.closed_at - t for e, t in zip(endings, opened, strict=True)
                 if e.closed_at is not None]
        report("20 partial heads", closed=len(after), first_s=min(after), last_s=max(after))
        assert len(after) == 20
        assert timeout - 0.05 <= min(after) and max(after) <= timeout + 1.0
        for e in endings:
            head, _, body = e.data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408 ") and b"connection: close" in head
            error = json.loads(body)["error"]
            assert error["code"] == "request_timeout"
            assert "serving.header_timeout_s" in error["message"]


def test_partial_bodies_get_408_after_body_timeout(tmp_path: Path) -> None:
    timeout = 0.5
    with ThreadServer(tmp_path, header_timeout_s=5, body_timeout_s=timeout) as srv:
        socks, sent = open_sockets(srv.port, 50, PARTIAL_BODY)
        lat = healthz_latencies(srv.url, 5)
        endings = watch(socks, timeout=timeout + 3)
        close_all(socks)
        after = [e.closed_at - t for e, t in zip(endings, sent, strict=True)
                 if e.closed_at is not None]
        report("50 partial bodies", closed=len(after), first_s=min(after),
               last_s=max(after), healthz_max_ms=max(lat) * 1e3)
        assert max(lat) < 0.1
        assert len(after) == 50
        assert timeout - 0.05 <= min(after) and max(after) <= timeout + 1.0
        for e in endings:
            head, _, body = e.data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408 ")
            assert b"connection: close" in head and b"x-edgewise-node: test-node" in head
            error = json.loads(body)["error"]
            assert error["code"] == "request_timeout"
            assert "serving.body_timeout_s" in error["message"]
        time.sleep(0.1)
        assert srv.slots.open == 0


def test_keepalive_idle_closed_and_trickled_head_gets_408(tmp_path: Path) -> None:
    keepalive, header = 0.3, 0.8
    request = b"GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n"
    with ThreadServer(tmp_path, keepalive_timeout_s=keepalive, header_timeout_s=header) as srv:
        idle = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        idle.sendall(request)
        assert idle.recv(65536).startswith(b"HTTP/1.1 200 ")
        answered = time.monotonic()
        [quiet] = watch([idle], timeout=3)
        idle.close()
        trickle = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        trickle.sendall(request)
        assert trickle.recv(65536).startswith(b"HTTP/1.1 200 ")
        # The keep-alive timer stops at the first byte of the next head; the header
        # timer starts there and bounds a head sent a byte every 0.1 s.
        first_byte = time.monotonic()
        for b in request[:-4]:  # 33 bytes, 3.3 s: longer than the header timeout
            trickle.sendall(bytes([b]))
            if select.select([trickle], [], [], 0.1)[0]:
                break  # the server answered (and closed): stop sending
        [slow] = watch([trickle], timeout=3)
        trickle.close()
        assert quiet.closed_at is not None and slow.closed_at is not None
        idle_s, trickle_s = quiet.closed_at - answered, slow.closed_at - first_byte
        report("keep-alive", idle_closed_after_s=idle_s, trickle_closed_after_s=trickle_s)
        assert quiet.data == b"" and keepalive - 0.05 <= idle_s <= keepalive + 0.5
        assert slow.data.startswith(b"HTTP/1.1 408 ")
        assert header - 0.05 <= trickle_s <= header + 0.5


def test_at_the_cap_new_connections_replace_idle_ones(tmp_path: Path) -> None:
    cap = 20
    with ThreadServer(tmp_path, max_connections=cap, header_timeout_s=10) as srv:
        socks, _ = open_sockets(srv.port, 100)
        early = watch(socks, timeout=1.0)  # long before the header timeout
        replaced = [i for i, e in enumerate(early) if e.closed_at is not None]
        assert replaced == list(range(100 - cap))  # the oldest 80, and only they
        assert srv.slots.open == cap and srv.connections() == cap
        lat = healthz_latencies(srv.url, 10)
        later = watch([socks[i] for i in range(100 - cap, 100)], timeout=0.3)
        more = sum(e.closed_at is not None for e in later)
        report("cap 20, 100 silent sockets", replaced=len(replaced),
               replaced_by_healthz=more, healthz_p50_ms=statistics.median(lat) * 1e3,
               healthz_max_ms=max(lat) * 1e3)
        assert max(lat) < 0.1
        assert 1 <= more <= 10  # each /healthz took at most one idle socket's slot
        assert srv.slots.open <= cap
        close_all(socks)


def test_every_slot_busy_closes_newcomers_until_one_frees(tmp_path: Path) -> None:
    cap, timeout = 5, 0.6
    with ThreadServer(tmp_path, max_connections=cap, body_timeout_s=timeout) as srv:
        busy, sent = open_sockets(srv.port, cap, PARTIAL_BODY)  # requests in progress
        time.sleep(0.1)
        newcomer, tried = open_sockets(srv.port, 1)
        refused = watch(newcomer, timeout=0.3)[0]
        assert refused.closed_at is not None and refused.data == b""
        refused_ms = (refused.closed_at - tried[0]) * 1e3
        # The busy ones get their 408 at the body timeout; the slots are then free.
        endings = watch(busy, timeout=timeout + 3)
        assert all(e.data.startswith(b"HTTP/1.1 408 ") for e in endings)
        recovered = time.monotonic() - sent[0]
        lat = healthz_latencies(srv.url, 3)
        report("cap 5, all busy", refused_after_ms=refused_ms, recovered_after_s=recovered,
               healthz_max_ms=max(lat) * 1e3)
        assert refused_ms < 100
        assert recovered <= timeout + 1.0 and max(lat) < 0.1
        close_all(busy + newcomer)


SERVE_WITH_RLIMIT = textwrap.dedent("""
    import resource, sys
    soft = int(sys.argv.pop(1))
    resource.setrlimit(resource.RLIMIT_NOFILE,
                       (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    from edgewise.cli import main
    sys.argv[0] = "edgewise"
    main()
""")


@pytest.fixture
def low_rlimit_server(tmp_path: Path) -> Iterator[tuple[str, int, subprocess.Popen[str]]]:
    port = free_port()
    cfg = tmp_path / "node.yaml"
    cfg.write_text(yaml.safe_dump({
        "node": {"name": "rlimit-node"}, "engine": {"kind": "fake", "n_ctx": 512},
        "audit": {"path": str(tmp_path / "audit.sqlite")},
        "routing": {"jobs_path": str(tmp_path / "jobs.sqlite")}}))
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE_WITH_RLIMIT, "200", "serve", "--config", str(cfg),
         "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "COLUMNS": "300"})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc=proc)
        yield url, port, proc
    finally:
        if proc.returncode is None:  # the test did not stop it
            proc.kill()
            proc.communicate(timeout=30)


@pytest.mark.slow  # a real `edgewise serve` process
def test_low_fd_limit_flood_keeps_healthz_answering(
        low_rlimit_server: tuple[str, int, subprocess.Popen[str]]) -> None:
    url, port, proc = low_rlimit_server
    cap = 200 - FD_RESERVE  # derived from the child's ulimit -n of 200
    before = len(os.listdir(f"/proc/{proc.pid}/fd"))
    socks, _ = open_sockets(port, 400)  # twice the descriptors the child may open
    early = watch(socks, timeout=1.0)
    replaced = sum(e.closed_at is not None for e in early)
    lat = healthz_latencies(url, 10)
    fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
    report("ulimit -n 200, 400 silent sockets", replaced=replaced, child_fds_idle=before,
           child_fds_flood=fds,
           healthz_p50_ms=statistics.median(lat) * 1e3, healthz_max_ms=max(lat) * 1e3)
    close_all(socks)
    assert proc.poll() is None
    assert replaced >= 400 - cap  # the server kept at most `cap` of them
    assert fds - before <= cap  # client sockets held: at most the cap
    assert max(lat) < 0.1
    proc.terminate()
    out = proc.communicate(timeout=30)[0]
    assert "at the connection cap (serving.max_connections=136)" in out
    assert "Too many open files" not in out
