"""A durable queue of async jobs, stored in one SQLite file.

When no eligible tier is reachable, a request marked ``x-edgewise-async: true`` becomes a
job here; a dispatcher delivers it when a tier comes back and the client polls the job by
id. An acknowledged job must never be lost, so every method below is one SQLite
transaction that is on disk before it returns.

State machine (``DONE`` and ``FAILED`` are terminal)::

                          claim (attempts += 1)
    enqueue ──► PENDING ─────────────────────────► RUNNING ──complete──► DONE
                 ▲  │                                │  │
                 │  └─────────────fail───────────────┼──┴──────fail────► FAILED
                 └─────────release / recover─────────┘

* ``claim`` hands out the oldest ``PENDING`` jobs (by ``created_at``, then insertion
  order) and marks them ``RUNNING`` in the same write transaction, so two workers, threads
  or processes, never get the same job.
* ``release`` is a failed but retryable delivery: the job goes back to ``PENDING`` at its
  original place in the queue, with the error recorded. Giving up is the caller's choice
  (look at ``attempts``, then call ``fail``).
* ``recover`` runs once at start-up, before anything claims: ``RUNNING`` jobs found then
  were left by a crash and go back to ``PENDING``. Delivery is therefore *at least once*:
  a job delivered just before a crash, but not yet completed, is delivered again. A chat
  completion has no side effect beyond its cost, so we accept that rather than lose jobs.
  This assumes one node process per store file.

Durability choices:

* ``journal_mode=WAL``: a commit appends to the write-ahead log and fsyncs only that (no
  rollback journal plus database double write), and readers (clients polling their job)
  never block the writer.
* ``synchronous=FULL``: the WAL is fsynced at every commit, so a job whose ``enqueue``
  returned survives ``kill -9`` *and* power loss. ``NORMAL`` would survive a killed
  process but may lose the last commits on power loss, after the client got its job id.
* Transactions are explicit (``isolation_level=None`` and ``BEGIN IMMEDIATE``): the write
  lock is taken before the first read, so a read-then-write can never be interleaved with
  another writer, even one in another process.

Threading: one connection per store (``check_same_thread=False``) guarded by a
:class:`threading.Lock`; each call holds the lock for one transaction (about one fsync).
Calling from the event loop is correct but blocks it for that fsync; prefer
``await asyncio.to_thread(store.enqueue, ...)``.

Privacy: payloads and results are stored as JSON text and never logged or quoted in error
messages (prompts may be sensitive). Error strings are stored as given.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any

from edgewise.errors import JobStateError, JobStoreError
from edgewise.sqlite_tx import immediate, schema_transaction

__all__ = ["Job", "JobState", "JobStore"]

log = logging.getLogger("edgewise.jobs")

#: Bumped whenever the table layout changes; stored in ``PRAGMA user_version``.
SCHEMA_VERSION = 1

#: How long a call waits for another process's write lock before giving up.
_BUSY_TIMEOUT_S = 10.0

_HINT = (
    "Check that the path is on a local disk (not a network share) with free space and "
    "write permission; if the file is corrupt, move it aside (the jobs in it are lost)."
)

# ``seq`` gives a total insertion order: the FIFO tie-break when two jobs share a
# ``created_at`` (coarse clocks) and the key that claim() updates by.
_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS jobs (
        seq           INTEGER PRIMARY KEY AUTOINCREMENT,
        id            TEXT    NOT NULL UNIQUE,
        state         TEXT    NOT NULL
                      CHECK (state IN ('pending', 'running', 'done', 'failed')),
        endpoint      TEXT    NOT NULL,
        payload       TEXT    NOT NULL,
        min_clearance TEXT    NOT NULL,
        created_at    REAL    NOT NULL,
        updated_at    REAL    NOT NULL,
        attempts      INTEGER NOT NULL DEFAULT 0,
        result        TEXT,
        error         TEXT,
        tier          TEXT
    )
    """,
    "CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, created_at, seq)",
)

_RECOVERED_ERROR = "interrupted: the node stopped during this delivery attempt; will retry"


class JobState(StrEnum):
    """Where a job is in its life; see the module docstring for the transitions."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class Job:
    """A snapshot of one job as stored; later transitions return new snapshots."""

    id: str
    state: JobState
    endpoint: str  # the API path to deliver to, e.g. "/v1/chat/completions"
    payload: dict[str, Any]  # the JSON request body
    min_clearance: str  # the lowest tier clearance allowed to answer
    created_at: float  # clock() at enqueue; the queue order
    updated_at: float  # clock() at the last transition
    attempts: int  # how many times the job was claimed for delivery
    result: dict[str, Any] | None  # the JSON response body, once DONE
    error: str | None  # why the last attempt failed (release / fail / recover)
    tier: str | None  # the tier that answered, once DONE


class JobStore:
    """SQLite-backed durable job queue; see the module docstring.

    ``path`` is a file (its parent directories are created) or ``":memory:"`` for tests.
    ``clock`` gives the timestamps; inject one to make ordering tests deterministic.
    Usable as a context manager, which closes the store on exit. ``journal_mode`` is
    what SQLite granted: ``"wal"`` for a file, ``"memory"`` for ``":memory:"``.
    """

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self._path = str(path)
        self._clock = clock
        self._lock = threading.Lock()
        if self._path != ":memory:":
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise JobStoreError(
                    f"job store {self._path}: cannot create its directory "
                    f"({exc.strerror}); choose a writable path for the jobs database"
                ) from exc
        try:
            conn = sqlite3.connect(
                self._path,
                timeout=_BUSY_TIMEOUT_S,
                isolation_level=None,  # we issue BEGIN / COMMIT ourselves
                check_same_thread=False,  # the lock below serialises use instead
            )
        except sqlite3.Error as exc:
            raise self._error("open the database", exc) from exc
        try:
            conn.row_factory = sqlite3.Row
            # journal_mode is persistent in the file; synchronous is per connection.
            self.journal_mode = str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
            conn.execute("PRAGMA synchronous=FULL")
            self._create_schema(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise self._error("open the database", exc) from exc
        except BaseException:
            conn.close()
            raise
        self._conn: sqlite3.Connection | None = conn

    @property
    def path(self) -> str:
        return self._path

    # -- writes ---------------------------------------------------------------------

    def enqueue(self, endpoint: str, payload: dict[str, Any], *, min_clearance: str) -> Job:
        """Store a new ``PENDING`` job; once this returns, the job is on disk.

        The returned job holds a copy of ``payload`` as it will be read back (JSON round
        trip), so mutating the caller's dict afterwards changes nothing.
        """
        body = _dumps(payload, "payload")
        job_id = "job-" + uuid.uuid4().hex
        with self._transaction("enqueue a job") as conn:
            now = self._clock()
            conn.execute(
                "INSERT INTO jobs (id, state, endpoint, payload, min_clearance,"
                " created_at, updated_at, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
                (job_id, JobState.PENDING.value, endpoint, body, min_clearance, now, now),
            )
            return self._fetch(conn, job_id)

    def claim(self, limit: int = 1) -> list[Job]:
        """Move up to ``limit`` of the oldest ``PENDING`` jobs to ``RUNNING``, FIFO.

        Each claimed job's ``attempts`` goes up by one. Returns them oldest first; an
        empty list when nothing is pending.
        """
        if limit < 1:
            raise ValueError(f"claim(limit={limit}): limit must be at least 1")
        with self._transaction("claim jobs") as conn:
            rows = conn.execute(
                "SELECT seq FROM jobs WHERE state = ? ORDER BY created_at, seq LIMIT ?",
                (JobState.PENDING.value, limit),
            ).fetchall()
            if not rows:
                return []
            now = self._clock()
            conn.executemany(
                "UPDATE jobs SET state = ?, attempts = attempts + 1, updated_at = ?"
                " WHERE seq = ?",
                [(JobState.RUNNING.value, now, row["seq"]) for row in rows],
            )
            marks = ", ".join(["?"] * len(rows))
            claimed = conn.execute(
                f"SELECT * FROM jobs WHERE seq IN ({marks}) ORDER BY created_at, seq",
                [row["seq"] for row in rows],
            ).fetchall()
            return [_job_from_row(row) for row in claimed]

    def complete(self, job_id: str, result: dict[str, Any], *, tier: str) -> Job:
        """``RUNNING`` → ``DONE`` with the response body and the tier that answered.

        Clears the error of any earlier failed attempt: a done job has none.
        """
        body = _dumps(result, "result")
        return self._transition(
            job_id, "complete", (JobState.RUNNING,), JobState.DONE,
            {"result": body, "tier": tier, "error": None},
        )

    def release(self, job_id: str, error: str) -> Job:
        """``RUNNING`` → ``PENDING`` after a retryable failure, recording ``error``.

        The job keeps its ``created_at``, so it is the next one claimed again.
        """
        return self._transition(
            job_id, "release", (JobState.RUNNING,), JobState.PENDING, {"error": error}
        )

    def fail(self, job_id: str, error: str) -> Job:
        """``PENDING`` or ``RUNNING`` → ``FAILED`` for good, recording ``error``."""
        return self._transition(
            job_id, "fail", (JobState.PENDING, JobState.RUNNING), JobState.FAILED,
            {"error": error},
        )

    def recover(self) -> int:
        """At start-up, put ``RUNNING`` jobs left by a crash back to ``PENDING``.

        Call it before anything claims: it cannot tell a crashed delivery from a live
        one. Their ``attempts`` stay counted. Returns how many jobs were recovered.
        """
        with self._transaction("recover interrupted jobs") as conn:
            count = conn.execute(
                "UPDATE jobs SET state = ?, updated_at = ?, error = ? WHERE state = ?",
                (JobState.PENDING.value, self._clock(), _RECOVERED_ERROR,
                 JobState.RUNNING.value),
            ).rowcount
        if count:
            log.warning("job store %s: %d job(s) interrupted by a restart will be "
                        "delivered again", self._path, count)
        return count

    # -- reads ----------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        """The job with this id, or ``None`` if there is none."""
        with self._locked("read a job") as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _job_from_row(row)

    def counts(self) -> dict[JobState, int]:
        """How many jobs are in each state; every state is present, zero included."""
        with self._locked("count jobs") as conn:
            rows = conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        counts = dict.fromkeys(JobState, 0)
        for state, n in rows:
            counts[JobState(state)] = int(n)
        return counts

    # -- lifecycle ------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; idempotent. Later calls raise :class:`JobStoreError`."""
        with self._lock:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                conn.close()

    def __enter__(self) -> JobStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        def too_new(version: int) -> JobStoreError:
            return JobStoreError(
                f"job store {self._path} has schema version {version}, newer than "
                f"this edgewise supports ({SCHEMA_VERSION}); upgrade edgewise or "
                "point the jobs path at a new file"
            )

        with schema_transaction(conn, SCHEMA_VERSION, too_new):
            for statement in _SCHEMA:
                conn.execute(statement)

    def _transition(
        self,
        job_id: str,
        verb: str,
        allowed: tuple[JobState, ...],
        target: JobState,
        changes: dict[str, str | None],
    ) -> Job:
        """Check the job's state and apply ``changes`` (column → value) in one write."""
        with self._transaction(f"{verb} job {job_id}") as conn:
            row = conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobStateError(
                    f"cannot {verb} job {job_id!r}: no such job in {self._path}; job ids "
                    "come from enqueue() or claim() on this store",
                    job_id=job_id, state=None,
                )
            state = JobState(row["state"])
            if state not in allowed:
                need = " or ".join(s.value.upper() for s in allowed)
                raise JobStateError(
                    f"cannot {verb} job {job_id!r}: it is {state.value.upper()}, and "
                    f"{verb} needs it {need}"
                    + (" (claim it first)" if state is JobState.PENDING else ""),
                    job_id=job_id, state=state.value,
                )
            # Column names come from this module, never from callers.
            sets = "".join(f", {column} = ?" for column in changes)
            conn.execute(
                f"UPDATE jobs SET state = ?, updated_at = ?{sets} WHERE id = ?",
                (target.value, self._clock(), *changes.values(), job_id),
            )
            return self._fetch(conn, job_id)

    def _fetch(self, conn: sqlite3.Connection, job_id: str) -> Job:
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job_from_row(row)

    def _open_connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise JobStoreError(f"job store {self._path} is closed; open a new JobStore")
        return self._conn

    @contextmanager
    def _locked(self, what: str) -> Iterator[sqlite3.Connection]:
        """Hold the lock for a single read statement (its own implicit transaction)."""
        with self._lock:
            conn = self._open_connection()
            try:
                yield conn
            except sqlite3.Error as exc:
                raise self._error(what, exc) from exc

    @contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """Hold the lock and one ``BEGIN IMMEDIATE`` transaction; commit on success.

        Any exception rolls back, so a failed call leaves the job as it was; sqlite
        errors come out as :class:`JobStoreError`.
        """
        with self._lock, immediate(self._open_connection(),
                                   lambda exc: self._error(what, exc)) as conn:
            yield conn

    def _error(self, what: str, exc: sqlite3.Error) -> JobStoreError:
        # sqlite messages name tables and constraints, never the values, so they are
        # safe to pass on.
        return JobStoreError(f"job store {self._path}: could not {what}: {exc}. {_HINT}")


def _dumps(value: dict[str, Any], name: str) -> str:
    if not isinstance(value, dict):
        raise TypeError(f"job {name} must be a dict (a JSON object), got {type(value).__name__}")
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"job {name} is not JSON-serialisable: {exc}") from exc


def _job_from_row(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        state=JobState(row["state"]),
        endpoint=row["endpoint"],
        payload=json.loads(row["payload"]),
        min_clearance=row["min_clearance"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        attempts=row["attempts"],
        result=None if row["result"] is None else json.loads(row["result"]),
        error=row["error"],
        tier=row["tier"],
    )
