"""Serving benchmark: what the HTTP node costs over raw llama.cpp, and whether it holds up.

Run by hand (it is not a test; timings are never asserted)::

    .venv/bin/python bench/serving.py            # ~2-3 minutes on 2 idle cores
    .venv/bin/python bench/serving.py --skip-soak --reps 3

Part A — overhead against raw llama-cpp-python, measured side by side in one run, once
    per ``--threads`` value (default ``1,2``). The same GGUF file, prompt and settings
    (greedy ``temperature=0``, ``n_ctx=2048``, ``n_threads = n_threads_batch``,
    ``n_batch=512``, ``max_tokens``) are streamed by:

    * ``raw``: ``llama_cpp.Llama.create_completion(stream=True)`` in a worker
      subprocess (this script with ``--_raw-worker``), so the baseline never shares a
      Python interpreter (GIL, allocator) with the HTTP client that times the node;
    * ``engine``: edgewise's own :class:`LlamaCppEngine` + :class:`Generation` decode
      loop in that same worker, without HTTP — a diagnostic that splits the node's
      overhead into "engine layer" and "HTTP/SSE layer";
    * ``node``: ``edgewise serve`` on a free 127.0.0.1 port, ``POST /v1/completions``
      with a plain-text prompt, streamed over HTTP (httpx) and parsed as SSE;
    * ``node+logprobs``: the same with ``logprobs: 1``. The engine records log-softmax
      on every request anyway; this shows what reporting them (top-1 included) adds;
    * ``raw-chat`` / ``node-chat``: the chat path, a user message asking for a long
      text: ``Llama.create_chat_completion(stream=True)`` (the GGUF's template, as
      llama-cpp-python applies it) against ``POST /v1/chat/completions`` — the node's
      one chat path: validation, the router (a single-tier node needs no privacy
      guard), the audit record, the local tier, SSE. ``node-chat`` is compared with
      ``raw-chat``, the others with ``raw``.

    TTFT is the time from issuing the request to the first chunk with non-empty text;
    decode speed is ``(n_tokens - 1) / (t_last_chunk - t_first_chunk)``, the same
    formula on every side. The node reports its token count through
    ``stream_options.include_usage``; the raw side's is exact too (see ``_raw_worker``).
    Every repetition runs all variants back to back, in a rotated order, after one
    discarded warm-up round, so drift on a shared machine (other jobs, thermal, cache)
    hits all of them alike; only one of them generates at any moment. Repetition ``i``
    uses prompt ``i`` on every side, and the generated texts are compared: greedy
    decoding of the same prompt must give the same tokens everywhere.

    Other jobs on the machine: llama.cpp's threads wait for each other at every
    operation, so a burst of foreign CPU use can slow one run tenfold. The CPU used by
    processes other than ours is measured during every run (:class:`ForeignLoad`); a
    repetition overlapped by more than ``--max-foreign-load`` cores is redone, and the
    statistics use undisturbed repetitions only (the JSON keeps all of them).

    llama-cpp-python reuses its KV cache when a prompt starts like the previous one.
    The completion prompts start with different words, and the raw side resets its
    cache before each run (the chat prompts share their template's system turn), so
    every run evaluates its prompt from scratch; the node, which serves several
    variants per repetition, gets a one-token request with another prompt in between
    (``_evict_prompt_cache``).

Part B — soak: ``--clients`` concurrent streaming chat clients for ``--soak-seconds``
    against a fresh node whose ``serving.max_queue`` is large enough that nobody gets
    429. Each client loops over short random prompts (seeded per client) with
    ``max_tokens=32``; a request counts as an error on any non-200 status, a stream
    without ``data: [DONE]``, an SSE error frame or any exception. No request starts
    after the deadline; in-flight ones are waited for. The server's RSS is sampled after
    warm-up, every 5 s, and at the end.

Outputs: a Markdown table per part on stdout, ``bench/results/serving.md`` (the tables)
and ``bench/results/serving.json`` (every measurement, the settings, machine and model
info). The servers are always stopped (try/finally), and only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from edgewise.models import DEFAULT_MODEL, ResolvedModel, resolve_model

HOST = "127.0.0.1"
RESULTS = Path(__file__).resolve().parent / "results"
N_CTX = 2048
N_BATCH = 512
# llama.cpp's defaults, which are also the node's config defaults (config.SamplingDefaults).
# With temperature=0 llama.cpp samples greedily, so they only have to agree, not matter.
SAMPLING = {"top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.0}

# Part A prompts: plain text that a 135M model continues for well over 128 tokens
# without emitting EOS (checked: every variant must report the same token count). Each
# starts with a different word, so no run can reuse the previous run's KV cache.
PROMPTS = [
    "Here is a long list of fruits: apple, banana,",
    "Chapter 1\n\nThe old lighthouse keeper",
    "The history of the city of Lyon begins",
    "Photosynthesis is the process by which plants",
    "Once upon a time, in a small village by the sea, there lived",
    "In this tutorial we will learn how to bake bread. First,",
    "Dear diary, today was the strangest day of my life.",
    "Welcome to the annual report of the Riverside Gardening Club.",
]
EVICT_PROMPT = "Zebra"  # shares no first token with any prompt above
# The chat variants' user messages (index-paired with PROMPTS): asks for long answers.
CHAT_PROMPTS = [
    "Write a very long list of fruits, one per line, with a sentence about each.",
    "Write a long story about an old lighthouse keeper and a storm.",
    "Tell me the long history of the city of Lyon, century by century.",
    "Explain photosynthesis in great detail, step by step, for a student.",
    "Write a long fairy tale about a small village by the sea.",
    "Write a detailed, long tutorial on baking bread at home.",
    "Write a long diary entry about the strangest day of your life.",
    "Write the long annual report of a gardening club, section by section.",
]

# Part B prompts are assembled from these, seeded per client.
SOAK_SUBJECTS = ["a cat", "the moon", "rain", "a train", "coffee", "a river", "bees", "snow"]
SOAK_TASKS = [
    "Write one sentence about {}.",
    "Give me a short fact about {}.",
    "Describe {} in a few words.",
    "Write a haiku about {}.",
    "What rhymes with {}?",
]

VARIANTS = ["raw", "engine", "node", "node+logprobs", "raw-chat", "node-chat"]
LABELS = {
    "raw": "raw llama-cpp-python (subprocess)",
    "engine": "edgewise engine, no HTTP (diagnostic)",
    "node": "node, HTTP /v1/completions",
    "node+logprobs": "node, HTTP, logprobs=1",
    "raw-chat": "raw llama-cpp-python, create_chat_completion",
    "node-chat": "node, HTTP /v1/chat/completions (the chat path)",
}
#: What each variant is compared with.
BASELINE = {"engine": "raw", "node": "raw", "node+logprobs": "raw", "node-chat": "raw-chat"}
CHAT_VARIANTS = ("raw-chat", "node-chat")
TARGET_TPS_RATIO = 0.95  # node keeps >= 95% of raw decode tokens/s
TARGET_TTFT_MS = 10.0  # node adds <= 10 ms to TTFT (p50)


@dataclass
class Run:
    """One streamed generation, timed the same way whichever side produced it."""

    variant: str
    ttft_s: float
    decode_s: float  # first to last non-empty chunk
    total_s: float
    completion_tokens: int
    prompt_tokens: int
    finish_reason: str | None
    text: str = field(repr=False)
    rep: int = 0
    prompt_index: int = 0
    #: CPU used by other processes during the run, in cores (see ForeignLoad).
    foreign_cores: float = 0.0
    #: False when the repetition was disturbed by other jobs and therefore redone.
    clean: bool = True

    @property
    def tokens_per_s(self) -> float:
        n = self.completion_tokens
        return (n - 1) / self.decode_s if n > 1 and self.decode_s > 0 else float("nan")

    def record(self) -> dict[str, Any]:
        d = asdict(self)
        d["tokens_per_s"] = self.tokens_per_s
        d["text_sha1"] = hashlib.sha1(self.text.encode()).hexdigest()
        return d


class _Timer:
    """Collects chunk arrival times: TTFT and decode span from non-empty chunks only."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.first: float | None = None
        self.last = self.t0
        self.parts: list[str] = []

    def text(self, piece: str) -> None:
        if piece:
            now = time.perf_counter()
            if self.first is None:
                self.first = now
            self.last = now
            self.parts.append(piece)

    def run(self, variant: str, n_out: int, n_prompt: int, finish: str | None) -> Run:
        end = time.perf_counter()
        first = self.first if self.first is not None else end
        spans = (first - self.t0, self.last - first, end - self.t0)
        return Run(variant, *spans, n_out, n_prompt, finish, "".join(self.parts))


# -- other jobs on a shared machine ------------------------------------------------------


class ForeignLoad:
    """How many cores processes other than this benchmark's used over an interval.

    llama.cpp runs ``os.cpu_count()`` threads that meet at a barrier after every
    operation, so one busy core elsewhere can slow a run tenfold (seen here: 100 → 1
    tok/s). Interleaving spreads slow drift evenly but not such bursts; runs overlapped
    by one are detected by this and their repetition is redone. Hypervisor steal time
    counts as foreign too.
    """

    def __init__(self) -> None:
        self.pids = [os.getpid()]

    def snap(self) -> tuple[float, float, float]:
        import psutil

        t = psutil.cpu_times()
        busy = t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)
        ours = 0.0
        for pid in self.pids:
            with contextlib.suppress(psutil.Error):
                c = psutil.Process(pid).cpu_times()
                ours += c.user + c.system
        return time.perf_counter(), busy, ours

    def cores_since(self, before: tuple[float, float, float]) -> float:
        (w0, b0, o0), (w1, b1, o1) = before, self.snap()
        return max(0.0, (b1 - b0) - (o1 - o0)) / max(w1 - w0, 1e-9)

    def wait_quiet(self, limit: float, patience_s: float = 120) -> float:
        """Wait (up to ``patience_s``) for a 1 s window with less than ``limit`` cores used
        by others; returns the last window's load."""
        give_up = time.monotonic() + patience_s
        while True:
            before = self.snap()
            time.sleep(1.0)
            cores = self.cores_since(before)
            if cores <= limit or time.monotonic() > give_up:
                return cores
            _progress(f"  waiting: other processes use {cores:.2f} cores")


# -- the raw side: a worker subprocess ---------------------------------------------------


def _raw_worker(model_path: str, threads: int) -> None:
    """Serve generation requests, one JSON line in and one out, until stdin closes.

    Loads the model twice: a bare ``llama_cpp.Llama`` (the baseline) and an edgewise
    ``LlamaCppEngine`` (the diagnostic); both stay idle while the other side runs.
    """
    import llama_cpp

    from edgewise.chat import Message
    from edgewise.engines import Generation, SamplingParams
    from edgewise.engines.cpu import ensure_backend
    from edgewise.engines.llamacpp import LlamaCppEngine

    ensure_backend()  # the portable build: register this CPU's llama.cpp backend first
    llm = llama_cpp.Llama(
        model_path=model_path,
        n_ctx=N_CTX,
        n_threads=threads,
        n_threads_batch=threads,
        n_batch=N_BATCH,
        verbose=False,
    )
    engine = LlamaCppEngine(
        resolve_model(model_path), n_ctx=N_CTX, n_threads=threads, n_batch=N_BATCH
    )
    engine.load()
    print(json.dumps({"ready": True}), flush=True)

    for line in sys.stdin:
        req = json.loads(line)
        prompt, max_tokens = req["prompt"], req["max_tokens"]
        # Cold, like the node (which never reuses a previous prompt): the chat prompts
        # share their template's system turn, which llama-cpp-python would otherwise
        # keep in its KV cache from the previous chat run.
        llm.reset()
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        timer = _Timer()
        if req["mode"] == "raw":
            finish = None
            for chunk in llm.create_completion(
                prompt, max_tokens=max_tokens, temperature=0, stream=True, **SAMPLING
            ):
                choice = chunk["choices"][0]
                timer.text(choice["text"])
                finish = choice["finish_reason"] or finish
            # create_completion streams no usage. Exact count: "length" means it stopped
            # at max_tokens; on EOS every kept token was evaluated into the KV cache.
            n_prompt = len(llm.tokenize(prompt.encode(), add_bos=True))
            n_out = max_tokens if finish == "length" else llm.n_tokens - n_prompt
        elif req["mode"] == "raw-chat":
            finish = None
            messages: Any = [{"role": "user", "content": prompt}]
            for chunk in llm.create_chat_completion(
                messages, max_tokens=max_tokens, temperature=0, stream=True, **SAMPLING
            ):
                choice = chunk["choices"][0]
                timer.text(choice["delta"].get("content") or "")
                finish = choice["finish_reason"] or finish
            # The same template and tokenization as llama-cpp-python's (benign content).
            n_prompt = len(engine.chat_prompt([Message("user", prompt)]))
            n_out = max_tokens if finish == "length" else llm.n_tokens - n_prompt
        else:
            tokens = engine.tokenize(prompt)
            params = SamplingParams(max_tokens=max_tokens, temperature=0, **SAMPLING)
            gen = Generation(engine, tokens, params, n_ctx=N_CTX)
            for c in gen:
                timer.text(c.text)
            n_prompt, n_out = len(tokens), gen.outcome.completion_tokens
            finish = gen.outcome.finish_reason
        run = timer.run(req["mode"], n_out, n_prompt, finish)
        print(json.dumps(asdict(run)), flush=True)


class RawWorker:
    """The parent's handle on the ``--_raw-worker`` subprocess."""

    def __init__(self, model_path: Path, threads: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--_raw-worker", str(model_path), "--threads", str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._read()  # {"ready": true}, after both models loaded

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):  # anything else is chatter from native code
                out: dict[str, Any] = json.loads(line)
                return out
        raise RuntimeError(f"raw worker exited with code {self.proc.wait()}")

    def generate(self, mode: str, prompt: str, max_tokens: int) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(
            json.dumps({"mode": mode, "prompt": prompt, "max_tokens": max_tokens}) + "\n"
        )
        return self._read()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- the node side ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def node_server(config: Path, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``edgewise serve`` in a subprocess, yielded once ``/readyz`` is 200; always stopped."""
    exe = Path(sys.executable).with_name("edgewise")  # the console script of this venv
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "edgewise"]
    cmd += [
        "serve",
        "--config",
        str(config),
        "--host",
        HOST,
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"edgewise serve exited ({proc.returncode}):\n"
                    + log.read_text(errors="replace")[-3000:]
                )
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://{HOST}:{port}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("edgewise serve did not become ready in 180 s")
            time.sleep(0.25)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # graceful: drains, frees the model
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _sse_payloads(lines: Iterator[str]) -> Iterator[str]:
    for line in lines:
        if line.startswith("data: "):
            yield line[6:]


def node_run(client: httpx.Client, variant: str, prompt: str, max_tokens: int) -> Run:
    chat = variant == "node-chat"
    body: dict[str, Any] = {
        "model": "default",
        "max_tokens": max_tokens,
        "temperature": 0,
        "top_p": SAMPLING["top_p"],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if variant == "node+logprobs":
        body["logprobs"] = 1
    usage: dict[str, int] = {}
    finish, done = None, False
    timer = _Timer()
    route = "/v1/chat/completions" if chat else "/v1/completions"
    with client.stream("POST", route, json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"node answered {r.status_code}: {r.read()[:500]!r}")
        for payload in _sse_payloads(r.iter_lines()):
            if payload == "[DONE]":
                done = True
                break
            obj = json.loads(payload)
            if "error" in obj:
                raise RuntimeError(f"node stream error: {obj['error']}")
            for choice in obj.get("choices") or []:
                timer.text((choice["delta"].get("content") or "") if chat else choice["text"])
                finish = choice["finish_reason"] or finish
            usage = obj.get("usage") or usage
    if not done or not usage:
        raise RuntimeError("node stream ended without usage and [DONE]")
    return timer.run(variant, usage["completion_tokens"], usage["prompt_tokens"], finish)


def _evict_prompt_cache(client: httpx.Client) -> None:
    """One token from an unrelated prompt, so the next request re-evaluates its prompt."""
    r = client.post(
        "/v1/completions",
        json={"model": "default", "prompt": EVICT_PROMPT, "max_tokens": 1, "temperature": 0},
    )
    r.raise_for_status()


# -- Part A -----------------------------------------------------------------------------


def part_a(
    args: argparse.Namespace, model_path: Path, config: Path, port: int, workdir: Path,
    threads: int,
) -> dict[str, Any]:
    order = random.Random(args.seed).sample(range(len(PROMPTS)), len(PROMPTS))
    load = ForeignLoad()
    runs: list[Run] = []
    worker = RawWorker(model_path, threads)
    load.pids.append(worker.proc.pid)
    try:
        with (
            node_server(config, port, workdir / f"node-a-{threads}.log") as server,
            httpx.Client(base_url=f"http://{HOST}:{port}", timeout=600) as client,
        ):
            load.pids.append(server.pid)

            def one(variant: str, p_idx: int) -> Run:
                prompt = (CHAT_PROMPTS if variant in CHAT_VARIANTS else PROMPTS)[p_idx]
                if variant in ("raw", "engine", "raw-chat"):
                    d = worker.generate(variant, prompt, args.max_tokens)
                    d["variant"] = variant
                    return Run(**d)
                return node_run(client, variant, prompt, args.max_tokens)

            def repetition(rep: int) -> list[Run]:
                """Every variant once on the same prompt, in an order rotated per rep."""
                p_idx = order[rep % len(order)]
                node_served = False
                out = []
                k = len(VARIANTS)
                for variant in VARIANTS[rep % k :] + VARIANTS[: rep % k]:
                    if variant.startswith("node"):
                        if node_served:
                            _evict_prompt_cache(client)
                        node_served = True
                    before = load.snap()
                    run = one(variant, p_idx)
                    run.foreign_cores = load.cores_since(before)
                    run.rep, run.prompt_index = rep, p_idx
                    out.append(run)
                    _progress(
                        f"A t={threads} rep {rep}/{args.reps} {variant:14} "
                        f"ttft {run.ttft_s * 1e3:7.1f} ms  {run.tokens_per_s:6.1f} tok/s"
                        f"  n={run.completion_tokens}  others {run.foreign_cores:.2f} cores"
                        + ("  (warm-up)" if rep == 0 else "")
                    )
                return out

            # Rep 0 is the warm-up (first-touch page faults, thread pools, connection).
            repetition(0)
            rep, attempts = 1, 0
            while rep <= args.reps and attempts < 4 * args.reps:
                attempts += 1
                load.wait_quiet(args.max_foreign_load)
                rep_runs = repetition(rep)
                clean = all(r.foreign_cores <= args.max_foreign_load for r in rep_runs)
                for r in rep_runs:
                    r.clean = clean
                runs += rep_runs
                if clean:
                    rep += 1
                else:
                    _progress(f"  rep {rep} disturbed by other processes: redoing it")
    finally:
        worker.close()
    return summarize_a(runs, args.reps)


def summarize_a(all_runs: list[Run], wanted: int) -> dict[str, Any]:
    # Statistics over undisturbed repetitions; if other jobs never let up, over all of them.
    runs = [r for r in all_runs if r.clean] or all_runs
    by = {v: [r for r in runs if r.variant == v] for v in VARIANTS}
    summary: dict[str, Any] = {}
    for v, rs in by.items():
        summary[v] = {
            "ttft_p50_ms": statistics.median(r.ttft_s for r in rs) * 1e3,
            "tokens_per_s_median": statistics.median(r.tokens_per_s for r in rs),
            "completion_tokens": sorted({r.completion_tokens for r in rs}),
            "prompt_tokens": sorted({r.prompt_tokens for r in rs}),
            "finish_reasons": sorted({str(r.finish_reason) for r in rs}),
        }
    # Runs were appended one repetition (all variants, same prompt) at a time.
    k = len(VARIANTS)
    per_rep = [{r.variant: r for r in runs[i : i + k]} for i in range(0, len(runs), k)]
    # Paired checks: same prompt in the same repetition must give the same tokens, within
    # each family (the completion variants continue one text, the chat ones answer
    # another).
    families = [[v for v in VARIANTS if v not in CHAT_VARIANTS], list(CHAT_VARIANTS)]
    same_count = all(len({g[v].completion_tokens for v in fam}) == 1
                     for g in per_rep for fam in families)
    same_text = all(len({g[v].text for v in fam}) == 1 for g in per_rep for fam in families)
    for v, base in BASELINE.items():
        s, raw = summary[v], summary[base]
        s["baseline"] = base
        s["ttft_delta_ms"] = s["ttft_p50_ms"] - raw["ttft_p50_ms"]
        s["tps_ratio"] = s["tokens_per_s_median"] / raw["tokens_per_s_median"]
        # Median of per-repetition ratios: robust to a slow repetition hitting both.
        s["tps_ratio_paired_median"] = statistics.median(
            g[v].tokens_per_s / g[base].tokens_per_s for g in per_rep
        )
        s["ttft_delta_paired_median_ms"] = statistics.median(
            (g[v].ttft_s - g[base].ttft_s) * 1e3 for g in per_rep
        )
    for v in ("node", "node+logprobs", "node-chat"):
        summary[v]["meets_tps_target"] = summary[v]["tps_ratio"] >= TARGET_TPS_RATIO
        summary[v]["meets_ttft_target"] = summary[v]["ttft_delta_ms"] <= TARGET_TTFT_MS
    return {
        "summary": summary,
        "same_token_counts": same_count,
        "same_texts": same_text,
        "clean_reps": len(per_rep) if runs[0].clean else 0,
        "wanted_reps": wanted,
        "discarded_reps": sum(not r.clean for r in all_runs) // k,
        "runs": [r.record() for r in all_runs],
    }


def table_a(a: dict[str, Any], max_foreign_load: float) -> str:
    s = a["summary"]
    lines = [
        "| variant | completion tokens | TTFT p50 (ms) | Δ TTFT vs its raw (ms) "
        "| decode tok/s (median) | ÷ its raw (paired) | targets |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in VARIANTS:
        r = s[v]
        n = "/".join(str(x) for x in r["completion_tokens"])
        delta, ratio, target = "—", "—", ""
        if v in BASELINE:
            delta = f"{r['ttft_delta_ms']:+.1f}"
            ratio = f"{r['tps_ratio']:.3f} ({r['tps_ratio_paired_median']:.3f})"
        if "meets_tps_target" in r:
            ok = [
                ("tok/s ≥ 0.95×", r["meets_tps_target"]),
                ("TTFT ≤ +10 ms", r["meets_ttft_target"]),
            ]
            target = ", ".join(f"{name}: {'met' if good else 'MISSED'}" for name, good in ok)
        lines.append(
            f"| {LABELS[v]} | {n} | {r['ttft_p50_ms']:.1f} | {delta} "
            f"| {r['tokens_per_s_median']:.1f} | {ratio} | {target} |"
        )
    yes = {True: "yes", False: "NO"}
    lines += [
        "",
        f"{a['clean_reps']} of {a['wanted_reps']} repetitions undisturbed (each: every variant,"
        " same prompt, rotated order); "
        f"{a['discarded_reps']} redone because other processes used > {max_foreign_load:g}"
        " cores meanwhile. Same token count in every repetition:"
        f" {yes[a['same_token_counts']]}; identical greedy texts across variants:"
        f" {yes[a['same_texts']]}. ÷ its raw: ratio of medians (median of per-repetition"
        " ratios); the chat variants are compared with raw-chat, the others with raw.",
    ]
    return "\n".join(lines)


# -- Part B -----------------------------------------------------------------------------


@dataclass
class SoakRequest:
    client: int
    started: float
    latency_s: float
    ttft_s: float | None
    completion_tokens: int
    error: str | None


async def _soak_request(
    http: httpx.AsyncClient, idx: int, rng: random.Random, max_tokens: int
) -> SoakRequest:
    """One streamed chat request, read to the end; any failure is recorded, not raised."""
    prompt = rng.choice(SOAK_TASKS).format(rng.choice(SOAK_SUBJECTS))
    body = {
        "model": "default",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "seed": rng.getrandbits(31),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    ttft, tokens, error = None, 0, None
    try:
        async with http.stream("POST", "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                error = f"HTTP {r.status_code}: {(await r.aread())[:200]!r}"
            else:
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
                        if ttft is None and ch["delta"].get("content"):
                            ttft = time.perf_counter() - t0
                    if obj.get("usage"):
                        tokens = obj["usage"]["completion_tokens"]
                if not done and error is None:
                    error = "stream ended without [DONE]"
    except Exception as exc:  # every failure counts; the soak goes on
        error = f"{type(exc).__name__}: {exc}"
    return SoakRequest(idx, t0, time.perf_counter() - t0, ttft, tokens, error)


async def _soak_client(
    http: httpx.AsyncClient,
    idx: int,
    seed: int,
    deadline: float,
    max_tokens: int,
    out: list[SoakRequest],
) -> None:
    rng = random.Random(seed * 1000 + idx)  # each client its own reproducible prompts
    while time.perf_counter() < deadline:  # never start a request after the deadline
        out.append(await _soak_request(http, idx, rng, max_tokens))


async def _rss_sampler(
    pid: int, samples: list[tuple[float, float]], t_start: float, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        samples.append((time.perf_counter() - t_start, _rss_mb(pid)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=5)


def _rss_mb(pid: int) -> float:
    import psutil

    proc = psutil.Process(pid)
    rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(True))
    return rss / 2**20


async def _soak(args: argparse.Namespace, port: int, pid: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=args.clients + 2)
    async with httpx.AsyncClient(
        base_url=f"http://{HOST}:{port}", timeout=300, limits=limits
    ) as http:
        # Warm-up (not counted): a few requests so RSS "start" is after first-touch costs.
        rng = random.Random(args.seed - 1)
        warm = [await _soak_request(http, -1, rng, args.soak_max_tokens) for _ in range(3)]
        load = ForeignLoad()
        load.pids.append(pid)
        load.wait_quiet(args.max_foreign_load)  # best effort: a soak cannot be redone cheaply
        before = load.snap()
        t_start = time.perf_counter()
        rss: list[tuple[float, float]] = []
        stop = asyncio.Event()
        sampler = asyncio.create_task(_rss_sampler(pid, rss, t_start, stop))
        done: list[SoakRequest] = []
        deadline = t_start + args.soak_seconds
        await asyncio.gather(
            *(
                _soak_client(http, i, args.seed, deadline, args.soak_max_tokens, done)
                for i in range(args.clients)
            )
        )
        wall = time.perf_counter() - t_start
        stop.set()
        await sampler
        rss.append((wall, _rss_mb(pid)))
        foreign = load.cores_since(before)
    ok = [r for r in done if r.error is None]
    lat = sorted(r.latency_s for r in ok)
    ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
    errors = [r for r in done if r.error is not None]
    return {
        "clients": args.clients,
        "soak_seconds": args.soak_seconds,
        "wall_s": wall,
        "max_tokens": args.soak_max_tokens,
        "requests": len(done),
        "errors": len(errors),
        "error_samples": [r.error for r in errors[:10]],
        "warmup_errors": [r.error for r in warm if r.error],
        "latency_p50_s": _pct(lat, 50),
        "latency_p95_s": _pct(lat, 95),
        "ttft_p50_s": _pct(sorted(ttfts), 50),
        "requests_per_s": len(ok) / wall,
        "tokens_per_s": sum(r.completion_tokens for r in ok) / wall,
        "completion_tokens": sum(r.completion_tokens for r in ok),
        "rss_mb_start": rss[0][1],
        "rss_mb_end": rss[-1][1],
        "rss_mb_max": max(v for _, v in rss),
        "rss_samples": rss,
        "foreign_cores": foreign,
        "requests_log": [asdict(r) for r in done],
    }


def _pct(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: every value reported was observed)."""
    if not sorted_values:
        return float("nan")
    k = math.ceil(q / 100 * len(sorted_values)) - 1
    return sorted_values[min(max(k, 0), len(sorted_values) - 1)]


def part_b(args: argparse.Namespace, config: Path, port: int, workdir: Path) -> dict[str, Any]:
    with node_server(config, port, workdir / "node-b.log") as proc:
        return asyncio.run(_soak(args, port, proc.pid))


def table_b(b: dict[str, Any]) -> str:
    rows = [
        (
            "clients × duration",
            f"{b['clients']} × {b['soak_seconds']:g} s "
            f"(wall {b['wall_s']:.1f} s, max_tokens {b['max_tokens']})",
        ),
        ("requests", str(b["requests"])),
        ("errors", f"{b['errors']}" + ("" if b["errors"] == 0 else " (target: 0) MISSED")),
        (
            "latency p50 / p95 (start → [DONE])",
            f"{b['latency_p50_s']:.2f} s / {b['latency_p95_s']:.2f} s",
        ),
        ("TTFT p50 (includes queueing)", f"{b['ttft_p50_s']:.2f} s"),
        ("throughput", f"{b['requests_per_s']:.2f} req/s, {b['tokens_per_s']:.1f} generated tok/s"),
        (
            "server RSS start / end / max",
            f"{b['rss_mb_start']:.0f} / {b['rss_mb_end']:.0f} / {b['rss_mb_max']:.0f} MB",
        ),
        ("CPU used by other processes meanwhile", f"{b['foreign_cores']:.2f} cores"),
    ]
    return "\n".join(["| soak | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows])


# -- driver -----------------------------------------------------------------------------


def machine_info(model: ResolvedModel) -> dict[str, Any]:
    import llama_cpp

    import edgewise

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "llama_cpp_python": llama_cpp.__version__,
        "edgewise": edgewise.__version__,
        "httpx": httpx.__version__,
        "model": {
            "name": model.name,
            "path": str(model.path),
            "sha256": model.sha256,
            "size_bytes": model.size_bytes,
        },
        "loadavg_start": os.getloadavg(),
    }


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--reps", type=int, default=8, help="measured repetitions per variant")
    p.add_argument("--max-tokens", type=int, default=128, help="tokens per Part A generation")
    p.add_argument("--soak-seconds", type=float, default=60.0)
    p.add_argument("--clients", type=int, default=8, help="concurrent soak clients")
    p.add_argument("--soak-max-tokens", type=int, default=32)
    p.add_argument("--skip-soak", action="store_true")
    p.add_argument("--port", type=int, default=0, help="node port (0: a free one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[1, 2],
        help="llama.cpp threads on every side; Part A runs once per value (default 1,2)",
    )
    p.add_argument(
        "--max-foreign-load",
        type=float,
        default=0.2,
        metavar="CORES",
        help="redo a Part A repetition during which other processes used more CPU",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    p.add_argument("--_raw-worker", dest="raw_worker", metavar="MODEL", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.reps < 1 or args.max_tokens < 2 or args.clients < 1:
        p.error("--reps and --clients must be >= 1 and --max-tokens >= 2")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.raw_worker:
        _raw_worker(args.raw_worker, args.threads[0])
        return
    model = resolve_model(DEFAULT_MODEL)  # verifies the sha256
    info = machine_info(model)
    port = args.port or free_port()
    settings = {
        k: (os.path.relpath(v) if isinstance(v, Path) else v)
        for k, v in vars(args).items()
        if k != "raw_worker"
    }
    settings.update(
        n_ctx=N_CTX,
        n_batch=N_BATCH,
        temperature=0,
        **SAMPLING,
        port=port,
        prompts=PROMPTS,
        chat_prompts=CHAT_PROMPTS,
    )
    result: dict[str, Any] = {"machine": info, "settings": settings}
    tables: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edgewise-bench-") as tmp:
        workdir = Path(tmp)
        def node_config(threads: int) -> Path:
            # max_queue above --clients: the soak measures serving, not admission (429s).
            # Sampling spelled out, so the node cannot drift from the raw side's settings.
            # The node's state (audit log, job queue) lives in the temporary folder.
            path = workdir / f"node-{threads}.yaml"
            path.write_text(json.dumps({  # JSON is YAML
                "serving": {"max_queue": max(32, 2 * args.clients)},
                "engine": {"n_ctx": N_CTX, "n_batch": N_BATCH, "n_threads": threads},
                "sampling": SAMPLING,
                "audit": {"path": str(workdir / "audit.sqlite")},
                "routing": {"jobs_path": str(workdir / "jobs.sqlite")},
            }))
            return path

        result["part_a"] = {}
        for threads in args.threads:
            result["part_a"][str(threads)] = a = part_a(
                args, model.path, node_config(threads), port, workdir, threads)
            tables.append(
                f"### Part A — node overhead vs raw llama-cpp-python, {threads} thread(s)\n\n"
                + table_a(a, args.max_foreign_load)
            )
            print(tables[-1] + "\n", flush=True)
        config = node_config(args.threads[-1])
        if not args.skip_soak:
            result["part_b"] = part_b(args, config, port, workdir)
            tables.append("### Part B — soak\n\n" + table_b(result["part_b"]))
            print(tables[-1] + "\n", flush=True)
    info["loadavg_end"] = os.getloadavg()

    args.out.mkdir(parents=True, exist_ok=True)
    header = (
        f"{info['timestamp']} · {info['cpu_count']} × {info['cpu_model']} · "
        f"Python {info['python']} · llama-cpp-python {info['llama_cpp_python']} · "
        f"{model.name} ({model.sha256[:12]}…)\n\n"
        f"`{' '.join(['.venv/bin/python', 'bench/serving.py', *sys.argv[1:]])}`\n"
    )
    (args.out / "serving.md").write_text(
        "## edgewise serving benchmark\n\n" + header + "\n" + "\n\n".join(tables) + "\n"
    )
    (args.out / "serving.json").write_text(json.dumps(result, indent=1) + "\n")
    _progress(f"wrote {args.out / 'serving.md'} and {args.out / 'serving.json'}")


if __name__ == "__main__":
    main()
