"""Shared fixtures: nodes on the fake engine (fast, in-process) and on the real model.

Every test runs in its own temporary directory (so a node's default ``.edgewise/``
audit log and job queue, or any relative path a test writes, land there), and the
session fails if the working tree gained a file: tests write only under tmp paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from edgewise.api.app import create_app
from edgewise.config import EdgewiseConfig, parse_config
from edgewise.engines.fake import FakeEngine
from edgewise.node import Node, build_engine

REPO = Path(__file__).resolve().parent.parent
#: Folders tests and tools may write inside the repository (caches, the venv).
_ALLOWED = {".git", ".venv", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis",
            "__pycache__"}
_BEFORE = pytest.StashKey[set[str]]()


def _tree() -> set[str]:
    """Every file under the repository, but the allowed caches."""
    out = set()
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in _ALLOWED and not d.endswith(".egg-info")]
        out.update(os.path.relpath(os.path.join(root, f), REPO) for f in files)
    return out


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_BEFORE] = _tree()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = session.config.stash.get(_BEFORE, None)
    if before is None:
        return
    new = sorted(_tree() - before)
    if new:
        session.config.get_terminal_writer().line(
            "\ntests left files in the working tree (write under tmp_path instead): "
            + ", ".join(new[:20]), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session", autouse=True)
def _session_in_a_temporary_directory(tmp_path_factory: pytest.TempPathFactory
                                      ) -> Iterator[None]:
    """Module- and session-scoped fixtures are set up before a test's own directory."""
    before = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    try:
        yield
    finally:
        os.chdir(before)


@pytest.fixture(autouse=True)
def _in_a_temporary_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def make_config(**sections: Any) -> EdgewiseConfig:
    data: dict[str, Any] = {"node": {"name": "test-node", "tier": "device"},
                            "engine": {"kind": "fake", "n_ctx": 512}}
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return parse_config(data)


@pytest.fixture
async def fake_node() -> AsyncIterator[Node]:
    node = Node(make_config(), FakeEngine(n_ctx=512))
    await node.start()
    yield node
    await node.stop()


@pytest.fixture
async def client(fake_node: Node) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(fake_node, manage_lifecycle=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as c:
        yield c


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections for as long as the block runs: bound by
    this process but not listening (no other process can listen on it meanwhile)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """A real uvicorn server on a free loopback port, in a thread of this process (so a
    test can look inside its engine)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(node), host="127.0.0.1", port=self.port,
                                log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("live server did not become ready")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture
def live_fake() -> Iterator[LiveServer]:
    """A live server whose fake engine is slow (20 ms/token) and long-winded."""
    engine = FakeEngine(n_ctx=2048, eos_after=10_000, token_delay_s=0.02)
    node = Node(make_config(engine={"n_ctx": 2048}, serving={"max_queue": 2}), engine)
    with LiveServer(node) as server:
        yield server


@pytest.fixture(scope="session")
def real_node_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The real default model behind a live server (loaded once per session)."""
    state = tmp_path_factory.mktemp("real-node")
    cfg = parse_config({"node": {"name": "real-node"}, "engine": {"n_ctx": 2048},
                        "audit": {"path": str(state / "audit.sqlite")},
                        "routing": {"jobs_path": str(state / "jobs.sqlite")}})
    node = Node(cfg, build_engine(cfg))
    with LiveServer(node) as server:
        yield server


def run(coro: Any) -> Any:
    return asyncio.get_event_loop().run_until_complete(coro)
