"""The peers' apps for bench/peers.py: the same trivial task as taskorch's ``echo``.

Imported by the benchmark and by the peers' worker processes (``celery -A _peer_apps`` and
``procrastinate --app _peer_apps.procrastinate_app``), which find their broker and database
in the environment: ``BENCH_REDIS_URL`` and ``BENCH_PROCRASTINATE_DSN``.

Each task returns its input: taskorch's built-in ``echo`` does the same. Celery's also
returns the time its body started (the worker-side dispatch time); procrastinate stores no
results, its job events (deferred, started, succeeded) carry the times.
"""

from __future__ import annotations

import os
import time
from typing import Any

import procrastinate
from celery import Celery

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PROCRASTINATE_DSN = os.environ.get(
    "BENCH_PROCRASTINATE_DSN", "postgresql://postgres@127.0.0.1:5432/taskorch_bench_procrastinate"
)

# -- Celery: Redis broker and result backend, durable settings --------------------------------

celery_app = Celery("bench", broker=REDIS_URL, backend=REDIS_URL)
celery_app.conf.update(
    # Durable: a message is acknowledged after the task ran, and a worker process reserves
    # one message at a time, so a killed worker's task goes back to the queue.
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_reject_on_worker_lost=True,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@celery_app.task(name="echo")
def celery_echo(data: dict[str, Any]) -> dict[str, Any]:
    return {"echo": data, "started": time.time()}


# -- procrastinate: PostgreSQL ----------------------------------------------------------------

procrastinate_app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(conninfo=PROCRASTINATE_DSN, min_size=1, max_size=16)
)


@procrastinate_app.task(name="echo")
async def procrastinate_echo(data: dict[str, Any]) -> dict[str, Any]:
    return {"echo": data}
