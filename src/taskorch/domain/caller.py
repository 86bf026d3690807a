"""Who is calling: the tenant whose data a request may see, and the caller's roles."""

from __future__ import annotations

from dataclasses import dataclass, field

from taskorch.domain.values import DEFAULT_TENANT

ADMIN = "admin"
USER = "user"
WORKER = "worker"


@dataclass(frozen=True)
class Caller:
    tenant_id: str = DEFAULT_TENANT
    roles: frozenset[str] = field(default_factory=lambda: frozenset({USER, WORKER}))
    subject: str = "anonymous"

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles

    @property
    def tenant_scope(self) -> str | None:
        """The tenant to filter by; None lets an admin see every tenant."""
        return None if self.is_admin else self.tenant_id


ANONYMOUS = Caller()
# No credentials on a server that requires them (open methods only): no tenant, no role.
NOBODY = Caller(tenant_id="", roles=frozenset(), subject="nobody")
SYSTEM = Caller(tenant_id=DEFAULT_TENANT, roles=frozenset({ADMIN, USER, WORKER}), subject="system")
