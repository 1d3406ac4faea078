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
- **Audit.** With ``audit.enabled``, every routing decision — answered, refused,
  queued, failed; streams when they end; async jobs when queued and when delivered —
  is appended to the hash-chained audit log (``edgewise.security``): who, the declared
  and detected levels, entity types and counts (never values), the plan, the tier,
  escalations, redaction and ``allow`` overrides. An append that fails does not fail the
  request (the answer exists already); it is logged, counted in
  ``edgewise_audit_failures_total`` and makes ``/readyz`` report 503 until an append
  succeeds again, so a load balancer stops sending traffic.
- **Privacy.** A tier in ``redact`` mode (``Decision.modes``) gets the request redacted
  for its clearance (``edgewise.privacy.enforce``); its answer has the placeholders
  restored — streamed answers too, never showing half a placeholder — and its token
  logprobs dropped (they describe the redacted text). If the redacted text still does
  not fit the clearance, that tier is skipped. A tier in ``allow`` mode gets the request
  as is, and ``Routed.allowed`` records it for the audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgewise.config import EdgewiseConfig
from edgewise.errors import EdgewiseError, RequestError, UnavailableError
from edgewise.jobs import Job, JobStore
from edgewise.privacy.enforce import DetectorLike, RequestGuard
from edgewise.privacy.redact import Redaction
from edgewise.routing.confidence import ScorerOptions, build_scorer, sample_requests
from edgewise.routing.policy import Decision, RouteRequest, level, route
from edgewise.security import AuditLog, AuditRecord, load_key
from edgewise.security import Redaction as AuditRedaction
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
    #: The request's effective sensitivity.
    sensitivity: str = "public"
    #: Tiers that were sent a redacted request, and how many placeholders each got.
    redacted: dict[str, int] = field(default_factory=dict)
    #: Tiers that got the request above their clearance by an ``allow`` policy.
    allowed: list[str] = field(default_factory=list)

    def headers(self) -> dict[str, str]:
        h = {"x-edgewise-tier": self.tier, "x-edgewise-route-reason": self.reason,
             "x-edgewise-escalations": str(self.escalations),
             "x-edgewise-sensitivity": self.sensitivity}
        if self.confidence is not None:
            h["x-edgewise-confidence"] = f"{self.confidence:.3f}"
        if self.tier in self.redacted:
            h["x-edgewise-redacted"] = str(self.redacted[self.tier])
        return h


class Router:
    def __init__(self, config: EdgewiseConfig, fleet: Fleet, metrics: NodeMetrics, *,
                 detector: DetectorLike | None = None) -> None:
        """``detector``: the privacy guard's detector, if already built (tests share one);
        otherwise, with ``privacy.enabled``, :meth:`start` loads it in the background."""
        self.config = config
        self.fleet = fleet
        self.metrics = metrics
        self.cascade = config.routing.cascade
        self.scorer = build_scorer(self.cascade.scorer,
                                   ScorerOptions.from_cascade(self.cascade))
        self.jobs: JobStore | None = None
        self._delivery: asyncio.Task[None] | None = None
        self.detector = detector
        self.detector_error: str | None = None
        self._detector_load: asyncio.Task[None] | None = None
        self.audit: AuditLog | None = None
        self._pending: set[asyncio.Task[None]] = set()
        #: The last audit append failure, until an append succeeds again.
        self.audit_error: str | None = None
        if config.audit.enabled:
            load_key(config.audit)  # a missing key variable fails now, in one line

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        if self.config.privacy.enabled and self.detector is None:
            self._detector_load = asyncio.create_task(self._load_detector())
        if self.config.audit.enabled and self.audit is None:
            path = self.config.audit.path
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.audit = AuditLog.from_config(self.config.audit)
        self.fleet.start()
        path = self.config.routing.jobs_path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.jobs = JobStore(path)
        recovered = self.jobs.recover()
        if recovered:
            log.info("recovered %d async job(s) interrupted by a restart", recovered)
        self._delivery = asyncio.create_task(self._deliver_loop())

    async def _load_detector(self) -> None:
        from edgewise.privacy.detector import Detector

        try:
            self.detector = await asyncio.to_thread(Detector, self.config.privacy)
        except EdgewiseError as exc:
            self.detector_error = str(exc)
            log.error("privacy guard failed to load: %s", exc)

    async def wait_guard(self) -> None:
        """Wait for the privacy guard to load (raises if it failed)."""
        if self._detector_load is not None:
            await self._detector_load
        if not self.guard_ready:
            raise self.guard_unavailable()

    @property
    def guard_ready(self) -> bool:
        """Whether routed requests can be screened now."""
        return self.detector is not None or not self.config.privacy.enabled

    def guard_unavailable(self) -> UnavailableError:
        if self.detector_error is not None:
            return UnavailableError("the privacy guard failed to load, so no request is "
                                    f"routed: {self.detector_error}")
        return UnavailableError("the privacy guard is still loading; retry in a moment",
                                retry_after=1)

    async def stop(self) -> None:
        if self._detector_load is not None:
            with contextlib.suppress(BaseException):
                await self._detector_load
        if self._delivery is not None:
            self._delivery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._delivery
        await self.fleet.stop()
        if self.jobs is not None:
            self.jobs.close()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        if self.audit is not None:
            self.audit.close()
            self.audit = None

    # -- deciding -----------------------------------------------------------------------
    def decide(self, req: ChatRequest, *, sensitivity: str, prompt_tokens: int,
               max_latency_ms: float | None = None, max_cost: float | None = None,
               min_tier: str | None = None, declared: str | None = None) -> Decision:
        max_tokens = req.max_tokens or 256
        rr = RouteRequest(sensitivity=sensitivity, declared=declared, model=req.model,
                          uses_tools=req.uses_tools,
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
                # the type only: an upstream's error text could quote the request
                log.warning("tier %r: a confidence sample failed (%s); counted as "
                            "disagreeing", endpoint.tier, type(exc).__name__)
                break
        return scorer(answer, samples)

    def _count(self, routed: Routed) -> None:
        m = self.metrics
        m.routed.labels(routed.tier or "none").inc()
        m.sensitivity.labels(routed.sensitivity).inc()
        for tier in routed.redacted:
            m.redactions.labels(tier).inc()
        if routed.escalations:
            m.escalations.labels(routed.tier).inc(routed.escalations)
        if routed.failovers:
            m.failovers.inc(routed.failovers)
        if routed.confidence is not None:
            m.confidence.labels(routed.tier).observe(routed.confidence)

    # -- answering ----------------------------------------------------------------------
    async def answer(self, req: ChatRequest, decision: Decision,
                     guard: RequestGuard | None = None) -> tuple[ChatAnswer, Routed]:
        """Non-streaming: cascade and failover along the plan."""
        walk = _Walk(self, decision, guard)
        for i, tier in enumerate(decision.plan):
            prepared = await walk.prepare(tier, req)
            if prepared is None:
                continue
            sent, redaction = prepared
            endpoint = walk.pick(tier)
            if endpoint is None:
                continue
            scored = self.cascade.enabled and i < len(decision.plan) - 1
            try:
                answer = await endpoint.chat(self._scored_request(sent) if scored else sent)
            except EndpointError as exc:
                walk.failed(tier, exc)
                continue
            # scored on the tier's own text (its samples hold the same placeholders),
            # then restored in place — a low-confidence answer kept as fallback too
            kept = await walk.keep(tier, endpoint, sent, answer, scored=scored)
            _restored(answer, redaction)
            if kept:
                return answer, walk.accept(tier)
        answer, routed = walk.fallback()
        return answer, routed

    async def stream(self, req: ChatRequest, decision: Decision,
                     guard: RequestGuard | None = None
                     ) -> tuple[AsyncIterator[Delta], Routed]:
        """Streaming. Returns once the answering tier is known (so the status and the
        ``x-edgewise-*`` headers can be sent), with the deltas still to iterate. Tiers
        below the top of the plan are buffered and scored when the cascade is on."""
        walk = _Walk(self, decision, guard)
        for i, tier in enumerate(decision.plan):
            prepared = await walk.prepare(tier, req)
            if prepared is None:
                continue
            sent, redaction = prepared
            endpoint = walk.pick(tier)
            if endpoint is None:
                continue
            # Tool calls arrive whole (their arguments are restored as JSON), so a request
            # with tools is answered in full, then replayed as a stream.
            scored = self.cascade.enabled and i < len(decision.plan) - 1
            buffered = req.uses_tools or scored
            try:
                if buffered:
                    answer = await endpoint.chat(
                        self._scored_request(sent) if scored else sent)
                    kept = await walk.keep(tier, endpoint, sent, answer, scored=scored)
                    _restored(answer, redaction)  # in place: a kept fallback too
                    if kept:
                        return _replay(answer), walk.accept(tier)
                    continue
                live = _restoring(endpoint.stream(sent), redaction)
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

    # -- audit --------------------------------------------------------------------------
    async def record(self, *, request_id: str, requester: str, outcome: str,
                     guard: RequestGuard | None, decision: Decision | None,
                     routed: Routed | None = None, reason: str | None = None) -> None:
        """Append one audit record (a no-op with ``audit.enabled: false``)."""
        if self.audit is None:
            return
        why = reason if reason is not None else (
            routed.reason if routed is not None and routed.reason else
            decision.reason if decision is not None else "")
        why = " ".join(why.split())[:512]  # one line; reasons name tiers, never content
        rec = AuditRecord(
            requester=requester, request_id=request_id, route="chat",
            node=self.config.node.name, outcome=outcome,
            declared_level=guard.declared if guard is not None else None,
            detected_level=(guard.detected if guard is not None and guard.detection
                            is not None else None),
            entities=guard.entity_counts() if guard is not None else {},
            tier=routed.tier or None if routed is not None else None,
            plan=decision.plan if decision is not None else (), reason=why,
            escalations=routed.escalations if routed is not None else 0,
            failovers=routed.failovers if routed is not None else 0,
            redaction=AuditRedaction(
                placeholders=sum(routed.redacted.values()), tiers=tuple(routed.redacted))
            if routed is not None and routed.redacted else AuditRedaction(),
            clearance_override=tuple(routed.allowed) if routed is not None else ())
        try:
            await asyncio.to_thread(self.audit.append, rec)
        except EdgewiseError as exc:
            self.metrics.audit_failures.inc()
            if self.audit_error is None:
                log.error("audit log append failed (the node reports not ready until an "
                          "append succeeds): %s", exc)
            self.audit_error = str(exc)
            return
        if self.audit_error is not None:
            log.info("audit log appends succeed again")
            self.audit_error = None

    def record_later(self, **kw: Any) -> None:
        """:meth:`record` in a background task (from code that must not await, such as
        the ``finally`` of a stream a client may have cut)."""
        if self.audit is None:
            return
        task = asyncio.create_task(self.record(**kw))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    # -- store and forward --------------------------------------------------------------
    def enqueue(self, req: ChatRequest, sensitivity: str, *, include_logprobs: bool,
                steering: dict[str, Any] | None = None, requester: str = "anonymous"
                ) -> Job:
        """Queue durably. ``steering`` (min_tier, max_cost, max_latency_ms, prompt_tokens,
        declared) is kept with the job and applies again at delivery, where the request
        is screened again. Only ``requester`` may read the job back."""
        if self.jobs is None:
            raise UnavailableError("the async job queue is not running")
        own = self.config.local_endpoint()
        clearance = self.fleet.tier(own[0]).clearance if own is not None else "public"
        if level(sensitivity) > level(clearance):  # never persist what this node may not hold
            raise UnavailableError(
                f"{sensitivity} data cannot be queued on this node (its own tier is cleared "
                f"for {clearance}); retry when an eligible tier is up, or send it to a node "
                "cleared for it")
        payload = {"request": req.to_payload(), "include_logprobs": include_logprobs,
                   "steering": steering or {}, "requester": requester}
        job = self.jobs.enqueue("/v1/chat/completions", payload, min_clearance=sensitivity)
        self.metrics.jobs.labels("queued").inc()
        return job

    async def deliver_once(self) -> int:
        """Try every pending job once; returns how many were delivered."""
        if self.jobs is None or not self.guard_ready:
            return 0
        delivered = 0
        for job in self.jobs.claim(limit=32):
            try:
                req = ChatRequest.from_payload(job.payload["request"])
                steering = dict(job.payload.get("steering") or {})
                declared = str(steering.pop("declared", None) or "public")
                guard = await RequestGuard.build(self.detector, req, declared)
                decision = self.decide(req, sensitivity=guard.level, declared=declared,
                                       prompt_tokens=int(steering.pop("prompt_tokens", 0)),
                                       **steering)
                if decision.refused == "unavailable":
                    raise UnavailableError(decision.reason)
                if decision.refused:
                    raise RequestError(decision.reason)
                answer, routed = await self.answer(req, decision, guard)
            except UnavailableError as exc:
                self.jobs.release(job.id, exc.message)
                continue
            except (RequestError, KeyError, TypeError, ValueError) as exc:
                self.jobs.fail(job.id, str(exc))
                self.metrics.jobs.labels("failed").inc()
                await self.record(request_id=job.id, requester=_requester(job),
                                  outcome="failed:rejected", guard=None, decision=None,
                                  reason="queued request could not be delivered")
                continue
            body = answer.to_openai(f"chatcmpl-{job.id}", int(job.created_at),
                                    include_logprobs=bool(job.payload.get("include_logprobs")))
            body["edgewise"] = {"tier": routed.tier, "route_reason": routed.reason,
                                "escalations": routed.escalations}
            self.jobs.complete(job.id, body, tier=routed.tier)
            self.metrics.jobs.labels("delivered").inc()
            await self.record(request_id=job.id, requester=_requester(job),
                              outcome="answered", guard=guard, decision=decision,
                              routed=routed)
            delivered += 1
        return delivered

    async def _deliver_loop(self) -> None:
        while True:
            await asyncio.sleep(self.fleet.health.probe_interval_s)
            try:
                await self.deliver_once()
            except Exception:  # the loop must survive anything; the job stays queued
                log.exception("async job delivery failed")


def _requester(job: Job) -> str:
    return str(job.payload.get("requester") or "anonymous")


class _Walk:
    """Bookkeeping while a request walks down its plan: failovers, escalations, and the
    most confident escalated answer to fall back on if every tier above it fails."""

    def __init__(self, router: Router, decision: Decision,
                 guard: RequestGuard | None) -> None:
        self.router = router
        self.decision = decision
        self.guard = guard
        self.routed = Routed(reason=decision.reason,
                             sensitivity=guard.level if guard is not None else "public")
        self.best: tuple[ChatAnswer, str, float] | None = None

    async def prepare(self, tier: str, req: ChatRequest
                      ) -> tuple[ChatRequest, Redaction | None] | None:
        """What ``tier`` may be sent: the request as is, redacted, or nothing (skip)."""
        mode = self.decision.mode(tier)
        if mode == "allow":
            self.routed.allowed.append(tier)
        if mode != "redact":
            return req, None
        clearance = self.router.fleet.tier(tier).clearance
        prepared = (await self.guard.request_for(req, clearance)
                    if self.guard is not None else None)
        if prepared is None:
            self.routed.notes.append(f"{tier}: redaction cannot bring the request within "
                                     f"its clearance ({clearance}), skipped")
            return None
        sent, redaction = prepared
        self.routed.redacted[tier] = len(redaction.mapping)
        return sent, redaction

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


def _restored(answer: ChatAnswer, redaction: Redaction | None) -> ChatAnswer:
    """A redacted tier's answer with the placeholders put back (logprobs dropped)."""
    if redaction is None:
        return answer
    # Scoring happens after this, on the restored text's logprobs: keep the numbers for
    # the confidence scorers, but they are not returned to the client (see docstring).
    answer.text = redaction.restore(answer.text)
    answer.tool_calls = [dataclasses.replace(c, arguments=redaction.restore_json(c.arguments))
                         for c in answer.tool_calls]
    answer.redacted = True
    return answer


async def _restoring(deltas: AsyncIterator[Delta], redaction: Redaction | None
                     ) -> AsyncIterator[Delta]:
    """A redacted tier's stream with the placeholders put back as they complete."""
    if redaction is None:
        async for d in deltas:
            yield d
        return
    restorer = redaction.restorer()
    async for d in deltas:
        if d.final is not None:
            rest = restorer.flush()
            if rest:
                yield Delta(rest)
            d.final.text = redaction.restore(d.final.text)
            d.final.redacted = True
            yield d
            continue
        text = restorer.feed(d.text)
        if text:
            yield Delta(text)


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
    """A buffered answer as a stream: one delta per token when logprobs line up (per
    word, without logprobs, for a restored redacted answer)."""
    items = answer.logprob_items
    if answer.redacted:
        for word in re.findall(r"\S*\s*", answer.text):
            if word:
                yield Delta(word)
    elif items and "".join(i["token"] for i in items) == answer.text:
        for item in items:
            yield Delta(item["token"], (item,))
    else:
        yield Delta(answer.text, tuple(items))
    yield Delta("", final=answer)
