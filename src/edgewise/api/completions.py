"""``POST /v1/completions``: legacy text completions on this node's own engine.

A raw prompt is not a conversation, so it is not routed to other tiers: the node's
engine continues it. The prompt is **tokenized as plain text** — ``<|im_start|>`` in it
is the characters, never a control token; send token ids (``prompt: [1, 2, 3]``) to use
control tokens. Like a chat request it is screened by the privacy guard when this
node's own tier is cleared below ``phi`` (and refused with 403 when it holds more than
that), counted, and audited (route ``completions``). During an A/B split the version
is picked by the requester, else the ``user`` field, else the prompt
(:func:`edgewise.node.split_key`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from contextlib import AsyncExitStack
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from edgewise.api.chat import (
    CLIENT_CLOSED,
    ClientDisconnected,
    cut_when_draining,
    until_disconnect,
)
from edgewise.api.requests import (
    ParsedOffLoop,
    check_size,
    context,
    max_tokens_of,
    parsed_json,
    reject_unsupported,
    screen_here,
    valid_text,
)
from edgewise.api.schemas import CompletionRequest
from edgewise.chat import Message, TokenLogprob
from edgewise.engines import Chunk, SamplingParams
from edgewise.errors import (
    ContextLengthError,
    EngineError,
    InvalidRequestError,
    RequestError,
    UnavailableError,
)
from edgewise.node import Node, Serving, split_key
from edgewise.routing.service import RequestContext, Router
from edgewise.tiers.local import LocalRun, admitted, precheck_queue
from edgewise.wire import SSE_DONE, legacy_logprobs, sse, sse_error, usage

__all__ = ["router"]

router = APIRouter(route_class=ParsedOffLoop)


def _finish(reason: str) -> str:
    return "length" if reason == "length" else "stop"


_ONE_PROMPT = "only one prompt per request is supported; send a string or a list with one string"


def _too_long(n_ctx: int, prompt_len: int) -> ContextLengthError:
    return ContextLengthError(
        f"this model's context window is {n_ctx} tokens and the prompt uses {prompt_len}; "
        "shorten the prompt (or serve with a larger engine.n_ctx)", param="prompt")


async def prompt_length(request: Request) -> None:
    """A prompt list's length, checked on the parsed JSON before pydantic validates it
    item by item (a million token ids, 2 MB, held the event loop for a third of a
    second): more than one string, or at least ``n_ctx`` token ids, is refused now."""
    data = await parsed_json(request)
    prompt = data.get("prompt") if data is not None else None
    if not isinstance(prompt, list) or len(prompt) <= 1:
        return
    if isinstance(prompt[0], str):
        raise InvalidRequestError(_ONE_PROMPT, param="prompt")
    node: Node = request.app.state.node
    # the largest window of the versions served (an A/B split: the request's own
    # version is checked once picked)
    n_ctx = max((s.info.n_ctx for s in node.servings), default=0)
    if node.ready and len(prompt) >= n_ctx:
        raise _too_long(n_ctx, len(prompt))


def _prompt(node: Serving, body: CompletionRequest) -> tuple[list[int], str]:
    """Token ids and text of the prompt: a string, a one-string list, or token ids."""
    if isinstance(body.prompt, list) and body.prompt and isinstance(body.prompt[0], str):
        if len(body.prompt) != 1:
            raise InvalidRequestError(_ONE_PROMPT, param="prompt")
        text = valid_text(str(body.prompt[0]), "prompt")
        return node.engine.tokenize(text), text
    if isinstance(body.prompt, list):
        n_vocab = node.info.n_vocab
        ids = [int(t) for t in body.prompt]
        if any(not 0 <= t < n_vocab for t in ids):
            raise InvalidRequestError(f"prompt token ids must be in [0, {n_vocab})",
                                      param="prompt")
        text = b"".join(node.engine.token_bytes(t) for t in ids).decode("utf-8", "replace")
        return ids, text
    text = valid_text(body.prompt, "prompt")
    return node.engine.tokenize(text), text


def _split_key(ctx: RequestContext, body: CompletionRequest) -> str:
    """The A/B split key: who asks, else ``user``, else the prompt (text or ids)."""
    p = body.prompt
    text = p if isinstance(p, str) else str(p[0]) if p and isinstance(p[0], str) \
        else ",".join(map(str, p))
    return split_key(requester=ctx.requester, user=body.user,
                     messages=(Message("user", text),))


def _sampling(node: Node, serving: Serving, body: CompletionRequest, prompt_len: int,
              max_tokens: int | None) -> SamplingParams:
    n_ctx = serving.info.n_ctx
    if prompt_len >= n_ctx:
        raise _too_long(n_ctx, prompt_len)
    d = node.config.sampling
    return SamplingParams(
        max_tokens=max_tokens if max_tokens is not None else n_ctx - prompt_len,
        temperature=d.temperature if body.temperature is None else body.temperature,
        top_p=d.top_p if body.top_p is None else body.top_p,
        top_k=d.top_k, min_p=d.min_p, repeat_penalty=d.repeat_penalty,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        stop=body.stop_list(), seed=None if body.seed is None else body.seed % (1 << 32),
        top_logprobs=body.logprobs or 0, logprobs=body.logprobs is not None)


async def _screen(rt: Router, node: Node, text: str, ctx: RequestContext) -> None:
    """The privacy guard on a raw prompt: it may only run on this node's own tier."""
    await screen_here(rt, node, [text], ctx, route="completions", path="/v1/completions")


@router.post("/v1/completions", response_model=None, dependencies=[Depends(prompt_length)])
async def completions(body: CompletionRequest, request: Request) -> Response:
    node, rt = request.app.state.node, request.app.state.router
    reject_unsupported(body)
    if isinstance(body.prompt, str):
        check_size([body.prompt], 1, node, rt, param="prompt")
    elif body.prompt and isinstance(body.prompt[0], str):
        check_size([str(p) for p in body.prompt], 1, node, rt, param="prompt")
    max_tokens = max_tokens_of(body, node, rt)
    ctx = context(request, rt)
    key = _split_key(ctx, body)
    # before tokenizing: 503 while loading or after a failed load, 429 when the queue of
    # the request's version is full
    precheck_queue(node, node.current(key) if node.ready else None)
    serving = node.current(key)  # one engine for the whole request, even across a swap
    prompt, text = await asyncio.to_thread(_prompt, serving, body)
    if not prompt:
        raise InvalidRequestError("prompt is empty", param="prompt")
    await _screen(rt, node, text, ctx)
    params = _sampling(node, serving, body, len(prompt), max_tokens)
    run = LocalRun(node, serving, prompt, params, id=ctx.request_id)
    cid, created = f"cmpl-{run.id}", int(time.time())
    echo_text = text if body.echo else ""
    want = body.logprobs is not None
    headers = {"x-edgewise-model": run.model, "x-request-id": run.id,
               "x-edgewise-tier": node.tier}

    async def audit(outcome: str) -> None:
        await rt.record(request_id=ctx.request_id, requester=ctx.requester, guard=None,
                        decision=None, outcome=outcome, route="completions",
                        reason=f"{node.tier}: this node's engine", tier=node.tier)

    if body.stream:
        precheck_queue(node, serving)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _stream(request, run, cid, created, echo_text, want, include_usage, audit),
            media_type="text/event-stream", headers={**headers, "cache-control": "no-cache"})

    # n > 1: independent samples, each a run of its own (batched together by the
    # engine), seeded seed + i when the client fixed a seed
    runs = [run] + [LocalRun(node, serving, prompt, dataclasses.replace(
        params, seed=None if params.seed is None else (params.seed + i) % (1 << 32)),
        id=ctx.request_id) for i in range(1, body.n)]

    async def one(r: LocalRun, score: bool
                  ) -> tuple[list[tuple[str, float | None]] | None, list[Chunk]]:
        leading = None
        async with AsyncExitStack() as stack:
            await admitted(node, stack, serving)
            if score:
                leading = await _prompt_logprobs(serving, prompt)
            chunks = r.chunks()
            failed = False
            try:
                return leading, [c async for c in chunks]
            except EngineError:
                failed = True
                raise
            finally:
                with anyio.CancelScope(shield=True):
                    await chunks.aclose()  # type: ignore[attr-defined]
                r.record(failed=failed)

    async def answer() -> list[tuple[list[tuple[str, float | None]] | None, list[Chunk]]]:
        if len(runs) == 1:
            return [await one(run, want and body.echo)]
        try:
            async with asyncio.TaskGroup() as group:  # one failing cancels the others
                tasks = [group.create_task(one(r, want and body.echo and i == 0))
                         for i, r in enumerate(runs)]
        except BaseExceptionGroup as failed:  # the first failure, as one request's
            raise failed.exceptions[0] from None
        return [t.result() for t in tasks]

    try:
        results = await until_disconnect(request, answer())
    except ClientDisconnected:
        await audit("failed:disconnected")
        return Response(status_code=CLIENT_CLOSED)
    except (RequestError, UnavailableError, EngineError) as exc:
        await audit(f"failed:{getattr(exc, 'code', None) or 'engine_error'}")
        raise
    await audit("answered")
    leading = results[0][0]
    choices = []
    for i, (r, (_, chunks)) in enumerate(zip(runs, results, strict=True)):
        assert r.generation is not None
        tokens = [t for c in chunks for t in c.tokens]
        choices.append({
            "index": i, "text": echo_text + "".join(c.text for c in chunks),
            "logprobs": legacy_logprobs(tokens, len(echo_text) if leading is None else 0,
                                        leading or ()) if want else None,
            "finish_reason": _finish(r.generation.outcome.finish_reason)})
    return JSONResponse({
        "id": cid, "object": "text_completion", "created": created, "model": run.model,
        "choices": choices, "usage": _usage(*runs)}, headers=headers)


def _usage(*runs: LocalRun) -> dict[str, Any]:
    """Usage of a request's runs: its prompt once, every choice's tokens."""
    outcomes = [r.generation.outcome for r in runs if r.generation is not None]
    accepted = sum(o.accepted_tokens for o in outcomes)
    return usage(outcomes[0].prompt_tokens, sum(o.completion_tokens for o in outcomes),
                 accepted=accepted, rejected=sum(o.drafted_tokens for o in outcomes) - accepted)


async def _prompt_logprobs(node: Serving, prompt: list[int]
                           ) -> list[tuple[str, float | None]]:
    """Echo + logprobs: score the prompt tokens (the first has no logprob)."""
    loop = asyncio.get_running_loop()
    scored = await loop.run_in_executor(node.executor, node.engine.score, prompt)

    def text(t: int) -> str:
        return node.engine.token_bytes(t).decode("utf-8", "replace")

    return [(text(prompt[0]), None)] + [(text(s.token), s.logprob) for s in scored]


async def _stream(request: Request, run: LocalRun, cid: str, created: int, echo_text: str,
                  want: bool, include_usage: bool, audit: Any) -> Any:
    offset = len(echo_text)

    def frame(text: str, tokens: list[TokenLogprob] | None, finish: str | None) -> bytes:
        choice = {"index": 0, "text": text,
                  "logprobs": legacy_logprobs(tokens, offset) if want and tokens is not None
                  else None, "finish_reason": finish}
        return sse({"id": cid, "object": "text_completion", "created": created,
                    "model": run.model, "choices": [choice],
                    **({"usage": None} if include_usage else {})})

    outcome = "failed:disconnected"
    try:
        async with AsyncExitStack() as stack:
            await admitted(run.node, stack, run.serving)
            if echo_text:
                yield frame(echo_text, None, None)
            chunks = run.chunks()
            failed = False
            try:
                # At the drain timeout: an error event, not a "stop" that looks complete.
                async for c in cut_when_draining(run.node, chunks):
                    yield frame(c.text, c.tokens, None)
                    offset += len(c.text)
            except EngineError:
                failed = True
                raise
            finally:
                with anyio.CancelScope(shield=True):
                    await chunks.aclose()  # type: ignore[attr-defined]
                run.record(failed=failed)
        assert run.generation is not None
        yield frame("", None, _finish(run.generation.outcome.finish_reason))
        if include_usage:
            yield sse({"id": cid, "object": "text_completion", "created": created,
                       "model": run.model, "choices": [], "usage": _usage(run)})
        yield SSE_DONE
        outcome = "answered"
    except (RequestError, UnavailableError) as exc:
        request.state.error_type = exc.code
        outcome = f"failed:{exc.code}"
        yield sse_error(exc.message, exc.error_type, exc.code)
        yield SSE_DONE
    except EngineError as exc:
        request.state.error_type = "engine_error"
        outcome = "failed:engine_error"
        yield sse_error(f"the inference engine failed: {exc}", "engine_error",
                        "engine_error")
        yield SSE_DONE
    finally:
        with anyio.CancelScope(shield=True):
            await audit(outcome)
