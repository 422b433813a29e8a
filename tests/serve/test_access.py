"""Access control: the bearer token, the public-host guard, TLS settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from budget_edge.errors import ConfigError
from budget_edge.serve.access import check_exposure, is_loopback, read_token

from .conftest import load_model, request

TOKEN = "s3cret-token-0123456789"


def test_token_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    assert read_token(str(tmp_path / "token")) == TOKEN
    monkeypatch.delenv("BUDGET_EDGE_TOKEN", raising=False)
    assert read_token(None) is None
    monkeypatch.setenv("BUDGET_EDGE_TOKEN", TOKEN)
    assert read_token(None) == TOKEN
    (tmp_path / "short").write_text("abc")
    with pytest.raises(ConfigError, match="at least 16 characters"):
        read_token(str(tmp_path / "short"))
    with pytest.raises(ConfigError, match="--token-file: cannot read .*missing: no such file"):
        read_token(str(tmp_path / "missing"))


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("first-half-of-it\nsecond-half-of-it\n", "'\\n'"),
        ("a token with spaces inside it", "' '"),
        ("t\u00f6ken-with-an-umlaut-0123", "'\u00f6'"),
        ("tab\tseparated-token-0123456", "'\\t'"),
    ],
)
def test_a_token_no_header_can_carry_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, shown: str
) -> None:
    """A newline inside the token was accepted, and then every request got 401."""
    (tmp_path / "token").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="Authorization header cannot carry") as info:
        read_token(str(tmp_path / "token"))
    assert shown in str(info.value)
    monkeypatch.setenv("BUDGET_EDGE_TOKEN", text)
    with pytest.raises(ConfigError, match="BUDGET_EDGE_TOKEN: the access token holds"):
        read_token(None)


def test_a_token_file_is_read_bounded_and_only_if_regular(tmp_path: Path) -> None:
    (tmp_path / "big").write_text("x" * 5000)
    with pytest.raises(ConfigError, match="more than the 4.0 KiB"):
        read_token(str(tmp_path / "big"))
    with pytest.raises(ConfigError, match="not a regular file"):
        read_token("/dev/zero")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        read_token(str(fifo))  # refused at once, not blocked waiting for a writer
    with pytest.raises(ConfigError, match="is a folder"):
        read_token(str(tmp_path))


@pytest.mark.parametrize(
    "host, loopback",
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("192.168.1.5", False),
        ("jetson.lan", False),
    ],
)
def test_only_loopback_hosts_may_go_without_a_token(host: str, loopback: bool) -> None:
    assert is_loopback(host) == loopback
    check_exposure(host, True, insecure=False)
    check_exposure(host, False, insecure=True)
    if loopback:
        check_exposure(host, False, insecure=False)
    else:
        with pytest.raises(ConfigError, match="serves other machines, and there is no access"):
            check_exposure(host, False, insecure=False)


def test_every_route_but_health_needs_the_token(tiny_artifact: Path) -> None:
    from .conftest import serving

    model = load_model(tiny_artifact)
    with serving(model, token=TOKEN) as url:
        assert request(url, "GET", "/v2/health/live").status == 200
        denied = request(url, "GET", f"/v2/models/{model.name}")
        assert denied.status == 401
        assert b"access token" in denied.body
        wrong = request(
            url,
            "GET",
            f"/v2/models/{model.name}",
            None,
            {"Authorization": "Bearer " + "x" * len(TOKEN)},
        )
        assert wrong.status == 401
        ok = request(
            url, "GET", f"/v2/models/{model.name}", None, {"Authorization": f"Bearer {TOKEN}"}
        )
        assert ok.status == 200
    model.runtime.close()


def test_serve_refuses_a_public_host_without_a_token(
    tiny_artifact: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from budget_edge.cli import main

    monkeypatch.delenv("BUDGET_EDGE_TOKEN", raising=False)
    with pytest.raises(SystemExit) as info:
        main(["serve", str(tiny_artifact), "--host", "0.0.0.0", "--port", "0"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "serves other machines" in err
    assert err.count("\n") == 1


def test_tls_needs_a_usable_certificate_and_key(tmp_path: Path) -> None:
    from budget_edge.serve.server import make_server

    (tmp_path / "cert.pem").write_text("not a certificate")
    (tmp_path / "key.pem").write_text("not a key")
    app: Any = object()
    with pytest.raises(ConfigError, match="--tls-cert/--tls-key: cannot use them"):
        make_server(app, tls_cert=str(tmp_path / "cert.pem"), tls_key=str(tmp_path / "key.pem"))
