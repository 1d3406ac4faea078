"""Prometheus metrics of one node, in a registry of its own (so several apps can live in
one process, as they do in tests).

Label values are never taken from request content: ``model`` is the served version's
label (``Serving.label``: a config or registry name, by default the model's catalogue
id), ``endpoint`` the route template, ``error_type`` an exception class name.

Per-version metrics (for comparing the two versions of an A/B split under the same
traffic): the token, TTFT and decode-speed metrics are labelled by ``model``, and
``edgewise_model_answers_total{model,outcome}`` counts the local engine's answers by
version and outcome — ``ok`` (ran to a stop or its length), ``error`` (the engine
failed), ``cancelled`` (the client went away) — so each version has an error rate.
``edgewise_ab_split{a,b}`` is b's share while a split is on (no series otherwise).

Batching (read from each engine's ``batch_stats()`` at scrape time, labelled by
``model``): ``edgewise_engine_parallel`` (sequences it can run at once),
``edgewise_engine_sequences{state=active|waiting}``, ``edgewise_kv_cells{state=active|
cached|free}`` (cells held by running sequences, kept by finished ones for prefix reuse,
never used), ``edgewise_batch_sequences`` (histogram: sequences in each decode step),
``edgewise_prefix_cache_requests_total{result=hit|miss}`` (hit: the request reused at
least one cached prompt token) and ``edgewise_prefix_cache_tokens_total{kind=reused|
computed}`` (the token hit rate is reused / (reused + computed)).
Speculative decoding: ``edgewise_speculative_tokens_total{kind=drafted|accepted}`` (the
acceptance rate is accepted / drafted), ``edgewise_speculative_passes_total`` (verify
passes) and ``edgewise_speculative_seconds_total{phase=draft|verify}``.
``edgewise_queue_wait_seconds`` is how long requests waited for an engine slot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

__all__ = ["NodeMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_RATE_BUCKETS = (1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
#: What a batch-stats source yields: (model label, an engine's ``BatchStats``).
BatchSource = Callable[[], Iterable[tuple[str, Any]]]


class _BatchCollector(Collector):
    """The batching metrics (module docstring), from the engines' stats at scrape time."""

    def __init__(self, source: BatchSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        parallel = GaugeMetricFamily("edgewise_engine_parallel",
                                     "Sequences the engine decodes at once", labels=["model"])
        seqs = GaugeMetricFamily("edgewise_engine_sequences",
                                 "Sequences running in the engine, or waiting for a slot",
                                 labels=["model", "state"])
        cells = GaugeMetricFamily("edgewise_kv_cells", "KV-cache cells by state",
                                  labels=["model", "state"])
        sizes = HistogramMetricFamily("edgewise_batch_sequences",
                                      "Sequences in each decode step", labels=["model"])
        hits = CounterMetricFamily("edgewise_prefix_cache_requests",
                                   "Requests that reused cached prompt tokens (hit) or not",
                                   labels=["model", "result"])
        tokens = CounterMetricFamily("edgewise_prefix_cache_tokens",
                                     "Prompt tokens reused from the cache or computed",
                                     labels=["model", "kind"])
        spec_tokens = CounterMetricFamily(
            "edgewise_speculative_tokens", "Tokens drafted, and drafted tokens the model kept",
            labels=["model", "kind"])
        spec_passes = CounterMetricFamily("edgewise_speculative_passes",
                                          "Verify passes of drafted tokens", labels=["model"])
        spec_seconds = CounterMetricFamily(
            "edgewise_speculative_seconds", "Seconds spent drafting and verifying",
            labels=["model", "phase"])
        for model, st in self.source():
            parallel.add_metric([model], st.parallel)
            seqs.add_metric([model, "active"], st.active)
            seqs.add_metric([model, "waiting"], st.waiting)
            free = st.kv_cells_total - st.kv_cells_active - st.kv_cells_cached
            for state, n in (("active", st.kv_cells_active), ("cached", st.kv_cells_cached),
                             ("free", free)):
                cells.add_metric([model, state], n)
            buckets, total, count = [], 0, 0
            for bound in _BATCH_BUCKETS:
                count = sum(c for n, c in st.batch_sizes.items() if n <= bound)
                buckets.append((str(bound), count))
            count = sum(st.batch_sizes.values())
            total = sum(n * c for n, c in st.batch_sizes.items())
            buckets.append(("+Inf", count))
            sizes.add_metric([model], buckets, total)
            hits.add_metric([model, "hit"], st.prefix_hits)
            hits.add_metric([model, "miss"], st.prefix_misses)
            tokens.add_metric([model, "reused"], st.prefix_tokens_reused)
            tokens.add_metric([model, "computed"], st.prompt_tokens_computed)
            spec_tokens.add_metric([model, "drafted"], st.spec_drafted)
            spec_tokens.add_metric([model, "accepted"], st.spec_accepted)
            spec_passes.add_metric([model], st.spec_passes)
            spec_seconds.add_metric([model, "draft"], st.spec_draft_seconds)
            spec_seconds.add_metric([model, "verify"], st.spec_verify_seconds)
        yield from (parallel, seqs, cells, sizes, hits, tokens, spec_tokens, spec_passes,
                    spec_seconds)


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "edgewise_requests_total", "HTTP requests answered", ["endpoint", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "edgewise_request_duration_seconds", "Time to answer a request (full stream)",
            ["endpoint"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.prompt_tokens = Counter(
            "edgewise_prompt_tokens_total", "Prompt tokens processed", ["model", "tier"],
            registry=r,
        )
        self.completion_tokens = Counter(
            "edgewise_completion_tokens_total", "Tokens generated", ["model", "tier"],
            registry=r,
        )
        self.ttft = Histogram(
            "edgewise_time_to_first_token_seconds", "Time from admission to first token",
            ["model", "tier"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.tokens_per_second = Histogram(
            "edgewise_generation_tokens_per_second", "Decode speed per request",
            ["model", "tier"], buckets=_RATE_BUCKETS, registry=r,
        )
        self.queue_depth = Gauge(
            "edgewise_queue_depth", "Requests waiting for an engine slot", registry=r,
        )
        self.active = Gauge(
            "edgewise_active_generations", "Generations running now", registry=r,
        )
        self.queue_wait = Histogram(
            "edgewise_queue_wait_seconds", "Time a request waited for an engine slot",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.errors = Counter(
            "edgewise_errors_total", "Errors answered, by type", ["error_type"], registry=r,
        )
        self.cancelled = Counter(
            "edgewise_cancelled_generations_total",
            "Generations stopped early because the client went away", registry=r,
        )
        self.model_loaded = Gauge(
            "edgewise_model_loaded", "1 when the engine is loaded and ready", ["model"],
            registry=r,
        )
        self.model_answers = Counter(
            "edgewise_model_answers_total",
            "Generations of the local engine, by version label and outcome (ok|error|"
            "cancelled)", ["model", "outcome"], registry=r,
        )
        self.ab_split = Gauge(
            "edgewise_ab_split",
            "Share of requesters served by version b while an A/B split is on",
            ["a", "b"], registry=r,
        )

        # Routing (tier labels come from config, never from requests).
        self.routed = Counter(
            "edgewise_routed_requests_total", "Requests answered, by answering tier",
            ["tier"], registry=r,
        )
        self.audit_failures = Counter(
            "edgewise_audit_failures_total",
            "Audit-log appends that failed (the node reports not ready until one succeeds)",
            registry=r,
        )
        self.redactions = Counter(
            "edgewise_redacted_requests_total",
            "Requests sent to a tier redacted, by that tier", ["tier"], registry=r,
        )
        self.sensitivity = Counter(
            "edgewise_request_sensitivity_total",
            "Routed requests by their effective sensitivity level", ["level"], registry=r,
        )
        self.escalations = Counter(
            "edgewise_escalations_total", "Cascade escalations, by the tier that finally answered",
            ["tier"], registry=r,
        )
        self.failovers = Counter(
            "edgewise_failovers_total", "Times a tier failed and the next one answered",
            registry=r,
        )
        self.tier_failures = Counter(
            "edgewise_tier_failures_total", "Failed requests to a tier", ["tier"], registry=r,
        )
        self.confidence = Histogram(
            "edgewise_answer_confidence", "Confidence of cascaded answers", ["tier"],
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0), registry=r,
        )
        self.router_score = Histogram(
            "edgewise_router_score", "Learned router scores of routed prompts",
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0), registry=r,
        )
        self.router_seconds = Histogram(
            "edgewise_router_seconds", "Time to score a prompt with the learned router "
            "(embedding included)",
            buckets=(0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0), registry=r,
        )
        self.router_decisions = Counter(
            "edgewise_router_decisions_total", "Learned router decisions: 'top' (straight to "
            "the top tier), 'cheapest' (the usual plan), 'unavailable' (not scored)",
            ["decision"], registry=r,
        )
        self.jobs = Counter(
            "edgewise_async_jobs_total", "Async jobs queued / delivered / failed", ["event"],
            registry=r,
        )
        self.breaker_open = Gauge(
            "edgewise_breaker_open", "1 while an endpoint's breaker is open or half-open",
            ["tier", "endpoint"], registry=r,
        )

    def watch_batches(self, source: BatchSource) -> None:
        """Report the batching metrics of the engines ``source()`` lists at each scrape."""
        self.registry.register(_BatchCollector(source))

    def render(self) -> bytes:
        return generate_latest(self.registry)
