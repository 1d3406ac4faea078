"""Structured outputs on every catalogue chat model: schema validity and grammar cost.

For each model (one at a time, 1 llama.cpp thread, ``parallel`` 1): every schema of
``edgewise.testing.schemas.SUITE`` answered greedily and with ``--samples`` sampled
seeds (temperature 0.9): the share that finished, parsed and validated (jsonschema), and
the share cut at ``--max-tokens``. Then decode speed with a grammar vs without, side by
side on the same prompt: the constrained answer's tokens per second (first token to
last) against an unconstrained greedy run of the same number of tokens
(``ignore_eos``), alternating, ``--reps`` times; for the JSON-object grammar and for the
nested schema.

    .venv/bin/python bench/structured.py                     # ~10 min on 2 idle cores
    .venv/bin/python bench/structured.py --models smollm2-135m-instruct --samples 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
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
            for temp, seed in [(0.0, 0)] + [(0.9, s) for s in range(1, args.samples + 1)]:
                gen = Generation(engine, prompt, SamplingParams(
                    max_tokens=args.max_tokens, temperature=temp, seed=seed,
                    grammar=grammar), n_ctx=engine.info().n_ctx)
                text = "".join(c.text for c in gen)
                valid, error = False, None
                if gen.outcome.finish_reason == "stop":
                    try:
                        jsonschema.validate(json.loads(text), schema)
                        valid = True
                    except (ValueError, jsonschema.ValidationError) as exc:
                        error = str(exc).splitlines()[0][:200]
                out["cases"].append({"case": case, "temperature": temp, "seed": seed,
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
            with_g, without = [], []
            for _ in range(args.reps):
                n, rate = timed(engine, prompt, SamplingParams(
                    max_tokens=args.speed_tokens, temperature=0.0, grammar=grammar))
                with_g.append(rate)
                without.append(timed(engine, prompt, SamplingParams(
                    max_tokens=n, temperature=0.0, ignore_eos=True))[1])
            speed[label] = {"tokens": n, "with_grammar_tok_s": statistics.median(with_g),
                            "without_tok_s": statistics.median(without),
                            "ratio": statistics.median(with_g) / statistics.median(without),
                            "with_all": with_g, "without_all": without}
        out["speed"] = speed
    finally:
        engine.close()
    return out


def report(results: list[dict[str, Any]]) -> str:
    lines = ["# Structured outputs: schema validity and grammar cost (1 thread)", "",
             "| model | answers | valid | cut at max_tokens | invalid |",
             "|---|---:|---:|---:|---:|"]
    for r in results:
        cases = r["cases"]
        valid = sum(c["valid"] for c in cases)
        cut = sum(c["finish"] == "length" for c in cases)
        lines.append(f"| {r['model']} | {len(cases)} | {valid} ({valid / len(cases):.0%}) "
                     f"| {cut} | {len(cases) - valid - cut} |")
    lines += ["", "| model | grammar | tokens | tok/s with | tok/s without | ratio |",
              "|---|---|---:|---:|---:|---:|"]
    for r in results:
        for label, v in r["speed"].items():
            lines.append(f"| {r['model']} | {label} | {v['tokens']} | "
                         f"{v['with_grammar_tok_s']:.1f} | {v['without_tok_s']:.1f} | "
                         f"{v['ratio']:.2f} |")
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
