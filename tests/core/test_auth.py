"""Authentication with API keys on a real store (a SQLite file): who a key makes the caller,
what each role may call, revocation seen once the cache expires, and the --auth mode words."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskorch.core import auth as auth_module
from taskorch.core.auth import (
    CACHE_SECONDS,
    Authenticator,
    AuthMethod,
    KeyRing,
    describe_auth_mode,
    parse_auth_mode,
)
from taskorch.domain.caller import ADMIN, NOBODY, USER, WORKER, Caller
from taskorch.domain.errors import InvalidArgument, PermissionDenied, Unauthenticated
from taskorch.server.access import authorize, checked
from taskorch.store.database import Database
from tests import databases

CREATE = "/taskorch.v1.TaskService/CreateTask"
TAKE = "/taskorch.v1.WorkerService/Take"
METRICS = "/taskorch.v1.SystemService/GetMetrics"
HEALTH = "/grpc.health.v1.Health/Check"


class FakeTime:
    """Stands in for the ``time`` module the authenticator reads its monotonic clock from."""

    now = 100.0

    @classmethod
    def monotonic(cls) -> float:
        return cls.now


@pytest.fixture
async def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Database]:
    FakeTime.now = 100.0
    monkeypatch.setattr(auth_module, "time", FakeTime)
    url = databases.new_database(tmp_path, "sqlite")
    database = Database(url)
    await database.open()
    yield database
    await database.close()


async def test_a_key_makes_the_caller_its_tenant_with_its_role(db: Database) -> None:
    ring = KeyRing(db)
    user = await ring.create("acme")
    worker = await ring.create("acme", WORKER, name="build farm")
    keys = Authenticator(db, frozenset({AuthMethod.KEYS}))
    caller = await keys.authenticate({"x-api-key": user.secret})
    assert caller.tenant_id == "acme" and caller.roles == {USER}
    assert caller.subject == f"key:{user.record.key_id}"
    # OpenAI's clients send the key as a bearer token.
    bearer = await keys.authenticate({"authorization": f"Bearer {worker.secret}"})
    assert bearer.roles == {WORKER}
    assert user.secret.startswith("tko_") and user.record.prefix == user.secret[:12]


async def test_missing_or_unknown_credentials_are_refused_saying_what_to_send(
    db: Database,
) -> None:
    keys = Authenticator(db, frozenset({AuthMethod.KEYS}))
    with pytest.raises(Unauthenticated) as missing:
        await keys.authenticate({})
    assert "x-api-key" in missing.value.message
    with pytest.raises(Unauthenticated, match="Invalid or revoked"):
        await keys.authenticate({"x-api-key": "tko_made-up"})
    with pytest.raises(Unauthenticated, match="Bearer <token>"):
        await keys.authenticate({"authorization": "Basic dXNlcjpwYXNz"})


async def test_health_answers_whatever_the_credentials(db: Database) -> None:
    keys = Authenticator(db, frozenset({AuthMethod.KEYS}))
    # Open methods identify the caller and never refuse (server/access.py applies the rule).
    authenticate = checked(keys)
    assert await authenticate(HEALTH, {}) == NOBODY
    assert await authenticate(HEALTH, {"x-api-key": "tko_made-up"}) == NOBODY


async def test_a_revoked_key_is_refused_once_the_cache_expires(db: Database) -> None:
    ring = KeyRing(db)
    key = await ring.create("acme")
    keys = Authenticator(db, frozenset({AuthMethod.KEYS}))
    await keys.authenticate({"x-api-key": key.secret})
    revoked = await ring.revoke(key.secret)
    assert revoked is not None and revoked.revoked_at is not None
    FakeTime.now += CACHE_SECONDS - 0.1
    await keys.authenticate({"x-api-key": key.secret})  # still cached
    FakeTime.now += 0.2
    with pytest.raises(Unauthenticated):
        await keys.authenticate({"x-api-key": key.secret})


async def test_an_api_key_on_an_oauth_only_server_is_refused_naming_the_mode(
    db: Database,
) -> None:
    key = await KeyRing(db).create("acme")
    oauth_only = Authenticator(
        db,
        frozenset({AuthMethod.OAUTH}),
        oauth=auth_module.OAuthConfig(jwks="unused.json", issuer="https://id", audience="api"),
    )
    with pytest.raises(Unauthenticated, match="--auth oauth"):
        await oauth_only.authenticate({"x-api-key": key.secret})


async def test_keys_are_checked_when_made(db: Database) -> None:
    ring = KeyRing(db)
    for tenant, role, field in (
        ("", USER, "tenant"),
        ("t" * 65, USER, "tenant"),
        ("a", "root", "role"),
    ):
        with pytest.raises(InvalidArgument) as caught:
            await ring.create(tenant, role)
        assert caught.value.metadata.get("field") == field


@pytest.mark.parametrize(
    ("roles", "method", "allowed"),
    [
        ({USER}, CREATE, True),
        ({USER}, TAKE, True),
        ({USER}, METRICS, False),  # metrics cover every tenant
        ({WORKER}, TAKE, True),
        ({WORKER}, CREATE, False),
        ({ADMIN}, METRICS, True),
        ({ADMIN}, CREATE, True),
        (set(), CREATE, False),
    ],
)
def test_what_each_role_may_call(roles: set[str], method: str, allowed: bool) -> None:
    caller = Caller("acme", frozenset(roles))
    if allowed:
        authorize(method, caller)
    else:
        with pytest.raises(PermissionDenied):
            authorize(method, caller)


@pytest.mark.parametrize(
    ("text", "methods", "spelled"),
    [
        ("none", frozenset(), "none"),
        ("keys", frozenset({AuthMethod.KEYS}), "keys"),
        (" OAuth ", frozenset({AuthMethod.OAUTH}), "oauth"),
        ("oauth,keys", frozenset({AuthMethod.KEYS, AuthMethod.OAUTH}), "keys,oauth"),
    ],
)
def test_auth_mode_words(text: str, methods: frozenset[AuthMethod], spelled: str) -> None:
    assert parse_auth_mode(text) == methods
    assert describe_auth_mode(methods) == spelled


@pytest.mark.parametrize("text", ["", "password", "none,keys", "keys,,ldap"])
def test_an_unknown_auth_mode_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="none, keys, oauth"):
        parse_auth_mode(text)


def test_an_authenticator_needs_a_method_and_oauth_its_config(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'unused.db'}")
    with pytest.raises(ValueError):
        Authenticator(db, frozenset())
    with pytest.raises(ValueError):
        Authenticator(db, frozenset({AuthMethod.OAUTH}))
