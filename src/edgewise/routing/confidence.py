"""Confidence scorers: how sure a tier was of its answer, from its token logprobs.

Each scorer maps the answer's per-token log-probabilities to a number in [0, 1]; the
cascade escalates when it is below the (calibrated) threshold. Scorers register by name
so a deployment can pick one in config (``routing.cascade.scorer``).

- ``mean_prob``: geometric-mean token probability, ``exp(mean(logp))`` — the
  length-normalised sequence likelihood (a standard uncertainty baseline; e.g.
  Malinin & Gales 2021, "Uncertainty estimation in autoregressive structured prediction").
- ``min_prob``: probability of the least likely token, ``exp(min(logp))`` — one
  low-confidence token (a wrong digit) is enough to doubt the answer.
- ``tail_mean_prob``: geometric mean over the 10 % least likely tokens (≥ 1): between
  the two, robust to a single odd token.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

__all__ = ["SCORERS", "register_scorer", "score"]

Scorer = Callable[[Sequence[float]], float]
SCORERS: dict[str, Scorer] = {}


def register_scorer(name: str, fn: Scorer) -> None:
    if name in SCORERS:
        raise ValueError(f"confidence scorer {name!r} is already registered")
    SCORERS[name] = fn


def _mean_prob(lps: Sequence[float]) -> float:
    return math.exp(sum(lps) / len(lps)) if lps else 0.0


def _min_prob(lps: Sequence[float]) -> float:
    return math.exp(min(lps)) if lps else 0.0


def _tail_mean_prob(lps: Sequence[float]) -> float:
    if not lps:
        return 0.0
    k = max(1, len(lps) // 10)
    return math.exp(sum(sorted(lps)[:k]) / k)


register_scorer("mean_prob", _mean_prob)
register_scorer("min_prob", _min_prob)
register_scorer("tail_mean_prob", _tail_mean_prob)


def score(name: str, logprobs: Sequence[float]) -> float:
    """Confidence of an answer in [0, 1]; 0 when there are no logprobs to judge by."""
    try:
        fn = SCORERS[name]
    except KeyError:
        from edgewise.errors import ConfigError

        raise ConfigError(f"routing.cascade.scorer: unknown scorer {name!r}; "
                          f"available: {', '.join(sorted(SCORERS))}") from None
    return min(1.0, max(0.0, fn(logprobs)))
