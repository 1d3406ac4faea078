"""The attack table (issue 12): each attack on a node's signed model updates, mounted
against a node that serves version 1 while clients keep asking it, with what the node
did, said and served meanwhile.

Everything but the attacker is the real code path. A control plane serves HTTPS in a
thread (:mod:`edgewise.control.app`) and releases each registry version
(:mod:`edgewise.control.release`: TUF targets, a model-signing signature, the signed
alias pointer). A node joins it (``edgewise join``'s code), builds its app
(:func:`edgewise.api.app.create_app`: agent, audit log, :class:`NodeInstaller`) and is
driven in-process over ``httpx.ASGITransport``. The attacker sits on the node's way to
the repository: the node's :class:`~edgewise.fleet.updates.ModelFollower` keeps the
app's installer and audit callback and downloads with the production
:class:`HttpxFetcher` over mutual TLS, but that fetcher's transport is a :class:`Mirror`
which relays to the control plane and answers some URLs itself (tampered or swapped
targets, replayed or forged metadata, endless or trickled bodies).

Each row runs on a fresh node (hardware profile ``laptop``, ``fleet.update.profile``)
and its own model name:

1. ``<model>@1`` is released under ``stable``, the control plane re-signs its timestamp
   (as it does routinely), and the node installs ``@1`` in an honest round;
2. clients start sending chat requests in a loop; ``<model>@2`` is released (there is an
   update to attack) and the attack is mounted; the node runs its update round(s)
   (``NodeAgent.update_once``);
3. the clients stop; a heartbeat carries the node's update state to the control plane,
   whose node page shows it;
4. recorded: the follower's state per round, the ``edgewise.fleet`` warnings and errors,
   the ``fleet/update`` records in the node's audit log, every request made meanwhile and
   which release answered it (the fake engine is named after the release folder it was
   built from: ``v1``), how many answers the attacker forged, and what besides the
   installed release is left in ``<state>/models/<model>/``.

The last row is the control: ``@2`` through the same path with no attacker is installed.

    .venv/bin/python bench/update_attacks.py [--clients 4] [--deadline-s 3]

Writes bench/results/update_attacks.json and bench/results/update_attacks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import html
import json
import logging
import os
import platform
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import httpx
from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api.metadata import Metadata
from tuf.api.serialization.json import JSONSerializer
from tuf.ngclient import FetcherInterface

from edgewise.api.app import create_app
from edgewise.artifacts.manifest import MANIFEST, Manifest, StageRecord
from edgewise.artifacts.variant import Variant
from edgewise.config import EngineConfig, parse_config
from edgewise.control.app import create_control_app
from edgewise.control.release import init_releases
from edgewise.control.service import ControlPlane
from edgewise.control.settings import ControlSettings, save_settings
from edgewise.distribution.repository import FleetRepository
from edgewise.distribution.updater import HttpxFetcher
from edgewise.engines.fake import FakeEngine
from edgewise.engines.registry import ENGINES, register_engine
from edgewise.fleet.agent import NodeAgent, join
from edgewise.fleet.member import FleetMember
from edgewise.fleet.updates import ModelFollower
from edgewise.node import Node
from edgewise.security.keys import generate_key, load_private_key
from edgewise.security.pki import init_ca, server_context
from edgewise.serving.server import build_server

RESULTS = Path(__file__).parent / "results"
PASSPHRASE = b"bench-passphrase-not-secret"
FLEET = "acme"
WEIGHTS = "model.q4_k_m.gguf"
CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
SOURCE = b"base model gguf bytes " * 64


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def release_engine(ec: EngineConfig, resolve: Callable[[], Any]) -> FakeEngine:
    """The fake engine, named after the release folder it was built from
    (``<state>/models/<model>/<version>/stages/quantize/<file>``): answers say ``v1``."""
    return FakeEngine(n_ctx=ec.n_ctx, model="v" + Path(resolve().path).parts[-4])


def artifact(root: Path, name: str, version: int, profiles: tuple[str, ...]) -> Path:
    """An artifact folder as ``edgewise build`` leaves it (one quantize stage, a GGUF
    variant, the hardware profiles it was built for); the weights differ per version."""
    art = root / f"{name}-{version}-{'-'.join(profiles)}"
    stage = art / "stages" / "quantize"
    stage.mkdir(parents=True)
    files = {WEIGHTS: f"GGUF {name} v{version} for {','.join(profiles)} ".encode() * 64,
             "tokenizer.json": b'{"vocab": {}}'}
    recorded = {}
    for rel, data in files.items():
        (stage / rel).write_bytes(data)
        recorded[f"stages/quantize/{rel}"] = {"sha256": sha(data), "size_bytes": len(data)}
    now = time.time()
    Manifest(path=art / MANIFEST, name=name, complete=True,
             recipe={"path": "recipe.yaml", "sha256": sha(f"recipe {version}".encode())},
             source={"name": "smollm2-135m", "path": str(root / "base.gguf"),
                     "format": "gguf", "sha256": sha(SOURCE), "size_bytes": len(SOURCE)},
             datasets={"calib": {"path": "calib.jsonl", "format": "chat",
                                 "sha256": sha(b"calibration data"), "size_bytes": 16}},
             stages=[StageRecord(id="quantize", kind="quantize", input="base",
                                 params={"method": "Q4_K_M"}, fingerprint="f" * 64,
                                 lineage=["quantize"], started=now, finished=now + 1,
                                 files=recorded)],
             variants=[Variant(name="q4_k_m", format="gguf", path=f"stages/quantize/{WEIGHTS}",
                               quantization="Q4_K_M", stage="quantize", lineage=["quantize"],
                               size_bytes=len(files[WEIGHTS]), metrics={"task_accuracy": 0.8})],
             profiles=[{"profile": p, "best": "q4_k_m", "variants": []} for p in profiles]
             ).save()
    return art


# -- the control plane, served for real ----------------------------------------------------
class ControlServer:
    """``edgewise control serve`` (HTTPS, client certificates optional) in a thread."""

    def __init__(self, directory: Path) -> None:
        init_ca(directory, fleet=FLEET, passphrase=PASSPHRASE)
        save_settings(directory, ControlSettings(fleet=FLEET, heartbeat_s=3600))
        init_releases(directory / "tuf", passphrase=PASSPHRASE)
        self.cp = ControlPlane(directory)  # reads $EDGEWISE_CA_PASSPHRASE: it releases
        if self.cp.releases is None:
            raise RuntimeError(f"{directory}: the control plane has no TUF repository")
        self.repo: FleetRepository = self.cp.releases.repo
        self.url = f"https://127.0.0.1:{free_port()}"
        files = self.cp.files
        ctx = server_context(files.server_cert, files.server_key, files.root_cert,
                             client_certs="optional")
        cfg = parse_config({"node": {"host": "127.0.0.1", "port": int(self.url.rsplit(":", 1)[1]),
                                     "name": "control"}, "serving": {"drain_timeout_s": 0}})
        self.server = build_server(create_control_app(self.cp), cfg, ssl_context=ctx,
                                   log_level="warning", timeout_graceful_shutdown=1)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", verify=False, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"the control plane at {self.url} did not come up in 30 s")

    def target_url(self, path: str) -> str:
        """The consistent-snapshot URL of target ``path`` (``<dir>/<sha256>.<name>``)."""
        info = next((t for t in self.repo.targets() if t.path == path), None)
        if info is None:
            raise RuntimeError(f"the repository lists no target {path}")
        head, _, name = path.rpartition("/")
        return f"{self.url}/tuf/targets/{head}/{info.sha256}.{name}"

    def node_page_update(self, node: str) -> str | None:
        """What the control plane's node page shows under "Model updates"."""
        admin = self.cp.issue_access_token(subject="bench", scopes=["admin"],
                                           ttl=timedelta(minutes=5), by="bench")
        r = httpx.get(f"{self.url}/nodes/{node}", verify=str(self.cp.files.root_cert),
                      headers={"Authorization": f"Bearer {admin}"}, timeout=10)
        found = re.search(r'<dd id="node-update">(.*?)</dd>', r.text, re.S)
        return html.unescape(found.group(1)).strip() if found else None

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.cp.close()


# -- the attacker: a mirror on the node's way to the repository ----------------------------
Answer = Callable[[str], httpx.Response | None]


def ok(data: bytes) -> httpx.Response:
    return httpx.Response(200, content=data)


class Endless(httpx.SyncByteStream):
    def __iter__(self) -> Iterator[bytes]:
        while True:
            yield b"\0" * 65536


class Trickle(httpx.SyncByteStream):
    """``data`` a few bytes at a time, ``gap_s`` apart (under the read timeout)."""

    def __init__(self, data: bytes, gap_s: float) -> None:
        self.data, self.gap_s = data, gap_s

    def __iter__(self) -> Iterator[bytes]:
        for i in range(0, len(self.data), 8):
            time.sleep(self.gap_s)
            yield self.data[i:i + 8]


class Mirror(httpx.BaseTransport):
    """Relays to the control plane (mutual TLS with the node's context) unless
    ``answer(url)`` gives a response of the attacker's own."""

    def __init__(self, tls: Any) -> None:
        self.tls = tls
        self.answer: Answer | None = None
        self.forged: list[str] = []
        self._upstream: httpx.HTTPTransport | None = None

    def _up(self) -> httpx.HTTPTransport:
        if self._upstream is None:
            self._upstream = httpx.HTTPTransport(verify=self.tls)
        return self._upstream

    def real(self, url: str) -> bytes:
        """What the control plane serves at ``url`` (the attacker can read it too)."""
        r = self._up().handle_request(httpx.Request("GET", url))
        try:
            r.read()
        finally:
            r.close()
        if r.status_code != 200:
            raise RuntimeError(f"the control plane answered {url} with {r.status_code}")
        return r.content

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        forged = self.answer(str(request.url)) if self.answer is not None else None
        if forged is not None:
            self.forged.append(str(request.url))
            return forged
        return self._up().handle_request(request)

    def close(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
            self._upstream = None


class RoundFetcher(FetcherInterface):
    """The production :class:`HttpxFetcher`, a new one per round (the follower's
    ``ModelUpdates`` closes its fetcher after each round), over the mirror."""

    def __init__(self, mirror: Mirror, deadline_s: float) -> None:
        self.mirror, self.deadline_s = mirror, deadline_s
        self._current: HttpxFetcher | None = None

    def _fetch(self, url: str) -> Iterator[bytes]:
        if self._current is None:
            self._current = HttpxFetcher(transport=self.mirror, deadline_s=self.deadline_s)
        return self._current.fetch(url)

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None


def from_dir(metadata: Path, targets: Path | None = None, *, relay: bool = True) -> Answer:
    """Serve metadata from ``metadata`` (404 for what it lacks) and targets from
    ``targets`` where it has them, else relayed (``relay``) or 404."""
    def answer(url: str) -> httpx.Response | None:
        kind, _, rel = url.split("/tuf/", 1)[1].partition("/")
        if kind == "metadata":
            p = metadata / rel
            return ok(p.read_bytes()) if p.is_file() else httpx.Response(404)
        if targets is not None and (targets / rel).is_file():
            return ok((targets / rel).read_bytes())
        return None if relay else httpx.Response(404)
    return answer


def signed(md: Metadata[Any], key: Any) -> bytes:
    md.signatures.clear()
    md.sign(CryptoSigner(key))
    return md.to_bytes(JSONSerializer())


# -- a node and one row --------------------------------------------------------------------
class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Victim:
    name: str
    node: Node
    app: Any
    agent: NodeAgent
    follower: ModelFollower
    mirror: Mirror
    models_dir: Path


@dataclass
class Row:
    """One attack's run; what an attack's ``mount`` works with."""

    control: ControlServer
    model: str
    tmp: Path
    logs: Captured
    victim: Victim | None = None
    before: Path | None = None  # the repository's metadata before the node's last check
    phases: list[dict[str, Any]] = field(default_factory=list)

    @property
    def v(self) -> Victim:
        assert self.victim is not None
        return self.victim

    async def release(self, version: int, *, alias: str = "stable",
                      profiles: tuple[str, ...] = ("laptop",)) -> None:
        art = artifact(self.tmp / "src", self.model, version, profiles)
        got, _ = await asyncio.to_thread(self.control.cp.registry_publish, art,
                                         name=self.model, by="bench", alias=alias)
        if got.version != version:
            raise RuntimeError(f"published {self.model}@{got.version}, not @{version}")

    def url(self, version: int, rel: str) -> str:
        return self.control.target_url(f"{self.model}/{version}/{rel}")

    def _audit(self) -> list[tuple[str, str]]:
        audit = self.v.app.state.router.audit
        return [(e.record.outcome, e.record.reason) for e in audit.query()
                if e.record.route == "fleet/update"]

    async def round(self, label: str) -> dict[str, Any]:
        """One update round of the node; what it did, logged and audited."""
        logs0, audit0, forged0 = len(self.logs.records), len(self._audit()), \
            len(self.v.mirror.forged)
        started = time.monotonic()
        await self.v.agent.update_once(force=True)
        took = time.monotonic() - started
        st = self.v.follower.status
        state = str(self.v.models_dir.parent.parent)  # the node's state dir, shortened

        def short(text: str) -> str:
            return text.replace(state, "<state>")
        lines = [short(r.getMessage()) for r in self.logs.records[logs0:]
                 if r.levelno >= logging.WARNING]
        audit = [(o, short(r)) for o, r in self._audit()[audit0:]]
        kind = next((o.split(":", 1)[1] for o, _ in audit if ":" in o), None)
        if kind is None:
            kind = next((m.group(1) for line in lines
                         if (m := re.search(r"model update refused \((\w+)\)", line))), None)
        phase = {"phase": label, "state": st.state, "installed": st.installed,
                 "target": st.target, "error": short(st.error or "")[:120] or None, "kind": kind,
                 "lines": lines, "audit": [{"outcome": o, "reason": r[:200]} for o, r in audit],
                 "forged_answers": len(self.v.mirror.forged) - forged0, "took_s": round(took, 3)}
        self.phases.append(phase)
        return phase


async def new_victim(row: Row, name: str, deadline_s: float) -> Victim:
    """A node that joined the fleet (the real join), following ``row.model``'s
    ``stable``, serving the configured fake model until its first update."""
    c = row.control
    state_dir = row.tmp / name / "fleet"
    token = c.cp.create_join_token(node=name, tier="device", by="bench")[0]
    await asyncio.to_thread(join, c.url, token=token, ca_sha256=c.cp.ca.root_fingerprint,
                            state_dir=state_dir, node=name)
    cfg = parse_config({
        "node": {"host": "127.0.0.1", "port": free_port()},
        "engine": {"kind": "release"}, "privacy": {"enabled": False},
        "fleet": {"state_dir": str(state_dir), "heartbeat_s": 3600,
                  "update": {"model": row.model, "alias": "stable",
                             "profile": "laptop"}},
        "audit": {"path": str(row.tmp / name / "audit.sqlite")},
        "routing": {"jobs_path": str(row.tmp / name / "jobs.sqlite")}})
    member = FleetMember.open(cfg)
    if member is None:
        raise RuntimeError(f"{state_dir}: the node did not join")
    m = member.membership
    cfg = cfg.replace(node={"name": m.node, "tier": m.tier})
    node = Node(cfg, FakeEngine(n_ctx=2048))
    app = create_app(node, member=member, manage_lifecycle=False)
    agent: NodeAgent = app.state.agent
    own = agent.follower
    if own is None:
        raise RuntimeError("the node's app made no model follower (no TUF root at join?)")
    mirror = Mirror(member.client_tls)
    # The app's own follower, but downloading through the mirror.
    follower = ModelFollower(member.state, cfg.fleet.update, control_url=m.control_url,
                             client_tls=member.client_tls, installer=own.installer,
                             audit=own.audit, fetcher=RoundFetcher(mirror, deadline_s))
    agent.follower = follower
    await node.start()
    app.state.router.start()
    return Victim(name=name, node=node, app=app, agent=agent, follower=follower,
                  mirror=mirror, models_dir=member.state.dir / "models" / row.model)


async def close_victim(v: Victim) -> None:
    await v.agent.stop()
    await v.app.state.router.stop()
    await v.node.stop()


async def clients(app: Any, n: int, pause_s: float, stop: asyncio.Event
                  ) -> list[tuple[int, str]]:
    """``n`` clients asking the node in a loop until ``stop``: (status, model) each."""
    out: list[tuple[int, str]] = []

    async def one() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://node", timeout=30) as c:
            while not stop.is_set():
                try:
                    r = await c.post("/v1/chat/completions", json=CHAT)
                    out.append((r.status_code, str(r.json().get("model", ""))
                                if r.status_code == 200 else r.text[:80]))
                except Exception as exc:  # a failed request is a result, not a crash
                    out.append((0, type(exc).__name__))
                await asyncio.sleep(pause_s)

    await asyncio.gather(*(one() for _ in range(n)))
    return out


# -- the attacks ---------------------------------------------------------------------------
Mount = Callable[[Row], Awaitable[None]]


@dataclass(frozen=True)
class Attack:
    key: str  # also the row's model name
    title: str
    how: str
    mount: Mount
    #: Run after the clients stop (and after the heartbeat): a recovery step.
    recover: Mount | None = None


async def tampered(row: Row) -> None:
    await row.release(2)
    url = row.url(2, f"stages/quantize/{WEIGHTS}")

    def answer(u: str) -> httpx.Response | None:
        if u != url:
            return None
        data = bytearray(row.v.mirror.real(u))
        data[8] ^= 1  # same length, one bit off
        return ok(bytes(data))
    row.v.mirror.answer = answer
    await row.round("update to @2")


async def rollback(row: Row) -> None:
    await row.release(2)
    assert row.before is not None
    row.v.mirror.answer = from_dir(row.before)
    await row.round("update to @2")


async def freeze(row: Row) -> None:
    # The mirror stops at the node's last state; its last timestamp has expired. A day's
    # wait is simulated: that timestamp is signed with the fleet's key, expiry a day back.
    repo = row.control.repo
    ts = repo.load("timestamp")
    ts.signed.version += 1
    ts.signed.expires = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    expired = signed(ts, load_private_key((repo.keys_dir / "timestamp.key").read_bytes()))
    await row.release(2)
    row.v.mirror.answer = lambda u: ok(expired) if u.endswith("/metadata/timestamp.json") \
        else None
    await row.round("update to @2")


def _fast_forwarded(row: Row, key: Any) -> bytes:
    ts = row.control.repo.load("timestamp")
    ts.signed.version = 10**6
    return signed(ts, key)


async def fast_forward_unsigned(row: Row) -> None:
    await row.release(2)
    forged = _fast_forwarded(row, generate_key())
    row.v.mirror.answer = lambda u: ok(forged) if u.endswith("/metadata/timestamp.json") \
        else None
    await row.round("update to @2")


async def fast_forward_stolen(row: Row) -> None:
    key = load_private_key((row.control.repo.keys_dir / "timestamp.key").read_bytes())
    forged = _fast_forwarded(row, key)
    row.v.mirror.answer = lambda u: ok(forged) if u.endswith("/metadata/timestamp.json") \
        else None
    await row.round("attacker's timestamp v1000000")
    row.v.mirror.answer = None
    await row.release(2)
    await row.round("the fleet releases @2 (honest mirror)")


async def rotate_timestamp_key(row: Row) -> None:
    await asyncio.to_thread(row.control.repo.rotate, "timestamp")
    await row.round("after the fleet rotates its timestamp key")


async def mix_and_match(row: Row) -> None:
    await row.release(2)
    assert row.before is not None
    old = max(row.before.glob("*.targets.json"), key=lambda p: int(p.name.split(".")[0]))
    data = old.read_bytes()
    row.v.mirror.answer = lambda u: ok(data) if re.search(
        r"/metadata/\d+\.targets\.json$", u) else None
    await row.round("update to @2")


async def endless(row: Row) -> None:
    await row.release(2)
    url = row.url(2, f"stages/quantize/{WEIGHTS}")
    row.v.mirror.answer = lambda u: httpx.Response(200, stream=Endless()) if u == url else None
    await row.round("update to @2")


async def slow(row: Row) -> None:
    await row.release(2)
    url = row.url(2, f"stages/quantize/{WEIGHTS}")
    real = row.v.mirror.real(url)
    row.v.mirror.answer = lambda u: httpx.Response(200, stream=Trickle(real, 0.25)) \
        if u == url else None
    await row.round("update to @2")


async def own_keys(row: Row) -> None:
    await row.release(2)
    evil = FleetRepository.init(row.tmp / "evil-tuf", passphrase=PASSPHRASE)
    art = artifact(row.tmp / "evil-src", row.model, 9, ("laptop",))
    pointer = row.tmp / "evil-aliases.json"
    pointer.write_text(json.dumps({"aliases": {"stable": 9}, "rollout": None}))
    evil.add_targets([
        (f"{row.model}/aliases.json", pointer, {"model": row.model, "aliases": True}),
        (f"{row.model}/9/stages/quantize/{WEIGHTS}", art / "stages" / "quantize" / WEIGHTS,
         {"model": row.model, "version": 9, "kind": "model", "profiles": ["laptop"]})])
    row.v.mirror.answer = from_dir(evil.metadata_dir, evil.targets_dir, relay=False)
    await row.round("update to @2")


async def wrong_model(row: Row) -> None:
    await row.release(2)
    url = row.url(2, f"stages/quantize/{WEIGHTS}")
    other = row.control.target_url(f"other-model/1/stages/quantize/{WEIGHTS}")
    row.v.mirror.answer = lambda u: ok(row.v.mirror.real(other)) if u == url else None
    await row.round("update to @2")


async def wrong_profile(row: Row) -> None:
    await row.release(2)
    await row.release(3, alias="pi", profiles=("raspberry-pi",))
    url = row.url(2, f"stages/quantize/{WEIGHTS}")
    pi = row.url(3, f"stages/quantize/{WEIGHTS}")
    row.v.mirror.answer = lambda u: ok(row.v.mirror.real(pi)) if u == url else None
    await row.round("update to @2")


async def other_hardware(row: Row) -> None:
    await row.release(2, profiles=("raspberry-pi",))
    await row.round("update to @2")


async def key_below_threshold(row: Row) -> None:
    await row.release(2)
    repo = row.control.repo
    root = repo.load("root")
    mine = generate_key()
    for keyid in list(root.signed.roles["timestamp"].keyids):
        root.signed.revoke_key(keyid, "timestamp")
    root.signed.add_key(SSlibKey.from_crypto(mine.public_key()), "timestamp")
    root.signed.version += 1
    stolen = load_private_key((repo.keys_dir / "root-1.key").read_bytes(),
                              passphrase=PASSPHRASE)
    new_root = signed(root, stolen)  # 1 of the 3 root keys; the threshold is 2
    ts = repo.load("timestamp")
    ts.signed.version += 1
    new_ts = signed(ts, mine)
    root_name = f"/metadata/{root.signed.version}.root.json"

    def answer(u: str) -> httpx.Response | None:
        if u.endswith(root_name):
            return ok(new_root)
        return ok(new_ts) if u.endswith("/metadata/timestamp.json") else None
    row.v.mirror.answer = answer
    await row.round("update to @2")


async def old_release(row: Row) -> None:
    await row.release(2)
    prefix = f"{row.model}/2/"
    old = {t.path.removeprefix(prefix): t for t in row.control.repo.targets()
           if t.path.startswith(prefix)}
    swap = {row.url(2, rel): row.url(1, rel) for rel in old}  # each file of @2 -> @1's

    def answer(u: str) -> httpx.Response | None:
        return ok(row.v.mirror.real(swap[u])) if u in swap else None
    row.v.mirror.answer = answer
    await row.round("update to @2")


async def signature_mismatch(row: Row) -> None:
    # An attacker with the fleet's TUF keys (not the release key) re-signs @2 with other
    # weights; @2's model-signing signature is served as released.
    await row.release(2)
    copy = row.tmp / "stolen-tuf"
    shutil.copytree(row.control.repo.dir, copy)
    repo = FleetRepository(copy, passphrase=PASSPHRASE)
    path = f"{row.model}/2/stages/quantize/{WEIGHTS}"
    info = next(t for t in repo.targets() if t.path == path)
    evil = row.tmp / "evil-weights.gguf"
    data = bytearray(row.v.mirror.real(row.url(2, f"stages/quantize/{WEIGHTS}")))
    data[8] ^= 1
    evil.write_bytes(bytes(data))
    repo.add_targets([(path, evil, info.custom)])
    row.v.mirror.answer = from_dir(repo.metadata_dir, repo.targets_dir)
    await row.round("update to @2")


async def control_release(row: Row) -> None:
    await row.release(2)
    await row.round("update to @2")


ATTACKS = [
    Attack("tampered", "arbitrary software (tampered bytes)",
           "@2's weights served with one bit flipped (same length)", tampered),
    Attack("rollback", "rollback (older metadata)",
           "all metadata replayed from before the node's last check (older versions, "
           "validly signed)", rollback),
    Attack("freeze", "indefinite freeze",
           "a validly signed timestamp that expired a day ago instead of the fresh one "
           "(the day's wait simulated by the expiry)", freeze),
    Attack("ff-unsigned", "fast-forward (no key)",
           "timestamp version 1000000, signed with the attacker's own key", fast_forward_unsigned),
    Attack("ff-stolen", "fast-forward (stolen timestamp key)",
           "timestamp version 1000000 signed with the fleet's timestamp key, then the real "
           "@2 release through an honest mirror; recovery: the fleet rotates the key",
           fast_forward_stolen, recover=rotate_timestamp_key),
    Attack("mix-and-match", "mix-and-match metadata",
           "today's timestamp and snapshot with the targets metadata from before @2 under "
           "today's name", mix_and_match),
    Attack("endless", "endless data",
           "@2's weights answered with an endless stream", endless),
    Attack("slow", "slow retrieval",
           "@2's weights trickled, 8 bytes every 0.25 s (under the read timeout)", slow),
    Attack("own-keys", "malicious mirror (its own keys)",
           "a whole repository of the mirror's own keys naming @9 as stable", own_keys),
    Attack("wrong-model", "wrong software (another model)",
           "@2's weights answered with another model's released weights", wrong_model),
    Attack("wrong-profile", "wrong software (another profile)",
           "@2's weights answered with this model's build for raspberry-pi (@3, alias pi)",
           wrong_profile),
    Attack("wrong-hardware", "wrong software (a release for other hardware)",
           "@2 released (validly signed) for raspberry-pi only; the node is a laptop",
           other_hardware),
    Attack("key-compromise", "key compromise below the threshold",
           "a new root trusting the attacker's timestamp key, signed with 1 of the 3 root "
           "keys (threshold 2), and a timestamp signed with that key", key_below_threshold),
    Attack("old-release", "old but validly signed release",
           "every file of @2 answered with @1's (validly signed, older release)", old_release),
    Attack("sig-mismatch", "model-signing signature does not match",
           "@2 re-signed in TUF with other weights by holders of the fleet's TUF keys; "
           "@2's model-signing signature served as released", signature_mismatch),
]
CONTROL = Attack("control", "control: legitimate @2",
                 "@2 released, no attacker", control_release)


# -- running a row -------------------------------------------------------------------------
async def run_row(control: ControlServer, attack: Attack, tmp: Path, logs: Captured,
                  args: argparse.Namespace) -> dict[str, Any]:
    row = Row(control=control, model=attack.key, tmp=tmp / "rows" / attack.key, logs=logs)
    row.tmp.mkdir(parents=True)
    await row.release(1)
    row.before = row.tmp / "metadata-before"
    shutil.copytree(control.repo.metadata_dir, row.before)
    await asyncio.to_thread(control.repo.refresh_timestamp)  # the control plane's routine
    row.victim = v = await new_victim(row, f"node-{attack.key}", args.deadline_s)
    setup = await row.round("install @1")
    row.phases.clear()
    if setup["installed"] != 1 or setup["state"] != "current":
        raise RuntimeError(f"{attack.key}: the node did not install @1 honestly: {setup}")
    stop = asyncio.Event()
    load = asyncio.create_task(clients(v.app, args.clients, args.pause_s, stop))
    started = time.monotonic()
    await asyncio.sleep(0.2)  # the clients are in full flow before the attack
    crash = None
    try:
        await attack.mount(row)
    except Exception as exc:  # the node's round raised (it must not): a finding, not the end
        crash = f"{type(exc).__name__}: {exc}"[:300]
        st = v.follower.status
        row.phases.append({"phase": "crashed", "state": st.state, "installed": st.installed,
                           "target": st.target, "error": crash, "kind": None, "lines": [],
                           "audit": [], "forged_answers": len(v.mirror.forged),
                           "took_s": None})
    await asyncio.sleep(max(0.2, args.min_window_s - (time.monotonic() - started)))
    stop.set()
    requests = await load
    window = time.monotonic() - started
    attack_phases = list(row.phases)
    await v.agent.heartbeat_once()
    rec = await asyncio.to_thread(control.cp.node, v.name)
    heartbeat = (rec.heartbeat or {}).get("update") if rec is not None else None
    page = await asyncio.to_thread(control.node_page_update, v.name)
    if page is not None:
        page = page.replace(str(v.models_dir.parent.parent), "<state>")
    recovery = None
    if attack.recover is not None:
        row.phases.clear()
        await attack.recover(row)
        recovery = row.phases[-1]
    installed = {"current.json"} | {f"{n}{ext}" for n in (1, v.follower.status.installed)
                                    for ext in ("", ".sig")}
    left = sorted(p.name for p in v.models_dir.iterdir() if p.name not in installed)
    released = {t.path: t.sha256 for t in control.repo.targets()}
    staged = [{"file": str(f.relative_to(v.models_dir)),
               "released_bytes": released.get(f"{row.model}/{d.name.split('.')[1]}/"
                                              f"{f.relative_to(d).as_posix()}")
               == sha(f.read_bytes())}
              for d in sorted(v.models_dir.glob(".*.staging")) for f in sorted(d.rglob("*"))
              if f.is_file()]
    await close_victim(v)
    served = Counter(m for s, m in requests if s == 200)
    last = attack_phases[-1]
    return {
        "key": attack.key, "attack": attack.title, "how": attack.how,
        "phases": attack_phases, "recovery": recovery,
        "refused": last["state"] in ("refused", "unreachable") and last["installed"] == 1
        and set(served) == {"v1"} and not any(n.isdigit() for n in left) and crash is None,
        "crash": crash,
        "kind": last["kind"], "state": last["state"], "installed": last["installed"],
        "error": last["error"],
        "lines": [line for p in attack_phases for line in p["lines"]],
        "audit": [a["outcome"] for p in attack_phases for a in p["audit"]],
        "heartbeat_update": heartbeat, "node_page": page,
        "requests": len(requests), "failed": sum(1 for s, _ in requests if s != 200),
        "failures": sorted({f"{s} {m}" for s, m in requests if s != 200}),
        "served": dict(sorted(served.items())), "window_s": round(window, 2),
        "forged_answers": sum(p["forged_answers"] for p in attack_phases),
        "left_in_models_dir": left, "staged_files": staged,
        "unverified_version_dir": any(n.isdigit() for n in left),
    }


def outcome(r: dict[str, Any]) -> str:
    def one(p: dict[str, Any]) -> str:
        if p["state"] == "refused":
            return f"refused ({p['kind']})" if p["installed"] == 1 else \
                f"refused ({p['kind']}), serving v{p['installed']}"
        if p["state"] == "unreachable":
            return "unreachable" + ("" if p["kind"] else ", no attack named") + \
                ("" if p["audit"] else ", not audited")
        return f"{p['state']}, serving v{p['installed']}"
    text = "; then ".join(one(p) for p in r["phases"])
    if r["crash"] is not None:
        text = f"**CRASHED** ({r['crash'][:100]}); {text}"
    if r["key"] != "control" and not r["refused"]:
        text = f"**NOT REFUSED**: {text}"
    if r["recovery"] is not None:
        text += f"; recovery ({r['recovery']['phase']}): {one(r['recovery'])}"
    return text


def markdown(out: dict[str, Any]) -> str:
    s = out["settings"]
    lines = ["## Attacks on signed model updates: what the node did and served meanwhile", "",
             f"Each row: a fresh node serving @1 of its model (installed through the real "
             f"signed path), {s['clients']} clients asking it in a loop, @2 released and the "
             f"attack mounted by the mirror between the node and the control plane, then "
             f"the node's update round(s). Download deadline {s['deadline_s']:g} s (the "
             f"node's default is 300 s). {out['took_s']:.0f} s in all on {out['machine']}.",
             "",
             "| attack | how it was mounted | outcome | node's line (abridged) | audit | "
             "requests during (failed) | served meanwhile | left in the model dir |",
             "|---|---|---|---|---|---|---|---|"]
    for r in out["rows"]:
        line = r["lines"][0] if r["lines"] else "—"
        line = (line[:117] + "…") if len(line) > 118 else line
        if len(r["lines"]) > 1:
            line += f" (+{len(r['lines']) - 1} more)"
        served = ", ".join(f"{k} ×{n}" for k, n in r["served"].items()) or "—"
        left = ", ".join(r["left_in_models_dir"]) or "nothing"
        if r["staged_files"]:
            bad = sum(1 for f in r["staged_files"] if not f["released_bytes"])
            left += f": {len(r['staged_files'])} file(s), {bad} not the released bytes"
        lines.append(
            f"| {r['attack']} | {r['how']} (forged answers: {r['forged_answers']}) | "
            f"{outcome(r)} | {line.replace('|', '/')} | {', '.join(r['audit']) or '—'} | "
            f"{r['requests']} ({r['failed']}) | {served} | {left} |")
    attacks = [r for r in out["rows"] if r["key"] != "control"]
    control = next((r for r in out["rows"] if r["key"] == "control"), None)
    lines += ["", f"Refused: {sum(r['refused'] for r in attacks)} of {len(attacks)} attacks; "
              f"requests during them {sum(r['requests'] for r in attacks)}, failed "
              f"{sum(r['failed'] for r in attacks)}, answered by another release than v1 "
              f"{sum(n for r in attacks for k, n in r['served'].items() if k != 'v1')}."]
    if control is not None:
        lines += [f"Control: the legitimate @2 {'was' if control['installed'] == 2 else 'was NOT'}"
                  f" installed through the same path ({outcome(control)})."]
    lines += ["", "The control plane's node page (\"Model updates\", from the heartbeat):", ""]
    lines += [f"- {r['key']}: {r['node_page'] or '—'}"[:220] for r in out["rows"]]
    return "\n".join(lines) + "\n"


async def main_async(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    os.environ["EDGEWISE_CA_PASSPHRASE"] = PASSPHRASE.decode()
    logs = Captured()
    fleet_log = logging.getLogger("edgewise.fleet")
    fleet_log.setLevel(logging.INFO)
    fleet_log.addHandler(logs)
    fleet_log.propagate = False  # captured for the table, not printed
    control = await asyncio.to_thread(ControlServer, tmp / "control-plane")
    rows = []
    try:
        other = artifact(tmp / "other-src", "other-model", 1, ("laptop",))
        await asyncio.to_thread(control.cp.registry_publish, other, name="other-model",
                                by="bench", alias="stable")
        chosen = [a for a in ATTACKS if not args.only or a.key in args.only] + [CONTROL]
        for attack in chosen:
            t = time.monotonic()
            r = await run_row(control, attack, tmp, logs, args)
            rows.append(r)
            progress(f"{attack.key:15s} {outcome(r)[:90]}  ({time.monotonic() - t:.1f} s, "
                     f"{r['requests']} requests, {r['failed']} failed)")
    finally:
        await asyncio.to_thread(control.stop)
        fleet_log.removeHandler(logs)
        fleet_log.propagate = True
    return {"rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=4, help="concurrent clients per row")
    ap.add_argument("--pause-s", type=float, default=0.01,
                    help="each client's pause between two requests")
    ap.add_argument("--min-window-s", type=float, default=1.0,
                    help="shortest time clients keep asking during an attack")
    ap.add_argument("--deadline-s", type=float, default=3.0,
                    help="the node's per-file download deadline (HttpxFetcher; default 300)")
    ap.add_argument("--only", nargs="*", default=[], help="run only these attack keys")
    args = ap.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # the table says what the node logged
    register_engine("release", release_engine)
    started, began = time.monotonic(), datetime.now(UTC)
    try:
        with tempfile.TemporaryDirectory(prefix="edgewise-bench-attacks-") as tmp:
            out = asyncio.run(main_async(args, Path(tmp)))
    finally:
        ENGINES.unregister("release")
    result = {"machine": f"{platform.processor() or platform.machine()}, "
                         f"{os.cpu_count()} cores, Python {platform.python_version()}",
              "versions": {p: package_version(p) for p in ("tuf", "model-signing", "httpx")},
              "settings": {"clients": args.clients, "pause_s": args.pause_s,
                           "min_window_s": args.min_window_s, "deadline_s": args.deadline_s},
              "started": began.isoformat(timespec="seconds"),
              "took_s": round(time.monotonic() - started, 1), **out}
    if not args.only:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "update_attacks.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / "update_attacks.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
