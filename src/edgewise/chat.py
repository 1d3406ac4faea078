"""The chat types every layer shares: messages, tool calls, requests, answers and the
pieces of a streamed answer.

This is a leaf module (it imports nothing of edgewise): the API builds a
:class:`ChatRequest` from the client's JSON, the privacy guard screens and redacts it,
the router walks it down the tiers, a tier endpoint sends it to an engine or an upstream
server, and the answer comes back as a :class:`ChatAnswer` or a stream of
:class:`Delta`. How these types look on the wire (OpenAI's JSON and SSE) is
``edgewise.wire``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ChatAnswer", "ChatRequest", "Delta", "Message", "TokenLogprob", "ToolCall"]


@dataclass(frozen=True)
class ToolCall:
    """A function call an assistant message made (OpenAI ``tool_calls[]``)."""

    id: str
    name: str
    #: The arguments as the model wrote them: JSON text (not parsed, not re-encoded).
    arguments: str


@dataclass(frozen=True)
class Message:
    """One chat message. ``tool_calls`` (assistant) and ``tool_call_id`` (role ``tool``)
    carry function calling; tiers that call functions serve those (a remote endpoint,
    or a local engine that constrains decoding).

    ``role`` is ``system``, ``user``, ``assistant`` or ``tool`` (the API maps OpenAI's
    ``developer`` to ``system``)."""

    role: str
    content: str
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat request, independent of which tier will answer it."""

    messages: tuple[Message, ...]
    model: str = "auto"
    #: Longest answer in tokens; ``None``: up to the answering tier's context window
    #: (the local engine fills its ``n_ctx``; a remote tier applies its own default).
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
    #: Whether the model may make several calls in one answer (OpenAI's default).
    parallel_tool_calls: bool = True
    #: Independent answers wanted (OpenAI ``n``): the first is the answer, the rest
    #: come back as :attr:`ChatAnswer.alternatives`.
    n: int = 1
    #: OpenAI ``response_format`` (``json_object`` / ``json_schema``; None: text): the
    #: local engine decodes within its grammar, a remote tier is sent it as is.
    response_format: dict[str, Any] | None = None

    @property
    def uses_tools(self) -> bool:
        """Whether serving this needs function calling (a remote tier, or a local engine
        that constrains decoding)."""
        return bool(self.tools) or any(m.tool_calls or m.role == "tool"
                                       for m in self.messages)


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token as a client sees it: its text, bytes, logprob, alternatives."""

    token: str
    bytes: list[int]
    logprob: float
    #: Alternatives as (token text, bytes, logprob), most likely first.
    top: list[tuple[str, list[int], float]] = field(default_factory=list)


@dataclass
class ChatAnswer:
    """A whole answer, from any tier."""

    text: str
    finish_reason: str
    #: The model that answered (the local model id, or what the upstream reported).
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: Speculative decoding: drafted tokens the model kept / rejected (OpenAI's
    #: ``usage.completion_tokens_details`` names, as for its predicted outputs).
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0
    #: OpenAI ``logprobs.content`` items (token, logprob, bytes, top_logprobs).
    logprob_items: list[dict[str, Any]] = field(default_factory=list)
    ttft_s: float | None = None
    total_s: float = 0.0
    #: The tier answered a redacted request; the text has been restored, and the token
    #: logprobs (which describe the redacted text) are not returned to the client.
    redacted: bool = False
    #: Function calls the model made instead of (or besides) answering.
    tool_calls: list[ToolCall] = field(default_factory=list)
    #: Choices 1..n-1 of a request with ``n > 1`` (choice 0 is this answer), from the
    #: same tier; usage above counts them all.
    alternatives: list[ChatAnswer] = field(default_factory=list)

    @property
    def logprobs(self) -> list[float]:
        return [float(i["logprob"]) for i in self.logprob_items]


@dataclass(frozen=True)
class Delta:
    """A streamed piece of an answer. A stream's last item carries ``final`` (the whole
    answer: finish reason, usage) and no text. ``model`` is set on the first piece when
    the tier says which model is answering."""

    text: str
    logprob_items: tuple[dict[str, Any], ...] = ()
    final: ChatAnswer | None = None
    model: str | None = None
