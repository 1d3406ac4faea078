"""OpenAI's wire format for the chat types: JSON bodies, SSE framing, logprob objects,
tool calls — written once, used by the API (what clients get) and by the remote tier
client (what upstream servers are sent and answer).

Shapes follow the OpenAI API reference: ``chat.completion`` and
``chat.completion.chunk`` objects, ``logprobs.content[]`` items with ``top_logprobs``,
``tool_calls[]`` with JSON-text ``arguments``, errors as
``{"error": {"message", "type", "param", "code"}}``, and server-sent events
``data: <json>\\n\\n`` ending with ``data: [DONE]``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import Any

from edgewise.chat import ChatAnswer, ChatRequest, Message, TokenLogprob, ToolCall

__all__ = [
    "SSE_DONE",
    "answer_from_body",
    "answer_usage",
    "chunk",
    "completion_body",
    "dumps",
    "error_body",
    "error_message",
    "legacy_logprobs",
    "logprob_items",
    "message_from_openai",
    "message_to_openai",
    "request_body",
    "request_from_payload",
    "request_payload",
    "sse",
    "sse_error",
    "tool_call_to_openai",
    "tool_calls_from_openai",
    "usage",
]

#: Compact JSON that keeps non-ASCII text as is (the SSE hot path).
dumps: Callable[[Any], str] = json.JSONEncoder(ensure_ascii=False,
                                               separators=(",", ":")).encode

#: The last event of every stream.
SSE_DONE = b"data: [DONE]\n\n"


def sse(obj: Any) -> bytes:
    """One server-sent event carrying ``obj`` as JSON."""
    return b"data: " + dumps(obj).encode() + b"\n\n"


def error_body(message: str, type_: str, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_message(content: bytes, default: str) -> str:
    """The ``error.message`` of an OpenAI-shaped error body (:func:`error_body`), or
    ``default`` when ``content`` is not one."""
    try:
        return str(json.loads(content)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return default


def sse_error(message: str, type_: str, code: str | None) -> bytes:
    """An error event for a stream whose 200 headers were already sent."""
    return sse(error_body(message, type_, None, code))


# -- messages and tool calls -------------------------------------------------------------

def tool_call_to_openai(c: ToolCall) -> dict[str, Any]:
    return {"id": c.id, "type": "function",
            "function": {"name": c.name, "arguments": c.arguments}}


def tool_calls_from_openai(calls: Sequence[dict[str, Any]] | None) -> tuple[ToolCall, ...]:
    return tuple(ToolCall(str(c["id"]), str(c["function"]["name"]),
                          str(c["function"].get("arguments") or "")) for c in calls or ())


def message_to_openai(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.name is not None:
        out["name"] = m.name
    if m.tool_calls:
        out["tool_calls"] = [tool_call_to_openai(c) for c in m.tool_calls]
        out["content"] = m.content or None
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    return out


def message_from_openai(data: dict[str, Any]) -> Message:
    return Message(str(data["role"]), str(data.get("content") or ""), data.get("name"),
                   tool_calls_from_openai(data.get("tool_calls")), data.get("tool_call_id"))


# -- requests ------------------------------------------------------------------------------

def request_body(req: ChatRequest, model: str) -> dict[str, Any]:
    """The ``POST /chat/completions`` body that asks an upstream for ``req``."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [message_to_openai(m) for m in req.messages],
    }
    if req.tools:
        body["tools"] = list(req.tools)
    if req.tool_choice is not None:
        body["tool_choice"] = req.tool_choice
    if req.tools and not req.parallel_tool_calls:
        body["parallel_tool_calls"] = False
    if req.response_format is not None:
        body["response_format"] = req.response_format
    for key in ("max_tokens", "temperature", "top_p", "seed", "presence_penalty",
                "frequency_penalty"):
        value = getattr(req, key)
        if value is not None:
            body[key] = value
    if req.stop:
        body["stop"] = list(req.stop)
    if req.n > 1:
        body["n"] = req.n
    if req.logprobs:
        body["logprobs"] = True
        if req.top_logprobs:
            body["top_logprobs"] = req.top_logprobs
    return body


def request_payload(req: ChatRequest) -> dict[str, Any]:
    """JSON-safe form of a request, for the durable async-job queue."""
    data = dataclasses.asdict(req)
    data["messages"] = [message_to_openai(m) for m in req.messages]
    data["stop"] = list(req.stop)
    data["tools"] = list(req.tools)
    return data


def request_from_payload(data: dict[str, Any]) -> ChatRequest:
    data = dict(data)
    data["messages"] = tuple(message_from_openai(m) for m in data["messages"])
    data["stop"] = tuple(data.get("stop") or ())
    data["tools"] = tuple(data.get("tools") or ())
    return ChatRequest(**data)


# -- logprobs --------------------------------------------------------------------------------

def logprob_items(tokens: Sequence[TokenLogprob]) -> list[dict[str, Any]]:
    """Tokens in OpenAI's chat ``choices[].logprobs.content`` shape."""
    return [
        {"token": t.token, "logprob": t.logprob, "bytes": t.bytes,
         "top_logprobs": [{"token": s, "logprob": lp, "bytes": b} for s, b, lp in t.top]}
        for t in tokens
    ]


def legacy_logprobs(tokens: Sequence[TokenLogprob], offset0: int,
                    leading: Sequence[tuple[str, float | None]] = ()) -> dict[str, Any]:
    """Tokens in the legacy ``/v1/completions`` ``logprobs`` shape (parallel lists);
    ``leading``: echoed prompt tokens (text, logprob) placed first."""
    texts: list[str] = []
    lps: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    offsets: list[int] = []
    pos = offset0
    for text, lp in leading:
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


# -- answers -----------------------------------------------------------------------------------

def usage(prompt_tokens: int, completion_tokens: int, *, accepted: int = 0,
          rejected: int = 0) -> dict[str, Any]:
    """OpenAI's ``usage``; with speculative decoding, ``completion_tokens_details`` says
    how many drafted tokens the model kept (``accepted_prediction_tokens``) and how many
    it verified and threw away (``rejected_prediction_tokens``)."""
    out: dict[str, Any] = {"prompt_tokens": prompt_tokens,
                           "completion_tokens": completion_tokens,
                           "total_tokens": prompt_tokens + completion_tokens}
    if accepted or rejected:
        out["completion_tokens_details"] = {"accepted_prediction_tokens": accepted,
                                            "rejected_prediction_tokens": rejected}
    return out


def answer_usage(answer: ChatAnswer) -> dict[str, Any]:
    return usage(answer.prompt_tokens, answer.completion_tokens,
                 accepted=answer.accepted_prediction_tokens,
                 rejected=answer.rejected_prediction_tokens)


def _finish(reason: str) -> str:
    """OpenAI's finish reasons: a cancelled or ended-by-stop generation is ``stop``."""
    return reason if reason in ("length", "tool_calls", "content_filter") else "stop"


def _message(answer: ChatAnswer) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": answer.text, "refusal": None}
    if answer.tool_calls:
        msg["tool_calls"] = [tool_call_to_openai(c) for c in answer.tool_calls]
        msg["content"] = answer.text or None
    return msg


def completion_body(answer: ChatAnswer, cid: str, created: int, *, include_logprobs: bool,
                    fingerprint: str | None = None) -> dict[str, Any]:
    """A ``chat.completion`` object. A redacted tier's logprobs describe the redacted
    text, so they are never returned."""
    body: dict[str, Any] = {
        "id": cid, "object": "chat.completion", "created": created, "model": answer.model}
    if fingerprint is not None:
        body["system_fingerprint"] = fingerprint
    body["choices"] = [{
        "index": i,
        "message": _message(a),
        "logprobs": {"content": a.logprob_items, "refusal": None}
        if include_logprobs and not a.redacted else None,
        "finish_reason": _finish(a.finish_reason),
    } for i, a in enumerate([answer, *answer.alternatives])]
    body["usage"] = answer_usage(answer)
    return body


def chunk(cid: str, created: int, model: str, delta: dict[str, Any], *,
          logprobs: list[dict[str, Any]] | None = None, finish: str | None = None,
          include_usage: bool = False, fingerprint: str | None = None) -> dict[str, Any]:
    """A ``chat.completion.chunk`` object with one choice."""
    out: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created,
                           "model": model}
    if fingerprint is not None:
        out["system_fingerprint"] = fingerprint
    out["choices"] = [{"index": 0, "delta": delta,
                       "logprobs": None if logprobs is None else {"content": logprobs,
                                                                  "refusal": None},
                       "finish_reason": None if finish is None else _finish(finish)}]
    if include_usage:
        out["usage"] = None
    return out


def answer_from_body(body: dict[str, Any], *, default_model: str = "") -> ChatAnswer:
    """A ``chat.completion`` object read back (from an upstream, or the node itself).

    Raises ``KeyError``, ``TypeError``, ``IndexError`` or ``ValueError`` on a malformed
    body; the caller says whose body it was."""
    use = body.get("usage") or {}
    model = str(body.get("model") or default_model)

    def one(choice: dict[str, Any]) -> ChatAnswer:
        message = choice["message"]
        return ChatAnswer(
            text=message.get("content") or "",
            finish_reason=choice.get("finish_reason") or "stop", model=model,
            logprob_items=list((choice.get("logprobs") or {}).get("content") or []),
            tool_calls=list(tool_calls_from_openai(message.get("tool_calls"))))

    choices = sorted(body["choices"], key=lambda c: int(c.get("index", 0)))
    answer = one(choices[0])
    answer.alternatives = [one(c) for c in choices[1:]]
    answer.prompt_tokens = int(use.get("prompt_tokens", 0))
    answer.completion_tokens = int(use.get("completion_tokens", 0))
    return answer
