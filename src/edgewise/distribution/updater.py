"""A node's side of signed distribution: ``tuf.ngclient.Updater`` (python-tuf), bootstrapped
with the root the node got when it joined, plus the checks TUF leaves to the application.

TUF verifies the metadata chain (signatures and thresholds, versions that only grow,
expiry, lengths and hashes of every file it downloads, bounded sizes against endless
data). On top of that, :meth:`ModelUpdates.fetch` refuses a validly signed target that is
not what this node asked for ("wrong software": another model or hardware profile) or
that is older than what it runs (an old but validly signed release).

Every refusal becomes :class:`UpdateRefused` with one line that names the attack or
fault, e.g. "metadata expired — the repository is frozen or this machine's clock is
wrong (now 2026-…, timestamp expired 2026-…)": an expiry is reported as a possible clock
problem, not as tampering. The node keeps serving what it has.

The network hop is a :class:`tuf.ngclient.FetcherInterface`: :class:`HttpxFetcher` over
the node's mutual-TLS client context, with a read timeout and an overall deadline per
file (slow retrieval), or any fetcher a test injects (a malicious mirror).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Targets
from tuf.ngclient import FetcherInterface, Updater

from edgewise.errors import FleetError

__all__ = ["HttpxFetcher", "ModelUpdates", "UpdateRefused", "target_profiles"]


class UpdateRefused(FleetError):
    """An update was refused; ``attack`` names what it looked like."""

    def __init__(self, message: str, *, attack: str) -> None:
        super().__init__(message)
        self.attack = attack


class HttpxFetcher(FetcherInterface):
    """Downloads over httpx (mutual TLS with the node's context), each file within
    ``deadline_s`` and with no gap longer than ``read_timeout_s``."""

    def __init__(self, *, verify: Any = True, read_timeout_s: float = 10.0,
                 deadline_s: float = 300.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.client = httpx.Client(verify=verify, transport=transport,
                                   timeout=httpx.Timeout(read_timeout_s, connect=5.0))
        self.deadline_s = deadline_s

    def close(self) -> None:
        self.client.close()

    def _fetch(self, url: str) -> Iterator[bytes]:
        start = time.monotonic()
        try:
            with self.client.stream("GET", url) as r:
                if r.status_code != 200:
                    raise tuf_errors.DownloadHTTPError(f"{url}: HTTP {r.status_code}",
                                                      r.status_code)
                for chunk in r.iter_bytes():  # as they arrive: the deadline is checked per chunk
                    if time.monotonic() - start > self.deadline_s:
                        raise tuf_errors.SlowRetrievalError(
                            f"{url}: not complete after {self.deadline_s:g} s")
                    yield chunk
        except httpx.TimeoutException as exc:
            raise tuf_errors.SlowRetrievalError(f"{url}: {type(exc).__name__}") from exc
        except httpx.HTTPError as exc:
            raise tuf_errors.DownloadError(f"{url}: {type(exc).__name__}") from exc


def _explain(exc: Exception) -> UpdateRefused:
    """One line for a python-tuf refusal, naming what it most likely is."""
    text = " ".join(str(exc).split())[:300]
    if isinstance(exc, tuf_errors.ExpiredMetadataError):
        return UpdateRefused(
            f"metadata expired — the repository is frozen or this machine's clock is wrong "
            f"(now {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}): {text}", attack="freeze_or_clock")
    if isinstance(exc, tuf_errors.BadVersionNumberError):
        return UpdateRefused(f"rollback refused: {text}", attack="rollback")
    if isinstance(exc, tuf_errors.UnsignedMetadataError):
        return UpdateRefused(f"metadata not signed by the keys the fleet trusts: {text}",
                             attack="untrusted_signature")
    if isinstance(exc, tuf_errors.DownloadLengthMismatchError):
        return UpdateRefused(f"a download ran past its signed or maximum length (endless "
                             f"data): {text}", attack="endless_data")
    if isinstance(exc, tuf_errors.LengthOrHashMismatchError):
        return UpdateRefused(f"a file does not match its signed length or hash: {text}",
                             attack="tampered")
    if isinstance(exc, tuf_errors.SlowRetrievalError):
        return UpdateRefused(f"download too slow: {text}", attack="slow_retrieval")
    if isinstance(exc, tuf_errors.DownloadError):
        return UpdateRefused(f"download failed: {text}", attack="download")
    return UpdateRefused(f"repository refused: {type(exc).__name__}: {text}",
                         attack="repository")


class ModelUpdates:
    """The node's TUF client (module docstring). ``state_dir/tuf/`` keeps the trusted
    metadata between runs (so a rollback is caught across restarts) and the downloads."""

    def __init__(self, state_dir: Path, base_url: str, *, root: bytes,
                 fetcher: FetcherInterface | None = None) -> None:
        self.metadata_dir = state_dir / "tuf" / "metadata"
        self.download_dir = state_dir / "tuf" / "downloads"
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        self.download_dir.mkdir(parents=True, exist_ok=True)
        self.base_url = base_url.rstrip("/")
        self.root = root
        self.fetcher = fetcher

    def close(self) -> None:
        """Close the fetcher's connections (if it has any)."""
        close = getattr(self.fetcher, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> ModelUpdates:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _updater(self) -> Updater:
        trusted = self.metadata_dir / "root.json"
        return Updater(str(self.metadata_dir), f"{self.base_url}/metadata/",
                       str(self.download_dir), f"{self.base_url}/targets/",
                       fetcher=self.fetcher,
                       bootstrap=trusted.read_bytes() if trusted.exists() else self.root)

    def available(self) -> dict[str, dict[str, Any]]:
        """Refresh the metadata; every target's custom data by path."""
        try:
            self._updater().refresh()
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as exc:
            raise _explain(exc) from exc
        # The updater keeps the targets metadata it verified in its metadata directory.
        md = Metadata[Targets].from_file(str(self.metadata_dir / "targets.json"))
        return {p: dict(t.unrecognized_fields.get("custom") or {})
                for p, t in md.signed.targets.items()}

    def fetch(self, path: str, *, model: str, profile: str | None = None,
              newer_than: int = 0) -> Path:
        """Download target ``path`` after checking it is ``model`` (and ``profile``),
        newer than version ``newer_than``; returns the verified local file."""
        try:
            up = self._updater()
            up.refresh()
            info = up.get_targetinfo(path)
            if info is None:
                raise UpdateRefused(f"no signed target {path}", attack="unknown_target")
            custom = dict(info.unrecognized_fields.get("custom") or {})
            fits = target_profiles(custom)
            if custom.get("model") != model or (profile is not None and fits
                                                and profile not in fits):
                raise UpdateRefused(
                    f"target {path} is {custom.get('model')} for profile "
                    f"{', '.join(fits) or 'any'}, not {model} for {profile}: wrong software",
                    attack="wrong_software")
            if int(custom.get("version", 0)) <= newer_than:
                raise UpdateRefused(
                    f"target {path} is version {custom.get('version')}, not newer than the "
                    f"{newer_than} this node runs: an old release", attack="old_release")
            cached = up.find_cached_target(info)
            return Path(cached or up.download_target(info))
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as exc:
            raise _explain(exc) from exc


def target_profiles(custom: dict[str, Any]) -> list[str]:
    """The hardware profiles a target is released for (its ``profiles`` list, or one
    ``profile``); empty: any hardware."""
    many = custom.get("profiles")
    if isinstance(many, list):
        return [str(p) for p in many]
    one = custom.get("profile")
    return [str(one)] if one else []
