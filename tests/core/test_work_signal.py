"""The signal that wakes idle takers: a notice sent while a taker looks for work is kept."""

from __future__ import annotations

import asyncio

from taskorch.events.hub import WorkSignal


async def test_work_queued_while_a_taker_was_looking_wakes_it_at_once() -> None:
    signal = WorkSignal()
    ticket = signal.ticket()  # the taker starts looking (finds nothing)...
    signal.notify()  # ...while another request queues work
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await signal.wait(5.0, ticket)
    assert loop.time() - started < 0.1


async def test_a_waiter_sleeps_until_the_next_notice_or_its_timeout() -> None:
    signal = WorkSignal()
    assert not await signal.wait(0.05, signal.ticket())
    waiting = asyncio.create_task(signal.wait(5.0, signal.ticket()))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    signal.notify()
    assert await asyncio.wait_for(waiting, 1.0)
