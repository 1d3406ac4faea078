"""Admission's counts at the moment a queued request takes its slot: it moves from
"waiting" to "active" in one step, so a request arriving in between is not refused for a
queue that is not full."""

from __future__ import annotations

import asyncio

import pytest

from edgewise.errors import OverloadedError
from edgewise.serving import Admission


async def test_a_request_taking_its_slot_is_not_counted_as_waiting_too() -> None:
    adm = Admission(slots=1, max_queue=1, queue_timeout_s=10)
    release_a = asyncio.Event()
    b_in = asyncio.Event()

    async def a() -> None:
        async with adm.slot():
            await release_a.wait()

    async def b() -> None:
        async with adm.slot():
            b_in.set()
            await asyncio.sleep(0.05)

    ta = asyncio.create_task(a())
    await asyncio.sleep(0.01)
    tb = asyncio.create_task(b())
    await asyncio.sleep(0.01)
    assert (adm.active, adm.waiting) == (1, 1)
    with pytest.raises(OverloadedError, match="queue limit 1"):
        adm.check()  # really full: one running, one queued
    release_a.set()
    # Step the loop until b holds the slot, asking at every step whether one more request
    # would be admitted: it may be refused only while the queue really is full.
    for _ in range(50):
        await asyncio.sleep(0)
        try:
            adm.check()
        except OverloadedError:
            assert (adm.active, adm.waiting) == (1, 1), (adm.active, adm.waiting)
        if b_in.is_set():
            break
    else:
        raise AssertionError("b never took the slot")
    await asyncio.gather(ta, tb)
    assert b_in.is_set() and (adm.active, adm.waiting) == (0, 0)


async def test_a_request_cancelled_while_queued_leaves_no_count_behind() -> None:
    adm = Admission(slots=1, max_queue=4, queue_timeout_s=10)
    hold = asyncio.Event()

    async def holder() -> None:
        async with adm.slot():
            await hold.wait()

    async def queued() -> None:
        async with adm.slot():
            pass

    th = asyncio.create_task(holder())
    await asyncio.sleep(0.01)
    tq = asyncio.create_task(queued())
    await asyncio.sleep(0.01)
    assert adm.waiting == 1
    tq.cancel()
    with pytest.raises(asyncio.CancelledError):
        await tq
    assert (adm.active, adm.waiting) == (1, 0)
    hold.set()
    await th
    assert (adm.active, adm.waiting) == (0, 0)
    assert await adm.idle(1.0)


async def test_a_queue_timeout_is_a_429_and_frees_its_place() -> None:
    adm = Admission(slots=1, max_queue=4, queue_timeout_s=0.05)
    hold = asyncio.Event()

    async def holder() -> None:
        async with adm.slot():
            await hold.wait()

    th = asyncio.create_task(holder())
    await asyncio.sleep(0.01)
    with pytest.raises(OverloadedError, match="waited 0 s in the queue"):
        async with adm.slot():
            pass
    assert (adm.active, adm.waiting) == (1, 0)
    hold.set()
    await th
