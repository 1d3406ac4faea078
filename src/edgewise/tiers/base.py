"""What the router sends to a tier, what comes back, and the Endpoint protocol that
local engines and remote OpenAI-compatible servers both implement."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from edgewise.errors import EdgewiseError
from edgewise.routing.breaker import CircuitBreaker, LatencyEstimate

__all__ = ["ChatAnswer", "ChatRequest", "Delta", "Endpoint", "EndpointError", "Message",
           "ToolCall"]


class EndpointError(EdgewiseError):
    """A tier endpoint failed (unreachable, timed out, 5xx): fail over, count it in the
    breaker. The message names the endpoint, never request content."""


@dataclass(frozen=True)
class ToolCall:
    """A function call an assistant message made (OpenAI ``tool_calls[]``)."""

    id: str
    name: str
    #: The arguments as the model wrote them: JSON text (not parsed, not re-encoded).
    arguments: str

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class Message:
    """One chat message. ``tool_calls`` (assistant) and ``tool_call_id`` (role ``tool``)
    carry function calling; only tiers with a remote endpoint can serve those."""

    role: str
    content: str
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    def to_openai(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.name is not None:
            out["name"] = self.name
        if self.tool_calls:
            out["tool_calls"] = [c.to_openai() for c in self.tool_calls]
            out["content"] = self.content or None
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out

    @classmethod
    def from_openai(cls, data: dict[str, Any]) -> Message:
        calls = tuple(ToolCall(str(c["id"]), str(c["function"]["name"]),
                               str(c["function"].get("arguments") or ""))
                      for c in data.get("tool_calls") or ())
        return cls(str(data["role"]), str(data.get("content") or ""), data.get("name"),
                   calls, data.get("tool_call_id"))


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat request, independent of which tier will answer it."""

    messages: tuple[Message, ...]
    model: str = "auto"
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    #: Per-token logprobs in the answer (the client asked, or the cascade needs them).
    logprobs: bool = True
    top_logprobs: int = 0
    #: Function definitions (OpenAI ``tools``, passed through as given) and ``tool_choice``.
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: Any = None

    @property
    def uses_tools(self) -> bool:
        """Whether serving this needs function calling (a remote tier)."""
        return bool(self.tools) or any(m.tool_calls or m.role == "tool"
                                       for m in self.messages)

    def to_openai(self, model: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "messages": [m.to_openai() for m in self.messages],
        }
        if self.tools:
            body["tools"] = list(self.tools)
        if self.tool_choice is not None:
            body["tool_choice"] = self.tool_choice
        for key in ("max_tokens", "temperature", "top_p", "seed", "presence_penalty",
                    "frequency_penalty"):
            value = getattr(self, key)
            if value is not None:
                body[key] = value
        if self.stop:
            body["stop"] = list(self.stop)
        if self.logprobs:
            body["logprobs"] = True
            if self.top_logprobs:
                body["top_logprobs"] = self.top_logprobs
        return body

    def to_payload(self) -> dict[str, Any]:
        """JSON-safe form, for the async job queue."""
        data = dataclasses.asdict(self)
        data["messages"] = [m.to_openai() for m in self.messages]
        data["stop"] = list(self.stop)
        data["tools"] = list(self.tools)
        return data

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> ChatRequest:
        data = dict(data)
        data["messages"] = tuple(Message.from_openai(m) for m in data["messages"])
        data["stop"] = tuple(data.get("stop") or ())
        data["tools"] = tuple(data.get("tools") or ())
        return cls(**data)


@dataclass
class ChatAnswer:
    text: str
    finish_reason: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: OpenAI ``logprobs.content`` items (token, logprob, bytes, top_logprobs).
    logprob_items: list[dict[str, Any]] = field(default_factory=list)
    ttft_s: float | None = None
    total_s: float = 0.0
    #: The tier answered a redacted request; the text has been restored, and the token
    #: logprobs (which describe the redacted text) are not returned to the client.
    redacted: bool = False
    #: Function calls the model made instead of (or besides) answering.
    tool_calls: list[ToolCall] = field(default_factory=list)

    @property
    def logprobs(self) -> list[float]:
        return [float(i["logprob"]) for i in self.logprob_items]

    def _message(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": "assistant", "content": self.text, "refusal": None}
        if self.tool_calls:
            msg["tool_calls"] = [c.to_openai() for c in self.tool_calls]
            msg["content"] = self.text or None
        return msg

    def to_openai(self, cid: str, created: int, *, include_logprobs: bool) -> dict[str, Any]:
        """A ``chat.completion`` body."""
        return {
            "id": cid, "object": "chat.completion", "created": created, "model": self.model,
            "choices": [{
                "index": 0,
                "message": self._message(),
                "logprobs": {"content": self.logprob_items, "refusal": None}
                if include_logprobs and not self.redacted else None,
                "finish_reason": self.finish_reason,
            }],
            "usage": {"prompt_tokens": self.prompt_tokens,
                      "completion_tokens": self.completion_tokens,
                      "total_tokens": self.prompt_tokens + self.completion_tokens},
        }


@dataclass(frozen=True)
class Delta:
    """A streamed piece of an answer. A stream's last item carries ``final`` (the whole
    answer: finish reason, usage) and no text."""

    text: str
    logprob_items: tuple[dict[str, Any], ...] = ()
    final: ChatAnswer | None = None


class Endpoint(Protocol):
    tier: str
    label: str
    breaker: CircuitBreaker
    latency: LatencyEstimate

    @property
    def models(self) -> tuple[str, ...]:
        """Model names this endpoint answers to (for ``model: "<name>"`` steering)."""

    def ready(self) -> bool:
        """Whether the endpoint can take a request now (breaker and local state)."""

    async def chat(self, req: ChatRequest) -> ChatAnswer:
        """Answer in full; raise :class:`EndpointError` if the endpoint failed."""

    def stream(self, req: ChatRequest) -> AsyncIterator[Delta]:
        """Answer piece by piece; the last item is a ``Delta`` with ``final`` set."""

    async def probe(self) -> None:
        """A cheap health check; raise :class:`EndpointError` when unhealthy."""

    async def aclose(self) -> None: ...
