"""What a worker and the task engine exchange about work: who takes it, the answer to a
heartbeat, and the notice to stop. The same values cross a remote worker's gRPC stream
(server/ and workers/remote.py convert them) and the in-process workers' calls."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# How long a lease lasts unless the worker asks otherwise; heartbeats renew it every third.
DEFAULT_LEASE_SECONDS = 30.0


@dataclass(frozen=True)
class WorkerIdentity:
    """Who takes work, and which work it can run."""

    worker_id: str
    kinds: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    tenant_ids: tuple[str, ...] | None = None


@dataclass(frozen=True)
class HeartbeatAnswer:
    """The engine's answer to a heartbeat: the lease's new deadline, or that the work must
    stop (``cancelled``, with why)."""

    lease_expires_at: datetime | None
    cancelled: bool = False
    reason: str = ""


@dataclass(frozen=True)
class StopNotice:
    """Tells a worker to stop running a subtask (its task ended early)."""

    worker_id: str
    subtask_id: str
    lease_id: str
    reason: str
