"""From the registry to a node, signed: a published version becomes TUF targets with a
model-signing signature; a joined node, bootstrapped at join with the fleet's TUF root,
downloads it over mutual TLS from the real control plane and verifies both; a tampered
blob, a request without a fleet certificate and a key rotation behave as they must."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edgewise.control.release import init_releases
from edgewise.distribution.signing import SignatureRefused, verify_release
from edgewise.distribution.updater import HttpxFetcher, ModelUpdates, UpdateRefused
from edgewise.fleet.state import FleetState
from edgewise.security.pki import client_context
from fleet_harness import PASSPHRASE, ControlServer, control_dir, join_node, releasing_control_dir
from test_registry import artifact

_OPEN: list[ModelUpdates] = []


@pytest.fixture
def cs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ControlServer]:
    d = tmp_path / "ctl"
    releasing_control_dir(d, monkeypatch)
    with ControlServer(d) as c:
        yield c
        while _OPEN:
            _OPEN.pop().close()


def updates(cs: ControlServer, state: FleetState) -> ModelUpdates:
    ctx = client_context(state.ca_file, cert_chain=state.cert_file, key=state.key_file)
    client = ModelUpdates(state.dir, f"{cs.url}/tuf", root=state.tuf_root_file.read_bytes(),
                          fetcher=HttpxFetcher(verify=ctx, deadline_s=30))
    _OPEN.append(client)  # closed with the control plane
    return client


def fetch_release(client: ModelUpdates, listed: dict[str, dict[str, object]], name: str,
                  version: int, dest: Path) -> Path:
    """Every file of ``name@version`` into ``dest`` (as the node would install it)."""
    prefix = f"{name}/{version}/"
    for path in listed:
        if path.startswith(prefix) and not path.endswith("/model.sig"):
            got = client.fetch(path, model=name, newer_than=version - 1)
            out = dest / path.removeprefix(prefix)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(got.read_bytes())
    return client.fetch(f"{prefix}model.sig", model=name, newer_than=version - 1)


def test_a_published_version_reaches_a_node_signed_and_verified(cs: ControlServer,
                                                               tmp_path: Path) -> None:
    art = artifact(tmp_path / "build", "gemma")
    version, _ = cs.cp.registry_publish(art, name="gemma", by="ops", alias="stable")
    state = join_node(cs, "dev1", "device", tmp_path / "dev1" / "fleet")
    assert state.tuf_root_file.is_file() and state.release_key_file.is_file()
    client = updates(cs, state)
    listed = client.available()
    assert {f"gemma/1/{f.path}" for f in version.files} | {"gemma/1/model.sig",
                                                           "gemma/aliases.json"} == set(listed)
    assert listed["gemma/1/model.sig"]["manifest_sha256"] == version.manifest_sha256
    aliases = client.fetch("gemma/aliases.json", model="gemma", newer_than=-1)
    assert json.loads(aliases.read_bytes()) == {"aliases": {"stable": 1}, "rollout": None}
    tree = tmp_path / "installed"
    sig = fetch_release(client, listed, "gemma", 1, tree)
    verify_release(tree, sig, public_key=state.release_key_file)  # provenance too
    # the audit log says it was released
    assert any(e.record.route == "control/release" and e.record.outcome == "answered"
               for e in cs.cp.audit.query())


def test_an_alias_move_is_signed_for_the_nodes(cs: ControlServer, tmp_path: Path) -> None:
    cs.cp.registry_publish(artifact(tmp_path / "b1", "gemma"), name="gemma", by="ops",
                           alias="stable")
    cs.cp.registry_publish(artifact(tmp_path / "b2", "gemma", seed="2"), name="gemma",
                           by="ops", alias="canary")
    cs.cp.alias_set("gemma", 2, "stable", by="ops", why="canary passed")
    state = join_node(cs, "dev1", "device", tmp_path / "dev1" / "fleet")
    client = updates(cs, state)
    client.available()
    got = client.fetch("gemma/aliases.json", model="gemma", newer_than=-1)
    assert json.loads(got.read_bytes()) == {"aliases": {"canary": 2, "stable": 2},
                                            "rollout": None}


def test_a_tampered_blob_on_the_control_plane_is_refused_by_the_node(
        cs: ControlServer, tmp_path: Path) -> None:
    version, _ = cs.cp.registry_publish(artifact(tmp_path / "b", "gemma"), name="gemma",
                                        by="ops")
    weights = next(f for f in version.files if f.path.endswith(".gguf"))
    blob = cs.cp.blobs.path(weights.sha256)
    blob.chmod(0o644)
    original = blob.read_bytes()
    blob.write_bytes(bytes([original[0] ^ 0xFF]) + original[1:])  # same length, one byte off
    state = join_node(cs, "dev1", "device", tmp_path / "dev1" / "fleet")
    with pytest.raises(UpdateRefused) as err:
        updates(cs, state).fetch(f"gemma/1/{weights.path}", model="gemma")
    assert err.value.attack == "tampered"
    # ... and a tree whose file changed after download fails model-signing
    client = updates(cs, state)
    listed = client.available()
    tree = tmp_path / "t"
    blob.write_bytes(original)  # the control plane's copy is good again
    sig = fetch_release(client, listed, "gemma", 1, tree)
    (tree / weights.path).write_bytes(b"swapped after download")
    with pytest.raises(SignatureRefused, match="does not match its model-signing signature"):
        verify_release(tree, sig, public_key=state.release_key_file)


def test_the_repository_needs_a_fleet_certificate(cs: ControlServer) -> None:
    import ssl

    ctx = ssl.create_default_context(cafile=str(cs.cp.files.root_cert))
    r = httpx.get(f"{cs.url}/tuf/metadata/timestamp.json", verify=ctx)
    assert r.status_code == 401
    r = httpx.get(f"{cs.url}/tuf/metadata/timestamp.json", verify=ctx,
                  headers={"authorization": f"Bearer {cs.access_token('admin')}"})
    assert r.status_code == 200 and json.loads(r.content)["signed"]["_type"] == "timestamp"
    r = httpx.get(f"{cs.url}/tuf/metadata/..%2f..%2fca%2froot.key", verify=ctx,
                  headers={"authorization": f"Bearer {cs.access_token('admin')}"})
    assert r.status_code == 404


def test_nodes_follow_a_key_rotation(cs: ControlServer, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edgewise.cli import app

    cs.cp.registry_publish(artifact(tmp_path / "b", "gemma"), name="gemma", by="ops")
    state = join_node(cs, "dev1", "device", tmp_path / "dev1" / "fleet")
    client = updates(cs, state)
    client.available()
    for role in ("targets", "root"):
        r = CliRunner().invoke(app, ["control", "keys", "rotate", role, "--dir", str(cs.dir)])
        assert r.exit_code == 0, r.output
    assert "gemma/aliases.json" in client.available()
    assert any(e.record.route == "control/keys_rotate" for e in cs.cp.audit.query())


def test_without_the_passphrase_a_version_is_registered_but_not_released(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "ctl"
    control_dir(d)
    init_releases(d / "tuf", passphrase=PASSPHRASE)
    monkeypatch.delenv("EDGEWISE_CA_PASSPHRASE", raising=False)
    from edgewise.control.service import ControlPlane
    from edgewise.errors import ForbiddenError

    cp = ControlPlane(d)
    try:
        with pytest.raises(ForbiddenError, match="gemma@1 is registered but not released"):
            cp.registry_publish(artifact(tmp_path / "b", "gemma"), name="gemma", by="ops")
        assert [v.version for v in cp.registry.versions("gemma")] == [1]
    finally:
        cp.close()
