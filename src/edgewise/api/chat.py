"""``POST /v1/chat/completions``: the one chat path of every node.

validate (``api/requests.py``: shapes, limits, nothing tokenized yet) → the router
(``routing/service.py``: privacy guard, routing decision, cascade, failover, audit) →
the answer as JSON, as SSE chunks (``data: [DONE]`` last), or ``202`` with a job for an
async request no tier can take now. A node without ``tiers`` is a ladder of one; its
answers come from the same code.

Response headers: ``x-request-id``, ``x-edgewise-model`` (the model that answered),
``x-edgewise-tier``, ``x-edgewise-route-reason``, ``x-edgewise-escalations``,
``x-edgewise-sensitivity``, ``x-edgewise-confidence`` (when a cascade scored the answer)
and ``x-edgewise-redacted`` (when the answering tier got a redacted request).

A client that disconnects stops its generation within a token: a stream is cancelled
by Starlette, a non-streaming request by :func:`until_disconnect`; neither is an error
(it is counted in ``edgewise_cancelled_generations_total`` and logged as status 499).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from edgewise.api.errors import public_message
from edgewise.api.requests import (
    ParsedOffLoop,
    chat_request,
    check_size,
    check_tools,
    context,
    max_tokens_of,
    message_count,
)
from edgewise.api.requests import reject_unsupported as _reject
from edgewise.api.schemas import ChatCompletionRequest
from edgewise.chat import Delta
from edgewise.errors import EngineError, RequestError, ShuttingDownError, UnavailableError
from edgewise.node import Node
from edgewise.routing.service import Queued, Routed, Router
from edgewise.tiers.base import EndpointError
from edgewise.wire import (
    SSE_DONE,
    answer_usage,
    chunk,
    completion_body,
    sse,
    sse_error,
    tool_call_to_openai,
    usage,
)

__all__ = ["ClientDisconnected", "cut_when_draining", "queued_response", "router",
           "until_disconnect"]

log = logging.getLogger("edgewise.api")

router = APIRouter(route_class=ParsedOffLoop)

#: The status logged (and counted) for a request whose client went away first.
CLIENT_CLOSED = 499

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client closed the connection before its answer was ready."""


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """``await work``, cancelling it if the client disconnects first."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(watch())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise ClientDisconnected


def _node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


def _router(request: Request) -> Router:
    r: Router = request.app.state.router
    return r


def queued_response(q: Queued) -> JSONResponse:
    return JSONResponse(
        {"id": q.job.id, "object": "edgewise.job", "status": q.job.state.value,
         "reason": q.reason, "poll": f"/v1/edgewise/jobs/{q.job.id}"},
        status_code=202, headers={"Location": f"/v1/edgewise/jobs/{q.job.id}",
                                  "x-edgewise-tier": "queued"})


def _fingerprint(node: Node, routed: Routed) -> str | None:
    """``system_fingerprint``: the local model's digest when this node answered."""
    if routed.tier == node.tier and node.ready:
        return f"edgewise-{node.info.sha256[:10]}"
    return None


def _headers(routed: Routed, request_id: str) -> dict[str, str]:
    return {**routed.headers(), "x-request-id": request_id, "x-edgewise-model": routed.model}


@router.post("/v1/chat/completions", response_model=None,
             dependencies=[Depends(message_count)])
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    node, rt = _node(request), _router(request)
    _reject(body)
    check_tools(body, rt)
    check_size([m.text() for m in body.messages], len(body.messages), node, rt,
               param="messages")
    req = chat_request(body, max_tokens_of(body, node, rt))
    ctx = context(request, rt, logprobs=bool(body.logprobs), user=body.user)
    cid, created = f"chatcmpl-{ctx.request_id}", int(time.time())
    try:
        if body.stream:
            streamed = await until_disconnect(request, rt.stream(req, ctx))
            if isinstance(streamed, Queued):
                return queued_response(streamed)
            deltas, routed = streamed
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(
                _sse(request, deltas, routed, cid, created, bool(body.logprobs),
                     include_usage, _fingerprint(node, routed)),
                media_type="text/event-stream",
                headers={**_headers(routed, ctx.request_id), "cache-control": "no-cache"})
        answered = await until_disconnect(request, rt.chat(req, ctx))
    except ClientDisconnected:
        return Response(status_code=CLIENT_CLOSED)
    if isinstance(answered, Queued):
        return queued_response(answered)
    answer, routed = answered
    return JSONResponse(completion_body(answer, cid, created,
                                        include_logprobs=bool(body.logprobs),
                                        fingerprint=_fingerprint(node, routed)),
                        headers=_headers(routed, ctx.request_id))


async def cut_when_draining(node: Node, items: AsyncIterator[T]) -> AsyncIterator[T]:
    """``items`` (a stream's deltas or chunks), ended with :class:`ShuttingDownError` if
    the node's drain timeout passes first (``Node.drain_expired``), so the client
    learns the answer is cut."""
    expired = node.drain_expired
    it = aiter(items)
    waiter = asyncio.ensure_future(expired.wait())
    step: asyncio.Future[T] | None = None
    try:
        while True:
            step = asyncio.ensure_future(anext(it))
            done, _ = await asyncio.wait({step, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if step not in done:
                raise ShuttingDownError("the node shut down (drain timeout) before the "
                                        "answer was complete; retry on another node")
            try:
                item = step.result()
            except StopAsyncIteration:
                return
            step = None
            yield item
    finally:
        waiter.cancel()
        # The generator must not be running when it is closed: stop the pending step
        # first (the client went away, or the drain expired), then close it — which
        # ends the generation and only then frees the engine slot.
        with anyio.CancelScope(shield=True):
            if step is not None and not step.done():
                step.cancel()
                with contextlib.suppress(BaseException):
                    await step
            with contextlib.suppress(BaseException):
                await it.aclose()  # type: ignore[attr-defined]


async def _sse(request: Request, deltas: AsyncIterator[Delta], routed: Routed, cid: str,
               created: int, want_logprobs: bool, include_usage: bool,
               fingerprint: str | None) -> AsyncIterator[bytes]:
    """The SSE frames of an answer. Every stream ends with ``data: [DONE]``; one cut
    short (a tier failed after its first byte, the node shut down) has an ``error``
    event before it."""
    model = routed.model or routed.tier

    def frame(delta: dict[str, Any], logprobs: list[dict[str, Any]] | None = None,
              finish: str | None = None) -> bytes:
        return sse(chunk(cid, created, model, delta, logprobs=logprobs, finish=finish,
                         include_usage=include_usage, fingerprint=fingerprint))

    yield frame({"role": "assistant", "content": ""})
    n_tokens, final = 0, None
    try:
        async for d in cut_when_draining(_node(request), deltas):
            if d.final is not None:
                final = d.final
                continue
            n_tokens += len(d.logprob_items)
            yield frame({"content": d.text}, list(d.logprob_items) if want_logprobs else None)
    except (RequestError, UnavailableError) as exc:
        request.state.error_type = exc.code
        yield sse_error(exc.message, exc.error_type, exc.code)
        yield SSE_DONE
        return
    except EndpointError as exc:  # a tier failed after the first byte: say so in-band
        if isinstance(exc.cause, EngineError):  # this node's own engine
            request.state.error_type = "engine_error"
            yield sse_error(public_message(f"the inference engine failed: {exc.cause}; the "
                                           "answer is incomplete"), "engine_error",
                            "engine_error")
        else:
            request.state.error_type = "tier_failed"
            yield sse_error(f"{exc}; the answer is incomplete", "api_error", "tier_failed")
        yield SSE_DONE
        return
    if final is not None and final.tool_calls:
        # OpenAI's shape: a call's id, type and name first, then its arguments
        for k, c in enumerate(final.tool_calls):
            call = tool_call_to_openai(c)
            yield frame({"tool_calls": [{"index": k, "id": call["id"], "type": "function",
                                         "function": {"name": c.name, "arguments": ""}}]})
            yield frame({"tool_calls": [{"index": k,
                                         "function": {"arguments": c.arguments}}]})
    yield frame({}, None, final.finish_reason if final is not None else "stop")
    if include_usage:
        used = answer_usage(final) if final else usage(0, n_tokens)
        yield sse({"id": cid, "object": "chat.completion.chunk", "created": created,
                   "model": model, **({"system_fingerprint": fingerprint}
                                      if fingerprint else {}),
                   "choices": [], "usage": used})
    yield SSE_DONE
