"""Walking a routing decision's plan: the first tier that answers — confidently, when
the cascade scores it — wins; endpoints that fail are failed over; redacted tiers get
their placeholders restored. One walk serves non-streaming answers, streams and async
deliveries (``routing/service.py`` runs it and audits the outcome).

- **Cascade.** A tier below the top of the plan answers in full, with the logprobs (and
  ``top_logprobs``) its scorer reads; ``confidence = scorer(answer, samples)``
  (``edgewise.routing.confidence``); below ``routing.cascade.threshold`` the request goes
  to the next tier. A streamed request's lower tiers are *buffered* the same way, so a
  stream never shows text that is later taken back; the top tier streams live.
- **Samples.** A sampling scorer (``agreement``) gets ``routing.cascade.samples`` more
  answers from the *same endpoint*, one after the other, stopping once the rest cannot
  change keep vs escalate; a failed sample counts as disagreeing and ends the sampling.
- **Failover.** An endpoint that fails counts against its breaker and the next tier of
  the plan answers, with no retry against the same endpoint; a stream fails over only
  before its first byte.
- **Degradation.** If every tier above a low-confidence answer fails, that answer is
  returned (the reason says so); if nothing answered, :class:`NoTierAvailableError` —
  or, when this node itself was the only tier and refused (queue full, draining), that
  refusal (429 / 503).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from edgewise.chat import ChatAnswer, ChatRequest, Delta
from edgewise.config import CascadeConfig
from edgewise.errors import EdgewiseError, NoTierAvailableError, RequestError
from edgewise.levels import Level
from edgewise.privacy.enforce import RequestGuard
from edgewise.privacy.redact import Redaction
from edgewise.routing.confidence import Scorer, sample_requests
from edgewise.routing.policy import Decision
from edgewise.telemetry import NodeMetrics
from edgewise.tiers.base import Endpoint, EndpointError
from edgewise.tiers.fleet import Fleet

__all__ = ["Routed", "replay", "walk"]

log = logging.getLogger("edgewise.router")


@dataclass
class Routed:
    """How a request was answered (becomes ``x-edgewise-*`` headers and metrics)."""

    tier: str = ""
    #: The model that answered (the local model id, or what the upstream reported).
    model: str = ""
    reason: str = ""
    escalations: int = 0
    failovers: int = 0
    confidence: float | None = None
    notes: list[str] = field(default_factory=list)
    #: The request's effective sensitivity.
    sensitivity: Level = Level.PUBLIC
    #: Tiers that were sent a redacted request, and how many placeholders each got.
    redacted: dict[str, int] = field(default_factory=dict)
    #: Tiers that got the request above their clearance by an ``allow`` policy.
    allowed: list[str] = field(default_factory=list)

    def headers(self) -> dict[str, str]:
        h = {"x-edgewise-tier": self.tier, "x-edgewise-route-reason": self.reason,
             "x-edgewise-escalations": str(self.escalations),
             "x-edgewise-sensitivity": str(self.sensitivity)}
        if self.confidence is not None:
            h["x-edgewise-confidence"] = f"{self.confidence:.3f}"
        if self.tier in self.redacted:
            h["x-edgewise-redacted"] = str(self.redacted[self.tier])
        return h


async def walk(fleet: Fleet, cascade: CascadeConfig, scorer: Scorer, metrics: NodeMetrics,
           req: ChatRequest, decision: Decision, guard: RequestGuard | None, *,
           live: bool) -> tuple[ChatAnswer | AsyncIterator[Delta], Routed]:
    """Walk the plan: the first tier that answers (confidently, when scored) wins.

    A scored tier (cascade on, not the last of the plan) answers in full and is
    scored before anything is sent. With ``live``, the tier that is not scored
    streams, and failover stops at its first byte (a stream that fails after that
    ends with an error event). Tool calls arrive whole (their arguments are restored
    as JSON), so a request with tools is answered in full even when ``live``."""
    w = _Walk(fleet, cascade, scorer, metrics, decision, guard)
    for i, tier in enumerate(decision.plan):
        prepared = await w.prepare(tier, req)
        if prepared is None:
            continue
        sent, redaction = prepared
        endpoint = w.pick(tier)
        if endpoint is None:
            continue
        scored = cascade.enabled and decision.cascade and i < len(decision.plan) - 1
        try:
            if not live or scored or req.uses_tools:
                answer = await endpoint.chat(w.scored_request(sent) if scored else sent)
                # scored on the tier's own text (its samples hold the same
                # placeholders), then restored in place — a kept fallback too
                kept = await w.keep(tier, endpoint, sent, answer, scored=scored)
                _restored(answer, redaction)
                if kept:
                    return answer, w.accept(tier, answer.model)
                continue
            stream = _restoring(endpoint.stream(sent), redaction)
            first = await anext(stream)  # fail over only before the first byte
        except StopAsyncIteration:  # every stream ends with its `final` delta
            w.failed(tier, EndpointError(f"tier {tier!r} sent an empty stream"))
            continue
        except EndpointError as exc:
            w.failed(tier, exc)
            continue
        model = first.model or (first.final.model if first.final else "")
        return _prepend(first, stream), w.accept(tier, model)
    return w.fallback()


class _Walk:
    """Bookkeeping while a request walks down its plan: failovers, escalations, and the
    most confident escalated answer to fall back on if every tier above it fails."""

    def __init__(self, fleet: Fleet, cascade: CascadeConfig, scorer: Scorer,
                 metrics: NodeMetrics, decision: Decision, guard: RequestGuard | None
                 ) -> None:
        self.fleet = fleet
        self.cascade = cascade
        self.scorer = scorer
        self.metrics = metrics
        self.decision = decision
        self.guard = guard
        self.routed = Routed(reason=decision.reason,
                             sensitivity=guard.level if guard is not None else Level.PUBLIC)
        self.best: tuple[ChatAnswer, str, float] | None = None
        #: What this node's own engine said when it could not answer (queue full,
        #: draining, engine failure): what the client gets if no other tier was tried.
        self.refusal: EdgewiseError | None = None

    def scored_request(self, req: ChatRequest) -> ChatRequest:
        """What a scored tier is asked: with the logprobs and alternatives the scorer
        reads (stripped from the answer if the client did not ask for them)."""
        need = self.scorer.top_logprobs
        if req.logprobs and need <= req.top_logprobs:
            return req
        return dataclasses.replace(req, logprobs=True,
                                   top_logprobs=max(need, req.top_logprobs))

    async def confidence(self, endpoint: Endpoint, req: ChatRequest, answer: ChatAnswer
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

    def count(self, routed: Routed) -> None:
        m = self.metrics
        m.routed.labels(routed.tier or "none").inc()
        m.sensitivity.labels(str(routed.sensitivity)).inc()
        for tier in routed.redacted:
            m.redactions.labels(tier).inc()
        if routed.escalations:
            m.escalations.labels(routed.tier).inc(routed.escalations)
        if routed.failovers:
            m.failovers.inc(routed.failovers)
        if routed.confidence is not None:
            m.confidence.labels(routed.tier).observe(routed.confidence)

    def reason(self, decision: Decision, routed: Routed) -> str:
        reason = decision.reason if routed.tier == decision.tier else (
            f"{routed.tier} after " + "; ".join(routed.notes))
        if routed.tier != decision.tier and decision.router_note:
            reason += f"; {decision.router_note}"
        if routed.confidence is not None:
            reason += f" (confidence {routed.confidence:.2f})"
        return reason

    async def prepare(self, tier: str, req: ChatRequest
                      ) -> tuple[ChatRequest, Redaction | None] | None:
        """What ``tier`` may be sent: the request as is, redacted, or nothing (skip)."""
        mode = self.decision.mode(tier)
        if mode == "allow":
            self.routed.allowed.append(tier)
        if mode != "redact":
            return req, None
        clearance = self.fleet.tier(tier).clearance
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
        endpoint = self.fleet.pick(tier)
        if endpoint is None:
            self.routed.failovers += 1
            self.routed.notes.append(f"{tier}: no endpoint available")
        return endpoint

    def failed(self, tier: str, exc: EndpointError) -> None:
        self.routed.failovers += 1
        self.routed.notes.append(str(exc))
        self.metrics.tier_failures.labels(tier).inc()
        if exc.cause is not None and self.refusal is None:
            self.refusal = exc.cause

    async def keep(self, tier: str, endpoint: Endpoint, req: ChatRequest, answer: ChatAnswer,
                   *, scored: bool) -> bool:
        """Whether this tier's answer stands (True) or is escalated (False)."""
        cascade = self.cascade
        if not (cascade.enabled and scored):
            return True
        conf = await self.confidence(endpoint, req, answer)
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

    def accept(self, tier: str, model: str) -> Routed:
        self.routed.tier = tier
        self.routed.model = model
        self.routed.reason = self.reason(self.decision, self.routed)
        self.count(self.routed)
        return self.routed

    def fallback(self) -> tuple[ChatAnswer, Routed]:
        """Every tier failed or escalated: the best low-confidence answer, else 503."""
        routed = self.routed
        if self.best is None:
            if self.refusal is not None and routed.failovers == 1:
                raise self.refusal  # the only tier tried was this node's own engine
            raise NoTierAvailableError(
                "no eligible tier could answer: " + "; ".join(routed.notes),
                retry_after=max(1, int(self.fleet.health.probe_interval_s)))
        answer, routed.tier, routed.confidence = self.best
        routed.model = answer.model
        routed.reason = (f"low-confidence answer from {routed.tier}: every tier above it "
                         "failed (" + "; ".join(routed.notes) + ")")
        self.count(routed)
        return answer, routed


def _restored(answer: ChatAnswer, redaction: Redaction | None) -> ChatAnswer:
    """A redacted tier's answer with the placeholders put back (logprobs dropped)."""
    if redaction is None:
        return answer
    # Scoring happens after this, on the restored text's logprobs: keep the numbers for
    # the confidence scorers, but they are not returned to the client (see docstring).
    for a in (answer, *answer.alternatives):
        a.text = redaction.restore(a.text)
        a.tool_calls = [dataclasses.replace(c, arguments=redaction.restore_json(c.arguments))
                        for c in a.tool_calls]
        a.redacted = True
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


async def replay(answer: ChatAnswer) -> AsyncIterator[Delta]:
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
