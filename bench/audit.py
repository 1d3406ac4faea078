"""Audit log append throughput: is a durable, hash-chained record cheap enough per request?

Side by side in one run, on the same disk (``--dir``), each writing ``--n`` records of
the same routing decision:

1. ``edgewise FULL`` — :class:`edgewise.security.audit.AuditLog` as shipped: WAL,
   ``synchronous=FULL`` (one fsync per append), sequential appends from one thread.
2. ``edgewise FULL, 4 threads`` — the same log appended from 4 threads at once (the node
   calls ``append`` via ``asyncio.to_thread``).
3. ``edgewise FULL, HMAC`` — with an HMAC key.
4. ``edgewise NORMAL`` — the same code with ``synchronous=NORMAL`` (no fsync at commit;
   the newest records can be lost on power loss): what durability costs.
5. ``sqlite FULL, no chain`` — a plain INSERT of the same JSON with the same pragmas: what
   the chain (read the head, validate, canonical JSON, hash) costs on top of SQLite.
6. ``JSONL + fsync`` — what a user would otherwise write: one JSON line per decision,
   flushed and fsynced (durable, no chain, no index).
7. ``logging (no fsync)`` — Python ``logging`` to a file: not durable at all.

Then ``verify`` of the first log: records checked per second.

    .venv/bin/python bench/audit.py            # ~30 s on 2 cores
    .venv/bin/python bench/audit.py --n 500

Writes ``bench/results/audit.json`` and ``bench/results/audit.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgewise.security import AuditLog, AuditRecord, Redaction
from edgewise.security.audit_record import canonical_json

RESULTS = Path(__file__).resolve().parent / "results"


def record(i: int) -> AuditRecord:
    return AuditRecord(
        requester="clinic-app", request_id=f"chatcmpl-{i:08d}", route="chat",
        node="clinic-1", declared_level="internal", detected_level="pii",
        entities={"PERSON": 2, "PHONE_NUMBER": 1}, tier="cloud", plan=("device", "cloud"),
        reason="cloud after device: confidence 0.33 < 0.62, escalated", outcome="answered",
        escalations=1, redaction=Redaction(placeholders=3, tiers=("cloud",)))


def timed(n: int, threads: int, one: Callable[[int], None]) -> dict[str, Any]:
    """Call ``one(i)`` for i < n from ``threads`` threads; per-call latency and rate."""
    lat: list[float] = []
    lock = threading.Lock()

    def worker(start: int) -> None:
        mine = []
        for i in range(start, n, threads):
            t = time.perf_counter()
            one(i)
            mine.append(time.perf_counter() - t)
        with lock:
            lat.extend(mine)

    t0 = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    wall = time.perf_counter() - t0
    lat.sort()
    return {"n": n, "threads": threads, "wall_s": wall, "per_s": n / wall,
            "p50_ms": 1e3 * statistics.median(lat),
            "p99_ms": 1e3 * lat[min(len(lat) - 1, int(0.99 * len(lat)))]}


def run(n: int, base: Path) -> dict[str, Any]:
    recs = [record(i) for i in range(n)]
    out: dict[str, Any] = {}

    def audit(name: str, threads: int = 1, key: bytes | None = None,
              sync: str = "FULL") -> AuditLog:
        log = AuditLog(base / f"{name}.sqlite", key=key)
        if sync != "FULL":  # bench-only: reach in to show what durability costs
            assert log._conn is not None
            log._conn.execute(f"PRAGMA synchronous={sync}")
        out[name] = timed(n, threads, lambda i: log.append(recs[i]))
        return log

    first = audit("edgewise FULL")
    audit("edgewise FULL, 4 threads", threads=4).close()
    audit("edgewise FULL, HMAC", key=os.urandom(32)).close()
    audit("edgewise NORMAL", sync="NORMAL").close()

    conn = sqlite3.connect(base / "plain.sqlite", isolation_level=None,
                           check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE r (seq INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    out["sqlite FULL, no chain"] = timed(n, 1, lambda i: conn.execute(
        "INSERT INTO r (body) VALUES (?)", (canonical_json(i + 1, recs[i]),)))
    conn.close()

    fh = open(base / "log.jsonl", "a", encoding="utf-8")  # noqa: SIM115

    def jsonl(i: int) -> None:
        fh.write(canonical_json(i + 1, recs[i]) + "\n")
        fh.flush()
        os.fsync(fh.fileno())

    out["JSONL + fsync"] = timed(n, 1, jsonl)
    fh.close()

    logger = logging.getLogger("bench.audit")
    logger.propagate = False
    handler = logging.FileHandler(base / "log.txt")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    out["logging (no fsync)"] = timed(n, 1, lambda i: logger.info(
        canonical_json(i + 1, recs[i])))
    logger.removeHandler(handler)
    handler.close()

    t = time.perf_counter()
    report = first.verify()
    dt = time.perf_counter() - t
    first.close()
    assert report.ok and report.records == n, report
    return {"appends": out, "verify": {"records": n, "wall_s": dt, "per_s": n / dt}}


def table(res: dict[str, Any]) -> str:
    full = res["appends"]["edgewise FULL"]["per_s"]
    lines = ["| writer | durable | appends/s | × edgewise FULL | p50 ms | p99 ms |",
             "|---|---|---:|---:|---:|---:|"]
    for name, m in res["appends"].items():
        durable = "no" if "NORMAL" in name or "no fsync" in name else "yes"
        lines.append(f"| {name} | {durable} | {m['per_s']:.0f} | {m['per_s'] / full:.2f} | "
                     f"{m['p50_ms']:.2f} | {m['p99_ms']:.2f} |")
    v = res["verify"]
    lines.append("")
    lines.append(f"verify: {v['records']} records in {v['wall_s']:.2f} s "
                 f"({v['per_s']:.0f} records/s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="records per writer")
    p.add_argument("--dir", type=Path, default=None,
                   help="where to write the logs (default: a temp dir; use the disk the "
                        "node will use)")
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        res = run(args.n, Path(tmp))
    res["settings"] = {"n": args.n, "python": sys.version.split()[0],
                       "sqlite": sqlite3.sqlite_version, "machine": platform.platform(),
                       "cpus": os.cpu_count()}
    md = table(res)
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "audit.json").write_text(json.dumps(res, indent=1) + "\n")
    (args.out / "audit.md").write_text(md + "\n")


if __name__ == "__main__":
    main()
