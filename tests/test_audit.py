"""The hash-chained audit log: round trip, tamper detection, concurrency, query, CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edgewise.cli import app
from edgewise.config import AuditConfig
from edgewise.errors import AuditError, AuditKeyError, EdgewiseError
from edgewise.security import AuditLog, AuditRecord, Redaction, load_key
from edgewise.security.audit import GENESIS
from edgewise.security.audit_record import canonical_json

KEY = b"k" * 32
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def rec(i: int = 0, **over: Any) -> AuditRecord:
    fields: dict[str, Any] = dict(
        requester="alice", request_id=f"chatcmpl-{i}", route="chat", node="clinic-1",
        declared_level="internal", detected_level="pii", entities={"PERSON": 2},
        tier="device", plan=("device", "cloud"), reason="cheapest eligible tier",
        outcome="answered", ts=T0 + timedelta(minutes=i))
    fields.update(over)
    return AuditRecord(**fields)


def filled(path: Path, n: int = 5, key: bytes | None = None) -> list[tuple[int, str]]:
    with AuditLog(path, key=key) as log:
        return [log.append(rec(i)) for i in range(n)]


def tamper(path: Path, *statements: str, args: tuple[Any, ...] = ()) -> None:
    """What an attacker with write access does: drop the seatbelt triggers, then edit."""
    conn = sqlite3.connect(path)
    triggers = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger'")]
    for name in triggers:
        conn.execute(f"DROP TRIGGER {name}")
    for sql in statements:
        conn.execute(sql, args if "?" in sql else ())
    conn.commit()
    conn.close()


def rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT seq, body, prev_hash, hash FROM records ORDER BY seq"
                            ).fetchall()


def verify(path: Path, key: bytes | None = None, **kw: Any) -> Any:
    with AuditLog(path, key=key, readonly=True) as log:
        return log.verify(**kw)


# -- round trip and chain construction --------------------------------------------------

def test_append_query_verify_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "log.sqlite"  # parent directory is created
    records = [rec(i, redaction=Redaction(placeholders=i + 1, tiers=("cloud",)))
               for i in range(3)]
    with AuditLog(path) as log:
        assert log.head() is None
        heads = [log.append(r) for r in records]
        assert [s for s, _ in heads] == [1, 2, 3]
        assert log.head() == heads[-1]
        entries = list(log.query())
        report = log.verify()
    assert [e.record for e in entries] == records
    assert [e.prev_hash for e in entries] == [GENESIS, heads[0][1], heads[1][1]]
    assert [(e.seq, e.hash) for e in entries] == heads
    assert report.ok and report.records == 3 and report.head == heads[-1]
    assert str(report) == f"ok: 3 records verified (SHA-256 chain), head 3:{heads[-1][1]}"
    assert entries[1].record.redaction.applied and entries[1].record.level == "pii"


@pytest.mark.parametrize("key", [None, KEY])
def test_hash_is_the_documented_construction(tmp_path: Path, key: bytes | None) -> None:
    """hash = H(raw prev_hash ‖ canonical_json(seq, record)): a third party can check it."""
    filled(tmp_path / "a.sqlite", 2, key=key)
    prev = GENESIS
    for seq, body, stored_prev, digest in rows(tmp_path / "a.sqlite"):
        assert body == canonical_json(seq, rec(seq - 1))
        assert stored_prev == prev
        data = bytes.fromhex(prev) + body.encode("ascii")
        want = (hashlib.sha256(data).hexdigest() if key is None
                else hmac.new(key, data, hashlib.sha256).hexdigest())
        assert digest == want
        prev = digest


def test_canonical_json_is_deterministic_ascii_and_float_free() -> None:
    a = rec(entities={"PERSON": 2, "EMAIL_ADDRESS": 1}, reason="cloud → device ≤ 3",
            ts=datetime(2025, 3, 1, 13, 0, tzinfo=timezone(timedelta(hours=1))))
    b = rec(entities={"EMAIL_ADDRESS": 1, "PERSON": 2}, reason="cloud → device ≤ 3",
            ts=datetime(2025, 3, 1, 12, 0, tzinfo=UTC))
    text = canonical_json(7, a)
    assert text == canonical_json(7, b)  # dict order and time zone do not matter
    assert text.isascii() and "\\u2192" in text
    assert '"ts":"2025-03-01T12:00:00.000000Z"' in text
    assert ", " not in text and ": " not in text  # fixed separators, no whitespace
    parsed = json.loads(text)
    assert parsed["v"] == 1 and parsed["seq"] == 7
    assert not any(isinstance(v, float) for v in parsed.values())
    assert list(parsed) == sorted(parsed)


def test_a_newer_schema_is_refused_and_nothing_is_changed(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path):
        pass
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(AuditError, match="schema version 99, newer than this edgewise"):
        AuditLog(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 99  # rolled back
    conn.close()


def test_reopen_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    first = filled(path, 2)
    log = AuditLog(path)
    assert log.head() == first[-1]
    assert log.append(rec(9))[0] == 3
    log.close()
    log.close()  # idempotent
    with pytest.raises(AuditError, match="closed"):
        log.append(rec(10))
    with pytest.raises(AuditError, match="closed"):
        log.verify()
    report = verify(path)
    assert report.ok and report.records == 3


def test_triggers_refuse_update_delete_and_out_of_order_insert(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    filled(path, 3)
    conn = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE records SET tier = 'cloud' WHERE seq = 2")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM records WHERE seq = 3")
    with pytest.raises(sqlite3.IntegrityError, match="last seq"):
        conn.execute("INSERT INTO records SELECT 9, ts, requester, tier, level, outcome,"
                     " body, prev_hash, hash FROM records WHERE seq = 1")
    with pytest.raises(sqlite3.IntegrityError, match="write-once"):
        conn.execute("UPDATE meta SET value = 'sha256' WHERE key = 'mode'")
    conn.close()
    assert verify(path).ok


# -- tampering ----------------------------------------------------------------------------

def _edit_body(path: Path, seq: int, change: Callable[[dict[str, Any]], None]) -> None:
    body = json.loads(dict((r[0], r[1]) for r in rows(path))[seq])
    change(body)
    tamper(path, f"UPDATE records SET body = ? WHERE seq = {seq}",
           args=(json.dumps(body, sort_keys=True, separators=(",", ":")),))


def test_edited_field_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    filled(path)
    _edit_body(path, 3, lambda b: b.update(tier="cloud"))
    report = verify(path)
    assert not report.ok and report.bad_seq == 3 and report.kind == "edited"
    assert report.records == 2 and report.head is None
    assert str(report) == ("TAMPERED: seq 3: its content does not match its hash: the "
                           "record was edited")


def test_edited_index_column_is_detected(tmp_path: Path) -> None:
    """show filters on copies of the hashed fields; editing a copy hides a record."""
    path = tmp_path / "a.sqlite"
    filled(path)
    tamper(path, "UPDATE records SET requester = 'mallory' WHERE seq = 4")
    report = verify(path)
    assert (report.bad_seq, report.kind) == (4, "edited")
    assert "requester column" in str(report)


def test_malformed_body_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    filled(path)
    tamper(path, "UPDATE records SET body = 'not json' WHERE seq = 2")
    report = verify(path)
    assert (report.bad_seq, report.kind) == (2, "malformed")
    with AuditLog(path, readonly=True) as log, pytest.raises(AuditError, match="record 2"):
        list(log.query())


@pytest.mark.parametrize(("deleted", "bad_seq", "missing"),
                         [(3, 4, "record(s) 3 are missing"), (1, 2, "record(s) 1 are missing")])
def test_deleted_record_is_detected(tmp_path: Path, deleted: int, bad_seq: int,
                                    missing: str) -> None:
    path = tmp_path / "a.sqlite"
    filled(path)
    tamper(path, f"DELETE FROM records WHERE seq = {deleted}")
    report = verify(path)
    assert (report.ok, report.bad_seq, report.kind) == (False, bad_seq, "deleted")
    assert missing in str(report)


def test_deleted_tail_is_detected_only_with_a_pinned_head(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    heads = filled(path)
    pinned = verify(path).head
    assert pinned == heads[-1]
    tamper(path, "DELETE FROM records WHERE seq >= 4")
    assert verify(path).ok  # a shorter chain is still a valid chain: the limitation
    report = verify(path, head=pinned)
    assert (report.ok, report.kind, report.bad_seq) == (False, "truncated", 4)
    assert "records 4..5 were deleted from the end" in str(report)
    tamper(path, "DELETE FROM records")
    assert verify(path, head=pinned).kind == "truncated"


def test_pinned_head_detects_a_rewritten_prefix(tmp_path: Path) -> None:
    """Unkeyed, anyone can recompute the chain; a pinned head still binds it."""
    path = tmp_path / "a.sqlite"
    heads = filled(path, 3)
    forged = tmp_path / "forged.sqlite"
    with AuditLog(forged) as log:
        for i in range(4):
            log.append(rec(i, tier="cloud"))
    assert verify(forged).ok
    report = verify(forged, head=heads[-1])
    assert (report.kind, report.bad_seq) == ("head_mismatch", 3)


def test_swapped_records_are_detected(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    filled(path)
    tamper(path, "UPDATE records SET seq = -2 WHERE seq = 2",
           "UPDATE records SET seq = 2 WHERE seq = 3",
           "UPDATE records SET seq = 3 WHERE seq = -2")
    report = verify(path)
    assert (report.bad_seq, report.kind) == (2, "reordered")
    assert "holds the record written as seq 3" in str(report)


def test_swapped_records_with_renumbered_bodies_are_detected(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    filled(path)
    by_seq = {r[0]: r for r in rows(path)}
    b2, b3 = json.loads(by_seq[2][1]), json.loads(by_seq[3][1])
    b2["seq"], b3["seq"] = 3, 2
    dump = {"sort_keys": True, "separators": (",", ":")}
    tamper(path, "UPDATE records SET body = ? WHERE seq = 2", args=(json.dumps(b3, **dump),))
    tamper(path, "UPDATE records SET body = ? WHERE seq = 3", args=(json.dumps(b2, **dump),))
    report = verify(path)
    assert (report.bad_seq, report.kind) == (2, "edited")


def _forge(seq: int, prev: str, record: AuditRecord) -> tuple[str, str]:
    body = canonical_json(seq, record)
    return body, hashlib.sha256(bytes.fromhex(prev) + body.encode()).hexdigest()


def test_inserted_record_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    heads = filled(path)
    body, digest = _forge(3, heads[1][1], rec(99, requester="mallory"))
    tamper(path, "UPDATE records SET seq = seq + 10 WHERE seq >= 3",
           "UPDATE records SET seq = seq - 9 WHERE seq >= 13",
           "INSERT INTO records VALUES (3, '2025-03-01T13:39:00.000000Z', 'mallory', "
           "'device', 'pii', 'answered', ?, ?, ?)", args=(body, heads[1][1], digest))
    report = verify(path)
    # the forged record itself chains correctly (unkeyed, SHA-256 is public) but the
    # next one no longer sits where it was written
    assert (report.bad_seq, report.kind, report.records) == (4, "reordered", 3)


def test_appended_forgery_with_a_bad_hash_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    heads = filled(path, 2)
    body, _ = _forge(3, heads[-1][1], rec(3))
    tamper(path, "INSERT INTO records VALUES (3, '2025-03-01T12:03:00.000000Z', 'alice', "
           "'device', 'pii', 'answered', ?, ?, ?)", args=(body, heads[-1][1], "ab" * 32))
    assert (verify(path).bad_seq, verify(path).kind) == (3, "edited")
    tamper(path, "UPDATE records SET prev_hash = ? WHERE seq = 3", args=("cd" * 32,))
    assert (verify(path).bad_seq, verify(path).kind) == (3, "chain")


def test_keyed_log_detects_a_chain_recomputed_without_the_key(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    filled(path, 4, key=KEY)
    assert verify(path, key=KEY).ok and verify(path, key=KEY).keyed
    # The attacker edits record 2 and recomputes every hash with plain SHA-256.
    prev = GENESIS
    for seq, _, _, _ in rows(path):
        body, digest = _forge(seq, prev, rec(seq - 1, tier="cloud" if seq == 2 else "device"))
        tamper(path, f"UPDATE records SET body = ?, prev_hash = ?, hash = ? WHERE seq = {seq}",
               args=(body, prev, digest))
        prev = digest
    report = verify(path, key=KEY)
    assert (report.ok, report.bad_seq, report.kind) == (False, 1, "edited")
    assert "recomputed without the key" in str(report)
    assert verify(path).kind == "key_required"  # the key is not optional for a keyed log
    # ... and switching the log's mode to unkeyed does not help either
    tamper(path, "UPDATE meta SET value = 'sha256' WHERE key = 'mode'")
    assert verify(path, key=KEY).kind == "wrong_key"


def test_wrong_or_missing_key(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    filled(path, 2, key=KEY)
    report = verify(path, key=b"x" * 32)
    assert (report.ok, report.kind, report.bad_seq, report.records) == \
        (False, "wrong_key", None, 0)
    assert "key does not match" in str(report)
    assert verify(path).kind == "key_required"
    with pytest.raises(AuditKeyError, match="not the one it was created with"):
        AuditLog(path, key=b"x" * 32)
    with pytest.raises(AuditKeyError, match="created with a key"):
        AuditLog(path)
    plain = tmp_path / "plain.sqlite"
    filled(plain, 1)
    with pytest.raises(AuditKeyError, match="created without a key"):
        AuditLog(plain, key=KEY)
    assert verify(plain, key=KEY).kind == "wrong_key"
    with pytest.raises(ValueError, match="at least 16"):
        AuditLog(tmp_path / "b.sqlite", key=b"short")


def test_load_key_from_the_environment() -> None:
    assert load_key(AuditConfig()) is None
    cfg = AuditConfig(key_env="EW_AUDIT_KEY")
    assert load_key(cfg, {"EW_AUDIT_KEY": "s" * 40}) == b"s" * 40
    with pytest.raises(AuditKeyError, match=r"\$EW_AUDIT_KEY is not set.*openssl rand"):
        load_key(cfg, {})
    with pytest.raises(AuditKeyError, match="is 5 bytes"):
        load_key(cfg, {"EW_AUDIT_KEY": "short"})


# -- opening --------------------------------------------------------------------------

def test_readonly_never_creates_or_writes(tmp_path: Path) -> None:
    missing = tmp_path / "nope.sqlite"
    with pytest.raises(AuditError, match=r"no audit log at .*nope\.sqlite"):
        AuditLog(missing, readonly=True)
    assert not missing.exists()
    path = tmp_path / "a.sqlite"
    filled(path, 1)
    with AuditLog(path, readonly=True) as log, pytest.raises(AuditError, match="read-only"):
        log.append(rec())


def test_other_sqlite_files_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "jobs.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE jobs (id TEXT)")
    conn.close()
    with pytest.raises(AuditError, match="not an edgewise audit log"):
        AuditLog(other)
    with pytest.raises(AuditError, match="not an edgewise audit log"):
        AuditLog(other, readonly=True)
    with pytest.raises(ValueError, match="file path"):
        AuditLog(":memory:")
    garbage = tmp_path / "notes.txt"
    garbage.write_text("not a database at all, just some text " * 100)
    with pytest.raises(AuditError, match=r"notes\.txt.*not a database"):
        AuditLog(garbage)
    with pytest.raises(AuditError, match=r"notes\.txt.*not .*a.* database"):
        AuditLog(garbage, readonly=True)


def test_unwritable_directory_names_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(AuditError, match=r"cannot create its directory.*audit\.path") as info:
        AuditLog(blocker / "sub" / "a.sqlite")
    assert str(blocker) in str(info.value)


# -- concurrency ----------------------------------------------------------------------

def test_concurrent_appends_from_threads_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    shared = AuditLog(path)
    second = AuditLog(path)  # another connection, as another process would have
    seen: list[int] = []
    lock = threading.Lock()

    def worker(log: AuditLog, tid: int) -> None:
        for i in range(15):
            seq, _ = log.append(rec(i, request_id=f"t{tid}-{i}"))
            with lock:
                seen.append(seq)

    threads = [threading.Thread(target=worker, args=(shared if t % 2 else second, t))
               for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shared.close()
    second.close()
    assert sorted(seen) == list(range(1, 91))
    report = verify(path)
    assert report.ok and report.records == 90


_CHILD = """
import sys
from datetime import UTC, datetime
from edgewise.security import AuditLog, AuditRecord
with AuditLog(sys.argv[1]) as log:
    for i in range(25):
        log.append(AuditRecord(requester=sys.argv[2], request_id=f"r{i}", route="chat",
                               node="n", outcome="answered"))
"""


def test_concurrent_appends_from_two_processes_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    filled(path, 1)  # the file exists: the children race on appends, not on creation
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, str(path), who])
             for who in ("proc-a", "proc-b")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    report = verify(path)
    assert report.ok and report.records == 51
    with AuditLog(path, readonly=True) as log:
        assert len(list(log.query(requester="proc-a"))) == 25
        assert len(list(log.query(requester="proc-b"))) == 25


# -- query ----------------------------------------------------------------------------

def test_query_filters(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    with AuditLog(path) as log:
        log.append(rec(0, requester="alice", tier="device", detected_level="pii"))
        log.append(rec(1, requester="bob", tier="cloud", declared_level=None,
                       detected_level="public"))
        log.append(rec(2, requester="bob", tier=None, plan=(), outcome="refused:clearance",
                       detected_level="phi"))
        log.append(rec(3, requester="carol", tier=None, outcome="queued"))
        log.append(rec(4, requester="alice", tier="cloud", outcome="failed:timeout"))

        def seqs(**kw: Any) -> list[int]:
            return [e.seq for e in log.query(**kw)]

        assert seqs() == [1, 2, 3, 4, 5]
        assert seqs(requester="bob") == [2, 3]
        assert seqs(tier="cloud") == [2, 5]
        assert seqs(level="phi") == [3]
        assert seqs(level="public") == [2]
        assert seqs(outcome="refused") == [3]
        assert seqs(outcome="refused:clearance") == [3]
        assert seqs(outcome="refuse") == []
        assert seqs(outcome="failed") == [5]
        assert seqs(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3)) == [2, 3]
        assert seqs(limit=2) == [4, 5]  # the newest two, oldest first
        assert seqs(requester="alice", tier="cloud", limit=10) == [5]
        with pytest.raises(ValueError, match="level must be one of"):
            log.query(level="secret")
        with pytest.raises(ValueError, match="limit"):
            log.query(limit=0)


# -- the record refuses content ---------------------------------------------------------

PROMPT = "Patient John Smith, DOB 1980-01-02, has HIV; what dosage should he take?"


@pytest.mark.parametrize(("change", "error", "match"), [
    ({"requester": PROMPT}, ValueError, "requester must match"),
    ({"request_id": "id with spaces"}, ValueError, "request_id"),
    ({"node": ""}, ValueError, "node"),
    ({"entities": {"john@example.com": 1}}, ValueError, "entity type"),
    ({"entities": {"PERSON": "John Smith"}}, TypeError, "must be an int"),
    ({"entities": {"PERSON": True}}, TypeError, "must be an int"),
    ({"entities": {"PERSON": 0}}, ValueError, "leave out"),
    ({"entities": ["PERSON"]}, TypeError, "mapping"),
    ({"reason": "first line\nsecond line"}, ValueError, "one printable line"),
    ({"reason": "x" * 513}, ValueError, "at most 512"),
    ({"reason": None}, TypeError, "reason must be a str"),
    ({"outcome": "ok"}, ValueError, "outcome"),
    ({"outcome": "refused"}, ValueError, "outcome"),
    ({"outcome": "refused:Clearance too low"}, ValueError, "outcome"),
    ({"detected_level": "secret"}, ValueError, "detected_level must be one of"),
    ({"tier": "cloud tier"}, ValueError, "tier"),
    ({"plan": "device"}, TypeError, "tuple of tier names"),
    ({"plan": ("device", PROMPT)}, ValueError, "plan entry"),
    ({"escalations": -1}, ValueError, r"\[0, 1000\]"),
    ({"failovers": 1.0}, TypeError, "must be an int"),
    ({"clearance_override": ("a",) * 65}, ValueError, "at most 64"),
    ({"redaction": {"placeholders": 3}}, TypeError, "must be a Redaction"),
    ({"ts": datetime(2025, 1, 1)}, ValueError, "timezone-aware"),
    ({"ts": "2025-01-01T00:00:00Z"}, TypeError, "must be a datetime"),
])
def test_record_rejects_wrong_input(change: dict[str, Any], error: type[Exception],
                                    match: str) -> None:
    with pytest.raises(error, match=match) as info:
        rec(**change)
    assert "John Smith" not in str(info.value)  # errors never echo content either


def test_redaction_must_name_its_tiers() -> None:
    with pytest.raises(ValueError, match=r"redaction\.tiers is empty"):
        Redaction(placeholders=2)
    assert not Redaction().applied and Redaction(placeholders=0, tiers=("cloud",)).applied


def test_record_is_a_frozen_copy() -> None:
    ents = {"PERSON": 1}
    r = rec(entities=ents)
    ents["PERSON"] = 5
    assert r.entities == {"PERSON": 1}
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.tier = "cloud"  # type: ignore[misc]
    assert rec(declared_level=None, detected_level=None).level == "public"
    assert rec(declared_level="phi", detected_level="internal").level == "phi"


# -- command line ----------------------------------------------------------------------

def run_cli(*argv: str) -> Any:
    return CliRunner().invoke(app, ["audit", *argv], env={"COLUMNS": "200"})


def test_cli_verify_ok_prints_head(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    heads = filled(path, 3)
    r = run_cli("verify", "--path", str(path))
    assert r.exit_code == 0, r.output
    assert "ok: 3 records verified" in r.stdout
    assert f"--head 3:{heads[-1][1]}" in r.stdout
    r = run_cli("verify", "--path", str(path), "--json", "--head", f"2:{heads[1][1]}")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["ok"] and out["records"] == 3
    assert out["head"] == {"seq": 3, "hash": heads[-1][1]}


def test_cli_verify_tampered_exits_1_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    heads = filled(path, 4)
    tamper(path, "DELETE FROM records WHERE seq = 2")
    r = run_cli("verify", "--path", str(path))
    assert r.exit_code == 1
    assert r.stdout == "TAMPERED: seq 3: record(s) 2 are missing (deleted)\n"
    r = run_cli("verify", "--path", str(path), "--json")
    assert r.exit_code == 1
    assert json.loads(r.stdout)["bad_seq"] == 3
    tamper(path, "DELETE FROM records WHERE seq >= 2")
    assert run_cli("verify", "--path", str(path)).exit_code == 0
    r = run_cli("verify", "--path", str(path), "--head", f"4:{heads[-1][1]}")
    assert r.exit_code == 1 and "deleted from the end" in r.stdout


def test_cli_verify_reads_the_key_named_in_the_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.sqlite"
    filled(path, 2, key=b"z" * 32)
    config = tmp_path / "node.yaml"
    config.write_text(f"audit: {{path: {path}, key_env: EW_TEST_AUDIT_KEY}}\n")
    monkeypatch.delenv("EW_TEST_AUDIT_KEY", raising=False)
    r = run_cli("verify", "--config", str(config))
    assert r.exit_code == 2 and "$EW_TEST_AUDIT_KEY is not set" in r.stderr
    monkeypatch.setenv("EW_TEST_AUDIT_KEY", "z" * 32)
    r = run_cli("verify", "--config", str(config))
    assert r.exit_code == 0 and "(HMAC-SHA256 chain)" in r.stdout
    monkeypatch.setenv("EW_TEST_AUDIT_KEY", "y" * 32)
    r = run_cli("verify", "--config", str(config))
    assert r.exit_code == 1 and "key does not match" in r.stdout
    r = run_cli("verify", "--path", str(path))  # no key at all
    assert r.exit_code == 1 and "HMAC-keyed log" in r.stdout
    r = run_cli("verify", "--path", str(path), "--key-env", "EW_TEST_AUDIT_KEY")
    assert r.exit_code == 1 and "key does not match" in r.stdout


def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    r = run_cli("verify", "--path", str(path))
    assert r.exit_code == 2 and "no audit log at" in r.stderr
    assert not path.exists()
    filled(path, 1)
    assert run_cli("verify", "--path", str(path), "--head", "1:abc").exit_code == 2
    assert run_cli("verify", "--path", str(path), "--config", str(path)).exit_code == 2
    assert run_cli("show", "--path", str(path), "--level", "secret").exit_code == 2
    assert run_cli("show", "--path", str(path), "--since", "yesterday").exit_code == 2


def test_cli_show_filters_as_json_lines_and_table(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    with AuditLog(path) as log:
        log.append(rec(0, requester="alice"))
        log.append(rec(1, requester="bob", tier=None, plan=(), outcome="refused:clearance"))
        log.append(rec(2, requester="bob", tier="cloud"))
    r = run_cli("show", "--path", str(path), "--requester", "bob", "--json")
    assert r.exit_code == 0, r.output
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["seq"] for x in lines] == [2, 3]
    assert lines[0]["outcome"] == "refused:clearance" and lines[0]["entities"] == {"PERSON": 2}
    assert set(lines[0]) >= {"hash", "prev_hash", "level", "redaction", "reason"}
    r = run_cli("show", "--path", str(path), "--outcome", "refused", "--since", "2025-03-01",
                "--until", "2025-03-01T12:05:00+00:00", "--json")
    assert [json.loads(x)["seq"] for x in r.stdout.splitlines()] == [2]
    r = run_cli("show", "--path", str(path), "--limit", "1", "--json")
    assert [json.loads(x)["seq"] for x in r.stdout.splitlines()] == [3]
    r = run_cli("show", "--path", str(path), "--tier", "device")
    assert r.exit_code == 0
    assert "alice" in r.stdout and "bob" not in r.stdout
    assert "1 record(s) shown" in r.stderr


def test_audit_errors_are_edgewise_errors() -> None:
    assert issubclass(AuditKeyError, AuditError) and issubclass(AuditError, EdgewiseError)


def test_a_failed_append_stores_nothing_and_every_caller_hears_of_it(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    filled(path, 2)
    tamper(path, "UPDATE records SET hash = 'not a hash' WHERE seq = 2")
    errors: list[Exception] = []
    with AuditLog(path) as log:

        def worker() -> None:
            try:
                log.append(rec(7))
            except AuditError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(errors) == 4
    assert all("hash of record 2 is malformed" in str(e) for e in errors)
    assert len(rows(path)) == 2
