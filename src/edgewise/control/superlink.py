"""The fleet's Flower SuperLink: federated runs' server, with node identities from the
control plane (``edgewise federate superlink --dir CONTROL_DIR``).

:class:`SuperLink` starts Flower 1.42's ``flower-superlink`` (in Flower's environment,
:func:`edgewise.federated.run.flower_python`) on the control plane's host:

- TLS with a certificate the fleet's intermediate CA issues for it (``federated/``
  under the control directory), so SuperNodes, which trust only the fleet's root, can
  tell it from an impostor;
- SuperNode authentication on (``--enable-supernode-auth``): only registered public keys
  join. :meth:`SuperLink.sync` registers the key of every enrolled node's current,
  unexpired certificate (:meth:`ControlStore.current_keys`) and unregisters the keys of
  nodes revoked, expired or re-keyed since — every ``sync_s`` seconds while it serves.
  The mapping node → Flower node id is kept in ``federated/supernodes.json``;
- runtime dependency installation off (``--disable-runtime-dependency-installation``:
  Flower 1.42 installs an app's dependencies at run time by default);
- listening on loopback only: the open-source SuperLink's Control API (register nodes,
  start runs) has no authentication and shares the Fleet API's port
  (:mod:`edgewise.federated.deploy`).
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edgewise.control.settings import load_settings
from edgewise.control.store import ControlStore
from edgewise.errors import FederatedError
from edgewise.federated.deploy import (
    CONNECTION,
    flower_cli_home,
    flwr_cli,
    ssh_public,
    wait_port,
)
from edgewise.federated.run import _stop, flower_env, flower_python
from edgewise.security.keys import generate_key, private_pem, write_private, write_public
from edgewise.security.pki import FleetCA

__all__ = ["SuperLink"]

log = logging.getLogger("edgewise.federated")


class SuperLink:
    """The SuperLink of the fleet whose control directory is ``directory``."""

    def __init__(self, directory: Path, *, port: int = 9098, host: str = "127.0.0.1",
                 database_url: str | None = None, sync_s: float = 5.0) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise FederatedError(f"--host {host}: the SuperLink listens on loopback only (its "
                                 "Control API has no authentication); tunnel to it instead")
        self.dir = Path(directory)
        settings = load_settings(self.dir)
        self.host, self.port, self.sync_s = host, port, sync_s
        self.folder = self.dir / "federated"
        self.address = f"{host}:{port}"
        self.ca_file = self.folder / "ca.pem"
        url = database_url or settings.database_url or \
            f"sqlite:///{(self.dir / 'control.sqlite').resolve()}"
        self.store = ControlStore.open(url)
        self.proc: subprocess.Popen[bytes] | None = None
        self.registered: dict[str, dict[str, str]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def cli_home(self) -> Path:
        return self.folder / "flwr-cli"

    # -- process -----------------------------------------------------------------------------
    def start(self) -> None:
        python = flower_python()
        ca = FleetCA.load(self.dir)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = generate_key()
        write_private(self.folder / "superlink.key", private_pem(key))
        write_public(self.folder / "superlink.pem",
                     ca.chain_pem(ca.issue_server(key.public_key(), hosts=[self.host])))
        write_public(self.ca_file, ca.root_pem())
        flower_cli_home(self.cli_home, self.address, self.ca_file)
        env = flower_env(self.folder / "flwr")
        cmd = [str(python.parent / "flower-superlink"),
               "--ssl-ca-certfile", str(self.ca_file),
               "--ssl-certfile", str(self.folder / "superlink.pem"),
               "--ssl-keyfile", str(self.folder / "superlink.key"),
               "--enable-supernode-auth", "--disable-runtime-dependency-installation",
               "--host", self.host, "--port", str(self.port)]
        logfile = self.folder / "superlink.log"
        with logfile.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        wait_port(self.host, self.port, self.proc, logfile, what="flower-superlink")
        self.registered = {}  # its state is in memory: a new process knows no node
        self.sync()

    def serve_in_background(self) -> None:
        """Sync registrations every ``sync_s`` seconds until :meth:`stop`."""
        def loop() -> None:
            while not self._stop.wait(self.sync_s):
                try:
                    self.sync()
                except FederatedError as exc:
                    log.warning("SuperNode registrations not synced: %s", exc)

        self._thread = threading.Thread(target=loop, name="superlink-sync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None
        self.store.close()

    # -- registrations -----------------------------------------------------------------------
    def _flwr(self, *args: str) -> dict[str, Any]:
        return flwr_cli(flower_python(), self.cli_home, *args)

    def sync(self) -> dict[str, list[str]]:
        """Register live nodes' current keys, unregister the rest; what changed."""
        keys = self.store.current_keys(now=datetime.now(UTC))
        wanted = {}
        for node, pem in keys.items():
            public = serialization.load_pem_public_key(pem.encode("ascii"))
            if isinstance(public, ec.EllipticCurvePublicKey):
                wanted[node] = ssh_public(public).decode("ascii")
        changed: dict[str, list[str]] = {"registered": [], "unregistered": []}
        for node, entry in list(self.registered.items()):
            if wanted.get(node) != entry["key"]:
                try:
                    self._flwr("supernode", "unregister", entry["id"], CONNECTION)
                except FederatedError as exc:
                    log.warning("unregistering node %s: %s", node, exc)
                del self.registered[node]
                changed["unregistered"].append(node)
                log.info("node %s unregistered from the SuperLink (revoked, expired or "
                         "re-keyed)", node)
        for node, key in wanted.items():
            if node in self.registered:
                continue
            pub = self.folder / "keys" / f"{node}.pub"
            pub.parent.mkdir(parents=True, exist_ok=True)
            pub.write_text(key + "\n", encoding="ascii")
            answer = self._flwr("supernode", "register", str(pub), CONNECTION, "--name", node)
            self.registered[node] = {"key": key, "id": str(answer["node-id"])}
            changed["registered"].append(node)
            log.info("node %s registered with the SuperLink as %s", node, answer["node-id"])
        (self.folder / "supernodes.json").write_text(
            json.dumps(self.registered, indent=2, sort_keys=True), encoding="utf-8")
        return changed
