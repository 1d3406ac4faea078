"""The durable async-job store: FIFO claims, atomicity, transitions, crash durability."""

from __future__ import annotations

import asyncio
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgewise.errors import EdgewiseError, JobStateError, JobStoreError
from edgewise.jobs import Job, JobState, JobStore

CHAT = "/v1/chat/completions"


class ManualClock:
    """A clock that moves only when told, so timestamps and FIFO order are exact."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = 1.0) -> float:
        self.now += seconds
        return self.now


def chat(text: str) -> dict[str, Any]:
    return {"model": "smollm2-135m", "messages": [{"role": "user", "content": text}]}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "jobs.db"


@pytest.fixture
def store(db: Path, clock: ManualClock) -> Iterator[JobStore]:
    with JobStore(db, clock=clock) as s:
        yield s


def enqueue_n(store: JobStore, clock: ManualClock, n: int) -> list[Job]:
    jobs = []
    for i in range(n):
        jobs.append(store.enqueue(CHAT, chat(f"q{i}"), min_clearance="device"))
        clock.advance()
    return jobs


# -- enqueue / get ----------------------------------------------------------------------


def test_enqueue_stores_a_pending_job(store: JobStore, clock: ManualClock) -> None:
    job = store.enqueue(CHAT, chat("héllo ☃"), min_clearance="cloud")

    assert re.fullmatch(r"job-[0-9a-f]{32}", job.id)
    assert job.state is JobState.PENDING
    assert (job.endpoint, job.min_clearance) == (CHAT, "cloud")
    assert job.payload == chat("héllo ☃")
    assert job.created_at == job.updated_at == 1_000.0
    assert job.attempts == 0
    assert (job.result, job.error, job.tier) == (None, None, None)
    assert store.get(job.id) == job


def test_enqueue_ids_are_unique(store: JobStore) -> None:
    ids = {store.enqueue(CHAT, {}, min_clearance="device").id for _ in range(50)}
    assert len(ids) == 50


def test_enqueue_copies_the_payload(store: JobStore) -> None:
    payload = chat("original")
    job = store.enqueue(CHAT, payload, min_clearance="device")
    payload["messages"][0]["content"] = "mutated"

    assert job.payload == chat("original")
    stored = store.get(job.id)
    assert stored is not None and stored.payload == chat("original")


def test_enqueue_rejects_payloads_that_are_not_json(store: JobStore) -> None:
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        store.enqueue(CHAT, {"blob": b"\x00"}, min_clearance="device")
    with pytest.raises(TypeError, match="must be a dict"):
        store.enqueue(CHAT, [1, 2], min_clearance="device")  # type: ignore[arg-type]
    assert sum(store.counts().values()) == 0


def test_get_unknown_job_is_none(store: JobStore) -> None:
    assert store.get("job-" + "0" * 32) is None


# -- claim ------------------------------------------------------------------------------


def test_claim_is_fifo_and_counts_attempts(store: JobStore, clock: ManualClock) -> None:
    jobs = enqueue_n(store, clock, 5)  # created at 1000, 1001, ..., 1004
    clock.now = 2_000.0

    first = store.claim(2)
    assert [j.id for j in first] == [jobs[0].id, jobs[1].id]
    assert all(j.state is JobState.RUNNING and j.attempts == 1 for j in first)
    assert all(j.updated_at == 2_000.0 for j in first)
    assert [j.created_at for j in first] == [1_000.0, 1_001.0]

    rest = store.claim(10)
    assert [j.id for j in rest] == [j.id for j in jobs[2:]]
    assert store.claim() == []


def test_claim_orders_by_created_at_then_insertion(store: JobStore, clock: ManualClock) -> None:
    clock.now = 50.0
    late = store.enqueue(CHAT, chat("late"), min_clearance="device")
    clock.now = 10.0  # the clock stepped back: created_at decides, not insertion
    early = store.enqueue(CHAT, chat("early"), min_clearance="device")
    tie = store.enqueue(CHAT, chat("tie"), min_clearance="device")  # same time: insertion

    assert [j.id for j in store.claim(3)] == [early.id, tie.id, late.id]


def test_claim_rejects_a_limit_below_one(store: JobStore) -> None:
    with pytest.raises(ValueError, match="limit must be at least 1"):
        store.claim(0)


def test_concurrent_claims_never_share_a_job(store: JobStore, clock: ManualClock) -> None:
    expected = {j.id for j in enqueue_n(store, clock, 200)}
    barrier = threading.Barrier(8)
    got: list[list[str]] = [[] for _ in range(8)]

    def worker(k: int) -> None:
        barrier.wait()
        while batch := store.claim(1 + k % 4):  # limits 1..4 mixed
            got[k].extend(j.id for j in batch)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    claimed = [job_id for ids in got for job_id in ids]
    assert len(claimed) == 200
    assert set(claimed) == expected  # all 200, none twice
    assert store.counts()[JobState.RUNNING] == 200


def test_two_stores_on_one_file_never_share_a_job(db: Path, clock: ManualClock) -> None:
    # Two connections (as two processes would have): BEGIN IMMEDIATE serialises them.
    with JobStore(db, clock=clock) as a, JobStore(db, clock=clock) as b:
        expected = {j.id for j in enqueue_n(a, clock, 60)}
        got: dict[str, list[str]] = {"a": [], "b": []}

        def worker(name: str, s: JobStore) -> None:
            while batch := s.claim(2):
                got[name].extend(j.id for j in batch)

        threads = [threading.Thread(target=worker, args=("a", a)),
                   threading.Thread(target=worker, args=("b", b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)

    claimed = got["a"] + got["b"]
    assert len(claimed) == 60 and set(claimed) == expected


async def test_usable_from_asyncio_through_threads(store: JobStore) -> None:
    jobs = await asyncio.gather(*(
        asyncio.to_thread(store.enqueue, CHAT, chat(f"q{i}"), min_clearance="device")
        for i in range(20)
    ))
    polled = await asyncio.gather(*(asyncio.to_thread(store.get, j.id) for j in jobs))
    assert polled == list(jobs)
    assert store.counts()[JobState.PENDING] == 20


# -- transitions ------------------------------------------------------------------------


def test_complete_round_trips_result_and_tier(store: JobStore, clock: ManualClock) -> None:
    job = store.enqueue(CHAT, chat("q"), min_clearance="device")
    store.claim()
    clock.now = 1_234.5
    result = {"id": "chatcmpl-1", "choices": [{"message": {"content": "ünïcode ✓"}}],
              "usage": {"total_tokens": 17}}

    done = store.complete(job.id, result, tier="cloud")

    assert done.state is JobState.DONE
    assert (done.result, done.tier, done.error) == (result, "cloud", None)
    assert (done.attempts, done.created_at, done.updated_at) == (1, 1_000.0, 1_234.5)
    assert store.get(job.id) == done


def test_release_requeues_at_the_front_with_the_error(
    store: JobStore, clock: ManualClock
) -> None:
    first, second = enqueue_n(store, clock, 2)
    assert [j.id for j in store.claim()] == [first.id]

    released = store.release(first.id, "cloud tier unreachable: connect timeout")
    assert released.state is JobState.PENDING
    assert released.error == "cloud tier unreachable: connect timeout"
    assert released.attempts == 1

    again = store.claim()  # still the oldest, so it goes first again
    assert [(j.id, j.attempts) for j in again] == [(first.id, 2)]
    done = store.complete(first.id, {"ok": True}, tier="device")
    assert done.error is None  # success clears the earlier attempt's error
    assert [j.id for j in store.claim()] == [second.id]


def test_fail_from_running_and_from_pending(store: JobStore, clock: ManualClock) -> None:
    running, pending = enqueue_n(store, clock, 2)
    store.claim()

    failed = store.fail(running.id, "tier answered 400: context_length_exceeded")
    assert (failed.state, failed.attempts) == (JobState.FAILED, 1)
    assert failed.error == "tier answered 400: context_length_exceeded"

    expired = store.fail(pending.id, "no tier with clearance 'cloud' configured")
    assert (expired.state, expired.attempts) == (JobState.FAILED, 0)
    assert store.claim() == []


def _to_state(store: JobStore, state: JobState) -> Job:
    job = store.enqueue(CHAT, chat("q"), min_clearance="device")
    if state is not JobState.PENDING:
        store.claim()
    if state is JobState.DONE:
        store.complete(job.id, {"ok": True}, tier="device")
    if state is JobState.FAILED:
        store.fail(job.id, "boom")
    got = store.get(job.id)
    assert got is not None and got.state is state
    return got


@pytest.mark.parametrize(
    ("state", "verb"),
    [
        (JobState.PENDING, "complete"),
        (JobState.PENDING, "release"),
        (JobState.DONE, "complete"),
        (JobState.DONE, "release"),
        (JobState.DONE, "fail"),
        (JobState.FAILED, "complete"),
        (JobState.FAILED, "release"),
        (JobState.FAILED, "fail"),
    ],
)
def test_invalid_transitions_name_the_job_and_its_state(
    store: JobStore, state: JobState, verb: str
) -> None:
    job = _to_state(store, state)
    calls = {
        "complete": lambda: store.complete(job.id, {"x": 1}, tier="cloud"),
        "release": lambda: store.release(job.id, "err"),
        "fail": lambda: store.fail(job.id, "err"),
    }

    with pytest.raises(JobStateError) as info:
        calls[verb]()

    message = str(info.value)
    assert job.id in message and state.value.upper() in message and verb in message
    assert (info.value.job_id, info.value.state) == (job.id, state.value)
    assert isinstance(info.value, JobStoreError) and isinstance(info.value, EdgewiseError)
    assert store.get(job.id) == job  # nothing changed


@pytest.mark.parametrize("verb", ["complete", "release", "fail"])
def test_unknown_job_transitions_raise(store: JobStore, verb: str) -> None:
    job_id = "job-" + "f" * 32
    calls = {
        "complete": lambda: store.complete(job_id, {}, tier="cloud"),
        "release": lambda: store.release(job_id, "err"),
        "fail": lambda: store.fail(job_id, "err"),
    }
    with pytest.raises(JobStateError, match=f"cannot {verb} job 'job-f{{32}}': no such job"):
        calls[verb]()


def test_counts_every_state(store: JobStore, clock: ManualClock) -> None:
    assert store.counts() == dict.fromkeys(JobState, 0)

    jobs = enqueue_n(store, clock, 5)
    store.claim(3)
    store.complete(jobs[0].id, {"ok": True}, tier="device")
    store.fail(jobs[1].id, "bad")

    assert store.counts() == {JobState.PENDING: 2, JobState.RUNNING: 1,
                              JobState.DONE: 1, JobState.FAILED: 1}


# -- durability -------------------------------------------------------------------------


def test_a_job_survives_close_and_reopen(db: Path, clock: ManualClock) -> None:
    with JobStore(db, clock=clock) as s:
        done = s.enqueue(CHAT, chat("kept"), min_clearance="cloud")
        s.claim()
        clock.advance(2.5)
        s.release(done.id, "first try failed")
        s.claim()
        done = s.complete(done.id, {"choices": [{"text": "ok"}]}, tier="cloud")
        pending = s.enqueue(CHAT, chat("waiting"), min_clearance="device")

    with JobStore(db, clock=clock) as s:
        assert s.get(done.id) == done
        assert s.get(pending.id) == pending
        assert (done.attempts, done.tier, done.updated_at) == (2, "cloud", 1_002.5)


def test_recover_after_a_crash_requeues_running_jobs(db: Path, clock: ManualClock) -> None:
    with JobStore(db, clock=clock) as s:
        jobs = enqueue_n(s, clock, 3)
        claimed = s.claim(2)  # the "crash": closed without complete or release
    assert [j.id for j in claimed] == [jobs[0].id, jobs[1].id]

    with JobStore(db, clock=clock) as s:
        assert s.counts()[JobState.RUNNING] == 2
        assert s.recover() == 2
        assert s.counts() == {JobState.PENDING: 3, JobState.RUNNING: 0,
                              JobState.DONE: 0, JobState.FAILED: 0}
        back = s.get(jobs[0].id)
        assert back is not None and back.attempts == 1 and back.error is not None
        assert "interrupted" in back.error
        assert s.recover() == 0
        # Recovered jobs keep their place: FIFO order is unchanged, attempts add up.
        again = s.claim(3)
        assert [(j.id, j.attempts) for j in again] == [
            (jobs[0].id, 2), (jobs[1].id, 2), (jobs[2].id, 1)]


_KILLED_CHILD = textwrap.dedent("""
    import sys
    from edgewise.jobs import JobStore

    store = JobStore(sys.argv[1])
    i = 0
    while True:  # enqueue until killed; announce each job only after enqueue returned
        job = store.enqueue("/v1/chat/completions",
                            {"messages": [{"role": "user", "content": f"q{i}"}]},
                            min_clearance="cloud")
        print(i, job.id, flush=True)
        i += 1
""")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_acknowledged_enqueues_survive_sigkill(db: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", _KILLED_CHILD, str(db)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    acked: dict[str, int] = {}
    try:
        assert child.stdout is not None
        while len(acked) < 20:
            line = child.stdout.readline()
            assert line, f"child exited early: {child.wait(10)} {child.communicate()[1]}"
            index, job_id = line.split()
            acked[job_id] = int(index)
        child.send_signal(signal.SIGKILL)  # mid-enqueue of the next job, most likely
    finally:
        child.kill()
        _, stderr = child.communicate(timeout=10)
    assert child.returncode == -signal.SIGKILL, stderr
    # Never closed, so never checkpointed: the jobs live only in the WAL the child fsynced.
    assert db.with_name(db.name + "-wal").stat().st_size > 0

    with JobStore(db) as s:
        for job_id, i in acked.items():
            job = s.get(job_id)
            assert job is not None, f"acknowledged job {i} lost"
            assert job.state is JobState.PENDING
            assert job.payload == {"messages": [{"role": "user", "content": f"q{i}"}]}
        # The kill may land after a commit but before the print: at most one extra job.
        assert s.counts()[JobState.PENDING] in (20, 21)


def test_the_file_is_wal_and_fsyncs_every_commit(store: JobStore, db: Path) -> None:
    assert store.journal_mode == "wal"
    with sqlite3.connect(db) as other:  # journal_mode is a property of the file
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other.close()
    # synchronous is per connection, so look at the store's own (2 = FULL).
    assert store._conn is not None
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2


# -- opening and closing ----------------------------------------------------------------


def test_creates_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "var" / "lib" / "edgewise" / "jobs.db"
    with JobStore(path) as s:
        s.enqueue(CHAT, {}, min_clearance="device")
    assert path.is_file()


def test_in_memory_store_works() -> None:
    with JobStore(":memory:") as s:
        job = s.enqueue(CHAT, chat("q"), min_clearance="device")
        assert [j.id for j in s.claim()] == [job.id]


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(JobStoreError, match=r"jobs\.db: could not open the database.*aside"):
        JobStore(path)


def test_a_newer_schema_is_refused(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(JobStoreError, match="schema version 99, newer than"):
        JobStore(db)


def test_a_closed_store_refuses_calls(db: Path) -> None:
    s = JobStore(db)
    s.close()
    s.close()  # idempotent
    with pytest.raises(JobStoreError, match="is closed"):
        s.enqueue(CHAT, {}, min_clearance="device")
    with pytest.raises(JobStoreError, match="is closed"):
        s.get("job-x")
