"""`budget-edge build-engines` errors from the command line (the full path, export
then build-engines without TensorRT, runs in test_export.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from budget_edge.cli import main


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_build_engines_errors_are_one_line(tmp_path: Path, capsys) -> None:
    code, _, err = cli(["build-engines", str(tmp_path / "nothing")], capsys)
    assert code == 2
    assert "does not exist" in err
    assert err.count("\n") == 1
    code, _, err = cli(["build-engines", str(tmp_path), "--precision", "int4"], capsys)
    assert code == 2
    assert "int4" in err
