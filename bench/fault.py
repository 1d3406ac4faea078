"""Fault test: a device node keeps answering while its regional tier crashes and returns.

Run by hand (not a test; timings are never asserted; bench/README.md has the details)::

    .venv/bin/python bench/fault.py                     # ~4 minutes
    .venv/bin/python bench/fault.py --duration 30 --kill-at 10 --restart-at 20 --skip-litellm

Two ``edgewise serve`` processes on free 127.0.0.1 ports: **B** (tier ``regional``) and
**A** (tiers ``device``, local, cost 1.0, and ``regional`` = B's URL, cost 0.2, so A plans
``model: "auto"`` as ``[regional, device]``). ``--clients`` seeded clients load A with
(a) ``x-edgewise-min-tier: regional`` (503 with a reason expected while B is down),
(b) plain ``auto`` (must never fail: A's own engine answers while B is down) and
(c) (a) + ``x-edgewise-async: true`` (202 while B is down, delivered by B once it is
back). B gets SIGKILL at ``--kill-at`` s and starts again at ``--restart-at`` s; A's
``/metrics`` is scraped every 0.2 s for its breaker on B.

Phase 2 (unless ``--skip-litellm``) runs the same clients and timeline through LiteLLM's
``Router``: (b) to group ``regional`` (B) with ``fallbacks`` to ``device`` (A pinned to its
device tier), (a) and (c) to group ``regional-only`` (B, no fallback). Only loopback can
be reached from this process (:class:`LoopbackGuard`).

Outputs: Markdown tables on stdout, ``bench/results/fault.{md,json}`` and, with
matplotlib, ``fault.png``. The machine may be shared: load average and CPU used by other
processes are recorded. Subprocesses are always stopped (``finally``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import os
import platform
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

HOST = "127.0.0.1"
RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "smollm2-135m-instruct"
LITELLM_PIN = "1.82.6"  # the last release before the compromised 1.82.7 / 1.82.8 uploads
CHAT = "/v1/chat/completions"
MIX = {"a": 0.25, "b": 0.5, "c": 0.25}
PROMPTS = ["Name a colour.", "Say hi.", "One word for happy?", "What is 2+2?",
           "Name a fruit.", "Give me a short fact about the moon.", "Name a city."]
CLASSES = {"a": "(a) min-tier regional", "b": "(b) auto, prefers regional",
           "c": "(c) async, min-tier regional"}


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (every value reported was observed)."""
    v = sorted(values)
    return v[min(max(math.ceil(q / 100 * len(v)) - 1, 0), len(v) - 1)] if v else math.nan


class LoopbackGuard:
    """Refuses, and records, every connection or name lookup made by this process that
    is not loopback, so LiteLLM cannot reach the internet while it is measured."""

    def __init__(self) -> None:
        self.blocked: list[str] = []

    @staticmethod
    def loopback(host: Any) -> bool:
        host = host.decode(errors="replace") if isinstance(host, bytes) else host
        try:
            return host in (None, "localhost") or ipaddress.ip_address(
                str(host).split("%")[0]).is_loopback
        except ValueError:
            return False

    def install(self) -> None:
        guard, real_gai = self, socket.getaddrinfo

        def guarded(real: Callable[..., Any]) -> Callable[..., Any]:
            def connect(sock: socket.socket, address: Any) -> Any:
                if isinstance(address, tuple) and not guard.loopback(address[0]):
                    guard.blocked.append(str(address[0]))
                    raise OSError(101, f"fault.py allows loopback only, not {address[0]}")
                return real(sock, address)
            return connect

        def getaddrinfo(host: Any, *args: Any, **kw: Any) -> Any:
            if not guard.loopback(host):
                guard.blocked.append(str(host))
                raise socket.gaierror(socket.EAI_NONAME, f"fault.py: no lookup of {host}")
            return real_gai(host, *args, **kw)

        socket.socket.connect = guarded(socket.socket.connect)  # type: ignore[method-assign]
        socket.socket.connect_ex = guarded(socket.socket.connect_ex)  # type: ignore[method-assign]
        socket.getaddrinfo = getaddrinfo


# -- the two nodes ------------------------------------------------------------------------


def write_configs(workdir: Path, pa: int, pb: int, args: argparse.Namespace) -> tuple[Path, Path]:
    engine = {"n_ctx": args.n_ctx, "n_threads": args.threads}
    local = [{"engine": "llamacpp", "model": MODEL}]
    b = {"node": {"name": "regional-1", "tier": "regional"}, "engine": engine,
         "tiers": [{"name": "regional", "endpoints": local, "clearance": "phi"}],
         "routing": {"jobs_path": str(workdir / "b-jobs.sqlite")}}
    a = {"node": {"name": "device-1", "tier": "device"}, "engine": engine,
         "tiers": [{"name": "device", "endpoints": local, "clearance": "phi",
                    "cost_per_1k_tokens": 1.0},
                   {"name": "regional", "endpoints": [{"url": f"http://{HOST}:{pb}/v1"}],
                    "clearance": "internal", "cost_per_1k_tokens": 0.2}],
         "routing": {"cascade": {"enabled": False},
                     "health": {"probe_interval_s": args.probe_interval},
                     "jobs_path": str(workdir / "a-jobs.sqlite")}}
    paths = workdir / "a.yaml", workdir / "b.yaml"
    for path, cfg in zip(paths, (a, b), strict=True):
        path.write_text(json.dumps(cfg, indent=1))  # JSON is YAML
    return paths


class NodeProc:
    """One ``edgewise serve`` subprocess that can be crashed and started again."""

    def __init__(self, name: str, config: Path, port: int, log: Path) -> None:
        self.name, self.config, self.log = name, config, log
        self.port, self.url = port, f"http://{HOST}:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = Path(sys.executable).with_name("edgewise")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "edgewise"]
        cmd += ["serve", "--config", str(self.config), "--host", HOST, "--port",
                str(self.port), "--log-level", "warning"]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)

    async def ready(self, timeout: float = 180) -> float:
        """Wait for ``/readyz`` 200. Returns for how long before that ``GET /v1/models``,
        what A's health probe asks, already said 200 (polled every 0.05 s)."""
        deadline, early = time.monotonic() + timeout, None
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as http:
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"node {self.name} exited ({self.proc.returncode}):\n"
                                       + self.log.read_text(errors="replace")[-3000:])
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/readyz")).status_code == 200:
                        return 0.0 if early is None else time.monotonic() - early
                    if early is None and (await http.get("/v1/models")).status_code == 200:
                        early = time.monotonic()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"node {self.name} not ready in {timeout:g} s")
                await asyncio.sleep(0.05)

    def stop(self, crash: bool = False) -> None:
        """``crash``: SIGKILL, no drain, the kernel resets open connections. Otherwise
        SIGINT: drain and free the model (SIGKILL after 30 s)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if crash else signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- load and observation -----------------------------------------------------------------


@dataclass
class Req:
    cls: str  # a | b | c
    client: int
    t: float  # start, seconds since the phase began
    latency_s: float = 0.0
    status: int = 0  # HTTP status; 0: exception
    tier: str = ""  # x-edgewise-tier (200/202 only), or LiteLLM's answering deployment
    reason: str = ""  # x-edgewise-route-reason, the 202's reason, or the error message
    job: str | None = None
    tried_b: bool = False  # the request was sent to B, and B failed it

    @property
    def end(self) -> float:
        return self.t + self.latency_s


class Monitor:
    """Every 0.2 s A's breaker gauge for the regional tier (phase 1); every 1 s the load
    average and the cores used by processes other than this one and its nodes."""

    def __init__(self, a_url: str | None, t0: float) -> None:
        self.a_url, self.t0 = a_url, t0
        self.gauge: list[tuple[float, float | None]] = []
        self.cpu: list[dict[str, float]] = []
        self.stop = asyncio.Event()

    async def run(self) -> None:
        import psutil

        me = psutil.Process()

        def busy() -> tuple[float, float]:
            t = psutil.cpu_times()
            ours = 0.0
            for p in [me, *me.children(recursive=True)]:  # a crashed B's time drops out
                with contextlib.suppress(psutil.Error):
                    ours += sum(p.cpu_times()[:2])
            return t.user + t.nice + t.system + t.irq + t.softirq + t.steal, ours

        (b0, o0), c0 = busy(), time.perf_counter()
        async with httpx.AsyncClient(base_url=self.a_url or "http://unused", timeout=2) as h:
            while not self.stop.is_set():
                now = time.perf_counter()
                if self.a_url:
                    value = None
                    with contextlib.suppress(httpx.HTTPError):
                        value = _breaker_gauge((await h.get("/metrics")).text)
                    self.gauge.append((now - self.t0, value))
                if now - c0 >= 1.0:
                    (b1, o1), dt = busy(), now - c0
                    self.cpu.append({"t": now - self.t0, "load1": os.getloadavg()[0],
                                     "foreign_cores": max(0.0, (b1 - b0) - (o1 - o0)) / dt})
                    (b0, o0), c0 = (b1, o1), now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), 0.2)

    def mean(self, key: str) -> float:
        return sum(c[key] for c in self.cpu) / len(self.cpu) if self.cpu else math.nan


def _breaker_gauge(text: str) -> float | None:
    for line in text.splitlines():
        if line.startswith("edgewise_breaker_open{") and 'tier="regional"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def _counters(text: str) -> dict[str, float]:
    keep = ("edgewise_failovers", "edgewise_tier_failures", "edgewise_async_jobs")
    return {m[1]: float(m[2]) for m in re.finditer(r"^(\S+) ([0-9.eE+-]+)$", text, re.M)
            if m[1].startswith(keep)}


async def fault_timeline(b: NodeProc, t0: float, args: argparse.Namespace,
                         events: dict[str, float]) -> None:
    await asyncio.sleep(max(0.0, t0 + args.kill_at - time.perf_counter()))
    b.stop(crash=True)
    events["kill"] = time.perf_counter() - t0
    _progress(f"  t={events['kill']:.1f} s: node B killed (SIGKILL)")
    await asyncio.sleep(max(0.0, t0 + args.restart_at - time.perf_counter()))
    b.start()
    events["restart"] = time.perf_counter() - t0
    events["b_models_ok_before_ready_s"] = await b.ready()
    events["b_ready"] = time.perf_counter() - t0
    _progress(f"  t={events['restart']:.1f} s: node B restarted, ready at "
              f"t={events['b_ready']:.1f} s")


def _messages(rng: random.Random) -> list[dict[str, str]]:
    return [{"role": "user", "content": rng.choice(PROMPTS)}]


async def edgewise_request(http: httpx.AsyncClient, req: Req, rng: random.Random,
                           max_tokens: int) -> None:
    headers = {"x-edgewise-min-tier": "regional"} if req.cls in "ac" else {}
    if req.cls == "c":
        headers["x-edgewise-async"] = "true"
    body = {"model": "auto", "messages": _messages(rng), "max_tokens": max_tokens,
            "temperature": 0.7, "seed": rng.getrandbits(31)}
    r = await http.post(CHAT, json=body, headers=headers)
    req.status = r.status_code
    if r.status_code in (200, 202):  # on errors the header is only the node's own tier
        req.tier = r.headers.get("x-edgewise-tier", "")
    req.reason = r.headers.get("x-edgewise-route-reason", "")
    if r.status_code == 202:
        req.job, req.reason = r.json()["id"], r.json().get("reason", "")
    elif r.status_code != 200:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            req.reason = str(r.json()["error"]["message"])
    # "device after tier 'regional' endpoint http://…: unreachable (…)" and
    # "no eligible tier could answer: tier 'regional' endpoint http://…" name a try at B;
    # "skipped regional (breaker open …)" does not.
    req.tried_b = "endpoint http" in req.reason


Send = Callable[[Req, random.Random], Awaitable[None]]


async def run_clients(send: Send, args: argparse.Namespace, t0: float) -> list[Req]:
    """``--clients`` loops until the deadline, each starting a request at most every
    ``--pace`` s; the same seeds give the same classes and prompts in both phases."""
    out: list[Req] = []

    async def client(idx: int) -> None:
        rng = random.Random(args.seed * 1000 + idx)
        while (now := time.perf_counter()) < t0 + args.duration:
            req = Req(rng.choices(list(MIX), weights=list(MIX.values()))[0], idx, now - t0)
            try:
                await asyncio.wait_for(send(req, rng), 120)
            except Exception as exc:  # every failure is recorded; the load goes on
                req.status = int(getattr(exc, "status_code", 0) or 0)
                req.reason = f"{type(exc).__name__}: {str(exc)[:300]}"
            req.latency_s = time.perf_counter() - now
            out.append(req)
            await asyncio.sleep(max(0.0, now + args.pace - time.perf_counter()))

    await asyncio.gather(*(client(i) for i in range(args.clients)))
    return sorted(out, key=lambda r: r.t)


async def poll_jobs(http: httpx.AsyncClient, ids: list[str], wait_s: float
                    ) -> dict[str, dict[str, Any]]:
    jobs: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + wait_s
    while True:
        for jid in ids:
            if jobs.get(jid, {}).get("status") not in ("done", "failed"):
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    r = await http.get(f"/v1/edgewise/jobs/{jid}")
                    jobs[jid] = {k: v for k, v in r.json().items() if k != "result"}
        if time.monotonic() > deadline or all(
                jobs.get(j, {}).get("status") in ("done", "failed") for j in ids):
            return jobs
        await asyncio.sleep(1.0)


async def phase(args: argparse.Namespace, b: NodeProc, send: Send, a_url: str | None
                ) -> dict[str, Any]:
    """Warm up, then load + kill/restart B; the common part of both phases."""
    warm = random.Random(-1)
    for cls in "bbac":  # first-touch costs (connections, imports, pages) are not measured
        await send(Req(cls, -1, 0.0), warm)
    t0 = time.perf_counter()
    events: dict[str, float] = {}
    mon = Monitor(a_url, t0)
    mon_task = asyncio.create_task(mon.run())
    fault = asyncio.create_task(fault_timeline(b, t0, args, events))
    reqs = await run_clients(send, args, t0)
    await fault
    mon.stop.set()
    await mon_task
    return {"t0_wall": time.time() - (time.perf_counter() - t0), "events": events,
            "requests": reqs, "gauge": mon.gauge, "cpu": mon.cpu,
            "foreign_cores": mon.mean("foreign_cores"), "load1": mon.mean("load1")}


async def phase_edgewise(args: argparse.Namespace, a: NodeProc, b: NodeProc) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=args.clients + 4)
    async with httpx.AsyncClient(base_url=a.url, timeout=60, limits=limits) as http:

        async def send(req: Req, rng: random.Random) -> None:
            await edgewise_request(http, req, rng, args.max_tokens)

        before = _counters((await http.get("/metrics")).text)
        p = await phase(args, b, send, a.url)
        _progress(f"  load done: {len(p['requests'])} requests; polling async jobs")
        ids = [r.job for r in p["requests"] if r.job]
        p["jobs"] = await poll_jobs(http, ids, args.job_wait)
        after = _counters((await http.get("/metrics")).text)
    p["metrics_delta"] = {k: v - before.get(k, 0.0) for k, v in after.items()}
    return p


def litellm_router(a: NodeProc, b: NodeProc, args: argparse.Namespace) -> Any:
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before the import reads it
    os.environ["LITELLM_TELEMETRY"] = "False"
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    litellm.success_callback, litellm.failure_callback, litellm.callbacks = [], [], []
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
        logging.getLogger(name).setLevel(logging.CRITICAL)

    def deployment(group: str, model: str, url: str) -> dict[str, Any]:
        return {"model_name": group, "model_info": {"id": group},
                "litellm_params": {"model": f"openai/{model}", "api_base": f"{url}/v1",
                                   "api_key": "unused"}}

    return litellm.Router(
        model_list=[deployment("regional", "auto", b.url),
                    deployment("regional-only", "auto", b.url),
                    deployment("device", "device", a.url)],
        fallbacks=[{"regional": ["device"]}], num_retries=0, allowed_fails=3,
        cooldown_time=args.probe_interval, timeout=60)


async def phase_litellm(args: argparse.Namespace, a: NodeProc, b: NodeProc,
                        guard: LoopbackGuard) -> dict[str, Any]:
    import importlib.metadata

    router = litellm_router(a, b, args)

    async def send(req: Req, rng: random.Random) -> None:
        group = "regional" if req.cls == "b" else "regional-only"
        resp = await router.acompletion(model=group, messages=_messages(rng),
                                        max_tokens=args.max_tokens, temperature=0.7,
                                        seed=rng.getrandbits(31))
        hidden = getattr(resp, "_hidden_params", None) or {}
        answered = str(hidden.get("model_id", "?"))
        req.status, req.tier = 200, "device" if answered == "device" else "regional"
        tried = (hidden.get("additional_headers") or {}).get("x-litellm-attempted-fallbacks")
        req.tried_b = bool(tried)  # it went to B first and fell back

    p = await phase(args, b, send, None)
    for r in p["requests"]:  # an error of a B-only request is an attempt on B too
        r.tried_b = r.tried_b or (r.status != 200 and r.cls != "b")
    p["version"] = importlib.metadata.version("litellm")
    p["blocked_non_loopback"] = list(guard.blocked)
    return p


# -- summaries and tables -----------------------------------------------------------------


def _lat(reqs: list[Req]) -> dict[str, float]:
    v = [r.latency_s for r in reqs]
    return {"n": len(v), "p50_s": _pct(v, 50), "p95_s": _pct(v, 95)}


def summarize(p: dict[str, Any], probe: float) -> dict[str, Any]:
    """Per class outcomes, breaker and recovery times, class (b) latency by window."""
    ev, reqs, gauge = p["events"], p["requests"], p.get("gauge") or []
    kill, restart, ready = ev["kill"], ev["restart"], ev["b_ready"]
    t_open = next((t for t, v in gauge if t >= kill and v == 1), None)
    t_closed = next((t for t, v in gauge if t >= restart and v == 0), None)
    back = max(ready, t_closed or ready)  # B can answer and A knows it

    def outage(r: Req) -> bool:
        return r.t < back and r.end > kill

    per_class, failures = {}, []
    for cls in CLASSES:
        rs = [r for r in reqs if r.cls == cls]
        # Expected while B is down: (a) 503 with a reason; LiteLLM: any error of a B-only
        # request (it has no async queue, so (c) gets one too).
        expected = [r for r in rs if cls != "b" and outage(r) and r.status != 200
                    and ((r.status == 503 and cls == "a") or "version" in p)]
        bad = [r for r in rs if r.status != 200 and r not in expected
               and not (r.status == 202 and cls == "c")]
        failures += [asdict(r) for r in bad]
        reasons: dict[str, int] = {}
        for r in expected:
            key = re.sub(r":\d{2,5}\b", ":PB", r.reason)[:200]
            reasons[key] = reasons.get(key, 0) + 1
        per_class[cls] = {
            "requests": len(rs), "ok_200": sum(r.status == 200 for r in rs),
            "by_regional": sum(r.status == 200 and r.tier == "regional" for r in rs),
            "by_device": sum(r.status == 200 and r.tier == "device" for r in rs),
            "queued_202": sum(r.status == 202 for r in rs),
            "queued_202_while_up": sum(r.status == 202 and not outage(r) for r in rs),
            "no_eligible_tier": len(expected), "failures": len(bad), "reasons": reasons}
    tried = [r for r in reqs if outage(r) and r.tried_b]
    skipped = [r for r in reqs if r.t >= kill and "breaker open" in r.reason]
    bs = [r for r in reqs if r.cls == "b" and r.status == 200]
    first_back = next((r.t for r in bs if r.t >= ready and r.tier == "regional"), None)
    after_kill = [r for r in bs if kill <= r.t < back]
    s: dict[str, Any] = {
        "events": ev, "probe_interval_s": probe, "outage_end": back, "per_class": per_class,
        "client_failures": failures,
        "breaker_open_after_kill_s": None if t_open is None else t_open - kill,
        "breaker_open_within_one_probe": t_open is not None and t_open - kill <= probe + 0.25,
        "breaker_closed_after_b_ready_s": None if t_closed is None else t_closed - ready,
        "first_skip_after_kill_s": skipped[0].t - kill if skipped else None,
        "sent_to_b_while_down": {"all": len(tried),
                                 "b": sum(r.cls == "b" for r in tried),
                                 "b_of": sum(r.cls == "b" and outage(r) for r in reqs),
                                 "while_b_loading": sum(restart <= r.t < ready for r in tried),
                                 "start_s_after_kill": [round(r.t - kill, 2) for r in tried]},
        "first_regional_b_after_ready_s": None if first_back is None else first_back - ready,
        "latency_b": {"before": _lat([r for r in bs if r.end < kill]),
                      "in_flight_at_kill": _lat([r for r in bs if r.t < kill <= r.end]),
                      "first_3_after_kill": [round(r.latency_s, 2) for r in after_kill[:3]],
                      "down_steady": _lat([r for r in bs if kill + probe <= r.t < restart]),
                      "after": _lat([r for r in bs if r.t >= back])},
        "foreign_cores": p["foreign_cores"], "load1": p["load1"],
    }
    if "jobs" in p:  # edgewise only
        jobs = list(p["jobs"].values())
        state = [j.get("status") for j in jobs]
        done = [j for j in jobs if j.get("status") == "done"]
        s["jobs"] = {"queued": len(jobs), "done": len(done), "failed": state.count("failed"),
                     "pending": state.count("pending") + state.count("running"),
                     "done_by_regional": sum(j.get("tier") == "regional" for j in done),
                     "max_attempts": max((j.get("attempts", 0) for j in jobs), default=0),
                     "last_done_after_b_ready_s": max((j["updated_at"] - p["t0_wall"] - ready
                                                       for j in done), default=None)}
        s["metrics_delta"] = p["metrics_delta"]
    return s


def _s(x: float | None) -> str:
    return "—" if x is None or math.isnan(x) else f"{x:.2f} s"


def _lat_cell(w: dict[str, float]) -> str:
    return "—" if not w["n"] else f"{w['p50_s']:.2f} / {w['p95_s']:.2f} s (n={w['n']})"


def table_classes(s: dict[str, Any], who: str) -> str:
    lines = [f"| {who}: class | requests | 200 (regional / device) | 202 queued | "
             "no eligible tier while B down (expected) | client-visible failures (target 0) |",
             "|---|---|---|---|---|---|"]
    for cls, c in s["per_class"].items():
        lines.append(f"| {CLASSES[cls]} | {c['requests']} | {c['ok_200']} ({c['by_regional']}"
                     f" / {c['by_device']}) | {c['queued_202']} | {c['no_eligible_tier']} | "
                     f"{c['failures']} |")
    reasons = {k: v for c in s["per_class"].values() for k, v in c["reasons"].items()}
    if reasons:
        lines += ["", f"{who}: answers to requests with no eligible tier while B was down:", ""]
        lines += [f"* {v} × `{k}`" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])]
    return "\n".join(lines)


def table_timeline(s: dict[str, Any]) -> str:
    ev, probe, sent = s["events"], s["probe_interval_s"], s["sent_to_b_while_down"]
    j, m = s["jobs"], s["metrics_delta"]
    tier_failures = m.get('edgewise_tier_failures_total{tier="regional"}', 0)
    met = "met" if s["breaker_open_within_one_probe"] else "MISSED"
    closed = s["breaker_closed_after_b_ready_s"]
    rows = [
        ("kill / restart / B ready (s since load start)",
         f"{ev['kill']:.1f} / {ev['restart']:.1f} / {ev['b_ready']:.1f}"),
        ("kill → breaker gauge 1 (scraped every 0.2 s)",
         f"{_s(s['breaker_open_after_kill_s'])} (target ≤ probe interval {probe:g} s: {met})"),
        ("kill → first request routed past B (`skipped regional (breaker open`)",
         _s(s["first_skip_after_kill_s"])),
        ("requests A sent to B that B failed (start, s after kill; < 0: in flight)",
         f"{sent['all']}: {sent['start_s_after_kill']}"),
        ("B restarting: `GET /v1/models` (A's probe) 200 while `/readyz` 503",
         f"for {_s(ev['b_models_ok_before_ready_s'])}"),
        ("B ready → breaker gauge 0" + (" (< 0: closed before B could answer)"
                                        if closed is not None and closed < 0 else ""),
         _s(closed)),
        ("B ready → first (b) answered by regional", _s(s["first_regional_b_after_ready_s"])),
        ("`edgewise_failovers_total` Δ", f"{m.get('edgewise_failovers_total', 0):g}"),
        ("`edgewise_tier_failures_total{tier=\"regional\"}` Δ",
         f"{tier_failures:g}"),
        ("async jobs queued / done (by regional) / pending / failed",
         f"{j['queued']} / {j['done']} ({j['done_by_regional']}) / {j['pending']} / "
         f"{j['failed']}"),
        ("last job done, after B ready", _s(j["last_done_after_b_ready_s"])),
    ]
    lines = ["| timeline, node A's view | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    if ev["b_models_ok_before_ready_s"] > 0:
        lines += ["", "Finding: a restarting node answers `GET /v1/models` with 200 and an empty "
                  "list before its model is loaded; A's probe (`RemoteEndpoint.probe`) counts "
                  "that as healthy, so its breaker can close while B still answers 503. In "
                  f"this run the breaker closed {_s(closed)} after B was ready (< 0: before) "
                  f"and {sent['while_b_loading']} request(s) were sent to B while it loaded."]
    return "\n".join(lines)


def table_side_by_side(e: dict[str, Any], ll: dict[str, Any] | None, skip: str | None) -> str:
    def col(s: dict[str, Any]) -> list[str]:
        b, w, sent = s["per_class"]["b"], s["latency_b"], s["sent_to_b_while_down"]
        lost = s["per_class"]["c"]["no_eligible_tier"]
        return [str(b["requests"]), str(b["failures"]),
                f"{b['by_regional']} / {b['by_device']}", _lat_cell(w["before"]),
                _lat_cell(w["in_flight_at_kill"]), str(w["first_3_after_kill"]),
                _lat_cell(w["down_steady"]), _lat_cell(w["after"]),
                f"{sent['b']} of {sent['b_of']}", _s(s["first_regional_b_after_ready_s"]),
                f"{s['per_class']['c']['queued_202']} queued, "
                f"{s['jobs']['done_by_regional']} delivered" if "jobs" in s
                else f"{lost} errors (no store-and-forward)"]

    names = ["(b) requests", "(b) client-visible errors (target 0)",
             "(b) answered by regional / device", "(b) latency p50 / p95 before the kill",
             "(b) in flight at the kill", "(b) first 3 started after the kill (s)",
             "(b) steady state while down (from kill + 1 probe interval)",
             "(b) after the outage", "(b) sent to B first while it was down",
             "B ready → first (b) answer from regional", "(c) async while B was down"]
    right = col(ll) if ll else [skip or "—"] * len(names)
    lines = ["| | edgewise (node A) | LiteLLM Router |", "|---|---|---|"]
    lines += [f"| {n} | {x} | {y} |" for n, x, y in zip(names, col(e), right, strict=True)]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    phases = [(k, result[k]) for k in ("edgewise", "litellm") if "requests" in result[k]]
    fig, axes = plt.subplots(len(phases), 1, figsize=(10, 3.6 * len(phases)), squeeze=False)
    colors = {"regional": "tab:blue", "device": "tab:orange", "queued": "tab:green"}
    for ax, (name, p) in zip(axes[:, 0], phases, strict=True):
        for r in p["requests"]:
            ok = r["status"] in (200, 202)
            ax.scatter(r["t"], r["latency_s"], s=14 if r["cls"] == "b" else 6,
                       marker="o" if ok else "x",
                       color=colors.get(r["tier"], "tab:red") if ok else "tab:red")
        for key, color, style in (("kill", "r", "--"), ("restart", "g", "--"),
                                  ("b_ready", "g", ":")):
            ax.axvline(p["events"][key], color=color, linestyle=style, label=key)
        if p.get("gauge"):
            ax2 = ax.twinx()
            ax2.step([t for t, _ in p["gauge"]], [v or 0 for _, v in p["gauge"]],
                     color="k", lw=0.8, where="post")
            ax2.set(ylabel="A's breaker for B open", ylim=(-0.05, 4))
        ax.set(xlabel="s since load start", ylabel="latency (s)")
        ax.set_title(f"{name}: blue regional, orange device, green queued, red x no answer "
                     "(large dots: class b)", fontsize=9)
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


# -- driver -------------------------------------------------------------------------------


async def run(args: argparse.Namespace, workdir: Path, guard: LoopbackGuard) -> dict[str, Any]:
    pa, pb = free_port(), free_port()
    cfg_a, cfg_b = write_configs(workdir, pa, pb, args)
    b = NodeProc("B", cfg_b, pb, workdir / "node-b.log")
    a = NodeProc("A", cfg_a, pa, workdir / "node-a.log")
    out: dict[str, Any] = {"ports": {"a": pa, "b": pb}, "litellm_skipped": (
        "skipped (--skip-litellm)" if args.skip_litellm else None)}
    try:
        b.start()
        a.start()
        await asyncio.gather(b.ready(), a.ready())
        await asyncio.sleep(2 * args.probe_interval)  # A's probes have seen B up
        _progress(f"phase 1: edgewise, {args.duration:g} s, {args.clients} clients")
        out["edgewise"] = await phase_edgewise(args, a, b)
        try:
            if not args.skip_litellm:
                _progress("phase 2: LiteLLM Router, same clients and timeline")
                out["litellm"] = await phase_litellm(args, a, b, guard)
        except Exception as exc:  # report it; phase 1's results stand
            out["litellm_skipped"] = f"failed: {type(exc).__name__}: {exc}"[:500]
            _progress(f"LiteLLM {out['litellm_skipped']}")
    finally:
        b.stop()
        a.stop()
        out["node_logs_tail"] = {n.name: n.log.read_text(errors="replace")[-2000:]
                                 for n in (a, b) if n.log.exists()}
    return out


def machine_info() -> dict[str, Any]:
    import edgewise

    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            "cpu_count": os.cpu_count(), "cpu_model": cpu, "platform": platform.platform(),
            "python": platform.python_version(), "edgewise": edgewise.__version__,
            "loadavg_start": os.getloadavg()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    for flag, kind, default, text in (
            ("--duration", float, 60.0, "load seconds per phase"),
            ("--kill-at", float, 20.0, "SIGKILL node B at this second"),
            ("--restart-at", float, 40.0, "start node B again at this second"),
            ("--clients", int, 3, "concurrent clients"),
            ("--pace", float, 0.5, "each client starts a request at most every PACE s"),
            ("--max-tokens", int, 16, "per request"), ("--n-ctx", int, 1024, "per node"),
            ("--threads", int, 1, "llama.cpp threads per node"),
            ("--probe-interval", float, 1.0, "A's routing.health.probe_interval_s"),
            ("--job-wait", float, 90.0, "longest wait for async jobs after the load"),
            ("--seed", int, 0, "client RNG seed")):
        p.add_argument(flag, type=kind, default=default, help=f"{text} (default {default})")
    p.add_argument("--skip-litellm", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    args = p.parse_args(argv)
    if not 0 < args.kill_at < args.restart_at < args.duration:
        p.error("need 0 < --kill-at < --restart-at < --duration")
    if args.clients < 1 or args.pace <= 0:
        p.error("--clients must be >= 1 and --pace > 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    guard = LoopbackGuard()
    guard.install()
    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="edgewise-fault-") as tmp:
        raw = asyncio.run(run(args, Path(tmp), guard))
    info["loadavg_end"] = os.getloadavg()
    phases = {k: raw[k] for k in ("edgewise", "litellm") if k in raw}
    sums = {k: summarize(p, args.probe_interval) for k, p in phases.items()}
    s_e, s_l, skip = sums["edgewise"], sums.get("litellm"), raw["litellm_skipped"]
    ll_note = f"LiteLLM: {skip}."
    if s_l:
        blocked = s_l["blocked_non_loopback"] = raw["litellm"]["blocked_non_loopback"]
        s_l["version"] = raw["litellm"]["version"]
        ll_note = (f"LiteLLM {s_l['version']} (pinned to {LITELLM_PIN}); connections or "
                   f"lookups to anything but loopback refused in this process: {len(blocked)}"
                   f" {sorted(set(blocked))}.")
    tables = ["### edgewise: node A while its regional tier (node B) crashes\n\n"
              + table_classes(s_e, "edgewise") + "\n\n" + table_timeline(s_e)]
    if s_l:
        tables.append("### LiteLLM Router, same clients and timeline\n\n"
                      + table_classes(s_l, "LiteLLM"))
    tables += ["### Side by side\n\n" + table_side_by_side(s_e, s_l, skip) + "\n\n" + ll_note,
               f"Shared machine: {info['cpu_count']} × {info['cpu_model']}; load average "
               f"{info['loadavg_start'][0]:.2f} → {info['loadavg_end'][0]:.2f}; other "
               "processes used " + " and ".join(f"{s['foreign_cores']:.2f} cores ({k})"
                                                for k, s in sums.items())
               + " on average. Latencies are inflated by whatever else runs; failures, "
               "deliveries and breaker timing against the probe interval are what count."]
    print("\n\n".join(tables) + "\n", flush=True)
    result = {"machine": info, "model": MODEL, "ports": raw["ports"],
              "settings": {k: str(v) if isinstance(v, Path) else v
                           for k, v in vars(args).items()},
              "litellm": {"skipped": skip}, "node_logs_tail": raw["node_logs_tail"]}
    for k, p in phases.items():
        result[k] = {**sums[k], **{x: p[x] for x in ("gauge", "cpu") if x in p},
                     "jobs_raw": p.get("jobs"),
                     "requests": [asdict(r) for r in p["requests"]]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fault.md").write_text(
        f"## edgewise fault test\n\n{info['timestamp']} · {info['cpu_count']} × "
        f"{info['cpu_model']} · Python {info['python']} · {MODEL}\n\n"
        f"`{' '.join(['.venv/bin/python', 'bench/fault.py', *sys.argv[1:]])}`\n\n"
        + "\n\n".join(tables) + "\n")
    (args.out / "fault.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    if plot(result, args.out / "fault.png"):
        _progress(f"wrote {args.out / 'fault.png'}")
    _progress(f"wrote {args.out / 'fault.md'} and {args.out / 'fault.json'}")


if __name__ == "__main__":
    main()
