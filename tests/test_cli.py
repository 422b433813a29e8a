"""The command group: help text, lazy imports, and one-line user errors."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from budget_edge import cli as cli_module
from budget_edge.errors import ConfigError


def test_help_lists_every_subcommand() -> None:
    result = CliRunner().invoke(cli_module.cli, ["--help"])
    assert result.exit_code == 0
    for name in cli_module.COMMANDS:
        assert name in result.output


def test_help_works_without_torch() -> None:
    # A device installs only the runtime: the group's help must not import torch.
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from budget_edge.cli import main\n"
        "main(['--help'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "bench" in proc.stdout


def test_every_subcommand_has_help_with_an_example() -> None:
    runner = CliRunner()
    for name in cli_module.COMMANDS:
        result = runner.invoke(cli_module.cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Example" in result.output, name


def _install_failing_command(monkeypatch: pytest.MonkeyPatch, exc: Exception) -> None:
    @click.command()
    def boom() -> None:
        raise exc

    class FakeModule:
        command = boom

    monkeypatch.setitem(cli_module.COMMANDS, "boom", ("boom", "fails on purpose"))
    monkeypatch.setitem(sys.modules, "budget_edge.commands.boom", FakeModule)


def test_user_error_prints_one_line_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _install_failing_command(monkeypatch, ConfigError("unknown backbone 'resnet7'"))
    with pytest.raises(SystemExit) as info:
        cli_module.main(["boom"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: unknown backbone 'resnet7'"


def test_debug_shows_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    _install_failing_command(monkeypatch, ConfigError("bad"))
    with pytest.raises(ConfigError):
        cli_module.main(["--debug", "boom"])


def test_unknown_subcommand_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli_module.main(["no-such-command"])
    assert info.value.code == 2
