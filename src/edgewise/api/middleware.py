"""Pure ASGI middleware (no ``BaseHTTPMiddleware``: it breaks streaming and disconnects).

- :class:`NodeHeaders` stamps ``x-edgewise-node`` / ``x-edgewise-tier`` on every response.
- :class:`BodyLimit` refuses bodies over ``serving.max_body_bytes`` with 413 before the
  app parses them (by ``Content-Length`` or by counting a chunked body), and bodies that
  have not arrived in full within ``serving.body_timeout_s`` with 408 (one deadline for
  the whole body, so a byte at a time cannot hold the connection open for ever).
- :class:`AccessLog` logs one line per request (method, route, status, time — never a
  body or query string) and counts it in ``/metrics`` by route template.
- :class:`Draining` answers new ``/v1`` requests with 503 + ``Retry-After`` while the
  node drains for shutdown (the listener stays open, so clients get a clear answer
  instead of a refused connection).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgewise.telemetry import NodeMetrics
from edgewise.wire import error_body

__all__ = ["AccessLog", "BodyLimit", "Draining", "NodeHeaders", "send_error"]

access_log = logging.getLogger("edgewise.access")


class NodeHeaders:
    def __init__(self, app: ASGIApp, *, node: str, tier: str) -> None:
        self.app = app
        self.headers = [(b"x-edgewise-node", node.encode()), (b"x-edgewise-tier", tier.encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                message["headers"] = headers + [h for h in self.headers if h[0] not in present]
            await send(message)

        await self.app(scope, receive, stamped)


async def send_error(send: Send, status: int, message: str, code: str, *,
                     type_: str = "invalid_request_error",
                     headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """A whole OpenAI-shaped error response from ASGI middleware (before the app runs)."""
    body = json.dumps(error_body(message, type_, None, code)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


async def _send_413(send: Send, limit: int) -> None:
    await send_error(send, 413, f"request body is larger than the node's limit of {limit} "
                                "bytes (serving.max_body_bytes); shorten the prompt",
                     "payload_too_large")


async def _send_408(send: Send, timeout_s: float) -> None:
    # The rest of the body may still be on its way: the connection cannot be reused.
    await send_error(send, 408, f"the request body did not arrive within {timeout_s:g} s "
                                "(serving.body_timeout_s); send it at once",
                     "request_timeout", headers=((b"connection", b"close"),))


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await _send_413(send, self.max_bytes)
                    return
        # Read the body now (bounded in size and time), then replay it to the app.
        chunks: list[bytes] = []
        size = 0
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                await _send_408(send, self.timeout_s)
                return
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await _send_413(send, self.max_bytes)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: wait for http.disconnect

        await self.app(scope, replay, send)


class AccessLog:
    def __init__(self, app: ASGIApp, *, metrics: NodeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "(unmatched)"
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.request_seconds.labels(endpoint).observe(elapsed)
            error_type = scope.get("state", {}).get("error_type")
            # 499: the client went away first, a cancellation (counted as such), no error
            if (status >= 400 and status != 499) or error_type:
                self.metrics.errors.labels(error_type or f"http_{status}").inc()
            access_log.info("%s %s %d %.1fms", scope["method"], endpoint, status,
                            elapsed * 1000)


class _Drains(Protocol):
    draining: bool


class Draining:
    def __init__(self, app: ASGIApp, *, node: _Drains) -> None:
        self.app = app
        self.node = node

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or not self.node.draining
                or not scope["path"].startswith("/v1/")):
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["error_type"] = "shutting_down"
        await send_error(send, 503, "the node is shutting down; retry on another node or "
                                    "later", "shutting_down", type_="service_unavailable",
                         headers=((b"retry-after", b"5"), (b"connection", b"close")))
