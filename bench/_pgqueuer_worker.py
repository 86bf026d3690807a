"""One pgqueuer worker process for bench/peers.py: runs the trivial ``echo`` job.

    python bench/_pgqueuer_worker.py DSN

pgqueuer 1.6's defaults: batches of 10 jobs per dequeue, completions logged in buffered
batches (flushed at 10 or every 0.1 s), every table logged (durable). SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import asyncpg
from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager


async def main(dsn: str) -> None:
    connection = await asyncpg.connect(dsn)
    manager = QueueManager(Queries(AsyncpgDriver(connection)))

    @manager.entrypoint("echo")
    async def echo(job: Job) -> None:
        return None

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, manager.shutdown.set)
    print("ready", flush=True)
    await manager.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
