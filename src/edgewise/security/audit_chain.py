"""The chain: how a record's hash is computed, and how a stored row is checked.

Pure functions, no SQLite and no threads; :mod:`edgewise.security.audit` stores the
rows and walks them. The construction and the threat model are described there.

``hash(n) = H(bytes.fromhex(hash(n-1)) ‖ canonical_json(n, record_n))`` with
``hash(0) = GENESIS`` and ``H`` SHA-256, or HMAC-SHA256 under the log's key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

from edgewise.security.audit_record import (
    FORMAT_VERSION,
    AuditRecord,
    canonical_json,
    format_ts,
)

__all__ = [
    "GENESIS",
    "Problem",
    "StoredRow",
    "VerifyReport",
    "chain_hash",
    "check_head",
    "check_row",
    "key_check",
    "key_trouble",
]

#: ``prev_hash`` of record 1.
GENESIS = "0" * 64
HEX64 = re.compile(r"[0-9a-f]{64}")
_KEY_CHECK_MSG = b"edgewise audit log key check v1"

#: What ``verify`` found wrong.
Problem = Literal["malformed", "reordered", "deleted", "chain", "edited", "truncated",
                  "head_mismatch", "key_required", "wrong_key"]


class StoredRow(NamedTuple):
    """One row of the ``records`` table, as read back (an attacker may have changed any
    column, including its type)."""

    seq: Any
    ts: Any
    requester: Any
    tier: Any
    level: Any
    outcome: Any
    body: Any
    prev_hash: Any
    hash: Any


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of :meth:`edgewise.security.audit.AuditLog.verify`.

    ``records`` counts the records checked and found good (all of them when ``ok``).
    ``head`` is the last record's ``(seq, hash)`` when ``ok`` (``None`` for an empty log
    or a failed check): pin it to detect later truncation. On failure ``bad_seq`` is the
    first bad record (``None`` when the problem is not one record's, e.g. a wrong key),
    ``kind`` classifies it and ``problem`` says it in one line.
    """

    ok: bool
    records: int
    keyed: bool
    head: tuple[int, str] | None = None
    bad_seq: int | None = None
    kind: Problem | None = None
    problem: str | None = None

    def __str__(self) -> str:
        if self.ok:
            head = f"head {self.head[0]}:{self.head[1]}" if self.head else "empty log"
            mode = "HMAC-SHA256" if self.keyed else "SHA-256"
            return f"ok: {self.records} records verified ({mode} chain), {head}"
        return f"TAMPERED: {self.problem}"

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "records": self.records, "keyed": self.keyed,
                "head": None if self.head is None else
                {"seq": self.head[0], "hash": self.head[1]},
                "bad_seq": self.bad_seq, "kind": self.kind, "problem": self.problem}


def chain_hash(prev_hash: str, body: str, key: bytes | None) -> str:
    """The hash of a record whose canonical JSON is ``body``, chained after ``prev_hash``."""
    # prev_hash enters as its 32 raw bytes: a fixed-length prefix, so (prev, body) pairs
    # cannot collide by shifting bytes from one to the other.
    data = bytes.fromhex(prev_hash) + body.encode("ascii")
    if key is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def key_check(key: bytes) -> str:
    """A value stored with a keyed log to tell a wrong key from tampering; being an HMAC
    output, it reveals nothing about the key."""
    return hmac.new(key, _KEY_CHECK_MSG, hashlib.sha256).hexdigest()


def key_trouble(meta: dict[str, str], key: bytes | None, path: Path
                ) -> tuple[Problem, str] | None:
    """Why ``key`` cannot verify the log with this metadata (``None``: it can)."""
    mode = meta.get("mode")
    if key is None:
        if mode == "hmac-sha256":
            return "key_required", (f"{path} is an HMAC-keyed log; set the key (the "
                                    "variable named by audit.key_env) to verify it")
        return None
    if mode != "hmac-sha256":
        return "wrong_key", (f"{path} says it is an unkeyed (SHA-256) log but a key was "
                             "given: it was created without a key, or rewritten without it")
    if not hmac.compare_digest(meta.get("key_check", ""), key_check(key)):
        return "wrong_key", (f"the key does not match the one {path} was written with "
                             "(wrong key, or the log was rewritten with another)")
    return None


def check_row(row: StoredRow, prev_seq: int, prev_hash: str, key: bytes | None
              ) -> tuple[Problem, str] | None:
    """The first thing wrong with one stored row, given the good row before it
    (``prev_seq`` 0 and ``GENESIS`` for the first). ``None``: the row is good."""
    seq = row.seq
    at = f"seq {seq}"
    try:
        data = json.loads(row.body)
    except (TypeError, ValueError):
        return "malformed", f"{at}: the stored record is not valid JSON (edited)"
    if not isinstance(data, dict) or data.get("v") != FORMAT_VERSION \
            or type(data.get("seq")) is not int:
        return "malformed", (f"{at}: the stored record lacks format version "
                             f"{FORMAT_VERSION} and its seq (edited)")
    # 1. position: the body says where it was written; seq runs 1, 2, 3… without gaps.
    if data["seq"] != seq:
        return "reordered", (f"{at}: holds the record written as seq {data['seq']} "
                             "(records were moved or renumbered)")
    if seq != prev_seq + 1:
        gone = f"{prev_seq + 1}" if seq == prev_seq + 2 else f"{prev_seq + 1}..{seq - 1}"
        return "deleted", f"{at}: record(s) {gone} are missing (deleted)"
    # 2. link: it names its predecessor's hash.
    if row.prev_hash != prev_hash:
        return "chain", (f"{at}: its prev_hash is not the hash of record {prev_seq}: "
                         "a record was inserted, replaced or reordered here")
    # 3. content: the hash recomputed from the parsed record (so a non-canonical body
    #    that parses the same is caught too).
    try:
        record = AuditRecord.from_dict({k: v for k, v in data.items()
                                        if k not in ("v", "seq")})
    except ValueError as exc:
        return "malformed", f"{at}: not a valid audit record ({exc}) (edited)"
    expected = chain_hash(prev_hash, canonical_json(seq, record), key)
    if not (isinstance(row.hash, str) and hmac.compare_digest(expected, row.hash)):
        why = ("the record was edited, or the chain was recomputed without the key"
               if key is not None else "the record was edited")
        return "edited", f"{at}: its content does not match its hash: {why}"
    # 4. index columns: ``query`` filters on them, so they must say what the body says.
    columns = {"ts": (row.ts, format_ts(record.ts)),
               "requester": (row.requester, record.requester),
               "tier": (row.tier, record.tier), "level": (row.level, record.level),
               "outcome": (row.outcome, record.outcome)}
    for name, (stored, hashed) in columns.items():
        if stored != hashed:
            return "edited", (f"{at}: the {name} column disagrees with the hashed record "
                              "(the index column was edited)")
    return None


def check_head(head: tuple[int, str]) -> None:
    """``ValueError`` unless ``head`` looks like ``(seq, hash)`` from ``verify``."""
    seq, digest = head
    if type(seq) is not int or seq < 1 or not isinstance(digest, str) \
            or not HEX64.fullmatch(digest):
        raise ValueError("head must be (seq >= 1, 64 lower-case hex digits), as printed by "
                         "`edgewise audit verify`")
