"""A local, hash-chained, append-only audit log of routing decisions (one SQLite file).

Every routed request leaves one :class:`~edgewise.security.audit_record.AuditRecord`:
who asked, how sensitive it was, which entity types were found (counts, never values),
which tier answered, what was redacted or escalated, and how it ended. ``edgewise audit
verify`` proves the log has not been changed since; ``edgewise audit show`` filters it.

Chain construction
------------------
Records are numbered ``seq = 1, 2, 3, …`` without gaps. Record ``n`` stores

* ``body`` = :func:`~edgewise.security.audit_record.canonical_json` of ``seq`` and the
  record (sorted keys, fixed separators, ASCII only, no floats: deterministic bytes);
* ``prev_hash`` = the ``hash`` of record ``n - 1``, or :data:`GENESIS` (64 zeros) for
  record 1;
* ``hash`` = ``H(bytes.fromhex(prev_hash) ‖ body)``, hex, where ``H`` is SHA-256, or
  HMAC-SHA256 under a secret key when one is configured (``audit.key_env``).

Because ``seq`` is inside the hashed body and every hash covers its predecessor, the last
hash (the *head*) commits to the whole history. The key itself is never stored: the file
only keeps ``mode`` (``sha256`` or ``hmac-sha256``) and a key check value
``HMAC(key, "edgewise audit log key check v1")``, which tells a wrong key apart from a
tampered record and reveals nothing about the key.

Threat model
------------
``verify`` walks the chain and reports the first bad ``seq``. It detects, for someone
who edits the file with sqlite3 or a hex editor:

* an edited field (the body no longer hashes to ``hash``; an edited index column no
  longer matches the body);
* a deleted record in the middle or at the start (a gap in ``seq``);
* reordered or renumbered records (a body's ``seq`` differs from its row; ``prev_hash``
  no longer links);
* an inserted or forged record, unless its ``hash`` and every later one are recomputed;
* with a key: a chain recomputed without it (plain SHA-256 or another key), and any
  record forged or recomputed by someone who can write the file but lacks the key.

It cannot detect, by construction:

* **Unkeyed**: an attacker who rewrites the whole file and recomputes every hash — SHA-256
  is public. Pin the head (below) or configure a key.
* **Truncation of the tail**: deleting the last *k* records leaves a valid, shorter chain.
  Pin the head: ``verify(head=(seq, hash))`` (``--head SEQ:HASH``) fails when that record
  is gone or different. Copy the head printed by ``edgewise audit verify`` somewhere the
  node cannot write (a ticket, another machine) at a regular interval; records after the
  last pinned head can still be truncated unseen.
* **Deleting the whole file**, or replacing it with a fresh log: the same as truncation to
  zero; a pinned head catches it.
* **An attacker who holds the key** (it lives in the node's environment): a compromised
  node can rewrite its own log. Pinned heads still bind the records before them.
* **Lies at the source**: the log records what the node was told to record.

The SQLite triggers below refuse ``UPDATE`` and ``DELETE`` on records (and on the key
metadata) and an ``INSERT`` whose ``seq`` is not the next one. That stops bugs and
careless tools using SQL; it does not stop an attacker, who can ``DROP TRIGGER`` or edit
the file's bytes. The chain is the protection; the triggers are a seatbelt. This module
itself has no update or delete API.

Durability and concurrency
--------------------------
As in :mod:`edgewise.jobs.store`: ``journal_mode=WAL`` (a commit appends to the log and
fsyncs only that; readers such as ``verify`` never block the writer) and
``synchronous=FULL`` (the WAL is fsynced at every commit, so a record whose ``append``
returned survives ``kill -9`` and power loss; ``NORMAL`` could lose the newest records on
power loss — the ones an investigator most wants). Appends are ``BEGIN IMMEDIATE``
transactions: the write lock is taken before the last hash is read, so two threads or two
processes appending to one file still produce one unbroken chain. One writer connection
per log, guarded by a :class:`threading.Lock`; reads (``verify``, ``query``, ``head``)
open their own read-only connection (``mode=ro``: never creates a file) and see one
consistent snapshot.

An append costs one fsync (about 3–4 ms on the development VM), so call it off the event
loop: ``await asyncio.to_thread(log.append, record)``. Appends that arrive from several
threads while one is committing are written together in the next transaction (*group
commit*): each still returns only once its own record is on disk, but N waiting threads
share one fsync. ``bench/audit.py`` measures both against plain SQLite and an fsynced
JSONL file.

Files: :mod:`~edgewise.security.audit_record` (the record and its canonical JSON),
:mod:`~edgewise.security.audit_chain` (hashing and the per-row checks of ``verify``),
this module (storage, concurrency, queries).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from edgewise.errors import AuditError, AuditKeyError
from edgewise.levels import LEVEL_NAMES
from edgewise.security.audit_chain import (
    GENESIS,
    HEX64,
    StoredRow,
    VerifyReport,
    chain_hash,
    check_head,
    check_row,
    key_check,
    key_trouble,
)
from edgewise.security.audit_record import AuditRecord, Redaction, canonical_json, format_ts
from edgewise.sqlite_tx import immediate, schema_transaction

if TYPE_CHECKING:
    from edgewise.config import AuditConfig

__all__ = [
    "GENESIS",
    "MIN_KEY_BYTES",
    "AuditEntry",
    "AuditLog",
    "AuditRecord",
    "Redaction",
    "VerifyReport",
    "load_key",
]

#: Shortest HMAC key accepted (``openssl rand -hex 32`` gives 64).
MIN_KEY_BYTES = 16
#: Bumped whenever the table layout changes; stored in ``PRAGMA user_version``.
SCHEMA_VERSION = 1

_FORMAT = "edgewise-audit"
_BUSY_TIMEOUT_S = 10.0
_HINT = ("Check that the path is on a local disk with free space and write permission; "
         "if the file is damaged, move it aside (keep it as evidence) and run "
         "`edgewise audit verify --path FILE` on the copy.")

# ``seq`` is the rowid (no AUTOINCREMENT: we assign last + 1 inside the write lock).
# ts, requester, tier, level and outcome are index columns for ``query``, copies of what
# ``body`` says; verify checks they agree.
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT",
    """
    CREATE TABLE IF NOT EXISTS records (
        seq        INTEGER PRIMARY KEY,
        ts         TEXT NOT NULL,
        requester  TEXT NOT NULL,
        tier       TEXT,
        level      TEXT NOT NULL,
        outcome    TEXT NOT NULL,
        body       TEXT NOT NULL,
        prev_hash  TEXT NOT NULL,
        hash       TEXT NOT NULL
    ) STRICT
    """,
    "CREATE INDEX IF NOT EXISTS records_by_ts ON records (ts)",
    "CREATE INDEX IF NOT EXISTS records_by_requester ON records (requester, ts)",
    """
    CREATE TRIGGER IF NOT EXISTS records_no_update BEFORE UPDATE ON records
    BEGIN SELECT RAISE(ABORT, 'audit records are append-only: UPDATE is refused'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS records_no_delete BEFORE DELETE ON records
    BEGIN SELECT RAISE(ABORT, 'audit records are append-only: DELETE is refused'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS records_next_seq BEFORE INSERT ON records
    WHEN NEW.seq IS NOT (SELECT COALESCE(MAX(seq), 0) + 1 FROM records)
    BEGIN SELECT RAISE(ABORT, 'audit records are appended with seq = last seq + 1'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS meta_no_update BEFORE UPDATE ON meta
    BEGIN SELECT RAISE(ABORT, 'audit log metadata is write-once'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS meta_no_delete BEFORE DELETE ON meta
    BEGIN SELECT RAISE(ABORT, 'audit log metadata is write-once'); END
    """,
)

@dataclass(frozen=True)
class AuditEntry:
    """A record as stored: its place in the chain and its content."""

    seq: int
    prev_hash: str
    hash: str
    record: AuditRecord

    def to_dict(self) -> dict[str, Any]:
        """The JSON line ``edgewise audit show --json`` prints."""
        return {"seq": self.seq, **self.record.to_dict(), "level": self.record.level,
                "prev_hash": self.prev_hash, "hash": self.hash}


def load_key(cfg: AuditConfig, environ: Mapping[str, str] | None = None) -> bytes | None:
    """The HMAC key named by ``audit.key_env`` (``None`` when no key is configured).

    Raises:
        AuditKeyError: the variable is named but unset, empty or too short.
    """
    if cfg.key_env is None:
        return None
    env = os.environ if environ is None else environ
    value = env.get(cfg.key_env, "")
    if not value:
        raise AuditKeyError(
            f"audit.key_env is {cfg.key_env}, but ${cfg.key_env} is not set; export it "
            f"(e.g. `export {cfg.key_env}=$(openssl rand -hex 32)`, kept secret and the "
            "same across restarts) or remove audit.key_env from the config")
    key = value.encode("utf-8")
    if len(key) < MIN_KEY_BYTES:
        raise AuditKeyError(
            f"${cfg.key_env} is {len(key)} bytes; an audit key needs at least "
            f"{MIN_KEY_BYTES} (e.g. `openssl rand -hex 32`)")
    return key


class AuditLog:
    """The hash-chained audit log in one SQLite file; see the module docstring.

    ``key``: HMAC key (``None``: plain SHA-256). A log keeps the mode it was created
    with: opening it for writing with a missing or different key raises
    :class:`AuditKeyError` rather than writing records that would never verify.

    ``readonly``: open an existing log to verify or query it. Nothing is created or
    written (``append`` raises), and a wrong or missing key is reported by ``verify``
    instead of raised. Usable as a context manager, which closes the log.
    """

    def __init__(self, path: str | Path, *, key: bytes | None = None,
                 readonly: bool = False) -> None:
        if str(path) == ":memory:" or not str(path):
            raise ValueError("AuditLog needs a file path (readers open their own "
                             "connections, which cannot see an in-memory database)")
        if key is not None and (not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES):
            raise ValueError(f"audit key must be bytes, at least {MIN_KEY_BYTES} long")
        self._path = Path(path)
        self._key = key
        self._key_check = None if key is None else key_check(key)
        self._readonly = readonly
        self._lock = threading.Lock()  # the writer connection and the write path
        self._pending_lock = threading.Lock()  # guards _pending only (held briefly)
        self._pending: list[_Pending] = []
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        if readonly:
            if not self._path.is_file():
                raise AuditError(
                    f"no audit log at {self._path}; check audit.path in the config or "
                    "--path (a node creates the file when it routes its first request)")
            try:
                with closing(self._reader()) as conn:
                    self._read_meta(conn)
            except sqlite3.Error as exc:
                raise self._error("open the log", exc) from exc
            return
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AuditError(f"audit log {self._path}: cannot create its directory "
                             f"({exc.strerror}); set audit.path to a writable place") from exc
        try:
            conn = sqlite3.connect(self._path, timeout=_BUSY_TIMEOUT_S,
                                   isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise self._error("open the log", exc) from exc
        try:
            # journal_mode is persistent in the file; synchronous is per connection.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            self._create_schema(conn)
            self._check_key(self._read_meta(conn))
        except sqlite3.Error as exc:
            conn.close()
            raise self._error("open the log", exc) from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    @classmethod
    def from_config(cls, cfg: AuditConfig, *, readonly: bool = False,
                    environ: Mapping[str, str] | None = None) -> AuditLog:
        """Open ``cfg.path`` with the key from ``$<cfg.key_env>`` (see :func:`load_key`)."""
        return cls(cfg.path, key=load_key(cfg, environ), readonly=readonly)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def keyed(self) -> bool:
        """Whether this log is checked with an HMAC key (one was given)."""
        return self._key is not None

    # -- writing --------------------------------------------------------------------

    def append(self, record: AuditRecord) -> tuple[int, str]:
        """Chain ``record`` after the last one; returns its ``(seq, hash)``.

        On disk (WAL fsynced) before it returns. Thread- and process-safe; blocks for
        about one fsync, so call it with ``asyncio.to_thread`` from async code.
        Concurrent appends from several threads share one transaction (group commit).
        """
        if not isinstance(record, AuditRecord):
            raise TypeError(f"append() takes an AuditRecord, got {type(record).__name__}")
        if self._readonly:
            raise AuditError(f"audit log {self._path} was opened read-only; open it "
                             "without readonly=True to append")
        mine = _Pending(record)
        with self._pending_lock:
            self._pending.append(mine)
        # Group commit: whoever holds the write lock commits every record queued so far
        # in one transaction, so N threads waiting on an fsync cost one fsync, not N.
        # A thread whose record an earlier holder already committed just returns.
        wrote = False
        with self._lock:
            if not mine.done:
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                wrote = True
                self._write(batch)
        if mine.error is not None:
            if wrote:
                raise mine.error
            raise AuditError(str(mine.error)) from mine.error
        assert mine.result is not None
        return mine.result

    def _write(self, batch: list[_Pending]) -> None:
        """Chain and commit ``batch`` in one transaction (the write lock is held).

        Never raises: each item gets its ``result`` or, if the transaction failed (then
        none of them is stored), the ``error``.
        """
        try:
            results: list[tuple[int, str]] = []
            with self._transaction("append a record") as conn:
                last = conn.execute(
                    "SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1").fetchone()
                seq, prev = (0, GENESIS) if last is None else (int(last[0]), str(last[1]))
                if not HEX64.fullmatch(prev):
                    raise AuditError(f"audit log {self._path}: the hash of record {seq} is "
                                     "malformed, so nothing can be chained after it; run "
                                     "`edgewise audit verify` and move the file aside")
                for item in batch:
                    r = item.record
                    seq += 1
                    body = canonical_json(seq, r)
                    digest = chain_hash(prev, body, self._key)
                    conn.execute(
                        "INSERT INTO records (seq, ts, requester, tier, level, outcome,"
                        " body, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (seq, format_ts(r.ts), r.requester, r.tier, r.level, r.outcome,
                         body, prev, digest))
                    results.append((seq, digest))
                    prev = digest
            for item, result in zip(batch, results, strict=True):
                item.result = result
        except BaseException as exc:  # handed to every caller in the batch
            for item in batch:
                item.error = exc
        finally:
            for item in batch:
                item.done = True

    # -- reading --------------------------------------------------------------------

    def head(self) -> tuple[int, str] | None:
        """The last record's ``(seq, hash)`` as stored (not verified); ``None`` if empty."""
        with self._reading("read the head") as conn:
            row = conn.execute("SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1"
                               ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def verify(self, *, head: tuple[int, str] | None = None,
               progress: Callable[[int, int], None] | None = None) -> VerifyReport:
        """Walk the whole chain; report the first problem, or ``ok`` and the head.

        ``head``: a ``(seq, hash)`` pinned earlier; the log must still contain exactly
        that record (detects truncation and wholesale rewrites before it).
        ``progress(done, total)`` is called every 10,000 records.

        Raises:
            AuditError: the file cannot be read at all (tampering is *reported*).
        """
        if head is not None:
            check_head(head)
        keyed = self._key is not None
        with self._reading("verify the log") as conn:
            conn.execute("BEGIN")  # one snapshot: meta and records agree
            meta = self._read_meta(conn)
            trouble = key_trouble(meta, self._key, self._path)
            if trouble is not None:
                kind, line = trouble
                return VerifyReport(ok=False, records=0, keyed=keyed, kind=kind,
                                    problem=line)
            total = int(conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])
            prev_seq, prev_hash, checked = 0, GENESIS, 0
            rows = conn.execute("SELECT seq, ts, requester, tier, level, outcome, body,"
                                " prev_hash, hash FROM records ORDER BY seq")
            for row in map(StoredRow._make, rows):
                found = check_row(row, prev_seq, prev_hash, self._key)
                if found is None and head is not None and row.seq == head[0] \
                        and row.hash != head[1]:
                    found = ("head_mismatch", f"seq {row.seq}: its hash differs from the "
                             f"pinned head {head[0]}:{head[1][:16]}…; the log was rewritten "
                             "up to the pinned record")
                if found is not None:
                    kind, line = found
                    return VerifyReport(ok=False, records=checked, keyed=keyed,
                                        bad_seq=int(row.seq), kind=kind, problem=line)
                prev_seq, prev_hash = int(row.seq), str(row.hash)
                checked += 1
                if progress is not None and checked % 10_000 == 0:
                    progress(checked, total)
            if head is not None and prev_seq < head[0]:
                return VerifyReport(
                    ok=False, records=checked, keyed=keyed, bad_seq=prev_seq + 1,
                    kind="truncated",
                    problem=f"the log ends at seq {prev_seq} but the pinned head is seq "
                            f"{head[0]}: records {prev_seq + 1}..{head[0]} were deleted "
                            "from the end")
        if progress is not None:
            progress(checked, total)
        return VerifyReport(ok=True, records=checked, keyed=keyed,
                            head=(prev_seq, prev_hash) if checked else None)

    def query(self, *, since: datetime | None = None, until: datetime | None = None,
              requester: str | None = None, tier: str | None = None,
              level: str | None = None, outcome: str | None = None,
              limit: int | None = None) -> Iterator[AuditEntry]:
        """Records matching every given filter, oldest first.

        ``since`` ≤ ts < ``until``; ``tier`` is the tier that answered; ``level`` the
        effective sensitivity; ``outcome`` matches exactly or by its part before ``:``
        (``refused`` matches ``refused:clearance``). With ``limit``, the *newest* that
        many (still yielded oldest first). Records are read as stored, not verified.
        """
        where: list[str] = []
        args: list[Any] = []
        if since is not None:
            where.append("ts >= ?")
            args.append(format_ts(since))
        if until is not None:
            where.append("ts < ?")
            args.append(format_ts(until))
        for column, value in (("requester", requester), ("tier", tier)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if level is not None:
            if level not in LEVEL_NAMES:
                raise ValueError(f"level must be one of {', '.join(LEVEL_NAMES)}, "
                                 f"got {level!r}")
            where.append("level = ?")
            args.append(level)
        if outcome is not None:
            where.append("(outcome = ? OR substr(outcome, 1, ?) = ?)")
            args += [outcome, len(outcome) + 1, outcome + ":"]
        sql = "SELECT seq, body, prev_hash, hash FROM records"
        if where:
            sql += " WHERE " + " AND ".join(where)
        if limit is not None:
            if type(limit) is not int or limit < 1:
                raise ValueError(f"limit must be a positive int, got {limit!r}")
            sql = f"SELECT * FROM ({sql} ORDER BY seq DESC LIMIT ?)"
            args.append(limit)
        sql += " ORDER BY seq"
        return self._iter_entries(sql, args)

    def _iter_entries(self, sql: str, args: list[Any]) -> Iterator[AuditEntry]:
        with self._reading("query the log") as conn:
            for seq, body, prev_hash, digest in conn.execute(sql, args):
                try:
                    data = json.loads(body)
                    data.pop("v")
                    data.pop("seq")
                    record = AuditRecord.from_dict(data)
                except (ValueError, TypeError, KeyError, AttributeError) as exc:
                    raise AuditError(f"audit log {self._path}: record {seq} cannot be read "
                                     f"({exc}); run `edgewise audit verify`") from exc
                yield AuditEntry(seq=int(seq), prev_hash=prev_hash, hash=digest,
                                 record=record)

    # -- lifecycle ------------------------------------------------------------------

    def close(self) -> None:
        """Close the log; idempotent. Later calls raise :class:`AuditError`."""
        with self._lock:
            self._closed = True
            if self._conn is not None:
                conn, self._conn = self._conn, None
                conn.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _check_key(self, meta: dict[str, str]) -> None:
        trouble = key_trouble(meta, self._key, self._path)
        if trouble is None:
            return
        kind, _ = trouble
        if kind == "key_required":
            fix = ("it was created with a key: set audit.key_env and export that key, or "
                   "point audit.path at a new file")
        elif meta.get("mode") != "hmac-sha256":
            fix = ("it was created without a key and cannot switch: move it aside (keep "
                   "it as evidence) to start a keyed log, or remove audit.key_env")
        else:
            fix = ("the key is not the one it was created with: export the original key, "
                   "or move the file aside to start a new log")
        raise AuditKeyError(f"audit log {self._path}: {fix}")

    # -- sqlite ---------------------------------------------------------------------

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        def too_new(version: int) -> AuditError:
            return AuditError(f"audit log {self._path} has schema version {version}, newer "
                              f"than this edgewise supports ({SCHEMA_VERSION}); upgrade "
                              "edgewise")

        with schema_transaction(conn, SCHEMA_VERSION, too_new):
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and "records" not in tables:
                raise AuditError(f"{self._path} is an SQLite file but not an edgewise audit "
                                 "log; set audit.path to a new file")
            for statement in _SCHEMA:
                conn.execute(statement)
            if conn.execute("SELECT COUNT(*) FROM meta").fetchone()[0] == 0:
                conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
                    ("format", _FORMAT),
                    ("mode", "sha256" if self._key is None else "hmac-sha256"),
                    ("key_check", self._key_check or ""),
                ])

    def _read_meta(self, conn: sqlite3.Connection) -> dict[str, str]:
        try:
            meta = {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM meta")}
        except sqlite3.DatabaseError as exc:
            raise AuditError(f"{self._path} is not an edgewise audit log ({exc}); check "
                             "audit.path or --path") from exc
        if meta.get("format") != _FORMAT or meta.get("mode") not in ("sha256", "hmac-sha256"):
            raise AuditError(f"{self._path} is not an edgewise audit log (its metadata is "
                             "missing or altered); check the path, or verify a backup")
        return meta

    def _reader(self) -> sqlite3.Connection:
        """A new read-only connection (never creates the file)."""
        uri = self._path.resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=_BUSY_TIMEOUT_S,
                               isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA query_only=ON")
        return conn

    @contextmanager
    def _reading(self, what: str) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise AuditError(f"audit log {self._path} is closed; open a new AuditLog")
        try:
            conn = self._reader()
        except sqlite3.Error as exc:
            raise self._error(what, exc) from exc
        try:
            yield conn
        except sqlite3.Error as exc:
            raise self._error(what, exc) from exc
        finally:
            conn.close()

    @contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction, committed on success; the caller holds
        ``_lock``. Any exception rolls back; sqlite errors come out as AuditError."""
        if self._conn is None:
            raise AuditError(f"audit log {self._path} is closed; open a new AuditLog")
        with immediate(self._conn, lambda exc: self._error(what, exc)) as conn:
            yield conn

    def _error(self, what: str, exc: sqlite3.Error) -> AuditError:
        # sqlite messages name tables and constraints, never values.
        return AuditError(f"audit log {self._path}: could not {what}: {exc}. {_HINT}")


class _Pending:
    """One append waiting for a group commit; written under the write lock."""

    __slots__ = ("done", "error", "record", "result")

    def __init__(self, record: AuditRecord) -> None:
        self.record = record
        self.done = False
        self.result: tuple[int, str] | None = None
        self.error: BaseException | None = None





