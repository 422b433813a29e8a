"""The command group: help text, lazy imports, and one-line user errors."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from budget_edge import cli as cli_module
from budget_edge.errors import ConfigError

# The commands the README and docs send users to: each must be listed and must load.
DOCUMENTED = [
    "pretrain",
    "train",
    "allocate",
    "evaluate",
    "export",
    "quantize",
    "sign",
    "build-engines",
    "bench",
    "serve",
    "demo",
]


def test_help_lists_every_documented_command_and_each_loads() -> None:
    result = CliRunner().invoke(cli_module.cli, ["--help"])
    assert result.exit_code == 0
    lines = result.output.split("Commands:")[1].splitlines()
    listed = {line.split()[0] for line in lines if line[:2] == "  " and line[2:3] != " "}
    assert listed == set(DOCUMENTED)
    for name in DOCUMENTED:
        command_help = CliRunner().invoke(cli_module.cli, [name, "--help"])
        assert command_help.exit_code == 0, command_help.output
        assert command_help.output.startswith(f"Usage: cli {name} [OPTIONS]")


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


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (
            PermissionError(13, "Permission denied", "/art/graphs/block0.onnx"),
            "error: cannot use /art/graphs/block0.onnx: permission denied",
        ),
        (
            OSError(28, "No space left on device", "/art/manifest.json"),
            "error: cannot use /art/manifest.json: the disk is full",
        ),
        (
            OSError(30, "Read-only file system", "/art/manifest.sig"),
            "error: cannot use /art/manifest.sig: the file system is read-only",
        ),
    ],
)
def test_a_file_the_system_refused_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path, error, words
) -> None:
    """Any command: an OSError no command turned into its own message (a read-only artifact
    given to sign, a graph without read permission) still ends in one line, exit 2."""
    import budget_edge.runtime.signing as signing

    def refused(*args: object) -> None:
        raise error

    monkeypatch.setattr(signing, "sign_artifact", refused)
    (tmp_path / "key.pem").write_text("k")
    with pytest.raises(SystemExit) as info:
        cli_module.main(["sign", str(tmp_path), "--key", str(tmp_path / "key.pem")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(words)
    assert err.count("\n") == 1
