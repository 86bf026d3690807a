"""Who may call: API keys and OAuth bearer tokens, roles, and which methods each role may use.

Credentials arrive as metadata, so gRPC and REST (Envoy passes headers on) share this:

- ``x-api-key: tko_…`` (or ``authorization: Bearer tko_…``, as OpenAI's clients send it):
  random keys, stored only as SHA-256 hashes, shown once at creation, revocable. A revocation
  reaches every replica within :data:`CACHE_SECONDS`.
- ``authorization: Bearer <JWT>``: RS256/ES256 tokens of a configured issuer and audience,
  checked against a JWKS (a file or a URL); expiry and not-before are enforced. The tenant
  comes from a claim (``tenant`` by default); scopes map to roles
  (``taskorch:admin`` → admin, ``taskorch:worker`` → worker, anything else → user).

Which of the two a server accepts is its explicit mode (``serve --auth``, :class:`AuthMethod`):
``keys``, ``oauth`` or both; never inferred from how many keys exist, so creating the first
key or revoking the last one changes nothing but that key. With keys required and none valid,
every method but health, reflection and the API document is refused (UNAUTHENTICATED). Mode
``none`` checks nothing (every caller is the default tenant); ``serve`` allows it only on
loopback addresses, loudly.

Roles: ``user`` works with its tenant's tasks, subtasks, templates and chats; ``worker`` only
takes and reports work (and reads what it works on); ``admin`` may do anything in every
tenant, and alone may read the server's metrics. Which gRPC method each role may call, and
which are open to anyone, is server/access.py's: this module knows credentials, not methods.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from taskorch.domain.caller import ADMIN, NOBODY, USER, WORKER, Caller
from taskorch.domain.errors import InvalidArgument, Unauthenticated, Unavailable
from taskorch.domain.ids import new_id
from taskorch.store import keys as key_store
from taskorch.store.database import Database, Transaction
from taskorch.store.schema import utcnow

log = structlog.get_logger(__name__)

ROLES = (USER, WORKER, ADMIN)
KEY_PREFIX = "tko_"
CACHE_SECONDS = 2.0
TOKEN_CACHE_SECONDS = 60.0


class AuthMethod(enum.StrEnum):
    """A kind of credential a server accepts (``serve --auth``)."""

    KEYS = "keys"  # x-api-key, made by `taskorch keys create`
    OAUTH = "oauth"  # bearer JWTs of the configured issuer


AUTH_NONE = "none"


def parse_auth_mode(text: str) -> frozenset[AuthMethod]:
    """``--auth``: ``none`` (empty set), ``keys``, ``oauth`` or both (``keys,oauth``).

    Raises:
        ValueError: anything else, saying what is accepted.
    """
    words = {w.strip().lower() for w in text.split(",")} - {""}
    if words == {AUTH_NONE}:
        return frozenset()
    known = {m.value for m in AuthMethod}
    if not words or not words <= known:
        raise ValueError(f"{text!r} is not none, keys, oauth or keys,oauth")
    return frozenset(AuthMethod(w) for w in words)


def describe_auth_mode(methods: frozenset[AuthMethod]) -> str:
    """The ``--auth`` spelling of ``methods`` (``none``, ``keys``, ``keys,oauth``)."""
    return ",".join(m.value for m in AuthMethod if m in methods) or AUTH_NONE


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class NewKey:
    """A key just created: ``secret`` is shown once and never stored."""

    record: key_store.ApiKeyRecord
    secret: str


class KeyRing:
    """Creating, listing and revoking API keys (the ``taskorch keys`` commands)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, tenant_id: str, role: str = USER, name: str = "") -> NewKey:
        tenant_id = tenant_id.strip()
        if not tenant_id or len(tenant_id) > 64:
            raise InvalidArgument("tenant must be 1 to 64 characters", field="tenant")
        if role not in ROLES:
            raise InvalidArgument(f"role must be one of {', '.join(ROLES)}", field="role")
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        record = key_store.ApiKeyRecord(
            key_id=new_id(),
            tenant_id=tenant_id,
            role=role,
            name=name[:200],
            prefix=secret[:12],
            created_at=utcnow(),
            revoked_at=None,
        )

        def store(tx: Transaction) -> None:
            key_store.insert_key(tx.conn, record, hash_key(secret))

        await self.db.write(store)
        return NewKey(record, secret)

    async def list(self, tenant_id: str | None = None) -> list[key_store.ApiKeyRecord]:
        return await self.db.read(lambda conn: key_store.list_keys(conn, tenant_id))

    async def revoke(self, key_or_id: str) -> key_store.ApiKeyRecord | None:
        """Revokes by key id or by the key itself."""
        target = hash_key(key_or_id) if key_or_id.startswith(KEY_PREFIX) else key_or_id
        return await self.db.write(lambda tx: key_store.revoke(tx.conn, target, utcnow()))


@dataclass(frozen=True)
class OAuthConfig:
    """Bearer tokens: who issues them, for whom, and where their signing keys are."""

    jwks: str  # a file path or an https URL
    issuer: str
    audience: str
    tenant_claim: str = "tenant"
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    leeway_seconds: float = 30.0


@dataclass
class _Cached:
    caller: Caller | None
    error: Exception | None
    until: float


@dataclass
class Authenticator:
    """Resolves the caller of a request from its metadata (see the module docstring).

    ``methods`` is the server's mode and never changes while it runs; it must not be empty
    (mode ``none`` does not authenticate at all: the server uses no Authenticator).
    """

    db: Database
    methods: frozenset[AuthMethod]
    oauth: OAuthConfig | None = None
    _keys: dict[str, _Cached] = field(default_factory=dict)
    _tokens: dict[str, _Cached] = field(default_factory=dict)
    _jwks: Any = None

    def __post_init__(self) -> None:
        if not self.methods:
            raise ValueError("an Authenticator needs at least one method (keys, oauth)")
        if AuthMethod.OAUTH in self.methods and self.oauth is None:
            raise ValueError("mode oauth needs an OAuthConfig")

    async def authenticate(self, metadata: Mapping[str, str]) -> Caller:
        """The caller of a request that requires credentials (which role may call which
        method is server/access.py's to say).

        Raises:
            Unauthenticated: no usable credentials.
        """
        caller = await self._caller(metadata)
        if caller is None:
            raise Unauthenticated(f"Missing credentials: send {self._accepted()}")
        return caller

    async def identify(self, metadata: Mapping[str, str]) -> Caller:
        """The caller of an open request (health, reflection, the API document), or NOBODY.

        Health checks must answer (NOT_SERVING while the database is down) whatever the
        credentials, and load balancers send none: no credentials, bad ones or a database
        that cannot check them all make the caller NOBODY, never an error.
        """
        try:
            return await self._caller(metadata) or NOBODY
        except (Unauthenticated, Unavailable):
            return NOBODY

    def _accepted(self) -> str:
        kinds = []
        if AuthMethod.KEYS in self.methods:
            kinds.append("an x-api-key header (taskorch keys create)")
        if AuthMethod.OAUTH in self.methods:
            kinds.append("an authorization: Bearer <token> header")
        return " or ".join(kinds)

    async def _caller(self, metadata: Mapping[str, str]) -> Caller | None:
        key = metadata.get("x-api-key", "").strip()
        if key:
            if AuthMethod.KEYS not in self.methods:
                raise Unauthenticated(
                    "API keys are not accepted by this server (--auth oauth): send a bearer token"
                )
            return await self._from_key(key)
        header = metadata.get("authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("The authorization header must be 'Bearer <token>'")
            token = token.strip()
            if AuthMethod.KEYS in self.methods and (
                token.startswith(KEY_PREFIX) or AuthMethod.OAUTH not in self.methods
            ):
                # An API key as a bearer token: how OpenAI's clients send their key.
                return await self._from_key(token)
            return await self._from_token(token)
        return None

    async def _from_key(self, key: str) -> Caller:
        digest = hash_key(key)
        now = time.monotonic()
        cached = self._keys.get(digest)
        if cached is None or now >= cached.until:
            found = await self.db.read(lambda conn: key_store.find_by_hash(conn, digest))
            if found is None or found[0].revoked_at is not None:
                cached = _Cached(
                    None, Unauthenticated("Invalid or revoked API key"), now + CACHE_SECONDS
                )
            else:
                record, stored = found
                # The lookup used the hash as an index key; compare it in constant time too.
                valid = hmac.compare_digest(stored, digest)
                caller = Caller(record.tenant_id, _roles(record.role), f"key:{record.key_id}")
                cached = _Cached(caller if valid else None, None, now + CACHE_SECONDS)
            if len(self._keys) > 10_000:
                self._keys.clear()
            self._keys[digest] = cached
        if cached.error is not None:
            raise cached.error
        assert cached.caller is not None
        return cached.caller

    async def _from_token(self, token: str) -> Caller:
        if self.oauth is None or AuthMethod.OAUTH not in self.methods:
            raise Unauthenticated(
                "Bearer tokens are not accepted by this server (--auth keys): send an x-api-key"
            )
        now = time.monotonic()
        cached = self._tokens.get(token)
        if cached is None or now >= cached.until:
            try:
                caller, expires = await asyncio.to_thread(self._verify, token)
                cached = _Cached(caller, None, min(now + TOKEN_CACHE_SECONDS, now + expires))
            except Unauthenticated as exc:
                cached = _Cached(None, exc, now + CACHE_SECONDS)
            if len(self._tokens) > 10_000:
                self._tokens.clear()
            self._tokens[token] = cached
        if cached.error is not None:
            raise cached.error
        assert cached.caller is not None
        return cached.caller

    def _verify(self, token: str) -> tuple[Caller, float]:
        import jwt

        assert self.oauth is not None
        config = self.oauth
        try:
            signing_key = self._signing_key(token)
            claims = jwt.decode(
                token,
                signing_key,
                algorithms=list(config.algorithms),
                audience=config.audience,
                issuer=config.issuer,
                leeway=config.leeway_seconds,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("The bearer token has expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("The bearer token is not valid yet (nbf)") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("The bearer token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("The bearer token is from another issuer") from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"Invalid bearer token: {exc}") from None
        tenant = claims.get(config.tenant_claim)
        if not isinstance(tenant, str) or not tenant:
            raise Unauthenticated(f"The bearer token has no {config.tenant_claim!r} claim")
        caller = Caller(tenant[:64], _roles_from_scopes(claims), f"sub:{claims.get('sub', '')}")
        return caller, max(float(claims["exp"]) - time.time(), 0.0)

    def _signing_key(self, token: str) -> Any:
        import jwt

        assert self.oauth is not None
        source = self.oauth.jwks
        if source.startswith(("https://", "http://")):
            if self._jwks is None:
                self._jwks = jwt.PyJWKClient(source, cache_keys=True, lifespan=300)
            return self._jwks.get_signing_key_from_jwt(token).key
        if self._jwks is None:
            self._jwks = jwt.PyJWKSet.from_dict(json.loads(Path(source).read_text()))
        kid = jwt.get_unverified_header(token).get("kid")
        for key in self._jwks.keys:
            if kid is None or key.key_id == kid:
                return key.key
        raise Unauthenticated("The bearer token's signing key (kid) is unknown")


def _roles(role: str) -> frozenset[str]:
    return frozenset({role})


def _roles_from_scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    scopes: list[str] = []
    for name in ("scope", "scp", "roles"):
        value = claims.get(name)
        if isinstance(value, str):
            scopes += value.split()
        elif isinstance(value, list):
            scopes += [str(v) for v in value]
    if "taskorch:admin" in scopes:
        return frozenset({ADMIN})
    if "taskorch:worker" in scopes and "taskorch:user" not in scopes:
        return frozenset({WORKER})
    return frozenset({USER})
