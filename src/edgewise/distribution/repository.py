"""The fleet's TUF repository: what nodes trust to tell them which model files are
current, built with python-tuf's Metadata API (not a home-made scheme).

Four top-level roles, each with its own keys (ECDSA P-256, ``securesystemslib``'s
``CryptoSigner``):

=============  ========================  ==========  ==================================
role           signs                     expires     keys
=============  ========================  ==========  ==================================
root           the keys of every role    1 year      3, threshold 2; encrypted at rest
                                                     with ``$EDGEWISE_CA_PASSPHRASE``
                                                     (can be moved offline)
targets        which files exist, their  90 days     1, encrypted at rest (offline-
               digests and custom data               capable: only ``publish`` needs it)
snapshot       the version of targets    7 days      1, online
timestamp      the version of snapshot   1 day       1, online, re-signed by the control
                                                     plane well before it expires
=============  ========================  ==========  ==================================

What each guards against (the TUF specification's attacks): targets' digests and
lengths stop arbitrary or tampered files; version numbers that only grow, checked by
the client against what it saw before, stop rollback and mix-and-match; the short-lived
timestamp stops an indefinite freeze; per-role keys and the root threshold mean one
stolen key below the threshold cannot make the fleet trust anything new.

Layout under the control directory (``DIR/tuf``)::

    keys/<role>[-<n>].key     private keys (0600; root and targets encrypted)
    metadata/1.root.json ...  consistent snapshots: <version>.<role>.json, timestamp.json
    targets/<sha256>.<name>   target files, named by their digest (consistent snapshot)

A target's ``custom`` data says what it is (``model``, ``version``, ``profile``,
``manifest_sha256``), so a node can refuse a validly signed file meant for another model
or hardware profile ("wrong software") or older than what it runs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api.metadata import (
    TOP_LEVEL_ROLE_NAMES,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from edgewise.errors import PKIError
from edgewise.security.keys import generate_key, load_private_key, private_pem, write_private

__all__ = ["EXPIRY", "FleetRepository", "TargetInfo"]

#: How long each role's metadata is valid when (re-)signed.
EXPIRY = {"root": timedelta(days=365), "targets": timedelta(days=90),
          "snapshot": timedelta(days=7), "timestamp": timedelta(days=1)}
_ENCRYPTED = ("root", "targets")  # offline-capable roles: keys encrypted at rest
ROOT_KEYS, ROOT_THRESHOLD = 3, 2


@dataclass(frozen=True)
class TargetInfo:
    path: str
    length: int
    sha256: str
    custom: dict[str, Any]


def _expires(role: str, now: datetime | None = None) -> datetime:
    return ((now or datetime.now(UTC)) + EXPIRY[role]).replace(microsecond=0)


class FleetRepository:
    """A fleet's TUF repository on disk (module docstring). Open with the passphrase
    to sign root or targets metadata; snapshot and timestamp need none."""

    def __init__(self, directory: Path, *, passphrase: bytes | None = None) -> None:
        self.dir = directory
        self.keys_dir = directory / "keys"
        self.metadata_dir = directory / "metadata"
        self.targets_dir = directory / "targets"
        self.passphrase = passphrase
        #: One writer at a time in this process (publishes, rollout steps and the
        #: timestamp refresh run on different threads).
        self.lock = threading.RLock()
        if not (self.metadata_dir / "timestamp.json").is_file():
            raise PKIError(f"{directory} holds no TUF repository; `edgewise control init` "
                           "creates it")

    # -- creating --------------------------------------------------------------------------
    @classmethod
    def init(cls, directory: Path, *, passphrase: bytes) -> FleetRepository:
        if (directory / "metadata" / "timestamp.json").exists():
            raise PKIError(f"{directory} already holds a TUF repository")
        keys: dict[str, list[ec.EllipticCurvePrivateKey]] = {
            role: [generate_key() for _ in range(ROOT_KEYS if role == "root" else 1)]
            for role in TOP_LEVEL_ROLE_NAMES}
        for role, privs in keys.items():
            for i, priv in enumerate(privs):
                name = f"{role}-{i + 1}" if role == "root" else role
                write_private(directory / "keys" / f"{name}.key", private_pem(
                    priv, passphrase if role in _ENCRYPTED else None))
        root = Root(expires=_expires("root"), consistent_snapshot=True)
        for role, privs in keys.items():
            for priv in privs:
                root.add_key(SSlibKey.from_crypto(priv.public_key()), role)
        root.roles["root"].threshold = ROOT_THRESHOLD
        md_root = Metadata(root)
        for priv in keys["root"]:
            md_root.sign(CryptoSigner(priv), append=True)
        (directory / "metadata").mkdir(parents=True, exist_ok=True)
        (directory / "targets").mkdir(parents=True, exist_ok=True)
        repo = cls.__new__(cls)
        repo.dir, repo.keys_dir = directory, directory / "keys"
        repo.metadata_dir, repo.targets_dir = directory / "metadata", directory / "targets"
        repo.passphrase = passphrase
        repo.lock = threading.RLock()
        repo._write(md_root)
        targets = Metadata(Targets(expires=_expires("targets")))
        targets.sign(CryptoSigner(keys["targets"][0]))
        repo._write(targets)
        repo._new_snapshot_and_timestamp(targets.signed.version)
        return repo

    # -- keys and files --------------------------------------------------------------------------
    def _signers(self, role: str) -> list[CryptoSigner]:
        names = [f"{role}-{i}" for i in range(1, ROOT_KEYS + 1)] if role == "root" else [role]
        out = []
        for name in names:
            path = self.keys_dir / f"{name}.key"
            if not path.exists():
                continue  # a root key moved offline
            if role in _ENCRYPTED and not self.passphrase:
                raise PKIError(f"signing {role} metadata needs $EDGEWISE_CA_PASSPHRASE")
            out.append(CryptoSigner(load_private_key(
                path.read_bytes(), passphrase=self.passphrase if role in _ENCRYPTED else None,
                source=str(path))))
        if not out:
            raise PKIError(f"no {role} key in {self.keys_dir}: bring it back online to sign")
        return out

    def _write(self, md: Metadata[Any]) -> None:
        role = md.signed.type
        name = "timestamp.json" if role == "timestamp" else f"{md.signed.version}.{role}.json"
        data = md.to_bytes(JSONSerializer(compact=False))
        fd, tmp = tempfile.mkstemp(dir=self.metadata_dir, prefix=f".{name}.")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, self.metadata_dir / name)

    def load(self, role: str) -> Metadata[Any]:
        """The newest metadata of ``role``."""
        if role == "timestamp":
            return Metadata.from_file(str(self.metadata_dir / "timestamp.json"))
        versions = sorted(int(p.name.split(".", 1)[0])
                          for p in self.metadata_dir.glob(f"*.{role}.json"))
        return Metadata.from_file(str(self.metadata_dir / f"{versions[-1]}.{role}.json"))

    def root_bytes(self) -> bytes:
        """The newest root, as a node bootstraps its updater with it."""
        root = self.load("root")
        return (self.metadata_dir / f"{root.signed.version}.root.json").read_bytes()

    def _new_snapshot_and_timestamp(self, targets_version: int) -> None:
        if any(self.metadata_dir.glob("*.snapshot.json")):
            snap = self.load("snapshot")
            snap.signed.version += 1
        else:
            snap = Metadata(Snapshot(expires=_expires("snapshot")))
        snap.signed.meta["targets.json"] = MetaFile(version=targets_version)
        snap.signed.expires = _expires("snapshot")
        snap.signatures.clear()
        for s in self._signers("snapshot"):
            snap.sign(s, append=True)
        self._write(snap)
        self.refresh_timestamp(snapshot_version=snap.signed.version)

    def refresh_timestamp(self, *, snapshot_version: int | None = None,
                          now: datetime | None = None) -> int:
        """Re-sign the timestamp (a new version, a fresh expiry): the control plane does
        this well before it expires, or nodes would see an indefinite freeze."""
        with self.lock:
            return self._refresh_timestamp(snapshot_version, now)

    def _refresh_timestamp(self, snapshot_version: int | None, now: datetime | None) -> int:
        if (self.metadata_dir / "timestamp.json").exists():
            ts = self.load("timestamp")
            ts.signed.version += 1
        else:
            ts = Metadata(Timestamp(expires=_expires("timestamp", now)))
        if snapshot_version is not None:
            ts.signed.snapshot_meta = MetaFile(version=snapshot_version)
        ts.signed.expires = _expires("timestamp", now)
        ts.signatures.clear()
        for s in self._signers("timestamp"):
            ts.sign(s, append=True)
        self._write(ts)
        return int(ts.signed.version)

    # -- publishing ------------------------------------------------------------------------------
    def add_target(self, path: str, local: Path, custom: dict[str, Any], *,
                   copy: bool = True) -> TargetInfo:
        """Release one file; see :meth:`add_targets`."""
        return self.add_targets([(path, local, custom)], copy=copy)[0]

    def add_targets(self, items: list[tuple[str, Path, dict[str, Any]]], *,
                    copy: bool = True) -> list[TargetInfo]:
        """Release each ``(path, local file, custom)`` as target ``path`` (e.g.
        ``<model>/<version>/<file>``); targets, snapshot and timestamp move to new
        versions once for the lot. ``copy=False``: the caller serves the file by its
        digest itself (the control plane serves targets from its blob store)."""
        with self.lock:
            return self._add_targets(items, copy=copy)

    def _add_targets(self, items: list[tuple[str, Path, dict[str, Any]]], *,
                     copy: bool) -> list[TargetInfo]:
        targets = self.load("targets")
        out = []
        for path, local, custom in items:
            tf = TargetFile.from_file(path, str(local), ["sha256"])
            tf.unrecognized_fields["custom"] = dict(custom)
            digest = tf.hashes["sha256"]
            if copy:
                dest = self.targets_dir / Path(path).parent / f"{digest}.{Path(path).name}"
                dest.parent.mkdir(parents=True, exist_ok=True)
                if not dest.exists():
                    tmp = dest.with_name(f".{dest.name}.tmp")
                    shutil.copyfile(local, tmp)
                    os.replace(tmp, dest)
            targets.signed.targets[path] = tf
            out.append(TargetInfo(path=path, length=tf.length, sha256=digest,
                                  custom=dict(custom)))
        targets.signed.version += 1
        targets.signed.expires = _expires("targets")
        targets.signatures.clear()
        for s in self._signers("targets"):
            targets.sign(s, append=True)
        self._write(targets)
        self._new_snapshot_and_timestamp(targets.signed.version)
        return out

    def timestamp_expires(self) -> datetime:
        return self.load("timestamp").signed.expires  # type: ignore[no-any-return]

    def rotate(self, role: str) -> None:
        """Replace ``role``'s key (for root: one of its keys) with a new one: a new root
        version signed by the threshold of the old root keys and the new ones, so a node
        that trusts the old root accepts the new one, and nothing signed by the retired
        key is trusted after."""
        if role not in TOP_LEVEL_ROLE_NAMES:
            raise PKIError(f"unknown role {role!r}; roles are {', '.join(TOP_LEVEL_ROLE_NAMES)}")
        old_signers = self._signers("root")
        root = self.load("root")
        name = f"{role}-1" if role == "root" else role
        old_priv = self._signers(role)[0]
        root.signed.revoke_key(old_priv.public_key.keyid, role)
        new = generate_key()
        root.signed.add_key(SSlibKey.from_crypto(new.public_key()), role)
        root.signed.version += 1
        root.signed.expires = _expires("root")
        root.signatures.clear()
        for s in old_signers:  # the previous root's threshold vouches for the new one
            root.sign(s, append=True)
        if role == "root":
            root.sign(CryptoSigner(new), append=True)
        write_private(self.keys_dir / f"{name}.key", private_pem(
            new, self.passphrase if role in _ENCRYPTED else None))
        self._write(root)
        # Re-sign what the rotated role signs, with the new key.
        if role == "targets":
            t = self.load("targets")
            t.signed.version += 1
            t.signatures.clear()
            for s in self._signers("targets"):
                t.sign(s, append=True)
            self._write(t)
            self._new_snapshot_and_timestamp(t.signed.version)
        elif role == "snapshot":
            self._new_snapshot_and_timestamp(self.load("targets").signed.version)
        elif role == "timestamp":
            self.refresh_timestamp()

    def targets(self) -> list[TargetInfo]:
        t = self.load("targets")
        return [TargetInfo(path=p, length=f.length, sha256=f.hashes["sha256"],
                           custom=dict(f.unrecognized_fields.get("custom") or {}))
                for p, f in sorted(t.signed.targets.items())]
