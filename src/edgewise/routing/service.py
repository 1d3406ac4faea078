"""The one chat path of a node: screen a request (privacy guard), decide where it goes
(``routing/policy.py``), walk the plan — answer with its first tier, measure confidence,
escalate (cascade), fail over past dead endpoints — store-and-forward async requests
when no eligible tier is up, and audit every outcome.

Every chat request takes this path, on every node: a node without ``tiers`` is a ladder
of one (``config.ladder()``: its own engine, cleared for ``phi``). Non-streaming
answers, streams and async deliveries share one plan walk (:meth:`Router._walk`).
Refusals are :mod:`edgewise.errors` exceptions (``ClearanceError``,
``NoTierAvailableError``…) — audited here, turned into HTTP errors only by ``api/``.

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
- **When the guard runs.** Only where it can change a decision: some tier of the ladder
  is cleared below ``phi``. A node whose every tier may hold ``phi`` does not load
  Presidio or scan requests (their detected level is not recorded), but still audits.
- **Privacy.** A tier in ``redact`` mode (``Decision.modes``) gets the request redacted
  for its clearance (``edgewise.privacy.enforce``); its answer has the placeholders
  restored — streamed answers too, never showing half a placeholder — and its token
  logprobs dropped (they describe the redacted text). If the redacted text still does
  not fit the clearance, that tier is skipped. A tier in ``allow`` mode gets the request
  as is, and ``Routed.allowed`` records it for the audit log.
- **Learned router.** With ``routing.router``, a request left to the router
  (``model: auto``) whose plan has more than one tier is scored from its last user
  message (``edgewise.routing.learned``, in a worker thread) before any tier answers; at
  or above the threshold it goes straight to the top eligible tier
  (:func:`~edgewise.routing.policy.apply_router_score`). The router's directory is
  verified when the router is built; its embedding model loads in the background at
  start, and until it is ready — or if it failed — requests take the cheapest-first plan
  and the route reason says the router did not score them.
- **A/B split.** Handling a request sets :data:`edgewise.node.request_split_key` from
  who asks (``RequestContext.requester``, else its OpenAI ``user``, else its messages:
  :func:`edgewise.node.split_key`), for the rest of the task that handles it, so the
  local tier serves a requester from the same version of an A/B split every time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgewise.chat import ChatAnswer, ChatRequest, Delta
from edgewise.config import EdgewiseConfig
from edgewise.errors import (
    EdgewiseError,
    GuardUnavailableError,
    RequestError,
    UnavailableError,
)
from edgewise.jobs import Job, JobStore
from edgewise.levels import Level
from edgewise.node import request_split_key, split_key
from edgewise.privacy.enforce import DetectorLike, RequestGuard, segments_of
from edgewise.routing.confidence import ScorerOptions, build_scorer
from edgewise.routing.learned import LearnedRouter, router_text
from edgewise.routing.policy import (
    EXPECTED_COMPLETION,
    Decision,
    RouteRequest,
    apply_router_score,
    route,
)
from edgewise.routing.walk import Routed, replay, walk
from edgewise.security import AuditLog, AuditRecord, load_key
from edgewise.security import Redaction as AuditRedaction
from edgewise.telemetry import NodeMetrics
from edgewise.tiers.base import EndpointError
from edgewise.tiers.fleet import Fleet
from edgewise.wire import completion_body, request_from_payload, request_payload

__all__ = ["Queued", "RequestContext", "Routed", "Router"]

log = logging.getLogger("edgewise.router")


@dataclass(frozen=True)
class RequestContext:
    """Who asks and how they steer the router (from headers and the API key)."""

    request_id: str
    requester: str = "anonymous"
    #: The declared floor: the highest of the request's label, its API key's and
    #: ``routing.default_sensitivity``. The privacy guard may raise it, never lower it.
    declared: Level = Level.PUBLIC
    max_latency_ms: float | None = None
    max_cost: float | None = None
    min_tier: str | None = None
    #: Queue durably instead of answering 503 when no eligible tier is up.
    is_async: bool = False
    #: The client asked for logprobs (they are kept with a queued job's answer).
    logprobs: bool = False
    #: The request's OpenAI ``user`` field (an A/B split key when the requester is not
    #: known; never recorded).
    user: str | None = None


@dataclass(frozen=True)
class Queued:
    """An async request stored for later delivery (HTTP 202)."""

    job: Job
    reason: str


class Router:
    def __init__(self, config: EdgewiseConfig, fleet: Fleet, metrics: NodeMetrics, *,
                 detector: DetectorLike | None = None) -> None:
        """``detector``: the privacy guard's detector, if already built (tests share one);
        otherwise, when the guard is needed (:attr:`needs_guard`), :meth:`start` loads it
        in the background."""
        self.config = config
        self.fleet = fleet
        self.metrics = metrics
        self.cascade = config.routing.cascade
        self.scorer = build_scorer(self.cascade.scorer,
                                   ScorerOptions.from_cascade(self.cascade))
        #: Whether screening can change a decision: some tier may not hold ``phi``.
        self.needs_guard = config.privacy.enabled and any(
            t.clearance < Level.PHI for t in fleet.tiers)
        self.jobs: JobStore | None = None
        self._delivery: asyncio.Task[None] | None = None
        self.detector = detector if self.needs_guard else None
        self.detector_error: str | None = None
        self._detector_load: asyncio.Task[None] | None = None
        self.audit: AuditLog | None = None
        self._pending: set[asyncio.Task[None]] = set()
        #: The last audit append failure, until an append succeeds again.
        self.audit_error: str | None = None
        if config.audit.enabled:
            load_key(config.audit)  # a missing key variable fails now, in one line
        #: The learned router (``routing.router``), its directory verified now; its
        #: embedding model loads in the background at :meth:`start`.
        self.learned: LearnedRouter | None = _load_learned(config)
        self.learned_error: str | None = None
        self._learned_load: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        if self.needs_guard and self.detector is None:
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
        self._start_learned()

    def _start_learned(self) -> None:
        if self.learned is not None and (self._learned_load is None
                                         or self._learned_load.done()):
            self._learned_load = asyncio.create_task(self._load_embedder(self.learned))

    async def _load_embedder(self, learned: LearnedRouter) -> None:
        threads = self.config.routing.router.threads if self.config.routing.router else None

        def load() -> None:
            _ = learned.embedder
            if threads is not None:
                from edgewise.routing.embed import set_threads

                set_threads(threads)

        try:
            await asyncio.to_thread(load)
            self.learned_error = None
        except EdgewiseError as exc:
            self.learned_error = str(exc)
            log.error("learned router unavailable (requests take the cheapest-first plan): "
                      "%s", exc)

    @property
    def learned_ready(self) -> bool:
        return self.learned is not None and self.learned.embedder_loaded

    async def wait_learned(self) -> None:
        """Wait for the learned router's embedding model (tests, calibrate)."""
        if self._learned_load is not None:
            await self._learned_load

    async def steer(self, req: ChatRequest, decision: Decision) -> Decision:
        """``decision`` after the learned router (``routing.router``) scored ``req``.
        Only a plan with a choice is scored: a pinned tier, or one eligible tier, costs
        no embedding."""
        router = self.config.routing.router
        if self.learned is None or router is None or len(decision.plan) < 2:
            return decision
        if not self.learned_ready:
            self.metrics.router_decisions.labels("unavailable").inc()
            why = "failed to load" if self.learned_error is not None else "still loading"
            return apply_router_score(decision, None, router.threshold,
                                      unavailable=f"{why}, not scored")
        text = router_text([(m.role, m.content) for m in req.messages])
        started = time.perf_counter()
        try:
            score = await asyncio.to_thread(self.learned.score_one, text)
        except EdgewiseError as exc:
            log.error("learned router failed on a request (cheapest-first plan): %s", exc)
            self.metrics.router_decisions.labels("unavailable").inc()
            return apply_router_score(decision, None, router.threshold,
                                      unavailable="failed on this request, not scored")
        self.metrics.router_seconds.observe(time.perf_counter() - started)
        self.metrics.router_score.observe(score)
        routed = apply_router_score(decision, score, router.threshold)
        self.metrics.router_decisions.labels("cheapest" if routed.cascade else "top").inc()
        return routed

    def reconfigure(self, config: EdgewiseConfig, fleet: Fleet) -> Fleet:
        """Route the next requests with ``config`` (a new central ``tiers`` / ``routing``
        / ``privacy``) over ``fleet``; returns the previous fleet, which requests already
        in flight keep using: the caller stops it once they are done. The audit log, the
        async-job store and its delivery loop carry on unchanged. A changed ``privacy``
        section loads a new detector in the background; until it is ready the previous
        one keeps screening (and with none yet, requests wait for it as at start-up)."""
        old_fleet, old_privacy = self.fleet, self.config.privacy
        old_router = self.config.routing.router
        self.config = config
        self.fleet = fleet
        self.cascade = config.routing.cascade
        self.scorer = build_scorer(self.cascade.scorer, ScorerOptions.from_cascade(self.cascade))
        self.needs_guard = config.privacy.enabled and any(
            t.clearance < Level.PHI for t in fleet.tiers)
        if config.routing.router != old_router:
            self.learned = _load_learned(config)
            self.learned_error = None
            self._start_learned()
        reload = self.detector is None or config.privacy != old_privacy
        idle = self._detector_load is None or self._detector_load.done()
        if self.needs_guard and reload and idle:
            self.detector_error = None
            self._detector_load = asyncio.create_task(self._load_detector())
        fleet.start()
        return old_fleet

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
        """Whether requests can be screened now (or need no screening)."""
        return self.detector is not None or not self.needs_guard

    def guard_unavailable(self) -> GuardUnavailableError:
        if self.detector_error is not None:
            return GuardUnavailableError("the privacy guard failed to load, so no request "
                                         f"is routed: {self.detector_error}")
        return GuardUnavailableError("the privacy guard is still loading; retry in a moment",
                                     retry_after=1)

    async def stop(self) -> None:
        if self._detector_load is not None:
            with contextlib.suppress(BaseException):
                await self._detector_load
        if self._learned_load is not None:
            with contextlib.suppress(BaseException):
                await self._learned_load
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
    def decide(self, req: ChatRequest, *, sensitivity: Level, prompt_tokens: int,
               max_latency_ms: float | None = None, max_cost: float | None = None,
               min_tier: str | None = None, declared: Level = Level.PUBLIC) -> Decision:
        """The plan for ``req`` (raises what :func:`~edgewise.routing.policy.route`
        raises when nothing may or can serve it); :meth:`steer` then applies the learned
        router."""
        rr = RouteRequest(sensitivity=sensitivity, declared=declared, model=req.model,
                          uses_tools=req.uses_tools, prompt_tokens=prompt_tokens,
                          max_tokens=req.max_tokens, max_latency_ms=max_latency_ms,
                          max_cost=max_cost, min_tier=min_tier)
        return route(rr, self.fleet.views(req.max_tokens or EXPECTED_COMPLETION),
                     energy_weight=self.config.routing.energy_weight)

    async def _screen(self, req: ChatRequest, declared: Level) -> RequestGuard:
        if not self.guard_ready:
            raise self.guard_unavailable()
        try:
            return await RequestGuard.build(self.detector, req, declared)
        except EdgewiseError as exc:  # fail closed: an unscreened request is not routed
            log.error("privacy guard failed on a request (not routed): %s", exc)
            raise GuardUnavailableError(
                "the privacy guard could not screen this request, so it was not routed; "
                "retry, and report it if it persists", retry_after=1,
                code="privacy_guard_failed") from None

    async def prompt_tokens(self, req: ChatRequest) -> int:
        """The request's prompt length: tokenized by the local engine when it can
        render the request, else estimated (4 characters per token)."""
        local = self.fleet.local
        if local is not None and local.ready():
            return len(await local.prompt(req))
        return sum(len(s) for s in segments_of(req)) // 4

    async def _plan(self, req: ChatRequest, ctx: RequestContext
                    ) -> tuple[RequestGuard | None, Decision | None, Queued | None]:
        """Screen and decide (audited when refused); with ``ctx.is_async`` a request no
        eligible tier can take now is queued instead."""
        guard: RequestGuard | None = None
        try:
            guard = await self._screen(req, ctx.declared)
            decision = self.decide(req, sensitivity=guard.level,
                                   prompt_tokens=await self.prompt_tokens(req),
                                   max_latency_ms=ctx.max_latency_ms, max_cost=ctx.max_cost,
                                   min_tier=ctx.min_tier, declared=ctx.declared)
            decision = await self.steer(req, decision)
        except UnavailableError as exc:
            if ctx.is_async and guard is not None and not isinstance(
                    exc, GuardUnavailableError):
                return guard, None, await self._queue(req, ctx, guard, exc)
            if exc.retry_after is None:  # tiers are probed again within one interval
                exc.retry_after = max(1, int(self.fleet.health.probe_interval_s))
            await self.refused(exc, ctx, guard, None)
            raise
        except RequestError as exc:
            await self.refused(exc, ctx, guard, None)
            raise
        return guard, decision, None

    async def screen(self, req: ChatRequest, ctx: RequestContext, *, route: str = "chat"
                     ) -> RequestGuard:
        """The request's sensitivity (the guard, when the node needs it); a request that
        cannot be screened is refused (audited) with :class:`GuardUnavailableError`."""
        try:
            return await self._screen(req, ctx.declared)
        except UnavailableError as exc:
            await self.refused(exc, ctx, None, route=route)
            raise

    async def refused(self, exc: RequestError | UnavailableError, ctx: RequestContext,
                      guard: RequestGuard | None, decision: Decision | None = None, *,
                      outcome: str = "refused", route: str = "chat") -> None:
        """Audit a refusal and say in the error's headers what the router decided."""
        exc.headers.setdefault("x-edgewise-tier", "none")
        if guard is not None:
            exc.headers.setdefault("x-edgewise-sensitivity", str(guard.level))
        await self.record(request_id=ctx.request_id, requester=ctx.requester, guard=guard,
                          decision=decision, outcome=f"{outcome}:{exc.code or 'error'}",
                          reason=exc.message, route=route)

    async def _queue(self, req: ChatRequest, ctx: RequestContext, guard: RequestGuard,
                     why: UnavailableError) -> Queued:
        steering = {"prompt_tokens": await self.prompt_tokens(req),
                    "max_latency_ms": ctx.max_latency_ms, "max_cost": ctx.max_cost,
                    "min_tier": ctx.min_tier, "declared": str(ctx.declared)}
        try:
            job = self.enqueue(req, guard.level, include_logprobs=ctx.logprobs,
                               steering=steering, requester=ctx.requester)
        except UnavailableError as refused:
            await self.refused(refused, ctx, guard, None)
            raise
        await self.record(request_id=job.id, requester=ctx.requester, guard=guard,
                          decision=None, outcome="queued", reason=why.message)
        return Queued(job, why.message)

    # -- answering ----------------------------------------------------------------------
    async def _answer(self, req: ChatRequest, ctx: RequestContext, *, live: bool
                      ) -> tuple[ChatAnswer | AsyncIterator[Delta], Routed, RequestGuard,
                                 Decision] | Queued:
        """Screen, decide and walk the plan; refusals and failures are audited here, a
        request no eligible tier can take is queued when it asked to be."""
        # Not reset: it lasts as long as the task handling this request (a stream's
        # deltas are drawn later, in that task or one it starts).
        request_split_key.set(split_key(requester=ctx.requester, user=ctx.user,
                                        messages=req.messages))
        guard, decision, queued = await self._plan(req, ctx)
        if queued is not None:
            return queued
        assert guard is not None and decision is not None
        try:
            result, routed = await self._walk(req, decision, guard, live=live)
        except UnavailableError as exc:
            if ctx.is_async:
                return await self._queue(req, ctx, guard, exc)
            await self.refused(exc, ctx, guard, decision)
            raise
        except RequestError as exc:  # a tier judged the request bad (answered as 4xx)
            await self.refused(exc, ctx, guard, decision, outcome="failed")
            raise
        except asyncio.CancelledError:  # the client went away before the answer (or, for
            # a stream, its first byte: a buffered cascade); see api/chat.until_disconnect
            self.record_later(request_id=ctx.request_id, requester=ctx.requester,
                              guard=guard, decision=decision, outcome="failed:disconnected")
            raise
        return result, routed, guard, decision

    async def chat(self, req: ChatRequest, ctx: RequestContext
                   ) -> tuple[ChatAnswer, Routed] | Queued:
        """Answer in full: screen, decide, walk the plan (cascade, failover); audited."""
        got = await self._answer(req, ctx, live=False)
        if isinstance(got, Queued):
            return got
        result, routed, guard, decision = got
        assert isinstance(result, ChatAnswer)
        await self.record(request_id=ctx.request_id, requester=ctx.requester, guard=guard,
                          decision=decision, routed=routed, outcome="answered")
        return result, routed

    async def stream(self, req: ChatRequest, ctx: RequestContext
                     ) -> tuple[AsyncIterator[Delta], Routed] | Queued:
        """Stream: returns once the answering tier is known (so the status and the
        ``x-edgewise-*`` headers can be sent), with the deltas still to iterate; the
        audit record is written when the stream ends, however it ends."""
        got = await self._answer(req, ctx, live=True)
        if isinstance(got, Queued):
            return got
        result, routed, guard, decision = got
        deltas = replay(result) if isinstance(result, ChatAnswer) else result
        return self._audited(deltas, ctx, guard, decision, routed), routed

    async def _audited(self, deltas: AsyncIterator[Delta], ctx: RequestContext,
                       guard: RequestGuard | None, decision: Decision, routed: Routed
                       ) -> AsyncIterator[Delta]:
        outcome = "failed:disconnected"
        try:
            async for d in deltas:
                if d.final is not None:
                    outcome = "answered"
                yield d
        except EndpointError:
            outcome = "failed:tier_failed"
            raise
        finally:
            self.record_later(request_id=ctx.request_id, requester=ctx.requester,
                              guard=guard, decision=decision, routed=routed, outcome=outcome)

    async def _walk(self, req: ChatRequest, decision: Decision, guard: RequestGuard | None,
                    *, live: bool) -> tuple[ChatAnswer | AsyncIterator[Delta], Routed]:
        return await walk(self.fleet, self.cascade, self.scorer, self.metrics, req,
                          decision, guard, live=live)

    # -- audit --------------------------------------------------------------------------
    async def record(self, *, request_id: str, requester: str, outcome: str,
                     guard: RequestGuard | None, decision: Decision | None,
                     routed: Routed | None = None, reason: str | None = None,
                     route: str = "chat", tier: str | None = None) -> None:
        """Append one audit record (a no-op with ``audit.enabled: false``). ``tier``:
        the tier that answered, for a request not routed (``routed`` says it for the
        others)."""
        if self.audit is None:
            return
        why = reason if reason is not None else (
            routed.reason if routed is not None and routed.reason else
            decision.reason if decision is not None else "")
        why = " ".join(why.split())[:512]  # one line; reasons name tiers, never content
        rec = AuditRecord(
            requester=requester, request_id=request_id, route=route,
            node=self.config.node.name, outcome=outcome,
            declared_level=str(guard.declared) if guard is not None else None,
            detected_level=(str(guard.detected) if guard is not None and guard.detection
                            is not None else None),
            entities=guard.entity_counts() if guard is not None else {},
            tier=(routed.tier or None) if routed is not None else tier,
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
    def enqueue(self, req: ChatRequest, sensitivity: Level, *, include_logprobs: bool,
                steering: dict[str, Any] | None = None, requester: str = "anonymous"
                ) -> Job:
        """Queue durably. ``steering`` (min_tier, max_cost, max_latency_ms, prompt_tokens,
        declared) is kept with the job and applies again at delivery, where the request
        is screened again. Only ``requester`` may read the job back."""
        if self.jobs is None:
            raise UnavailableError("the async job queue is not running")
        own = self.config.local_endpoint()
        clearance = self.fleet.tier(own[0]).clearance if own is not None else Level.PUBLIC
        if sensitivity > clearance:  # never persist what this node may not hold
            raise UnavailableError(
                f"{sensitivity} data cannot be queued on this node (its own tier is cleared "
                f"for {clearance}); retry when an eligible tier is up, or send it to a node "
                "cleared for it")
        payload = {"request": request_payload(req), "include_logprobs": include_logprobs,
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
                req = request_from_payload(job.payload["request"])
                steering = dict(job.payload.get("steering") or {})
                declared = Level.parse(steering.pop("declared", None) or "public")
                request_split_key.set(split_key(requester=_requester(job),
                                                messages=req.messages))
                guard = await self._screen(req, declared)
                decision = self.decide(req, sensitivity=guard.level, declared=declared,
                                       prompt_tokens=int(steering.pop("prompt_tokens", 0)),
                                       **steering)
                decision = await self.steer(req, decision)
                result, routed = await self._walk(req, decision, guard, live=False)
                assert isinstance(result, ChatAnswer)
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
            body = completion_body(result, f"chatcmpl-{job.id}", int(job.created_at),
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


def _load_learned(config: EdgewiseConfig) -> LearnedRouter | None:
    """The configured learned router, verified (a bad directory fails the start, in one
    line); its embedding model is not loaded here."""
    router = config.routing.router
    if router is None:
        return None
    return LearnedRouter.load(Path(router.path))
