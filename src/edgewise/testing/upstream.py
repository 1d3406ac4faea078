"""A recording, echoing OpenAI-compatible upstream, for checking what crosses a boundary.

Point a tier at it (``url: http://127.0.0.1:PORT/v1``) and every request body the node
sends up is kept in :attr:`RecordingUpstream.received` (and, with ``log_path``, appended
to a JSONL file), so a test or a benchmark can search it for values that should never
have arrived. It answers every chat request by echoing the last user message back
(``"You said: …"``), token by token when streaming — so placeholders sent up come
back down, and the node's restoration can be checked end to end. A request with
``tools`` is answered with a call of the first tool whose arguments echo the same text
(``{"echo": "…"}``), to check restoration inside tool-call arguments.

Run one by hand: ``python -m edgewise.testing.upstream --port 8081 --log sent.jsonl``.

It is a test double, not a model: no engine, no weights.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = ["RecordingUpstream"]


def _pieces(text: str) -> list[str]:
    """Split like a tokenizer might: short pieces, placeholders cut in the middle."""
    return [m for m in re.findall(r"\s*\S{1,4}", text) if m] or [text]


class RecordingUpstream:
    def __init__(self, *, model: str = "recording-upstream", log_path: str | Path | None = None,
                 prefix: str = "You said: ") -> None:
        self.model = model
        self.prefix = prefix
        self.received: list[dict[str, Any]] = []
        self.log_path = Path(log_path) if log_path else None
        self._lock = threading.Lock()
        self.app = Starlette(routes=[
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
        ])

    def seen(self) -> str:
        """Every string the upstream received (message texts, tool arguments decoded,
        names…), one per line: what to search for leaked values
        (:func:`edgewise.testing.leaks.leaked`)."""
        from edgewise.testing.leaks import strings_of

        with self._lock:
            return strings_of(self.received)

    def texts(self) -> str:
        """Everything received, as one JSON string per request (to search for values)."""
        with self._lock:
            return "\n".join(json.dumps(b, ensure_ascii=False) for b in self.received)

    async def _models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": self.model, "object": "model", "owned_by": "edgewise-testing"}]})

    def _record(self, body: dict[str, Any]) -> None:
        with self._lock:
            self.received.append(body)
            if self.log_path is not None:
                with self.log_path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(body, ensure_ascii=False) + "\n")

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self._record(body)
        users = [m for m in body.get("messages", []) if m.get("role") == "user"]
        last = users[-1].get("content", "") if users else ""
        if isinstance(last, list):
            last = "".join(p.get("text", "") for p in last if isinstance(p, dict))
        text = self.prefix + str(last)
        pieces = _pieces(text)
        created, cid = int(time.time()), "chatcmpl-recording"
        usage = {"prompt_tokens": 1, "completion_tokens": len(pieces),
                 "total_tokens": 1 + len(pieces)}
        items = [{"token": p, "logprob": -0.01, "bytes": list(p.encode()), "top_logprobs": []}
                 for p in pieces]
        tools = body.get("tools") or []
        if tools:
            name = str(tools[0].get("function", {}).get("name", "tool"))
            call = {"id": "call_recording", "type": "function",
                    "function": {"name": name, "arguments": json.dumps({"echo": text})}}
            return JSONResponse({
                "id": cid, "object": "chat.completion", "created": created,
                "model": self.model, "usage": usage,
                "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": None,
                             "message": {"role": "assistant", "content": None,
                                         "tool_calls": [call]}}],
            })
        if not body.get("stream"):
            return JSONResponse({
                "id": cid, "object": "chat.completion", "created": created,
                "model": self.model, "usage": usage,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text},
                             "logprobs": {"content": items} if body.get("logprobs") else None}],
            })

        async def events() -> Any:
            def frame(delta: dict[str, Any], finish: str | None = None,
                      lp: Any = None) -> str:
                return "data: " + json.dumps({
                    "id": cid, "object": "chat.completion.chunk", "created": created,
                    "model": self.model, "choices": [{"index": 0, "delta": delta,
                                                      "logprobs": lp,
                                                      "finish_reason": finish}]}) + "\n\n"
            yield frame({"role": "assistant", "content": ""})
            for p, item in zip(pieces, items, strict=True):
                yield frame({"content": p}, lp={"content": [item]} if body.get("logprobs")
                            else None)
            yield frame({}, "stop")
            yield "data: " + json.dumps({"id": cid, "object": "chat.completion.chunk",
                                         "created": created, "model": self.model,
                                         "choices": [], "usage": usage}) + "\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")


def main() -> None:  # pragma: no cover - a manual tool
    import uvicorn

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8081)
    ap.add_argument("--log", default=None, help="append every received body to this JSONL")
    args = ap.parse_args()
    up = RecordingUpstream(log_path=args.log)
    uvicorn.run(up.app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":  # pragma: no cover
    main()
