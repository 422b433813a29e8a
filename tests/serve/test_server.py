"""Binding sockets (busy ports, Unix socket files, addresses) and what the HTTP layer
refuses before the app sees a request: ambiguous framing, unknown HTTP versions."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from pathlib import Path

import pytest

from budget_edge.errors import ConfigError
from budget_edge.serve.server import address_of, bind_tcp, bind_unix

from .conftest import Served


def test_port_zero_binds_a_free_loopback_port() -> None:
    with bind_tcp("127.0.0.1", 0) as sock:
        host, port = sock.getsockname()
        assert host == "127.0.0.1"
        assert port > 0
        assert address_of(sock) == f"http://127.0.0.1:{port}"


def test_accepted_connections_get_tcp_nodelay_from_asyncio() -> None:
    # Without TCP_NODELAY every answer waited 40 ms for the client's delayed ACK.
    async def accepted_nodelay() -> int:
        loop = asyncio.get_running_loop()
        seen: asyncio.Future[int] = loop.create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sock = transport.get_extra_info("socket")
                seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await loop.create_server(Probe, sock=bind_tcp("127.0.0.1", 0))
        host, port = server.sockets[0].getsockname()[:2]
        _, writer = await asyncio.open_connection(host, port)
        try:
            return await asyncio.wait_for(seen, timeout=10)
        finally:
            writer.close()
            server.close()
            await server.wait_closed()

    assert asyncio.run(accepted_nodelay()) != 0


def test_ipv6_loopback_address_is_bracketed() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        sock = bind_tcp("::1", 0)
    except ConfigError:
        pytest.skip("IPv6 loopback is not configured here")
    with sock:
        assert address_of(sock) == f"http://[::1]:{sock.getsockname()[1]}"


def test_busy_port_is_a_config_error_with_advice() -> None:
    with bind_tcp("127.0.0.1", 0) as first:
        port = first.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}.*--port"):
            bind_tcp("127.0.0.1", port)


def test_address_of_no_local_interface_is_a_config_error() -> None:
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): never a local address; binding sends nothing.
    with pytest.raises(ConfigError, match="check --host"):
        bind_tcp("192.0.2.1", 0)


def test_unix_socket_is_created_and_addressed(tmp_path: Path) -> None:
    path = tmp_path / "a.sock"
    with bind_unix(str(path)) as sock:
        assert path.is_socket()
        assert address_of(sock) == f"unix:{path}"


def test_stale_unix_socket_is_replaced(tmp_path: Path) -> None:
    path = str(tmp_path / "stale.sock")
    old = bind_unix(path)
    old.close()  # the file stays, as after a crash, but nobody listens
    with bind_unix(path) as sock:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(path)  # the new socket listens
        client.close()
        assert sock.getsockname() == path


def test_live_unix_socket_is_not_stolen(tmp_path: Path) -> None:
    path = str(tmp_path / "live.sock")
    with bind_unix(path), pytest.raises(ConfigError, match="another server is listening"):
        bind_unix(path)


def test_unix_socket_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("keep me")
    with pytest.raises(ConfigError, match="is not a socket"):
        bind_unix(str(path))
    assert path.read_text() == "keep me"


def test_unix_socket_in_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="check that its folder exists"):
        bind_unix(str(tmp_path / "missing" / "a.sock"))


def _exchange(url: str, raw: bytes) -> list[tuple[bytes, bytes]]:
    """Send `raw` on a fresh connection; (head, body) of every response the server wrote
    before it closed the connection (the socket timeout only guards against a hang)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    received = b""
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(raw)
        while chunk := sock.recv(65536):
            received += chunk
    responses = []
    while received:
        head, _, rest = received.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length: *([0-9]+)", head)
        assert length is not None, head
        size = int(length.group(1))
        responses.append((head, rest[:size]))
        received = rest[size:]
    return responses


HIDDEN = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"


def test_content_length_with_transfer_encoding_is_refused_and_the_connection_closed(
    served: Served,
) -> None:
    """h11 framed it as chunked and kept the connection: the request hidden in the body
    was answered too (400, then 200), a smuggled request behind a proxy that frames by
    Content-Length."""
    body = b"0\r\n\r\n" + HIDDEN
    raw = (
        f"POST /v2/models/{served.name}/infer HTTP/1.1\r\nHost: x\r\n"
        f"Content-Length: {len(body)}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode() + body
    answers = _exchange(served.url, raw)
    assert len(answers) == 1  # the hidden request is never answered
    head, body = answers[0]
    assert head.startswith(b"HTTP/1.1 400 Bad Request")
    assert b"connection: close" in head.lower()
    assert "both Content-Length and Transfer-Encoding" in json.loads(body)["error"]


@pytest.mark.parametrize(
    ("head", "status", "fragment"),
    [
        (b"GET /v2/health/live HTTP/9.9\r\nHost: x\r\n\r\n", b"505", "HTTP/9.9 is not supported"),
        (b"GET /v2/health/live HTTP/2.0\r\nHost: x\r\n\r\n", b"505", "HTTP/2.0 is not supported"),
        (b"GET /v2/health/live HTTP/0.9\r\n\r\n", b"505", "HTTP/0.9 is not supported"),
        (
            b"POST /v2/health/live HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"400",
            "not part of HTTP/1.0",
        ),
        (
            b"POST /v2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"501",
            "Only Transfer-Encoding: chunked",
        ),
        (
            b"POST /v2 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
            b"400",
            "conflicting Content-Length",
        ),
    ],
)
def test_heads_with_unknown_versions_or_ambiguous_framing_get_a_json_error_and_close(
    served: Served, head: bytes, status: bytes, fragment: str
) -> None:
    answers = _exchange(served.url, head + HIDDEN)
    assert len(answers) == 1
    assert answers[0][0].startswith(b"HTTP/1.1 " + status)
    assert fragment in json.loads(answers[0][1])["error"]


def test_http_1_0_and_pipelined_http_1_1_are_still_served(served: Served) -> None:
    answers = _exchange(served.url, b"GET /v2/health/live HTTP/1.0\r\n\r\n")
    assert [head[:12] for head, _ in answers] == [b"HTTP/1.1 200"]
    two = HIDDEN + HIDDEN.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    answers = _exchange(served.url, two)
    assert [head[:12] for head, _ in answers] == [b"HTTP/1.1 200", b"HTTP/1.1 200"]
