"""Releasing registry versions to the fleet: every published version becomes TUF targets
in the fleet's repository (:mod:`edgewise.distribution.repository`), with a
model-signing signature over its files, and every alias move a signed pointer.

For ``NAME@VERSION`` the targets are::

    NAME/VERSION/<path>        each file the manifest lists (and the manifest itself)
    NAME/VERSION/model.sig     model-signing signature over those files (release key)
    NAME/aliases.json          which version each alias means, and the active rollout:
                               {"aliases": {"stable": 3, "canary": 4},
                                "rollout": {"id": 7, "alias": "stable", "version": 4,
                                            "incumbent": 3, "nodes": ["edge-2"],
                                            "probes": "NAME/rollouts/7/probes.jsonl"}}
    NAME/rollouts/ID/probes.jsonl   a rollout's probe set (its quality gate)

Each target's custom data says ``model``, ``version``, ``kind``, ``manifest_sha256`` and
the hardware ``profiles`` the manifest lists, so a node takes only what is meant for it.
Alias pointers are targets too, so a mirror cannot tell a node that ``stable`` is an
older version than the one the control plane named. Files are not copied into the TUF
repository: the control plane serves each target from its blob store by digest (TUF's
consistent-snapshot names carry it: ``NAME/VERSION/<sha256>.<file>``).

Signing targets needs the targets key and the release key, both encrypted with
``$EDGEWISE_CA_PASSPHRASE``: a control plane started without it registers versions but
cannot release them ("publish on the control plane's host with the passphrase set").
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from edgewise.control.blobs import BlobStore
from edgewise.control.registry import ArtifactVersion
from edgewise.distribution.repository import FleetRepository
from edgewise.distribution.signing import sign_release
from edgewise.errors import PKIError
from edgewise.security.keys import generate_key, private_pem, public_pem, write_private

__all__ = ["Releases", "init_releases"]

SIGNATURE = "model.sig"
ALIASES = "aliases.json"
PROBES = "probes.jsonl"


def init_releases(tuf_dir: Path, *, passphrase: bytes) -> FleetRepository:
    """The fleet's TUF repository and release key, created by ``edgewise control init``."""
    repo = FleetRepository.init(tuf_dir, passphrase=passphrase)
    key = generate_key()
    write_private(tuf_dir / "keys" / "release.key", private_pem(key, passphrase))
    (tuf_dir / "release.pub").write_bytes(public_pem(key.public_key()))
    return repo


class Releases:
    def __init__(self, tuf_dir: Path, blobs: BlobStore, *, passphrase: bytes | None) -> None:
        self.repo = FleetRepository(tuf_dir, passphrase=passphrase)
        self.blobs = blobs
        self.passphrase = passphrase
        self.release_key = tuf_dir / "keys" / "release.key"
        self.release_pub = tuf_dir / "release.pub"

    def _need_keys(self) -> None:
        if not self.passphrase:
            raise PKIError("releasing to nodes signs with the targets and release keys: set "
                           "$EDGEWISE_CA_PASSPHRASE for the control plane, or publish on its "
                           "host with --dir")

    def release(self, version: ArtifactVersion, aliases: dict[str, int],
                rollout: dict[str, Any] | None = None) -> list[str]:
        """Sign ``version``'s files as targets (and the name's aliases); the target paths."""
        self._need_keys()
        custom = {"model": version.name, "version": version.version, "kind": version.kind,
                  "manifest_sha256": version.manifest_sha256,
                  # the hardware profiles a variant of it fits (none listed: any)
                  "profiles": sorted(p for p, best in version.profiles.items() if best)}
        prefix = f"{version.name}/{version.version}"
        items = []
        with tempfile.TemporaryDirectory(prefix="edgewise-release-") as tmp:
            tree = Path(tmp) / "files"
            for f in version.files:
                blob = self.blobs.path(f.sha256)
                dest = tree / f.path
                dest.parent.mkdir(parents=True, exist_ok=True)
                if _same_device(blob, tree):  # the tree model-signing signs: links, no copies
                    os.link(blob, dest)
                else:
                    dest.write_bytes(blob.read_bytes())
                items.append((f"{prefix}/{f.path}", blob, custom))
            sig = Path(tmp) / SIGNATURE
            sign_release(tree, sig, private_key=self.release_key, password=self.passphrase)
            sig_blob = self._store(sig.read_bytes())
            items.append((f"{prefix}/{SIGNATURE}", sig_blob, custom))
            items.append(self._aliases_item(version.name, aliases, rollout))
            self.repo.add_targets(items, copy=False)
        return [path for path, _, _ in items]

    def aliases_moved(self, name: str, aliases: dict[str, int],
                      rollout: dict[str, Any] | None = None) -> None:
        """Re-sign ``name``'s alias pointer after a move (or a rollout's change)."""
        self._need_keys()
        self.repo.add_targets([self._aliases_item(name, aliases, rollout)], copy=False)

    def add_probes(self, name: str, rollout_id: int, version: int, data: bytes) -> str:
        """Release a rollout's probe set as a target; its path."""
        self._need_keys()
        path = f"{name}/rollouts/{rollout_id}/{PROBES}"
        self.repo.add_targets([(path, self._store(data),
                                {"model": name, "version": version, "rollout": rollout_id})],
                              copy=False)
        return path

    def _aliases_item(self, name: str, aliases: dict[str, int],
                      rollout: dict[str, Any] | None) -> tuple[str, Path, dict[str, object]]:
        data = json.dumps({"aliases": dict(sorted(aliases.items())), "rollout": rollout},
                          sort_keys=True).encode()
        return (f"{name}/{ALIASES}", self._store(data), {"model": name, "aliases": True})

    def _store(self, data: bytes) -> Path:
        return self.blobs.path(self.blobs.put(data))

    def target_file(self, path: str) -> Path | None:
        """The blob behind a consistent-snapshot target URL path
        (``NAME/VERSION/<sha256>.<file>``), if the control plane holds it."""
        name = path.rsplit("/", 1)[-1]
        digest = name.split(".", 1)[0]
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            return None
        return self.blobs.path(digest) if self.blobs.has(digest) else None


def _same_device(a: Path, b: Path) -> bool:
    try:
        b.mkdir(parents=True, exist_ok=True)
        return a.stat().st_dev == b.stat().st_dev
    except OSError:
        return False
