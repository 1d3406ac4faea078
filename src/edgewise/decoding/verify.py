"""Verifying a draft: which drafted tokens the target keeps, and the token after them.

The target scores the last fixed token and the ``k`` drafted ones in one pass, which
gives ``k + 1`` rows of logits: row ``j`` is the target's distribution for the token
after the first ``j`` drafted ones.

- **Greedy** (:func:`accept_greedy`): drafted token ``j + 1`` is kept while it is the
  argmax of row ``j``; the first row whose argmax differs gives the next token (the
  argmax), or row ``k`` does when every drafted token was kept. The output is the
  target's greedy output, token for token.
- **Sampling** (:func:`accept_sampled`): the standard speculative sampling rule
  (Leviathan et al. 2023; Chen et al. 2023): drafted token ``x`` with target
  probability ``p(x)`` and draft probability ``q(x)`` is kept with probability
  ``min(1, p(x) / q(x))``; at the first rejection the next token is drawn from the
  normalised residual ``max(0, p − q)``; when all are kept, from row ``k``. Each output
  token is then distributed exactly as the target's. A deterministic draft (``q`` a
  point mass, ``prompt_lookup``) keeps ``x`` with probability ``p(x)`` and resamples
  from ``p`` without ``x``.

``p`` is the target's distribution *after* the request's sampling chain — what
llama.cpp's chain (:meth:`edgewise.engines.batching.BatchScheduler._sampler`: top-k,
top-p, min-p, then temperature) would draw from — computed here with numpy
(:func:`chain_probs`), since llama.cpp's samplers only draw a token and do not hand the
distribution back. Written by hand: the rule is a few lines and no library offers it
over raw logits rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ChainParams", "accept_greedy", "accept_sampled", "chain_probs"]


@dataclass(frozen=True)
class ChainParams:
    """The request's sampling chain (the fields of ``SamplingParams`` it uses)."""

    temperature: float
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05


def chain_probs(logits: np.ndarray, c: ChainParams) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, probabilities) the chain draws from: top-k by logit, then top-p and
    min-p on the softmax of the raw logits (at least one token kept), then the softmax
    at the request's temperature — llama.cpp's order and rules."""
    n = logits.shape[0]
    k = n if c.top_k <= 0 else min(c.top_k, n)
    ids = np.argpartition(logits, -k)[-k:] if k < n else np.arange(n)
    ids = ids[np.argsort(-logits[ids], kind="stable")]
    x = logits[ids].astype(np.float64)
    p = np.exp(x - x[0])
    p /= p.sum()
    keep = ids.size
    if c.top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(p), c.top_p) + 1)
        keep = max(1, min(keep, ids.size))
    if c.min_p > 0.0:
        keep = max(1, min(keep, int((p[:keep] >= c.min_p * p[0]).sum())))
    ids, x = ids[:keep], x[:keep]
    z = x / c.temperature
    q = np.exp(z - z.max())
    return ids, q / q.sum()


def accept_greedy(argmaxes: Sequence[int], draft: Sequence[int]) -> int:
    """How many drafted tokens greedy decoding keeps; ``argmaxes[j]`` is row ``j``'s."""
    m = 0
    while m < len(draft) and argmaxes[m] == draft[m]:
        m += 1
    return m


def accept_sampled(rows: Sequence[tuple[np.ndarray, np.ndarray]], draft: Sequence[int],
                   q: Sequence[np.ndarray], rng: np.random.Generator) -> tuple[int, int]:
    """(drafted tokens kept, the next token) by the speculative sampling rule.

    ``rows[j]`` is :func:`chain_probs` of row ``j`` (``len(draft) + 1`` of them);
    ``q[j]``, when given, the drafter's distribution over the whole vocabulary at
    drafted position ``j`` (empty ``q``: a deterministic draft)."""
    for j, x in enumerate(draft):
        ids, p = rows[j]
        hit = np.nonzero(ids == x)[0]
        px = float(p[hit[0]]) if hit.size else 0.0
        qx = float(q[j][x]) if q else 1.0
        if qx > 0.0 and rng.random() < min(1.0, px / qx):
            continue
        # rejected: draw from the normalised residual max(0, p - q)
        residual = p - (q[j][ids] if q else (ids == x).astype(np.float64))
        residual = np.clip(residual, 0.0, None)
        total = residual.sum()
        if total <= 0.0:  # p ≤ q everywhere: only possible through rounding
            residual, total = p, p.sum()
        return j, int(ids[rng.choice(ids.size, p=residual / total)])
    ids, p = rows[len(draft)]
    return len(draft), int(ids[rng.choice(ids.size, p=p)])
