"""The node's HTTP server: uvicorn, with a bound on every connection's time and number.

uvicorn (0.54) bounds one thing per connection: the idle time between two requests on a
keep-alive connection (``timeout_keep_alive``). A client that connects and sends nothing,
or half a request line, or a body one byte at a time, holds its socket — a file
descriptor — for as long as it likes; a few hundred such sockets (a slowloris, a broken
proxy, a port scan) use up ``ulimit -n`` and then even ``/healthz`` is refused. uvicorn
has no option for that, so this module adds four limits, ``serving.*`` in the config:

1. ``header_timeout_s`` (10 s): a request head (request line and headers) must arrive in
   full within this time, counted from when the connection opens, or — on a keep-alive
   connection — from the first byte that arrives after the previous response. Then the
   connection is closed, after a 408 if part of a head had arrived (a silent one is just
   closed: there is nobody to tell). Written by hand in :class:`GuardedProtocol`, a
   subclass of uvicorn's httptools protocol handed to uvicorn through
   ``Config(http=...)``, its hook for a custom protocol class: one ``loop.call_later``
   timer per connection, armed while no request is in progress and cancelled by the
   parser's ``on_headers_complete``. httptools is a dependency of edgewise (and what
   uvicorn's ``http="auto"`` picks), so the h11 protocol is not covered.
2. ``body_timeout_s`` (30 s): the whole body must arrive within this time, else 408 and
   the connection is closed. That is enforced where the body is read, in the
   :class:`~edgewise.api.middleware.BodyLimit` middleware, by bounding its ``receive()``
   loop with one deadline (not per chunk: a byte every 29 s would pass a per-chunk one).
3. ``keepalive_timeout_s`` (5 s): uvicorn's own ``timeout_keep_alive``.
4. ``max_connections`` (default min(1024, soft ``RLIMIT_NOFILE`` - 64); the 64 are kept
   for model files, SQLite, upstream connections and a burst of accepts that arrive
   before their connections are counted). At the cap a new connection **replaces the
   oldest idle one** — idle meaning no request in progress: it has not yet sent a whole
   head, or it is a keep-alive connection between requests (HTTP lets a server close
   those at any time). So a flood of silent sockets pushes out only its own oldest
   members, and a health check on a new connection is answered at once. Only when every
   slot has a request in progress is the new connection closed immediately, unanswered.
   The cap counts connections once uvicorn has them; the event loop accepts whatever
   is waiting in the listen backlog first, so a burst larger than the reserve can still
   meet EMFILE, which libuv (uvloop) answers by closing that batch — the server and
   its listening socket carry on.

Why not uvicorn's ``limit_concurrency`` (a 503 beyond N connections + tasks): it still
accepts every connection and answers 503 only once a whole request head has arrived,
so silent sockets keep their file descriptors and the process still runs out; and it
counts the asking connection itself, so at the cap ``/healthz`` gets 503 too. A 503
for the newcomer when every slot is busy would likewise mean keeping its socket until
its head arrives (up to ``header_timeout_s``), the very thing the cap prevents, and
writing one before the request arrives can be lost to a TCP reset; closing it is
immediate, and a client sees it as a connection error it can retry.

**TLS.** With an ``ssl.SSLContext`` (``build_server(..., ssl_context=...)``: a joined
node's ``serving.tls``, the control plane) uvicorn serves HTTPS with it. uvicorn does
not tell the app who the client is: :class:`GuardedProtocol` reads the certificate the
handshake verified and hands it to the app in the ASGI TLS extension
(``scope["extensions"]["tls"]["client_cert_chain"]``, PEM, leaf only: Python's ``ssl``
exposes only the leaf). The context is the caller's object, so loading a renewed
certificate into it (``load_cert_chain``) takes effect for the next handshake without a
restart; open connections keep theirs.

WebSockets are switched off (``ws="none"``): the node has no WebSocket route, and an
upgraded connection would leave this protocol, and so the cap.

**Stopping** (:class:`NodeServer`). uvicorn's own graceful shutdown closes the listening
socket first, so clients arriving during the drain get "connection refused", and a
stream still running at the timeout is cut without a word. Here the first SIGTERM or
Ctrl-C starts :meth:`Node.drain <edgewise.node.Node.drain>` while the socket stays
open: new ``/v1`` requests get 503 + ``Retry-After`` (``Draining`` middleware), in-flight
ones finish, and at ``serving.drain_timeout_s`` the streams still running end with an
SSE ``error`` event and ``[DONE]``; then uvicorn shuts down as usual. A second signal
exits at once. A node whose model fails to load in the background (a truncated GGUF)
stops with that one line and a non-zero exit status instead of serving 503 for ever.

**Garbage collection.** Once the model is loaded, :class:`NodeServer` moves every object
start-up made (modules, the app, the engine: ~85,000 tracked objects for the fake
engine, more with the privacy guard) into the collector's permanent generation
(``gc.freeze()``). A full collection traverses all tracked objects and stops every
thread meanwhile: 55-80 ms on a small machine for that start-up heap, triggered by any
request that allocates a lot (a 100,000-message body does), during which not even
``/healthz`` is answered. Frozen, the same collection takes ~3 ms. Start-up objects
live as long as the process anyway; only the cyclic garbage start-up left (once, and
small) is never freed.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import resource
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from edgewise.config import EdgewiseConfig, ServingConfig

__all__ = [
    "FD_RESERVE",
    "GuardedProtocol",
    "NodeServer",
    "ServerConfig",
    "build_server",
    "connection_cap",
    "serve",
]

log = logging.getLogger("edgewise.server")

#: File descriptors left to everything but client connections when the cap is derived
#: from ``ulimit -n``.
FD_RESERVE = 64
_DEFAULT_CAP = 1024
#: Seconds between two warnings about connections closed at the cap.
_WARN_EVERY_S = 10.0


def connection_cap(configured: int | None, soft_limit: int | None = None) -> int:
    """``serving.max_connections``, or when unset min(1024, ``ulimit -n`` - 64).

    ``soft_limit`` defaults to this process's soft ``RLIMIT_NOFILE`` (read now, when the
    server is built, not at import).
    """
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0] if soft_limit is None else soft_limit
    room = None if soft == resource.RLIM_INFINITY else soft - FD_RESERVE
    if configured is not None:
        if room is not None and configured > room:
            log.warning("serving.max_connections is %d but ulimit -n is %d: past %d "
                        "connections the node may run out of file descriptors; raise "
                        "ulimit -n or lower serving.max_connections", configured, soft,
                        max(room, 1))
        return configured
    if room is None:
        return _DEFAULT_CAP
    if room < 1:
        log.warning("ulimit -n is %d, which leaves no room for client connections after "
                    "%d for the node itself; serving 1 connection at a time, raise "
                    "ulimit -n", soft, FD_RESERVE)
    return max(1, min(_DEFAULT_CAP, room))


class _Slots:
    """The client connections of one server: how many are open, and the idle ones (no
    request in progress) in the order they became idle, oldest first."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.open = 0
        self.idle: OrderedDict[GuardedProtocol, None] = OrderedDict()
        self.replaced = 0  # idle connections closed for a newcomer since the last warning
        self.refused = 0  # newcomers closed because every slot was busy, likewise
        self._warned_at = -_WARN_EVERY_S

    def admit(self) -> bool:
        """Take a slot for a new connection, closing the oldest idle one if the cap is
        reached; False if every slot has a request in progress."""
        if self.open >= self.cap:
            if not self.idle:
                self.refused += 1
                self._warn()
                return False
            oldest = next(iter(self.idle))
            oldest.close_for_newcomer()  # releases its slot
            self.replaced += 1
            self._warn()
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1

    def _warn(self) -> None:
        now = time.monotonic()
        if now - self._warned_at < _WARN_EVERY_S:
            return
        self._warned_at = now
        log.warning("at the connection cap (serving.max_connections=%d): closed %d idle "
                    "connections to admit new ones and %d new ones with every slot busy "
                    "(since the last such warning); raise the cap and ulimit -n if these "
                    "are real clients", self.cap, self.replaced, self.refused)
        self.replaced = self.refused = 0


class ServerConfig(uvicorn.Config):
    """uvicorn's Config plus what :class:`GuardedProtocol` needs: the header timeout and
    the connection slots shared by every connection of the server."""

    def __init__(self, app: Any, *, serving: ServingConfig,
                 ssl_context: ssl.SSLContext | None = None, **uvicorn_options: Any) -> None:
        if ssl_context is not None:
            uvicorn_options["ssl_context_factory"] = lambda _cfg, _default: ssl_context
        super().__init__(
            app, http=GuardedProtocol, ws="none",
            # uvicorn annotates it int but only hands it to loop.call_later.
            timeout_keep_alive=serving.keepalive_timeout_s,  # type: ignore[arg-type]
            **uvicorn_options)
        self.header_timeout_s = serving.header_timeout_s
        self.slots = _Slots(connection_cap(serving.max_connections))


def _error_408(message: str) -> bytes:
    """A whole 408 response in OpenAI's error shape, closing the connection."""
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error",
                                 "param": None, "code": "request_timeout"}}).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header timeout and a slot under the cap.

    A connection is *idle* while no request is in progress: from when it opens, and
    from the end of each response, until the parser has a whole request head. While it
    is idle it sits in ``slots.idle`` and, once it opens or a byte arrives, the header
    timer runs.
    """

    def __init__(self, config: uvicorn.Config, server_state: ServerState,
                 app_state: dict[str, Any], _loop: asyncio.AbstractEventLoop | None = None
                 ) -> None:
        if not isinstance(config, ServerConfig):
            raise TypeError("GuardedProtocol needs an edgewise.serving.server.ServerConfig, "
                            f"got {type(config).__name__}")
        super().__init__(config, server_state, app_state, _loop)
        self.slots = config.slots
        self.header_timeout_s = config.header_timeout_s
        self.header_timer: asyncio.TimerHandle | None = None
        self.head_started = False  # the parser has begun a request head
        self.has_slot = False
        self.tls: dict[str, Any] | None = None  # the ASGI TLS extension, per connection
        self.timeout_response = _error_408(
            f"the request head did not arrive within {self.header_timeout_s:g} s "
            "(serving.header_timeout_s); send the request line and headers at once")

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.slots.admit():
            transport.abort()  # nothing to flush: free the descriptor now
            return
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            der = ssl_object.getpeercert(binary_form=True)
            self.tls = {"client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
                        "tls_version": None, "cipher_suite": None}
        self.has_slot = True
        self._become_idle()
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._leave()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # A byte while idle starts (or continues) the next request head; the keep-alive
        # timer that uvicorn cancels on any data no longer bounds this connection.
        if self.has_slot and self.header_timer is None and self._idle():
            self._arm_header_timer()
        super().data_received(data)

    # httptools parser callbacks and uvicorn's response hook

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_started = True
        if self.tls is not None:
            self.scope["extensions"] = {"tls": self.tls}  # type: ignore[dict-item]

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        self.head_started = False
        self.slots.idle.pop(self, None)  # a request is in progress: not replaceable
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.has_slot and not self.transport.is_closing() and self._idle():
            self._become_idle()

    def shutdown(self) -> None:
        # uvicorn closes idle connections at shutdown with transport.close(); over TLS
        # that waits for the peer's close_notify, which an idle pooled client never
        # sends, so the server would wait out its graceful timeout and leave the socket
        # open. An idle connection has nothing in flight: abort it.
        if self.tls is not None and self._idle() and not self.transport.is_closing():
            self._leave()
            self.transport.abort()
            return
        super().shutdown()

    # the limits

    def close_for_newcomer(self) -> None:
        """Close this idle connection now to give its slot to a new one."""
        self._leave()
        # abort, not close: a client that stopped reading would hold a close() open.
        self.transport.abort()

    def _on_header_timeout(self) -> None:
        self.header_timer = None
        if self.transport.is_closing():
            return
        if self.transport.get_write_buffer_size():
            self.transport.abort()  # the client is not reading: a 408 would never leave
        elif self.head_started:
            self.transport.write(self.timeout_response)
            self.transport.close()
        else:
            self.transport.close()

    def _idle(self) -> bool:
        # With pipelining, self.cycle is the newest request: idle once it is answered.
        return self.cycle is None or self.cycle.response_complete

    def _become_idle(self) -> None:
        self.slots.idle[self] = None
        self.slots.idle.move_to_end(self)

    def _arm_header_timer(self) -> None:
        self.header_timer = self.loop.call_later(self.header_timeout_s,
                                                 self._on_header_timeout)

    def _cancel_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _leave(self) -> None:
        """Give back the slot (once) and stop the timer."""
        self._cancel_header_timer()
        if self.has_slot:
            self.has_slot = False
            self.slots.idle.pop(self, None)
            self.slots.release()


class NodeServer(uvicorn.Server):
    """uvicorn's server that drains the node before shutting down (module docstring).

    ``drain()`` refuses new requests and waits for in-flight ones; ``fatal()`` returns
    a reason to stop (the model failed to load), checked ten times a second, and so is
    ``ready()``: when it first holds, the start-up heap is frozen (module docstring)."""

    def __init__(self, config: uvicorn.Config, *,
                 drain: Callable[[], Awaitable[object]] | None = None,
                 fatal: Callable[[], str | None] | None = None,
                 ready: Callable[[], bool] | None = None) -> None:
        super().__init__(config)
        self._drain = drain
        self._fatal = fatal
        self._ready = ready
        self._draining: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Why the server stopped on its own (``None``: it was asked to).
        self.failure: str | None = None

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: Any) -> None:
        # A plain signal handler (uvicorn installs it with signal.signal): it runs
        # between two bytecodes of the loop's thread, so the drain is handed over.
        if (self._drain is None or self._loop is None or self._draining is not None
                or self.should_exit):
            super().handle_exit(sig, frame)  # no drain, or a second signal: uvicorn's way
            return
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        if self._draining is None:
            self._draining = asyncio.ensure_future(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        assert self._drain is not None
        try:
            await self._drain()
        except Exception:  # pragma: no cover - the drain must not keep the node up
            log.exception("drain failed; shutting down")
        self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self._ready is not None and self._ready():
            self._ready = None
            # No gc.collect() first: it would be the very pause this avoids (60 ms),
            # and what start-up left as cyclic garbage is small and made once.
            gc.freeze()
        if self._fatal is not None and self.failure is None:
            reason = self._fatal()
            if reason is not None:
                self.failure = reason
                self.should_exit = True
        return await super().on_tick(counter)


def build_server(app: Any, cfg: EdgewiseConfig, *, ssl_context: ssl.SSLContext | None = None,
                 **uvicorn_options: Any) -> NodeServer:
    """A uvicorn server for ``app`` on ``node.host:node.port`` with the ``serving.*``
    connection limits, lifespan on and ``serving.drain_timeout_s`` for a graceful stop.

    ``uvicorn_options`` go to ``uvicorn.Config`` as they are (``log_config``,
    ``access_log``, ``log_level``...) and may override those defaults.
    """
    options: dict[str, Any] = {
        "host": cfg.node.host, "port": cfg.node.port, "lifespan": "on",
        # the node has drained already (NodeServer); this bounds what is left
        "timeout_graceful_shutdown": 5,
        **uvicorn_options,
    }
    node = getattr(getattr(app, "state", None), "node", None)
    return NodeServer(ServerConfig(app, serving=cfg.serving, ssl_context=ssl_context, **options),
                      drain=node.drain if node is not None else None,
                      fatal=(lambda: node.load_error) if node is not None else None,
                      ready=(lambda: node.ready) if node is not None else None)


def serve(app: Any, cfg: EdgewiseConfig, *, ssl_context: ssl.SSLContext | None = None,
          **uvicorn_options: Any) -> str | None:
    """Serve ``app`` until SIGINT/SIGTERM (then drain), or until the node cannot serve
    (its model failed to load): returns that reason, ``None`` after a requested stop."""
    server = build_server(app, cfg, ssl_context=ssl_context, **uvicorn_options)
    server.run()
    return server.failure
