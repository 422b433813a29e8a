"""`budget-edge bench`: a whole run on a tiny artifact, and one-line errors with exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from runtime.conftest import make_net, write_artifact  # the torch-free tiny artifact

from budget_edge import cli as cli_module

QUICK = ["--iterations", "3", "--warmup", "1", "--eval-images", "6", "--threads", "1"]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench-artifact")
    write_artifact(make_net("resnet"), path)
    return path


def test_bench_writes_every_report(artifact: Path, tmp_path: Path) -> None:
    out = {ext: tmp_path / f"bench.{ext}" for ext in ("json", "csv", "md", "png")}
    args = [
        "bench",
        str(artifact),
        "--budgets",
        "0.5:1.0:0.5",
        "--batch",
        "1,2",
        *QUICK,
        "--json",
        str(out["json"]),
        "--csv",
        str(out["csv"]),
        "--md",
        str(out["md"]),
        "--plot",
        str(out["png"]),
    ]
    result = CliRunner().invoke(cli_module.cli, args)
    assert result.exit_code == 0, result.output
    assert "static" in result.output
    assert "c=0.5" in result.output
    data = json.loads(out["json"].read_text())
    assert [(r["kind"], r["batch"]) for r in data["rows"]] == [
        ("static", 1),
        ("policy", 1),
        ("budget", 1),
        ("budget", 1),
        ("static", 2),
        ("policy", 2),
        ("budget", 2),
        ("budget", 2),
    ]
    assert data["settings"]["iterations"] == 3
    assert data["environment"]["threads"] == 1
    assert data["settings"]["command"].startswith(
        f"budget-edge bench {artifact} --budgets 0.5:1.0:0.5 --batch 1,2 --data random"
    )
    assert len(out["csv"].read_text().splitlines()) == 1 + 8
    assert "| c=1 | 2 |" in out["md"].read_text()
    assert "- command: `budget-edge bench " in out["md"].read_text()
    assert out["png"].read_bytes()[:4] == b"\x89PNG"


def test_bench_also_mode_adds_a_method_to_the_same_run(artifact: Path, tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    args = ["bench", str(artifact), "--budgets", "0.5", "--batch", "1", "--also-mode", "rank"]
    result = CliRunner().invoke(cli_module.cli, [*args, *QUICK, "--json", str(path)])
    assert result.exit_code == 0, result.output
    assert "rank c=0.5" in result.output
    assert "mode greedy (and rank)" in result.output  # the table's title
    rows = json.loads(path.read_text())["rows"]
    assert [(r["kind"], r["name"]) for r in rows if r["budget"] == 0.5] == [
        ("budget", None),
        ("mode", "rank"),
    ]


def test_bench_with_a_capped_budget_and_sampled_masks(artifact: Path, tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    args = [
        "bench",
        str(artifact),
        "--budgets",
        "0.34",
        "--batch",
        "1",
        "--cap",
        "components",
        "--mode",
        "sample",
        "--seed",
        "3",
        *QUICK,
        "--json",
        str(path),
    ]
    result = CliRunner().invoke(cli_module.cli, args)
    assert result.exit_code == 0, result.output
    data = json.loads(path.read_text())
    assert data["settings"]["cap"] == "components"
    assert data["settings"]["mode"] == "sample"
    budget_row = next(r for r in data["rows"] if r["kind"] == "budget")
    assert budget_row["usage"] <= 0.34


def _fail(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run through cli.main (which turns project errors into exit 2); return stderr."""
    with pytest.raises(SystemExit) as info:
        cli_module.main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_missing_artifact_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _fail(["bench", str(tmp_path / "nope")], capsys)
    assert err.startswith("error: artifact directory")
    assert "does not exist" in err


@pytest.mark.parametrize(
    "option, value, match",
    [
        ("--budgets", "0.5,2", "outside [0, 1]"),
        ("--budgets", "1:0:0.1", "not understood"),
        ("--batch", "1,x", "not understood"),
        ("--batch", "0", "at least 1"),
        ("--iterations", "0", "--iterations"),
        ("--batch", "10000000", "above 4096"),
        ("--budgets", "0:1:1e-9", "more than 1000"),
    ],
)
def test_bad_options_fail_before_loading(
    artifact: Path, option: str, value: str, match: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _fail(["bench", str(artifact), option, value], capsys)
    assert err.startswith(f"error: Invalid value for '{option}'")
    assert match in err
    assert err.endswith("(see budget-edge bench --help)")


def test_missing_data(artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _fail(
        ["bench", str(artifact), "--data", "cifar10", "--data-dir", str(tmp_path / "none"), *QUICK],
        capsys,
    )
    assert err.startswith("error: ")
    assert "cifar" in err.lower()


def test_report_folder_missing_fails_before_timing(
    artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _fail(["bench", str(artifact), "--json", str(tmp_path / "no" / "b.json")], capsys)
    assert "does not exist" in err


def test_a_report_path_that_is_no_writable_file_fails_before_timing(
    artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _fail(["bench", str(artifact), "--csv", "/proc/version"], capsys)
    assert err.startswith("error: cannot write /proc/version: /proc takes no new files")


def test_a_negative_seed_is_a_usage_error(artifact: Path) -> None:
    result = CliRunner().invoke(cli_module.cli, ["bench", str(artifact), "--seed", "-1"])
    assert result.exit_code == 2
    assert "--seed" in result.output


def test_unknown_cap_is_a_usage_error(artifact: Path) -> None:
    result = CliRunner().invoke(cli_module.cli, ["bench", str(artifact), "--cap", "watts"])
    assert result.exit_code == 2
    assert "'watts' is not one of" in result.output


def test_bench_runs_without_torch_or_matplotlib(artifact: Path, tmp_path: Path) -> None:
    # A device installs only the runtime: bench must not import torch (nor matplotlib
    # unless --plot asks for it).
    path = tmp_path / "b.json"
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['matplotlib'] = None\n"
        "from budget_edge.cli import main\n"
        f"main(['bench', {str(artifact)!r}, '--budgets', '0.5', '--batch', '1', "
        f"'--iterations', '2', '--warmup', '0', '--eval-images', '2', '--json', {str(path)!r}])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(path.read_text())["rows"]


def test_zoo_and_static_search_errors(
    artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _fail(["bench", str(artifact), "--zoo", str(tmp_path / "none"), *QUICK], capsys)
    assert err.startswith("error: --zoo:")
    assert "not an artifact directory" in err
    err = _fail(["bench", str(artifact), "--static-search-images", "100", *QUICK], capsys)
    assert err.startswith("error: the static-mask search needs labelled data, not --data random")
    # the older name parses as the new one, and the refusal comes before loading
    err = _fail(["bench", str(artifact) + "-missing", "--static-search", "100"], capsys)
    assert "--data fashion-mnist" in err
    assert "does not exist" not in err


def test_bench_with_a_zoo_row(artifact: Path, tmp_path: Path) -> None:
    zoo = tmp_path / "zoo"
    write_artifact(make_net("resnet", seed=4), zoo)
    path = tmp_path / "b.json"
    args = [
        "bench",
        str(artifact),
        "--budgets",
        "0.5",
        "--batch",
        "1",
        "--zoo",
        str(zoo),
        *QUICK,
        "--json",
        str(path),
    ]
    result = CliRunner().invoke(cli_module.cli, args)
    assert result.exit_code == 0, result.output
    rows = json.loads(path.read_text())["rows"]
    assert [r["label"] for r in rows] == ["static", "policy", "c=0.5", "zoo tiny-resnet"]


def test_in_a_log_the_table_is_whole_and_its_columns_explained(
    artifact: Path, tmp_path: Path
) -> None:
    """Piped to a file there is no terminal width: no cell may be cut to '…', however
    wide the table (two zoo models of one backbone are labelled by their paths)."""
    zoo = [tmp_path / ("a-long-folder-name-for-the-first-zoo-model" * 2), tmp_path / "z2"]
    for path in zoo:
        write_artifact(make_net("resnet", seed=4), path)
    args = ["bench", str(artifact), "--budgets", "0.5", "--batch", "1", *QUICK]
    result = CliRunner().invoke(cli_module.cli, [*args, "--zoo", ",".join(map(str, zoo))])
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    assert f"zoo {zoo[1]}" in result.output  # the second of the same name: its whole path
    assert max(len(line) for line in result.output.splitlines()) > 160
    legend = next(line for line in result.output.splitlines() if "x static:" in line)
    assert "paired:" in legend
    assert "95% CI:" in legend
    assert "masks:" in legend
