"""What a node reports in each heartbeat, read from its own Prometheus registry.

Rates are over the interval since the previous heartbeat (tokens/s, error rate, the
answers in it, the median decode speed per request); TTFT percentiles are estimated from
the histogram's bucket counts in that interval, by linear interpolation inside the
bucket that holds the quantile (as PromQL's ``histogram_quantile`` does). Counters
(requests per tier, escalations, redactions) are totals since the node started. Nothing
here carries request content: every label is a tier, model or route name from the
config.

With ``by_model=True``, ``by_model`` has the same values per served version (the
``model`` label: a version label from config or the registry), so the two versions of
an A/B split can be compared under the same traffic: ``requests`` and ``errors`` are the
local engine's generations and engine failures since the start
(``edgewise_model_answers_total``; a cascade's confidence samples are generations too);
``interval_requests``, ``error_rate``, ``tokens_per_s``, ``ttft_p95_ms`` and
``decode_tps_p50`` are over the interval. It lists the versions loaded now and any other
that answered in the interval (one just replaced, finishing its last requests). It is
off by default because the control plane's heartbeat body forbids fields it does not
know: turn it on where that body accepts it.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
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
                 energy_per_token_j: Mapping[str, float] | None = None,
                 by_model: bool = False) -> None:
        """``by_model``: also report the values per version label (``by_model``)."""
        self.metrics = metrics
        self.energy_per_token_j = dict(energy_per_token_j or {})
        self.by_model = by_model
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
        models = _by_model(s)
        current = {"t": now, "tokens": tokens, "requests": requests, "errors": errors,
                   "buckets": dict(buckets), "speed": dict(speed), "models": models}
        last, self._last = self._last, current

        tokens_per_s = error_rate = p50 = p95 = decode = None
        d_req = 0.0
        if last is not None and now > last["t"]:
            tokens_per_s = max(0.0, tokens - last["tokens"]) / (now - last["t"])
            d_req = requests - last["requests"]
            if d_req > 0:
                error_rate = min(1.0, max(0.0, errors - last["errors"]) / d_req)
            delta = _interval(buckets, last["buckets"])
            p50 = quantile_from_buckets(0.5, delta)
            p95 = quantile_from_buckets(0.95, delta)
            decode = quantile_from_buckets(0.5, _interval(speed, last["speed"]))
        energy = sum(by_tier[t] * j for t, j in self.energy_per_token_j.items())
        out = {
            "tokens_per_s": tokens_per_s, "error_rate": error_rate,
            "ttft_p50_ms": None if p50 is None else p50 * 1000,
            "ttft_p95_ms": None if p95 is None else p95 * 1000,
            "requests": int(requests), "interval_requests": int(max(0.0, d_req)),
            "decode_tps_p50": decode, "routed": routed,
            "escalations": int(total("edgewise_escalations_total")),
            "redactions": int(total("edgewise_redacted_requests_total")),
            "energy_j": energy,
        }
        if self.by_model:
            loaded = {labels["model"] for labels, v in s.get("edgewise_model_loaded", []) if v}
            out["by_model"] = _model_section(models, loaded, last, now)
        return out


#: The most versions one heartbeat's ``by_model`` lists.
MAX_MODELS = 8


@dataclass
class _Model:
    """One version label's cumulative readings: generations, engine failures,
    completion tokens, TTFT and decode-speed bucket counts."""

    requests: float = 0.0
    errors: float = 0.0
    tokens: float = 0.0
    ttft: dict[float, float] = field(default_factory=lambda: defaultdict(float))
    speed: dict[float, float] = field(default_factory=lambda: defaultdict(float))


def _by_model(s: dict[str, list[tuple[dict[str, str], float]]]) -> dict[str, _Model]:
    out: dict[str, _Model] = defaultdict(_Model)
    for labels, v in s.get("edgewise_model_answers_total", []):
        m = out[labels["model"]]
        m.requests += v
        if labels.get("outcome") == "error":
            m.errors += v
    for labels, v in s.get("edgewise_completion_tokens_total", []):
        out[labels["model"]].tokens += v
    for labels, v in s.get("edgewise_time_to_first_token_seconds_bucket", []):
        out[labels["model"]].ttft[float(labels["le"])] += v
    for labels, v in s.get("edgewise_generation_tokens_per_second_bucket", []):
        out[labels["model"]].speed[float(labels["le"])] += v
    return dict(out)


def _model_section(models: dict[str, _Model], loaded: set[str],
                   last: dict[str, Any] | None, now: float) -> dict[str, dict[str, Any]]:
    """``by_model``: the versions loaded now, and any other that answered since ``last``."""
    before: dict[str, _Model] = last["models"] if last is not None else {}
    dt = now - last["t"] if last is not None else 0.0
    out = {}
    # the loaded ones first; at most MAX_MODELS (the heartbeat body's bound)
    for label in sorted(loaded) + sorted(set(models) - loaded):
        m, prev = models.get(label, _Model()), before.get(label)
        if label in loaded or m.requests != (prev.requests if prev is not None else 0.0):
            out[label] = _model_stats(m, prev, dt)
        if len(out) == MAX_MODELS:
            break
    return out


def _interval(now: dict[float, float], before: dict[float, float]) -> list[tuple[float, float]]:
    return sorted((b, c - before.get(b, 0.0)) for b, c in now.items())


def _model_stats(m: _Model, last: _Model | None, dt: float) -> dict[str, Any]:
    """One version's heartbeat values, as the node-wide ones are computed; the rates
    need a previous reading ``dt`` seconds ago (``last``: the version then, ``None``
    when it was not seen: all zeros)."""
    tokens_per_s = error_rate = p95 = decode = None
    d_req = 0.0
    if dt > 0:
        prev = last or _Model()
        tokens_per_s = max(0.0, m.tokens - prev.tokens) / dt
        d_req = m.requests - prev.requests
        if d_req > 0:
            error_rate = min(1.0, max(0.0, m.errors - prev.errors) / d_req)
        p95 = quantile_from_buckets(0.95, _interval(m.ttft, prev.ttft))
        decode = quantile_from_buckets(0.5, _interval(m.speed, prev.speed))
    return {"requests": int(m.requests), "errors": int(m.errors),
            "interval_requests": int(max(0.0, d_req)), "error_rate": error_rate,
            "tokens_per_s": tokens_per_s,
            "ttft_p95_ms": None if p95 is None else p95 * 1000, "decode_tps_p50": decode}
