"""Who may touch which users: the one scoping rule of the HTTP API and the MCP server.

An API key (``LIGHTMEM_API_KEYS``) is bound to a list of user ids or to a prefix of them. A request
resolves its key to a ``Scope`` once (``scope_for``), and every user id it names goes through
``Scope.check`` before anything is read or written. With no key configured there is one scope,
``LOCAL``, that allows every user: the servers then listen on 127.0.0.1 only.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from lightmem_core.errors import AccessDenied, Unauthenticated
from workers.settings import ApiKey


@dataclass(frozen=True)
class Scope:
    """The users one caller may touch: exactly ``users``, or every id starting with ``prefix``."""

    name: str
    users: frozenset[str] | None = None
    prefix: str | None = None

    def allows(self, user_id: str) -> bool:
        if self.users is not None:
            return user_id in self.users
        return self.prefix is not None and user_id.startswith(self.prefix)

    @property
    def everyone(self) -> bool:
        """Whether this scope allows every user (then it may also read the overview and the stats)."""
        return self.users is None and self.prefix == ""

    def check(self, user_id: str) -> str:
        """``user_id`` when this scope allows it; ``AccessDenied`` otherwise."""
        if not self.allows(user_id):
            raise AccessDenied(f"user_id: the key {self.name!r} may not touch this user")
        return user_id

    def check_everyone(self, what: str) -> None:
        """``AccessDenied`` unless this scope allows every user (figures across all tenants)."""
        if not self.everyone:
            raise AccessDenied(f"{what} covers every user: the key {self.name!r} is bound to some users only")


LOCAL = Scope("local (no API key configured)", prefix="")


def scope_for(keys: Sequence[ApiKey], presented: str | None) -> Scope:
    """The scope of the key ``presented`` (``LOCAL`` when no key is configured); ``Unauthenticated`` when
    keys are configured and it is missing or none of them."""
    if not keys:
        return LOCAL
    if not presented:
        raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
    given = presented.encode()
    match: tuple[int, ApiKey] | None = None
    for i, key in enumerate(keys):  # every key is compared, in constant time: no timing tells which one is close
        if hmac.compare_digest(key.key.get_secret_value().encode(), given):
            match = (i, key)
    if match is None:
        raise Unauthenticated("unknown API key")
    i, key = match
    name = key.name or f"#{i + 1}"
    if key.users is not None:
        return Scope(name, users=frozenset(key.users))
    return Scope(name, prefix=key.user_prefix)
