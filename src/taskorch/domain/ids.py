"""Identifiers: random UUIDs (version 4) as text, the form every id of the API takes.

``str(uuid.uuid4())`` makes one ``getrandom`` call and a ``UUID`` object per id (6.3 us here);
a task takes four ids on its way (task, subtask, lease, request). ``new_id`` draws the same
operating-system randomness 4 KiB at a time, per thread, and formats the text itself
(1.9 us). A forked child starts with a fresh pool, so it never repeats its parent's ids.
"""

from __future__ import annotations

import os
import threading

_POOL_BYTES = 4096


class _Pool(threading.local):
    def __init__(self) -> None:
        self.data = b""
        self.at = 0


_pool = _Pool()


def _fresh_pool_after_fork() -> None:
    global _pool
    _pool = _Pool()


os.register_at_fork(after_in_child=_fresh_pool_after_fork)


def new_id() -> str:
    """A new random UUID (version 4, RFC 9562 variant) as 36 characters of text."""
    pool = _pool
    at = pool.at
    if at + 16 > len(pool.data):
        pool.data = os.urandom(_POOL_BYTES)
        at = 0
    pool.at = at + 16
    raw = pool.data[at : at + 16]
    h = raw.hex()
    # Version 4 in the 13th hex digit; in the 17th the variant (top bits 10) and two random bits.
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[(raw[8] >> 4) & 3]}{h[17:20]}-{h[20:]}"
