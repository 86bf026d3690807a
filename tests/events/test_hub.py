"""The event hub: a committed task event reaches the task's watchers, its tenant's and the
all-tenants watchers, and every listener even when one fails; stop notices go only to the
workers that hold running subtasks."""

from __future__ import annotations

from datetime import UTC, datetime

from taskorch.domain.chat_values import ChatEvent, ChatEventType
from taskorch.domain.values import EventType, Status, Subtask, TaskEvent
from taskorch.events.hub import EventHub, StopNotice

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _event(task_id: str, tenant_id: str, sequence: int = 1) -> TaskEvent:
    return TaskEvent(task_id, tenant_id, sequence, EventType.PROGRESS, Status.RUNNING, NOW)


async def test_an_event_reaches_its_task_its_tenant_and_all_tenant_watchers_only() -> None:
    hub = EventHub()
    task_watch = hub.subscribe("t1")
    other_task = hub.subscribe("t2")
    acme = hub.subscribe_tenant("acme")
    globex = hub.subscribe_tenant("globex")
    everyone = hub.subscribe_tenant(None)
    assert hub.watches_tenants()
    event = _event("t1", "acme")
    hub.publish(event)
    for subscription in (task_watch, acme, everyone):
        assert await subscription.get(timeout=1) == event
    for subscription in (other_task, globex):
        assert await subscription.get(timeout=0) is None


async def test_a_failing_listener_does_not_keep_the_event_from_the_others() -> None:
    hub = EventHub()
    seen: list[TaskEvent] = []

    def broken(event: TaskEvent) -> None:
        raise RuntimeError("metrics exporter down")

    hub.add_listener(broken)
    hub.add_listener(seen.append)
    watch = hub.subscribe("t1")
    hub.publish(_event("t1", "acme"))
    assert [e.task_id for e in seen] == ["t1"]
    assert await watch.get(timeout=1) is not None


async def test_a_relayed_event_reaches_watchers_but_not_listeners() -> None:
    hub = EventHub()
    seen: list[TaskEvent] = []
    hub.add_listener(seen.append)
    watch = hub.subscribe("t1")
    hub.relay(_event("t1", "acme"))  # another replica's event: its listeners ran there
    assert seen == [] and await watch.get(timeout=1) is not None


async def test_closed_tenant_watches_stop_counting_as_tenant_watchers() -> None:
    hub = EventHub()
    watch = hub.subscribe_tenant("acme")
    assert hub.watches_tenants()
    watch.close()
    assert not hub.watches_tenants()


async def test_chat_events_reach_their_sessions_watchers_only_and_not_task_watchers() -> None:
    hub = EventHub()
    session = hub.subscribe_chat("s1")
    other_session = hub.subscribe_chat("s2")
    tenant = hub.subscribe_tenant("acme")
    events = [
        ChatEvent("s1", "acme", n, ChatEventType.REPLY_DELTA, NOW, delta=str(n)) for n in (1, 2)
    ]
    hub.publish_chat(events)
    assert [await session.get(timeout=1) for _ in events] == events
    hub.relay_chat(events[0])  # another replica's, read from the store
    assert await session.get(timeout=1) == events[0]
    assert await other_session.get(timeout=0) is None
    assert await tenant.get(timeout=0) is None


def _subtask(
    subtask_id: str, status: Status, worker_id: str | None, lease_id: str | None
) -> Subtask:
    return Subtask(
        subtask_id=subtask_id,
        task_id="t1",
        tenant_id="acme",
        kind="echo",
        status=status,
        created_at=NOW,
        updated_at=NOW,
        worker_id=worker_id,
        lease_id=lease_id,
    )


async def test_stop_notices_go_to_the_workers_holding_running_subtasks() -> None:
    hub = EventHub()
    w1, w2 = hub.stops.subscribe("w1"), hub.stops.subscribe("w2")
    hub.stop_workers(
        [
            _subtask("s1", Status.RUNNING, "w1", "lease-1"),
            _subtask("s2", Status.PENDING, "w2", None),  # queued: no worker to tell
            _subtask("s3", Status.COMPLETED, "w2", "lease-3"),
        ],
        "task cancelled",
    )
    assert await w1.get(timeout=1) == StopNotice("w1", "s1", "lease-1", "task cancelled")
    assert await w1.get(timeout=0) is None and await w2.get(timeout=0) is None
