"""Deployment runs: real ``flower-superlink`` and ``flower-supernode`` processes whose
identities come from the fleet.

- **SuperLink** (:mod:`edgewise.control.superlink`, ``edgewise federate superlink``): on
  the control plane's host, TLS with a certificate from the fleet CA, SuperNode
  authentication on, runtime dependency installation off; it registers the public key
  of every enrolled node's current certificate and unregisters revoked, expired and
  superseded ones, so a node that is not enrolled, or revoked, cannot join a run.
- **SuperNode** (:class:`SuperNode`, ``edgewise federate supernode``): beside an edgewise
  node, authenticating with the node's own fleet key (its ``node.key``, in the OpenSSH
  form Flower reads, 0600), trusting only the fleet's root CA, and running only app
  bundles the fleet's release key signed (:mod:`edgewise.federated.supernode`). Its node
  config names the node's data file and its own copy of the base model (checked against
  the run's digest); the data never leaves the node.
- **Run** (:func:`submit`, ``edgewise federate run RECIPE --superlink HOST:PORT``): the
  app bundle is a few lines naming edgewise's apps (:func:`write_app`; the code itself is
  the edgewise every node has installed); its sha256 is signed with the release key and
  the run submitted with ``flwr run``, then followed through the run folder's
  ``status.json`` as a simulation is.

What Flower 1.42 does not do, and edgewise cannot fix from outside: its Control API
(register nodes, start runs) has no authentication in the open-source SuperLink and
shares the Fleet API's port, so the SuperLink listens on loopback only: a SuperNode on
another machine needs a tunnel to it, and anyone with a shell on the control host can
start runs (their bundles still cannot run on a node without the release key's
signature).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edgewise.errors import FederatedError
from edgewise.federated.recipe import FederatedRecipe
from edgewise.federated.run import (
    _prepare,
    _report,
    _stop,
    _tail,
    build_artifact,
    flower_env,
    flower_python,
)
from edgewise.federated.status import RunStatus, index_run, read_status
from edgewise.federated.supernode import fab_message

__all__ = ["CONNECTION", "SuperNode", "fab_sha256", "flower_cli_home", "flwr_cli", "sign_fab",
           "ssh_keys", "ssh_public", "submit", "wait_port", "write_app"]

CONNECTION = "edgewise"

_APP = """\
# edgewise's federated LoRA fine-tuning as a Flower app. The code is edgewise's own,
# installed on the SuperLink's host and on every node; this bundle only names it.
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "edgewise-federated"
version = "{version}"
description = "edgewise federated LoRA fine-tuning"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "edgewise"

[tool.flwr.app.components]
serverapp = "edgewise.federated.flower:server"
clientapp = "edgewise.federated.flower:client"

[tool.flwr.app.config]
run-dir = ""
fab-signature = ""
"""


def write_app(directory: Path) -> Path:
    """The Flower app bundle's folder (deterministic: the same edgewise, the same FAB)."""
    from importlib.metadata import version

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pyproject.toml").write_text(_APP.format(version=version("edgewise")),
                                              encoding="utf-8")
    return directory


def fab_sha256(python: Path, app: Path) -> str:
    """sha256 of the bundle ``flwr run`` builds from ``app`` (Flower's own builder)."""
    out = subprocess.run([str(python), "-m", "edgewise.federated.flower", "fab", str(app)],
                         capture_output=True, text=True, env=flower_env(), timeout=120,
                         check=False)
    if out.returncode != 0:
        raise FederatedError(f"Flower could not build the app bundle: "
                             f"{out.stderr.strip().splitlines()[-1:]}")
    return out.stdout.strip()


def sign_fab(digest_hex: str, key: ec.EllipticCurvePrivateKey) -> str:
    """The ``fab-signature`` a SuperNode checks (:mod:`edgewise.federated.supernode`)."""
    sig = key.sign(fab_message(digest_hex), ec.ECDSA(hashes.SHA256()))
    return base64.urlsafe_b64encode(sig).rstrip(b"=").decode("ascii")


def ssh_keys(node_key_pem: bytes) -> tuple[bytes, bytes]:
    """A fleet node key (PEM) as Flower reads SuperNode keys: OpenSSH private and
    public (``ecdsa-sha2-nistp256 ...``)."""
    key = serialization.load_pem_private_key(node_key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise FederatedError("the node key is not an EC key")
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    return private, ssh_public(key.public_key())


def ssh_public(public: ec.EllipticCurvePublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.OpenSSH,
                               serialization.PublicFormat.OpenSSH)


def flower_cli_home(directory: Path, address: str, ca: Path) -> Path:
    """A ``$FLWR_HOME`` whose config names the SuperLink (never the user's ~/.flwr)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "{address}"\nroot-certificates = "{ca}"\n', encoding="utf-8")
    return directory


def flwr_cli(python: Path, home: Path, *args: str, timeout: float = 60) -> dict[str, Any]:
    """One ``flwr`` command with ``--format json``; its JSON answer (FederatedError, one
    line, when it fails)."""
    env = flower_env(home)
    try:
        out = subprocess.run([str(python.parent / "flwr"), *args, "--format", "json"],
                             capture_output=True, text=True, env=env, timeout=timeout,
                             check=False)
    except subprocess.TimeoutExpired:
        raise FederatedError(f"flwr {args[0]} did not answer within {timeout:g} s") from None
    text = out.stdout.strip()
    start = text.find("{")
    try:
        answer: dict[str, Any] = json.loads(text[start:]) if start >= 0 else {}
    except ValueError:
        answer = {}
    if out.returncode != 0 or answer.get("success") is False:
        why = answer.get("error-message") or (out.stderr.strip() or text).splitlines()[-1:]
        raise FederatedError(f"flwr {' '.join(args[:2])}: {why}")
    return answer


def wait_port(host: str, port: int, proc: subprocess.Popen[bytes], log: Path, *,
              what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise FederatedError(f"{what} exited ({proc.returncode}): {_tail(log)}")
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise FederatedError(f"{what} is not listening on {host}:{port} after {timeout:g} s: "
                         f"{_tail(log)}")


# -- the SuperNode beside a fleet node ---------------------------------------------------------
@dataclass
class SuperNode:
    """A fleet node's SuperNode (module docstring). ``state_dir`` is the node's edgewise
    state folder (``edgewise join`` made it)."""

    state_dir: Path
    superlink: str
    data: Path
    data_format: str = "chat"
    base: str = ""
    pre_tokenizer: str | None = None
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def folder(self) -> Path:
        return self.state_dir / "federated"

    def start(self, *, say: Callable[[str], None] = lambda _m: None) -> None:
        from edgewise.fleet.state import FleetState
        from edgewise.supply.convert import resolve_source

        state = FleetState(self.state_dir)
        if not state.joined:
            raise FederatedError(f"{self.state_dir} is not a joined node's state folder: run "
                                 "`edgewise join` first (the SuperNode authenticates with "
                                 "the node's fleet key)")
        for needed in (state.key_file, state.ca_file, state.release_key_file):
            if not needed.is_file():
                raise FederatedError(f"{needed} is missing: join the fleet again")
        python = flower_python()
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        private, _public = ssh_keys(state.key_file.read_bytes())
        key_file = self.folder / "supernode.key"
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private)
        node_config = {"data-path": str(self.data.resolve()), "data-format": self.data_format}
        if self.base:
            src = resolve_source(self.base, pre_tokenizer=self.pre_tokenizer, progress=say)
            node_config |= {"base-path": str(src.state.hf_dir), "base-sha256": src.info["sha256"]}
        bad = [v for v in node_config.values() if "'" in v or "\n" in v]
        if bad:
            raise FederatedError(f"{bad[0]!r}: a SuperNode's node config cannot hold a quote "
                                 "or a line break; move the file")
        port = self.port or _free_port()
        env = flower_env(self.folder / "flwr")
        cmd = [str(python), "-m", "edgewise.federated.supernode",
               "--release-pub", str(state.release_key_file), "--",
               "--superlink", self.superlink, "--root-certificates", str(state.ca_file),
               "--auth-supernode-private-key", str(key_file),
               "--host", "127.0.0.1", "--port", str(port),
               "--node-config", " ".join(f"{k}='{v}'" for k, v in node_config.items())]
        log = (self.folder / "supernode.log").open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        log.close()
        self.port = port

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- a run on the SuperLink --------------------------------------------------------------------
def submit(recipe: FederatedRecipe, *, superlink: str, ca: Path,
           release_key: ec.EllipticCurvePrivateKey, fresh: bool = False,
           on_status: Callable[[RunStatus], None] | None = None,
           say: Callable[[str], None] = lambda _m: None,
           signature: str | None = None, index: Path | None = None) -> RunStatus:
    """Run ``recipe`` on the SuperLink's SuperNodes (module docstring); the final status.
    ``signature`` replaces the bundle's real one (tests: a SuperNode refuses a bad one);
    ``index`` (a control directory's ``federated/``) lists the run on the fleet page."""
    python = flower_python()
    run_dir, plan = _prepare(recipe, nodes=None, fresh=fresh, say=say)
    if index is not None:
        index_run(index, recipe.name, run_dir)
    app = write_app(run_dir / "app")
    digest = fab_sha256(python, app)
    sig = signature if signature is not None else sign_fab(digest, release_key)
    home = flower_cli_home(run_dir / "flwr-cli", superlink, ca)
    say(f"submitting the run to the SuperLink at {superlink} (app bundle sha256 "
        f"{digest[:16]}, signed with the fleet's release key)")
    answer = flwr_cli(python, home, "run", str(app), CONNECTION, "--run-config",
                      f"run-dir={json.dumps(str(run_dir))} fab-signature={json.dumps(sig)}",
                      timeout=120)
    run_id = answer.get("run-id")
    (run_dir / "flower-run.json").write_text(json.dumps(answer, indent=2), encoding="utf-8")
    deadline = time.monotonic() + recipe.rounds * (recipe.clients.timeout_s + 120) + 300
    seen, last_check = 0.0, 0.0
    while True:
        time.sleep(0.5)
        seen = _report(run_dir, seen, on_status)
        try:
            status = read_status(run_dir)
            if status.state in ("completed", "stopped", "failed"):
                break
        except FederatedError:
            pass
        if time.monotonic() - last_check > 5 and run_id is not None:
            last_check = time.monotonic()
            runs = flwr_cli(python, home, "ls", CONNECTION, "--run-id", str(run_id))
            state = str((runs.get("runs") or [{}])[0].get("status", ""))
            if state.startswith("finished") and not (run_dir / "status.json").exists():
                raise FederatedError(f"the SuperLink ended run {run_id} ({state}) before its "
                                     f"ServerApp started; `flwr log {run_id}` says why")
        if time.monotonic() > deadline:
            raise FederatedError(f"run {run_id} did not finish within "
                                 f"{recipe.rounds} × (clients.timeout_s + 120 s) + 300 s")
    _report(run_dir, 0.0, on_status)
    status = read_status(run_dir)
    if status.adapter:
        say("building the artifact: the adapter as GGUF, the manifest with the run's lineage")
        build_artifact(run_dir, plan, status)
    return status

