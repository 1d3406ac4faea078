"""Probe for issue 16 (continuous batching): N sequences in one llama.cpp context.

Not the feature — the measurement that scopes it. Greedy decoding of N prompts at once
through llama-cpp-python's low-level API: one context with ``n_seq_max = N`` (the
high-level ``llama_cpp.Llama`` sets ``n_seq_max`` only for embeddings, so the context is
made with ``llama_init_from_model`` from the loaded model), every prompt prefilled in one
``llama_batch``, then each step one ``llama_decode`` over the next token of every
sequence (``seq_id`` = its slot, logits requested for that row only, read with
``llama_get_logits_ith``). Reports aggregate decode tok/s against one sequence, and
whether sequence 0's tokens equal its tokens decoded alone.

Measured on 2 idle cores (SmolLM2-135M Q4_1, 64 steps after a warm-up, Dec 2026):

| threads | KV | 1 seq | 2 | 4 | 8 | 16 | seq 0 as alone |
|---|---|---:|---:|---:|---:|---:|---|
| 1 | per sequence | 63.8 tok/s | 1.42× | 1.85× | 2.16× | 2.32× | yes, up to 16 |
| 2 | per sequence | 134.3 tok/s | 1.20× | 1.57× | 1.84× | 2.09× | yes, up to 16 |
| 1 | unified | 62.0 tok/s | 1.46× | 1.90× | 2.14× | 2.24× | no from 8 on |

(8 sequences with 2 threads: 247 tok/s aggregate. A 135M model leaves little arithmetic
to batch on a CPU: the issue's 2.5× at 8 clients is not reached even by this bare loop,
before any scheduling, sampling or HTTP; llama-server's number on the same model is the
fair bar.)

So: a unified KV cache changes greedy output once 8 sequences share a step (batched
attention numerics); per-sequence KV slots (``kv_unified = False``, ``n_ctx`` split
evenly) kept every output identical to running alone. The argmax over the vocabulary is
done in numpy here, per sequence per step.

    .venv/bin/python bench/batch_probe.py [--threads 1] [--unified] [--steps 64]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np


def decode(llm: Any, n_seq: int, *, threads: int, unified: bool, steps: int
           ) -> tuple[float, list[list[int]]]:
    """Aggregate decode tok/s of ``n_seq`` greedy sequences in one context, and their
    tokens."""
    import llama_cpp

    cp = llama_cpp.llama_context_default_params()
    cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max = 512 * n_seq, 512, 512, n_seq
    cp.n_threads, cp.n_threads_batch, cp.kv_unified = threads, threads, unified
    ctx = llama_cpp.llama_init_from_model(llm._model.model, cp)
    if not ctx:
        raise RuntimeError("llama.cpp could not make the context")
    vocab = llama_cpp.llama_n_vocab(llama_cpp.llama_model_get_vocab(llm._model.model))
    batch = llama_cpp.llama_batch_init(512, 0, n_seq)
    try:
        def add(token: int, pos: int, seq: int, logits: bool) -> int:
            i = batch.n_tokens
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
            batch.seq_id[i][0], batch.logits[i] = seq, logits
            batch.n_tokens += 1
            return int(i)

        prompts = [llm.tokenize(f"Write a short story about robot number {i}.".encode())
                   for i in range(n_seq)]
        batch.n_tokens = 0
        rows = [[add(t, j, s, j == len(p) - 1) for j, t in enumerate(p)][-1]
                for s, p in enumerate(prompts)]
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise RuntimeError("prefill failed")
        pos = [len(p) for p in prompts]
        out: list[list[int]] = [[] for _ in range(n_seq)]
        started = time.perf_counter()
        for _ in range(steps):
            nxt = [int(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, r),
                                             shape=(vocab,)).argmax()) for r in rows]
            batch.n_tokens = 0
            rows = []
            for s, t in enumerate(nxt):
                out[s].append(t)
                rows.append(add(t, pos[s], s, True))
                pos[s] += 1
            if llama_cpp.llama_decode(ctx, batch) != 0:
                raise RuntimeError("decode failed")
        return n_seq * steps / (time.perf_counter() - started), out
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--unified", action="store_true", help="one KV cache for all sequences")
    ap.add_argument("--steps", type=int, default=64)
    args = ap.parse_args()
    import llama_cpp

    from edgewise.engines.cpu import ensure_backend
    from edgewise.models import resolve_model

    ensure_backend()
    llm = llama_cpp.Llama(model_path=str(resolve_model("smollm2-135m-instruct").path),
                          n_ctx=64, n_batch=64, n_threads=args.threads, verbose=False)
    try:
        kw = {"threads": args.threads, "unified": args.unified, "steps": args.steps}
        decode(llm, 1, **kw)  # warm-up: pages the weights in
        base, alone = decode(llm, 1, **kw)
        print(f"threads {args.threads}, {'unified' if args.unified else 'per-sequence'} KV: "
              f"1 sequence {base:.1f} tok/s")
        for n in (2, 4, 8, 16):
            rate, out = decode(llm, n, **kw)
            print(f"{n:2d} sequences {rate:7.1f} tok/s = {rate / base:.2f}x; sequence 0 as "
                  f"alone: {out[0] == alone[0]}")
    finally:
        llm.close()


if __name__ == "__main__":
    main()
