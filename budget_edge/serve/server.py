"""Running the app: bind the socket ourselves, serve it with uvicorn, stop gracefully.

Binding before uvicorn starts turns a busy port or a bad socket path into a
project error with advice (uvicorn would log and exit 1), lets `--port 0` report
the port the system chose, and queues clients from the moment the address is
printed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import threading
from typing import Any

import uvicorn

from budget_edge.errors import ConfigError

BACKLOG = 128
# How long SIGTERM waits for in-flight requests before cancelling them: the
# server always stops by itself.
GRACEFUL_TIMEOUT_S = 30


def bind_tcp(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free port)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )[0]
        # The protocol must be IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on
        # such sockets, and without it a response's head and body, written
        # separately, wait 40 ms on the client's delayed ACK (Nagle's algorithm).
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise _cannot_listen(host, port, exc) from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise _cannot_listen(host, port, exc) from exc
    return sock


def _cannot_listen(host: str, port: int, exc: OSError) -> ConfigError:
    return ConfigError(
        f"cannot listen on {host}:{port} ({exc.strerror or exc}): choose another --port, "
        "stop the program using it, or check --host"
    )


def bind_unix(path: str) -> socket.socket:
    """A listening Unix socket at `path`; a stale socket file left by a crash is replaced."""
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise ConfigError(f"{path} exists and is not a socket: choose another --uds path")
        if _answers(path):
            raise ConfigError(
                f"another server is listening on {path}: stop it or choose another --uds path"
            )
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on Unix socket {path} ({exc.strerror or exc}): check that its "
            "folder exists and is writable"
        ) from exc
    return sock


def _answers(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def address_of(sock: socket.socket) -> str:
    """The URL clients use to reach a bound socket."""
    if sock.family == socket.AF_UNIX:
        return f"unix:{sock.getsockname()}"
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


# Connections and requests at once: beyond it uvicorn answers 503 at once, instead
# of sockets piling up until the process runs out of file descriptors (300 idle
# connections under `ulimit -n 256` once made every good request time out).
MAX_CONCURRENCY = 128
KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed after this


def make_server(app: Any, log_level: str = "info",
                max_concurrency: int = MAX_CONCURRENCY, tls_cert: str | None = None,
                tls_key: str | None = None) -> uvicorn.Server:
    """A uvicorn server for `app`: no lifespan events, bounded graceful shutdown, a cap
    on concurrent connections (503 beyond it) and on idle keep-alive time."""
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_level=log_level,
        timeout_graceful_shutdown=GRACEFUL_TIMEOUT_S,
        server_header=False,
        limit_concurrency=max_concurrency,
        timeout_keep_alive=KEEP_ALIVE_S,
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
    )
    if tls_cert is not None:
        try:
            config.load()  # reads the certificate and key now: a bad file is one line
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--tls-cert/--tls-key: cannot use them ({exc})") from exc
    return uvicorn.Server(config)


def run(server: uvicorn.Server, sock: socket.socket) -> None:
    """Serve on `sock` until SIGINT, SIGTERM or `server.should_exit`; in-flight requests finish.

    The socket is closed (and a Unix socket's file removed) when it returns.
    """
    # After its graceful shutdown uvicorn restores the handler it found and raises
    # the caught signal again. With SIGTERM's default handler the process would
    # then die by the signal; this no-op lets a requested stop exit with status 0.
    unix_path = sock.getsockname() if sock.family == socket.AF_UNIX else None
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stopped) if main else None
    try:
        server.run(sockets=[sock])
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        sock.close()  # uvicorn closes it on a clean shutdown, but not on every failure
        if unix_path:
            with contextlib.suppress(OSError):
                os.unlink(unix_path)


def _stopped(signum: int, frame: Any) -> None:
    """SIGTERM after the server has already shut down: nothing left to do."""
