"""What a client read in a chat completion: its text and tool-call arguments, from a JSON
body or a server-sent-events stream, so tests and benchmarks can compare answers."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["answer_text"]


def answer_text(body: str, *, stream: bool) -> str:
    """The assistant's content followed by every tool call's arguments.

    ``body``: the response text — a ``chat.completion`` JSON object, or with ``stream``
    the SSE lines of ``chat.completion.chunk`` events.
    """
    if not stream:
        msg: dict[str, Any] = json.loads(body)["choices"][0]["message"]
        return str(msg.get("content") or "") + "".join(
            c["function"]["arguments"] for c in msg.get("tool_calls") or ())
    out: list[str] = []
    for line in body.splitlines():
        if line.startswith("data: {"):
            for c in json.loads(line[6:]).get("choices", []):
                out.append(c["delta"].get("content") or "")
                out += [t["function"]["arguments"] for t in c["delta"].get("tool_calls") or ()]
    return "".join(out)
