"""Ids are random version-4 UUIDs as text, unique across threads and across a fork."""

from __future__ import annotations

import os
import threading
import uuid
from collections import Counter

from taskorch.domain.ids import new_id


def test_an_id_is_a_version_4_uuid_in_its_canonical_text() -> None:
    for _ in range(5000):  # more than one pool of random bytes
        text = new_id()
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


def test_the_random_bits_are_spread() -> None:
    ids = [new_id() for _ in range(20000)]
    assert len(set(ids)) == len(ids)
    # The variant digit keeps two random bits: each of 8, 9, a, b about a quarter of the time.
    variants = Counter(i[19] for i in ids)
    assert set(variants) == set("89ab")
    assert min(variants.values()) > 4000
    # Every other hex digit position takes all 16 values.
    for position in (0, 9, 15, 20, 35):
        assert len({i[position] for i in ids}) == 16, position


def test_threads_never_share_ids() -> None:
    found: list[list[str]] = [[] for _ in range(4)]

    def take(out: list[str]) -> None:
        out.extend(new_id() for _ in range(3000))

    threads = [threading.Thread(target=take, args=(out,)) for out in found]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for out in found for i in out]
    assert len(set(every)) == len(every) == 12000


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    new_id()  # the parent's pool is filled: a child must not draw from a copy of it
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child writes its next ids and leaves at once
        os.close(read)
        os.write(write, "".join(new_id() for _ in range(10)).encode())
        os._exit(0)
    os.close(write)
    child = b""
    while chunk := os.read(read, 4096):
        child += chunk
    os.close(read)
    os.waitpid(pid, 0)
    parent = [new_id() for _ in range(10)]
    child_ids = [child[n : n + 36].decode() for n in range(0, len(child), 36)]
    assert len(child_ids) == 10
    assert not set(child_ids) & set(parent)
