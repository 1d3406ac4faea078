"""One write transaction on a SQLite connection, the way edgewise's durable stores
(the async job queue, the audit log) both need it.

``BEGIN IMMEDIATE`` takes the write lock before the first read, so a read-then-write can
never interleave with another writer (another thread's connection or another process);
``COMMIT`` returns after the WAL is fsynced when the connection runs with
``synchronous=FULL``. Any exception rolls back; ``sqlite3.Error`` is converted by the
caller's ``error`` function where it enters (STYLE: errors are converted at the seam).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

__all__ = ["immediate", "schema_transaction"]


@contextmanager
def immediate(conn: sqlite3.Connection, error: Callable[[sqlite3.Error], Exception]
              ) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` on ``conn`` (opened with ``isolation_level=None``)."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
        conn.execute("COMMIT")  # returns after the WAL fsync (synchronous=FULL)
    except BaseException as exc:
        if conn.in_transaction:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise error(exc) from exc
        raise


@contextmanager
def schema_transaction(conn: sqlite3.Connection, version: int,
                       too_new: Callable[[int], Exception]) -> Iterator[sqlite3.Connection]:
    """Create or check a store's schema in one ``BEGIN IMMEDIATE`` transaction (two
    processes opening a new file: one creates): raise ``too_new(found)`` for a file
    written by a newer edgewise, let the caller run its ``CREATE … IF NOT EXISTS``, then
    stamp ``PRAGMA user_version`` and commit. Anything raised rolls back."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if found > version:
            raise too_new(found)
        yield conn
        conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("COMMIT")
    except BaseException:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
