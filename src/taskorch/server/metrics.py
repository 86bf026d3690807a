"""Prometheus metrics of the server.

Prometheus metrics: seed 001's task counters and processing-time histogram, RPC latency, queue
depth, lease expiries and refusals by tenant rate limits (inference batches: inference/metrics.py).

Exposed on ``--metrics-addr`` (and through Envoy at ``/metrics``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily

from taskorch.domain.values import EventType, Status, TaskEvent

TASKS_TOTAL = Counter(
    "task_manager_tasks",
    "Total number of tasks processed, by the status they reached",
    ["status"],
)
PROCESSING_TIME = Histogram(
    "task_manager_processing_time_seconds",
    "Task processing time, from start to completion",
    buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0),
)
TASKS_BY_STATUS = Gauge(
    "taskorch_tasks",
    "Tasks stored, by current status (refreshed every few seconds)",
    ["status"],
)
QUEUE_DEPTH = Gauge(
    "taskorch_queue_depth",
    "Runnable subtasks waiting for a worker, by kind (refreshed every few seconds)",
    ["kind"],
)
LEASE_EXPIRIES = Counter(
    "taskorch_lease_expiries",
    "Leases that expired (the worker stopped heartbeating); their work was re-queued or failed",
)
RATE_LIMITED_REQUESTS = Counter(
    "taskorch_rate_limited_requests",
    "Calls refused because their tenant was over its request rate limit "
    "(--tenant-rate-limit, taskorch keys limit), by tenant",
    ["tenant"],
)
RPC_DURATION = Histogram(
    "taskorch_rpc_duration_seconds",
    "gRPC call latency by method and status code",
    ["method", "code"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)


# TASKS_TOTAL's series by status: ``labels()`` checks and joins its values on every call.
_TASKS_BY_STATUS: dict[Status, Any] = {}


def observe_task_event(event: TaskEvent) -> None:
    """Counts status changes; times completed tasks."""
    if event.type is not EventType.STATUS_CHANGED:
        return
    series = _TASKS_BY_STATUS.get(event.status)
    if series is None:
        series = _TASKS_BY_STATUS[event.status] = TASKS_TOTAL.labels(event.status.name.lower())
    series.inc()
    task = event.task
    if task is not None and task.started_at is not None and task.completed_at is not None:
        PROCESSING_TIME.observe((task.completed_at - task.started_at).total_seconds())


class DatabaseWrites:
    """The database's write transactions and the operations they held.

    Operations per transaction is how well writes are group-committed (a task takes a few
    operations).
    """

    def __init__(self) -> None:
        self.db: Any = None  # the server's Database, once it has one

    def collect(self) -> Iterator[CounterMetricFamily]:
        """The two counters, read from the database's own tallies."""
        if self.db is None:
            return
        yield CounterMetricFamily(
            "taskorch_db_write_transactions",
            "Write transactions committed (each holds every write waiting when it began)",
            value=self.db.batches,
        )
        yield CounterMetricFamily(
            "taskorch_db_write_operations",
            "Write operations committed (task transitions and other writes)",
            value=self.db.operations,
        )


DATABASE_WRITES = DatabaseWrites()
REGISTRY.register(DATABASE_WRITES)
