"""The registry's file store: content-addressed blobs under the control directory.

A published file lives once, at ``DIR/registry/blobs/sha256/<hex>``, whatever artifact
or version lists it: a version whose files are already there (a re-publish, a variant
that shares its tokenizer with its base) shares them. The name *is* the digest, so a
blob never changes after it is written, and the database only has to record digests.

Writing is the one place integrity is established, so it is careful:

1. the bytes go to a temporary file in ``DIR/registry/tmp/`` (the same filesystem, so
   the final rename is atomic), hashed as they are written, bounded in size
   (:data:`MAX_BLOB_BYTES`);
2. the caller compares the digest with the one it expected (the URL's, or the
   manifest's) *before* committing; a mismatch leaves nothing behind;
3. commit: ``fsync``, read-only mode, ``os.replace`` onto the final name (a concurrent
   writer of the same blob wrote the same bytes, so either rename wins), ``fsync`` of
   the directory.

Several control-plane replicas share the registry when they share the control
directory (as they share its CA files).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import time
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from edgewise.errors import InvalidRequestError, PayloadTooLargeError

__all__ = ["MAX_BLOB_BYTES", "BlobStore", "BlobWriter", "check_digest"]

#: The largest file the registry takes (a 7B model at 8 bits fits; a 70B one does not).
MAX_BLOB_BYTES = 8 << 30
#: Copy and hash in blocks of this size.
_CHUNK = 1 << 20
#: Temporary files older than this are an interrupted upload's and are removed.
_STALE_S = 24 * 3600
_HEX = re.compile(r"[0-9a-f]{64}")


def check_digest(sha256: str) -> str:
    """``sha256`` if it is 64 lowercase hex digits; ``InvalidRequestError`` otherwise."""
    if not isinstance(sha256, str) or _HEX.fullmatch(sha256) is None:
        shown = sha256[:80] if isinstance(sha256, str) else type(sha256).__name__
        raise InvalidRequestError(f"{shown!r} is not a sha256 digest: use 64 lowercase hex "
                                  "digits", param="sha256")
    return sha256


class BlobWriter:
    """One blob being written (:meth:`BlobStore.writer`): ``write`` the bytes, compare
    :meth:`hexdigest` with the expected digest, then :meth:`commit`. Leaving the
    ``with`` block without committing removes the temporary file."""

    def __init__(self, store: BlobStore) -> None:
        self._store = store
        store.tmp.mkdir(parents=True, exist_ok=True)
        self.tmp = store.tmp / f"{secrets.token_hex(12)}.part"
        self._file: BinaryIO | None = self.tmp.open("xb")
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        if self._file is None:
            raise ValueError("the blob was already committed or discarded")
        self.size += len(data)
        if self.size > self._store.max_bytes:
            raise PayloadTooLargeError(
                f"the file is larger than the registry's limit of {self._store.max_bytes} "
                "bytes; publish a smaller variant")
        self._hash.update(data)
        self._file.write(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def commit(self, sha256: str) -> Path:
        """Store the bytes as blob ``sha256`` (which must be :meth:`hexdigest`)."""
        if self._file is None:
            raise ValueError("the blob was already committed or discarded")
        if sha256 != self.hexdigest():
            raise ValueError("commit() takes the digest of the bytes written")
        final = self._store.path(sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        os.chmod(self.tmp, 0o444)  # a blob never changes; model files are not secrets
        os.replace(self.tmp, final)
        _fsync_dir(final.parent)
        return final

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.discard()


class BlobStore:
    """Blobs under ``root`` (``DIR/registry``): ``blobs/sha256/<hex>``, and ``tmp/``."""

    def __init__(self, root: Path, *, max_bytes: int = MAX_BLOB_BYTES) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.max_bytes = max_bytes
        self._sweep()

    def path(self, sha256: str) -> Path:
        return self.root / "blobs" / "sha256" / check_digest(sha256)

    def size(self, sha256: str) -> int | None:
        """The blob's size in bytes; ``None`` when it is not stored."""
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError:
            return None

    def has(self, sha256: str) -> bool:
        return self.size(sha256) is not None

    def writer(self) -> BlobWriter:
        return BlobWriter(self)

    def put(self, data: bytes) -> str:
        """Store small ``data`` (a signature, a pointer, a probe set); its sha256."""
        digest = hashlib.sha256(data).hexdigest()
        if not self.has(digest):
            with self.writer() as w:
                w.write(data)
                w.commit(digest)
        return digest

    def read_bytes(self, sha256: str, *, limit: int) -> bytes:
        """A small blob's bytes (a manifest); ``InvalidRequestError`` over ``limit``."""
        size = self.size(sha256)
        if size is None:
            raise InvalidRequestError(f"blob sha256 {sha256[:16]}… is not stored: upload "
                                      "it first", param="sha256")
        if size > limit:
            raise InvalidRequestError(f"blob sha256 {sha256[:16]}… is {size} bytes, over "
                                      f"the {limit} a manifest may have", param="sha256")
        return self.path(sha256).read_bytes()

    def ingest(self, source: Path, sha256: str) -> str:
        """Read ``source`` once: hash it, and copy it in unless blob ``sha256`` is
        already stored. Returns the digest of what was read; the blob is stored only
        when that is ``sha256``, so the caller reports a mismatch with nothing left."""
        check_digest(sha256)
        if self.has(sha256):
            h = hashlib.sha256()
            with source.open("rb") as f:
                for block in iter(lambda: f.read(_CHUNK), b""):
                    h.update(block)
            return h.hexdigest()
        with self.writer() as w, source.open("rb") as f:
            for block in iter(lambda: f.read(_CHUNK), b""):
                w.write(block)
            if w.hexdigest() == sha256:
                w.commit(sha256)
            return w.hexdigest()

    def _sweep(self) -> None:
        """Remove temporary files an interrupted upload left a day ago or earlier (not
        newer ones: another replica may be writing them now)."""
        try:
            entries = list(self.tmp.iterdir())
        except FileNotFoundError:
            return
        cutoff = time.time() - _STALE_S
        for p in entries:
            with contextlib.suppress(OSError):
                if p.suffix == ".part" and p.stat().st_mtime < cutoff:
                    p.unlink()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
