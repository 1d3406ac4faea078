"""Structured outputs on every catalogue chat model: schema validity and grammar cost.

For each model (one at a time, 1 llama.cpp thread, ``parallel`` 1): every schema of
``edgewise.testing.schemas.SUITE`` answered greedily and with ``--samples`` sampled
seeds (temperature 0.9): the share that finished, parsed and validated (jsonschema), and
the share cut at ``--max-tokens``. Then decode speed with a grammar vs without, side by
side on the same prompt: the constrained answer's tokens per second (first token to
last) against an unconstrained greedy run of the same number of tokens
(``ignore_eos``), alternating, ``--reps`` times; for the JSON-object grammar and for the
nested schema. The constrained run three ways: the grammar over the whole vocabulary
for every token (how the engine did it before: "full mask"), with logprobs read (the
grammar over the 32 likeliest tokens first, exact logprobs), and with logprobs unread
(pick, then check only that token). Validity is measured both with logprobs read and
unread (the two sampling paths).

    .venv/bin/python bench/structured.py                     # ~10 min on 2 idle cores
    .venv/bin/python bench/structured.py --models smollm2-135m-instruct --samples 1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema

from edgewise.chat import Message
from edgewise.engines.base import SamplingParams
from edgewise.engines.generation import Generation
from edgewise.engines.grammar import grammar_for
from edgewise.testing.schemas import SUITE, response_format

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ["smollm2-135m-instruct", "gemma3-270m", "qwen2.5-coder-0.5b-instruct",
          "qwen2.5-coder-1.5b-instruct"]


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def timed(engine: Any, prompt: list[int], params: SamplingParams) -> tuple[int, float]:
    """(tokens, decode tok/s from the first token to the last)."""
    stamps = [time.perf_counter() for _ in engine.steps(prompt, params, lambda: False)]
    n = len(stamps)
    return n, (n - 1) / (stamps[-1] - stamps[0]) if n > 1 else float("nan")


def run_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from edgewise.engines.llamacpp import LlamaCppEngine
    from edgewise.models import resolve_model

    engine = LlamaCppEngine(resolve_model(name), n_ctx=2048, n_threads=1, parallel=1,
                            prefix_cache=False)
    engine.load()
    out: dict[str, Any] = {"model": name, "cases": []}
    try:
        for case, (question, schema) in SUITE.items():
            grammar = grammar_for(response_format(schema))
            prompt = engine.chat_prompt([Message("system", "Answer in JSON."),
                                         Message("user", question)])
            for temp, seed, lps in [
                    (t, s, lp) for lp in (True, False)
                    for t, s in [(0.0, 0)] + [(0.9, s) for s in range(1, args.samples + 1)]]:
                gen = Generation(engine, prompt, SamplingParams(
                    max_tokens=args.max_tokens, temperature=temp, seed=seed,
                    grammar=grammar, logprobs=lps), n_ctx=engine.info().n_ctx)
                text = "".join(c.text for c in gen)
                valid, error = False, None
                if gen.outcome.finish_reason == "stop":
                    try:
                        jsonschema.validate(json.loads(text), schema)
                        valid = True
                    except (ValueError, jsonschema.ValidationError) as exc:
                        error = str(exc).splitlines()[0][:200]
                out["cases"].append({"case": case, "temperature": temp, "seed": seed,
                                     "logprobs": lps,
                                     "finish": gen.outcome.finish_reason, "valid": valid,
                                     "error": error, "tokens": gen.outcome.completion_tokens,
                                     "text": text})
        speed: dict[str, Any] = {}
        for label, fmt, question in [
                ("json_object", {"type": "json_object"}, "Describe a clinic as JSON."),
                ("nested schema", response_format(SUITE["nested"][1]), SUITE["nested"][0])]:
            grammar = grammar_for(fmt)
            prompt = engine.chat_prompt([Message("system", "Answer in JSON."),
                                         Message("user", question)])
            rates: dict[str, list[float]] = {k: [] for k in VARIANTS}
            for _ in range(args.reps):
                with full_mask():
                    n, rate = timed(engine, prompt, SamplingParams(
                        max_tokens=args.speed_tokens, temperature=0.0, grammar=grammar))
                rates["full mask"].append(rate)
                for key, lps in (("logprobs read", True), ("logprobs unread", False)):
                    rates[key].append(timed(engine, prompt, SamplingParams(
                        max_tokens=n, temperature=0.0, grammar=grammar, logprobs=lps,
                        ignore_eos=True))[1])
                rates["no grammar"].append(timed(engine, prompt, SamplingParams(
                    max_tokens=n, temperature=0.0, ignore_eos=True))[1])
            med = {k: statistics.median(v) for k, v in rates.items()}
            speed[label] = {"tokens": n, "tok_s": med, "all": rates,
                            "ratio": {k: med[k] / med["no grammar"] for k in VARIANTS}}
        out["speed"] = speed
    finally:
        engine.close()
    return out


VARIANTS = ("full mask", "logprobs read", "logprobs unread", "no grammar")


@contextlib.contextmanager
def full_mask() -> Iterator[None]:
    """The engine as before its fast paths: the grammar over the whole vocabulary."""
    from edgewise.engines.batching import BatchScheduler

    saved = BatchScheduler._sample_top, BatchScheduler._sample_unscored
    BatchScheduler._sample_top = BatchScheduler._sample_unscored = (  # type: ignore[method-assign]
        lambda *a: None)
    try:
        yield
    finally:
        BatchScheduler._sample_top, BatchScheduler._sample_unscored = saved  # type: ignore[method-assign]


def report(results: list[dict[str, Any]]) -> str:
    lines = ["# Structured outputs: schema validity and grammar cost (1 thread)", "",
             "| model | logprobs | answers | valid | cut at max_tokens | invalid |",
             "|---|---|---:|---:|---:|---:|"]
    for r in results:
        for lps in (True, False):
            cases = [c for c in r["cases"] if c.get("logprobs", True) is lps]
            if not cases:
                continue
            valid = sum(c["valid"] for c in cases)
            cut = sum(c["finish"] == "length" for c in cases)
            lines.append(f"| {r['model']} | {'read' if lps else 'unread'} | {len(cases)} | "
                         f"{valid} ({valid / len(cases):.0%}) | {cut} | "
                         f"{len(cases) - valid - cut} |")
    lines += ["", "Decode tok/s with a grammar, and as a ratio of the same number of tokens "
              "without one (medians):", "",
              "| model | grammar | tokens | " + " | ".join(VARIANTS) + " | ratio: "
              + " / ".join(VARIANTS[:3]) + " |",
              "|---|---|---:|" + "---:|" * (len(VARIANTS) + 1)]
    for r in results:
        for label, v in r["speed"].items():
            lines.append(f"| {r['model']} | {label} | {v['tokens']} | "
                         + " | ".join(f"{v['tok_s'][k]:.1f}" for k in VARIANTS) + " | "
                         + " / ".join(f"{v['ratio'][k]:.2f}" for k in VARIANTS[:3]) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--speed-tokens", type=int, default=120)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    results = []
    for name in args.models:
        progress(f"==> {name}")
        results.append(run_model(name, args))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "structured.json").write_text(json.dumps(
        {"settings": vars(args), "results": results}, indent=1))
    md = report(results)
    (RESULTS / "structured.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
