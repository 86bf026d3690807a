"""Schedules: tasks created on a cron expression (in a time zone) or a fixed interval.

A schedule holds its timing and the create request of the task each firing makes. Its
``next_fire_at`` is the next slot; the :class:`ScheduleService`'s loop (:meth:`run`,
started with the server) wakes when the earliest slot of any schedule comes (and every
``RECHECK_SECONDS`` besides, for schedules other replicas created), and fires what is due:

1. It claims the slot: one conditional UPDATE moves ``next_fire_at`` past now if it is still
   the slot it read (store/schedules.py: ``claim_slot``). Of several replicas sharing the
   database only one wins; the others fire nothing.
2. The winner creates the task through :meth:`TaskService.create`, the path CreateTask takes,
   with a request_id made of the schedule id and the slot
   (``schedule:<id>:<slot>``): the firing is idempotent, and the task shows which slot it is.
3. It records the task (or why none was created, e.g. a deleted template) on the schedule.

Missed slots (``catch_up``): a slot is *missed* when it passed before this server's
scheduler started (no server was running to fire it) or when the scheduler reaches it more
than ``MISSED_AFTER_SECONDS`` late. With ``"one"`` (the default) the missed slots of a
schedule are run once, as one task for the latest of them; with ``"none"`` they are skipped.
Either way the schedule then fires on its next slot after now. A slot reached late but
within ``MISSED_AFTER_SECONDS`` fires as itself: a scheduler held up for a few seconds fires
each slot it owes, one after another. Slots that pass while a
schedule is paused are never run (resuming starts from the next slot).

Interval schedules count their slots from their creation (created_at + k * interval); cron
slots are computed in the schedule's IANA time zone (croniter), so "0 9 * * *" in
Europe/Paris fires at 09:00 Paris time in summer and in winter.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from croniter import CroniterBadDateError, CroniterError, croniter

from taskorch.core.planning import TaskSpec
from taskorch.core.tasks import TaskService
from taskorch.domain.caller import USER, Caller
from taskorch.domain.errors import (
    AlreadyExists,
    AlreadyStored,
    ErrorStatus,
    InvalidArgument,
    ScheduleNotFound,
    TaskorchError,
    Unavailable,
    within,
)
from taskorch.domain.ids import new_id
from taskorch.domain.values import JSON, Task
from taskorch.store import schedules as schedule_store
from taskorch.store.database import Database, Transaction
from taskorch.store.schedules import ScheduleRecord
from taskorch.store.schema import utcnow

log = structlog.get_logger(__name__)

# The shortest interval a schedule may have (a faster one is a worker's loop, not a schedule).
MIN_INTERVAL_SECONDS = 1.0
MAX_INTERVAL_SECONDS = 366 * 24 * 3600.0
# A slot the scheduler reaches later than this counts as missed (see catch_up).
MISSED_AFTER_SECONDS = 60.0
# How often the loop looks for due schedules when none of its own is due sooner.
RECHECK_SECONDS = 5.0
# At most this many schedules fire in one pass of the loop (the next pass follows at once).
DUE_BATCH = 100
# Schedules a tenant may have (a list answers all of them).
MAX_SCHEDULES_PER_TENANT = 1000
# How long the loop waits when a due schedule could not be fired (it tries again then).
STUCK_PAUSE_SECONDS = 1.0
CATCH_UP_ONE = "one"
CATCH_UP_NONE = "none"
CATCH_UP = (CATCH_UP_ONE, CATCH_UP_NONE)
DEFAULT_TIMEZONE = "UTC"

SCHEDULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_SPEC_FIELDS = (
    "text",
    "task_type",
    "model_name",
    "input_data",
    "parameters",
    "template",
    "priority",
    "depends_on",
    "max_attempts",
    "timeout_seconds",
    "run_after_seconds",
    "concurrency_key",
    "concurrency_limit",
)


# -- timing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """When a schedule fires: a cron expression in a time zone, or an interval from an
    anchor (the schedule's creation)."""

    cron: str = ""
    interval_seconds: float = 0.0
    timezone: str = DEFAULT_TIMEZONE
    anchor: datetime = datetime(1970, 1, 1, tzinfo=UTC)

    @classmethod
    def parse(cls, cron: str, interval_seconds: float, timezone: str, anchor: datetime) -> Timing:
        """Checks a schedule's timing fields.

        Raises:
            InvalidArgument: naming ``cron``, ``interval_seconds`` or ``timezone``.
        """
        cron = " ".join(cron.split())
        timezone = timezone.strip() or DEFAULT_TIMEZONE
        if cron and interval_seconds:
            raise InvalidArgument(
                "give either cron or interval_seconds, not both", field="interval_seconds"
            )
        if not cron and not interval_seconds:
            raise InvalidArgument(
                'one of cron (e.g. "*/5 * * * *") or interval_seconds is required',
                field="cron",
            )
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidArgument(
                f'timezone {timezone[:80]!r} is not an IANA time zone (e.g. "Europe/Paris", "UTC")',
                field="timezone",
            ) from None
        if interval_seconds:
            if not math.isfinite(interval_seconds) or not (
                MIN_INTERVAL_SECONDS <= interval_seconds <= MAX_INTERVAL_SECONDS
            ):
                raise InvalidArgument(
                    f"interval_seconds must be between {MIN_INTERVAL_SECONDS:g} and "
                    f"{MAX_INTERVAL_SECONDS:.0f} (366 days); got {interval_seconds:g}",
                    field="interval_seconds",
                )
            return cls(interval_seconds=interval_seconds, timezone=timezone, anchor=anchor)
        timing = cls(cron=cron, timezone=timezone, anchor=anchor)
        fields = cron.split(" ")
        if len(fields) != 5:
            raise InvalidArgument(
                f"cron {cron[:80]!r} has {len(fields)} fields; it needs 5 (minute hour "
                "day-of-month month day-of-week)",
                field="cron",
            )
        try:
            timing.after(anchor)
        except CroniterBadDateError:
            raise InvalidArgument(f"cron {cron!r} never fires", field="cron") from None
        except (CroniterError, ValueError, KeyError) as exc:
            raise InvalidArgument(f"cron {cron[:80]!r} is not valid: {exc}", field="cron") from None
        return timing

    def after(self, moment: datetime) -> datetime:
        """The first slot strictly after ``moment`` (UTC)."""
        if self.interval_seconds:
            elapsed = (moment - self.anchor).total_seconds()
            slots = max(0, math.floor(elapsed / self.interval_seconds) + 1)
            return self.anchor + timedelta(seconds=slots * self.interval_seconds)
        local = moment.astimezone(ZoneInfo(self.timezone))
        found: datetime = croniter(self.cron, local).get_next(datetime)
        return found.astimezone(UTC)

    def latest(self, slot: datetime, now: datetime) -> datetime:
        """The latest slot at or before ``now``, given that ``slot`` (<= now) is one."""
        if self.interval_seconds:
            return max(slot, self.after(now) - timedelta(seconds=self.interval_seconds))
        local = now.astimezone(ZoneInfo(self.timezone))
        previous: datetime = croniter(self.cron, local).get_prev(datetime)
        return max(slot, previous.astimezone(UTC))


# -- values ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewSchedule:
    """A create request, transport-neutral. Empty strings mean "not given"."""

    name: str
    cron: str = ""
    interval_seconds: float = 0.0
    timezone: str = ""
    task: TaskSpec | None = None
    catch_up: str = ""
    paused: bool = False


@dataclass(frozen=True)
class Schedule:
    schedule_id: str
    tenant_id: str
    name: str
    cron: str
    interval_seconds: float
    timezone: str
    task: TaskSpec
    catch_up: str
    paused: bool
    next_fire_at: datetime | None
    last_fired_at: datetime | None
    last_task_id: str
    fire_count: int
    last_error: str
    created_at: datetime
    updated_at: datetime

    @property
    def timing(self) -> Timing:
        return Timing(self.cron, self.interval_seconds, self.timezone, self.created_at)


def spec_to_json(spec: TaskSpec) -> JSON:
    """The stored form of a schedule's task: the create request's fields that were given."""
    data: JSON = {}
    for name in _SPEC_FIELDS:
        value = getattr(spec, name)
        if value in (None, "", 0, 0.0, ()):
            continue
        data[name] = list(value) if isinstance(value, tuple) else value
    return data


def spec_from_json(data: JSON) -> TaskSpec:
    values: dict[str, Any] = {k: v for k, v in data.items() if k in _SPEC_FIELDS}
    if "depends_on" in values:
        values["depends_on"] = tuple(values["depends_on"])
    return TaskSpec(**values)


def _schedule(record: ScheduleRecord) -> Schedule:
    return Schedule(
        schedule_id=record.schedule_id,
        tenant_id=record.tenant_id,
        name=record.name,
        cron=record.cron,
        interval_seconds=record.interval_seconds,
        timezone=record.timezone,
        task=spec_from_json(record.task),
        catch_up=record.catch_up,
        paused=record.paused,
        next_fire_at=record.next_fire_at,
        last_fired_at=record.last_fired_at,
        last_task_id=record.last_task_id or "",
        fire_count=record.fire_count,
        last_error=record.last_error or "",
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def firing_request_id(schedule_id: str, slot: datetime) -> str:
    """The request_id of a schedule's task for one slot: the same on every replica."""
    return f"schedule:{schedule_id}:{slot.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%fZ}"


def _name(value: str) -> str:
    name = value.strip()
    if not name:
        raise InvalidArgument("name is required", field="name")
    if not SCHEDULE_NAME.match(name):
        raise InvalidArgument(
            f"name {name[:80]!r} must be letters, digits, '-', '_' or '.' (at most 100, "
            "starting with a letter or digit)",
            field="name",
        )
    return name


# -- the service -------------------------------------------------------------------------------


class ScheduleService:
    """Creates, reads, pauses, resumes, triggers and deletes the caller's schedules, and
    fires every tenant's due schedules (:meth:`run`)."""

    def __init__(
        self,
        db: Database,
        tasks: TaskService,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.tasks = tasks
        self.clock = clock
        # When this scheduler started: slots before it passed with no server to fire them.
        self.started_at = clock()
        self._wake = asyncio.Event()

    # -- management ----------------------------------------------------------------------------

    async def create(self, caller: Caller, request: NewSchedule) -> Schedule:
        """Stores a schedule in the caller's tenant.

        Raises:
            InvalidArgument: a field is invalid (named; ``task.FIELD`` for the task body).
            AlreadyExists: the tenant has a schedule of that name.
            TaskorchError: RESOURCE_EXHAUSTED, the tenant has ``MAX_SCHEDULES_PER_TENANT``
                schedules.
        """
        name = _name(request.name)
        now = self.clock()
        timing = Timing.parse(request.cron, request.interval_seconds, request.timezone, now)
        catch_up = request.catch_up.strip().lower() or CATCH_UP_ONE
        if catch_up not in CATCH_UP:
            raise InvalidArgument(
                f"catch_up {request.catch_up[:40]!r} is not one of {', '.join(CATCH_UP)}",
                field="catch_up",
            )
        if request.task is None:
            raise InvalidArgument("task (a CreateTask body) is required", field="task")
        if request.task.request_id:
            raise InvalidArgument(
                "each firing sets its own request_id (from the schedule and the slot); "
                "leave it out",
                field="task.request_id",
            )
        if request.task.run_at is not None:
            raise InvalidArgument(
                "a schedule's task runs at each slot; run_at cannot be given "
                "(run_after_seconds delays each firing's task)",
                field="task.run_at",
            )
        try:
            await self.tasks.check(caller, request.task)
        except TaskorchError as exc:
            raise within(exc, "task") from None
        record = ScheduleRecord(
            schedule_id=new_id(),
            tenant_id=caller.tenant_id,
            name=name,
            cron=timing.cron,
            interval_seconds=timing.interval_seconds,
            timezone=timing.timezone,
            task=spec_to_json(request.task),
            catch_up=catch_up,
            paused=request.paused,
            next_fire_at=None if request.paused else timing.after(now),
            last_fired_at=None,
            last_task_id=None,
            fire_count=0,
            last_error=None,
            created_at=now,
            updated_at=now,
        )

        def insert(tx: Transaction) -> None:
            if schedule_store.get_schedule(tx.conn, caller.tenant_id, name) is not None:
                raise _taken(name)
            if schedule_store.count_schedules(tx.conn, caller.tenant_id) >= (
                MAX_SCHEDULES_PER_TENANT
            ):
                # Not a ResourceExhausted: waiting (its Retry-After) would not help.
                raise TaskorchError(
                    f"the tenant has {MAX_SCHEDULES_PER_TENANT} schedules, the most it may "
                    "have; delete one first",
                    reason="SCHEDULE_QUOTA_EXCEEDED",
                    status=ErrorStatus.RESOURCE_EXHAUSTED,
                )
            schedule_store.insert_schedule(tx.conn, record)

        try:
            await self.db.write(insert)
        except AlreadyStored:  # created by another replica meanwhile
            raise _taken(name) from None
        self.wake()
        return _schedule(record)

    async def list(self, caller: Caller) -> list[Schedule]:
        """The caller's schedules by name."""
        records = await self.db.read(
            partial(schedule_store.list_schedules, tenant_id=caller.tenant_id)
        )
        return [_schedule(r) for r in records]

    async def get(self, caller: Caller, name: str) -> Schedule:
        """Raises ScheduleNotFound, also for another tenant's schedule."""
        return _schedule(await self._record(caller, name))

    async def _record(self, caller: Caller, name: str) -> ScheduleRecord:
        key = name.strip()
        record = await self.db.read(
            partial(schedule_store.get_schedule, tenant_id=caller.tenant_id, name=key)
        )
        if record is None:
            raise _not_found(name)
        return record

    async def delete(self, caller: Caller, name: str) -> None:
        """Deletes a schedule; the tasks it created stay. Raises ScheduleNotFound."""
        key = name.strip()
        deleted = await self.db.write(
            lambda tx: schedule_store.delete_schedule(tx.conn, caller.tenant_id, key)
        )
        if not deleted:
            raise _not_found(name)

    async def pause(self, caller: Caller, name: str) -> Schedule:
        """Stops a schedule from firing. Raises ScheduleNotFound."""
        key = name.strip()
        now = self.clock()
        record = await self.db.write(
            lambda tx: schedule_store.set_paused(
                tx.conn, caller.tenant_id, key, paused=True, next_fire_at=None, now=now
            )
        )
        if record is None:
            raise _not_found(name)
        return _schedule(record)

    async def resume(self, caller: Caller, name: str) -> Schedule:
        """Lets a paused schedule fire again from its next slot after now (resuming one that
        runs changes nothing). Raises ScheduleNotFound."""
        current = await self._record(caller, name)
        if not current.paused:
            return _schedule(current)
        now = self.clock()
        upcoming = _schedule(current).timing.after(now)
        record = await self.db.write(
            lambda tx: schedule_store.set_paused(
                tx.conn,
                caller.tenant_id,
                current.name,
                paused=False,
                next_fire_at=upcoming,
                now=now,
            )
        )
        if record is None:
            raise _not_found(name)
        self.wake()
        return _schedule(record)

    async def trigger(self, caller: Caller, name: str) -> tuple[Schedule, Task]:
        """Creates the schedule's task now, leaving its next slot as it is.

        Raises:
            ScheduleNotFound; whatever CreateTask raises for the task (e.g. the template it
            names was deleted), which is also recorded as the schedule's last_error.
        """
        record = await self._record(caller, name)
        now = self.clock()
        schedule = _schedule(record)
        spec = replace(
            schedule.task,
            request_id=f"schedule:{record.schedule_id}:trigger:{new_id()}",
        )
        try:
            task = await self.tasks.create(_owner(record), spec)
        except TaskorchError as exc:
            error = exc.message
            await self.db.write(
                lambda tx: schedule_store.record_firing(
                    tx.conn, record.schedule_id, task_id=None, error=error, now=now, fired_at=now
                )
            )
            raise within(exc, "task") from None
        await self.db.write(
            lambda tx: schedule_store.record_firing(
                tx.conn, record.schedule_id, task_id=task.task_id, error=None, now=now, fired_at=now
            )
        )
        return await self.get(caller, record.name), task

    # -- the scheduler -------------------------------------------------------------------------

    def wake(self) -> None:
        """Makes the loop look at the schedules again now (one was created or resumed)."""
        self._wake.set()

    async def run(self) -> None:
        """Fires due schedules until cancelled: wakes at the earliest next slot, when woken,
        and every ``RECHECK_SECONDS``."""
        self.started_at = self.clock()
        while True:
            self._wake.clear()
            try:
                fired, upcoming = await self.fire_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be away; look again later
                log.warning("schedules: firing failed", error=str(exc))
                fired, upcoming = 0, None
            wait = RECHECK_SECONDS
            if upcoming is not None:
                wait = min(wait, max(0.0, (upcoming - self.clock()).total_seconds()))
            if not fired and wait == 0:
                # Still due, yet nothing fired: a schedule that cannot be fired (logged).
                # Never a busy loop.
                wait = STUCK_PAUSE_SECONDS
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)

    async def fire_due(self) -> tuple[int, datetime | None]:
        """Fires the schedules (of every tenant) whose slot has come, up to ``DUE_BATCH``.

        Returns:
            How many slots this call claimed, and the earliest next slot of any schedule.
        """
        now = self.clock()
        due = await self.db.read(partial(schedule_store.due_schedules, now=now, limit=DUE_BATCH))
        fired = 0
        for record in due:
            try:
                if await self._fire(record, now):
                    fired += 1
            except Unavailable:
                raise
            except Exception as exc:  # one broken schedule must not hold up the others
                log.warning(
                    "schedule: firing failed",
                    schedule=record.name,
                    tenant=record.tenant_id,
                    error=f"{type(exc).__name__}: {exc}",
                )
        return fired, await self.db.read(schedule_store.next_due)

    def _missed(self, slot: datetime, now: datetime) -> bool:
        """A slot that passed with no scheduler running, or that this one reaches too late."""
        return slot < self.started_at or (now - slot).total_seconds() > MISSED_AFTER_SECONDS

    async def _fire(self, record: ScheduleRecord, now: datetime) -> bool:
        """Claims the record's slot and, unless it was missed and catch_up is none, creates
        its task. False when another replica (or a pause or delete) took the slot first."""
        slot = record.next_fire_at
        assert slot is not None
        timing = _schedule(record).timing
        fired_for: datetime | None = slot
        upcoming = timing.after(slot)
        if self._missed(slot, now):
            # The slots owed since: one firing for the latest (catch_up one), or none at all
            # unless the latest is on time (catch_up none).
            latest = timing.latest(slot, now)
            upcoming = timing.after(now)
            if record.catch_up == CATCH_UP_NONE and self._missed(latest, now):
                fired_for = None
            else:
                fired_for = latest
        claimed = await self.db.write(
            lambda tx: schedule_store.claim_slot(
                tx.conn,
                record.schedule_id,
                slot=slot,
                fired_for=fired_for,
                next_fire_at=upcoming,
                now=now,
            )
        )
        if not claimed:
            return False
        if fired_for is None:
            log.info(
                "schedule: missed slots skipped (catch_up none)",
                schedule=record.name,
                tenant=record.tenant_id,
                missed_from=slot.isoformat(),
                next_fire_at=upcoming.isoformat(),
            )
            return True
        spec = replace(
            spec_from_json(record.task),
            request_id=firing_request_id(record.schedule_id, fired_for),
        )
        task_id: str | None = None
        error: str | None = None
        try:
            task_id = (await self.tasks.create(_owner(record), spec)).task_id
            log.info(
                "schedule fired",
                schedule=record.name,
                tenant=record.tenant_id,
                slot=fired_for.isoformat(),
                task_id=task_id,
            )
        except TaskorchError as exc:
            error = exc.message
            log.warning(
                "schedule: the firing created no task",
                schedule=record.name,
                tenant=record.tenant_id,
                error=error,
            )
        await self.db.write(
            lambda tx: schedule_store.record_firing(
                tx.conn, record.schedule_id, task_id=task_id, error=error, now=self.clock()
            )
        )
        return True


def _owner(record: ScheduleRecord) -> Caller:
    """Who a schedule's tasks are created as: a user of its tenant."""
    return Caller(
        tenant_id=record.tenant_id, roles=frozenset({USER}), subject=f"schedule:{record.name}"
    )


def _not_found(name: str) -> ScheduleNotFound:
    return ScheduleNotFound(name, message=f"Schedule '{name[:100]}' not found")


def _taken(name: str) -> AlreadyExists:
    return AlreadyExists(f"a schedule named {name!r} already exists", reason="SCHEDULE_EXISTS")
