"""Running the app: bind the socket ourselves, serve it with uvicorn, stop gracefully.

Binding before uvicorn starts turns a busy port or a bad socket path into a
project error with advice (uvicorn would log and exit 1), lets `--port 0` report
the port the system chose, and queues clients from the moment the address is
printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http
import itertools
import json
import logging
import os
import signal
import socket
import stat
import threading
from collections.abc import Callable
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from budget_edge.errors import ConfigError
from budget_edge.serve.admission import Admission
from budget_edge.serve.clock import Clock, Timer

# uvicorn's logger, so that these lines show in the server's log with its format.
logger = logging.getLogger("uvicorn.error")

BACKLOG = 128
# How long SIGTERM waits for running requests before cancelling them: the server always
# stops by itself. Queued requests are served for DRAIN_S more seconds, then answered
# 503; a running request is at most --max-batch images: this is a backstop.
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


# Connections at once. Beyond it the connection idle longest (no request in flight) is
# closed to make room; when every one has a request in flight, uvicorn answers 503 to
# the newcomer at once, health checks excepted. Without a cap, sockets piled up until
# the process ran out of file descriptors (300 idle connections under `ulimit -n 256`
# once made every good request time out); without eviction, 127 idle sockets made every
# request, health checks included, get 503 until they timed out.
MAX_CONNECTIONS = 128
# A connection must send a whole request head within HEAD_TIMEOUT_S of opening, and
# within KEEP_ALIVE_S of its last response, else it is closed: uvicorn restarts its
# keep-alive timer on every byte and has no limit on the head, so slow-header or idle
# sockets would hold connection slots for ever.
HEAD_TIMEOUT_S = 10.0
KEEP_ALIVE_S = 5.0
HEALTH_PREFIX = "/v2/health/"
# Signals that would kill the process at once (a closed terminal sends SIGHUP): the
# server handles them (BudgetEdgeServer), and the serve command ignores them while it
# loads. SIGTERM and SIGINT stop it gracefully (uvicorn).
CAUGHT_SIGNALS = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
_idle_order = itertools.count()  # which connection has been idle longest


HTTP_VERSIONS = (b"1.0", b"1.1")


class StrictConnection(h11.Connection):
    """h11's server side of a connection, refusing request heads it would take on trust.

    h11 frames a request with both Content-Length and Transfer-Encoding as chunked and
    keeps the connection: a proxy in front that frames it by Content-Length then sees a
    different request boundary, and a second request hidden in the body gets answered
    (request smuggling). h11 also parses any `HTTP/d.d` request line as HTTP/1.1. Such
    a head is refused here (`refusal` says how), and the protocol answers it and closes
    the connection.
    """

    refusal: tuple[int, str] | None = None

    def next_event(self) -> Any:
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            self.refusal = (
                exc.error_status_hint,
                f"{exc} (malformed HTTP: check the request "
                "line and headers, Content-Length in "
                "particular)",
            )
            raise
        if isinstance(event, h11.Request):
            self.refusal = _framing_problem(event)
            if self.refusal is not None:
                raise h11.RemoteProtocolError(self.refusal[1], self.refusal[0])
        return event


def _framing_problem(request: h11.Request) -> tuple[int, str] | None:
    """(status, message) for a request head that must not be served, else None."""
    if request.http_version not in HTTP_VERSIONS:
        version = request.http_version.decode("ascii", "replace")
        return 505, f"HTTP/{version} is not supported: send HTTP/1.1 (or HTTP/1.0)"
    names = {name for name, _ in request.headers}
    if b"transfer-encoding" in names and b"content-length" in names:
        return 400, (
            "the request has both Content-Length and Transfer-Encoding, which a "
            "proxy and this server could frame differently: send one of them"
        )
    if b"transfer-encoding" in names and request.http_version == b"1.0":
        return 400, (
            "Transfer-Encoding is not part of HTTP/1.0: send Content-Length, or "
            "send the request as HTTP/1.1"
        )
    return None


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head, a cap on
    connections that closes the idle ones first, and strict framing (StrictConnection).

    The head timer starts when the connection opens (HEAD_TIMEOUT_S) or a response ends
    (KEEP_ALIVE_S), and only a complete request head stops it: a client trickling a
    header one byte at a time, or connecting and sending nothing, is closed on time.
    Timers run on `clock` (tests pass one they move by hand).
    """

    def __init__(
        self,
        *args: Any,
        head_timeout_s: float = HEAD_TIMEOUT_S,
        keep_alive_s: float = KEEP_ALIVE_S,
        max_connections: int = MAX_CONNECTIONS,
        clock: Clock | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        size = self.config.h11_max_incomplete_event_size
        self.conn = (
            StrictConnection(h11.SERVER) if size is None else StrictConnection(h11.SERVER, size)
        )
        self.head_timeout_s = head_timeout_s
        self.keep_alive_s = keep_alive_s
        self.max_connections = max_connections
        self.clock = clock or Clock()
        self.idle_since: int | None = None  # order in which it began to wait for a head
        self._head_timer: Timer | None = None

    # uvicorn answers 503 to a request while the open connections reach this limit.
    # Health checks are exempt: they are answered on the event loop at once, and a
    # supervisor must see a busy server as alive, not restart it.
    @property  # type: ignore[override]
    def limit_concurrency(self) -> int | None:
        path = str((getattr(self, "scope", None) or {}).get("path", ""))
        return None if path.startswith(HEALTH_PREFIX) else self._limit_concurrency

    @limit_concurrency.setter
    def limit_concurrency(self, value: int | None) -> None:
        self._limit_concurrency = value

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm_head_timer(self.head_timeout_s)
        if len(self.connections) > self.max_connections:
            self._close_the_longest_idle()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_request():
            self._disarm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn's own keep-alive timer restarts on every byte: ours replaces it.
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        if not self.transport.is_closing() and not self._in_request():
            self._arm_head_timer(self.keep_alive_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """A request head refused by StrictConnection or that h11 cannot parse: JSON like
        every other error (uvicorn answers plain text), then the connection is closed."""
        status, message = getattr(self.conn, "refusal", None) or (400, msg)
        body = json.dumps({"error": message}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"connection", b"close"),
            (b"content-length", str(len(body)).encode()),
        ]
        reason = http.HTTPStatus(status).phrase.encode()
        try:
            for event in (
                h11.Response(status_code=status, headers=headers, reason=reason),
                h11.Data(data=body),
                h11.EndOfMessage(),
            ):
                self.transport.write(self.conn.send(event))
        except h11.LocalProtocolError:
            pass  # a response had already started: nothing valid can be sent
        self.transport.close()

    def _close_the_longest_idle(self) -> None:
        """Make room at the cap: close the other connection that has waited longest for
        a request head, so idle sockets never lock out a client with a request to send.
        (With every other one busy, this one stays: its request gets 503, or an answer
        if it is a health check.)"""
        idle = [
            c
            for c in self.connections
            if c is not self and isinstance(c, TimedH11Protocol) and c.idle_since is not None
        ]
        if idle:
            min(idle, key=lambda c: c.idle_since or 0).close_idle()

    def close_idle(self) -> None:
        """Close this connection now: it has no request in flight."""
        self._disarm_head_timer()
        self.connections.discard(self)  # its slot is free from now on
        self.transport.close()

    def _in_request(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _arm_head_timer(self, seconds: float) -> None:
        self._disarm_head_timer()
        self.idle_since = next(_idle_order)
        self._head_timer = self.clock.call_later(seconds, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        self.idle_since = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_request() and not self.transport.is_closing():
            self.close_idle()


class BudgetEdgeServer(uvicorn.Server):
    """uvicorn's server, closing the admission queue first when it begins to stop: the
    requests not yet running are served for DRAIN_S more seconds, then answered 503,
    instead of waiting out the grace period (17 of them once got a plain-text 500
    after 57 s).

    It also handles the signals that used to kill it at once, losing every request in
    flight: SIGHUP calls `on_sighup` (the serve command reloads the artifact; without
    one it is ignored), SIGUSR1 and SIGUSR2 are ignored. Each is logged.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        admission: Admission | None,
        on_sighup: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self.admission = admission
        self.on_sighup = on_sighup

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # The loop runs these handlers as callbacks between its other work, never in
        # the middle of it. Only the main thread can own signals.
        if threading.current_thread() is threading.main_thread():
            loop = asyncio.get_running_loop()
            for sig in CAUGHT_SIGNALS:
                loop.add_signal_handler(sig, self._signalled, sig)
            logger.info(
                "SIGHUP %s; SIGUSR1 and SIGUSR2 are ignored; SIGTERM stops",
                "reloads the artifact" if self.on_sighup else "is ignored",
            )

    def _signalled(self, sig: signal.Signals) -> None:
        if sig == signal.SIGHUP and self.on_sighup is not None:
            self.on_sighup()
            return
        logger.warning("%s ignored: send SIGHUP to reload the artifact, SIGTERM to stop", sig.name)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.admission is not None:
            self.admission.close()
        await super().shutdown(sockets)


def make_server(
    app: Any,
    log_level: str = "info",
    max_connections: int = MAX_CONNECTIONS,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    admission: Admission | None = None,
    head_timeout_s: float = HEAD_TIMEOUT_S,
    keep_alive_s: float = KEEP_ALIVE_S,
    clock: Clock | None = None,
    on_sighup: Callable[[], None] | None = None,
) -> uvicorn.Server:
    """A uvicorn server for `app`: no lifespan events, bounded graceful shutdown that
    first answers queued requests, at most `max_connections` connections (idle ones
    closed first, then 503 but for health checks), limits on the time to send a request
    head and on idle keep-alive time. The clock defaults to the admission's. SIGHUP
    calls `on_sighup` (a reload), SIGUSR1/2 are ignored (BudgetEdgeServer)."""
    clock = clock or (admission.clock if admission is not None else Clock())
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_level=log_level,
        timeout_graceful_shutdown=GRACEFUL_TIMEOUT_S,
        server_header=False,
        # uvicorn counts the connection asking among the open ones, and refuses at the
        # limit: one more, so that max_connections are served at once.
        limit_concurrency=max_connections + 1,
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
        # Always h11 (never httptools, even when installed): StrictConnection's checks
        # of framing and version live in its h11 connection.
        http=functools.partial(
            TimedH11Protocol,  # type: ignore[arg-type]
            head_timeout_s=head_timeout_s,
            keep_alive_s=keep_alive_s,
            max_connections=max_connections,
            clock=clock,
        ),
    )
    if tls_cert is not None:
        try:
            config.load()  # reads the certificate and key now: a bad file is one line
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--tls-cert/--tls-key: cannot use them ({exc})") from exc
    return BudgetEdgeServer(config, admission, on_sighup)


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
    # The loop resets the signals it caught (BudgetEdgeServer) to their defaults when it
    # closes; what was there before (the serve command ignores them) comes back after.
    others = {sig: signal.getsignal(sig) for sig in CAUGHT_SIGNALS} if main else {}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in others.items():
            signal.signal(sig, handler)
        if main:
            signal.signal(signal.SIGTERM, previous)
        sock.close()  # uvicorn closes it on a clean shutdown, but not on every failure
        if unix_path:
            with contextlib.suppress(OSError):
                os.unlink(unix_path)


def _stopped(signum: int, frame: Any) -> None:
    """SIGTERM after the server has already shut down: nothing left to do."""
