"""The API's one scoping dependency: a request's key becomes a ``Scope``, and the user it names is
checked against it before any route runs (``producers.access``, shared with the MCP server).

Every ``/v1`` route depends on ``caller_scope``; a route that touches a user takes its user id only
through ``scoped_user`` (the ``user_id`` query parameter, checked); the routes that report on every
user take ``operator`` (a key whose scope is every user).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from producers.access import Scope, scope_for

_bearer = HTTPBearer(auto_error=False, description="an API key from LIGHTMEM_API_KEYS")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key from LIGHTMEM_API_KEYS")


def caller_scope(request: Request,
                 bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
                 header_key: Annotated[str | None, Security(_header)] = None) -> Scope:
    """The scope of the request's key (``Authorization: Bearer`` or ``X-API-Key``); 401 without a valid one."""
    presented = bearer.credentials if bearer is not None else header_key
    return scope_for(request.app.state.settings.api_keys, presented)


def scoped_user(user_id: Annotated[str, Query(min_length=1, max_length=512, description="the user the request is about")],
                scope: Annotated[Scope, Depends(caller_scope)]) -> str:
    """The request's ``user_id``, once the key's scope allows it (403 otherwise)."""
    return scope.check(user_id)


def operator(scope: Annotated[Scope, Depends(caller_scope)]) -> Scope:
    """The caller's scope, when it allows every user (403 otherwise): for figures across all tenants."""
    scope.check_everyone("this report")
    return scope


ScopedUser = Annotated[str, Depends(scoped_user)]
Caller = Annotated[Scope, Depends(caller_scope)]
Operator = Annotated[Scope, Depends(operator)]
