"""Running a routing decision: answer with the plan's first tier, measure confidence,
escalate (cascade), fail over past dead endpoints, and store-and-forward async requests
when no eligible tier is up.

Behaviour, as documented in the README:

- **Cascade (non-streaming).** Each tier but the last answers in full with logprobs
  (and the ``top_logprobs`` its scorer reads); ``confidence = scorer(answer, samples)``
  (``edgewise.routing.confidence``); below ``routing.cascade.threshold`` the request goes
  to the next tier of the plan. The last tier's answer is returned as is.
- **Samples.** A sampling scorer (``agreement``) gets ``routing.cascade.samples`` more
  answers from the *same endpoint* that answered, drawn one after the other (a local
  engine reuses the prompt's KV cache, so a sample costs about its decode), only for
  tiers that are scored — never the top of the plan. Sampling stops early once the
  remaining samples cannot change keep vs escalate. A sample that fails counts as
  disagreeing and ends the sampling (the endpoint is likely down); the answer is still
  scored and the cascade goes on.
- **Cascade (streaming).** Lower tiers are *buffered*: their whole answer is generated
  and scored before a byte is sent, and a confident answer is then streamed out; the
  top tier of the plan streams live. So streaming never shows text that is later
  taken back.
- **Failover.** An endpoint that fails (unreachable, timeout, 5xx) counts against its
  breaker and the next tier of the plan answers, with no retry against the same
  endpoint. A stream that fails after its first byte ends with an SSE error event.
- **Degradation.** If higher tiers are down after a low-confidence answer, that answer
  is returned (reason says so) rather than an error. If no eligible tier is up, an
  ``x-edgewise-async: true`` request is queued durably (SQLite) and delivered when a
  tier returns; any other request gets 503 with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgewise.config import EdgewiseConfig
from edgewise.errors import RequestError, UnavailableError
from edgewise.jobs import Job, JobStore
from edgewise.routing.confidence import ScorerOptions, build_scorer, sample_requests
from edgewise.routing.policy import Decision, RouteRequest, route
from edgewise.telemetry import NodeMetrics
from edgewise.tiers.base import ChatAnswer, ChatRequest, Delta, Endpoint, EndpointError
from edgewise.tiers.fleet import Fleet

__all__ = ["Routed", "Router"]

log = logging.getLogger("edgewise.router")


@dataclass
class Routed:
    """How a request was answered (becomes ``x-edgewise-*`` headers and metrics)."""

    tier: str = ""
    reason: str = ""
    escalations: int = 0
    failovers: int = 0
    confidence: float | None = None
    notes: list[str] = field(default_factory=list)

    def headers(self) -> dict[str, str]:
        h = {"x-edgewise-tier": self.tier, "x-edgewise-route-reason": self.reason,
             "x-edgewise-escalations": str(self.escalations)}
        if self.confidence is not None:
            h["x-edgewise-confidence"] = f"{self.confidence:.3f}"
        return h


class Router:
    def __init__(self, config: EdgewiseConfig, fleet: Fleet, metrics: NodeMetrics) -> None:
        self.config = config
        self.fleet = fleet
        self.metrics = metrics
        self.cascade = config.routing.cascade
        self.scorer = build_scorer(self.cascade.scorer,
                                   ScorerOptions.from_cascade(self.cascade))
        self.jobs: JobStore | None = None
        self._delivery: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self.fleet.start()
        path = self.config.routing.jobs_path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.jobs = JobStore(path)
        recovered = self.jobs.recover()
        if recovered:
            log.info("recovered %d async job(s) interrupted by a restart", recovered)
        self._delivery = asyncio.create_task(self._deliver_loop())

    async def stop(self) -> None:
        if self._delivery is not None:
            self._delivery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._delivery
        await self.fleet.stop()
        if self.jobs is not None:
            self.jobs.close()

    # -- deciding -----------------------------------------------------------------------
    def decide(self, req: ChatRequest, *, sensitivity: str, prompt_tokens: int,
               max_latency_ms: float | None = None, max_cost: float | None = None,
               min_tier: str | None = None) -> Decision:
        max_tokens = req.max_tokens or 256
        rr = RouteRequest(sensitivity=sensitivity, model=req.model,
                          prompt_tokens=prompt_tokens, max_tokens=max_tokens,
                          max_latency_ms=max_latency_ms, max_cost=max_cost, min_tier=min_tier)
        return route(rr, self.fleet.views(max_tokens),
                     energy_weight=self.config.routing.energy_weight)

    def _scored_request(self, req: ChatRequest) -> ChatRequest:
        """What a scored tier is asked: with the alternatives the scorer reads."""
        need = self.scorer.top_logprobs
        if need <= req.top_logprobs:
            return req
        return dataclasses.replace(req, logprobs=True, top_logprobs=need)

    async def _confidence(self, endpoint: Endpoint, req: ChatRequest, answer: ChatAnswer
                          ) -> float:
        scorer, threshold = self.scorer, self.cascade.threshold
        samples: list[ChatAnswer | None] = []
        for sreq in sample_requests(req, scorer.samples, self.cascade.sample_temperature):
            if scorer.decided(answer, samples, threshold):
                break
            try:
                samples.append(await endpoint.chat(sreq))
            except (EndpointError, RequestError) as exc:
                log.warning("tier %r: a confidence sample failed (%s); counted as "
                            "disagreeing", endpoint.tier, exc)
                break
        return scorer(answer, samples)

    def _count(self, routed: Routed) -> None:
        m = self.metrics
        m.routed.labels(routed.tier or "none").inc()
        if routed.escalations:
            m.escalations.labels(routed.tier).inc(routed.escalations)
        if routed.failovers:
            m.failovers.inc(routed.failovers)
        if routed.confidence is not None:
            m.confidence.labels(routed.tier).observe(routed.confidence)

    # -- answering ----------------------------------------------------------------------
    async def answer(self, req: ChatRequest, decision: Decision) -> tuple[ChatAnswer, Routed]:
        """Non-streaming: cascade and failover along the plan."""
        walk = _Walk(self, decision)
        for i, tier in enumerate(decision.plan):
            endpoint = walk.pick(tier)
            if endpoint is None:
                continue
            scored = self.cascade.enabled and i < len(decision.plan) - 1
            try:
                answer = await endpoint.chat(self._scored_request(req) if scored else req)
            except EndpointError as exc:
                walk.failed(tier, exc)
                continue
            if await walk.keep(tier, endpoint, req, answer, scored=scored):
                return answer, walk.accept(tier)
        answer, routed = walk.fallback()
        return answer, routed

    async def stream(self, req: ChatRequest, decision: Decision
                     ) -> tuple[AsyncIterator[Delta], Routed]:
        """Streaming. Returns once the answering tier is known (so the status and the
        ``x-edgewise-*`` headers can be sent), with the deltas still to iterate. Tiers
        below the top of the plan are buffered and scored when the cascade is on."""
        walk = _Walk(self, decision)
        for i, tier in enumerate(decision.plan):
            endpoint = walk.pick(tier)
            if endpoint is None:
                continue
            buffered = self.cascade.enabled and i < len(decision.plan) - 1
            try:
                if buffered:
                    answer = await endpoint.chat(self._scored_request(req))
                    if await walk.keep(tier, endpoint, req, answer, scored=True):
                        return _replay(answer), walk.accept(tier)
                    continue
                live = endpoint.stream(req)
                first = await anext(live)  # fail over only before the first byte
            except StopAsyncIteration:  # every stream ends with its `final` delta
                walk.failed(tier, EndpointError(f"tier {tier!r} sent an empty stream"))
                continue
            except EndpointError as exc:
                walk.failed(tier, exc)
                continue
            return _prepend(first, live), walk.accept(tier)
        answer, routed = walk.fallback()
        return _replay(answer), routed

    def _reason(self, decision: Decision, routed: Routed) -> str:
        reason = decision.reason if routed.tier == decision.tier else (
            f"{routed.tier} after " + "; ".join(routed.notes))
        if routed.confidence is not None:
            reason += f" (confidence {routed.confidence:.2f})"
        return reason

    # -- store and forward --------------------------------------------------------------
    def enqueue(self, req: ChatRequest, sensitivity: str, *, include_logprobs: bool,
                steering: dict[str, Any] | None = None) -> Job:
        """Queue durably. ``steering`` (min_tier, max_cost, max_latency_ms, prompt_tokens)
        is kept with the job and applies again at delivery."""
        if self.jobs is None:
            raise UnavailableError("the async job queue is not running")
        payload = {"request": req.to_payload(), "include_logprobs": include_logprobs,
                   "steering": steering or {}}
        job = self.jobs.enqueue("/v1/chat/completions", payload, min_clearance=sensitivity)
        self.metrics.jobs.labels("queued").inc()
        return job

    async def deliver_once(self) -> int:
        """Try every pending job once; returns how many were delivered."""
        if self.jobs is None:
            return 0
        delivered = 0
        for job in self.jobs.claim(limit=32):
            try:
                req = ChatRequest.from_payload(job.payload["request"])
                steering = dict(job.payload.get("steering") or {})
                decision = self.decide(req, sensitivity=job.min_clearance,
                                       prompt_tokens=int(steering.pop("prompt_tokens", 0)),
                                       **steering)
                if decision.refused == "unavailable":
                    raise UnavailableError(decision.reason)
                if decision.refused:
                    raise RequestError(decision.reason)
                answer, routed = await self.answer(req, decision)
            except UnavailableError as exc:
                self.jobs.release(job.id, exc.message)
                continue
            except (RequestError, KeyError, TypeError, ValueError) as exc:
                self.jobs.fail(job.id, str(exc))
                self.metrics.jobs.labels("failed").inc()
                continue
            body = answer.to_openai(f"chatcmpl-{job.id}", int(job.created_at),
                                    include_logprobs=bool(job.payload.get("include_logprobs")))
            body["edgewise"] = {"tier": routed.tier, "route_reason": routed.reason,
                                "escalations": routed.escalations}
            self.jobs.complete(job.id, body, tier=routed.tier)
            self.metrics.jobs.labels("delivered").inc()
            delivered += 1
        return delivered

    async def _deliver_loop(self) -> None:
        while True:
            await asyncio.sleep(self.fleet.health.probe_interval_s)
            try:
                await self.deliver_once()
            except Exception:  # the loop must survive anything; the job stays queued
                log.exception("async job delivery failed")


class _Walk:
    """Bookkeeping while a request walks down its plan: failovers, escalations, and the
    most confident escalated answer to fall back on if every tier above it fails."""

    def __init__(self, router: Router, decision: Decision) -> None:
        self.router = router
        self.decision = decision
        self.routed = Routed(reason=decision.reason)
        self.best: tuple[ChatAnswer, str, float] | None = None

    def pick(self, tier: str) -> Endpoint | None:
        endpoint = self.router.fleet.pick(tier)
        if endpoint is None:
            self.routed.failovers += 1
            self.routed.notes.append(f"{tier}: no endpoint available")
        return endpoint

    def failed(self, tier: str, exc: EndpointError) -> None:
        self.routed.failovers += 1
        self.routed.notes.append(str(exc))
        self.router.metrics.tier_failures.labels(tier).inc()

    async def keep(self, tier: str, endpoint: Endpoint, req: ChatRequest, answer: ChatAnswer,
                   *, scored: bool) -> bool:
        """Whether this tier's answer stands (True) or is escalated (False)."""
        cascade = self.router.cascade
        if not (cascade.enabled and scored):
            return True
        conf = await self.router._confidence(endpoint, req, answer)
        _trim_alternatives(answer, req.top_logprobs)
        if conf >= cascade.threshold:
            self.routed.confidence = conf
            return True
        self.routed.escalations += 1
        self.routed.notes.append(f"{tier}: confidence {conf:.2f} < {cascade.threshold:.2f}, "
                                 "escalated")
        if self.best is None or conf > self.best[2]:
            self.best = (answer, tier, conf)
        return False

    def accept(self, tier: str) -> Routed:
        self.routed.tier = tier
        self.routed.reason = self.router._reason(self.decision, self.routed)
        self.router._count(self.routed)
        return self.routed

    def fallback(self) -> tuple[ChatAnswer, Routed]:
        """Every tier failed or escalated: the best low-confidence answer, else 503."""
        routed = self.routed
        if self.best is None:
            raise UnavailableError(
                "no eligible tier could answer: " + "; ".join(routed.notes),
                retry_after=max(1, int(self.router.fleet.health.probe_interval_s)))
        answer, routed.tier, routed.confidence = self.best
        routed.reason = (f"low-confidence answer from {routed.tier}: every tier above it "
                         "failed (" + "; ".join(routed.notes) + ")")
        self.router._count(routed)
        return answer, routed


def _trim_alternatives(answer: ChatAnswer, n: int) -> None:
    """Back to the ``top_logprobs`` the client asked for (the scorer may have read more)."""
    answer.logprob_items = [
        {**i, "top_logprobs": list(i.get("top_logprobs") or [])[:n]} if "top_logprobs" in i
        else i for i in answer.logprob_items]


async def _prepend(first: Delta, rest: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
    yield first
    async for d in rest:
        yield d


async def _replay(answer: ChatAnswer) -> AsyncIterator[Delta]:
    """A buffered answer as a stream: one delta per token when logprobs line up."""
    items = answer.logprob_items
    if items and "".join(i["token"] for i in items) == answer.text:
        for item in items:
            yield Delta(item["token"], (item,))
    else:
        yield Delta(answer.text, tuple(items))
    yield Delta("", final=answer)
