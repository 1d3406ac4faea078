"""The TUF specification's attacks against a node's model updates, each against a real
TUF repository on disk (python-tuf, :mod:`edgewise.distribution.repository`) served by a
mirror the attacker controls (a fetcher over a copy of the repository's files that the
test tampers with). Each is refused with one line naming it, and nothing unverified
lands where the node would load it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api.metadata import Metadata, Root, Timestamp
from tuf.api.serialization.json import JSONSerializer
from tuf.ngclient import FetcherInterface

from edgewise.distribution.repository import FleetRepository
from edgewise.distribution.signing import SignatureRefused, sign_release, verify_release
from edgewise.distribution.updater import HttpxFetcher, ModelUpdates, UpdateRefused
from edgewise.security.keys import load_private_key

PASS = b"tuf-test-passphrase"
BASE = "https://control.acme/tuf"
MODEL = "smollm2-135m-instruct"


class Mirror(FetcherInterface):
    """Serves ``root`` (a copy of a repository directory) at ``BASE``; what the test
    leaves in it is what the node gets."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []

    def _fetch(self, url: str) -> Iterator[bytes]:
        self.requests.append(url)
        path = self.root / url.removeprefix(BASE + "/")
        if not path.is_file():
            from tuf.api.exceptions import DownloadHTTPError

            raise DownloadHTTPError(f"{url}: not found", 404)
        yield path.read_bytes()


@pytest.fixture
def repo(tmp_path: Path) -> FleetRepository:
    r = FleetRepository.init(tmp_path / "tuf", passphrase=PASS)
    for version in (1, 2):
        f = tmp_path / f"model-v{version}.gguf"
        f.write_bytes(b"GGUF" + bytes([version]) * 4096)
        r.add_target(f"models/{MODEL}/{version}/model.gguf", f,
                     {"model": MODEL, "version": version, "profile": "laptop"})
    other = tmp_path / "other.gguf"
    other.write_bytes(b"GGUF other")
    r.add_target("models/qwen/1/model.gguf", other,
                 {"model": "qwen2.5-coder-0.5b", "version": 1, "profile": "laptop"})
    r.add_target(f"models/{MODEL}/3/pi.gguf", other,
                 {"model": MODEL, "version": 3, "profile": "raspberry-pi"})
    return r


def serve(repo: FleetRepository, tmp: Path, name: str = "mirror") -> Mirror:
    dest = tmp / name
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(repo.dir, dest, ignore=shutil.ignore_patterns("keys"))
    return Mirror(dest)


def node(repo: FleetRepository, tmp: Path, mirror: Mirror) -> ModelUpdates:
    return ModelUpdates(tmp / "node", BASE, root=repo.root_bytes(), fetcher=mirror)


def refused(excinfo: pytest.ExceptionInfo[UpdateRefused], attack: str) -> str:
    assert excinfo.value.attack == attack, str(excinfo.value)
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def downloads(tmp: Path) -> list[str]:
    d = tmp / "node" / "tuf" / "downloads"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def sign_with(md: Metadata[Timestamp] | Metadata[Root], *keys: Path) -> None:
    md.signatures.clear()
    for k in keys:
        md.sign(CryptoSigner(load_private_key(k.read_bytes(), passphrase=PASS)), append=True)


def test_a_released_model_is_downloaded_and_verified(repo: FleetRepository,
                                                     tmp_path: Path) -> None:
    client = node(repo, tmp_path, serve(repo, tmp_path))
    listed = client.available()
    assert listed[f"models/{MODEL}/2/model.gguf"] == {"model": MODEL, "version": 2,
                                                      "profile": "laptop"}
    got = client.fetch(f"models/{MODEL}/2/model.gguf", model=MODEL, profile="laptop",
                       newer_than=1)
    assert got.read_bytes() == b"GGUF" + b"\x02" * 4096


def test_arbitrary_software_tampered_bytes(repo: FleetRepository, tmp_path: Path) -> None:
    mirror = serve(repo, tmp_path)
    target = next((mirror.root / "targets" / "models" / MODEL / "2").glob("*.model.gguf"))
    target.write_bytes(b"GGUF" + b"\x66" * 4096)  # same length, other bytes
    with pytest.raises(UpdateRefused) as err:
        node(repo, tmp_path, mirror).fetch(f"models/{MODEL}/2/model.gguf", model=MODEL)
    assert "does not match its signed length or hash" in refused(err, "tampered")
    assert downloads(tmp_path) == []


def test_rollback_to_older_metadata(repo: FleetRepository, tmp_path: Path) -> None:
    old = serve(repo, tmp_path, "old")  # the repository as it is now
    extra = tmp_path / "v4.gguf"
    extra.write_bytes(b"GGUF 4")
    repo.add_target(f"models/{MODEL}/4/model.gguf", extra,
                    {"model": MODEL, "version": 4, "profile": "laptop"})
    client = node(repo, tmp_path, serve(repo, tmp_path))
    assert f"models/{MODEL}/4/model.gguf" in client.available()
    client.fetcher = old  # the attacker replays yesterday's (validly signed) metadata
    with pytest.raises(UpdateRefused) as err:
        client.available()
    assert refused(err, "rollback").startswith("rollback refused")


def test_indefinite_freeze_is_reported_as_expiry_or_clock(repo: FleetRepository,
                                                          tmp_path: Path) -> None:
    repo.refresh_timestamp(now=datetime.now(UTC) - timedelta(days=2))  # expired yesterday
    with pytest.raises(UpdateRefused) as err:
        node(repo, tmp_path, serve(repo, tmp_path)).available()
    text = refused(err, "freeze_or_clock")
    assert "frozen or this machine's clock is wrong" in text


def test_mix_and_match_metadata(repo: FleetRepository, tmp_path: Path) -> None:
    old = serve(repo, tmp_path, "old")
    extra = tmp_path / "v4.gguf"
    extra.write_bytes(b"GGUF 4")
    repo.add_target(f"models/{MODEL}/4/model.gguf", extra,
                    {"model": MODEL, "version": 4, "profile": "laptop"})
    mirror = serve(repo, tmp_path)
    # today's timestamp, with an older snapshot and targets under today's names
    snap_v = Metadata.from_file(str(mirror.root / "metadata" / "timestamp.json")).signed \
        .snapshot_meta.version
    old_snap = sorted((old.root / "metadata").glob("*.snapshot.json"))[-1]
    shutil.copyfile(old_snap, mirror.root / "metadata" / f"{snap_v}.snapshot.json")
    with pytest.raises(UpdateRefused) as err:
        node(repo, tmp_path, mirror).available()
    assert err.value.attack in ("rollback", "repository", "tampered"), str(err.value)


def test_endless_data(repo: FleetRepository, tmp_path: Path) -> None:
    mirror = serve(repo, tmp_path)
    (mirror.root / "metadata" / "timestamp.json").write_bytes(b" " * 10_000_000)
    with pytest.raises(UpdateRefused) as err:
        node(repo, tmp_path, mirror).available()
    assert refused(err, "endless_data")


def test_slow_retrieval(repo: FleetRepository, tmp_path: Path) -> None:
    class Trickle(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            for _ in range(100):
                time.sleep(0.05)
                yield b" "

    fetcher = HttpxFetcher(deadline_s=0.3, transport=httpx.MockTransport(
        lambda request: httpx.Response(200, stream=Trickle())))
    started = time.monotonic()
    with pytest.raises(UpdateRefused) as err:
        ModelUpdates(tmp_path / "node", BASE, root=repo.root_bytes(),
                     fetcher=fetcher).available()
    assert refused(err, "slow_retrieval")
    assert time.monotonic() - started < 3


def test_a_malicious_mirror_with_its_own_keys(repo: FleetRepository, tmp_path: Path) -> None:
    evil = FleetRepository.init(tmp_path / "evil", passphrase=PASS)
    f = tmp_path / "evil.gguf"
    f.write_bytes(b"GGUF evil")
    evil.add_target(f"models/{MODEL}/9/model.gguf", f,
                    {"model": MODEL, "version": 9, "profile": "laptop"})
    client = node(repo, tmp_path, serve(evil, tmp_path))  # trusts the fleet's root
    with pytest.raises(UpdateRefused) as err:
        client.fetch(f"models/{MODEL}/9/model.gguf", model=MODEL)
    assert err.value.attack in ("untrusted_signature", "rollback"), str(err.value)
    assert downloads(tmp_path) == []


@pytest.mark.parametrize(("path", "profile", "why"), [
    ("models/qwen/1/model.gguf", "laptop", "is qwen2.5-coder-0.5b for profile laptop"),
    (f"models/{MODEL}/3/pi.gguf", "laptop", "for profile raspberry-pi"),
])
def test_wrong_software(repo: FleetRepository, tmp_path: Path, path: str, profile: str,
                        why: str) -> None:
    with pytest.raises(UpdateRefused) as err:
        node(repo, tmp_path, serve(repo, tmp_path)).fetch(path, model=MODEL, profile=profile)
    assert why in refused(err, "wrong_software")
    assert downloads(tmp_path) == []


def test_an_old_but_validly_signed_release(repo: FleetRepository, tmp_path: Path) -> None:
    with pytest.raises(UpdateRefused) as err:
        node(repo, tmp_path, serve(repo, tmp_path)).fetch(
            f"models/{MODEL}/1/model.gguf", model=MODEL, profile="laptop", newer_than=2)
    assert "not newer than the 2 this node runs" in refused(err, "old_release")


def test_key_compromise_below_the_root_threshold(repo: FleetRepository,
                                                 tmp_path: Path) -> None:
    # The attacker holds one root key (threshold 2) and makes a root that trusts its own
    # timestamp key.
    mirror = serve(repo, tmp_path)
    root = repo.load("root")
    from edgewise.security.keys import generate_key

    mine = generate_key()
    for keyid in list(root.signed.roles["timestamp"].keyids):
        root.signed.revoke_key(keyid, "timestamp")
    root.signed.add_key(SSlibKey.from_crypto(mine.public_key()), "timestamp")
    root.signed.version += 1
    sign_with(root, repo.keys_dir / "root-1.key")
    (mirror.root / "metadata" / f"{root.signed.version}.root.json").write_bytes(
        root.to_bytes(JSONSerializer()))
    with pytest.raises(UpdateRefused) as err:
        node(repo, tmp_path, mirror).available()
    assert refused(err, "untrusted_signature")


def test_rotated_keys_are_followed_and_the_retired_key_is_not_trusted(
        repo: FleetRepository, tmp_path: Path) -> None:
    client = node(repo, tmp_path, serve(repo, tmp_path))
    client.available()
    retired = (repo.keys_dir / "timestamp.key").read_bytes()
    repo.rotate("timestamp")
    repo.rotate("root")
    client.fetcher = serve(repo, tmp_path)
    assert f"models/{MODEL}/2/model.gguf" in client.available()  # follows both rotations
    mirror = serve(repo, tmp_path)
    ts = Metadata.from_file(str(mirror.root / "metadata" / "timestamp.json"))
    ts.signed.version += 1
    ts.signatures.clear()
    ts.sign(CryptoSigner(load_private_key(retired)))
    (mirror.root / "metadata" / "timestamp.json").write_bytes(ts.to_bytes(JSONSerializer()))
    client.fetcher = mirror
    with pytest.raises(UpdateRefused) as err:
        client.available()
    assert refused(err, "untrusted_signature")


def test_fast_forward_is_recovered_by_rotating_the_timestamp_key(
        repo: FleetRepository, tmp_path: Path) -> None:
    # A stolen timestamp key signs version 10**6: nodes that saw it would refuse every
    # real timestamp after (lower versions) — until the key is rotated (TUF 5.3.11).
    mirror = serve(repo, tmp_path)
    ts = Metadata.from_file(str(mirror.root / "metadata" / "timestamp.json"))
    ts.signed.version = 10**6
    ts.signatures.clear()
    ts.sign(CryptoSigner(load_private_key((repo.keys_dir / "timestamp.key").read_bytes())))
    (mirror.root / "metadata" / "timestamp.json").write_bytes(ts.to_bytes(JSONSerializer()))
    client = node(repo, tmp_path, mirror)
    client.available()
    client.fetcher = serve(repo, tmp_path)
    with pytest.raises(UpdateRefused) as err:
        client.available()
    assert refused(err, "rollback")
    repo.rotate("timestamp")
    client.fetcher = serve(repo, tmp_path)
    assert f"models/{MODEL}/2/model.gguf" in client.available()


# -- provenance: model-signing over the release's files ---------------------------------------

def _release(tmp: Path) -> tuple[Path, Path, Path, Path]:
    from edgewise.security.keys import generate_key, private_pem, public_pem, write_private

    model = tmp / "release"
    model.mkdir()
    (model / "model.gguf").write_bytes(b"GGUF" + bytes(range(256)) * 64)
    (model / "manifest.json").write_text('{"name": "smollm2-135m-instruct"}')
    key = generate_key()
    write_private(tmp / "release.key", private_pem(key))
    (tmp / "release.pub").write_bytes(public_pem(key.public_key()))
    sign_release(model, tmp / "release.sig", private_key=tmp / "release.key")
    return model, tmp / "release.sig", tmp / "release.key", tmp / "release.pub"


def test_a_release_signed_by_the_fleet_key_verifies(tmp_path: Path) -> None:
    model, sig, _, pub = _release(tmp_path)
    verify_release(model, sig, public_key=pub)


def test_a_signed_release_whose_files_changed_is_refused(tmp_path: Path) -> None:
    model, sig, _, pub = _release(tmp_path)
    with (model / "model.gguf").open("r+b") as f:
        f.write(b"XXXX")
    with pytest.raises(SignatureRefused) as err:
        verify_release(model, sig, public_key=pub)
    assert str(err.value) == (f"the release in {model} does not match its model-signing "
                              "signature (model.gguf changed)")


def test_a_release_signed_by_another_key_is_refused(tmp_path: Path) -> None:
    model, sig, _, _ = _release(tmp_path)
    from edgewise.security.keys import generate_key, public_pem

    (tmp_path / "other.pub").write_bytes(public_pem(generate_key().public_key()))
    with pytest.raises(SignatureRefused, match="does not verify with the fleet's release key"):
        verify_release(model, sig, public_key=tmp_path / "other.pub")
