"""Continuous batching (issue 16): many streaming clients on one node, side by side with
the node before batching and with llama.cpp's own llama-server, in one run.

Systems (one at a time, each freshly started per concurrency level, same model, same
prompts, same per-sequence ``n_ctx``, same llama.cpp threads):

- **before** — the node at ``--before`` (a commit before batching, checked out in a git
  worktree, run with this venv): one generation at a time, the rest queue.
- **after** — this working tree's node with ``engine.parallel = N``.
- **llama-server** — built from the llama.cpp vendored in the pinned llama-cpp-python
  sdist (``bench/build_llama_server.sh``), ``--parallel N --cont-batching``,
  ``-c N × n_ctx`` (it splits the context evenly over its slots), flash attention off
  (as the node), the node's CPU variant only (the other ``libggml-cpu-*.so`` are left
  out of its folder, so it cannot pick another).

At each level N of ``--levels`` (1 2 4 8 16), N clients each stream ``--requests``
greedy chat completions of ``--max-tokens`` tokens, one after another, from a fixed
list of prompts; aggregate decode tok/s = completion tokens / wall time of the level;
latency and TTFT per request (p50/p95, nearest rank).

Then, on the after node: prefix reuse (TTFT of every turn of a 10-turn conversation
with a long system prompt, ``engine.prefix_cache`` on vs off; llama-server with
``cache_prompt`` on vs off for reference), RSS at ``parallel`` 1 vs 16 (idle after
load, and peak under 16 clients), and an 8-client soak of ``--soak-seconds``
(``bench/serving.py``'s soak: errors, RSS every 5 s).

    bench/build_llama_server.sh                       # once, ~10 min
    .venv/bin/python bench/batching.py                # ~25 min on 2 idle cores
    .venv/bin/python bench/batching.py --levels 1 8 --skip-soak --skip-prefix
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serving as serving_bench  # bench/serving.py: soak, RSS, percentiles

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MODEL = "smollm2-135m-instruct"  # --model
SUBJECTS = [
    "a lighthouse keeper", "a robot gardener", "a lost violin", "the last train",
    "a desert well", "a clockmaker", "two rival bakers", "a snowed-in library",
    "a beekeeper", "a moon base", "a ship's cat", "an old map", "a volcano observatory",
    "a night market", "a chess prodigy", "a river ferry", "a glassblower", "a kite festival",
    "a mountain rescue", "a tea plantation", "a lonely satellite", "a street musician",
    "a forgotten key", "a paper boat", "a weather balloon", "a city of bridges",
    "a quiet radio station", "a broken compass", "a winter orchard", "a tiny museum",
    "a ghost ship", "a sand castle contest",
]
SYSTEM_PROMPT = (
    "You are the assistant of a regional clinic's front desk. Answer briefly and "
    "politely. Opening hours are Monday to Friday 8:00-18:00 and Saturday 9:00-13:00. "
    "Appointments can be made by phone or at the desk; cancellations need 24 hours' "
    "notice. The pharmacy is on the ground floor, radiology on the first floor, and the "
    "laboratory in the basement. Parking is free for the first two hours. Do not give "
    "medical advice; refer clinical questions to a nurse or doctor. ") * 3
TURNS = ["When are you open on Saturday?", "Where is radiology?", "Is parking free?",
         "How do I cancel an appointment?", "Where is the laboratory?",
         "Can I book by phone?", "Where is the pharmacy?", "Are you open on Sunday?",
         "How long is parking free?", "Can you give me medical advice?"]


@dataclass
class Req:
    client: int
    prompt: int
    ttft_s: float | None
    latency_s: float
    tokens: int
    text: str
    error: str | None


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- servers -----------------------------------------------------------------------------


def node_config(workdir: Path, *, model: str, n_ctx: int, threads: int, parallel: int | None,
                prefix_cache: bool = True) -> Path:
    engine: dict[str, Any] = {"model": model, "n_ctx": n_ctx, "n_threads": threads}
    if parallel is not None:  # the node before batching has no such keys
        engine["parallel"] = parallel
        engine["prefix_cache"] = prefix_cache
    cfg = {"node": {"name": "bench"}, "engine": engine,
           "serving": {"max_queue": 64, "queue_timeout_s": 900},
           "audit": {"path": str(workdir / "audit.sqlite")},
           "routing": {"jobs_path": str(workdir / "jobs.sqlite")}}
    path = workdir / f"node-{parallel}-{int(prefix_cache)}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@contextlib.contextmanager
def running(cmd: list[str], *, ready_url: str, log: Path, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited ({proc.returncode}):\n"
                                   + log.read_text(errors="replace")[-3000:])
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{cmd[0]} did not become ready in 180 s")
            time.sleep(0.25)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def node_cmd(config: Path, port: int, src: Path | None) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    if src is not None:  # the old node: its own source on the path, this venv's packages
        env["PYTHONPATH"] = str(src)
    cmd = [sys.executable, "-m", "edgewise", "serve", "--config", str(config), "--host",
           HOST, "--port", str(port), "--log-level", "warning"]
    return cmd, env


def llama_server_dir(build: Path, variant: str, dest: Path) -> Path:
    """A folder with llama-server, its libraries and only the node's CPU variant."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in build.iterdir():
        if f.name.startswith("libggml-cpu-") and f.name != f"libggml-cpu-{variant}.so":
            continue
        target = dest / f.name
        if f.name == "llama-server":
            shutil.copy2(f, target)  # a copy: ggml looks for backends next to /proc/self/exe
        elif not target.exists():
            target.symlink_to(f)
    return dest


def llama_server_cmd(run_dir: Path, model: Path, *, parallel: int, n_ctx: int, threads: int,
                     port: int) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "LD_LIBRARY_PATH": str(run_dir)}
    cmd = [str(run_dir / "llama-server"), "-m", str(model), "-c", str(n_ctx * parallel),
           "-np", str(parallel), "-cb", "-t", str(threads), "-tb", str(threads),
           "-b", "512", "-ub", "512", "-fa", "off", "--no-webui", "--host", HOST,
           "--port", str(port), "--log-disable"]
    return cmd, env


# -- clients -----------------------------------------------------------------------------


def chat_body(messages: list[dict[str, str]], max_tokens: int, *, server: bool,
              cache_prompt: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "default", "messages": messages, "max_tokens": max_tokens,
                            "temperature": 0, "stream": True,
                            "stream_options": {"include_usage": True}}
    if server:
        body["cache_prompt"] = cache_prompt
    return body


async def stream_chat(http: httpx.AsyncClient, body: dict[str, Any]
                      ) -> tuple[float | None, float, int, str, str | None]:
    """(ttft, latency, completion tokens, text, error) of one streamed chat request."""
    t0 = time.perf_counter()
    ttft, tokens, text, error, chunks = None, 0, "", None, 0
    try:
        async with http.stream("POST", "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                return None, time.perf_counter() - t0, 0, "", \
                    f"HTTP {r.status_code}: {(await r.aread())[:200]!r}"
            done = False
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    continue
                obj = json.loads(line[6:])
                if "error" in obj:
                    error = f"SSE error: {obj['error']}"
                for ch in obj.get("choices") or []:
                    piece = (ch.get("delta") or {}).get("content") or ""
                    if piece:
                        chunks += 1
                        text += piece
                        if ttft is None:
                            ttft = time.perf_counter() - t0
                if obj.get("usage"):
                    tokens = obj["usage"]["completion_tokens"]
            if not done and error is None:
                error = "stream ended without [DONE]"
    except Exception as exc:  # every failure counts
        error = f"{type(exc).__name__}: {exc}"
    return ttft, time.perf_counter() - t0, tokens or chunks, text, error


async def level(url: str, n: int, requests: int, max_tokens: int, *, server: bool
                ) -> tuple[float, list[Req]]:
    limits = httpx.Limits(max_connections=n + 2)
    out: list[Req] = []
    async with httpx.AsyncClient(base_url=url, timeout=900, limits=limits) as http:
        warm = chat_body([{"role": "user", "content": "Say hi."}], 8, server=server)
        await stream_chat(http, warm)

        async def client(i: int) -> None:
            for j in range(requests):
                k = (j * n + i) % len(SUBJECTS)
                body = chat_body([{"role": "user", "content":
                                   f"Write a short story about {SUBJECTS[k]}."}],
                                 max_tokens, server=server)
                ttft, lat, tokens, text, err = await stream_chat(http, body)
                out.append(Req(i, k, ttft, lat, tokens, text, err))

        t0 = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(n)))
        wall = time.perf_counter() - t0
    return wall, out


def summarize(wall: float, reqs: list[Req]) -> dict[str, Any]:
    ok = [r for r in reqs if r.error is None]
    pct = serving_bench._pct
    lat = sorted(r.latency_s for r in ok)
    ttft = sorted(r.ttft_s for r in ok if r.ttft_s is not None)
    tokens = sum(r.tokens for r in ok)
    return {"wall_s": wall, "requests": len(reqs), "errors": len(reqs) - len(ok),
            "error_samples": [r.error for r in reqs if r.error][:5],
            "completion_tokens": tokens, "tok_s": tokens / wall,
            "latency_p50_s": pct(lat, 50), "latency_p95_s": pct(lat, 95),
            "ttft_p50_s": pct(ttft, 50), "ttft_p95_s": pct(ttft, 95),
            "texts": {str(r.prompt): r.text for r in ok}}


async def conversation(url: str, max_tokens: int, *, server: bool, cache: bool
                       ) -> list[dict[str, Any]]:
    """The 10 turns, each re-sending the whole conversation; TTFT per turn."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    turns = []
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        await stream_chat(http, chat_body([{"role": "user", "content": "Say hi."}], 4,
                                          server=server, cache_prompt=cache))
        for q in TURNS:
            messages.append({"role": "user", "content": q})
            ttft, lat, tokens, text, err = await stream_chat(
                http, chat_body(messages, max_tokens, server=server, cache_prompt=cache))
            if err:
                raise RuntimeError(err)
            messages.append({"role": "assistant", "content": text})
            turns.append({"ttft_s": ttft, "latency_s": lat, "tokens": tokens})
    return turns


# -- the run -----------------------------------------------------------------------------


def worktree(commit: str, tmp: Path) -> Path:
    path = tmp / "ew-before"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), commit],
                   check=True, capture_output=True)
    return path


def rss_mb(pid: int) -> float:
    return serving_bench._rss_mb(pid)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--requests", type=int, default=2, help="requests per client per level")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--n-ctx", type=int, default=2048, help="context of one sequence")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--before", default="85508f1", help="commit of the node before batching")
    ap.add_argument("--llama-server", type=Path,
                    default=Path.home() / ".cache/edgewise/llama-server-0.3.36")
    ap.add_argument("--skip-prefix", action="store_true")
    ap.add_argument("--skip-soak", action="store_true")
    ap.add_argument("--soak-seconds", type=float, default=60)
    ap.add_argument("--model", default=MODEL, help="a catalogue model")
    ap.add_argument("--out", default="batching")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite the Markdown table from bench/results/OUT.json")
    args = ap.parse_args(argv)
    if args.report_only:
        md = report(json.loads((RESULTS / f"{args.out}.json").read_text()))
        (RESULTS / f"{args.out}.md").write_text(md)
        print(md)
        return

    from edgewise.engines.cpu import ensure_backend
    from edgewise.models import resolve_model

    model = resolve_model(args.model)
    variant = ensure_backend().variant
    if not (args.llama_server / "llama-server").exists():
        sys.exit(f"no llama-server in {args.llama_server}: run bench/build_llama_server.sh")
    tmp = Path(tempfile.mkdtemp(prefix="ew-batching-"))
    result: dict[str, Any] = {"settings": {**vars(args), "llama_server": str(args.llama_server),
                                           "cpu_variant": variant},
                              "machine": serving_bench.machine_info(model), "levels": {}}
    before_src = worktree(args.before, tmp) / "src"
    server_dir = llama_server_dir(args.llama_server, variant, tmp / "llama-server")
    port = serving_bench.free_port()
    url = f"http://{HOST}:{port}"
    common: dict[str, Any] = {"model": args.model, "n_ctx": args.n_ctx,
                              "threads": args.threads}
    try:
        for n in args.levels:
            row: dict[str, Any] = {}
            for system in ("before", "after", "llama-server"):
                progress(f"==> {n} clients, {system}")
                if system == "llama-server":
                    cmd, env = llama_server_cmd(server_dir, model.path, parallel=n,
                                                n_ctx=args.n_ctx, threads=args.threads,
                                                port=port)
                    ready, cwd = url + "/health", server_dir
                else:
                    cfg = node_config(tmp, **common,
                                      parallel=n if system == "after" else None)
                    cmd, env = node_cmd(cfg, port, before_src if system == "before" else None)
                    ready, cwd = url + "/readyz", tmp
                with running(cmd, ready_url=ready, log=tmp / f"{system}-{n}.log", env=env,
                             cwd=cwd) as proc:
                    idle = rss_mb(proc.pid)
                    wall, reqs = asyncio.run(level(url, n, args.requests, args.max_tokens,
                                                   server=system == "llama-server"))
                    summary = summarize(wall, reqs)
                    summary["rss_idle_mb"] = idle
                    summary["rss_after_mb"] = rss_mb(proc.pid)
                row[system] = summary
                progress(f"    {summary['tok_s']:.1f} tok/s, ttft p95 "
                         f"{summary['ttft_p95_s']:.2f} s, errors {summary['errors']}")
            result["levels"][str(n)] = row
        if not args.skip_prefix:
            result["prefix"] = {}
            for system, cache in (("after", True), ("after", False), ("llama-server", True),
                                  ("llama-server", False)):
                progress(f"==> 10-turn conversation, {system}, cache {cache}")
                if system == "llama-server":
                    cmd, env = llama_server_cmd(server_dir, model.path, parallel=8,
                                                n_ctx=args.n_ctx, threads=args.threads,
                                                port=port)
                    ready, cwd = url + "/health", server_dir
                else:
                    cfg = node_config(tmp, **common, parallel=8,
                                      prefix_cache=cache)
                    cmd, env = node_cmd(cfg, port, None)
                    ready, cwd = url + "/readyz", tmp
                with running(cmd, ready_url=ready, log=tmp / f"conv-{system}-{cache}.log",
                             env=env, cwd=cwd):
                    turns = asyncio.run(conversation(url, 32, server=system == "llama-server",
                                                     cache=cache))
                result["prefix"][f"{system}/{'on' if cache else 'off'}"] = turns
        if not args.skip_soak:
            progress(f"==> soak: 8 clients, {args.soak_seconds:.0f} s, after node")
            cfg = node_config(tmp, **common, parallel=8)
            cmd, env = node_cmd(cfg, port, None)
            with running(cmd, ready_url=url + "/readyz", log=tmp / "soak.log", env=env,
                         cwd=tmp) as proc:
                soak_args = argparse.Namespace(clients=8, seed=7, soak_max_tokens=64,
                                               max_foreign_load=0.3,
                                               soak_seconds=args.soak_seconds)
                soak = asyncio.run(serving_bench._soak(soak_args, port, proc.pid))
                soak.pop("requests_log", None)
                metrics = httpx.get(url + "/metrics").text
            soak["metrics"] = [line for line in metrics.splitlines()
                               if line.startswith(("edgewise_batch_sequences",
                                                   "edgewise_prefix_cache",
                                                   "edgewise_kv_cells",
                                                   "edgewise_queue_wait_seconds_count",
                                                   "edgewise_queue_wait_seconds_sum"))]
            result["soak"] = soak
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                        str(tmp / "ew-before")], capture_output=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(result, indent=1))
    md = report(result)
    (RESULTS / f"{args.out}.md").write_text(md)
    print(md)
    shutil.rmtree(tmp, ignore_errors=True)


def report(r: dict[str, Any]) -> str:
    s = r["settings"]
    lines = [f"# Continuous batching — {s.get('model', MODEL)}, n_ctx {s['n_ctx']} per sequence, "
             f"{s['threads']} llama.cpp thread(s), {s['max_tokens']} tokens per request, "
             f"{s['requests']} requests per client, CPU variant {s['cpu_variant']}", "",
             "## Aggregate decode and latency", "",
             "| clients | system | tok/s | × own 1-client | ÷ llama-server | latency p50 / p95 s "
             "| TTFT p50 / p95 s | errors | RSS idle / after MB |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    levels = r["levels"]
    first = levels[min(levels, key=int)]
    for n, row in sorted(levels.items(), key=lambda kv: int(kv[0])):
        for system, v in row.items():
            own = v["tok_s"] / first[system]["tok_s"]
            vs = v["tok_s"] / row["llama-server"]["tok_s"]
            lines.append(
                f"| {n} | {system} | {v['tok_s']:.1f} | {own:.2f}× | {vs:.2f} | "
                f"{v['latency_p50_s']:.2f} / {v['latency_p95_s']:.2f} | "
                f"{v['ttft_p50_s']:.2f} / {v['ttft_p95_s']:.2f} | {v['errors']} | "
                f"{v['rss_idle_mb']:.0f} / {v['rss_after_mb']:.0f} |")
    # greedy outputs: the after node against the before node (one request at a time)
    # and llama-server, prompt by prompt, at each level
    same = []
    for n, row in sorted(levels.items(), key=lambda kv: int(kv[0])):
        a, b, c = (row[k]["texts"] for k in ("after", "before", "llama-server"))
        same.append(f"{n}: {sum(a[k] == b.get(k) for k in a)}/{len(a)} and "
                    f"{sum(a[k] == c.get(k) for k in a)}/{len(a)}")
    lines += ["", "Greedy texts of the after node identical to the before node's and to "
              "llama-server's for the same prompt, by clients: " + "; ".join(same)]
    errors = [(n, system, e) for n, row in levels.items() for system, v in row.items()
              for e in v["error_samples"]]
    if errors:
        lines += ["", "Errors: " + "; ".join(f"{n} clients, {system}: {e}"
                                             for n, system, e in errors)]
    if "prefix" in r:
        lines += ["", "## Prefix reuse: TTFT per turn of a 10-turn conversation (s)", "",
                  "| system | " + " | ".join(f"turn {i + 1}" for i in range(10)) + " |",
                  "|---|" + "---:|" * 10]
        for name, turns in r["prefix"].items():
            lines.append(f"| {name} | " + " | ".join(f"{t['ttft_s']:.3f}" for t in turns)
                         + " |")
    if "soak" in r:
        k = r["soak"]
        lines += ["", "## Soak: 8 clients on the after node (parallel 8)", "",
                  f"{k['requests']} requests in {k['wall_s']:.0f} s, {k['errors']} errors, "
                  f"{k['tokens_per_s']:.1f} tok/s, latency p50 {k['latency_p50_s']:.2f} s / "
                  f"p95 {k['latency_p95_s']:.2f} s; RSS start {k['rss_mb_start']:.0f} MB, "
                  f"max {k['rss_mb_max']:.0f} MB, end {k['rss_mb_end']:.0f} MB "
                  f"(samples: {', '.join(f'{v:.0f}' for _, v in k['rss_samples'])})"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
