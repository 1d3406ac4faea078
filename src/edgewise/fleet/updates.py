"""A joined node following a model alias (``fleet.update``): signed updates, installed
atomically, kept on disk, swapped in without a failed request — and taken back when a
rollout says so.

Each round (after a heartbeat, at most every ``fleet.update.interval_s``, and at once
when the heartbeat answer names a version other than the one served):

1. refresh the fleet's TUF metadata (:mod:`edgewise.distribution.updater`: signatures,
   thresholds, versions only growing, expiry, bounded sizes) and read the signed alias
   pointer ``<model>/aliases.json``. It names the alias's version and, during a rollout
   (:mod:`edgewise.control.rollouts`), the nodes that run the new version instead, and
   a probe set for them to score;
2. the version to serve is kept on disk if this node served it before (its folder and
   its model-signing signature, ``<state_dir>/models/<model>/<version>[.sig]``, are
   checked again before use: a rollback does not trust what sat on disk), else each of
   its files is downloaded as a TUF target (length and sha256 checked; a target for
   another model, or older than the version the pointer names, is refused) into a
   staging folder, and the whole folder is checked against the release's model-signing
   signature with the fleet's release key (provenance), then renamed into place (atomic);
3. the app serves it (:class:`Installer`: a hot swap), and only then is it recorded as
   current. In an A/B rollout (the pointer's ``split``) the node serves it *beside* the
   incumbent to that share of its requesters instead, and reports the split; the
   rollout's end ends the split on the version the pointer then names. Versions beyond
   ``keep`` are removed, never one being served;
4. a canary with a probe set scores it on the new version and on the incumbent
   (:mod:`edgewise.supply.probe`) and reports both in its heartbeats (the quality gate).

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
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from tuf.ngclient import FetcherInterface

from edgewise.config import UpdateConfig
from edgewise.distribution.signing import SignatureRefused, verify_release
from edgewise.distribution.updater import (
    HttpxFetcher,
    ModelUpdates,
    UpdateRefused,
    target_profiles,
)
from edgewise.errors import EdgewiseError
from edgewise.fleet.state import FleetState

__all__ = ["Installer", "ModelFollower", "Pointer", "UpdateStatus", "installed_release",
           "read_pointer"]

log = logging.getLogger("edgewise.fleet")

#: ``audit(outcome, reason)`` records an update decision in the node's audit log.
Audit = Callable[[str, str], Awaitable[None]]

P = ParamSpec("P")
T = TypeVar("T")


class Installer(Protocol):
    """How the app serves installed releases (each raises EdgewiseError if it cannot;
    the release is then not made current)."""

    async def serve(self, folder: Path, version: int) -> None:
        """Serve this release alone (a hot swap; ends an A/B split)."""

    async def split(self, folder: Path, version: int, share: float) -> None:
        """Serve this release beside the current one, to ``share`` of the requesters."""

    async def unsplit(self, keep_new: bool) -> None:
        """End the A/B split: keep the release served beside (``keep_new``) or the
        current one."""

    async def probe(self, probes: Path, new: Path, old: Path) -> dict[str, Any]:
        """Score the probe set on both releases: ``n``, ``accuracy``,
        ``incumbent_accuracy``."""


def installed_release(state: FleetState, model: str) -> Path | None:
    """The folder of the release of ``model`` this node last served alone (what it
    serves after a restart, before the next update check)."""
    root = state.dir / "models" / model
    try:
        version = int(json.loads((root / "current.json").read_text())["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    folder = root / str(version)
    return folder if folder.is_dir() else None


@dataclass(frozen=True)
class Pointer:
    """What the signed alias pointer says this node should serve."""

    version: int
    rollout: int | None = None
    incumbent: int | None = None
    probes: str | None = None
    #: A/B: serve ``version`` beside ``incumbent`` to this share of requesters.
    split: float | None = None


def read_pointer(data: bytes, *, model: str, alias: str, node: str) -> Pointer:
    """Parse ``<model>/aliases.json`` (already verified as a TUF target) for ``node``."""
    try:
        doc = json.loads(data)
        aliases = doc["aliases"] if isinstance(doc.get("aliases"), dict) else doc
        ro = doc.get("rollout") if isinstance(doc.get("rollout"), dict) else None
    except (ValueError, AttributeError) as exc:
        raise UpdateRefused(f"the alias pointer of {model} is not what the control plane "
                            "writes", attack="malformed") from exc
    if ro is not None and ro.get("alias") == alias and node in (ro.get("nodes") or []):
        split = ro.get("split")
        return Pointer(version=int(ro["version"]), rollout=int(ro["id"]),
                       incumbent=int(ro["incumbent"]), probes=ro.get("probes"),
                       split=None if split is None else float(split))
    if alias not in aliases:
        raise UpdateRefused(f"the registry has no alias {alias!r} for {model}",
                            attack="unknown_alias")
    return Pointer(version=int(aliases[alias]))


@dataclass
class UpdateStatus:
    model: str
    alias: str
    installed: int | None = None
    state: str = "idle"  # idle | current | updating | refused | unreachable
    error: str | None = None
    #: The version the last round aimed at (a refusal names it).
    target: int | None = None
    #: The last probe-set result: rollout, version, incumbent, n, accuracy,
    #: incumbent_accuracy.
    probe: dict[str, Any] | None = None
    #: A/B: the version served beside ``installed`` and its share of requesters.
    split: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "alias": self.alias, "installed": self.installed,
                "state": self.state, "error": (self.error or "")[:500] or None,
                "target": self.target, "probe": self.probe, "split": self.split}


class _Round:
    """One round's TUF client, shared with the worker threads that run its blocking steps.

    A thread cannot be stopped: a round cancelled during a step (the agent stopping)
    leaves the step running in its thread. Closing the client at that moment would empty
    its connection pool under the thread, and a connection the thread is still opening
    would then never be closed (an unclosed SSLSocket, left to the garbage collector). So
    the client is closed by whichever ends last: the round, or its step still running."""

    def __init__(self, up: ModelUpdates, *, owned: bool) -> None:
        self.up = up
        self._owned = owned  # an injected fetcher is its owner's to close
        self._mutex = threading.Lock()
        self._running = 0
        self._ended = False

    async def run(self, step: Callable[Concatenate[ModelUpdates, P], T],
                  *args: P.args, **kwargs: P.kwargs) -> T:
        """``step(up, ...)`` in a worker thread."""
        def in_thread() -> T:
            with self._mutex:
                if self._ended:  # cancelled before this thread began: the client is closed
                    raise RuntimeError("the update round was cancelled")
                self._running += 1
            try:
                return step(self.up, *args, **kwargs)
            finally:
                with self._mutex:
                    self._running -= 1
                    last = self._ended and not self._running
                if last:
                    self._close()

        return await asyncio.to_thread(in_thread)

    def end(self) -> None:
        with self._mutex:
            self._ended = True
            idle = not self._running
        if idle:
            self._close()

    def _close(self) -> None:
        if self._owned:
            self.up.close()


class ModelFollower:
    def __init__(self, state: FleetState, cfg: UpdateConfig, *, control_url: str,
                 client_tls: ssl.SSLContext, installer: Installer,
                 audit: Audit | None = None,
                 fetcher: FetcherInterface | None = None) -> None:
        assert cfg.model is not None
        self.state = state
        self.cfg = cfg
        self.model = cfg.model
        self.node = state.membership().node
        self.root = state.dir / "models" / cfg.model
        self.installer = installer
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

    def wants(self, version: int) -> bool:
        """Whether the control plane's ``version`` differs from what is served (the agent
        then checks at once rather than at the next interval). During an A/B split the
        version it names is the one served beside."""
        split = self.status.split
        return version != (split["version"] if split else self.status.installed)

    def _updates(self) -> ModelUpdates:
        fetcher: FetcherInterface = self._fetcher or HttpxFetcher(verify=self._client_tls)
        return ModelUpdates(self.state.dir, self.base_url,
                            root=self.state.tuf_root_file.read_bytes(),
                            fetcher=fetcher)

    # -- blocking steps (run in a thread) ---------------------------------------------------
    def _pointer(self, up: ModelUpdates) -> tuple[Pointer, dict[str, dict[str, Any]]]:
        listed = up.available()
        data = up.fetch(f"{self.model}/aliases.json", model=self.model,
                        newer_than=-1).read_bytes()
        return read_pointer(data, model=self.model, alias=self.cfg.alias,
                            node=self.node), listed

    def _obtain(self, up: ModelUpdates, listed: dict[str, dict[str, Any]],
                version: int) -> Path:
        """The verified folder of ``version``: the kept one (checked again against its
        signature) or a fresh download (step 2 of the module docstring)."""
        dest, sig = self.root / str(version), self.root / f"{version}.sig"
        if dest.is_dir() and sig.is_file():
            verify_release(dest, sig, public_key=self.state.release_key_file)
            return dest
        prefix = f"{self.model}/{version}/"
        staging = self.root / f".{version}.staging"
        shutil.rmtree(staging, ignore_errors=True)
        paths = [p for p in sorted(listed) if p.startswith(prefix)]
        if f"{prefix}model.sig" not in paths:
            raise UpdateRefused(f"the repository lists no signed release {self.model}@"
                                f"{version}", attack="unknown_target")
        profile = self.cfg.profile
        fits = target_profiles(listed[f"{prefix}model.sig"])
        if profile is not None and fits and profile not in fits:  # before any download
            raise UpdateRefused(f"{self.model}@{version} is released for hardware profile(s) "
                                f"{', '.join(fits)}, not this node's {profile}: wrong "
                                "software", attack="wrong_software")
        try:
            for path in paths:
                if path.endswith("/model.sig"):
                    continue
                got = up.fetch(path, model=self.model, profile=profile,
                               newer_than=version - 1)
                out = staging / path.removeprefix(prefix)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(got, out)
            got_sig = up.fetch(f"{prefix}model.sig", model=self.model, profile=profile,
                               newer_than=version - 1)
            verify_release(staging, got_sig, public_key=self.state.release_key_file)
        except BaseException:  # nothing refused (or half-fetched) is left on disk
            shutil.rmtree(staging, ignore_errors=True)
            raise
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copyfile(got_sig, sig)
        staging.rename(dest)
        return dest

    def _fetch_probes(self, up: ModelUpdates, path: str, version: int) -> Path:
        return up.fetch(path, model=self.model, newer_than=version - 1)

    # -- a round ----------------------------------------------------------------------------
    async def check(self) -> None:
        """One round (module docstring); never raises. Rounds never overlap (the TUF
        client's metadata directory is one per node)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            try:
                up = self._updates()
            except OSError as exc:  # the node's trusted root is gone: say so, keep serving
                self.status.state, self.status.error = "refused", f"no TUF root: {exc}"
                log.error("model updates: %s", self.status.error)
                return
            rnd = _Round(up, owned=self._fetcher is None)
            try:
                await self._check(rnd)
            finally:
                rnd.end()

    async def _check(self, up: _Round) -> None:
        try:
            ptr, listed = await up.run(self._pointer)
            self.status.target = ptr.version
            changed = await self._apply(up, listed, ptr)
            if ptr.probes and ptr.rollout is not None and (
                    self.status.probe is None
                    or self.status.probe.get("rollout") != ptr.rollout):
                await self._probe(up, listed, ptr)
        except (UpdateRefused, SignatureRefused) as exc:
            attack = getattr(exc, "attack", "signature")
            # A control plane that does not answer is not an attack; one that answers at
            # a trickle is (the TUF spec's slow retrieval): refused, logged and audited.
            if attack == "download":
                self.status.state, self.status.error = "unreachable", str(exc)
                log.warning("model updates: control plane unreachable (%s)", exc)
                return
            await self._refused(str(exc), outcome=f"refused:{attack}", reason=str(exc),
                                line=f"model update refused ({attack}): {exc}")
            return
        except (EdgewiseError, OSError, ValueError) as exc:
            await self._refused(f"install failed: {exc}", outcome="failed:install",
                                reason=str(exc),
                                line=f"model {self.model}: update to v{self.status.target} "
                                     f"failed: {exc}")
            return
        self.status.state, self.status.error = "current", None
        if changed:
            self._prune(keep=self.cfg.keep)

    async def _refused(self, error: str, *, outcome: str, reason: str, line: str) -> None:
        """Record a refused round; its line and audit record are written once, not again
        while the next rounds are refused for the same reason (the heartbeat keeps
        reporting it)."""
        again = self.status.error == error
        self.status.state, self.status.error = "refused", error
        if again:
            log.debug("still refused: %s", line)
            return
        v = self.status.installed
        log.error("%s; still serving %s", line,
                  f"version {v}" if v is not None else "the model in its config")
        if self.audit is not None:
            await self.audit(outcome, reason[:400])

    async def _apply(self, up: _Round, listed: dict[str, dict[str, Any]],
                     ptr: Pointer) -> bool:
        """Serve what ``ptr`` says; whether anything changed."""
        st = self.status
        if ptr.split is not None and ptr.incumbent is not None:
            return await self._split(up, listed, ptr)
        if st.split is not None:  # the A/B rollout ended: keep what the pointer names
            beside = int(st.split["version"])
            if ptr.version in (beside, st.installed):
                await self.installer.unsplit(keep_new=ptr.version == beside)
                st.split = None
                if ptr.version == beside:
                    await self._now_serving(beside, f"alias {self.cfg.alias}")
                else:
                    log.info("A/B split ended: %s@%d serves everything again (rolled back)",
                             self.model, ptr.version)
                return True
        if ptr.version == st.installed:
            return False
        self.status.state = "updating"
        folder = await up.run(self._obtain, listed, ptr.version)
        back = st.installed is not None and ptr.version < st.installed
        await self.installer.serve(folder, ptr.version)
        st.split = None  # a swap replaces both versions of a split
        await self._now_serving(ptr.version,
                                "rolled back" if back else
                                f"rollout {ptr.rollout}" if ptr.rollout is not None else
                                f"alias {self.cfg.alias}")
        return True

    async def _split(self, up: _Round, listed: dict[str, dict[str, Any]],
                     ptr: Pointer) -> bool:
        """Serve ``ptr.version`` beside the incumbent at ``ptr.split``."""
        st = self.status
        assert ptr.split is not None and ptr.incumbent is not None
        want = {"version": ptr.version, "share": ptr.split}
        if st.split == want and st.installed == ptr.incumbent:
            return False
        if st.installed != ptr.incumbent:  # the split is made beside the incumbent
            await self._apply(up, listed, Pointer(version=ptr.incumbent))
        st.state = "updating"
        folder = await up.run(self._obtain, listed, ptr.version)
        await self.installer.split(folder, ptr.version, ptr.split)
        st.split = want
        log.info("A/B split (rollout %s): %s@%d serves %.1f%% of requesters beside v%d",
                 ptr.rollout, self.model, ptr.version, ptr.split * 100, ptr.incumbent)
        if self.audit is not None:
            await self.audit("answered", f"serving {self.model}@{ptr.version} beside "
                                         f"v{ptr.incumbent} to {ptr.split:.0%} of requesters "
                                         f"(rollout {ptr.rollout})")
        return True

    async def _now_serving(self, version: int, why: str) -> None:
        (self.root / "current.json").write_text(json.dumps({"version": version}))
        self.status.installed = version
        log.info("now serving %s@%d (%s)", self.model, version, why)
        if self.audit is not None:
            await self.audit("answered", f"installed {self.model}@{version} ({why})")

    async def _probe(self, up: _Round, listed: dict[str, dict[str, Any]],
                     ptr: Pointer) -> None:
        assert ptr.probes is not None and ptr.incumbent is not None
        probes = await up.run(self._fetch_probes, ptr.probes, ptr.version)
        old = await up.run(self._obtain, listed, ptr.incumbent)
        new = self.root / str(ptr.version)
        result = await self.installer.probe(probes, new, old)
        self.status.probe = {"rollout": ptr.rollout, "version": ptr.version,
                             "incumbent": ptr.incumbent, **result}
        log.info("probe set of rollout %d: %s@%d %.3f, incumbent v%d %.3f (%d probes)",
                 ptr.rollout, self.model, ptr.version, result["accuracy"], ptr.incumbent,
                 result["incumbent_accuracy"], result["n"])

    def _prune(self, *, keep: int) -> None:
        """Keep the versions being served and the newest others, ``keep`` in all."""
        beside = self.status.split["version"] if self.status.split else None
        serving = {v for v in (self.status.installed, beside) if v is not None}
        versions = sorted((int(p.name) for p in self.root.iterdir()
                           if p.is_dir() and p.name.isdigit()), reverse=True)
        room = max(0, keep - len(serving))
        others = [v for v in versions if v not in serving]
        for v in others[room:]:
            shutil.rmtree(self.root / str(v), ignore_errors=True)
            (self.root / f"{v}.sig").unlink(missing_ok=True)
