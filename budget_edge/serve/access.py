"""Who may call the server: a bearer token on every route but health, and the rule that a
server reachable beyond this machine needs one.

The token comes from a file or the BUDGET_EDGE_TOKEN environment variable (never the
command line, where `ps` shows it) and is compared in constant time. Health routes stay
open so that a supervisor can probe the server without the secret.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from budget_edge.errors import ConfigError

TOKEN_ENV = "BUDGET_EDGE_TOKEN"
OPEN_PREFIX = "/v2/health/"

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]


def read_token(path: str | None) -> str | None:
    """The token from `path`, else from BUDGET_EDGE_TOKEN, else None (no token)."""
    if path is not None:
        try:
            token = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--token-file {path}: cannot read it ({exc})") from exc
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            return None
    if len(token) < 16:
        raise ConfigError("the access token must be at least 16 characters (for example "
                          "`openssl rand -hex 32 > token`)")
    return token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def check_exposure(host: str, token: str | None, insecure: bool) -> None:
    """Serving beyond this machine without a token serves anyone on the network."""
    if not is_loopback(host) and token is None and not insecure:
        raise ConfigError(f"--host {host} serves other machines, and there is no access "
                          f"token: give --token-file (or {TOKEN_ENV}), or --insecure if the "
                          "network is yours alone")


class BearerToken:
    """ASGI middleware: 401 with a JSON error unless `Authorization: Bearer <token>`."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or str(scope.get("path", "")).startswith(OPEN_PREFIX):
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope.get("headers", []) if k == b"authorization"), b"")
        if hmac.compare_digest(given, self.expected):
            await self.app(scope, receive, send)
            return
        body = b'{"error": "missing or wrong access token: send Authorization: Bearer <token>"}'
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})
