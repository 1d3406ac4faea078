"""The ``evaluate`` stage: quality, size, memory and speed of every variant, measured
with the runtime that will serve it (llama.cpp for GGUF, onnxruntime for ONNX).

Each variant is measured in a fresh child process (``python -m
edgewise.supply.measure JOB``), so its memory is its own:

1. **load** the model (llama.cpp with the node's own engine class, ``n_ctx`` 2048,
   ``n_batch`` 512, like a default node; or an onnxruntime session);
2. **speed**: greedy generation of ``speed_tokens`` tokens from a fixed prompt,
   ``speed_repeats`` times, each from a cold cache (no prompt reuse) and through an
   end-of-sequence token if the model emits one; TTFT is the time to the first token
   (prompt processing), tokens/s is ``(n - 1) / (t_last - t_first)``, the median is
   kept. The **peak RSS** (``VmHWM``) is read right after, so it is the serving
   footprint — weights, KV cache, compute buffers and the Python process — before
   the scoring below allocates full-vocabulary logits for whole batches;
3. **perplexity** as llama.cpp's ``llama-perplexity`` computes it, so deltas are
   comparable with llama.cpp's published ones: the text is tokenized once, cut into
   chunks of ``ppl_ctx`` tokens whose first token is replaced by BOS, and only the second
   half of each chunk is scored (each scored token has at least ``ppl_ctx/2`` tokens of
   context). ``PPL = exp(mean NLL)``. ``ppl_max_tokens`` caps the text to a fixed prefix
   (the same for every variant) to bound the time on small machines;
4. **task accuracy** on a labelled chat/completion set, by log-likelihood: every distinct
   answer in the set (or ``choices``) is scored as a continuation of the prompt (sum of
   its tokens' log-probabilities, lm-evaluation-harness's ``acc``) and the most likely
   one is the prediction. No sampling, no answer parsing. With llama.cpp the prompt is
   evaluated once and each answer scored from its KV cache; perplexity asks for logits
   only where tokens are scored — the same numbers for less work.

A measurement is kept in ``<artifact>/.measurements/`` under a key of the job (variant
files with their sizes and modification times, every parameter, the method version): an
interrupted ``evaluate``, or a later one over more variants, measures only what it has
not measured yet.

The ONNX graphs have no KV cache (see :mod:`edgewise.supply.stages.export`): their generation
recomputes the whole sequence each token, and that is what is measured.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import with_config

from edgewise.errors import StageError
from edgewise.supply.stage import STRICT, Stage, StageContext, StageResult

__all__ = ["SPEED_PROMPT", "Evaluate", "EvaluateParams", "run_child"]

#: Bump when the measurement method changes: evaluate stages and the measurements kept
#: in ``.measurements/`` are then redone. 3: cold TTFT (no prompt reuse between repeats),
#: tokens/s over the full ``speed_tokens`` even past an end-of-sequence token.
MEASURE_VERSION = 3


SPEED_PROMPT = (
    "The history of the printing press begins in the fifteenth century, when Johannes "
    "Gutenberg combined movable metal type, oil-based ink and a wooden screw press. Within "
    "fifty years, printing shops had spread to more than two hundred cities across Europe,"
    " and the cost of books fell sharply. Historians describe the consequences")


@with_config(STRICT)
@dataclass
class EvaluateParams:
    #: Variant names to measure (default: every variant produced so far).
    variants: list[str] | None = None
    #: A text dataset for perplexity.
    perplexity: str | None = None
    ppl_ctx: int = 512
    #: Score at most this many tokens of the text (a fixed prefix; None: all of it).
    ppl_max_tokens: int | None = 16384
    #: A labelled chat/completion dataset for task accuracy.
    task: str | None = None
    task_limit: int | None = None
    #: Answers to choose from (default: the distinct answers in the task set, ≤ 20).
    choices: list[str] | None = None
    speed_tokens: int = 64
    speed_repeats: int = 3
    speed_prompt: str = SPEED_PROMPT
    n_ctx: int = 2048
    #: Threads for the runtime (default: the recipe's / every core).
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.ppl_ctx < 8 or self.ppl_ctx % 2:
            raise ValueError("ppl_ctx must be an even number >= 8")
        if self.speed_tokens < 2 or self.speed_repeats < 1:
            raise ValueError("speed_tokens must be >= 2 and speed_repeats >= 1")


class Evaluate(Stage):
    """Measure every (or the named) variants: perplexity, task accuracy, size, peak RSS,
    tokens/s and TTFT."""

    kind = "evaluate"
    Params = EvaluateParams
    dataset_fields = ("perplexity", "task")
    reads_variants = True
    version = MEASURE_VERSION

    def run(self, params: EvaluateParams, ctx: StageContext) -> StageResult:
        names = params.variants if params.variants is not None else list(ctx.variants)
        unknown = [n for n in names if n not in ctx.variants]
        if unknown:
            raise StageError(f"evaluate: unknown variants {', '.join(unknown)}; built so far: "
                             f"{', '.join(ctx.variants) or 'none'}")
        if not names:
            raise StageError("evaluate: no variants to measure; put a quantize or export "
                             "stage before it")
        if params.task is not None:
            ds = ctx.datasets[params.task]
            from edgewise.supply.data import load_examples

            examples = load_examples(ds.path, ds.format, limit=params.task_limit)
            distinct = {e.completion for e in examples}
            if params.choices is None and len(distinct) > 20:
                raise StageError(f"evaluate: task {params.task!r} has {len(distinct)} distinct "
                                 "answers; log-likelihood accuracy needs ≤ 20 (or `choices`)")
        threads = params.threads or ctx.threads
        results: dict[str, dict[str, Any]] = {}
        for i, name in enumerate(names):
            ctx.progress(i, len(names), f"measuring {name}")
            v = ctx.variants[name]
            job: dict[str, Any] = {
                "format": v.format, "path": str(ctx.variant_path(v)),
                "adapter": str(ctx.adapter_path(v)) if v.adapter else None,
                "threads": threads, "n_ctx": params.n_ctx,
                "speed_prompt": params.speed_prompt, "speed_tokens": params.speed_tokens,
                "speed_repeats": params.speed_repeats}
            if params.perplexity is not None:
                ds = ctx.datasets[params.perplexity]
                job.update(ppl_path=ds.path, ppl_format=ds.format, ppl_ctx=params.ppl_ctx,
                           ppl_max_tokens=params.ppl_max_tokens)
            if params.task is not None:
                ds = ctx.datasets[params.task]
                job.update(task_path=ds.path, task_format=ds.format,
                           task_limit=params.task_limit,
                           choices=[" " + c if ds.format == "chat" else c
                                    for c in params.choices] if params.choices else None)
            metrics = _measured(ctx.artifact_dir / ".measurements", job, functools.partial(
                run_child, job, what=f"evaluating {name}"))
            metrics["size_bytes"] = v.size_bytes
            results[name] = metrics
            ctx.log.info("%s: %s", name, {k: metrics.get(k) for k in (
                "perplexity", "task_accuracy", "tokens_per_s", "peak_rss_mb")})
        ctx.progress(len(names), len(names), "done")
        (ctx.out_dir / "metrics.json").write_text(json.dumps(results, indent=2, default=float))
        return StageResult(variant_metrics=results,
                           metrics={"params": asdict(params), "variants": names})


def _measured(cache: Path, job: dict[str, Any],
              measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The metrics of ``job``: from the cache if this exact job was measured before."""
    files = []
    for key in ("path", "adapter"):
        if job.get(key):
            f = Path(job[key])
            group = sorted(f.parent.iterdir()) if job["format"] == "onnx" and key == "path" \
                else [f]
            files += [(str(g), g.stat().st_size, g.stat().st_mtime_ns) for g in group]
    digest = hashlib.sha256(json.dumps(
        {"job": job, "files": files, "method": MEASURE_VERSION},
        sort_keys=True, default=str).encode()).hexdigest()[:32]
    path = cache / f"{digest}.json"
    with contextlib.suppress(OSError, ValueError):
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return {**data, "reused_measurement": True}
    result = measure()
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(result, default=float), encoding="utf-8")
    os.replace(tmp, path)
    return result


def run_child(job: dict[str, Any], *, what: str,
              on_line: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run :func:`edgewise.supply.measure.measure` in a fresh interpreter."""
    with tempfile.TemporaryDirectory(prefix="edgewise-eval-") as td:
        job_file = Path(td) / "job.json"
        result = Path(td) / "result.json"
        job_file.write_text(json.dumps({**job, "result": str(result)}))
        env = dict(os.environ, OMP_NUM_THREADS=str(job["threads"]))
        proc = subprocess.run([sys.executable, "-m", "edgewise.supply.measure", str(job_file)],
                              capture_output=True, text=True, check=False, env=env)
        if proc.returncode != 0 or not result.is_file():
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-12:]
            raise StageError(f"{what} failed (exit status {proc.returncode}):\n    "
                             + "\n    ".join(tail))
        data: dict[str, Any] = json.loads(result.read_text())
        return data


