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
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from budget_edge.errors import ConfigError
from budget_edge.files import KiB, read_user_text

TOKEN_ENV = "BUDGET_EDGE_TOKEN"
OPEN_PREFIX = "/v2/health/"

Scope = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]
]


# What an `Authorization: Bearer` header can carry (RFC 6750's b64token): one line of
# letters, digits and - . _ ~ + / =. A token with a newline or a space inside could never
# be sent, so every request would get 401.
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9._~+/=-]+")
MIN_TOKEN_CHARS = 16
MAX_TOKEN_BYTES = 4 * KiB


def read_token(path: str | None) -> str | None:
    """The token from `path`, else from BUDGET_EDGE_TOKEN, else None (no token).

    Whitespace around the token (the newline `echo` adds) is dropped."""
    if path is not None:
        text = read_user_text(path, what="--token-file", limit=MAX_TOKEN_BYTES)
        token, where = text.strip(), f"--token-file {path}"
    else:
        token, where = os.environ.get(TOKEN_ENV, "").strip(), TOKEN_ENV
        if not token:
            return None
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"{where}: the access token must be at least {MIN_TOKEN_CHARS} "
            "characters (for example `openssl rand -hex 32 > token`)"
        )
    bad = next((c for c in token if not TOKEN_PATTERN.fullmatch(c)), None)
    if bad is not None:
        raise ConfigError(
            f"{where}: the access token holds {bad!r}, which an Authorization "
            "header cannot carry: use one line of letters, digits and - . _ ~ "
            "+ / = (for example `openssl rand -hex 32 > token`)"
        )
    return token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def check_exposure(host: str, has_token: bool, insecure: bool) -> None:
    """Serving beyond this machine without a token serves anyone on the network."""
    if not is_loopback(host) and not has_token and not insecure:
        raise ConfigError(
            f"--host {host} serves other machines, and there is no access "
            f"token: give --token-file (or {TOKEN_ENV}), or --insecure if the "
            "network is yours alone"
        )


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
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
