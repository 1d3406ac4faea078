"""Tool calling on the local model: does the call parse, pick the right function, carry
the right arguments — per model, side by side with llama.cpp's own llama-server.

The task set (built here, with gold calls): six tools a front desk, a plant or a shop
would give an agent, 24 requests that each call exactly one of them with arguments the
request determines, and 6 that call none (greetings, chit-chat, general knowledge).
Every request is sent once (greedy, ``max_tokens`` 160) to:

- **edgewise auto** — the node, ``tool_choice: "auto"`` (the call grammar is lazy: it
  starts at the call's opening, so the model may also answer in text);
- **edgewise no grammar** — the same node and prompt with the call grammar switched
  off (``tiers.local._tool_grammar`` patched): what the grammar buys;
- **edgewise required** — ``tool_choice: "required"`` (call requests only);
- **llama-server auto / required** — llama.cpp's server from the llama.cpp vendored in
  the pinned llama-cpp-python, ``--jinja`` (its own tool-call formats and grammars).

Metrics, over call requests: **parses** — the answer has a call to one of the tools
whose arguments parse and validate against its schema; **right function** — the first
call names the gold function; **right arguments** — and every gold argument matches
(strings case-insensitive, numbers equal; optional arguments the gold leaves out are not
judged). Over no-call requests: **no call** — the answer is text. And seconds per
request (mean; the tool definitions are one shared prefix, reused by both servers).

    .venv/bin/python bench/tools.py                          # ~25 min on 2 idle cores
    .venv/bin/python bench/tools.py --models smollm2-135m-instruct --limit 6
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema

sys.path.insert(0, str(Path(__file__).resolve().parent))
import batching as batching_bench  # bench/batching.py: llama-server folder and command
import serving as serving_bench  # bench/serving.py: free port, machine info

HOST = "127.0.0.1"
RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct",
          "qwen2.5-coder-1.5b-instruct"]
SYSTEM = "You are a helpful assistant. Use a tool when one fits the request."


def tool(name: str, description: str, properties: dict[str, Any],
         required: list[str]) -> dict[str, Any]:
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": properties, "required": required,
                       "additionalProperties": False}}}


TOOLS = [
    tool("get_weather", "Get the current weather in a city.",
         {"city": {"type": "string", "description": "City name, e.g. Paris"},
          "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, ["city"]),
    tool("convert_currency", "Convert an amount of money from one currency to another.",
         {"amount": {"type": "number"},
          "from_currency": {"type": "string", "description": "ISO code, e.g. USD"},
          "to_currency": {"type": "string", "description": "ISO code, e.g. EUR"}},
         ["amount", "from_currency", "to_currency"]),
    tool("set_thermostat", "Set the target temperature of a room, in degrees Celsius.",
         {"room": {"type": "string"}, "celsius": {"type": "integer"}}, ["room", "celsius"]),
    tool("set_timer", "Start a countdown timer.",
         {"minutes": {"type": "integer", "description": "Length in minutes"},
          "label": {"type": "string"}}, ["minutes"]),
    tool("lookup_order", "Look up the status of a customer order by its id.",
         {"order_id": {"type": "string"}}, ["order_id"]),
    tool("translate", "Translate a text into another language.",
         {"text": {"type": "string"},
          "target_language": {"type": "string", "description": "e.g. German"}},
         ["text", "target_language"]),
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}

# (request, gold function or None, gold arguments)
TASKS: list[tuple[str, str | None, dict[str, Any]]] = [
    ("What's the weather like in Paris right now?", "get_weather", {"city": "Paris"}),
    ("Is it raining in Tokyo? Tell me in celsius.", "get_weather",
     {"city": "Tokyo", "unit": "celsius"}),
    ("Check the current weather in Chicago in fahrenheit.", "get_weather",
     {"city": "Chicago", "unit": "fahrenheit"}),
    ("How warm is it in Madrid today?", "get_weather", {"city": "Madrid"}),
    ("Convert 100 US dollars to euros.", "convert_currency",
     {"amount": 100, "from_currency": "USD", "to_currency": "EUR"}),
    ("How many Japanese yen is 50 GBP?", "convert_currency",
     {"amount": 50, "from_currency": "GBP", "to_currency": "JPY"}),
    ("Please convert 250 EUR into CHF.", "convert_currency",
     {"amount": 250, "from_currency": "EUR", "to_currency": "CHF"}),
    ("I need 20 Canadian dollars in US dollars, how much is that?", "convert_currency",
     {"amount": 20, "from_currency": "CAD", "to_currency": "USD"}),
    ("Set the kitchen to 21 degrees.", "set_thermostat", {"room": "kitchen", "celsius": 21}),
    ("Make the bedroom 18 degrees Celsius tonight.", "set_thermostat",
     {"room": "bedroom", "celsius": 18}),
    ("Turn the office thermostat up to 23.", "set_thermostat",
     {"room": "office", "celsius": 23}),
    ("The lab is too cold, set it to 22 degrees.", "set_thermostat",
     {"room": "lab", "celsius": 22}),
    ("Set a timer for 10 minutes.", "set_timer", {"minutes": 10}),
    ("Start a 25 minute timer labelled focus.", "set_timer",
     {"minutes": 25, "label": "focus"}),
    ("Remind me in 5 minutes with a timer.", "set_timer", {"minutes": 5}),
    ("Timer, 45 minutes, for the bread.", "set_timer", {"minutes": 45, "label": "bread"}),
    ("Where is my order A1234?", "lookup_order", {"order_id": "A1234"}),
    ("Can you check the status of order 98765?", "lookup_order", {"order_id": "98765"}),
    ("Has order ZX-42 shipped yet?", "lookup_order", {"order_id": "ZX-42"}),
    ("Look up order number 5550123 for me.", "lookup_order", {"order_id": "5550123"}),
    ("Translate 'good morning' into German.", "translate",
     {"text": "good morning", "target_language": "German"}),
    ("How do you say 'thank you' in Japanese?", "translate",
     {"text": "thank you", "target_language": "Japanese"}),
    ("Translate 'where is the station' to French.", "translate",
     {"text": "where is the station", "target_language": "French"}),
    ("Please translate 'I love coffee' into Spanish.", "translate",
     {"text": "I love coffee", "target_language": "Spanish"}),
    ("Hi there! How are you today?", None, {}),
    ("Write a two-line poem about the sea.", None, {}),
    ("What does CPU stand for?", None, {}),
    ("Thanks, that's all I needed.", None, {}),
    ("Tell me a short joke.", None, {}),
    ("Who wrote Romeo and Juliet?", None, {}),
]

CONFIGS = ["edgewise auto", "edgewise no grammar", "edgewise required", "llama-server auto",
           "llama-server required"]


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- scoring -----------------------------------------------------------------------------


def _norm(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip().strip(".!?'\"").strip().casefold()
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    return value


def score(message: dict[str, Any], gold: str | None,
          gold_args: dict[str, Any]) -> dict[str, Any]:
    """What one answer got right (see the module docstring)."""
    calls = message.get("tool_calls") or []
    out: dict[str, Any] = {"called": bool(calls), "parses": False, "function": False,
                           "arguments": False}
    if not calls:
        return out
    first = calls[0]["function"]
    try:
        args = json.loads(first["arguments"])
        jsonschema.validate(args, SCHEMAS[first["name"]])
        out["parses"] = all(_valid(c) for c in calls)
    except (KeyError, ValueError, jsonschema.ValidationError):
        return out
    out["function"] = first["name"] == gold
    out["arguments"] = out["function"] and all(
        _norm(args.get(k)) == _norm(v) for k, v in gold_args.items())
    return out


def _valid(call: dict[str, Any]) -> bool:
    try:
        jsonschema.validate(json.loads(call["function"]["arguments"]),
                            SCHEMAS[call["function"]["name"]])
        return True
    except (KeyError, ValueError, jsonschema.ValidationError):
        return False


# -- servers -----------------------------------------------------------------------------


@contextlib.contextmanager
def edgewise_node(model: str, workdir: Path, threads: int) -> Iterator[str]:
    """The node in a thread of this process (so the no-grammar run can patch it)."""
    import uvicorn

    from edgewise.api.app import create_app
    from edgewise.config import parse_config
    from edgewise.node import Node, build_engine

    cfg = parse_config({"node": {"name": "bench-tools"},
                        "engine": {"model": model, "n_ctx": 4096, "n_threads": threads,
                                   "parallel": 1},
                        "audit": {"path": str(workdir / "audit.sqlite")},
                        "routing": {"jobs_path": str(workdir / "jobs.sqlite")}})
    port = serving_bench.free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(Node(cfg, build_engine(cfg))),
                                           host=HOST, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + 180
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                break
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the node did not become ready")
        time.sleep(0.25)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextlib.contextmanager
def no_grammar() -> Iterator[None]:
    """The node with its tool-call grammar switched off: the prompt and the reading of
    calls out of the answer are unchanged, the sampler is free."""
    from edgewise.engines.grammar import ToolGrammar
    from edgewise.tiers import local

    saved = local._tool_grammar
    local._tool_grammar = lambda *a: ToolGrammar(None)  # type: ignore[assignment,arg-type]
    try:
        yield
    finally:
        local._tool_grammar = saved


# -- one run -----------------------------------------------------------------------------


def ask(http: httpx.Client, request: str, choice: str) -> tuple[dict[str, Any], float]:
    body = {"model": "default", "temperature": 0, "max_tokens": 160, "tools": TOOLS,
            "tool_choice": choice, "messages": [{"role": "system", "content": SYSTEM},
                                                {"role": "user", "content": request}]}
    t0 = time.perf_counter()
    r = http.post("/v1/chat/completions", json=body)
    elapsed = time.perf_counter() - t0
    if r.status_code != 200:
        return {"error": f"HTTP {r.status_code}: {r.text[:300]}"}, elapsed
    return r.json()["choices"][0]["message"], elapsed


def run_config(url: str, label: str, tasks: list[tuple[str, str | None, dict[str, Any]]]
               ) -> list[dict[str, Any]]:
    choice = "required" if label.endswith("required") else "auto"
    rows = []
    with httpx.Client(base_url=url, timeout=600) as http:
        for request, gold, gold_args in tasks:
            if gold is None and choice == "required":
                continue
            message, elapsed = ask(http, request, choice)
            rows.append({"request": request, "gold": gold, "gold_args": gold_args,
                         "seconds": elapsed, "message": message,
                         **score(message, gold, gold_args)})
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    calls = [r for r in rows if r["gold"] is not None]
    chat = [r for r in rows if r["gold"] is None]

    def share(items: list[dict[str, Any]], key: str) -> float | None:
        return sum(bool(r[key]) for r in items) / len(items) if items else None

    return {"call_requests": len(calls), "parses": share(calls, "parses"),
            "function": share(calls, "function"), "arguments": share(calls, "arguments"),
            "chat_requests": len(chat),
            "no_call": (sum(not r["called"] for r in chat) / len(chat)) if chat else None,
            "errors": sum("error" in r["message"] for r in rows),
            "s_per_request": statistics.mean(r["seconds"] for r in rows)}


def run_model(name: str, args: argparse.Namespace, tmp: Path,
              server_dir: Path | None) -> dict[str, Any]:
    from edgewise.models import resolve_model

    tasks = TASKS if args.limit is None else (
        [t for t in TASKS if t[1]][:args.limit] + [t for t in TASKS if not t[1]][:2])
    out: dict[str, Any] = {"model": name, "configs": {}}
    workdir = tmp / name
    workdir.mkdir()
    with edgewise_node(name, workdir, args.threads) as url:
        for label in CONFIGS[:3]:
            progress(f"  {label}")
            with no_grammar() if label.endswith("no grammar") else contextlib.nullcontext():
                rows = run_config(url, label, tasks)
            out["configs"][label] = {"summary": summarize(rows), "rows": rows}
    if server_dir is not None:
        port = serving_bench.free_port()
        cmd, env = batching_bench.llama_server_cmd(
            server_dir, resolve_model(name).path, parallel=1, n_ctx=4096,
            threads=args.threads, port=port)
        cmd.append("--jinja")
        with batching_bench.running(cmd, ready_url=f"http://{HOST}:{port}/health",
                                    log=workdir / "llama-server.log", env=env):
            for label in CONFIGS[3:]:
                progress(f"  {label}")
                rows = run_config(f"http://{HOST}:{port}", label, tasks)
                out["configs"][label] = {"summary": summarize(rows), "rows": rows}
    return out


def pct(v: float | None) -> str:
    return "–" if v is None else f"{v:.0%}"


def report(result: dict[str, Any]) -> str:
    n_calls = sum(1 for t in TASKS if t[1])
    lines = ["# Tool calling: accuracy per model (greedy, 1 thread)", "",
             f"{n_calls} requests that call one of {len(TOOLS)} tools, "
             f"{len(TASKS) - n_calls} that call none (`bench/tools.py`).", "",
             "| model | system | parses | right function | right arguments | no call "
             "(chit-chat) | s / request |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in result["results"]:
        for label, v in r["configs"].items():
            s = v["summary"]
            err = f" ({s['errors']} errors)" if s["errors"] else ""
            lines.append(f"| {r['model']} | {label}{err} | {pct(s['parses'])} | "
                         f"{pct(s['function'])} | {pct(s['arguments'])} | "
                         f"{pct(s['no_call'])} | {s['s_per_request']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, help="only this many call requests (a smoke run)")
    ap.add_argument("--llama-server", type=Path,
                    default=Path.home() / ".cache/edgewise/llama-server-0.3.36")
    ap.add_argument("--no-llama-server", action="store_true")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    if args.report_only:
        md = report(json.loads((RESULTS / "tools.json").read_text()))
        (RESULTS / "tools.md").write_text(md)
        print(md)
        return
    from edgewise.engines.cpu import ensure_backend

    tmp = Path(tempfile.mkdtemp(prefix="ew-tools-"))
    server_dir = None
    if not args.no_llama_server:
        if not (args.llama_server / "llama-server").exists():
            sys.exit(f"no llama-server in {args.llama_server}: run bench/build_llama_server.sh "
                     "or pass --no-llama-server")
        server_dir = batching_bench.llama_server_dir(args.llama_server,
                                                     ensure_backend().variant,
                                                     tmp / "llama-server")
    results = []
    for name in args.models:
        progress(f"==> {name}")
        results.append(run_model(name, args, tmp, server_dir))
    result = {"settings": {k: str(v) for k, v in vars(args).items()}, "results": results}
    RESULTS.mkdir(exist_ok=True)
    out = "tools" if args.limit is None else "tools_smoke"
    (RESULTS / f"{out}.json").write_text(json.dumps(result, indent=1))
    md = report(result)
    (RESULTS / f"{out}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
