"""Binding sockets: busy ports, Unix socket files (stale, live, not a socket), addresses."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from budget_edge.errors import ConfigError
from budget_edge.serve.server import address_of, bind_tcp, bind_unix


def test_port_zero_binds_a_free_loopback_port() -> None:
    with bind_tcp("127.0.0.1", 0) as sock:
        host, port = sock.getsockname()
        assert host == "127.0.0.1" and port > 0
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
