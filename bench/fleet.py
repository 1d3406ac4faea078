"""Fleet benchmark: the control plane and mutual TLS between real node processes.

Run by hand (it is not a test; timings are never asserted)::

    .venv/bin/python bench/fleet.py                    # ~12 min on 2 idle cores
    .venv/bin/python bench/fleet.py --quick            # smoke run, ~5 min
    .venv/bin/python bench/fleet.py --only mtls heartbeats

Everything runs as separate processes on 127.0.0.1 (``bench/fleet_procs.py``): each
section creates a fleet with ``edgewise control init`` + ``control serve``, enrols nodes
with ``control token create`` + ``edgewise join`` and runs them with ``edgewise serve``
(fake engine, privacy guard off: the subject is the control plane and mTLS, not the
model; ``engine.kind: fake`` has no per-token delay setting, so a chat costs the fake's
own ~1 ms of numpy), each with its own config, state directory and log under a
temporary directory.
Sections (issue 11, "Must show"):

``fleet``      control plane + device, gateway and cloud nodes, every node serving HTTPS
               with its fleet certificate. Device ladder device → gateway (``peer:
               tier:gateway``) → cloud (``tier:cloud``); gateway's gateway → cloud.
               Gateway and cloud require client certificates and allow only lower tiers.
               Requests to each tier (``x-edgewise-min-tier``), answered-by from
               ``x-edgewise-tier``; and what mTLS refuses (no certificate, wrong identity,
               a tier not allowed).
``revoke``     20 req/s from the device to the gateway tier; ``control revoke`` the
               device; time until the gateway refuses it (the deny list travels with
               heartbeats, ``--heartbeat-s``, default 10 as in production).
``rotation``   device → gateway at 20 req/s (Poisson arrivals, seeded; one in ten on a new
               connection) for ``--rotation-s`` while certificates of ``--cert-hours``
               renew; failed requests, renewals (serials on disk, node logs), and the
               device→gateway connections seen (new handshakes).
``mtls``       the same node app twice, HTTPS with a client certificate vs plain HTTP;
               per-request latency with keep-alive and with a new connection per
               request, in alternating rounds so both see the same machine load.
``heartbeats`` ``--sim-nodes`` identities enrolled through the HTTP API, each
               heartbeating once per second over its own mTLS connection for
               ``--heartbeat-load-s``, on SQLite and on PostgreSQL (a real server started
               here); latency, errors, CPU of the control plane, of PostgreSQL and of
               the load generator (it shares the cores), and RSS.
``page``       the fleet page (``GET /`` with an admin token) with those nodes, during
               the second half of the heartbeat load and idle after it.

Outputs: Markdown tables on stdout, ``bench/results/fleet.md`` and ``fleet.json``. A run
with ``--only`` replaces those sections in the existing files and keeps the others; each
section records its own time, command and settings.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]

from fleet_procs import (
    CHAT,
    ControlProc,
    CpuWindow,
    NodeProc,
    Postgres,
    Procs,
    SNITransport,
    bench_root,
    cert_info,
    client_ssl,
    enrol,
    heartbeat_body,
    open_loop,
    percentiles,
    progress,
    rss_mb,
    url_tier,
)
from fleet_report import SECTIONS, TABLES, write_results

RESULTS = Path(__file__).resolve().parent / "results"
TLS_UPPER = {"enabled": True, "client_certs": "required"}  # gateway, cloud: fleet peers only


# -- topologies ----------------------------------------------------------------------------

def three_nodes(procs: Procs, control: ControlProc, *, cloud: bool = True) -> dict[str, NodeProc]:
    """device → gateway → cloud (``cloud=False``: device → gateway only)."""
    nodes: dict[str, NodeProc] = {}
    gw_tiers: list[dict[str, Any]] = [{"name": "gateway", "endpoints": [{"engine": "fake"}]}]
    if cloud:
        nodes["cloud"] = NodeProc(procs, control, "cloud-1", "cloud", config={"serving": {
            "tls": {**TLS_UPPER, "allow": ["tier:device", "tier:gateway"]}}})
        gw_tiers.append({"name": "cloud", "cost_per_1k_tokens": 1.0,
                         "endpoints": [url_tier(nodes["cloud"])]})
    nodes["gateway"] = NodeProc(procs, control, "gateway-1", "gateway", config={
        "serving": {"tls": {**TLS_UPPER, "allow": ["tier:device"]}}, "tiers": gw_tiers})
    dev_tiers = [{"name": "device", "endpoints": [{"engine": "fake"}]},
                 {"name": "gateway", "cost_per_1k_tokens": 0.1,
                  "endpoints": [url_tier(nodes["gateway"])]}]
    if cloud:
        dev_tiers.append({"name": "cloud", "cost_per_1k_tokens": 1.0,
                          "endpoints": [url_tier(nodes["cloud"])]})
    # The device serves applications: HTTPS, client certificates optional.
    nodes["device"] = NodeProc(procs, control, "device-1", "device", config={
        "serving": {"tls": {"enabled": True, "client_certs": "optional"}}, "tiers": dev_tiers})
    return nodes


def _refused(fn: Any) -> str | None:
    """What went wrong calling ``fn`` (``None``: it worked)."""
    try:
        r = fn()
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {str(exc)[:120]}"
    return None if r.status_code == 200 else f"HTTP {r.status_code}: {r.text[:160]}"


# -- 1. fleet ---------------------------------------------------------------------------------

def section_fleet(args: argparse.Namespace, procs: Procs, root: Path) -> dict[str, Any]:
    control = ControlProc(procs, root / "fleet")
    nodes = three_nodes(procs, control)
    dev, gw, cloud = nodes["device"], nodes["gateway"], nodes["cloud"]
    paths = []
    with dev.client(timeout=30) as app_client, gw.client(as_node=dev.state, timeout=30) as as_dev:
        for label, client, header, want in (
                ("app → device", app_client, None, "device"),
                ("app → device → gateway", app_client, "gateway", "gateway"),
                ("app → device → cloud", app_client, "cloud", "cloud"),
                ("device-1 (its cert) → gateway → cloud", as_dev, "cloud", "cloud")):
            lat, tiers, statuses = [], Counter[str](), Counter[int]()
            for _ in range(args.fleet_requests):
                t = time.perf_counter()
                r = client.post("/v1/chat/completions", json=CHAT,
                                headers={"x-edgewise-min-tier": header} if header else {})
                lat.append(time.perf_counter() - t)
                statuses[r.status_code] += 1
                tiers[r.headers.get("x-edgewise-tier", "?")] += 1
            paths.append({"path": label, "expected_tier": want, "statuses": dict(statuses),
                          "answered_by": dict(tiers), "latency_ms": percentiles(lat),
                          "ok": statuses == Counter({200: args.fleet_requests})
                          and tiers == Counter({want: args.fleet_requests})})
    # What mutual TLS refuses, one attempt each.
    with gw.client(timeout=10) as no_cert, cloud.client(as_node=gw.state, timeout=10) as gw_ok:
        refusals = {
            "app without a certificate → gateway": _refused(lambda: no_cert.get("/v1/models")),
            "gateway-1 (tier gateway) → cloud (allowed)": _refused(lambda: gw_ok.get("/v1/models")),
        }
    # The gateway's address, the client expecting the cloud's name (a redirected peer).
    wrong = SNITransport(client_ssl(control.ca, dev.state), cloud.sni)
    with httpx.Client(base_url=gw.url, transport=wrong, timeout=10) as c:
        refusals["device-1 → gateway's port, expecting cloud-1"] = _refused(
            lambda: c.get("/v1/models"))
    with gw.client(as_node=cloud.state, timeout=10) as c:
        refusals["cloud-1 (tier cloud) → gateway (allows tier:device)"] = _refused(
            lambda: c.post("/v1/chat/completions", json=CHAT))
    expect_refused = {k: "allowed" not in k for k in refusals}
    listed = {n["name"]: {k: n[k] for k in ("tier", "status", "spiffe_id", "cert_not_after")}
              for n in control.nodes()}
    return {"paths": paths, "refusals": refusals, "nodes": listed,
            "checks_ok": all((v is not None) == expect_refused[k] for k, v in refusals.items()),
            "all_online": sorted(listed) == sorted(n.name for n in nodes.values())
            and all(v["status"] == "online" for v in listed.values())}


# -- 2. revoke ----------------------------------------------------------------------------------

def section_revoke(args: argparse.Namespace, procs: Procs, root: Path) -> dict[str, Any]:
    control = ControlProc(procs, root / "revoke", heartbeat_s=args.heartbeat_s)
    nodes = three_nodes(procs, control)
    dev = nodes["device"]
    marks: dict[str, float] = {}

    async def go() -> list[dict[str, Any]]:
        client = dev.async_client(timeout=30)
        t0 = time.perf_counter()

        async def revoke() -> None:
            await asyncio.sleep(args.revoke_after_s)
            marks["cli_start"] = time.perf_counter() - t0
            await asyncio.to_thread(control.cli, "revoke", dev.name)
            marks["revoked"] = time.perf_counter() - t0

        def stop(records: list[dict[str, Any]]) -> bool:
            if "revoked" not in marks:
                return False
            now = time.perf_counter() - t0
            failed = [r["done"] for r in records if r["status"] != 200]
            return now > marks["revoked"] + args.revoke_wait_s or \
                bool(failed and now > min(failed) + 2)

        task = asyncio.create_task(revoke())
        total = args.revoke_after_s + args.revoke_wait_s + 30
        arrivals = [i / args.rate for i in range(int(total * args.rate))]
        try:
            return await open_loop(client, arrivals, header="gateway", stop=stop)
        finally:
            await task
            await client.aclose()

    records = asyncio.run(go())
    t_rev = marks["revoked"]
    after = [r for r in records if r["done"] > marks["cli_start"]]
    not_gw = [r for r in after if not (r["status"] == 200 and r["tier"] == "gateway")]
    failed = [r for r in after if r["status"] != 200]
    first_refusal = min((r["done"] for r in not_gw), default=None)
    first_failure = min((r["done"] for r in failed), default=None)
    gw_after = sum(1 for r in after if r["tier"] == "gateway" and r["status"] == 200
                   and first_refusal is not None and r["sent"] > first_refusal)
    outcome = Counter(f"{r['status']} {r['tier']}" for r in records)
    return {
        "heartbeat_s": args.heartbeat_s, "rate": args.rate, "requests": len(records),
        "cli_start_s": marks["cli_start"], "revoked_s": t_rev,
        "cli_duration_s": t_rev - marks["cli_start"],
        "until_gateway_refuses_s": None if first_refusal is None else first_refusal - t_rev,
        "until_no_tier_serves_s": None if first_failure is None else first_failure - t_rev,
        "gateway_answers_after_refusal": gw_after,
        "before_revoke_ok": all(r["status"] == 200 and r["tier"] == "gateway"
                                for r in records if r["done"] < marks["cli_start"]),
        "outcomes": dict(outcome),
        "first_refusal_reason": next((r.get("error") or f"answered by {r['tier']}"
                                      for r in not_gw), None),
        "device_heartbeat_refused": dev.log_count("the control plane refuses this node") > 0,
        "timeline": [{k: r[k] for k in ("sent", "done", "status", "tier")} for r in records],
    }


# -- 3. rotation --------------------------------------------------------------------------------

def section_rotation(args: argparse.Namespace, procs: Procs, root: Path) -> dict[str, Any]:
    control = ControlProc(procs, root / "rotation", node_cert_hours=args.cert_hours,
                          heartbeat_s=args.rotation_heartbeat_s)
    nodes = three_nodes(procs, control, cloud=False)
    dev, gw = nodes["device"], nodes["gateway"]
    serials: dict[str, list[tuple[float, str]]] = {n.name: [] for n in nodes.values()}
    # Age of the old certificate when its successor appeared on disk: its issue time is
    # its expiry minus the configured lifetime (not_before is back-dated for clock skew).
    ages: dict[str, list[float]] = {n.name: [] for n in nodes.values()}
    expiry: dict[str, datetime] = {}
    lifetime = timedelta(hours=args.cert_hours)
    conns: set[int] = set()
    rng = random.Random(args.seed)
    arrivals, t = [], 0.0
    while (t := t + rng.expovariate(args.rate)) < args.rotation_s:
        arrivals.append(t)

    async def watch(t0: float) -> None:
        """Certificates on disk and device → gateway connections, twice a second."""
        dev_ps = psutil.Process(dev.proc.pid)
        while True:
            now = time.perf_counter() - t0
            for n in nodes.values():
                try:
                    s, not_after = cert_info(n.state / "node.pem")
                except (OSError, ValueError):  # caught mid-replacement: next sample
                    continue
                if not serials[n.name] or serials[n.name][-1][1] != s:
                    if serials[n.name]:
                        issued = expiry[n.name] - lifetime
                        ages[n.name].append((datetime.now(UTC) - issued).total_seconds())
                    serials[n.name].append((now, s))
                    expiry[n.name] = not_after
            for c in dev_ps.net_connections(kind="tcp"):
                if c.raddr and c.raddr.port == gw.port and c.status == psutil.CONN_ESTABLISHED:
                    conns.add(c.laddr.port)
            await asyncio.sleep(0.5)

    async def go() -> list[dict[str, Any]]:
        client = dev.async_client(timeout=30)
        watcher = asyncio.create_task(watch(time.perf_counter()))
        try:
            return await open_loop(client, arrivals, header="gateway", fresh_every=10)
        finally:
            watcher.cancel()
            await client.aclose()

    cpu = CpuWindow({"device": [dev.proc.pid], "gateway": [gw.proc.pid],
                     "control": [control.proc.pid], "bench": [os.getpid()]})
    records = asyncio.run(go())
    failed = [r for r in records if not (r["status"] == 200 and r["tier"] == "gateway")]
    return {
        "cert_hours": args.cert_hours, "cert_lifetime_s": args.cert_hours * 3600,
        "heartbeat_s": args.rotation_heartbeat_s, "duration_s": args.rotation_s,
        "rate": args.rate, "requests": len(records), "failed": len(failed),
        "failures": failed[:20], "latency_ms": percentiles([r["latency"] for r in records]),
        "fresh_connections_app_to_device": sum(1 for r in records if r["i"] % 10 == 0),
        "device_to_gateway_connections_seen": len(conns),
        "serials": serials,
        "renewals_on_disk": {k: len(v) - 1 for k, v in serials.items()},
        "renewed_at_age_s": ages,
        "renewals_logged": {n.name: n.log_count("certificate renewed") for n in nodes.values()},
        "cpu_cores": cpu.cores(),
    }


# -- 4. mtls ------------------------------------------------------------------------------------

def section_mtls(args: argparse.Namespace, procs: Procs, root: Path) -> dict[str, Any]:
    control = ControlProc(procs, root / "mtls")
    tls = NodeProc(procs, control, "mtls-tls", "edge", config={"serving": {"tls": TLS_UPPER}})
    plain = NodeProc(procs, control, "mtls-plain", "edge", config={})
    me = control.join("mtls-client", "app", root / "mtls" / "client" / "fleet")
    kinds = {"GET /v1/models": ("GET", "/v1/models", None, False),
             "chat, 1 token": ("POST", "/v1/chat/completions", {**CHAT, "max_tokens": 1}, False),
             "GET /v1/models, new connection": ("GET", "/v1/models", None, True)}
    sides = {"https+mTLS": tls.client(as_node=me, timeout=30),
             "http": plain.client(timeout=30)}
    samples: dict[str, dict[str, list[float]]] = {k: {s: [] for s in sides} for k in kinds}
    rounds: dict[str, list[float]] = {k: [] for k in kinds}  # per-round p50 differences

    def once(client: httpx.Client, kind: tuple[str, str, Any, bool]) -> float:
        method, path, body, fresh = kind
        t = time.perf_counter()
        r = client.request(method, path, json=body,
                           headers={"connection": "close"} if fresh else None)
        dt = time.perf_counter() - t
        if r.status_code != 200:
            raise RuntimeError(f"{path} answered {r.status_code}: {r.text[:200]}")
        return dt

    cpu = CpuWindow({"tls node": [tls.proc.pid], "plain node": [plain.proc.pid],
                     "bench": [os.getpid()]})
    try:
        for kind in kinds.values():  # warm-up (discarded)
            for c in sides.values():
                for _ in range(10):
                    once(c, kind)
        for rnd in range(args.mtls_rounds):
            order = list(sides) if rnd % 2 == 0 else list(reversed(sides))
            for name, kind in kinds.items():
                got = {}
                for side in order:
                    got[side] = [once(sides[side], kind) for _ in range(args.mtls_per_round)]
                    samples[name][side] += got[side]
                p50 = {s: sorted(v)[len(v) // 2] for s, v in got.items()}
                rounds[name].append((p50["https+mTLS"] - p50["http"]) * 1000)
    finally:
        for c in sides.values():
            c.close()
    out: dict[str, Any] = {"rounds": args.mtls_rounds, "per_round": args.mtls_per_round,
                           "cpu_cores": cpu.cores(), "kinds": {}}
    for name in kinds:
        st = {s: percentiles(v) for s, v in samples[name].items()}
        out["kinds"][name] = {"stats_ms": st, "delta_p50_ms": st["https+mTLS"]["p50"]
                              - st["http"]["p50"],
                              "paired_delta_p50_ms": sorted(rounds[name])[len(rounds[name]) // 2]}
    return out


# -- 5. heartbeats and 6. page ------------------------------------------------------------------

async def measure_page(control: ControlProc, admin: str, n: int) -> dict[str, Any]:
    """``n`` sequential ``GET /`` (after three discarded) with an admin bearer token."""
    lat, online, size = [], 0, 0
    async with httpx.AsyncClient(base_url=control.url, verify=client_ssl(control.ca),
                                 timeout=60, headers={"authorization": f"Bearer {admin}"}) as c:
        for i in range(n + 3):
            t = time.perf_counter()
            r = await c.get("/")
            dt = time.perf_counter() - t
            if r.status_code != 200:
                raise RuntimeError(f"fleet page answered {r.status_code}: {r.text[:200]}")
            if i == 0:
                online = r.text.count('<tr class="node status-online"')
            if i >= 3:
                lat.append(dt)
            size = len(r.content)
    return {"latency_ms": percentiles(lat), "html_bytes": size, "online_rows": online,
            "rows": r.text.count('<tr class="node ')}


async def heartbeat_load(control: ControlProc, dirs: list[Path], seconds: float,
                         interval: float, seed: int, pg: Postgres | None,
                         page: tuple[str, int] | None) -> dict[str, Any]:
    """Each identity heartbeats at ``t0 + offset + k * interval`` (offsets spread over
    one interval), one at a time per identity as a node agent does: a late answer delays
    that node's next heartbeat. ``page``: (admin token, n) — the fleet page is measured
    during the second half of the load too."""
    rng = random.Random(seed)
    clients = [httpx.AsyncClient(base_url=control.url, verify=client_ssl(control.ca, d),
                                 timeout=30) for d in dirs]
    lat: list[float] = []
    lag: list[float] = []
    loop_lag: list[float] = []
    errors: Counter[str] = Counter()
    rss: list[float] = []

    async def send(i: int, k: int) -> None:
        t = time.perf_counter()
        try:
            r = await clients[i].post("/v1/heartbeat", json=heartbeat_body(i, k, rng))
            if r.status_code != 200:
                errors[f"HTTP {r.status_code}"] += 1
        except httpx.HTTPError as exc:
            errors[type(exc).__name__] += 1
        if k > 0:
            lat.append(time.perf_counter() - t)

    try:
        sem = asyncio.Semaphore(16)  # warm-up: one heartbeat each, connections opened

        async def first(i: int) -> None:
            async with sem:
                await send(i, 0)
        await asyncio.gather(*(first(i) for i in range(len(clients))))
        errors.clear()
        if seconds <= 0:
            return {}
        groups = {"control": [control.proc.pid], "load generator": [os.getpid()]}
        if pg is not None:
            pm = psutil.Process(pg.postmaster_pid())
            groups["postgres"] = [pm.pid] + [c.pid for c in pm.children(recursive=True)]
        cpu = CpuWindow(groups)
        t0 = time.perf_counter() + 0.2

        async def node(i: int) -> None:
            k = 1
            while (at := t0 + (i / len(clients) + k - 1) * interval) < t0 + seconds:
                if (d := at - time.perf_counter()) > 0:
                    await asyncio.sleep(d)
                lag.append(time.perf_counter() - at)
                await send(i, k)
                k += 1

        async def sample() -> None:
            """Control plane RSS each second; the generator's own event-loop delay (a
            10 ms sleep's overshoot: large values mean the generator is the bottleneck)."""
            last_rss = 0.0
            while True:
                t = time.perf_counter()
                await asyncio.sleep(0.01)
                loop_lag.append(time.perf_counter() - t - 0.01)
                if t - last_rss >= 1:
                    rss.append(rss_mb(control.proc.pid))
                    last_rss = t

        async def page_later() -> dict[str, Any]:
            assert page is not None
            await asyncio.sleep(seconds / 2)
            return await measure_page(control, *page)
        sampler = asyncio.create_task(sample())
        paging = asyncio.create_task(page_later()) if page else None
        await asyncio.gather(*(node(i) for i in range(len(clients))))
        sampler.cancel()
        cores = cpu.cores()
        page_result = await paging if paging else None
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    return {"heartbeats": len(lat), "errors": dict(errors), "latency_ms": percentiles(lat),
            "send_lag_ms": percentiles(lag), "generator_loop_lag_ms": percentiles(loop_lag),
            "cpu_cores": cores, "control_rss_mb": {"max": max(rss), "end": rss[-1]},
            "rate_per_s": len(lat) / cores["wall_s"], "page_under_load": page_result}


def section_heartbeats(args: argparse.Namespace, procs: Procs, root: Path,
                       with_load: bool, with_page: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"heartbeats": {}, "page": {}}
    pg = Postgres(procs) if "postgres" in args.backends else None
    for backend in args.backends:
        with procs.scope():
            progress(f"heartbeats: {backend}")
            control = ControlProc(procs, root / f"hb-{backend}", heartbeat_s=args.hb_interval,
                                  database_url=pg.url() if backend == "postgres" and pg
                                  else None)
            admin = control.access_token("admin")
            t = time.perf_counter()
            dirs = enrol(control, admin, args.sim_nodes, root / f"hb-{backend}" / "sim")
            enrol_s = time.perf_counter() - t
            seconds = args.heartbeat_load_s if with_load else 0
            page = (admin, args.page_requests) if with_page else None
            hb = asyncio.run(heartbeat_load(control, dirs, seconds, args.hb_interval,
                                            args.seed, pg if backend == "postgres" else None,
                                            page))
            if with_load:
                out["heartbeats"][backend] = {**hb, "nodes": len(dirs), "enrol_s": enrol_s,
                                              "interval_s": args.hb_interval}
            if with_page:
                out["page"][backend] = {
                    "under heartbeat load": hb.get("page_under_load"),
                    "idle, after the load": asyncio.run(
                        measure_page(control, admin, args.page_requests))}
    return out


# -- the run --------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--quick", action="store_true", help="shorter sections (a smoke run)")
    for flag, kind, default, text in (
            ("--rate", float, 20.0, "req/s of the revoke and rotation loads"),
            ("--heartbeat-s", float, 10.0, "control plane heartbeat_s for revoke"),
            ("--revoke-after-s", float, 5.0, "load before the revoke"),
            ("--revoke-wait-s", float, 45.0, "longest wait for the refusal"),
            ("--cert-hours", float, 0.02, "node_cert_hours for rotation (0.02 h = 72 s)"),
            ("--rotation-heartbeat-s", float, 10.0, "heartbeat_s for rotation"),
            ("--rotation-s", float, 300.0, "rotation load duration (--quick: 60)"),
            ("--fleet-requests", int, 20, "requests per path in fleet (--quick: 5)"),
            ("--mtls-rounds", int, 20, "alternating rounds (--quick: 4)"),
            ("--mtls-per-round", int, 25, "requests per side, kind and round"),
            ("--sim-nodes", int, 200, "simulated nodes for heartbeats and page"),
            ("--hb-interval", float, 1.0, "seconds between one node's heartbeats"),
            ("--heartbeat-load-s", float, 60.0, "heartbeat load per backend (--quick: 15)"),
            ("--page-requests", int, 50, "fleet page requests (--quick: 20)"),
            ("--seed", int, 0, "seed of arrivals and heartbeat bodies")):
        p.add_argument(flag, type=kind, default=default, help=f"{text} (default {default})")
    p.add_argument("--backends", nargs="+", choices=("sqlite", "postgres"),
                   default=["sqlite", "postgres"])
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    args = p.parse_args(argv)
    if args.quick:
        explicit = set(a.split("=")[0] for a in (argv or sys.argv[1:]))
        for flag, value in (("--rotation-s", 60.0), ("--fleet-requests", 5),
                            ("--mtls-rounds", 4), ("--heartbeat-load-s", 15.0),
                            ("--page-requests", 20)):
            if flag not in explicit:
                setattr(args, flag[2:].replace("-", "_"), value)
    return args


def run_sections(args: argparse.Namespace, procs: Procs, root: Path) -> dict[str, Any]:
    done: dict[str, Any] = {}
    command = " ".join([".venv/bin/python", "bench/fleet.py", *sys.argv[1:]])
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}

    def stamp(name: str, result: dict[str, Any], started: float, load0: float) -> None:
        done[name] = {"result": result, "at": datetime.now(UTC).isoformat(timespec="seconds"),
                      "seconds": time.perf_counter() - started, "quick": args.quick,
                      "command": command, "settings": settings,
                      "loadavg": [load0, os.getloadavg()[0]]}
        print(f"\n### {TABLES[name][0]}\n\n{TABLES[name][1](result)}\n", flush=True)

    fns = {"fleet": section_fleet, "revoke": section_revoke, "rotation": section_rotation,
           "mtls": section_mtls}
    for name in ("fleet", "revoke", "rotation", "mtls"):
        if name in args.only:
            progress(f"section {name}")
            t, load0 = time.perf_counter(), os.getloadavg()[0]
            with procs.scope():
                stamp(name, fns[name](args, procs, root), t, load0)
    load, page = "heartbeats" in args.only, "page" in args.only
    if load or page:
        progress("section heartbeats/page")
        t, load0 = time.perf_counter(), os.getloadavg()[0]
        r = section_heartbeats(args, procs, root, load, page)
        for name in ("heartbeats", "page"):
            if name in args.only:
                stamp(name, r[name], t, load0)
    return done


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with bench_root("edgewise-fleet-bench-", keep=args.keep) as (procs, root):
        done = run_sections(args, procs, root)
    write_results(args.out, done)


if __name__ == "__main__":
    main()
