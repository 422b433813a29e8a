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
import json
import os
import signal
import socket
import stat
import threading
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from budget_edge.errors import ConfigError
from budget_edge.serve.admission import Admission

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


# Connections and requests at once: beyond it uvicorn answers 503 at once, instead
# of sockets piling up until the process runs out of file descriptors (300 idle
# connections under `ulimit -n 256` once made every good request time out).
MAX_CONCURRENCY = 128
KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed after this
# A connection must send a whole request head within this many seconds of opening (or
# of its last response), else it is closed: uvicorn has no such limit, and slow-header
# or idle sockets would hold connection slots for ever.
HEAD_TIMEOUT_S = 10.0


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
            self.refusal = (exc.error_status_hint, f"{exc} (malformed HTTP: check the request "
                                                   "line and headers, Content-Length in "
                                                   "particular)")
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
        return 400, ("the request has both Content-Length and Transfer-Encoding, which a "
                     "proxy and this server could frame differently: send one of them")
    if b"transfer-encoding" in names and request.http_version == b"1.0":
        return 400, ("Transfer-Encoding is not part of HTTP/1.0: send Content-Length, or "
                     "send the request as HTTP/1.1")
    return None


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head.

    uvicorn's keep-alive timer restarts on every byte, so a client trickling a header
    one byte at a time, or connecting and sending nothing, kept its socket open
    indefinitely. This timer starts when the connection opens or a response ends,
    and only a complete request head stops it.
    """

    def __init__(self, *args: Any, head_timeout_s: float = HEAD_TIMEOUT_S,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        size = self.config.h11_max_incomplete_event_size
        self.conn = StrictConnection(h11.SERVER) if size is None \
            else StrictConnection(h11.SERVER, size)
        self.head_timeout_s = head_timeout_s
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_request():
            self._disarm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self._in_request():
            self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """A request head refused by StrictConnection or that h11 cannot parse: JSON like
        every other error (uvicorn answers plain text), then the connection is closed."""
        status, message = getattr(self.conn, "refusal", None) or (400, msg)
        body = json.dumps({"error": message}).encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close"),
                   (b"content-length", str(len(body)).encode())]
        reason = http.HTTPStatus(status).phrase.encode()
        try:
            for event in (h11.Response(status_code=status, headers=headers, reason=reason),
                          h11.Data(data=body), h11.EndOfMessage()):
                self.transport.write(self.conn.send(event))
        except h11.LocalProtocolError:
            pass  # a response had already started: nothing valid can be sent
        self.transport.close()

    def _in_request(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_request() and not self.transport.is_closing():
            self.transport.close()


class BudgetEdgeServer(uvicorn.Server):
    """uvicorn's server, closing the admission queue first when it begins to stop: the
    requests not yet running are served for DRAIN_S more seconds, then answered 503,
    instead of waiting out the grace period (17 of them once got a plain-text 500
    after 57 s)."""

    def __init__(self, config: uvicorn.Config, admission: Admission | None) -> None:
        super().__init__(config)
        self.admission = admission

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.admission is not None:
            self.admission.close()
        await super().shutdown(sockets)


def make_server(app: Any, log_level: str = "info",
                max_concurrency: int = MAX_CONCURRENCY, tls_cert: str | None = None,
                tls_key: str | None = None, admission: Admission | None = None,
                head_timeout_s: float = HEAD_TIMEOUT_S) -> uvicorn.Server:
    """A uvicorn server for `app`: no lifespan events, bounded graceful shutdown that
    first answers queued requests, a cap on concurrent connections (503 beyond it),
    on idle keep-alive time and on the time to send a request head."""
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
        http=functools.partial(TimedH11Protocol,  # type: ignore[arg-type]
                               head_timeout_s=head_timeout_s),
    )
    if tls_cert is not None:
        try:
            config.load()  # reads the certificate and key now: a bad file is one line
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--tls-cert/--tls-key: cannot use them ({exc})") from exc
    return BudgetEdgeServer(config, admission)


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
