"""Tables and result files of ``bench/fleet.py``: one Markdown table per section, with
each target and whether it was met, and the JSON of every number.

``write_results`` merges: a run with ``--only`` replaces the sections it ran in
``fleet.json`` and keeps the others, and ``fleet.md`` is rebuilt from all of them (each
section carries its own time, command and load average, so a table never mixes runs).
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from fleet_procs import progress

__all__ = ["SECTIONS", "TABLES", "write_results"]

SECTIONS = ("fleet", "revoke", "rotation", "mtls", "heartbeats", "page")


def _mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def table_fleet(r: dict[str, Any]) -> str:
    rows = ["| path | requests | answered by (x-edgewise-tier) | p50 ms | p95 ms | target |",
            "|---|---|---|---|---|---|"]
    for p in r["paths"]:
        lat = p["latency_ms"]
        by = ", ".join(f"{k}: {v}" for k, v in p["answered_by"].items())
        rows.append(f"| {p['path']} | {lat['n']} (HTTP {p['statuses']}) | {by} | "
                    f"{lat['p50']:.1f} | {lat['p95']:.1f} | all 200 from {p['expected_tier']}: "
                    f"{_mark(p['ok'])} |")
    rows += ["", "| mutual TLS check | outcome |", "|---|---|"]
    rows += [f"| {k} | {v or 'served (200)'} |" for k, v in r["refusals"].items()]
    rows += ["", f"Refusals as expected: {_mark(r['checks_ok'])}. `edgewise control nodes`: "
             + ", ".join(f"{k} ({v['tier']}, {v['status']}, {v['spiffe_id']})"
                         for k, v in r["nodes"].items())
             + f" — all online: {_mark(r['all_online'])}."]
    return "\n".join(rows)


def table_revoke(r: dict[str, Any]) -> str:
    refuse, none = r["until_gateway_refuses_s"], r["until_no_tier_serves_s"]
    ok = refuse is not None and refuse < 30

    def fmt(v: float | None) -> str:
        return "not seen" if v is None else f"{v:.2f} s"
    return "\n".join([
        "| measure | value | target |", "|---|---|---|",
        f"| heartbeat_s (control.yaml) | {r['heartbeat_s']:g} | 10 (production default) |",
        f"| load | {r['rate']:g} req/s device → gateway, {r['requests']} requests | |",
        f"| all answered by the gateway before the revoke | {r['before_revoke_ok']} | yes |",
        f"| `edgewise control revoke` took | {r['cli_duration_s']:.2f} s | |",
        f"| revoke → gateway refuses the device | {fmt(refuse)} | < 30 s: {_mark(ok)} |",
        f"| revoke → no tier above device serves it (cloud too) | {fmt(none)} | < 30 s |",
        f"| gateway answers sent after its first refusal | {r['gateway_answers_after_refusal']}"
        " | 0 |",
        f"| device's own heartbeat refused (log) | {r['device_heartbeat_refused']} | yes |",
        "", f"First refusal: {r['first_refusal_reason']}. Outcomes (status, tier): "
        f"{r['outcomes']}. Times from the CLI's exit (the revocation is committed by then)."])


def table_rotation(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    ren = r["renewals_on_disk"]
    want = 2 if r["duration_s"] >= 120 else 1
    half, hb = r["cert_lifetime_s"] / 2, r["heartbeat_s"]
    ages = [a for v in r["renewed_at_age_s"].values() for a in v]
    # The agent checks at each heartbeat round: a renewal is due at half the lifetime and
    # happens at the next round, so at half the lifetime to + one heartbeat (± sampling).
    on_time = bool(ages) and all(half - 1 <= a <= half + hb + 1 for a in ages)
    return "\n".join([
        "| measure | value | target |", "|---|---|---|",
        f"| certificate lifetime | {r['cert_lifetime_s']:.0f} s (node_cert_hours "
        f"{r['cert_hours']:g}), heartbeat {r['heartbeat_s']:g} s | renews at half |",
        f"| load | {r['rate']:g} req/s (Poisson) device → gateway for {r['duration_s']:g} s: "
        f"{r['requests']} requests | |",
        f"| failed requests | {r['failed']} | 0: {_mark(r['failed'] == 0)} |",
        "| renewals (new serial on disk) | " + ", ".join(f"{k}: {v}" for k, v in ren.items())
        + f" | ≥ {want} per node: {_mark(min(ren.values()) >= want)} |",
        "| age of a certificate when it was renewed (min–max) | "
        + (f"{min(ages):.1f}–{max(ages):.1f} s" if ages else "—")
        + f" | half the lifetime ({half:.0f} s) to + one heartbeat: {_mark(on_time)} |",
        "| renewals logged (\"certificate renewed\") | "
        + ", ".join(f"{k}: {v}" for k, v in r["renewals_logged"].items()) + " | same |",
        f"| new app → device connections (handshakes on the device's current cert) | "
        f"{r['fresh_connections_app_to_device']} | |",
        f"| device → gateway connections seen (sampled every 0.5 s) | "
        f"{r['device_to_gateway_connections_seen']} | |",
        f"| latency p50 / p95 / p99 | {lat['p50']:.1f} / {lat['p95']:.1f} / "
        f"{lat['p99']:.1f} ms | |"])


def table_mtls(r: dict[str, Any]) -> str:
    rows = ["| request | side | n | p50 ms | p95 ms | p99 ms | Δ p50 (paired) | target |",
            "|---|---|---|---|---|---|---|---|"]
    for name, k in r["kinds"].items():
        reuse = "new connection" not in name
        for side, st in k["stats_ms"].items():
            delta = target = ""
            if side == "https+mTLS":
                delta = f"+{k['delta_p50_ms']:.2f} ms ({k['paired_delta_p50_ms']:+.2f})"
                target = f"≤ 5 ms: {_mark(k['delta_p50_ms'] <= 5)}" if reuse else \
                    "handshake cost"
            rows.append(f"| {name} | {side} | {st['n']} | {st['p50']:.2f} | {st['p95']:.2f} | "
                        f"{st['p99']:.2f} | {delta} | {target} |")
    cpu = r["cpu_cores"]
    rows.append(f"\n{r['rounds']} alternating rounds × {r['per_round']} requests per side and "
                "kind, after 10 warm-up requests each. CPU over the section (cores): "
                + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items() if k != "wall_s") + ".")
    return "\n".join(rows)


def table_heartbeats(r: dict[str, Any]) -> str:
    rows = ["| backend | nodes × rate | heartbeats | errors | p50 / p95 / p99 ms | CPU cores: "
            "control / postgres / load gen / others | control RSS MB | generator loop lag "
            "p99 ms | target |", "|---|---|---|---|---|---|---|---|---|"]
    for backend, h in r.items():
        lat, c = h["latency_ms"], h["cpu_cores"]
        ok = not h["errors"] and lat["p99"] < h["interval_s"] * 1000
        rows.append(
            f"| {backend} | {h['nodes']} × 1/{h['interval_s']:g} s | {h['heartbeats']} "
            f"({h['rate_per_s']:.0f}/s) | {sum(h['errors'].values())} {h['errors'] or ''} | "
            f"{lat['p50']:.1f} / {lat['p95']:.1f} / {lat['p99']:.1f} | {c['control']:.2f} / "
            f"{c.get('postgres', 0):.2f} / {c['load generator']:.2f} / {c['others']:.2f} | "
            f"{h['control_rss_mb']['max']:.0f} | {h['generator_loop_lag_ms']['p99']:.0f} | "
            f"0 errors, p99 < {h['interval_s'] * 1000:.0f} ms: {_mark(ok)} |")
    rows.append("\nTarget chosen here (issue 11 names none): every heartbeat answered within "
                "the heartbeat interval, none failed. Each simulated node waits for its answer "
                "before its next heartbeat (as the node agent does), so a slow control plane "
                "shows as fewer heartbeats per second than nodes × rate. Generator loop lag: "
                "how late the load generator's own event loop ran (large: the generator, not "
                "the control plane, was short of CPU). Enrolment through the HTTP API (token "
                "+ join with a local CSR): "
                + ", ".join(f"{b} {h['enrol_s']:.1f} s" for b, h in r.items()) + ".")
    return "\n".join(rows)


def table_page(r: dict[str, Any]) -> str:
    rows = ["| backend | when | rows (online) | requests | p50 ms | p95 ms | HTML KiB | target |",
            "|---|---|---|---|---|---|---|---|"]
    for backend, by_when in r.items():
        for when, p in by_when.items():
            if p is None:
                continue
            lat = p["latency_ms"]
            rows.append(f"| {backend} | {when} | {p['rows']} ({p['online_rows']}) | "
                        f"{lat['n']} | {lat['p50']:.1f} | {lat['p95']:.1f} | "
                        f"{p['html_bytes'] / 1024:.0f} | p95 < 1 s: {_mark(lat['p95'] < 1000)} |")
    rows.append("\n`GET /` with an admin bearer token, one keep-alive connection, requests "
                "one after the other; under load from half-way through the heartbeat load. "
                "Target chosen here: the page refreshes itself every 2 s or more.")
    return "\n".join(rows)


def machine_info() -> dict[str, Any]:
    import edgewise

    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu_count": os.cpu_count(), "cpu_model": cpu, "platform": platform.platform(),
            "python": platform.python_version(), "edgewise": edgewise.__version__}


def write_results(out: Path, done: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "fleet.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    sections = {**old.get("sections", {}), **done}
    result = {"machine": machine_info(), "sections": sections}
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    m = result["machine"]
    md = [f"## edgewise fleet benchmark\n\n{m['cpu_count']} × {m['cpu_model']} · Python "
          f"{m['python']} · edgewise {m['edgewise']} · real processes on 127.0.0.1, fake "
          "engine\n"]
    for name in SECTIONS:
        if name in sections:
            s = sections[name]
            try:
                table = TABLES[name][1](s["result"])
            except (KeyError, TypeError) as exc:  # a section from an older version of this file
                table = f"(not rendered: {type(exc).__name__} {exc}; rerun `--only {name}`)"
            md.append(f"### {TABLES[name][0]}\n\n{s['at']}{' (--quick)' if s['quick'] else ''}"
                      f" · load average {s['loadavg'][0]:.2f} → {s['loadavg'][1]:.2f} · "
                      f"`{s['command']}`\n\n{table}\n")
    (out / "fleet.md").write_text("\n".join(md))
    progress(f"wrote {out / 'fleet.md'} and {path}")


TABLES = {"fleet": ("Fleet: three nodes routing over mTLS", table_fleet),
          "revoke": ("Revocation under load", table_revoke),
          "rotation": ("Certificate rotation under load", table_rotation),
          "mtls": ("mTLS overhead per request (loopback)", table_mtls),
          "heartbeats": ("Heartbeats of simulated nodes", table_heartbeats),
          "page": ("Fleet page with the simulated nodes", table_page)}


