"""Measuring one variant, in its own process: ``python -m edgewise.supply.measure JOB``.

The method is described in :mod:`edgewise.supply.stages.evaluate`. This module is the child
side: load the runtime that will serve the variant (llama.cpp through the node's own
engine class, or onnxruntime), time greedy generation, read the peak RSS, then score
perplexity and task accuracy. It registers no stage, so running it as ``__main__``
cannot clash with the stage registry.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["measure", "perplexity_chunks"]


def perplexity_chunks(tokens: Sequence[int], ctx: int, bos: int | None,
                      max_tokens: int | None) -> list[list[int]]:
    """llama-perplexity's chunking: ``ctx``-token chunks, first token replaced by BOS."""
    tokens = list(tokens[:max_tokens] if max_tokens else tokens)
    chunks = []
    for start in range(0, len(tokens) - ctx + 1, ctx):
        chunk = tokens[start:start + ctx]
        if bos is not None:
            chunk[0] = bos
        chunks.append(chunk)
    return chunks


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return k


def _ppl_from(nll_sum: float, n: int) -> float:
    return math.exp(nll_sum / n) if n else float("nan")


# -- runtimes ----------------------------------------------------------------------------
class _Runtime:
    """What the child needs from a runtime: tokenize, score, generate greedily."""

    bos: int | None

    def tokenize(self, text: str, bos: bool) -> list[int]:
        raise NotImplementedError

    def score(self, tokens: list[int], first: int = 1) -> list[float]:
        """log p(tokens[t] | tokens[:t]) for t = first … len(tokens) − 1."""
        raise NotImplementedError

    def score_continuations(self, prefix: list[int],
                            continuations: list[list[int]]) -> list[list[float]]:
        """log p of each continuation's tokens after ``prefix`` (by default: one
        :meth:`score` per continuation; runtimes with a KV cache share the prefix)."""
        return [self.score(prefix + c, len(prefix)) for c in continuations]

    def generate(self, prompt: list[int], n: int) -> list[float]:
        """Greedy generation of up to n tokens; the arrival time of each token."""
        raise NotImplementedError


class _LlamaCpp(_Runtime):
    def __init__(self, path: str, adapter: str | None, threads: int, n_ctx: int) -> None:
        from edgewise.engines.llamacpp import LlamaCppEngine
        from edgewise.models import ResolvedModel

        model = ResolvedModel(name=Path(path).stem, path=Path(path), sha256="",
                              size_bytes=Path(path).stat().st_size, spec=None)
        # One sequence, no prefix reuse: every repeat of a speed run processes its prompt.
        self.engine = LlamaCppEngine(model, n_ctx=n_ctx, n_threads=threads, n_batch=512,
                                     lora_path=adapter, parallel=1, prefix_cache=False)
        self.engine.load()
        b = self.engine.llm.token_bos()
        self.bos = b if b >= 0 else None

    def tokenize(self, text: str, bos: bool) -> list[int]:
        return self.engine.tokenize(text, add_bos=bos)

    def score(self, tokens: list[int], first: int = 1) -> list[float]:
        return [s.logprob for s in self.engine.score(tokens, first)]

    def score_continuations(self, prefix: list[int],
                            continuations: list[list[int]]) -> list[list[float]]:
        return [[s.logprob for s in steps]
                for steps in self.engine.score_continuations(prefix, continuations)]

    def generate(self, prompt: list[int], n: int) -> list[float]:
        # The node's own decode path (engine.steps), greedy, past any end-of-sequence
        # token: a speed measurement must run all n tokens.
        from edgewise.engines.base import SamplingParams

        params = SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)
        times = []
        for _ in self.engine.steps(prompt, params, lambda: False):
            times.append(time.perf_counter())
            if len(times) >= n:
                break
        return times


class _Onnx(_Runtime):
    def __init__(self, path: str, threads: int) -> None:
        import numpy as np
        import onnxruntime as ort
        from tokenizers import Tokenizer

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.np = np
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        folder = Path(path).parent
        self.tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        cfg = json.loads((folder / "config.json").read_text())
        self.bos = cfg.get("bos_token_id")

    def tokenize(self, text: str, bos: bool) -> list[int]:
        ids = list(self.tok.encode(text, add_special_tokens=False).ids)
        return [self.bos, *ids] if bos and self.bos is not None else ids

    def _logits(self, tokens: list[int]) -> Any:
        out = self.session.run(None, {"input_ids": self.np.array([tokens], dtype=self.np.int64)})
        return out[0][0]

    def score(self, tokens: list[int], first: int = 1) -> list[float]:
        np = self.np
        first = max(first, 1)
        logits = self._logits(tokens)[first - 1:-1].astype(np.float64)
        m = logits.max(axis=-1, keepdims=True)
        logz = (m + np.log(np.exp(logits - m).sum(axis=-1, keepdims=True)))[:, 0]
        nxt = np.array(tokens[first:])
        return list(logits[np.arange(len(nxt)), nxt] - logz)

    def generate(self, prompt: list[int], n: int) -> list[float]:
        seq = list(prompt)
        times = []
        for _ in range(n):  # all n tokens, past an end-of-sequence one (a speed test)
            token = int(self._logits(seq)[-1].argmax())
            times.append(time.perf_counter())
            seq.append(token)
        return times


def _peak_rss_mb() -> float:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def measure(job: dict[str, Any]) -> dict[str, Any]:
    """The child's work (see the module docstring for the method)."""
    threads = int(job["threads"])
    t0 = time.perf_counter()
    rt: _Runtime = (_LlamaCpp(job["path"], job.get("adapter"), threads, job["n_ctx"])
                    if job["format"] == "gguf" else _Onnx(job["path"], threads))
    out: dict[str, Any] = {"load_s": time.perf_counter() - t0, "threads": threads}
    # 2. speed, then the serving footprint
    prompt = rt.tokenize(job["speed_prompt"], True)
    ttfts, rates, n_gen = [], [], []
    for _ in range(job["speed_repeats"]):
        start = time.perf_counter()
        times = rt.generate(prompt, job["speed_tokens"])
        if not times:
            continue
        ttfts.append((times[0] - start) * 1000)
        n_gen.append(len(times))
        if len(times) > 1:
            rates.append((len(times) - 1) / (times[-1] - times[0]))
    out.update(ttft_ms=statistics.median(ttfts) if ttfts else None,
               tokens_per_s=statistics.median(rates) if rates else None,
               speed_prompt_tokens=len(prompt), speed_generated=n_gen,
               peak_rss_mb=_peak_rss_mb(), load_avg_1m=os.getloadavg()[0])
    # 3. perplexity
    if job.get("ppl_path"):
        from edgewise.supply.data import load_texts

        text = "\n".join(load_texts(job["ppl_path"], job["ppl_format"]))
        ctx = job["ppl_ctx"]
        chunks = perplexity_chunks(rt.tokenize(text, False), ctx, rt.bos, job["ppl_max_tokens"])
        if not chunks:
            raise ValueError(f"the perplexity text has fewer than {ctx} tokens")
        nll, n = 0.0, 0
        first = ctx // 2
        for chunk in chunks:
            lp = rt.score(chunk, first + 1)  # the second half of the chunk
            nll -= sum(lp)
            n += len(lp)
        out.update(perplexity=_ppl_from(nll, n), ppl_tokens=n, ppl_chunks=len(chunks),
                   ppl_ctx=ctx)
    # 4. task accuracy by log-likelihood
    if job.get("task_path"):
        from edgewise.supply.data import load_examples

        examples = load_examples(job["task_path"], job["task_format"],
                                 limit=job.get("task_limit"))
        choices = job.get("choices") or sorted({e.completion for e in examples})
        correct = 0
        confusion: dict[str, dict[str, int]] = {}
        for e in examples:
            # Score each answer after the prompt, the prompt evaluated once. Tokenizing
            # prompt + answer may merge across the boundary: score from where the
            # tokenizations first differ (at least one token in).
            p = rt.tokenize(e.prompt, True)
            fulls = [rt.tokenize(e.prompt + c, True) for c in choices]
            starts = [max(_common_prefix(p, full), 1) for full in fulls]
            shared = min(starts)
            if all(f[:shared] == fulls[0][:shared] for f in fulls):
                conts = rt.score_continuations(fulls[0][:shared], [f[shared:] for f in fulls])
            else:  # no BOS and the first token already differs: score each in full
                conts = [rt.score(f, shared) for f in fulls]
            scores = [sum(lp[k - shared:]) for lp, k in zip(conts, starts, strict=True)]
            pred = choices[max(range(len(choices)), key=scores.__getitem__)]
            correct += pred == e.completion
            row = confusion.setdefault(e.completion.strip(), {})
            row[pred.strip()] = row.get(pred.strip(), 0) + 1
        out.update(task_accuracy=correct / len(examples), task_n=len(examples),
                   task_choices=[c.strip() for c in choices], task_confusion=confusion)
    out["eval_s"] = time.perf_counter() - t0
    return out


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    result = measure(job)
    Path(job["result"]).write_text(json.dumps(result, default=float))


if __name__ == "__main__":
    main()
