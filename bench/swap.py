"""Hot model swap under load on real models, side by side with a restart.

A node serving SmolLM2-135M takes steady chat load (4 clients, short answers); mid-run it
swaps to Gemma 3 270M and later back (``Node.swap``: the new model loads beside the old,
in-flight requests finish on the old one). Beside it, the naive way a user updates a
llama.cpp server is timed: stop it, start it with the new model (the gap it cannot
answer in). Reported:
failed requests, requests answered per model, how long each change took, latency before
and during it, peak RSS. Each model runs with ``--threads 1`` (2 shared cores).

    .venv/bin/python bench/swap.py [--seconds 30] [--clients 4]

Writes bench/results/swap.json and bench/results/swap.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from edgewise.api.app import create_app
from edgewise.config import parse_config
from edgewise.node import Node, build_engine

RESULTS = Path(__file__).parent / "results"
CHAT = {"model": "auto", "messages": [{"role": "user", "content": "Name a colour."}],
        "max_tokens": 8, "temperature": 0}


def engine(name: str, threads: int) -> Any:
    return build_engine(parse_config({"engine": {"model": name, "n_threads": threads,
                                                 "n_ctx": 1024}}))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run(mode: str, seconds: float, clients: int, threads: int) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="edgewise-bench-swap-")
    cfg = parse_config({"engine": {"model": "smollm2-135m-instruct", "n_threads": threads,
                                   "n_ctx": 1024}, "privacy": {"enabled": False},
                        "audit": {"enabled": False}, "serving": {"max_queue": 64},
                        "routing": {"jobs_path": f"{tmp}/jobs.sqlite"}})
    state: dict[str, Any] = {"node": Node(cfg, engine("smollm2-135m-instruct", threads))}
    app = {"app": create_app(state["node"], manage_lifecycle=False)}
    await state["node"].start()
    app["app"].state.router.start()
    results: list[tuple[float, int, str, float]] = []  # (t, status, model, latency)
    changes: list[dict[str, Any]] = []
    stop = asyncio.Event()
    t0 = time.monotonic()

    async def client() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                transport = httpx.ASGITransport(app=app["app"])
                async with httpx.AsyncClient(transport=transport, base_url="http://n",
                                             timeout=60) as c:
                    r = await c.post("/v1/chat/completions", json=CHAT)
                model = r.json().get("model", "") if r.status_code == 200 else ""
                results.append((started - t0, r.status_code, model,
                                time.monotonic() - started))
                if r.status_code != 200:  # a client backs off (Retry-After) and retries
                    await asyncio.sleep(0.1)
            except Exception as exc:  # a restarting server: the request failed
                results.append((started - t0, 0, type(exc).__name__, time.monotonic() - started))
                await asyncio.sleep(0.05)

    async def change(to: str, at: float) -> None:
        await asyncio.sleep(max(0.0, at - (time.monotonic() - t0)))
        began = time.monotonic() - t0
        await state["node"].swap(engine(to, threads))
        changes.append({"to": to, "began_s": round(began, 2),
                        "took_s": round(time.monotonic() - t0 - began, 2)})

    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    await change("gemma3-270m", seconds / 3)
    await change("smollm2-135m-instruct", 2 * seconds / 3)
    await asyncio.sleep(max(0.0, seconds - (time.monotonic() - t0)))
    stop.set()
    await asyncio.gather(*tasks)
    await app["app"].state.router.stop()
    await state["node"].stop()

    failed = [r for r in results if r[1] != 200]
    by_model: dict[str, int] = {}
    for r in results:
        if r[1] == 200:
            by_model[r[2]] = by_model.get(r[2], 0) + 1
    before = [r[3] for r in results if r[0] < seconds / 3 and r[1] == 200]
    during = [r[3] for r in results if any(c["began_s"] <= r[0] <= c["began_s"] + c["took_s"]
                                           for c in changes) and r[1] == 200]

    def p(xs: list[float], q: float) -> float | None:
        return round(statistics.quantiles(xs, n=100)[int(q) - 1] * 1000, 1) if len(xs) > 2 \
            else None

    return {"mode": mode, "requests": len(results), "failed": len(failed),
            "failures": sorted({f"{r[1]} {r[2]}" for r in failed}), "by_model": by_model,
            "changes": changes, "p50_before_ms": p(before, 50), "p95_before_ms": p(before, 95),
            "p50_during_ms": p(during, 50), "p95_during_ms": p(during, 95),
            "peak_rss_mb": round(rss_mb())}


async def restart_gap(threads: int) -> dict[str, Any]:
    """What a restart costs instead: stop a loaded node (drain, free), start one with the
    other model; the node answers nothing meanwhile. Timed without load (requests sent
    into the gap just fail)."""
    tmp = tempfile.mkdtemp(prefix="edgewise-bench-swap-")
    cfg = parse_config({"engine": {"model": "smollm2-135m-instruct", "n_threads": threads,
                                   "n_ctx": 1024}, "privacy": {"enabled": False},
                        "audit": {"enabled": False},
                        "routing": {"jobs_path": f"{tmp}/jobs.sqlite"}})
    gaps = []
    node = Node(cfg, engine("smollm2-135m-instruct", threads))
    await node.start()
    for to in ("gemma3-270m", "smollm2-135m-instruct"):
        began = time.monotonic()
        await node.stop()
        node = Node(cfg.replace(engine={"model": to}), engine(to, threads))
        await node.start()
        gaps.append(round(time.monotonic() - began, 2))
    await node.stop()
    return {"mode": "restart", "unavailable_s": gaps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    out = {"machine": f"{platform.processor() or platform.machine()}",
           "seconds": args.seconds, "clients": args.clients, "threads": args.threads,
           "runs": [asyncio.run(run("swap", args.seconds, args.clients, args.threads))],
           "restart": asyncio.run(restart_gap(args.threads))}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "swap.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = ["## Hot model swap vs restart, under load (real models)", "",
             f"{args.clients} clients, 8-token answers, {args.seconds:g} s; SmolLM2-135M → "
             "Gemma 3 270M at 1/3, back at 2/3; one thread per model.", "",
             "| way | requests | failed | answered by model | change took (s) | p50 / p95 "
             "before (ms) | p50 / p95 during a change (ms) | process peak RSS so far, MB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in out["runs"]:
        models = ", ".join(f"{k}: {v}" for k, v in sorted(r["by_model"].items()))
        took = " / ".join(str(c["took_s"]) for c in r["changes"])
        lines.append(f"| {r['mode']} | {r['requests']} | {r['failed']} "
                     f"{'(' + '; '.join(r['failures']) + ')' if r['failures'] else ''} | "
                     f"{models} | {took} | {r['p50_before_ms']} / {r['p95_before_ms']} | "
                     f"{r['p50_during_ms']} / {r['p95_during_ms']} | {r['peak_rss_mb']} |")
    swap = out["runs"][0]
    rate = swap["requests"] / args.seconds
    gaps = out["restart"]["unavailable_s"]
    lines += ["", f"Instead, a restart (stop the node, start it with the other model) leaves it "
              f"unable to answer for {' / '.join(map(str, gaps))} s; at the {rate:.1f} "
              f"requests/s above that is about {round(rate * sum(gaps))} refused requests for "
              f"the two changes, against {swap['failed']} with the swap."]
    (RESULTS / "swap.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
