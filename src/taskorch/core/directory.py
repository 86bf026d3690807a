"""Which workers are connected and what they run, so a task can say what it waits for.

In-process workers register their kinds for good; remote workers are remembered for a
while after each contact (a Listen stream, a take, a heartbeat).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

REMOTE_TTL_SECONDS = 60.0


@dataclass
class WorkerRecord:
    worker_id: str
    kinds: frozenset[str]
    models: frozenset[str]
    last_seen: float
    local: bool = False


class WorkerDirectory:
    def __init__(self, ttl: float = REMOTE_TTL_SECONDS) -> None:
        self.ttl = ttl
        self._workers: dict[str, WorkerRecord] = {}

    def register_local(self, worker_id: str, kinds: Iterable[str]) -> None:
        self._workers[worker_id] = WorkerRecord(
            worker_id, frozenset(kinds), frozenset(), time.monotonic(), local=True
        )

    def seen(self, worker_id: str, kinds: Iterable[str], models: Iterable[str] = ()) -> None:
        """A remote worker made contact; an empty ``kinds`` means it runs any kind."""
        self._workers[worker_id] = WorkerRecord(
            worker_id, frozenset(kinds), frozenset(models), time.monotonic()
        )

    def forget(self, worker_id: str) -> None:
        self._workers.pop(worker_id, None)

    def live(self) -> list[WorkerRecord]:
        horizon = time.monotonic() - self.ttl
        return [w for w in self._workers.values() if w.local or w.last_seen >= horizon]

    def serves(self, kind: str) -> bool:
        return any(not w.kinds or kind in w.kinds for w in self.live())

    def waiting_message(self, kinds: Iterable[str]) -> str | None:
        """What a task with work of ``kinds`` waits for, when no connected worker runs one."""
        missing = sorted({k for k in kinds if not self.serves(k)})
        if not missing:
            return None
        names = ", ".join(repr(k) for k in missing)
        return f"waiting for a worker that runs {names} (none is connected)"
