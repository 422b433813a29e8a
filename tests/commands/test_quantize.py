"""`budget-edge quantize` and `bench --precision`: a whole run on a tiny artifact calibrated
on an image folder, and one-line errors with exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from runtime.conftest import make_net, write_artifact  # the torch-free tiny artifact

from budget_edge import cli as cli_module
from commands.test_bench import _fail  # run through cli.main: one line, exit 2

QUICK = ["--iterations", "3", "--warmup", "1", "--eval-images", "6", "--threads", "1"]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("quantize-artifact")
    write_artifact(make_net("resnet"), path, switch=True)
    return path


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ROOT/<class>/*.png, 8x8 RGB, five classes: the layout `folder:PATH` reads."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c in range(5):
        (root / f"class{c}").mkdir()
        for i in range(6):
            pixels = rng.integers(0, 256, (8, 8, 3), np.uint8)
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")
    return root


def test_quantize_then_bench_both_precisions(
    artifact: Path, image_folder: Path, tmp_path: Path
) -> None:
    art = tmp_path / "art"
    shutil.copytree(artifact, art)
    result = CliRunner().invoke(
        cli_module.cli,
        [
            "quantize",
            str(art),
            "--precision",
            "int8",
            "--calib-data",
            f"folder:{image_folder}",
            "--calib-images",
            "20",
            "--budgets",
            "0.5,1.0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "added int8 graphs" in result.output
    assert "smaller than fp32" in result.output
    recipe = json.loads((art / "manifest.json").read_text())["precisions"]["int8"]["recipe"]
    assert recipe["calibration"]["data"].startswith(f"folder:{image_folder} training split, 20")
    assert recipe["calibration"]["passes"] == ["all kept", "agent c=0.5", "agent c=1"]

    out = tmp_path / "b.json"
    result = CliRunner().invoke(
        cli_module.cli,
        [
            "bench",
            str(art),
            "--budgets",
            "0.5",
            "--batch",
            "1",
            "--precision",
            "fp32,int8",
            *QUICK,
            "--json",
            str(out),
            "--md",
            str(tmp_path / "b.md"),
            "--plot",
            str(tmp_path / "b.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [(r["label"], r["precision"]) for r in data["rows"]] == [
        ("static", "fp32"),
        ("policy", "fp32"),
        ("c=0.5", "fp32"),
        ("int8 static", "int8"),
        ("int8 policy", "int8"),
        ("int8 c=0.5", "int8"),
    ]
    assert data["environment"]["precisions"] == ["fp32", "int8"]
    md = (tmp_path / "b.md").read_text()
    # "x static" divides by the static graph of the same precision
    rows = {r["label"]: r for r in data["rows"]}
    ratio = rows["int8 c=0.5"]["latency"]["median"] / rows["int8 static"]["latency"]["median"]
    line = next(li for li in md.splitlines() if li.startswith("| int8 c=0.5 | 1 |"))
    assert line.split(" | ")[8] == f"{ratio:.2f}"


def test_int8_without_calibration_data(artifact: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _fail(["quantize", str(artifact), "--precision", "int8"], capsys)
    assert err == (
        "error: int8 needs calibration images: pass --calib-data with the "
        "training dataset, e.g. --calib-data fashion-mnist"
    )


def test_a_calibration_count_no_one_needs_is_refused_before_work(artifact: Path) -> None:
    result = CliRunner().invoke(
        cli_module.cli,
        [
            "quantize",
            str(artifact),
            "--precision",
            "int8",
            "--calib-data",
            "fashion-mnist",
            "--calib-images",
            str(10**9),
        ],
    )
    assert result.exit_code == 2
    assert "Invalid value for '--calib-images'" in result.output
    assert "1<=x<=50000" in result.output


def test_quantize_a_missing_artifact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _fail(["quantize", str(tmp_path / "nope"), "--precision", "fp16"], capsys)
    assert "does not exist" in err


def test_calibration_images_of_another_size(
    artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    (tmp_path / "imgs" / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "imgs" / "a" / "0.png")
    art = tmp_path / "art"
    shutil.copytree(artifact, art)
    err = _fail(
        [
            "quantize",
            str(art),
            "--precision",
            "int8",
            "--calib-data",
            f"folder:{tmp_path / 'imgs'}",
        ],
        capsys,
    )
    assert "(C, H, W) = (3, 16, 16) but the model takes (3, 8, 8)" in err
    assert list((art / "quantized").iterdir()) == []


def test_bench_a_precision_the_artifact_lacks(
    artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _fail(["bench", str(artifact), "--precision", "fp32,int8", *QUICK], capsys)
    assert "no int8 graphs" in err
    assert "budget-edge quantize" in err


def test_bench_an_unknown_precision(artifact: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _fail(["bench", str(artifact), "--precision", "fp32,int4"], capsys)
    assert err.startswith("error: --precision 'fp32,int4'")


def test_quantizing_a_signed_artifact_says_to_sign_again_or_signs(
    artifact: Path, image_folder: Path, tmp_path: Path
) -> None:
    pytest.importorskip("cryptography")
    from runtime.test_signing import _keys

    from budget_edge.errors import ManifestError
    from budget_edge.runtime import BudgetRuntime
    from budget_edge.runtime.signing import sign_artifact

    key, pub = _keys(tmp_path, "k")
    quantize = ["--precision", "fp16", "--calib-data", f"folder:{image_folder}"]
    stale, resigned = tmp_path / "stale", tmp_path / "resigned"
    for art in (stale, resigned):
        shutil.copytree(artifact, art)
        sign_artifact(art, key)
    runner = CliRunner()
    done = runner.invoke(cli_module.cli, ["quantize", str(stale), *quantize])
    assert done.exit_code == 0, done.output
    assert "the signature no longer holds: sign it again" in done.stderr
    with pytest.raises(ManifestError, match="sign it again"):
        BudgetRuntime.load(stale, trusted_keys=[pub])
    done = runner.invoke(cli_module.cli, ["quantize", str(resigned), *quantize, "--sign", str(key)])
    assert done.exit_code == 0, done.output
    assert f"signed {resigned} again" in done.stdout
    assert "warning" not in done.stderr
    BudgetRuntime.load(resigned, trusted_keys=[pub], precision="fp16").close()
