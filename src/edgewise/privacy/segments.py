"""The texts of a chat request that the guard must scan, with where each comes from.

Every piece of text a request carries can reach an upstream model: each message's
content whatever its role (system, developer, user, assistant, tool), text parts of
multi-part content, message ``name`` fields, tool calls' function names and arguments
(a JSON string), legacy ``function_call`` and tool definitions' descriptions. They are
returned in request order, so a value split across consecutive messages sits in
consecutive segments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["chat_segments"]


def chat_segments(body: Mapping[str, Any] | Sequence[Any]) -> list[tuple[str, str]]:
    """``(where, text)`` for every text in a chat request body (or a list of messages).

    ``where`` is a JSON-path-like label (``messages[2].tool_calls[0].function.arguments``)
    for reports; it never contains the text. Non-text values are skipped.
    """
    out: list[tuple[str, str]] = []
    messages = body.get("messages", []) if isinstance(body, Mapping) else body
    if isinstance(messages, Sequence) and not isinstance(messages, str):
        for i, msg in enumerate(messages):
            if isinstance(msg, Mapping):
                _message(out, f"messages[{i}]", msg)
    if isinstance(body, Mapping):
        prompt = body.get("prompt")  # legacy completions
        if isinstance(prompt, str):
            out.append(("prompt", prompt))
        elif isinstance(prompt, list):
            out.extend((f"prompt[{i}]", p) for i, p in enumerate(prompt) if isinstance(p, str))
        for i, tool in enumerate(body.get("tools") or []):
            fn = tool.get("function") if isinstance(tool, Mapping) else None
            if isinstance(fn, Mapping) and isinstance(fn.get("description"), str):
                out.append((f"tools[{i}].function.description", fn["description"]))
    return out


def _message(out: list[tuple[str, str]], where: str, msg: Mapping[str, Any]) -> None:
    if isinstance(msg.get("name"), str):
        out.append((f"{where}.name", msg["name"]))
    content = msg.get("content")
    if isinstance(content, str):
        out.append((f"{where}.content", content))
    elif isinstance(content, list):
        for j, part in enumerate(content):
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                out.append((f"{where}.content[{j}].text", part["text"]))
            elif isinstance(part, str):
                out.append((f"{where}.content[{j}]", part))
    for j, call in enumerate(msg.get("tool_calls") or []):
        fn = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(fn, Mapping):
            for key in ("name", "arguments"):
                if isinstance(fn.get(key), str):
                    out.append((f"{where}.tool_calls[{j}].function.{key}", fn[key]))
    fc = msg.get("function_call")
    if isinstance(fc, Mapping):
        for key in ("name", "arguments"):
            if isinstance(fc.get(key), str):
                out.append((f"{where}.function_call.{key}", fc[key]))
