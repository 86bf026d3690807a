"""The one watch loop: a stream of stored, numbered events (a task's, a chat session's)
followed live, in sequence order, without gaps or duplicates.

It subscribes BEFORE it reads the current state, so nothing committed between the read and
the subscription is lost: what committed before the read is in the snapshot (or the
replay), what commits after it is published to the subscription. Then:

    live event numbered last + 1   -> yielded
    live event numbered <= last    -> dropped (already yielded, or covered by the snapshot)
    a gap, a lagged subscription,  -> the stored events after ``last`` are replayed
    or ``recheck_seconds`` quiet      (events are stored before they are published, so the
                                       store has every one; another replica's events
                                       arrive through its notices, or through this re-read)

It ends after the first event that ``is_terminal`` says ends the stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Protocol, TypeVar

from taskorch.events.bus import Subscription, SubscriptionLagged


class Numbered(Protocol):
    @property
    def sequence(self) -> int: ...


E = TypeVar("E", bound=Numbered)

# How long a watch waits for a live event before re-reading the store (a safety net for
# events of another replica whose notice was lost, or lost by a crash between commit and
# publish).
RECHECK_SECONDS = 5.0


async def follow(
    subscription: Subscription[E],
    snapshot: Callable[[], Awaitable[E | None]],
    replay: Callable[[int], AsyncGenerator[E, None]],
    *,
    after_sequence: int,
    is_terminal: Callable[[E], bool],
    recheck_seconds: float = RECHECK_SECONDS,
) -> AsyncGenerator[E, None]:
    """Yields the stream's snapshot (or the stored events after ``after_sequence``), then
    every later event, ending after a terminal one. Closes ``subscription`` when done.

    Args:
        subscription: to the stream's live events, taken before this is called.
        snapshot: reads the current state (raising if the stream does not exist); it
            returns the snapshot event to start with, or None to resume after
            ``after_sequence`` instead.
        replay: the stored events after a sequence number, in order (it may stop early, at
            a page's end: the loop reads again when the next live event shows a gap).
        after_sequence: the last sequence number the watcher saw (when resuming).
        is_terminal: whether an event (the snapshot included) ends the stream.
        recheck_seconds: how long without a live event before the store is read again.
    """
    with subscription:
        first = await snapshot()
        last, done = after_sequence, False
        if first is not None:
            # Every later event arrives live: the subscription came before the read (a gap
            # is replayed from the store below).
            yield first
            last, done = first.sequence, is_terminal(first)
        else:
            async for event in _stored(replay, last, is_terminal):
                yield event
                last, done = event.sequence, is_terminal(event)
        while not done:
            try:
                live = await subscription.get(timeout=recheck_seconds)
            except SubscriptionLagged:
                live = None
            if live is not None and live.sequence <= last:
                continue
            if live is not None and live.sequence == last + 1:
                yield live
                last, done = live.sequence, is_terminal(live)
                continue
            # A gap, a lagged buffer or a quiet period: the store has the truth.
            async for event in _stored(replay, last, is_terminal):
                yield event
                last, done = event.sequence, is_terminal(event)


async def _stored(
    replay: Callable[[int], AsyncGenerator[E, None]], after: int, is_terminal: Callable[[E], bool]
) -> AsyncGenerator[E, None]:
    """The replayed events after ``after``, up to the first terminal one, in order."""
    async with contextlib.aclosing(replay(after)) as events:
        async for event in events:
            if event.sequence <= after:
                continue
            yield event
            after = event.sequence
            if is_terminal(event):
                return
