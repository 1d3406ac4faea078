"""The OpenAI-compatible routes: ``/v1/chat/completions``, ``/v1/completions``,
``/v1/models``.

Flow of a request: validate (schemas) → check model name and limits → tokenize → wait
for an engine slot (429 when the queue is full) → generate on the engine thread →
answer as JSON or as SSE chunks (``data: [DONE]`` last). A client that disconnects stops
its generation within one token; the slot is released only after the engine thread
has stopped.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from edgewise.api.errors import sse_error
from edgewise.api.schemas import ChatCompletionRequest, CompletionRequest
from edgewise.engines import ChatMessage, Chunk, SamplingParams, TokenLogprob
from edgewise.errors import (
    ContextLengthError,
    EngineError,
    InvalidRequestError,
    RequestError,
    UnavailableError,
    UnknownModelError,
)
from edgewise.node import Node
from edgewise.serving.run import LocalRun, admitted, precheck_queue

__all__ = ["router"]

router = APIRouter()

_dumps: Callable[[Any], str] = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


# -- request checks -------------------------------------------------------------------


def _check_model(node: Node, requested: str) -> str:
    """Accept the served model id, its tier name, ``auto`` or ``default``."""
    served = node.model_id
    if requested in (served, node.tier, "auto", "default"):
        return served
    # The requested name is not echoed: error messages never quote request content.
    raise UnknownModelError(
        f"the requested model is not served by node {node.name!r}; available: "
        f"{served!r} (or 'auto', or the tier name {node.tier!r}); GET /v1/models lists them",
        param="model",
    )


def _valid_text(text: str, param: str) -> str:
    """JSON may carry lone surrogates (``"\\ud800"``) that no tokenizer can encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequestError(
            f"{param} contains invalid Unicode (a lone surrogate escape); send valid UTF-8",
            param=param) from None
    return text


def _check_messages(body: ChatCompletionRequest, *, routed: bool) -> None:
    """Message shapes: ``content`` may be null only for an assistant's tool calls; tool
    traffic needs a tier ladder (the local engine does not call functions)."""
    for i, m in enumerate(body.messages):
        tooling = m.role == "tool" or m.tool_calls
        if tooling and not routed:
            raise InvalidRequestError(
                "tool messages and tool calls are not supported by this node (its local "
                "engine does not call functions; a node with a remote tier serves them)",
                param=f"messages[{i}]", code="unsupported_parameter")
        if m.content is None and not (m.role == "assistant" and m.tool_calls):
            raise InvalidRequestError("content may be null only in an assistant message "
                                      "with tool_calls", param=f"messages[{i}].content")
        if m.role == "tool" and m.tool_call_id is None:
            raise InvalidRequestError("a tool message needs the tool_call_id it answers",
                                      param=f"messages[{i}].tool_call_id")
        if m.tool_calls and m.role != "assistant":
            raise InvalidRequestError("only assistant messages carry tool_calls",
                                      param=f"messages[{i}].tool_calls")
        for j, c in enumerate(m.tool_calls or ()):
            _valid_text(c.function.arguments,
                        f"messages[{i}].tool_calls[{j}].function.arguments")


def _reject_unsupported(body: ChatCompletionRequest | CompletionRequest, *,
                        routed: bool = False) -> None:
    if body.n != 1:
        raise InvalidRequestError("n > 1 is not supported by this node; send n=1",
                                  param="n", code="unsupported_parameter")
    if body.logit_bias:
        raise InvalidRequestError("logit_bias is not supported by this node",
                                  param="logit_bias", code="unsupported_parameter")
    if isinstance(body, ChatCompletionRequest):
        if (body.tools and not routed) or body.functions:
            raise InvalidRequestError(
                "tools / function calling are not supported by this node"
                + (" (a node with a remote tier serves `tools`; legacy `functions` are "
                   "not supported)" if body.functions else
                   " (its local engine does not call functions)"),
                param="functions" if body.functions else "tools",
                code="unsupported_parameter")
        if body.tool_choice is not None and not body.tools:
            raise InvalidRequestError("tool_choice needs tools", param="tool_choice")
        _check_messages(body, routed=routed)
        if body.response_format and body.response_format.get("type", "text") != "text":
            raise InvalidRequestError(
                "only response_format {'type': 'text'} is supported by this node",
                param="response_format", code="unsupported_parameter")
        if body.top_logprobs and not body.logprobs:
            raise InvalidRequestError("top_logprobs requires logprobs=true",
                                      param="top_logprobs")
    else:
        if body.suffix:
            raise InvalidRequestError("suffix is not supported by this node",
                                      param="suffix", code="unsupported_parameter")
        if body.best_of not in (None, 1):
            raise InvalidRequestError("best_of > 1 is not supported by this node",
                                      param="best_of", code="unsupported_parameter")
    if body.stop is not None:
        for s in body.stop_list():
            if not s:
                raise InvalidRequestError("stop strings must not be empty", param="stop")
            _valid_text(s, "stop")


def _sampling(node: Node, body: ChatCompletionRequest | CompletionRequest, prompt_len: int,
              max_tokens: int | None, top_logprobs: int) -> SamplingParams:
    n_ctx = node.info.n_ctx
    if prompt_len >= n_ctx:
        raise ContextLengthError(
            f"this model's context window is {n_ctx} tokens and the prompt uses "
            f"{prompt_len}; shorten the messages (or serve with a larger engine.n_ctx)",
            param="messages" if isinstance(body, ChatCompletionRequest) else "prompt",
        )
    limit = node.config.serving.max_tokens_limit or n_ctx
    if max_tokens is not None and max_tokens > limit:
        raise InvalidRequestError(
            f"max_tokens={max_tokens} is larger than this node allows ({limit}); "
            f"at most {n_ctx - prompt_len} more tokens fit after this prompt",
            param="max_completion_tokens" if isinstance(body, ChatCompletionRequest)
            and body.max_completion_tokens else "max_tokens",
        )
    d = node.config.sampling
    return SamplingParams(
        max_tokens=max_tokens if max_tokens is not None else n_ctx - prompt_len,
        temperature=d.temperature if body.temperature is None else body.temperature,
        top_p=d.top_p if body.top_p is None else body.top_p,
        top_k=d.top_k,
        min_p=d.min_p,
        repeat_penalty=d.repeat_penalty,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        stop=body.stop_list(),
        seed=None if body.seed is None else body.seed % (1 << 32),
        top_logprobs=top_logprobs,
    )


# -- running a generation ---------------------------------------------------------------


async def _watch_disconnect(request: Request, on_disconnect: Callable[[], None]) -> None:
    """For non-streaming requests: stop generating if the client goes away."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            on_disconnect()
            return


def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()


async def _collect(request: Request, run: LocalRun) -> list[Chunk]:
    """Run to completion, stopping early if the client disconnects."""
    async with AsyncExitStack() as stack:
        await admitted(run.node, stack)
        stream = run.chunks()
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.create_task(_watch_disconnect(request, lambda: _cancel(task)))
        try:
            return [c async for c in stream]
        finally:
            watcher.cancel()
            with anyio.CancelScope(shield=True):
                await stream.aclose()  # type: ignore[attr-defined]
            run.record()


def _sse(obj: Any) -> bytes:
    return b"data: " + _dumps(obj).encode() + b"\n\n"


def _stream_body(request: Request, run: LocalRun,
                 frame: Callable[[Chunk | None, str | None], dict[str, Any]],
                 usage_frame: Callable[[], dict[str, Any]] | None,
                 first: dict[str, Any] | None) -> AsyncIterator[bytes]:
    async def body() -> AsyncIterator[bytes]:
        async with AsyncExitStack() as stack:
            try:
                await admitted(run.node, stack)
                if first is not None:
                    yield _sse(first)
                stream = run.chunks()
                try:
                    async for chunk in stream:
                        yield _sse(frame(chunk, None))
                finally:
                    with anyio.CancelScope(shield=True):  # see serving/runner.py
                        await stream.aclose()  # type: ignore[attr-defined]
                    run.record()
                assert run.generation is not None
                yield _sse(frame(None, run.generation.outcome.finish_reason))
                if usage_frame is not None:
                    yield _sse(usage_frame())
                yield b"data: [DONE]\n\n"
            except (RequestError, UnavailableError) as exc:
                request.state.error_type = exc.code
                yield sse_error(str(exc), getattr(exc, "error_type", "api_error"), exc.code)
            except EngineError as exc:
                request.state.error_type = "engine_error"
                yield sse_error(f"the inference engine failed: {exc}", "engine_error",
                                "engine_error")
    return body()


def _usage(run: LocalRun) -> dict[str, int]:
    assert run.generation is not None
    o = run.generation.outcome
    return {"prompt_tokens": o.prompt_tokens, "completion_tokens": o.completion_tokens,
            "total_tokens": o.prompt_tokens + o.completion_tokens}


def _finish(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def _chat_logprobs(tokens: list[TokenLogprob]) -> dict[str, Any]:
    return {"content": [
        {"token": t.token, "logprob": t.logprob, "bytes": t.bytes,
         "top_logprobs": [{"token": s, "logprob": lp, "bytes": b} for s, b, lp in t.top]}
        for t in tokens
    ], "refusal": None}


def _headers(run: LocalRun) -> dict[str, str]:
    return {"x-edgewise-model": run.model, "x-request-id": run.id}


# -- chat ------------------------------------------------------------------------------


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request
                           ) -> JSONResponse | StreamingResponse:
    node = _node(request)
    routed = request.app.state.router is not None
    _reject_unsupported(body, routed=routed)
    messages = [ChatMessage("system" if m.role == "developer" else m.role,
                            _valid_text(m.text(), f"messages[{i}].content"))
                for i, m in enumerate(body.messages)]
    if routed:  # a tier ladder: route, cascade, fail over
        from edgewise.api.routed import routed_chat

        return await routed_chat(body, messages, request, request.app.state.router)
    model = _check_model(node, body.model)
    try:
        prompt = node.engine.chat_prompt(messages)
    except EngineError as exc:
        raise InvalidRequestError(f"messages could not be tokenized: {exc}",
                                  param="messages") from exc
    max_tokens = body.max_completion_tokens or body.max_tokens
    want_logprobs = bool(body.logprobs)
    params = _sampling(node, body, len(prompt), max_tokens,
                       (body.top_logprobs or 0) if want_logprobs else 0)
    run = LocalRun(node, model, prompt, params)
    cid, created = f"chatcmpl-{run.id}", int(time.time())
    fingerprint = f"edgewise-{node.info.sha256[:10]}"

    if body.stream:
        precheck_queue(node)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        def frame(chunk: Chunk | None, finish: str | None) -> dict[str, Any]:
            choice: dict[str, Any] = {"index": 0, "delta": {}, "logprobs": None,
                                      "finish_reason": None}
            if chunk is not None:
                choice["delta"] = {"content": chunk.text}
                if want_logprobs:
                    choice["logprobs"] = _chat_logprobs(chunk.tokens)
            else:
                choice["finish_reason"] = _finish(finish or "stop")
            out = {"id": cid, "object": "chat.completion.chunk", "created": created,
                   "model": model, "system_fingerprint": fingerprint, "choices": [choice]}
            if include_usage:
                out["usage"] = None
            return out

        def usage_frame() -> dict[str, Any]:
            return {"id": cid, "object": "chat.completion.chunk", "created": created,
                    "model": model, "system_fingerprint": fingerprint, "choices": [],
                    "usage": _usage(run)}

        first = frame(Chunk("", []), None)
        first["choices"][0]["delta"] = {"role": "assistant", "content": ""}
        return StreamingResponse(
            _stream_body(request, run, frame, usage_frame if include_usage else None, first),
            media_type="text/event-stream",
            headers={**_headers(run), "cache-control": "no-cache"},
        )

    chunks = await _collect(request, run)
    assert run.generation is not None
    tokens = [t for c in chunks for t in c.tokens]
    return JSONResponse({
        "id": cid, "object": "chat.completion", "created": created, "model": model,
        "system_fingerprint": fingerprint,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "".join(c.text for c in chunks),
                        "refusal": None},
            "logprobs": _chat_logprobs(tokens) if want_logprobs else None,
            "finish_reason": _finish(run.generation.outcome.finish_reason),
        }],
        "usage": _usage(run),
    }, headers=_headers(run))


# -- legacy completions ----------------------------------------------------------------


def _legacy_logprobs(tokens: list[TokenLogprob], offset0: int,
                     leading: list[tuple[str, float | None]] | None = None) -> dict[str, Any]:
    texts: list[str] = []
    lps: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    offsets: list[int] = []
    pos = offset0
    for text, lp in leading or []:
        texts.append(text)
        lps.append(lp)
        tops.append(None)
        offsets.append(pos)
        pos += len(text)
    for t in tokens:
        texts.append(t.token)
        lps.append(t.logprob)
        tops.append({s: lp for s, _, lp in t.top} if t.top else None)
        offsets.append(pos)
        pos += len(t.token)
    return {"tokens": texts, "token_logprobs": lps, "top_logprobs": tops,
            "text_offset": offsets}


@router.post("/v1/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request
                      ) -> JSONResponse | StreamingResponse:
    node = _node(request)
    model = _check_model(node, body.model)
    _reject_unsupported(body)
    if isinstance(body.prompt, list) and body.prompt and isinstance(body.prompt[0], str):
        if len(body.prompt) != 1:
            raise InvalidRequestError("only one prompt per request is supported; send a "
                                      "string or a list with one string", param="prompt")
        text = _valid_text(str(body.prompt[0]), "prompt")
        prompt = node.engine.tokenize(text)
    elif isinstance(body.prompt, list):
        n_vocab = node.info.n_vocab
        ids = [int(t) for t in body.prompt]
        if any(not 0 <= t < n_vocab for t in ids):
            raise InvalidRequestError(f"prompt token ids must be in [0, {n_vocab})",
                                      param="prompt")
        prompt = ids
        text = b"".join(node.engine.token_bytes(t) for t in ids).decode("utf-8", "replace")
    else:
        text = _valid_text(body.prompt, "prompt")
        prompt = node.engine.tokenize(text)
    if not prompt:
        raise InvalidRequestError("prompt is empty", param="prompt")
    want = body.logprobs is not None
    params = _sampling(node, body, len(prompt), body.max_tokens, body.logprobs or 0)
    run = LocalRun(node, model, prompt, params)
    cid, created = f"cmpl-{run.id}", int(time.time())
    echo_text = text if body.echo else ""

    async def prompt_logprobs() -> list[tuple[str, float | None]]:
        """Echo + logprobs: score the prompt tokens (first has no logprob)."""
        loop = asyncio.get_running_loop()
        scored = await loop.run_in_executor(node.executor, node.engine.score, prompt)
        bos_free = [(node.engine.token_bytes(prompt[0]).decode("utf-8", "replace"), None)]
        return bos_free + [(node.engine.token_bytes(s.token).decode("utf-8", "replace"),
                            s.logprob) for s in scored]

    if body.stream:
        precheck_queue(node)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        offset = [len(echo_text)]

        def frame(chunk: Chunk | None, finish: str | None) -> dict[str, Any]:
            choice: dict[str, Any] = {"index": 0, "text": "", "logprobs": None,
                                      "finish_reason": None}
            if chunk is not None:
                choice["text"] = chunk.text
                if want:
                    choice["logprobs"] = _legacy_logprobs(chunk.tokens, offset[0])
                offset[0] += len(chunk.text)
            else:
                choice["finish_reason"] = _finish(finish or "stop")
            return {"id": cid, "object": "text_completion", "created": created,
                    "model": model, "choices": [choice],
                    **({"usage": None} if include_usage else {})}

        def usage_frame() -> dict[str, Any]:
            return {"id": cid, "object": "text_completion", "created": created,
                    "model": model, "choices": [], "usage": _usage(run)}

        first = None
        if echo_text:
            first = frame(Chunk(echo_text, []), None)
            offset[0] = len(echo_text)
        return StreamingResponse(
            _stream_body(request, run, frame, usage_frame if include_usage else None, first),
            media_type="text/event-stream",
            headers={**_headers(run), "cache-control": "no-cache"},
        )

    leading: list[tuple[str, float | None]] | None = None
    if want and body.echo:
        async with AsyncExitStack() as stack:
            await admitted(node, stack)
            leading = await prompt_logprobs()
    chunks = await _collect(request, run)
    assert run.generation is not None
    tokens = [t for c in chunks for t in c.tokens]
    completion = "".join(c.text for c in chunks)
    return JSONResponse({
        "id": cid, "object": "text_completion", "created": created, "model": model,
        "choices": [{
            "index": 0, "text": echo_text + completion,
            "logprobs": _legacy_logprobs(tokens, len(echo_text) if leading is None else 0,
                                         leading) if want else None,
            "finish_reason": _finish(run.generation.outcome.finish_reason),
        }],
        "usage": _usage(run),
    }, headers=_headers(run))


# -- models ----------------------------------------------------------------------------


def _model_card(node: Node) -> dict[str, Any]:
    info = node.info
    return {"id": info.model, "object": "model", "created": int(node.started_at),
            "owned_by": "edgewise",
            "edgewise": {"engine": info.kind, "n_ctx": info.n_ctx, "sha256": info.sha256,
                         "size_bytes": info.size_bytes, "tier": node.tier, "node": node.name}}


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    node = _node(request)
    return {"object": "list", "data": [_model_card(node)] if node.ready else []}


@router.get("/v1/models/{model_id}")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    node = _node(request)
    _check_model(node, model_id)
    return _model_card(node)

