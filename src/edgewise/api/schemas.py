"""OpenAI request and response shapes (pydantic lives here, at the HTTP boundary).

Validation is strict (``"0.5"`` is not a number) and follows OpenAI's ranges, so a
request the real API would reject is rejected here too, with the same ``param`` names.
Unknown top-level fields are ignored, as OpenAI-compatible servers do, except features
this node does not implement (legacy function calling, ``logit_bias``, ``n > 1``…): those
are refused explicitly rather than silently dropped (``api/requests.py``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ChatCompletionRequest",
    "ChatMessageIn",
    "CompletionRequest",
    "ContentPart",
    "EmbeddingRequest",
    "ErrorBody",
    "ErrorResponse",
    "FunctionCallIn",
    "StreamOptions",
    "ToolCallIn",
]

_STRICT = ConfigDict(strict=True, extra="ignore")


class ContentPart(BaseModel):
    """A part of a message's content. Any ``type`` parses, so the API can say that only
    ``text`` parts are supported (rather than "missing field text" for an image)."""

    model_config = _STRICT
    type: Annotated[str, Field(min_length=1, max_length=64)]
    text: str | None = None


class FunctionCallIn(BaseModel):
    model_config = _STRICT
    name: Annotated[str, Field(min_length=1, max_length=256)]
    arguments: str = ""


class ToolCallIn(BaseModel):
    model_config = _STRICT
    id: Annotated[str, Field(min_length=1, max_length=256)]
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessageIn(BaseModel):
    model_config = _STRICT
    role: Literal["system", "developer", "user", "assistant", "tool"] = Field(
        description="`tool` messages (and assistant `tool_calls`) are served by tiers "
                    "that call functions: the local llama.cpp engine, remote tiers."
    )
    #: ``null`` only for an assistant message that makes tool calls.
    content: str | Annotated[list[ContentPart], Field(min_length=1)] | None
    name: str | None = None
    tool_calls: Annotated[list[ToolCallIn], Field(min_length=1)] | None = None
    tool_call_id: Annotated[str, Field(min_length=1, max_length=256)] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content)


class StreamOptions(BaseModel):
    model_config = _STRICT
    include_usage: bool = False


Stop = str | Annotated[list[str], Field(max_length=4)] | None


class _SamplingFields(BaseModel):
    model_config = _STRICT
    model: Annotated[str, Field(min_length=1, max_length=256)]
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    stop: Stop = None
    seed: int | None = None
    n: Annotated[int, Field(ge=1, le=128)] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    user: Annotated[str, Field(max_length=256)] | None = None
    logit_bias: dict[str, float] | None = None

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class ChatCompletionRequest(_SamplingFields):
    """``POST /v1/chat/completions``."""

    messages: Annotated[list[ChatMessageIn], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool | None = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None


class CompletionRequest(_SamplingFields):
    """``POST /v1/completions`` (legacy text completions)."""

    prompt: str | Annotated[list[str], Field(min_length=1)] | Annotated[
        list[int], Field(min_length=1)
    ]
    max_tokens: Annotated[int, Field(ge=1)] | None = 16
    echo: bool = False
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None
    suffix: str | None = None
    best_of: Annotated[int, Field(ge=1)] | None = None


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``."""

    model_config = _STRICT
    input: str | Annotated[list[str], Field(min_length=1)] | list[int] | list[list[int]]
    model: Annotated[str, Field(min_length=1, max_length=256)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None
    user: Annotated[str, Field(max_length=256)] | None = None


class VerifyRequest(BaseModel):
    """``POST /v1/edgewise/verify``: a peer's drafted tokens after a context, both as
    this node's model's token ids."""

    model_config = ConfigDict(strict=True, extra="forbid")
    model: Annotated[str, Field(min_length=1, max_length=256)] = "auto"
    prompt: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
    draft: Annotated[list[Annotated[int, Field(ge=0)]], Field(max_length=64)]
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    top_k: Annotated[int, Field(ge=0)] = 0
    min_p: Annotated[float, Field(ge=0, le=1)] = 0.0
    seed: int | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] = 0
    user: Annotated[str, Field(max_length=256)] | None = None


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
