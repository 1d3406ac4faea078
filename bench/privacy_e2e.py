"""End-to-end sections of ``bench/privacy.py``: what actually reaches an upstream tier.

A real node (the edgewise app, in this process) routes every request to its ``cloud``
tier (clearance ``public``), which is a recording, echoing OpenAI-compatible server
(``edgewise.testing.upstream``) running under uvicorn on a loopback port — a real HTTP
hop. Everything the upstream receives is searched for every gold value with
``edgewise.testing.leaks.leaked`` (all spellings: escapes, look-alikes, digit runs).

Side by side, in one run, on the same requests:

* ``no guard`` — requests forwarded as they are (what a plain proxy does);
* ``Presidio masking`` — what a user would otherwise set up (LiteLLM's Presidio
  guardrail does this): vanilla ``presidio-analyzer`` + ``presidio-anonymizer``
  (default recognizers, ``replace`` → ``<ENTITY_TYPE>``) on each message's content,
  then forwarded;
* ``edgewise redact`` — the cloud tier with ``escalation: redact``;
* ``edgewise redact + proper nouns`` — the same with ``privacy.proper_nouns: true``
  (every proper-noun run is redacted too: the fix for names the NER misses);
* ``edgewise forbid`` — the cloud tier with ``escalation: forbid`` (the default).

Sections:

* ``leak`` — per gold entity type (the types the guard claims, level ≥ internal): values
  that reached the upstream ÷ values sent, per configuration; and how many requests each
  configuration let through; plus over-redaction on benign MMLU prompts.
* ``coverage_leak`` — the ``coverage`` cases (``bench/privacy_coverage.py``: every Safe
  Harbor / GDPR identifier category) through the node: leak rate per category under no
  guard, Presidio masking, edgewise redact and edgewise forbid; and the share of near
  misses (prompts about no one) each edgewise tier lets through untouched.
* ``roundtrip`` — redacted escalations whose upstream echoes the placeholders: share of
  answers that come back to the client exactly restored, streaming and non-streaming,
  and inside tool-call arguments.
* ``overhead`` — wall time the guard adds to a routed request (privacy on vs off, same
  node and upstream, alternated request by request), for 50-, 500- and 4,000-token
  prompts, p50/p95.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn

from edgewise.api.app import create_app
from edgewise.config import parse_config
from edgewise.engines.fake import FakeEngine
from edgewise.node import Node
from edgewise.testing.answers import answer_text
from edgewise.testing.leaks import leaked, normalize_received, strings_of
from edgewise.testing.upstream import RecordingUpstream

__all__ = ["register"]


async def _send(up: Any, plain: httpx.AsyncClient, masker: Any, nodes: dict[str, Any],
                name: str, body: dict[str, Any]) -> tuple[list[Any], httpx.Response]:
    """One request through configuration ``name``; what the upstream received for it."""
    before = len(up.received)
    if name == "no guard":
        r = await plain.post("/chat/completions", json=body)
    elif name == "Presidio masking":
        r = await plain.post("/chat/completions", json=masker.apply(body))
    else:
        r = await nodes[name].post(body)
    return up.received[before:], r

TOOLS = [{"type": "function", "function": {
    "name": "update_customer", "description": "Update a customer record.",
    "parameters": {"type": "object", "properties": {"note": {"type": "string"}}}}}]
CONFIGS = ("no guard", "Presidio masking", "edgewise redact", "edgewise redact + proper nouns",
           "edgewise forbid")


# -- the upstream: a real server on a loopback port ---------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_upstream() -> Iterator[tuple[RecordingUpstream, str]]:
    up = RecordingUpstream()
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(up.app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/v1/models", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)
    try:
        yield up, url + "/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# -- requests -----------------------------------------------------------------------------

def to_messages(case: Any) -> tuple[list[dict[str, Any]], bool]:
    """A bench case (segments + gold) as a chat request; True if it needs tools."""
    segs, src = case.segments, case.source
    if src == "adv:system prompt":
        return [{"role": "system", "content": segs[0]},
                {"role": "user", "content": segs[1]}], False
    if src == "adv:json tool arguments":
        return [{"role": "user", "content": segs[0]},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "update_customer", "arguments": segs[1]}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "done"},
                {"role": "user", "content": "Thanks, confirm it."}], True
    return [{"role": "user", "content": s} for s in segs], False


def gold_values(case: Any, gold_level: Callable[[str], str | None]) -> list[tuple[str, str]]:
    """(entity, value) of every gold span the guard claims (level ≥ internal)."""
    out = []
    for g in case.gold:
        need = gold_level(g.entity)
        if need is None or need == "public":
            continue
        out.append((g.entity, case.segments[g.segment][g.start:g.end]))
    return out


class Masker:
    """Vanilla Presidio analyzer + anonymizer on each message (LiteLLM's guardrail)."""

    def __init__(self, vanilla: Any) -> None:
        from presidio_anonymizer import AnonymizerEngine

        self.analyzer = vanilla.analyzer
        self.anonymizer = AnonymizerEngine()

    def mask(self, text: str) -> str:
        results = self.analyzer.analyze(text=text, language="en")
        return str(self.anonymizer.anonymize(text=text, analyzer_results=results).text)

    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        msgs = []
        for m in body["messages"]:
            m = dict(m)
            if isinstance(m.get("content"), str) and m["content"]:
                m["content"] = self.mask(m["content"])
            msgs.append(m)
        return {**body, "messages": msgs}


def _node_app(upstream_url: str, escalation: str, *, privacy: bool = True,
              detector: Any = None, tmp: str) -> Any:
    os.makedirs(tmp, exist_ok=True)
    cfg = parse_config({
        "node": {"name": "bench-node"},
        "engine": {"kind": "fake", "n_ctx": 32768},
        "tiers": [
            {"name": "device", "endpoints": [{"engine": "fake"}], "clearance": "phi"},
            {"name": "cloud", "endpoints": [{"url": upstream_url, "model": "recording"}],
             "clearance": "public", "escalation": escalation, "cost_per_1k_tokens": 0.6},
        ],
        "privacy": {"enabled": privacy},
        "routing": {"jobs_path": os.path.join(tmp, f"jobs-{escalation}-{privacy}.sqlite")},
        "audit": {"path": os.path.join(tmp, f"audit-{escalation}-{privacy}.sqlite")},
    })
    node = Node(cfg, FakeEngine(model="device-model", n_ctx=32768))
    app = create_app(node, manage_lifecycle=False, detector=detector if privacy else None)
    return node, app


class NodeClient:
    """An edgewise node in this process (ASGI), its cloud tier the real upstream."""

    def __init__(self, upstream_url: str, escalation: str, *, tmp: str, detector: Any,
                 privacy: bool = True) -> None:
        self.node, self.app = _node_app(upstream_url, escalation, privacy=privacy,
                                        detector=detector, tmp=tmp)

    async def __aenter__(self) -> NodeClient:
        await self.node.start()
        self.router = self.app.state.router
        self.router.start()
        await self.router.wait_guard()
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                        base_url="http://node", timeout=60)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        await self.router.stop()
        await self.node.stop()

    async def post(self, body: dict[str, Any]) -> httpx.Response:
        return await self.client.post("/v1/chat/completions", json=body)


# -- leak ---------------------------------------------------------------------------------

async def _leak(ctx: Any, cases: list[Any], benign: list[str], gold_level: Any,
                tmp: str) -> dict[str, Any]:
    from edgewise.config import parse_config
    from edgewise.privacy import Detector

    masker = Masker(ctx.vanilla)
    detector = ctx.edgewise.detector
    strict_cfg = parse_config({"privacy": {"proper_nouns": True}}).privacy
    strict = Detector(strict_cfg, nlp_engine=detector.nlp_engine)
    sent: dict[str, Counter[str]] = defaultdict(Counter)
    leaks: dict[str, Counter[str]] = defaultdict(Counter)
    through: Counter[str] = Counter()
    over_redacted: Counter[str] = Counter()
    with serve_upstream() as (up, url):
        plain = httpx.AsyncClient(base_url=url, timeout=60)
        async with NodeClient(url, "redact", tmp=tmp, detector=detector) as red, \
                NodeClient(url, "redact", tmp=os.path.join(tmp, "strict"),
                           detector=strict) as red2, \
                NodeClient(url, "forbid", tmp=tmp, detector=detector) as forb:
            nodes = {"edgewise redact": red, "edgewise redact + proper nouns": red2,
                     "edgewise forbid": forb}
            for case in cases:
                messages, tools = to_messages(case)
                body: dict[str, Any] = {"model": "cloud", "messages": messages,
                                        "max_tokens": 16}
                if tools:
                    body["tools"] = TOOLS
                values = gold_values(case, gold_level)
                for name in CONFIGS:
                    got, r = await _send(up, plain, masker, nodes, name, body)
                    if got and r.status_code == 200:
                        through[name] += 1
                    text = normalize_received(strings_of(got))
                    for entity, value in values:
                        sent[name][entity] += 1
                        if got and leaked(value, "", normalized=text):
                            leaks[name][entity] += 1
            for prompt in benign:  # over-redaction on prompts about no one
                for name in ("edgewise redact", "edgewise redact + proper nouns"):
                    r = await nodes[name].post({"model": "cloud", "max_tokens": 8, "messages": [
                        {"role": "user", "content": prompt}]})
                    over_redacted[name] += int(r.headers.get("x-edgewise-redacted", "0")) > 0
        await plain.aclose()
    return {"sent": sent, "leaks": leaks, "through": through, "over_redacted": over_redacted}


def leak_section(ctx: Any, gold_level: Callable[[str], str | None]
                 ) -> tuple[dict[str, Any], str]:
    import tempfile

    from privacy_data import adversarial_cases, benign_prompts

    cases = ctx.faker + ctx.own + adversarial_cases(ctx.args.adversarial,
                                                     seed=ctx.args.seed + 2)
    benign = benign_prompts(min(ctx.args.benign, 300), seed=ctx.args.seed + 3)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = asyncio.run(_leak(ctx, cases, benign, gold_level, tmp))
        secs = time.perf_counter() - t0
    sent, leaks, through = res["sent"], res["leaks"], res["through"]
    entities = sorted(sent["no guard"], key=lambda e: (-sent["no guard"][e], e))
    md = [f"### End-to-end leak rate: {len(cases)} requests through a node to a recording "
          "upstream\n",
          "Values of each gold type that reached the upstream ÷ values in the requests "
          "(all spellings checked). The guard claims every type below; `PERSON` rests on "
          "spaCy's small NER model.\n",
          "| entity | level | values | " + " | ".join(CONFIGS) + " |",
          "|---|---|---:|" + "---:|" * len(CONFIGS)]
    rows = []
    for e in entities:
        n = sent["no guard"][e]
        rates = {c: leaks[c][e] / n for c in CONFIGS}
        rows.append({"entity": e, "level": gold_level(e), "values": n, **rates})
        md.append(f"| {e} | {gold_level(e)} | {n} | "
                  + " | ".join(f"{rates[c]:.3f}" for c in CONFIGS) + " |")
    total = {c: sum(leaks[c].values()) / max(1, sum(sent[c].values())) for c in CONFIGS}
    md.append("| **all** | | " + str(sum(sent["no guard"].values())) + " | "
              + " | ".join(f"**{total[c]:.3f}**" for c in CONFIGS) + " |")
    md.append("")
    md.append("| | " + " | ".join(CONFIGS) + " |")
    md.append("|---|" + "---:|" * len(CONFIGS))
    md.append("| requests that reached the upstream | "
              + " | ".join(f"{through[c] / len(cases):.1%}" for c in CONFIGS) + " |")
    md.append("")
    over = res["over_redacted"]
    md.append(f"Over-redaction on {len(benign)} benign MMLU prompts (about no one): sent to "
              "the redacting tier with at least one placeholder — "
              + "; ".join(f"{k}: {over[k] / len(benign):.1%}" for k in over)
              + " (names of historical figures, authors, places…).\n")
    md.append(f"({secs:.0f} s; load average {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} CPUs.)\n")
    return ({"requests": len(cases), "rows": rows, "total": total,
             "through": {c: through[c] / len(cases) for c in CONFIGS},
             "over_redacted": {k: v / len(benign) for k, v in res["over_redacted"].items()},
             "benign": len(benign)}, "\n".join(md))


# -- coverage leak -------------------------------------------------------------------------

COVERAGE_CONFIGS = ("no guard", "Presidio masking", "edgewise redact", "edgewise forbid")


def coverage_messages(case: Any) -> tuple[list[dict[str, Any]], bool]:
    """A coverage case as a chat request: JSON ones as a tool call's arguments."""
    if case.meta.get("shape") == "tool_args":
        return [{"role": "user", "content": case.segments[0]},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "update_customer",
                                  "arguments": case.segments[1]}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "done"},
                {"role": "user", "content": "Thanks, confirm it."}], True
    return [{"role": "user", "content": s} for s in case.segments], False


async def _coverage_leak(ctx: Any, cases: list[Any], near: list[Any], tmp: str
                         ) -> dict[str, Any]:
    from privacy_coverage import raw_values

    masker = Masker(ctx.vanilla)
    detector = ctx.edgewise.detector
    sent: Counter[str] = Counter()
    leaks: dict[str, Counter[str]] = defaultdict(Counter)
    through: dict[str, Counter[str]] = defaultdict(Counter)
    with serve_upstream() as (up, url):
        plain = httpx.AsyncClient(base_url=url, timeout=60)
        async with NodeClient(url, "redact", tmp=tmp, detector=detector) as red, \
                NodeClient(url, "forbid", tmp=tmp, detector=detector) as forb:
            nodes = {"edgewise redact": red, "edgewise forbid": forb}

            async def send(name: str, body: dict[str, Any]) -> tuple[list[Any], httpx.Response]:
                return await _send(up, plain, masker, nodes, name, body)

            for case in cases:
                messages, tools = coverage_messages(case)
                body: dict[str, Any] = {"model": "cloud", "messages": messages,
                                        "max_tokens": 16}
                if tools:
                    body["tools"] = TOOLS
                values = raw_values(case)
                for category, _ in values:
                    sent[category] += 1
                for name in COVERAGE_CONFIGS:
                    got, _r = await send(name, body)
                    text = normalize_received(strings_of(got))
                    for category, value in values:
                        if got and leaked(value, "", normalized=text):
                            leaks[name][category] += 1
            # near misses: were they let through untouched?
            for case in near:
                cat = case.source.removeprefix("near:")
                body = {"model": "cloud", "max_tokens": 8,
                        "messages": coverage_messages(case)[0]}
                through["n"][cat] += 1
                for name in ("edgewise redact", "edgewise forbid"):
                    got, r = await send(name, body)
                    untouched = bool(got) and r.status_code == 200 and \
                        int(r.headers.get("x-edgewise-redacted", "0")) == 0
                    through[name][cat] += untouched
        await plain.aclose()
    return {"sent": sent, "leaks": leaks, "through": through}


def coverage_leak_section(ctx: Any) -> tuple[dict[str, Any], str]:
    import tempfile

    from privacy_coverage import CATEGORIES, bench_cases

    cases, near = bench_cases(ctx.args.coverage, ctx.args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = asyncio.run(_coverage_leak(ctx, cases, near, tmp))
        secs = time.perf_counter() - t0
    sent, leaks, through = res["sent"], res["leaks"], res["through"]
    md = [f"### Coverage end to end: {len(cases)} requests through a node to a recording "
          "upstream\n",
          "Values of each category that reached the upstream ÷ values sent (all spellings "
          "checked; JSON cases are tool-call arguments). edgewise = the working tree; the "
          "guard before issue 14 is measured by recall only (`coverage` section). Near "
          "misses: prompts about no one that reached the upstream untouched (not "
          "redacted, not refused).\n",
          "| category | values | " + " | ".join(COVERAGE_CONFIGS)
          + " | near misses | untouched: redact | untouched: forbid |",
          "|---|---:|" + "---:|" * len(COVERAGE_CONFIGS) + "---:|---:|---:|"]
    rows = []
    for cat in CATEGORIES:
        n = sent[cat]
        if not n:
            continue
        rates = {c: leaks[c][cat] / n for c in COVERAGE_CONFIGS}
        nn = through["n"][cat]
        ok = {c: through[c][cat] / nn if nn else None
              for c in ("edgewise redact", "edgewise forbid")}
        rows.append({"category": cat, "values": n, **rates, "near_misses": nn,
                     "untouched": ok})
        md.append(f"| {cat} | {n} | " + " | ".join(f"{rates[c]:.3f}" for c in COVERAGE_CONFIGS)
                  + f" | {nn} | " + " | ".join("—" if ok[c] is None else f"{ok[c]:.3f}"
                                               for c in ok) + " |")
    tot = sum(sent.values())
    total = {c: sum(leaks[c].values()) / max(1, tot) for c in COVERAGE_CONFIGS}
    nn = sum(through["n"].values())
    untouched = {c: sum(through[c].values()) / max(1, nn)
                 for c in ("edgewise redact", "edgewise forbid")}
    md.append(f"| **all** | {tot} | " + " | ".join(f"**{total[c]:.3f}**"
                                                   for c in COVERAGE_CONFIGS)
              + f" | {nn} | " + " | ".join(f"{v:.3f}" for v in untouched.values()) + " |")
    md.append(f"\n({secs:.0f} s; load average {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} CPUs.)\n")
    return ({"requests": len(cases), "rows": rows, "total": total,
             "near_misses": nn, "untouched": untouched}, "\n".join(md))


# -- round trip ---------------------------------------------------------------------------

async def _roundtrip(ctx: Any, cases: list[Any], tmp: str) -> dict[str, Any]:
    stats: dict[str, Counter[str]] = defaultdict(Counter)
    with serve_upstream() as (_up, url):
        async with NodeClient(url, "redact", tmp=tmp, detector=ctx.edgewise.detector) as red:
            for case in cases:
                messages, tools = to_messages(case)
                last = next(m["content"] for m in reversed(messages) if m["role"] == "user")
                for stream in (False, True):
                    kind = ("tool call" if tools else "stream" if stream else "json")
                    if tools and stream:
                        kind = "tool call (stream)"
                    body: dict[str, Any] = {"model": "cloud", "messages": messages,
                                            "max_tokens": 16, "stream": stream}
                    if tools:
                        body["tools"] = TOOLS
                    r = await red.post(body)
                    redacted = int(r.headers.get("x-edgewise-redacted", "0"))
                    if r.status_code != 200 or not redacted:
                        stats[kind]["not redacted"] += 1
                        continue
                    text = answer_text(r.text, stream=stream)
                    if tools:
                        exact = json.loads(text)["echo"] == "You said: " + last
                    else:
                        exact = text == "You said: " + last
                    stats[kind]["redacted"] += 1
                    stats[kind]["exact"] += exact
    return stats


def roundtrip_section(ctx: Any) -> tuple[dict[str, Any], str]:
    import tempfile

    from privacy_data import adversarial_cases

    adv = adversarial_cases(max(2, ctx.args.adversarial // 4), seed=ctx.args.seed + 5)
    cases = [c for c in ctx.own if c.source.startswith("own:")] + \
        [c for c in adv if c.source in ("adv:json tool arguments", "adv:code block",
                                         "adv:split across messages")] + ctx.faker[:200]
    with tempfile.TemporaryDirectory() as tmp:
        stats = asyncio.run(_roundtrip(ctx, cases, tmp))
    md = ["### Redaction round trip (the upstream echoes the redacted text)\n",
          "| answer | redacted requests | restored exactly |", "|---|---:|---:|"]
    rows = []
    for kind, s in stats.items():
        n = s["redacted"]
        rows.append({"kind": kind, "redacted": n, "exact": s["exact"] / n if n else None,
                     "not_redacted": s["not redacted"]})
        md.append(f"| {kind} | {n} | {s['exact'] / n if n else float('nan'):.3f} |")
    md.append("\n`restored exactly`: the client's answer equals the echo of its own last "
              "message, character for character (for tool calls, inside the JSON "
              "arguments). Requests with nothing to redact are left out.\n")
    return {"rows": rows}, "\n".join(md)


# -- overhead -----------------------------------------------------------------------------

async def _overhead(ctx: Any, sizes: dict[int, list[str]], reps: int, tmp: str
                    ) -> dict[int, dict[str, list[float]]]:
    out: dict[int, dict[str, list[float]]] = {}
    detector = ctx.edgewise.detector
    with serve_upstream() as (_up, url):
        async with NodeClient(url, "redact", tmp=tmp, detector=detector) as on, \
                NodeClient(url, "redact", tmp=tmp, detector=None, privacy=False) as off:
            for tokens, texts in sizes.items():
                times: dict[str, list[float]] = {"guard on": [], "guard off": []}
                for i in range(reps):
                    body = {"model": "cloud", "max_tokens": 8,
                            "messages": [{"role": "user", "content": texts[i % len(texts)]}]}
                    pair = [("guard on", on), ("guard off", off)]
                    if i % 2:
                        pair.reverse()
                    for name, nc in pair:
                        detector.clear_cache()  # every request is new text
                        t = time.perf_counter()
                        r = await nc.post(body)
                        times[name].append(time.perf_counter() - t)
                        assert r.status_code == 200, r.text
                out[tokens] = times
    return out


def overhead_section(ctx: Any, pct: Callable[[list[float], float], float],
                     count: Callable[[str], int]) -> tuple[dict[str, Any], str]:
    import tempfile

    pool = [" ".join(c.segments) for c in ctx.own + ctx.faker]
    sizes: dict[int, list[str]] = {}
    for target in (50, 500, 4000):
        texts, i = [], 0
        while len(texts) < 8:
            parts, n = [], 0
            while n < target:
                s = pool[i % len(pool)]
                i += 1
                parts.append(s)
                n += count(s) + 1
            texts.append(" ".join(parts))
        sizes[target] = texts
    with tempfile.TemporaryDirectory() as tmp:
        res = asyncio.run(_overhead(ctx, sizes, ctx.args.reps, tmp))
    md = ["### Added latency per routed request (guard on − off; same node, same upstream)\n",
          "| prompt tokens | guard off p50 / p95 (ms) | guard on p50 / p95 (ms) | "
          "added p50 / p95 (ms) |", "|---:|---:|---:|---:|"]
    rows = []
    for tokens, t in res.items():
        off = [x * 1000 for x in t["guard off"]]
        on = [x * 1000 for x in t["guard on"]]
        row = {"tokens": tokens, "off_p50": statistics.median(off), "off_p95": pct(off, .95),
               "on_p50": statistics.median(on), "on_p95": pct(on, .95)}
        rows.append(row)
        md.append(f"| {tokens} | {row['off_p50']:.1f} / {row['off_p95']:.1f} | "
                  f"{row['on_p50']:.1f} / {row['on_p95']:.1f} | "
                  f"{row['on_p50'] - row['off_p50']:.1f} / "
                  f"{row['on_p95'] - row['off_p95']:.1f} |")
    md.append("\nGuard on includes detection, redaction for the public tier, the re-scan of "
              "the redacted text and restoration of the answer; the per-message cache is "
              f"cleared before each request. Load average {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} CPUs.\n")
    return {"rows": rows}, "\n".join(md)


def register(section: Callable[[str], Callable[[Any], Any]], *,
             gold_level: Callable[[str], str | None],
             pct: Callable[[list[float], float], float],
             token_counter: Callable[[], Callable[[str], int]]) -> None:
    """Add these sections to ``bench/privacy.py``'s registry (its helpers passed in, so
    this module never imports the script it extends)."""
    section("leak")(lambda ctx: leak_section(ctx, gold_level))
    section("coverage_leak")(coverage_leak_section)
    section("roundtrip")(roundtrip_section)
    section("overhead")(lambda ctx: overhead_section(ctx, pct, token_counter()))
