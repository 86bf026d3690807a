"""Request rate limits per tenant: the token bucket driven by a test clock, limits read from a
real database, the exempt methods, and parsing the --tenant-rate-limit flag."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskorch.core.rate_limits import RequestRate, TenantRateLimiter, TenantRateLimits
from taskorch.domain.caller import Caller
from taskorch.domain.errors import InvalidArgument, RateLimited
from taskorch.server.access import rate_limited
from taskorch.store.database import Database
from tests import databases

ACME = Caller(tenant_id="acme")
GLOBEX = Caller(tenant_id="globex")
CREATE = "/taskorch.v1.TaskService/CreateTask"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    url = databases.new_database(tmp_path, "sqlite")
    database = Database(url)
    await database.open()
    yield database
    await database.close()


async def _admitted(limiter: TenantRateLimiter, caller: Caller, calls: int) -> int:
    """How many of ``calls`` calls made at once are admitted."""
    admitted = 0
    for _ in range(calls):
        try:
            await limiter.admit(caller)
            admitted += 1
        except RateLimited:
            pass
    return admitted


async def test_a_quiet_tenant_may_send_its_burst_then_its_rate(db: Database) -> None:
    clock = Clock()
    limiter = TenantRateLimiter(db, RequestRate.of(2, 3), clock=clock)
    assert await _admitted(limiter, ACME, 5) == 3
    with pytest.raises(RateLimited) as caught:
        await limiter.admit(ACME)
    assert caught.value.retry_after_seconds == pytest.approx(0.5)
    assert caught.value.metadata["tenant"] == "acme" and caught.value.reason == "RATE_LIMITED"
    clock.now += 0.5  # one token back at 2 per second
    assert await _admitted(limiter, ACME, 2) == 1
    clock.now += 60  # refilled to the burst, not beyond
    assert await _admitted(limiter, ACME, 5) == 3


async def test_each_tenant_has_its_own_bucket(db: Database) -> None:
    limiter = TenantRateLimiter(db, RequestRate.of(1, 2), clock=Clock())
    assert await _admitted(limiter, ACME, 4) == 2
    assert await _admitted(limiter, GLOBEX, 4) == 2


def test_probes_and_the_worker_protocol_are_never_limited() -> None:
    # Which calls take a token is the server's rule (server/access.py); the limiter counts.
    for method in (
        "/grpc.health.v1.Health/Check",
        "/taskorch.v1.WorkerService/Heartbeat",
        "/taskorch.v1.WorkerService/Take",
    ):
        assert not rate_limited(method), method
    assert rate_limited(CREATE)


async def test_a_tenants_own_limit_in_the_database_replaces_the_default(db: Database) -> None:
    await TenantRateLimits(db).set("acme", 1, 1)
    await TenantRateLimits(db).set("globex", 0)  # unlimited, whatever the default
    limiter = TenantRateLimiter(db, RequestRate.of(100, 100), clock=Clock())
    assert await _admitted(limiter, ACME, 3) == 1
    assert await _admitted(limiter, GLOBEX, 500) == 500
    assert await _admitted(limiter, Caller(tenant_id="initech"), 150) == 100


async def test_a_changed_limit_is_seen_once_the_cache_expires(db: Database) -> None:
    clock = Clock()
    limits = TenantRateLimits(db)
    limiter = TenantRateLimiter(db, RequestRate(), cache_seconds=2.0, clock=clock)
    assert (await limiter.limit_of("acme")).unlimited
    await limits.set("acme", 5, 10)
    clock.now += 1.9
    assert (await limiter.limit_of("acme")).unlimited  # cached
    clock.now += 0.2
    # The first call after the cache expired re-reads the limits in the background.
    deadline = asyncio.get_running_loop().time() + 10
    while (await limiter.limit_of("acme")).unlimited:
        assert asyncio.get_running_loop().time() < deadline, "the new limit was never read"
        await asyncio.sleep(0.01)
    assert await limiter.limit_of("acme") == RequestRate(5.0, 10)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5", RequestRate(5.0, 5)),
        ("0.5:3", RequestRate(0.5, 3)),
        ("0.2", RequestRate(0.2, 1)),  # a burst of at least one request
        ("100:200", RequestRate(100.0, 200)),
        ("off", RequestRate()),
        ("0", RequestRate()),
    ],
)
def test_the_flag_reads_rps_and_an_optional_burst(text: str, expected: RequestRate) -> None:
    assert RequestRate.parse(text) == expected


@pytest.mark.parametrize("text", ["fast", "5:x", "-1", "5:0", "nan", "0:5", "2000000"])
def test_a_bad_flag_is_refused_quoting_it_and_naming_the_flag(text: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        RequestRate.parse(text)
    assert caught.value.metadata.get("field") == "--tenant-rate-limit"
    assert repr(text) in caught.value.message
