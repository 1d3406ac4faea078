"""Admission control: a bounded wait queue in front of the engine's slots.

Requests beyond what the engine can run at once wait here, first come first served. When
``max_queue`` requests are already waiting, a new one is refused at once with
:class:`~edgewise.errors.OverloadedError` carrying a ``Retry-After`` estimate (mean
service time × position / slots). During shutdown new requests get
:class:`~edgewise.errors.ShuttingDownError` and :meth:`drain` waits for in-flight work.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from edgewise.errors import OverloadedError, ShuttingDownError

__all__ = ["Admission"]


class Admission:
    def __init__(self, *, slots: int, max_queue: int, queue_timeout_s: float) -> None:
        if slots < 1:
            raise ValueError("slots must be >= 1")
        self.slots = slots
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self._sem = asyncio.Semaphore(slots)
        self.waiting = 0
        self.active = 0
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()
        #: EWMA of how long a request holds a slot, for Retry-After.
        self.mean_service_s = 1.0

    def retry_after(self) -> int:
        return max(1, math.ceil(self.mean_service_s * (self.waiting + 1) / self.slots))

    def check(self) -> None:
        """Raise now if a new request would be refused (draining, or the queue is full)."""
        if self.draining:
            raise ShuttingDownError("the node is shutting down; retry on another node or later")
        # Full when every slot and every place in the queue is taken — counted from
        # the requests themselves (a slot just handed to a queued request is neither
        # free nor a second queued request).
        if self.active + self.waiting >= self.slots + self.max_queue:
            raise OverloadedError(
                f"the node is at capacity ({self.active} running, {self.waiting} queued, "
                f"queue limit {self.max_queue}); retry after {self.retry_after()} s",
                retry_after=self.retry_after(),
            )

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one engine slot for the duration of the block."""
        self.check()
        self.waiting += 1
        took = False

        async def take() -> None:
            # Taking the slot and moving from "waiting" to "active" happen in one step, so
            # a request arriving meanwhile never counts this one twice (a false 429).
            nonlocal took
            await self._sem.acquire()
            self.waiting -= 1
            self.active += 1
            self._idle.clear()
            took = True

        try:
            await asyncio.wait_for(take(), timeout=self.queue_timeout_s)
        except BaseException as exc:
            if took:  # cancelled after the slot was taken: hand it back
                self._release(0.0)
            else:
                self.waiting -= 1
            if isinstance(exc, TimeoutError):
                raise OverloadedError(
                    f"waited {self.queue_timeout_s:.0f} s in the queue without a free "
                    "slot; retry later",
                    retry_after=self.retry_after(),
                ) from None
            raise
        started = time.perf_counter()
        try:
            yield
        finally:
            self._release(time.perf_counter() - started)

    def _release(self, held_s: float) -> None:
        self._sem.release()
        self.active -= 1
        if held_s:
            self.mean_service_s = 0.8 * self.mean_service_s + 0.2 * held_s
        if self.active == 0:
            self._idle.set()

    async def idle(self, timeout_s: float) -> bool:
        """Wait, without refusing anything, until nothing runs or waits here; True if
        that happened within ``timeout_s`` (an engine being retired after a swap)."""
        deadline = time.monotonic() + timeout_s
        while self.active or self.waiting:  # queued requests count too
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def drain(self, timeout_s: float) -> bool:
        """Refuse new work and wait for in-flight requests; True if all finished."""
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=timeout_s)
        except TimeoutError:
            return False
        return True
