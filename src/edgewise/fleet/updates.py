"""A joined node following a model alias (``fleet.update``): signed updates, installed
atomically, kept one version back, swapped in without a failed request.

Each round (after a heartbeat, at most every ``fleet.update.interval_s``):

1. refresh the fleet's TUF metadata (:mod:`edgewise.distribution.updater`: signatures,
   thresholds, versions only growing, expiry, bounded sizes) and read the signed alias
   pointer ``<model>/aliases.json``;
2. if the alias names a version newer than the installed one, download each of its
   files as a TUF target (length and sha256 checked; a target for another model is
   refused) into a staging folder, then check the whole folder against the release's
   model-signing signature with the fleet's release key (provenance);
3. rename the folder into ``<state_dir>/models/<model>/<version>`` (atomic), let the app
   swap the engine onto it (``install``), and only then record it as current; older
   versions beyond ``keep`` are removed.

Anything refused leaves the node serving what it has, with one line in its log, an
audit record (``fleet/update``, ``refused:<attack>``) and the reason in the next
heartbeat. A control plane that cannot be reached is not an error: the node retries.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from tuf.ngclient import FetcherInterface

from edgewise.config import UpdateConfig
from edgewise.distribution.signing import SignatureRefused, verify_release
from edgewise.distribution.updater import HttpxFetcher, ModelUpdates, UpdateRefused
from edgewise.errors import EdgewiseError
from edgewise.fleet.state import FleetState

__all__ = ["Install", "ModelFollower", "UpdateStatus", "installed_release"]

log = logging.getLogger("edgewise.fleet")

#: ``install(folder, version)`` serves the installed release (swaps the engine);
#: raises EdgewiseError if it cannot (the release is then not made current).
Install = Callable[[Path, int], Awaitable[None]]
#: ``audit(outcome, reason)`` records an update decision in the node's audit log.
Audit = Callable[[str, str], Awaitable[None]]


def installed_release(state: FleetState, model: str) -> Path | None:
    """The folder of the release of ``model`` this node last installed (what it serves
    after a restart, before the next update check)."""
    root = state.dir / "models" / model
    try:
        version = int(json.loads((root / "current.json").read_text())["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    folder = root / str(version)
    return folder if folder.is_dir() else None


@dataclass
class UpdateStatus:
    model: str
    alias: str
    installed: int | None = None
    state: str = "idle"  # idle | current | updating | refused | unreachable
    error: str | None = None


class ModelFollower:
    def __init__(self, state: FleetState, cfg: UpdateConfig, *, control_url: str,
                 client_tls: ssl.SSLContext, install: Install, audit: Audit | None = None,
                 fetcher: FetcherInterface | None = None) -> None:
        assert cfg.model is not None
        self.state = state
        self.cfg = cfg
        self.model = cfg.model
        self.root = state.dir / "models" / cfg.model
        self.install = install
        self.audit = audit
        self._fetcher = fetcher
        self._client_tls = client_tls
        self.base_url = f"{control_url.rstrip('/')}/tuf"
        self.status = UpdateStatus(model=cfg.model, alias=cfg.alias,
                                   installed=self._installed())
        self._lock: asyncio.Lock | None = None

    def _installed(self) -> int | None:
        try:
            return int(json.loads((self.root / "current.json").read_text())["version"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def current_dir(self) -> Path | None:
        return installed_release(self.state, self.model)

    def _updates(self) -> ModelUpdates:
        fetcher: FetcherInterface = self._fetcher or HttpxFetcher(verify=self._client_tls)
        return ModelUpdates(self.state.dir, self.base_url,
                            root=self.state.tuf_root_file.read_bytes(),
                            fetcher=fetcher)

    def _download(self) -> tuple[int, Path] | None:
        """Steps 1-2 (blocking: run in a thread): the staged, verified release, or None
        when the installed version is current."""
        with self._updates() as up:
            listed = up.available()
            pointer = up.fetch(f"{self.model}/aliases.json", model=self.model, newer_than=-1)
            aliases = json.loads(pointer.read_bytes())
            if self.cfg.alias not in aliases:
                raise UpdateRefused(f"the registry has no alias {self.cfg.alias!r} for "
                                    f"{self.model}", attack="unknown_alias")
            want = int(aliases[self.cfg.alias])
            have = self._installed() or 0
            if want <= have:
                return None
            prefix = f"{self.model}/{want}/"
            staging = self.root / f".{want}.staging"
            shutil.rmtree(staging, ignore_errors=True)
            for path in sorted(listed):
                if not path.startswith(prefix) or path.endswith("/model.sig"):
                    continue
                got = up.fetch(path, model=self.model, newer_than=have)
                out = staging / path.removeprefix(prefix)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(got, out)
            sig = up.fetch(f"{prefix}model.sig", model=self.model, newer_than=have)
            verify_release(staging, sig, public_key=self.state.release_key_file)
            return want, staging

    async def check(self) -> None:
        """One round (module docstring); never raises. Rounds never overlap (the TUF
        client's metadata directory is one per node)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            await self._check()

    async def _check(self) -> None:
        try:
            staged = await asyncio.to_thread(self._download)
        except (UpdateRefused, SignatureRefused) as exc:
            attack = getattr(exc, "attack", "signature")
            unreachable = attack in ("download", "slow_retrieval")
            self.status.state = "unreachable" if unreachable else "refused"
            self.status.error = str(exc)
            if unreachable:
                log.warning("model updates: control plane unreachable (%s)", exc)
                return
            log.error("model update refused (%s): %s; still serving version %s",
                      attack, exc, self.status.installed)
            if self.audit is not None:
                await self.audit(f"refused:{attack}", str(exc)[:400])
            return
        except (EdgewiseError, OSError, ValueError) as exc:
            self.status.state, self.status.error = "refused", str(exc)
            log.error("model update failed: %s", exc)
            return
        if staged is None:
            self.status.state, self.status.error = "current", None
            return
        version, staging = staged
        dest = self.root / str(version)
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)
        self.status.state = "updating"
        try:
            await self.install(dest, version)
        except EdgewiseError as exc:
            self.status.state, self.status.error = "refused", f"install failed: {exc}"
            log.error("model %s@%d verified but not served: %s", self.model, version, exc)
            if self.audit is not None:
                await self.audit("failed:install", str(exc)[:400])
            return
        (self.root / "current.json").write_text(json.dumps({"version": version}))
        self.status.installed, self.status.state, self.status.error = version, "current", None
        log.info("now serving %s@%d (alias %s)", self.model, version, self.cfg.alias)
        if self.audit is not None:
            await self.audit("answered", f"installed {self.model}@{version} "
                                         f"(alias {self.cfg.alias})")
        self._prune(keep=self.cfg.keep)

    def _prune(self, *, keep: int) -> None:
        versions = sorted((int(p.name) for p in self.root.iterdir()
                           if p.is_dir() and p.name.isdigit()), reverse=True)
        for v in versions[keep:]:
            shutil.rmtree(self.root / str(v), ignore_errors=True)
