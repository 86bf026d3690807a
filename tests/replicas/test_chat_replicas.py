"""A chat watcher on one PostgreSQL replica sees, live, the reply to a message posted through
another replica, and the session's deletion there: chat events are relayed by LISTEN/NOTIFY
like task events, not found by the watch's re-read of the store after 5 quiet seconds."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from taskorch.client import ChatEvent
from tests import databases
from tests.conftest import ServerFactory
from tests.inference.tiny_models import build_tiny_models

pytestmark = pytest.mark.xdist_group("postgres-replicas")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    if (reason := databases.postgres_reachable()) is not None:
        pytest.skip(reason)
    url = databases.create_postgres_database()
    yield url
    databases.discard(url)


def test_a_chat_watcher_on_one_replica_sees_live_a_reply_generated_through_another(
    server_factory: ServerFactory, postgres_url: str
) -> None:
    models = build_tiny_models().models_dir
    generating = server_factory("--workers", "2", database_url=postgres_url, models_dir=models)
    watching = server_factory("--workers", "0", database_url=postgres_url, models_dir=models)
    with generating.client(timeout=60) as poster, watching.client(timeout=60) as watcher:
        session = poster.chat.create_session("tiny-gpt2", parameters={"max_new_tokens": 16})
        events = watcher.chat.watch(session.session_id)
        # The SNAPSHOT comes after the watch subscribed: what follows is live.
        assert next(events).type == "SNAPSHOT"
        posting = threading.Thread(
            target=poster.chat.post, args=(session.session_id, "def main():"), daemon=True
        )
        posting.start()
        seen: list[ChatEvent] = []
        delays: list[float] = []
        for event in events:
            assert event.created_at is not None
            delays.append((datetime.now(UTC) - event.created_at).total_seconds())
            seen.append(event)
            if event.type == "REPLY_FINISHED":
                break
        posting.join(timeout=60)
        # Deleting the session through the other replica ends the watch here, as promptly.
        deleted = time.monotonic()
        poster.chat.delete_session(session.session_id)
        end = next(events)
        deletion_delay = time.monotonic() - deleted
        assert end.type == "SESSION_DELETED" and next(events, None) is None
    kinds = [event.type for event in seen]
    assert kinds[:3] == ["MESSAGE_ADDED", "MESSAGE_ADDED", "REPLY_STARTED"], kinds
    assert "REPLY_DELTA" in kinds, kinds
    assert [e.sequence for e in seen] == list(range(seen[0].sequence, seen[-1].sequence + 1))
    median, worst = statistics.median(delays), max(delays)
    print(
        f"chat events across replicas: {len(delays)}, median {median * 1000:.1f} ms, "
        f"max {worst * 1000:.1f} ms after they were stored"
    )
    print(f"the deletion, from the call to the watcher: {deletion_delay * 1000:.1f} ms")
    # Pushed by NOTIFY; the re-read of the store comes only after 5 quiet seconds.
    assert worst < 1.0, delays
    assert deletion_delay < 1.0
