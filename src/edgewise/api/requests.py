"""From an OpenAI request body and its headers to what the router takes: a validated
:class:`~edgewise.chat.ChatRequest` and a :class:`~edgewise.routing.service.RequestContext`.

Checks that need no model run here, before anything is rendered, tokenized or scanned —
cheap ones first, so a hostile request costs the node almost nothing:

1. features this node does not implement (``n > 1`` streamed, ``logit_bias``, legacy
   ``functions``, a ``response_format`` schema the grammar cannot enforce…) are refused,
   never silently ignored;
2. message shapes (tool calls only on assistant messages, ``content: null`` only with
   them, valid Unicode everywhere);
3. size: at most ``serving.max_messages`` messages (counted on the parsed JSON before
   pydantic validates each of them, :func:`message_count`; a large body is parsed off
   the event loop, :class:`ParsedOffLoop`), and no more text than the largest
   context window of the node's tiers could hold — ``n_ctx × max_token_bytes`` for the
   local engine (each token stands for at most ``max_token_bytes`` bytes, so a longer
   text cannot fit, however it tokenizes); a node with a remote tier of unknown window
   only has the body limit;
4. ``max_tokens`` within ``serving.max_tokens_limit`` (default: the largest window).

Steering headers: ``x-edgewise-sensitivity`` (public|internal|pii|phi), ``…-max-latency-ms``,
``…-max-cost``, ``…-min-tier``, ``…-async`` (true|false).
"""

from __future__ import annotations

import asyncio
import json
import json.scanner
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from edgewise.api.auth import identity_of
from edgewise.api.schemas import ChatCompletionRequest, CompletionRequest
from edgewise.chat import ChatRequest, Message
from edgewise.engines.grammar import check_response_format
from edgewise.engines.grammar import check_tools as check_tool_definitions
from edgewise.errors import ClearanceError, ContextLengthError, InvalidRequestError
from edgewise.levels import LEVEL_NAMES, Level
from edgewise.node import Node
from edgewise.routing.service import RequestContext, Router
from edgewise.tiers.local import LocalEndpoint
from edgewise.wire import tool_calls_from_openai

__all__ = ["ParsedOffLoop", "chat_request", "check_size", "check_tools", "context",
           "max_tokens_of", "message_count", "parsed_json", "reject_unsupported", "screen_here",
           "valid_text"]

_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no", "")

#: JSON bodies larger than this are parsed in a worker thread (:class:`ParsedOffLoop`).
PARSE_IN_THREAD_BYTES = 256 * 1024


def _loads_yielding(body: bytes) -> Any:
    """``json.loads(body)`` with the pure-Python scanner. The C scanner holds the GIL for
    the whole document — 50 ms for 3.4 MB of small objects, so even from a worker
    thread the event loop stops that long — while the Python one lets go of it between
    bytecodes (every 5 ms), for ~5× the CPU. Strings are still scanned in C, so a
    document of a few long strings costs the same either way. Nesting deeper than
    about 300 levels raises ``RecursionError``, as deeper than ~1000 does in C."""
    decoder = json.JSONDecoder()
    decoder.scan_once = json.scanner.py_make_scanner(decoder)  # type: ignore[attr-defined]
    return decoder.decode(body.decode(json.detect_encoding(body), "surrogatepass"))


class _LargeBodyInThread(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            self._json = (await asyncio.to_thread(_loads_yielding, body)
                          if len(body) > PARSE_IN_THREAD_BYTES else json.loads(body))
        return self._json


class ParsedOffLoop(APIRoute):
    """A route whose large JSON bodies are parsed without stopping the event loop (the
    ``route_class`` of the chat and completions routers; FastAPI's documented way to
    change how a body is read). What FastAPI does with the result, and how it reports
    malformed JSON, is unchanged."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            return await handler(_LargeBodyInThread(request.scope, request.receive))

        return handle


def valid_text(text: str, param: str) -> str:
    """JSON may carry lone surrogates (``"\\ud800"``) that no tokenizer can encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequestError(
            f"{param} contains invalid Unicode (a lone surrogate escape); send valid UTF-8",
            param=param) from None
    return text


def reject_unsupported(body: ChatCompletionRequest | CompletionRequest) -> None:
    """Refuse what this node does not implement (step 1 of the module docstring)."""
    if body.n > 1 and body.stream:
        raise InvalidRequestError(
            "n > 1 with stream: true is not supported by this node; send stream: false "
            "(the n choices come back together) or n: 1", param="n",
            code="unsupported_parameter")
    if body.logit_bias:
        raise InvalidRequestError(
            "logit_bias is not supported by this node; to keep the answer to given words "
            "send response_format with a json_schema (an enum), to end it early send stop",
            param="logit_bias", code="unsupported_parameter")
    if isinstance(body, ChatCompletionRequest):
        if body.functions:
            raise InvalidRequestError(
                "legacy `functions` are not supported; send `tools` (each function as "
                "{type: function, function: {...}}) and `tool_choice`", param="functions",
                code="unsupported_parameter")
        check_tool_definitions(body.tools, body.tool_choice, body.parallel_tool_calls)
        check_response_format(body.response_format)
        if body.top_logprobs and not body.logprobs:
            raise InvalidRequestError("top_logprobs requires logprobs=true",
                                      param="top_logprobs")
        _check_messages(body)
    else:
        if body.suffix:
            raise InvalidRequestError(
                "suffix (fill in the middle) is not supported by this node; send the text "
                "before and after the gap in messages and ask for what goes between",
                param="suffix", code="unsupported_parameter")
        if body.best_of not in (None, 1):
            raise InvalidRequestError(
                "best_of > 1 is not supported by this node; send n with logprobs and keep "
                "the choice whose token logprobs sum highest", param="best_of",
                code="unsupported_parameter")
    for s in body.stop_list():
        if not s:
            raise InvalidRequestError("stop strings must not be empty", param="stop")
        valid_text(s, "stop")


def _check_messages(body: ChatCompletionRequest) -> None:
    for i, m in enumerate(body.messages):
        if isinstance(m.content, list):
            for j, part in enumerate(m.content):
                if part.type != "text" or part.text is None:
                    raise InvalidRequestError(
                        "only text content parts ({'type': 'text', 'text': ...}) are "
                        "supported by this node, not images, audio or files",
                        param=f"messages[{i}].content[{j}]", code="unsupported_parameter")
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
            valid_text(c.function.arguments,
                       f"messages[{i}].tool_calls[{j}].function.arguments")


def check_tools(body: ChatCompletionRequest, router: Router) -> None:
    """Tool traffic needs a tier that calls functions; a node with none (its local
    engine does not) says so at once, naming the offending part of the request."""
    if router.fleet.serves_tools:
        return
    why = ("(its local engine cannot constrain decoding, so it does not call functions; "
           "serve with the llamacpp engine, or add a remote tier that does)")
    for i, m in enumerate(body.messages):
        if m.role == "tool" or m.tool_calls:
            raise InvalidRequestError(f"tool messages and tool calls are not supported by "
                                      f"this node {why}", param=f"messages[{i}]",
                                      code="unsupported_parameter")
    if body.tools and body.tool_choice != "none":
        raise InvalidRequestError(f"tools / function calling are not supported by this node "
                                  f"{why}", param="tools", code="unsupported_parameter")


def _windows(node: Node, router: Router) -> tuple[int | None, int | None]:
    """(the largest context window in tokens, the most text bytes it can hold); ``None``
    where some tier's is unknown (a remote tier without ``max_context``)."""
    tokens: list[int] = []
    room: list[int] = []
    unknown_tokens = unknown_room = False
    for tier in router.fleet.tiers:
        for e in router.fleet.endpoints[tier.name]:
            if isinstance(e, LocalEndpoint) and node.ready:
                info = node.info
                tokens.append(info.n_ctx)
                if info.max_token_bytes:
                    room.append(info.n_ctx * info.max_token_bytes)
                else:
                    unknown_room = True
            elif tier.max_context is not None:
                tokens.append(tier.max_context)
                unknown_room = True  # its tokenizer is not known here
            else:
                unknown_tokens = unknown_room = True
    return (None if unknown_tokens or not tokens else max(tokens),
            None if unknown_room or not room else max(room))


def max_tokens_of(body: ChatCompletionRequest | CompletionRequest, node: Node,
                  router: Router) -> int | None:
    """The request's ``max_tokens`` (or ``max_completion_tokens``), within the limit."""
    if isinstance(body, ChatCompletionRequest):
        value, param = (body.max_completion_tokens, "max_completion_tokens") \
            if body.max_completion_tokens else (body.max_tokens, "max_tokens")
    else:
        value, param = body.max_tokens, "max_tokens"
    window, _ = _windows(node, router)
    limit = node.config.serving.max_tokens_limit or window
    if value is not None and limit is not None and value > limit:
        raise InvalidRequestError(
            f"{param}={value} is larger than this node allows ({limit} tokens: "
            + ("serving.max_tokens_limit" if node.config.serving.max_tokens_limit else
               "its largest context window") + ")", param=param)
    return value


def _check_count(n_messages: int, node: Node, param: str) -> None:
    limit = node.config.serving.max_messages
    if n_messages > limit:
        raise InvalidRequestError(
            f"{n_messages} messages are more than this node accepts in one request "
            f"({limit}, serving.max_messages)", param=param, code="too_many_messages")


async def message_count(request: Request) -> None:
    """The message count of a chat body, checked on the parsed JSON *before* pydantic
    validates the messages: validating them is done on the event loop, one model per
    message, and 100,000 of them (3.4 MB, under the body limit) held it for half a
    second, during which not even ``/healthz`` was answered. A route dependency, so it
    runs after FastAPI has parsed the body (``request.json()`` is cached) and before
    the body is validated."""
    data = await parsed_json(request)
    messages = data.get("messages") if data is not None else None
    if isinstance(messages, list):
        _check_count(len(messages), request.app.state.node, "messages")


async def parsed_json(request: Request) -> dict[str, Any] | None:
    """The JSON object FastAPI parsed from the body (cached: not a second parse), for a
    route dependency; ``None`` if the body is not JSON or not an object (validation
    then says what is wrong)."""
    media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if not (media == "application/json"
            or (media.startswith("application/") and media.endswith("+json"))
            ) or not await request.body():
        return None  # FastAPI did not parse it as JSON
    data = await request.json()
    return data if isinstance(data, dict) else None


def check_size(texts: list[str], n_messages: int, node: Node, router: Router, *,
               param: str) -> None:
    """Step 3 of the module docstring: before any rendering or tokenizing."""
    _check_count(n_messages, node, param)
    window, room = _windows(node, router)
    if room is None:
        return
    size = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
    if size > room:
        raise ContextLengthError(
            f"this model's context window is {window} tokens and the {param} "
            f"{'holds' if param == 'prompt' else 'hold'} {size} bytes of text, more than "
            f"{window} tokens can stand for; shorten the {param}",
            param=param)


def chat_request(body: ChatCompletionRequest, max_tokens: int | None) -> ChatRequest:
    """The router's request (``developer`` messages become ``system``). ``tool_choice:
    "none"`` with no tool traffic drops the tools: the answer may not call them, so any
    tier can give it."""
    msgs = []
    for i, m in enumerate(body.messages):
        msgs.append(Message(
            "system" if m.role == "developer" else m.role,
            valid_text(m.text(), f"messages[{i}].content"), name=m.name,
            tool_call_id=m.tool_call_id,
            tool_calls=tool_calls_from_openai(
                [c.model_dump() for c in m.tool_calls] if m.tool_calls else None)))
    tools, choice = tuple(body.tools or ()), body.tool_choice
    if choice == "none" and not any(m.tool_calls or m.role == "tool" for m in msgs):
        tools, choice = (), None
    return ChatRequest(
        messages=tuple(msgs), model=body.model, tools=tools, tool_choice=choice,
        parallel_tool_calls=body.parallel_tool_calls is not False,
        max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
        stop=body.stop_list(), seed=body.seed, presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        logprobs=bool(body.logprobs),  # the walk turns them on for a tier it scores
        top_logprobs=(body.top_logprobs or 0) if body.logprobs else 0,
        n=body.n,
        response_format=body.response_format
        if body.response_format and body.response_format.get("type", "text") != "text"
        else None)


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


def _header_bool(request: Request, name: str) -> bool:
    raw = request.headers.get(name)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidRequestError(f"header {name} must be true or false (or 1 / 0, yes / no)",
                              param=name)


async def screen_here(rt: Router, node: Node, texts: list[str], ctx: RequestContext, *,
                      route: str, path: str) -> Any:
    """The privacy guard on texts only this node answers (its own tier's clearance):
    refused with 403 — and audited as refused — when they hold more; the guard's result
    otherwise."""
    own = rt.fleet.tier(node.tier)
    guard = await rt.screen(ChatRequest(messages=tuple(Message("user", t) for t in texts)),
                            ctx)
    if guard.level > own.clearance:
        exc = ClearanceError(f"{guard.level} data may not be sent to {own.name} "
                             f"(clearance {own.clearance}); {path} is answered by this "
                             "node only")
        await rt.refused(exc, ctx, guard, route=route)
        raise exc
    return guard


def context(request: Request, router: Router, *, logprobs: bool = False,
            user: str | None = None) -> RequestContext:
    """Who asks (the API key's identity; ``user``: the body's OpenAI ``user`` field) and
    the steering headers."""
    ident = identity_of(request.scope)
    header = request.headers.get("x-edgewise-sensitivity")
    if header is not None and header not in LEVEL_NAMES:
        raise InvalidRequestError("header x-edgewise-sensitivity must be one of "
                                  + ", ".join(LEVEL_NAMES), param="x-edgewise-sensitivity")
    declared = Level.highest([header, ident.sensitivity,
                              router.config.routing.default_sensitivity])
    return RequestContext(
        request_id=uuid.uuid4().hex[:24], requester=ident.name, declared=declared,
        max_latency_ms=_header_float(request, "x-edgewise-max-latency-ms", minimum=1),
        max_cost=_header_float(request, "x-edgewise-max-cost", minimum=0),
        min_tier=request.headers.get("x-edgewise-min-tier"),
        is_async=_header_bool(request, "x-edgewise-async"), logprobs=logprobs, user=user)
