"""Run a blocking :class:`~edgewise.engines.Generation` on a worker thread and stream
its chunks into asyncio.

The engine is not thread-safe, so each slot has one worker thread. Chunks cross to the
event loop with ``call_soon_threadsafe`` (no polling). When the consumer stops early —
the client disconnected, or a stop was requested — the generation is told to stop and
the slot is only given back once the worker thread has really finished, so two
generations never touch one engine at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import anyio

from edgewise.engines import Chunk, Generation

__all__ = ["RunStats", "stream_generation"]

_DONE = object()


@dataclass
class RunStats:
    started: float = 0.0
    first_token: float | None = None
    finished: float = 0.0

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.started

    @property
    def decode_s(self) -> float:
        return self.finished - (self.first_token or self.started)


async def stream_generation(
    generation: Generation, executor: ThreadPoolExecutor, stats: RunStats | None = None
) -> AsyncIterator[Chunk]:
    """Yield the generation's chunks as they are produced; raise what it raised."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    cancel = threading.Event()
    generation.should_stop = cancel.is_set
    stats = stats if stats is not None else RunStats()
    stats.started = time.perf_counter()

    def work() -> None:
        try:
            for chunk in generation:
                if stats.first_token is None:
                    stats.first_token = time.perf_counter()
                loop.call_soon_threadsafe(queue.put_nowait, chunk)
                if cancel.is_set():  # the consumer went away between two chunks
                    generation.outcome.finish_reason = "cancelled"
                    break
        except BaseException as exc:  # handed to the consumer, which re-raises it
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            stats.finished = time.perf_counter()
            loop.call_soon_threadsafe(queue.put_nowait, _DONE)

    future = loop.run_in_executor(executor, work)
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, Chunk)
            yield item
    finally:
        cancel.set()
        # Shielded: even while being cancelled (Starlette cancels a stream's task when
        # the client disconnects, and anyio re-raises at every await in a cancelled
        # scope), wait for the thread to let go of the engine before the caller
        # releases the slot.
        with anyio.CancelScope(shield=True):
            await future
