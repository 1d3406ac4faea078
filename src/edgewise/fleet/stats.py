"""What a node reports in each heartbeat, read from its own Prometheus registry.

Rates are over the interval since the previous heartbeat (tokens/s, error rate, the
answers in it, the median decode speed per request); TTFT percentiles are estimated from
the histogram's bucket counts in that interval, by linear interpolation inside the
bucket that holds the quantile (as PromQL's ``histogram_quantile`` does). Counters
(requests per tier, escalations, redactions) are totals since the node started. Nothing
here carries request content: every label is a tier, model or route name from the
config.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from edgewise.telemetry import NodeMetrics

__all__ = ["HeartbeatStats", "quantile_from_buckets"]

_ANSWER_ROUTES = frozenset({"/v1/chat/completions", "/v1/completions"})


def quantile_from_buckets(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a histogram given as cumulative ``(upper bound, count)``
    pairs sorted by bound (the last bound may be +Inf); ``None`` without observations."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower  # beyond the last finite bucket: its bound is the best guess
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = bound, count
    return lower


def _samples(metrics: NodeMetrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in metrics.registry.collect():
        for s in family.samples:
            out[s.name].append((dict(s.labels), float(s.value)))
    return out


class HeartbeatStats:
    """Turns a node's metrics into heartbeat fields, remembering the previous reading."""

    def __init__(self, metrics: NodeMetrics, *,
                 energy_per_token_j: Mapping[str, float] | None = None) -> None:
        self.metrics = metrics
        self.energy_per_token_j = dict(energy_per_token_j or {})
        self._last: dict[str, Any] | None = None

    def read(self) -> dict[str, Any]:
        s = _samples(self.metrics)
        now = time.monotonic()

        def total(name: str, **match: str) -> float:
            return sum(v for labels, v in s.get(name, [])
                       if all(labels.get(k) == want for k, want in match.items()))

        tokens = total("edgewise_completion_tokens_total")
        by_tier: dict[str, float] = defaultdict(float)
        for labels, v in s.get("edgewise_completion_tokens_total", []):
            by_tier[labels.get("tier", "")] += v
        # Requests for answers only: peers' health probes (GET /v1/models) are not load.
        requests = sum(v for labels, v in s.get("edgewise_requests_total", [])
                       if labels.get("endpoint") in _ANSWER_ROUTES)
        errors = total("edgewise_errors_total")
        buckets: dict[float, float] = defaultdict(float)
        for labels, v in s.get("edgewise_time_to_first_token_seconds_bucket", []):
            buckets[float(labels["le"])] += v
        speed: dict[float, float] = defaultdict(float)  # decode tokens/s per request
        for labels, v in s.get("edgewise_generation_tokens_per_second_bucket", []):
            speed[float(labels["le"])] += v
        routed = {labels["tier"]: int(v)
                  for labels, v in s.get("edgewise_routed_requests_total", [])}
        current = {"t": now, "tokens": tokens, "requests": requests, "errors": errors,
                   "buckets": dict(buckets), "speed": dict(speed)}
        last, self._last = self._last, current

        tokens_per_s = error_rate = p50 = p95 = decode = None
        d_req = 0.0
        if last is not None and now > last["t"]:
            tokens_per_s = max(0.0, tokens - last["tokens"]) / (now - last["t"])
            d_req = requests - last["requests"]
            if d_req > 0:
                error_rate = min(1.0, max(0.0, errors - last["errors"]) / d_req)
            delta = sorted((b, c - last["buckets"].get(b, 0.0)) for b, c in buckets.items())
            p50 = quantile_from_buckets(0.5, delta)
            p95 = quantile_from_buckets(0.95, delta)
            decode = quantile_from_buckets(0.5, sorted(
                (b, c - last["speed"].get(b, 0.0)) for b, c in speed.items()))
        energy = sum(by_tier[t] * j for t, j in self.energy_per_token_j.items())
        return {
            "tokens_per_s": tokens_per_s, "error_rate": error_rate,
            "ttft_p50_ms": None if p50 is None else p50 * 1000,
            "ttft_p95_ms": None if p95 is None else p95 * 1000,
            "requests": int(requests), "interval_requests": int(max(0.0, d_req)),
            "decode_tps_p50": decode, "routed": routed,
            "escalations": int(total("edgewise_escalations_total")),
            "redactions": int(total("edgewise_redacted_requests_total")),
            "energy_j": energy,
        }
