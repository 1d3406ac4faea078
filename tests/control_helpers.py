"""What the control plane's attack tests share (test_control.py, test_control_mtls.py,
test_control_admin.py): a control plane per module, clients that trust only the fleet
root, and the checks every refusal gets — its status and one-line message, the secret it
must not repeat, its audit record, and the control plane still answering afterwards.

A module makes its fixtures with :func:`control_plane` (``yield from``): ``cs`` is the
fleet ``acme``; ``impostor`` another fleet with the same name but its own root CA and
token key. The brute-force guard is set out of reach (every test connects from
127.0.0.1, so hostile tests would lock each other out); a test that counts failures
starts a control plane of its own. Heartbeats are every 30 s, so a node stays
``online`` through a slow test; a test that wants a heartbeat sends one.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from edgewise.fleet.state import FleetState
from edgewise.security.audit_record import AuditRecord
from edgewise.security.pki import client_context, csr_pem, generate_key, make_csr, private_pem
from edgewise.security.tokens import join_token_digest
from fleet_harness import ControlServer, control_dir, join_node

__all__ = ["FLEET", "NODE_CERT_HOURS", "audit_text", "audited", "bearer", "cert_files",
           "control_plane", "csr_text", "fresh", "https", "joined", "mark", "post_join",
           "refused", "serving", "token_used", "wait_for"]

FLEET = "acme"
NODE_CERT_HOURS = 2.0
_names = itertools.count(1)


def fresh(prefix: str = "n") -> str:
    """A node name no other test of the session uses."""
    return f"{prefix}-{next(_names)}"


def control_plane(tmp_path_factory: pytest.TempPathFactory, name: str
                  ) -> Iterator[ControlServer]:
    """A served control plane of fleet ``acme`` in a new directory (module docstring)."""
    d = tmp_path_factory.mktemp(name)
    control_dir(d, fleet=FLEET, heartbeat_s=30, node_cert_hours=NODE_CERT_HOURS,
                join_failures_per_minute=10_000)
    with ControlServer(d) as server:
        yield server


def https(cs: ControlServer, node: FleetState | None = None, *,
          cert: tuple[Path, Path] | None = None, local_address: str | None = None
          ) -> httpx.Client:
    """A client that trusts only the fleet root and presents ``node``'s certificate (or
    ``cert``, a chain file and a key file) when given."""
    if node is not None:
        cert = (node.cert_file, node.key_file)
    ctx = client_context(cs.cp.files.root_cert, cert_chain=cert[0] if cert else None,
                         key=cert[1] if cert else None)
    return httpx.Client(base_url=cs.url, timeout=15,
                        transport=httpx.HTTPTransport(verify=ctx, local_address=local_address))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def refused(r: httpx.Response, status: int, *fragments: str, secret: str | None = None,
            one_line: bool = True) -> str:
    """The error message of a refusal, after checking its status, shape and content."""
    assert r.status_code == status, r.text
    msg = str(r.json()["error"]["message"])
    if one_line:
        assert "\n" not in msg, msg
    for fragment in fragments:
        assert fragment in msg, msg
    if secret:
        assert secret not in r.text
    return msg


def serving(cs: ControlServer) -> None:
    """The control plane still answers."""
    with https(cs) as c:
        assert c.get("/healthz").json() == {"status": "ok", "fleet": FLEET}


def mark(cs: ControlServer) -> int:
    """Where the audit log ends now (``audited(cs, mark, ...)`` reads what comes after)."""
    head = cs.cp.audit.head()
    return head[0] if head else 0


def audited(cs: ControlServer, since: int, action: str) -> list[AuditRecord]:
    """The ``control/<action>`` records after ``since``, oldest first."""
    return [e.record for e in cs.cp.audit.query()
            if e.seq > since and e.record.route == f"control/{action}"]


def audit_text(cs: ControlServer) -> str:
    """The whole audit log as text (to show a secret is nowhere in it)."""
    return json.dumps([e.to_dict() for e in cs.cp.audit.query()])


def csr_text(node: str, key: ec.EllipticCurvePrivateKey | None = None, **kw: Any) -> str:
    return csr_pem(make_csr(key or generate_key(), node, **kw)).decode("ascii")


def post_join(c: httpx.Client, token: Any, node: str, csr: str | None = None
              ) -> httpx.Response:
    return c.post("/v1/join", json={"token": token, "node": node,
                                    "csr": csr if csr is not None else csr_text(node)})


def token_used(cs: ControlServer, token: str) -> bool:
    """Whether the control plane counts ``token`` as spent."""
    prefix = join_token_digest(token)[:8]
    [info] = [t for t in cs.cp.store.join_tokens() if t.digest_prefix == prefix]
    return info.used_at is not None


def joined(cs: ControlServer, tmp_path: Path, tier: str = "device") -> FleetState:
    """A new node joined through the real ``edgewise join`` code path."""
    name = fresh()
    return join_node(cs, name, tier, tmp_path / name)


def cert_files(directory: Path, chain: bytes, key: ec.EllipticCurvePrivateKey
               ) -> tuple[Path, Path]:
    """``chain`` and ``key`` written for a TLS context to load."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cert.pem").write_bytes(chain)
    (directory / "key.pem").write_bytes(private_pem(key))
    return directory / "cert.pem", directory / "key.pem"


def wait_for(what: str, check: Callable[[], Any], *, each: Callable[[], None] | None = None,
             timeout: float = 15.0) -> Any:
    """``check()`` once it is true; ``each()`` (a heartbeat, say) runs before each try."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if each is not None:
            each()
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
