"""Real fleet processes on loopback for ``bench/fleet.py``: a control plane
(``edgewise control init`` + ``serve``), nodes that ``edgewise join`` it and run
``edgewise serve``, a throwaway PostgreSQL server, the TLS clients that talk to them, and
the load generators (open-loop chat requests, simulated nodes' enrolment and heartbeats).

Every process is a child started here, in its own session (so a Ctrl-C in the terminal
reaches the benchmark only, which then stops them in order), with its own config file,
state directory and log under one temporary directory. :class:`Procs` remembers them
all; :meth:`Procs.stop_all` ends every one (SIGTERM, then SIGKILL after a grace period)
and is called from a ``finally``, so an exception or Ctrl-C leaves nothing running.

Node certificates carry DNS SANs ``<node>.node.<fleet>`` and ``<tier>.tier.<fleet>``, not
IP SANs: a client connects to 127.0.0.1 and sends that name as SNI
(:class:`SNITransport`), as fleet peers do, so the handshake checks *which* node answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]
import yaml

from edgewise.security.pki import node_dns

__all__ = ["CHAT", "AsyncSNITransport", "ControlProc", "CpuWindow", "NodeProc", "Postgres",
           "Procs", "SNITransport", "bench_root", "cert_info", "client_ssl", "enrol",
           "free_port",
           "heartbeat_body", "open_loop", "percentiles", "progress", "rss_mb", "url_tier"]

HOST = "127.0.0.1"
EDGEWISE = str(Path(sys.executable).parent / "edgewise")
PASSPHRASE = "bench-passphrase-not-secret"
CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hello there"}],
        "max_tokens": 4}
#: Children log through rich; a wide "terminal" keeps each log record on one line.
CHILD_ENV = {**os.environ, "COLUMNS": "400", "EDGEWISE_CA_PASSPHRASE": PASSPHRASE}


def progress(msg: str) -> None:
    print(f"[fleet] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def percentiles(values: Sequence[float], scale: float = 1000.0) -> dict[str, float | int]:
    """n, p50/p95/p99/max (and mean) of ``values`` × ``scale`` (seconds → ms by default)."""
    if not values:
        return {"n": 0}
    xs = sorted(v * scale for v in values)

    def q(p: float) -> float:  # nearest-rank
        return xs[min(len(xs), max(1, math.ceil(p * len(xs)))) - 1]
    return {"n": len(xs), "p50": statistics.median(xs), "p95": q(0.95), "p99": q(0.99),
            "max": xs[-1], "mean": statistics.fmean(xs)}


class CpuWindow:
    """CPU used over an interval by named process groups and by the whole machine, in
    cores (CPU seconds / wall seconds); what is left is other processes' (the machine
    is shared)."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.t0, self.busy0, self.cpu0 = time.perf_counter(), self._busy(), self._cpu()

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return float(t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0))

    def _cpu(self) -> dict[int, float]:
        out: dict[int, float] = {}
        for pids in self.groups.values():
            for pid in pids:
                with contextlib.suppress(psutil.Error):
                    c = psutil.Process(pid).cpu_times()
                    out[pid] = c.user + c.system
        return out

    def cores(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        cpu1, busy = self._cpu(), self._busy() - self.busy0
        out = {name: sum(cpu1.get(p, 0.0) - self.cpu0.get(p, 0.0) for p in pids) / wall
               for name, pids in self.groups.items()}
        out["others"] = max(0.0, busy / wall - sum(out.values()))
        out["wall_s"] = wall
        return out


def rss_mb(pid: int) -> float:
    with contextlib.suppress(psutil.Error):
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    return float("nan")


def cert_info(path: Path) -> tuple[str, datetime]:
    """Serial and expiry of the leaf in a PEM chain file (what a node presents now)."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return f"{cert.serial_number:032x}", cert.not_valid_after_utc


# -- TLS clients ---------------------------------------------------------------------------

def client_ssl(ca: Path, state_dir: Path | None = None) -> ssl.SSLContext:
    """Trust the fleet root ``ca``; with ``state_dir``, present that node's certificate."""
    ctx = ssl.create_default_context(cafile=str(ca))
    if state_dir is not None:
        ctx.load_cert_chain(state_dir / "node.pem", state_dir / "node.key")
    return ctx


class SNITransport(httpx.HTTPTransport):
    """Connects to the URL's address, verifies the server as ``sni`` (a node's DNS SAN)."""

    def __init__(self, ctx: ssl.SSLContext, sni: str, **kwargs: Any) -> None:
        super().__init__(verify=ctx, **kwargs)
        self.sni = sni

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.extensions = {**request.extensions, "sni_hostname": self.sni}
        return super().handle_request(request)


class AsyncSNITransport(httpx.AsyncHTTPTransport):
    def __init__(self, ctx: ssl.SSLContext, sni: str, **kwargs: Any) -> None:
        super().__init__(verify=ctx, **kwargs)
        self.sni = sni

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.extensions = {**request.extensions, "sni_hostname": self.sni}
        return await super().handle_async_request(request)


# -- processes -------------------------------------------------------------------------------

@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Procs:
    """Every child process of the benchmark, stopped by :meth:`stop_all`."""

    root: Path
    procs: list[Proc] = field(default_factory=list)
    cleanups: list[Any] = field(default_factory=list)

    def start(self, name: str, argv: list[str], *, cwd: Path | None = None) -> Proc:
        log = self.root / f"{name}.log"
        with open(log, "ab") as out:
            p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                 cwd=cwd or self.root, env=CHILD_ENV, start_new_session=True)
        proc = Proc(name, p, log)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, grace_s: float = 10.0) -> None:
        if proc.alive():
            with contextlib.suppress(ProcessLookupError):
                proc.popen.send_signal(signal.SIGTERM)
            try:
                proc.popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Stop the processes started inside the block when it ends (one section's)."""
        before = len(self.procs)
        try:
            yield
        finally:
            for proc in list(reversed(self.procs[before:])):
                with contextlib.suppress(Exception):
                    self.stop(proc)

    def stop_all(self) -> None:
        """Nodes first (newest first), then the control planes, then the cleanups."""
        for proc in list(reversed(self.procs)):
            with contextlib.suppress(Exception):
                self.stop(proc)
        for fn in reversed(self.cleanups):
            with contextlib.suppress(Exception):
                fn()
        self.cleanups.clear()


@contextlib.contextmanager
def bench_root(prefix: str, *, keep: bool) -> Iterator[tuple[Procs, Path]]:
    """A benchmark's temporary folder and the :class:`Procs` of its children. Ctrl-C
    (even when started in the background, where SIGINT is ignored) and SIGTERM unwind
    through it; every child is stopped at the end, and the folder removed unless
    ``keep``."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    root = Path(tempfile.mkdtemp(prefix=prefix))
    procs = Procs(root)
    try:
        yield procs, root
    except KeyboardInterrupt:
        progress("interrupted: stopping every process; no results written")
        raise SystemExit(130) from None
    finally:
        procs.stop_all()
        if keep:
            progress(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def run_cli(*args: str, cwd: Path, timeout: float = 120) -> str:
    """``edgewise ARGS``; its stdout (raises with stderr on failure)."""
    done = subprocess.run([EDGEWISE, *args], cwd=cwd, env=CHILD_ENV, capture_output=True,
                          text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"edgewise {' '.join(args[:3])} failed ({done.returncode}): "
                           f"{done.stderr.strip()[-800:]}")
    return done.stdout


def last_line(text: str) -> str:
    return [line for line in text.splitlines() if line.strip()][-1].strip()


def _wait(url: str, proc: Proc, *, ctx: ssl.SSLContext | bool, sni: str | None = None,
          timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    transport = SNITransport(ctx, sni) if sni and isinstance(ctx, ssl.SSLContext) else None
    with httpx.Client(verify=ctx, transport=transport, timeout=2) as c:
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n"
                                   + proc.output()[-2000:])
            with contextlib.suppress(httpx.TransportError):
                if c.get(url).status_code == 200:
                    return
            time.sleep(0.1)
    raise RuntimeError(f"{proc.name} did not come up at {url}:\n" + proc.output()[-2000:])


class ControlProc:
    """A fleet's control plane: ``control init`` in ``directory``, settings overridden in
    control.yaml, then ``control serve`` on a free port."""

    def __init__(self, procs: Procs, directory: Path, *, fleet: str = "bench",
                 database_url: str | None = None, **settings: Any) -> None:
        self.procs = procs
        self.dir = directory
        self.fleet = fleet
        self.port = free_port()
        self.url = f"https://{HOST}:{self.port}"
        self.db = ["--database-url", database_url] if database_url else []
        self.fingerprint = last_line(run_cli("control", "init", "--dir", str(directory),
                                             "--fleet", fleet, "--port", str(self.port),
                                             cwd=procs.root))
        path = directory / "control.yaml"
        data = yaml.safe_load(path.read_text())
        data.update(settings)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        self.settings = data
        self.ca = directory / "ca" / "root.pem"
        self.proc = procs.start(f"control-{directory.name}",
                                [EDGEWISE, "control", "serve", "--dir", str(directory),
                                 "--log-level", "warning", *self.db])
        _wait(self.url + "/healthz", self.proc, ctx=client_ssl(self.ca))

    def cli(self, *args: str) -> str:
        return run_cli("control", *args, "--dir", str(self.dir), *self.db, cwd=self.procs.root)

    def join_token(self, node: str, tier: str) -> str:
        return str(json.loads(self.cli("token", "create", "--node", node, "--tier", tier,
                                       "--json"))["token"])

    def access_token(self, *scopes: str, subject: str = "bench") -> str:
        scope_args = [a for s in scopes for a in ("--scope", s)]
        return last_line(self.cli("access-token", "--subject", subject, *scope_args))

    def nodes(self) -> list[dict[str, Any]]:
        return list(json.loads(self.cli("nodes", "--json")))

    def join(self, node: str, tier: str, state_dir: Path) -> Path:
        """``edgewise join`` with a fresh token; returns the node's state directory."""
        run_cli("join", self.url, "--token", self.join_token(node, tier), "--ca-sha256",
                self.fingerprint, "--node", node, "--state-dir", str(state_dir),
                cwd=self.procs.root)
        return state_dir


class NodeProc:
    """``edgewise serve`` of a joined node: its YAML is written from ``config`` (the
    common parts filled in: host, port, fake engine, state paths, privacy off)."""

    def __init__(self, procs: Procs, control: ControlProc, name: str, tier: str, *,
                 config: dict[str, Any], probe_as: Path | None = None) -> None:
        self.name, self.tier, self.fleet = name, tier, control.fleet
        home = procs.root / control.dir.name / name
        home.mkdir(parents=True, exist_ok=True)
        self.state = control.join(name, tier, home / "fleet")
        self.port = free_port()
        base: dict[str, Any] = {
            "node": {"host": HOST, "port": self.port},
            "engine": {"kind": "fake"},
            "privacy": {"enabled": False},
            "serving": {"drain_timeout_s": 1, "max_queue": 64},
            "fleet": {"state_dir": str(self.state)},
            "audit": {"path": str(home / "audit.sqlite")},
            "routing": {"jobs_path": str(home / "jobs.sqlite")},
        }
        for key, value in config.items():
            base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
        self.config = base
        self.tls = bool(base["serving"].get("tls", {}).get("enabled"))
        self.url = f"{'https' if self.tls else 'http'}://{HOST}:{self.port}"
        self.sni = node_dns(self.fleet, name)
        self.ca = control.ca
        (home / "node.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
        self.proc = procs.start(f"node-{control.dir.name}-{name}",
                                [EDGEWISE, "serve", "--config", str(home / "node.yaml")],
                                cwd=home)
        ctx: ssl.SSLContext | bool = client_ssl(self.ca, probe_as or self.state) \
            if self.tls else False
        _wait(self.url + "/readyz", self.proc, ctx=ctx, sni=self.sni)

    def client(self, *, as_node: Path | None = None, **kwargs: Any) -> httpx.Client:
        """A client of this node that checks its identity; ``as_node``: present that
        node's certificate."""
        if not self.tls:
            return httpx.Client(base_url=self.url, **kwargs)
        transport = SNITransport(client_ssl(self.ca, as_node), self.sni)
        return httpx.Client(base_url=self.url, transport=transport, **kwargs)

    def async_client(self, *, as_node: Path | None = None, **kwargs: Any) -> httpx.AsyncClient:
        transport = AsyncSNITransport(client_ssl(self.ca, as_node), self.sni)
        return httpx.AsyncClient(base_url=self.url, transport=transport, **kwargs)

    def log_count(self, needle: str) -> int:
        return self.proc.output().count(needle)


def url_tier(node: NodeProc) -> dict[str, Any]:
    """The ``endpoints`` entry that reaches ``node`` as a fleet peer of its tier."""
    return {"url": f"https://{HOST}:{node.port}/v1", "peer": f"tier:{node.tier}"}


# -- PostgreSQL --------------------------------------------------------------------------------

def _find_postgres() -> Path | None:
    """The ``bin`` directory with initdb, pg_ctl, postgres (as tests/postgres.py finds it)."""
    candidates: list[Path] = []
    if on_path := shutil.which("pg_ctl"):
        candidates.append(Path(on_path).resolve().parent)
    versions = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if p.parent.name.isdigit()]
    candidates += sorted(versions, key=lambda p: int(p.parent.name), reverse=True)
    for bindir in candidates:
        if all(os.access(bindir / t, os.X_OK) for t in ("initdb", "pg_ctl", "postgres")):
            return bindir
    return None


class Postgres:
    """A throwaway cluster on a free loopback port (the set-up of tests/postgres.py, which
    is pytest-bound: fsync off, scram-sha-256, run as ``postgres`` when we are root)."""

    USER = "edgewise"

    def __init__(self, procs: Procs) -> None:
        bindir = _find_postgres()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found (apt-get install "
                               "postgresql, or `make test` installs them)")
        self.bindir = bindir
        self.run_as: str | None = None
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            self.base = Path(tempfile.mkdtemp(prefix="edgewise-bench-pg-"))
            os.chown(self.base, account.pw_uid, account.pw_gid)
            self.run_as = "postgres"
        else:
            self.base = procs.root / "postgres"
            self.base.mkdir()
        self.data = self.base / "data"
        self.password = secrets.token_urlsafe(18)
        procs.cleanups.append(self.stop)
        pwfile = self.base / "password"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if self.run_as:
            account = pwd.getpwnam(self.run_as)
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", self.USER, "--auth=scram-sha-256",
                  f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C", "--no-sync")
        pwfile.unlink()
        self.port = free_port()
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.base / "server.log"),
                  "-w", "-t", "60", "-o",
                  f"-c listen_addresses={HOST} -c port={self.port} "
                  f"-c unix_socket_directories={self.base} -c fsync=off "
                  "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        import psycopg

        for db in ("bench_control",):
            with psycopg.connect(host=HOST, port=self.port, user=self.USER,
                                 password=self.password, dbname="postgres",
                                 autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {db}".encode())

    def url(self, database: str = "bench_control") -> str:
        return f"postgresql://{self.USER}:{self.password}@{HOST}:{self.port}/{database}"

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def _run(self, tool: str, *args: str, check: bool = True) -> None:
        cmd = [str(self.bindir / tool), *args]
        if self.run_as:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        done = subprocess.run(cmd, cwd=self.base, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "LC_ALL": "C", "PGTZ": "UTC"}, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr[-800:]}")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w",
                      check=False)
        if self.run_as:
            shutil.rmtree(self.base, ignore_errors=True)


# -- load ------------------------------------------------------------------------------------

async def open_loop(client: httpx.AsyncClient, arrivals: list[float], *, header: str,
                    fresh_every: int = 0, stop: Any = None) -> list[dict[str, Any]]:
    """Send a chat request at each arrival time (seconds from now); every
    ``fresh_every``-th on a new connection. ``stop()`` ends it early."""
    records: list[dict[str, Any]] = []
    t0 = time.perf_counter()

    async def one(i: int) -> None:
        headers = {"x-edgewise-min-tier": header}
        if fresh_every and i % fresh_every == 0:
            headers["connection"] = "close"
        t = time.perf_counter()
        rec: dict[str, Any] = {"i": i, "sent": t - t0}
        try:
            r = await client.post("/v1/chat/completions", json=CHAT, headers=headers)
            rec.update(status=r.status_code, tier=r.headers.get("x-edgewise-tier"))
            if r.status_code != 200:
                try:
                    rec["error"] = str(r.json()["error"]["message"])[:600]
                except (ValueError, KeyError, TypeError):
                    rec["error"] = r.text[:600]
        except httpx.HTTPError as exc:
            rec.update(status=None, tier=None, error=f"{type(exc).__name__}: {exc}"[:300])
        rec["done"] = time.perf_counter() - t0
        rec["latency"] = rec["done"] - rec["sent"]
        records.append(rec)

    tasks = []
    for i, at in enumerate(arrivals):
        delay = t0 + at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if stop is not None and stop(records):
            break
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    records.sort(key=lambda r: r["i"])
    return records


def enrol(control: ControlProc, admin: str, n: int, home: Path) -> list[Path]:
    """``n`` simulated nodes: a join token each from the admin API, then POST /v1/join
    with a CSR made here (the private key stays here)."""
    from edgewise.security.pki import csr_pem, generate_key, make_csr, private_pem

    dirs = []
    auth = {"authorization": f"Bearer {admin}"}
    with httpx.Client(base_url=control.url, verify=client_ssl(control.ca), timeout=30) as c:
        for i in range(n):
            name, tier = f"sim-{i:03d}", ("device", "gateway", "cloud")[i % 3]
            r = c.post("/v1/admin/tokens", json={"node": name, "tier": tier}, headers=auth)
            r.raise_for_status()
            key = generate_key()
            j = c.post("/v1/join", json={"token": r.json()["token"], "node": name,
                                         "csr": csr_pem(make_csr(key, name)).decode()})
            j.raise_for_status()
            d = home / name
            d.mkdir(parents=True)
            (d / "node.pem").write_text(j.json()["certificate"])
            (d / "node.key").write_bytes(private_pem(key))
            dirs.append(d)
    return dirs


def heartbeat_body(i: int, k: int, rng: random.Random) -> dict[str, Any]:
    """What a busy node reports (the fields of edgewise.fleet.agent's heartbeat)."""
    req = 40 * k + rng.randrange(40)
    return {"version": "0.1.0", "model": "smollm2-135m-instruct", "model_digest": "ab" * 32,
            "tiers": {"device": {"breaker": "closed", "requests": req},
                      "gateway": {"breaker": "closed", "requests": req // 5},
                      "cloud": {"breaker": "closed", "requests": req // 20}},
            "queue_depth": rng.randrange(4), "tokens_per_s": round(rng.uniform(20, 40), 2),
            "ttft_p50_ms": round(rng.uniform(80, 120), 1),
            "ttft_p95_ms": round(rng.uniform(150, 250), 1), "error_rate": 0.001,
            "requests": req, "escalations": req // 5, "redactions": req // 50,
            "energy_j": round(req * 0.8, 1), "audit_head": f"{req}:{i:016x}",
            "applied_config": None, "config_error": None}
