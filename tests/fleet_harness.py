"""A real fleet on loopback for tests: a control plane and nodes served with real TLS by
edgewise's own server (:mod:`edgewise.serving.server`), each in a thread of the test
process so a test can look inside them.

``control_dir(path)`` creates a control plane directory (CA, settings) fast, in-process;
``ControlServer`` serves it; ``join_node`` runs the real ``edgewise join`` code path
against it; ``NodeServer`` serves a fake-engine node that joined (HTTPS when
``serving.tls`` is on) with its agent.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from conftest import free_port
from edgewise.api.app import create_app
from edgewise.config import EdgewiseConfig, parse_config
from edgewise.control.app import create_control_app
from edgewise.control.service import ControlPlane
from edgewise.control.settings import ControlSettings, save_settings
from edgewise.engines.fake import FakeEngine
from edgewise.fleet.agent import join
from edgewise.fleet.member import FleetMember
from edgewise.fleet.state import FleetState
from edgewise.node import Node
from edgewise.security.pki import init_ca, node_dns, server_context
from edgewise.serving.server import NodeServer as _Server
from edgewise.serving.server import build_server

__all__ = ["ControlServer", "NodeServer", "SNITransport", "control_dir", "join_node",
           "node_client", "releasing_control_dir"]

PASSPHRASE = b"test-passphrase-not-secret"


def control_dir(path: Path, *, fleet: str = "acme", heartbeat_s: float = 1.0,
                database_url: str | None = None, **settings: Any) -> str:
    """A new control plane directory; returns the CA fingerprint."""
    ca = init_ca(path, fleet=fleet, passphrase=PASSPHRASE)
    save_settings(path, ControlSettings(fleet=fleet, heartbeat_s=heartbeat_s,
                                        database_url=database_url, **settings))
    return ca.root_fingerprint


def releasing_control(tmp_path: Path, monkeypatch: Any) -> Iterator[ControlServer]:
    """A running control plane that releases to nodes (for a fixture: ``yield from``)."""
    d = tmp_path / "ctl"
    releasing_control_dir(d, monkeypatch)
    with ControlServer(d) as c:
        yield c


@contextlib.contextmanager
def registered_engine(name: str, factory: Any) -> Iterator[None]:
    """Engine ``name`` registered for the duration (a test's own fake engine)."""
    from edgewise.engines.registry import ENGINES, register_engine

    register_engine(name, factory)
    try:
        yield
    finally:
        ENGINES.unregister(name)


def releasing_control_dir(path: Path, monkeypatch: Any, **settings: Any) -> str:
    """:func:`control_dir` plus the fleet's TUF repository and release key, with the
    passphrase in the environment so the control plane can sign releases."""
    from edgewise.control.release import init_releases

    fpr = control_dir(path, **settings)
    init_releases(path / "tuf", passphrase=PASSPHRASE)
    monkeypatch.setenv("EDGEWISE_CA_PASSPHRASE", PASSPHRASE.decode())
    return fpr


class _Threaded:
    server: _Server

    def _start(self, url: str, ctx: ssl.SSLContext | None, probe: str,
               cert: tuple[str, str] | None = None) -> None:
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        # Readiness only (the tests check identities themselves); with the node's own
        # certificate, so a node that requires client certificates lets it in.
        verify: Any = ssl.create_default_context()
        verify.check_hostname = False
        verify.verify_mode = ssl.CERT_NONE
        if cert is not None:
            verify.load_cert_chain(*cert)
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + probe, timeout=1, verify=verify).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{url} did not come up")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ControlServer(_Threaded):
    """``edgewise control serve`` for ``directory``, on a free port."""

    def __init__(self, directory: Path, *, database_url: str | None = None) -> None:
        self.dir = directory
        self.cp = ControlPlane(directory, database_url=database_url)
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.fingerprint = self.cp.ca.root_fingerprint
        ctx = server_context(self.cp.files.server_cert, self.cp.files.server_key,
                             self.cp.files.root_cert, client_certs="optional")
        cfg = parse_config({"node": {"host": "127.0.0.1", "port": self.port, "name": "control"},
                            "serving": {"drain_timeout_s": 0}})
        self.server = build_server(create_control_app(self.cp), cfg, ssl_context=ctx,
                                   log_level="warning", timeout_graceful_shutdown=1)
        self._start(self.url, ctx, "/healthz")

    def token(self, node: str, tier: str, ttl: timedelta | None = None,
              hosts: tuple[str, ...] = ()) -> str:
        return self.cp.create_join_token(node=node, tier=tier, ttl=ttl, by="test",
                                         hosts=hosts)[0]

    def access_token(self, *scopes: str, subject: str = "tester",
                     node: str | None = None, ttl: timedelta = timedelta(minutes=5)) -> str:
        return self.cp.issue_access_token(subject=subject, scopes=list(scopes), ttl=ttl,
                                          node=node, by="test")

    def stop(self) -> None:
        super().stop()
        self.cp.close()


def join_node(control: ControlServer, name: str, tier: str, state_dir: Path, *,
              hosts: tuple[str, ...] = ()) -> FleetState:
    join(control.url, token=control.token(name, tier, hosts=hosts),
         ca_sha256=control.fingerprint, state_dir=state_dir, node=name)
    return FleetState(state_dir)


def node_config(state_dir: Path, *, port: int, **sections: Any) -> EdgewiseConfig:
    data: dict[str, Any] = {
        "node": {"host": "127.0.0.1", "port": port},
        "engine": {"kind": "fake"},
        "privacy": {"enabled": False},
        "fleet": {"state_dir": str(state_dir)},
        "audit": {"path": str(state_dir.parent / "audit.sqlite")},
        "routing": {"jobs_path": str(state_dir.parent / "jobs.sqlite")},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_config(data)


class NodeServer(_Threaded):
    """A joined fake-engine node (``state_dir`` from :func:`join_node`) with its agent."""

    def __init__(self, state_dir: Path, *, token_delay_s: float = 0.0,
                 **sections: Any) -> None:
        self.port = free_port()
        cfg = node_config(state_dir, port=self.port, **sections)
        self.member = FleetMember.open(cfg)
        assert self.member is not None
        m = self.member.membership
        over: dict[str, Any] = {"name": m.node}
        if not cfg.tiers:
            over["tier"] = m.tier
        cfg = cfg.replace(node=over)
        self.node = Node(cfg, FakeEngine(n_ctx=2048, token_delay_s=token_delay_s))
        self.app = create_app(self.node, member=self.member)
        tls = self.member.server_tls
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.name = m.node
        self.fleet = m.fleet
        self.server = build_server(self.app, cfg, ssl_context=tls, log_level="warning",
                                   timeout_graceful_shutdown=1)
        st = self.member.state
        self._start(self.url, tls, "/readyz", cert=(str(st.cert_file), str(st.key_file)))

    @property
    def agent(self) -> Any:
        return self.app.state.agent


class SNITransport(httpx.HTTPTransport):
    """Connects to the URL's address but verifies the server as ``sni`` (a node's DNS
    SAN), as a fleet peer does."""

    def __init__(self, ctx: ssl.SSLContext, sni: str) -> None:
        super().__init__(verify=ctx)
        self.sni = sni

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.extensions = {**request.extensions, "sni_hostname": self.sni}
        return super().handle_request(request)


def node_client(target: NodeServer, *, via: FleetState | None = None,
                **kwargs: Any) -> httpx.Client:
    """A client of ``target`` that checks its identity (the node DNS name as SNI) and,
    with ``via``, presents that node's certificate."""
    ca = via.ca_file if via is not None else target.member.state.ca_file
    ctx = ssl.create_default_context(cafile=str(ca))
    if via is not None:
        ctx.load_cert_chain(via.cert_file, via.key_file)
    return httpx.Client(base_url=target.url,
                        transport=SNITransport(ctx, node_dns(target.fleet, target.name)),
                        **kwargs)
