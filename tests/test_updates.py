"""A joined node following a registry alias: a release published on the real control
plane is downloaded over mutual TLS, verified (TUF + model-signing), installed and swapped
in; a tampered release is refused and the node keeps serving what it had."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from edgewise.config import UpdateConfig
from edgewise.engines.fake import FakeEngine
from edgewise.fleet.updates import ModelFollower
from fleet_harness import (
    ControlServer,
    NodeServer,
    join_node,
    registered_engine,
    releasing_control,
)
from test_registry import artifact

CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}

def _filefake(ec: Any, resolve: Any) -> FakeEngine:
    """The fake engine, named after the model file it was built for: which release the
    node serves shows in the answers' `model`."""
    path = Path(resolve().path)
    return FakeEngine(n_ctx=ec.n_ctx, model="release-" + path.parts[-4])


@pytest.fixture(autouse=True)
def _filefake_engine() -> Iterator[None]:
    with registered_engine("filefake", _filefake):
        yield


@pytest.fixture
def cs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ControlServer]:
    yield from releasing_control(tmp_path, monkeypatch)


def _node(cs: ControlServer, tmp: Path) -> NodeServer:
    join_node(cs, "dev1", "device", tmp / "dev1" / "fleet")
    return NodeServer(tmp / "dev1" / "fleet", engine={"kind": "filefake"},
                      fleet={"heartbeat_s": 3600, "update": {"model": "gemma",
                                                             "alias": "stable"}})


def _update(node: NodeServer) -> None:
    loop = node.server._loop
    assert loop is not None
    asyncio.run_coroutine_threadsafe(node.agent.update_once(force=True), loop).result(60)


def _served(node: NodeServer) -> str:
    r = httpx.post(f"{node.url}/v1/chat/completions", json=CHAT, timeout=30)
    assert r.status_code == 200, r.text
    return str(r.json()["model"])


def test_a_node_installs_and_serves_the_release_its_alias_names(cs: ControlServer,
                                                                tmp_path: Path) -> None:
    cs.cp.registry_publish(artifact(tmp_path / "b1", "gemma"), name="gemma", by="ops",
                           alias="stable")
    with _node(cs, tmp_path) as node:
        assert _served(node) == "fake-tiny"  # the configured model, before any update
        _update(node)
        follower = node.agent.follower
        assert follower.status.state == "current" and follower.status.installed == 1
        assert _served(node) == "release-1"
        # a new version under `canary` is not for this node; moving `stable` is
        cs.cp.registry_publish(artifact(tmp_path / "b2", "gemma", seed="2"), name="gemma",
                               by="ops", alias="canary")
        _update(node)
        assert _served(node) == "release-1"
        cs.cp.alias_set("gemma", 2, "stable", by="ops", why="canary passed")
        _update(node)
        assert _served(node) == "release-2"
        root = node.member.state.dir / "models" / "gemma"
        assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["1", "2"]
        assert json.loads((root / "current.json").read_text()) == {"version": 2}
        entries = [e.record for e in node.app.state.router.audit.query()
                   if e.record.route == "fleet/update"]
        assert [e.outcome for e in entries] == ["answered", "answered"]


def test_a_tampered_release_is_refused_and_the_node_keeps_serving(cs: ControlServer,
                                                                  tmp_path: Path) -> None:
    cs.cp.registry_publish(artifact(tmp_path / "b1", "gemma"), name="gemma", by="ops",
                           alias="stable")
    with _node(cs, tmp_path) as node:
        _update(node)
        assert _served(node) == "release-1"
        v2, _ = cs.cp.registry_publish(artifact(tmp_path / "b2", "gemma", seed="2"),
                                       name="gemma", by="ops", alias="stable")
        weights = next(f for f in v2.files if f.path.endswith(".gguf"))
        blob = cs.cp.blobs.path(weights.sha256)
        blob.chmod(0o644)
        data = blob.read_bytes()
        blob.write_bytes(bytes([data[0] ^ 1]) + data[1:])  # the control plane's disk is hit
        _update(node)
        follower = node.agent.follower
        assert follower.status.state == "refused"
        assert "does not match its signed length or hash" in (follower.status.error or "")
        assert _served(node) == "release-1"
        assert not (node.member.state.dir / "models" / "gemma" / "2").exists()
        # nor is anything it fetched before the refusal left behind
        assert not list((node.member.state.dir / "models" / "gemma").glob(".*staging"))
        refused = [e.record for e in node.app.state.router.audit.query()
                   if e.record.route == "fleet/update" and e.record.outcome != "answered"]
        assert [e.outcome for e in refused] == ["refused:tampered"]
        # the control plane sees the state in the next heartbeat
        loop = node.server._loop
        assert loop is not None
        asyncio.run_coroutine_threadsafe(node.agent.heartbeat_once(), loop).result(30)
        rec = cs.cp.node("dev1")
        assert rec is not None and rec.heartbeat["update"]["state"] == "refused"
        assert rec.heartbeat["update"]["installed"] == 1


class SlowLoad(FakeEngine):
    """A release whose load takes seconds (a large model on a slow disk)."""

    def load(self) -> None:
        time.sleep(4.0)
        super().load()


def test_heartbeats_go_on_while_an_update_installs(cs: ControlServer, tmp_path: Path) -> None:
    """The update check runs beside the heartbeat loop: a long install does not stop the
    node reporting (or hearing of revocations); its outcome is reported at once."""
    cs.cp.registry_publish(artifact(tmp_path / "b1", "gemma"), name="gemma", by="ops",
                           alias="stable")

    def slow(ec: Any, resolve: Any) -> FakeEngine:
        return SlowLoad(n_ctx=ec.n_ctx, model="release-" + Path(resolve().path).parts[-4])

    join_node(cs, "dev1", "device", tmp_path / "dev1" / "fleet")
    with registered_engine("slowfake", slow), NodeServer(
            tmp_path / "dev1" / "fleet", engine={"kind": "slowfake"},
            fleet={"heartbeat_s": 0.5, "update": {"model": "gemma", "alias": "stable"}}):
        end = time.monotonic() + 60
        installing: list[str] = []
        while time.monotonic() < end:
            rec = cs.cp.node("dev1")
            hb = (rec.heartbeat or {}) if rec is not None else {}
            state = (hb.get("update") or {}).get("state")
            if rec is not None and rec.last_seen is not None and state == "updating":
                installing.append(rec.last_seen.isoformat())
            if state == "current":
                break
            time.sleep(0.1)
        assert (hb.get("update") or {}).get("installed") == 1
        # several heartbeats arrived while the 4 s load ran (not one before, one after)
        assert len(set(installing)) >= 3, installing


@pytest.mark.parametrize(("profile", "takes"), [("pi5", True), ("tiny", False),
                                                ("laptop", False), (None, True)])
def test_a_node_takes_only_a_release_that_fits_its_hardware_profile(
        cs: ControlServer, tmp_path: Path, profile: str | None, takes: bool) -> None:
    """The release names the profiles one of its variants fits (the build's report:
    ``pi5``; ``tiny`` has no variant that fits); a node of another profile refuses it as
    wrong software before downloading anything, and keeps serving what it has."""
    cs.cp.registry_publish(artifact(tmp_path / "b1", "gemma"), name="gemma", by="ops",
                           alias="stable")
    join_node(cs, "dev1", "device", tmp_path / "dev1" / "fleet")
    update: dict[str, Any] = {"model": "gemma", "alias": "stable"}
    if profile is not None:
        update["profile"] = profile
    with NodeServer(tmp_path / "dev1" / "fleet", engine={"kind": "filefake"},
                    fleet={"heartbeat_s": 3600, "update": update}) as node:
        _update(node)
        st = node.agent.follower.status
        root = node.member.state.dir / "models" / "gemma"
        if takes:
            assert st.state == "current" and _served(node) == "release-1"
            return
        assert st.state == "refused" and st.installed is None
        assert f"released for hardware profile(s) pi5, not this node's {profile}" in (
            st.error or "")
        assert _served(node) == "fake-tiny"
        assert not root.exists() or not any(root.iterdir())  # nothing downloaded
        refused = [e.record.outcome for e in node.app.state.router.audit.query()
                   if e.record.route == "fleet/update"]
        assert refused == ["refused:wrong_software"]


def test_a_cancelled_round_closes_its_client_once_its_thread_is_done(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopping the agent cancels a round whose blocking step goes on in its thread (a
    thread cannot be stopped): the round's client is closed when that step ends, not from
    under it (a connection the thread was still opening would never be closed)."""
    entered, release = threading.Event(), threading.Event()
    events: list[str] = []

    class Updates:
        def available(self) -> dict[str, Any]:
            entered.set()
            release.wait(10)
            events.append("listed")
            return {}

        def fetch(self, *args: Any, **kw: Any) -> Path:
            events.append("fetch")
            raise OSError("the round was cancelled")

        def close(self) -> None:
            events.append("closed")

    monkeypatch.setattr(ModelFollower, "_updates", lambda self: Updates())
    state: Any = SimpleNamespace(dir=tmp_path, membership=lambda: SimpleNamespace(node="n1"))
    follower = ModelFollower(state, UpdateConfig(model="gemma"), control_url="https://cp",
                             client_tls=ssl.create_default_context(),
                             installer=SimpleNamespace())

    async def main() -> None:
        check = asyncio.create_task(follower.check())
        assert await asyncio.to_thread(entered.wait, 10)
        check.cancel()
        with pytest.raises(asyncio.CancelledError):
            await check
        assert events == []  # the step still runs: its client stays open
        release.set()
        end = time.monotonic() + 10
        while "closed" not in events and time.monotonic() < end:
            await asyncio.sleep(0.01)
        assert events == ["listed", "fetch", "closed"]

    asyncio.run(main())
