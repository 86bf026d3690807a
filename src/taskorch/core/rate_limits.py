"""Request rate limits per tenant: a token bucket of each tenant, in the memory of each replica.

A tenant's limit is ``rate`` requests per second with a bucket of ``burst`` requests: a quiet
tenant may send ``burst`` at once, then ``rate`` per second. Limits are set per tenant in the
database (``taskorch keys limit``), so every replica sees them about :data:`CACHE_SECONDS`
after a change (the first call after that re-reads them, in the background);
a tenant without one has the server's ``--tenant-rate-limit`` (unlimited by default).

The buckets are per replica: with N replicas behind a load balancer a tenant may reach N times
its rate in total. Replicas know nothing of each other (no membership, no shared counter), and
a shared counter in the database would cost a write per request; set ``rate / N`` to bound the
total. A call counts once when it starts (a stream at its opening). Health, reflection, the
API document, metrics and the worker protocol (a worker's heartbeats must never be refused)
are not limited.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from taskorch.domain.caller import Caller
from taskorch.domain.errors import InvalidArgument, RateLimited
from taskorch.store import rate_limits as limit_store
from taskorch.store.database import Database
from taskorch.store.schema import utcnow

log = structlog.get_logger(__name__)

# How long a replica keeps the limits it read: a change reaches every replica within this.
CACHE_SECONDS = 2.0
MAX_RATE = 1_000_000.0
MAX_BURST = 1_000_000
# Buckets kept at most; past it, the full ones (tenants idle long enough) are dropped.
MAX_BUCKETS = 10_000


@dataclass(frozen=True)
class RequestRate:
    """``rate`` requests per second, ``burst`` at once; a rate of 0 is no limit."""

    rate: float = 0.0
    burst: int = 0

    @property
    def unlimited(self) -> bool:
        return self.rate <= 0

    @classmethod
    def of(
        cls,
        rate: float,
        burst: int | None = None,
        *,
        rate_field: str = "rate",
        burst_field: str = "burst",
    ) -> RequestRate:
        """A checked limit; ``burst`` defaults to one second's worth (at least 1).

        Raises:
            InvalidArgument: a negative, non-finite or too large rate, or a burst below 1,
                naming ``rate_field`` or ``burst_field``.
        """
        if not math.isfinite(rate) or rate < 0 or rate > MAX_RATE:
            raise InvalidArgument(
                f"{rate_field} must be a number of requests per second from 0 (no limit) to "
                f"{MAX_RATE:g}, not {rate!r}",
                field=rate_field,
            )
        if rate == 0:
            if burst not in (None, 0):
                raise InvalidArgument(
                    f"{burst_field} needs a rate above 0 (a rate of 0 is no limit)",
                    field=burst_field,
                )
            return cls()
        if burst is None:
            burst = max(1, math.ceil(rate))
        if not 1 <= burst <= MAX_BURST:
            raise InvalidArgument(
                f"{burst_field} must be a whole number of requests from 1 to {MAX_BURST}, "
                f"not {burst!r}",
                field=burst_field,
            )
        return cls(float(rate), int(burst))

    @classmethod
    def parse(cls, text: str, *, name: str = "--tenant-rate-limit") -> RequestRate:
        """``RPS[:BURST]`` (``5``, ``0.5:3``, ``100:200``); ``0`` or ``off`` is no limit.

        Raises:
            InvalidArgument: anything else, quoting it (its field is ``name``).
        """
        text = text.strip().lower()
        if text in ("0", "off", "none", ""):
            return cls()
        form = "RPS[:BURST] like 5 or 0.5:3 (0 or off: no limit)"
        rate_text, sep, burst_text = text.partition(":")
        try:
            rate = float(rate_text)
            burst = int(burst_text) if sep else None
        except ValueError:
            raise InvalidArgument(f"{text!r} is not {form}", field=name) from None
        try:
            return cls.of(rate, burst, rate_field="RPS", burst_field="BURST")
        except InvalidArgument as exc:
            raise InvalidArgument(f"{text!r}: {exc.message}", field=name) from None

    def describe(self) -> str:
        if self.unlimited:
            return "unlimited"
        return f"{self.rate:g} requests/s (burst {self.burst})"


class TenantRateLimits:
    """Setting, clearing and listing the tenants' own limits (``taskorch keys limit``)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def set(
        self, tenant_id: str, rate: float, burst: int | None = None
    ) -> limit_store.TenantRateLimitRecord:
        tenant_id = tenant_id.strip()
        if not tenant_id or len(tenant_id) > 64:
            raise InvalidArgument("tenant must be 1 to 64 characters", field="tenant")
        limit = RequestRate.of(rate, burst, rate_field="--rate", burst_field="--burst")
        record = limit_store.TenantRateLimitRecord(tenant_id, limit.rate, limit.burst, utcnow())
        await self.db.write(lambda tx: limit_store.set_limit(tx.conn, record))
        return record

    async def clear(self, tenant_id: str) -> bool:
        return await self.db.write(lambda tx: limit_store.clear_limit(tx.conn, tenant_id.strip()))

    async def list(self) -> list[limit_store.TenantRateLimitRecord]:
        return await self.db.read(limit_store.list_limits)


@dataclass
class _Bucket:
    limit: RequestRate
    tokens: float
    at: float


class TenantRateLimiter:
    """Admits or refuses each call by its tenant's bucket (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        default: RequestRate,
        *,
        cache_seconds: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.default = default
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._limits: dict[str, RequestRate] = {}
        self._fresh_until = -math.inf
        self._loading: asyncio.Task[None] | None = None
        self._loaded = False
        self._buckets: dict[str, _Bucket] = {}

    async def admit(self, caller: Caller) -> None:
        """Takes a token of ``caller``'s tenant for one call (server/access.py says which
        methods are exempt).

        Raises:
            RateLimited: the tenant's bucket is empty; says when the next token comes.
        """
        tenant = caller.tenant_id
        if not tenant:
            return
        limit = await self.limit_of(tenant)
        if limit.unlimited:
            return
        now = self.clock()
        bucket = self._buckets.get(tenant)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._forget_full(now)
            bucket = self._buckets[tenant] = _Bucket(limit, float(limit.burst), now)
        elif bucket.limit != limit:
            # A new limit: what is left (refilled at the old rate) carries over, up to the
            # new burst.
            left = self._refilled(bucket, now)
            bucket.limit, bucket.tokens, bucket.at = limit, min(left, float(limit.burst)), now
        tokens = self._refilled(bucket, now)
        bucket.at = now
        if tokens >= 1.0:
            bucket.tokens = tokens - 1.0
            return
        bucket.tokens = tokens
        wait = (1.0 - tokens) / limit.rate
        full_in = (limit.burst - tokens) / limit.rate
        raise RateLimited(
            tenant,
            rate=limit.rate,
            burst=limit.burst,
            retry_after_seconds=wait,
            reset_at=math.ceil(time.time() + full_in),
        )

    async def limit_of(self, tenant_id: str) -> RequestRate:
        """The tenant's limit as last read. Older than ``cache_seconds``, the limits are
        re-read in the background (calls wait for the database only for the first read)."""
        if self.clock() >= self._fresh_until:
            if self._loading is None:
                self._loading = asyncio.create_task(self._reload())
            if not self._loaded:
                await asyncio.shield(self._loading)
        return self._limits.get(tenant_id, self.default)

    async def _reload(self) -> None:
        try:
            records = await self.db.read(limit_store.list_limits)
            self._limits = {
                r.tenant_id: RequestRate(r.rate_per_second, max(r.burst, 1))
                if r.rate_per_second > 0
                else RequestRate()
                for r in records
            }
            self._loaded = True
        except Exception as exc:  # the database is down: keep the limits last read
            log.warning("tenant rate limits not re-read; keeping the last ones", error=str(exc))
        finally:
            self._fresh_until = self.clock() + self.cache_seconds
            self._loading = None

    def _refilled(self, bucket: _Bucket, now: float) -> float:
        elapsed = max(now - bucket.at, 0.0)
        return min(float(bucket.limit.burst), bucket.tokens + elapsed * bucket.limit.rate)

    def _forget_full(self, now: float) -> None:
        for tenant, bucket in list(self._buckets.items()):
            if self._refilled(bucket, now) >= bucket.limit.burst:
                del self._buckets[tenant]
        if len(self._buckets) >= MAX_BUCKETS:
            self._buckets.clear()
