"""``/v1/chat/completions`` when the node has a tier ladder: route, cascade, fail over,
queue async requests; and ``GET /v1/edgewise/jobs/{id}``.

Request steering headers: ``x-edgewise-sensitivity`` (public|internal|pii|phi; the
request's own label), ``x-edgewise-max-latency-ms``, ``x-edgewise-max-cost``,
``x-edgewise-min-tier``, ``x-edgewise-async: true``. Response headers:
``x-edgewise-tier``, ``x-edgewise-route-reason``, ``x-edgewise-escalations``,
``x-edgewise-sensitivity`` (the effective level), ``x-edgewise-confidence`` (when a
cascade scored the answer), ``x-edgewise-redacted`` (placeholders sent, when the
answering tier got a redacted request).

Before routing, the privacy guard screens the request: the declared floor is the
highest of the ``x-edgewise-sensitivity`` header, the API key's ``sensitivity`` and
``routing.default_sensitivity``; the detector can raise it, never lower it.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from edgewise.api.auth import identity_of
from edgewise.api.errors import error_response, sse_error
from edgewise.api.schemas import ChatCompletionRequest
from edgewise.config import CLEARANCE_LEVELS
from edgewise.engines import ChatMessage
from edgewise.errors import (
    EdgewiseError,
    InvalidRequestError,
    RequestError,
    UnavailableError,
)
from edgewise.privacy.enforce import RequestGuard, segments_of
from edgewise.routing.policy import level
from edgewise.routing.service import Routed, Router
from edgewise.tiers.base import ChatRequest, Delta, Message, ToolCall
from edgewise.tiers.local import LocalEndpoint

__all__ = ["jobs_router", "routed_chat"]

log = logging.getLogger("edgewise.router")

jobs_router = APIRouter()

#: Refusals and 503s: no tier answered (the node's own tier would be misleading).
_NO_TIER = {"x-edgewise-tier": "none"}

_REFUSALS = {  # Decision.refused -> (status, type, code)
    "clearance": (403, "permission_error", "clearance"),
    "unknown_model": (404, "not_found_error", "model_not_found"),
    "context": (400, "invalid_request_error", "context_length_exceeded"),
    "budget": (400, "invalid_request_error", "budget_exceeded"),
    "tools": (400, "invalid_request_error", "unsupported_parameter"),
}


def _header_float(request: Request, name: str, *, minimum: float) -> float | None:
    raw = request.headers.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= minimum:  # also rejects NaN
        raise InvalidRequestError(f"header {name} must be a number ≥ {minimum:g}", param=name)
    return value


def _declared(request: Request, key_level: str | None, default: str) -> str:
    """The declared floor: the highest of the header, the API key's label and the
    configured default."""
    header = request.headers.get("x-edgewise-sensitivity")
    if header is not None and header not in CLEARANCE_LEVELS:
        raise InvalidRequestError("header x-edgewise-sensitivity must be one of "
                                  + ", ".join(CLEARANCE_LEVELS), param="x-edgewise-sensitivity")
    labels = [x for x in (header, key_level, default) if x is not None]
    return max(labels, key=level)


def _is_async(request: Request) -> bool:
    return request.headers.get("x-edgewise-async", "").lower() in ("1", "true", "yes")


def chat_request(body: ChatCompletionRequest, messages: list[ChatMessage]) -> ChatRequest:
    """``messages``: the validated text of each of ``body.messages`` (developer → system)."""
    msgs = tuple(
        Message(m.role, m.content, name=raw.name, tool_call_id=raw.tool_call_id,
                tool_calls=tuple(ToolCall(c.id, c.function.name, c.function.arguments)
                                 for c in raw.tool_calls or ()))
        for m, raw in zip(messages, body.messages, strict=True))
    return ChatRequest(
        messages=msgs, model=body.model, tools=tuple(body.tools or ()),
        tool_choice=body.tool_choice,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature, top_p=body.top_p, stop=body.stop_list(), seed=body.seed,
        presence_penalty=body.presence_penalty, frequency_penalty=body.frequency_penalty,
        logprobs=True,  # the cascade's confidence needs them; stripped if not asked for
        top_logprobs=(body.top_logprobs or 0) if body.logprobs else 0,
    )


def _queued(router: Router, req: ChatRequest, sensitivity: str, want_logprobs: bool,
            reason: str, steering: dict[str, Any], requester: str) -> JSONResponse:
    job = router.enqueue(req, sensitivity, include_logprobs=want_logprobs, steering=steering,
                         requester=requester)
    return JSONResponse(
        {"id": job.id, "object": "edgewise.job", "status": job.state.value,
         "reason": reason, "poll": f"/v1/edgewise/jobs/{job.id}"},
        status_code=202, headers={"Location": f"/v1/edgewise/jobs/{job.id}",
                                  "x-edgewise-tier": "queued"})


async def routed_chat(body: ChatCompletionRequest, messages: list[ChatMessage],
                      request: Request, router: Router) -> JSONResponse | StreamingResponse:
    req = chat_request(body, messages)
    ident = identity_of(request.scope)
    declared = _declared(request, ident.sensitivity, router.config.routing.default_sensitivity)
    cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    if not router.guard_ready:
        exc = router.guard_unavailable()
        request.state.error_type = "privacy_guard_unavailable"
        await router.record(request_id=cid, requester=ident.name, guard=None, decision=None,
                            outcome="refused:privacy_guard_unavailable", reason=exc.message)
        return error_response(exc.status, exc.message, exc.error_type, code=exc.code,
                              headers={**_NO_TIER, "Retry-After": str(int(exc.retry_after or 1))})
    try:
        guard = await RequestGuard.build(router.detector, req, declared)
    except EdgewiseError as exc:  # fail closed: an unscreened request is not routed
        log.error("privacy guard failed on a request (not routed): %s", exc)
        message = ("the privacy guard could not screen this request, so it was not routed; "
                   "retry, and report it if it persists")
        request.state.error_type = "privacy_guard_failed"
        await router.record(request_id=cid, requester=ident.name, guard=None, decision=None,
                            outcome="refused:privacy_guard_failed", reason=message)
        return error_response(503, message, "service_unavailable", code="privacy_guard_failed",
                              headers={**_NO_TIER, "Retry-After": "1"})
    sensitivity = guard.level
    local = next((e for eps in router.fleet.endpoints.values() for e in eps
                  if isinstance(e, LocalEndpoint) and e.ready()), None)
    prompt_tokens = (local.count_tokens(req) if local is not None and not req.uses_tools
                     else sum(len(s) for s in segments_of(req)) // 4)
    steering: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "max_latency_ms": _header_float(request, "x-edgewise-max-latency-ms", minimum=1),
        "max_cost": _header_float(request, "x-edgewise-max-cost", minimum=0),
        "min_tier": request.headers.get("x-edgewise-min-tier"),
        "declared": declared}
    decision = router.decide(req, sensitivity=sensitivity, **steering)
    want_logprobs = bool(body.logprobs)
    async def audit(outcome: str, routed: Routed | None = None, *, request_id: str = cid,
                    reason: str | None = None) -> None:
        await router.record(request_id=request_id, requester=ident.name, guard=guard,
                            decision=decision, routed=routed, outcome=outcome, reason=reason)

    if decision.refused in _REFUSALS:
        status, type_, code = _REFUSALS[decision.refused]
        request.state.error_type = code
        await audit(f"refused:{decision.refused}")
        return error_response(status, decision.reason, type_, code=code,
                              param="model" if code == "model_not_found" else None,
                              headers={**_NO_TIER, "x-edgewise-sensitivity": sensitivity})
    try:
        if decision.refused == "unavailable":
            raise UnavailableError(decision.reason, retry_after=max(
                1, int(router.fleet.health.probe_interval_s)))
        if not body.stream:
            answer, routed = await router.answer(req, decision, guard)
            await audit("answered", routed)
            return JSONResponse(answer.to_openai(cid, created, include_logprobs=want_logprobs),
                                headers=routed.headers())
        deltas, routed = await router.stream(req, decision, guard)
    except UnavailableError as exc:
        if _is_async(request):  # store and forward instead of 503
            try:
                queued = _queued(router, req, sensitivity, want_logprobs, exc.message,
                                 steering, ident.name)
                await audit("queued", request_id=str(json.loads(bytes(queued.body))["id"]),
                            reason=exc.message)
                return queued
            except UnavailableError as refused:
                exc = refused
        request.state.error_type = exc.code
        await audit("refused:unavailable", reason=exc.message)
        return error_response(exc.status, exc.message, exc.error_type, code=exc.code,
                              headers={**_NO_TIER, "Retry-After": str(int(exc.retry_after or 1))})
    except RequestError as exc:  # a tier judged the request bad (answered as 4xx)
        await audit(f"failed:{exc.code or 'invalid_request'}", reason=exc.message)
        raise
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def ended(outcome: str) -> None:
        router.record_later(request_id=cid, requester=ident.name, guard=guard,
                            decision=decision, routed=routed, outcome=outcome)

    return StreamingResponse(
        _sse_body(request, deltas, routed, cid, created, want_logprobs, include_usage, ended),
        media_type="text/event-stream",
        headers={**routed.headers(), "cache-control": "no-cache"})


async def _sse_body(request: Request, deltas: AsyncIterator[Delta], routed: Routed, cid: str,
                    created: int, want_logprobs: bool, include_usage: bool,
                    ended: Callable[[str], None]) -> AsyncIterator[bytes]:
    """The SSE frames of a routed answer; ``ended(outcome)`` is called once, however the
    stream ends (the audit record of a stream is written then)."""
    outcome = "failed:disconnected"
    try:
        async for chunk in _sse_frames(request, deltas, routed, cid, created, want_logprobs,
                                       include_usage):
            if chunk.startswith(b'data: {"error"'):
                outcome = "failed:tier_failed"
            yield chunk
            if chunk == b"data: [DONE]\n\n":
                outcome = "answered"
    finally:
        ended(outcome)


async def _sse_frames(request: Request, deltas: AsyncIterator[Delta], routed: Routed,
                      cid: str, created: int, want_logprobs: bool, include_usage: bool
                      ) -> AsyncIterator[bytes]:
    from edgewise.api.openai import _sse

    base: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created,
                            "model": routed.tier}

    def frame(delta: dict[str, Any], logprobs: Any = None, finish: str | None = None
              ) -> bytes:
        out = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": logprobs,
                                    "finish_reason": finish}]}
        if include_usage:
            out["usage"] = None
        return _sse(out)

    yield frame({"role": "assistant", "content": ""})
    n_tokens, finish = 0, "stop"
    final = None
    try:
        async for d in deltas:
            if d.final is not None:
                final = d.final
                continue
            n_tokens += len(d.logprob_items)
            yield frame({"content": d.text},
                        {"content": list(d.logprob_items)} if want_logprobs else None)
    except (RequestError, UnavailableError) as exc:
        request.state.error_type = exc.code
        yield sse_error(str(exc), getattr(exc, "error_type", "api_error"), exc.code)
        return
    except Exception as exc:  # a tier failed after the first byte: say so in-band
        from edgewise.tiers.base import EndpointError

        if not isinstance(exc, EndpointError):
            raise
        request.state.error_type = "tier_failed"
        yield sse_error(f"{exc}; the answer is incomplete", "api_error", "tier_failed")
        return
    if final is not None:
        finish = final.finish_reason
        if final.tool_calls:
            yield frame({"tool_calls": [{"index": k, **c.to_openai()}
                                        for k, c in enumerate(final.tool_calls)]})
    yield frame({}, None, finish)
    if include_usage:
        usage = {"prompt_tokens": final.prompt_tokens if final else 0,
                 "completion_tokens": final.completion_tokens if final else n_tokens}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        yield _sse({**base, "choices": [], "usage": usage})
    yield b"data: [DONE]\n\n"


@jobs_router.get("/v1/edgewise/jobs/{job_id}")
async def get_job(job_id: str, request: Request) -> JSONResponse:
    """Status (and, once delivered, the completion) of an async request."""
    router: Router | None = request.app.state.router
    job = router.jobs.get(job_id) if router is not None and router.jobs is not None else None
    owner = (job.payload.get("requester") or "anonymous") if job is not None else None
    if job is None or owner != identity_of(request.scope).name:  # others' jobs: not found
        return error_response(404, "no such job on this node", "not_found_error",
                              param="job_id", code="job_not_found")
    return JSONResponse({
        "id": job.id, "object": "edgewise.job", "status": job.state.value,
        "created_at": job.created_at, "updated_at": job.updated_at,
        "attempts": job.attempts, "tier": job.tier, "error": job.error, "result": job.result,
    })
