"""`budget-edge evaluate`: outputs on a tiny model, and user errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from budgetnet_helpers import write_backbone_checkpoint, write_tiny_fashion_mnist

from budget_edge.cli import main


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(["evaluate", *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_fashion_mnist(tmp_path_factory.mktemp("eval") / "data", 40, 20)


def test_writes_json_csv_markdown_and_plots(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = write_backbone_checkpoint(tmp_path / "bn.pt", with_agent=True)
    out = tmp_path / "eval"
    args = [
        str(checkpoint),
        "--data-dir",
        str(data),
        "--budgets",
        "0.25,0.5,1",
        "--out",
        str(out),
        "--val-size",
        "20",
        "--latency-images",
        "2",
    ]
    code, stdout, err = cli(args, capsys)
    assert code == 0, err
    assert "| 0.25 |" in stdout
    assert "| 1.00 |" in stdout
    result = json.loads((out / "sweep.json").read_text())
    assert [row["budget"] for row in result["rows"]] == [0.25, 0.5, 1.0]
    assert result["dataset"] == "fashion-mnist"
    assert result["num_images"] == 20
    assert result["validation"] == "last 20 training images"
    assert "cpu_count" in result["machine"]
    for name in (
        "sweep.csv",
        "sweep.md",
        "accuracy_vs_flops.png",
        "usage_vs_budget.png",
        "unique_policies_vs_budget.png",
    ):
        assert (out / name).stat().st_size > 0


def test_rank_mode_is_recorded(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = write_backbone_checkpoint(tmp_path / "bn.pt", with_agent=True)
    out = tmp_path / "eval"
    code, stdout, err = cli(
        [
            str(checkpoint),
            "--data-dir",
            str(data),
            "--budgets",
            "0.5",
            "--out",
            str(out),
            "--val-size",
            "20",
            "--latency-images",
            "0",
            "--mode",
            "rank",
        ],
        capsys,
    )
    assert code == 0, err
    result = json.loads((out / "sweep.json").read_text())
    assert result["mask_mode"] == "rank"
    assert "masks: rank" in stdout
    k = result["num_components"]
    assert abs(result["rows"][0]["usage_mean"] - round(0.5 * k - 1e-9) / k) < 1e-9


def test_a_validation_split_ranks_the_static_masks_or_its_last_n(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from budget_edge.data.registry import load_arrays
    from budget_edge.data.split import split_validation
    from budget_edge.models.checkpoint import load_checkpoint, save_checkpoint

    plain = load_checkpoint(write_backbone_checkpoint(tmp_path / "bn.pt", with_agent=True))
    _, _, split = split_validation(load_arrays("fashion-mnist", data, "train"), 24)
    checkpoint = tmp_path / "split.pt"
    meta = {**plain.meta, "validation_split": split.as_meta()}
    save_checkpoint(checkpoint, plain.backbone, plain.agent, meta=meta)
    quick = ["--data-dir", str(data), "--budgets", "0.5", "--latency-images", "0"]
    for val_size, used in ([], 24), (["--val-size", "10"], 10), (["--val-size", "30"], 24):
        out = tmp_path / f"eval{used}"
        code, _, err = cli([str(checkpoint), *quick, *val_size, "--out", str(out)], capsys)
        assert code == 0, err
        result = json.loads((out / "sweep.json").read_text())
        assert result["validation"] == f"last {used} training images"


def test_checkpoint_without_agent(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = write_backbone_checkpoint(tmp_path / "backbone.pt")
    code, _, err = cli(
        [str(checkpoint), "--data-dir", str(data), "--out", str(tmp_path / "e")], capsys
    )
    assert code == 2
    assert "without an agent" in err
    assert "budget-edge train" in err


def test_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli([str(tmp_path / "nope.pt"), "--out", str(tmp_path / "e")], capsys)
    assert code == 2
    assert "not found" in err


@pytest.mark.parametrize("budgets", ["0.1:1.0", "a,b", "0.5:0.1:0.1", "2"])
def test_bad_budgets(budgets: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(
        [str(tmp_path / "nope.pt"), "--budgets", budgets, "--out", str(tmp_path)], capsys
    )
    assert code == 2
    assert "budgets" in err


def test_zoo_models_are_points_of_the_sweep(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = write_backbone_checkpoint(tmp_path / "bn.pt", with_agent=True)
    small = write_backbone_checkpoint(tmp_path / "small.pt", seed=3)
    out = tmp_path / "eval"
    code, stdout, err = cli(
        [
            str(checkpoint),
            "--data-dir",
            str(data),
            "--budgets",
            "0.5",
            "--out",
            str(out),
            "--val-size",
            "20",
            "--latency-images",
            "0",
            "--zoo",
            str(small),
        ],
        capsys,
    )
    assert code == 0, err
    result = json.loads((out / "sweep.json").read_text())
    (zoo,) = result["zoo"]
    assert zoo["name"] == str(small)
    assert 0.0 <= zoo["accuracy"] <= 1.0
    assert zoo["flops"] > 0
    assert "Zoo (trained on their own)" in stdout
    row = result["rows"][0]
    assert 0.0 <= row["best_static_accuracy"] <= 1.0
    assert row["mask_class_mi"] >= 0.0
    code, _, err = cli(
        [
            str(checkpoint),
            "--data-dir",
            str(data),
            "--out",
            str(out),
            "--zoo",
            str(tmp_path / "none.pt"),
        ],
        capsys,
    )
    assert code == 2
    assert err.startswith("error: ")


def test_out_and_val_size_are_checked_before_the_sweep(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = write_backbone_checkpoint(tmp_path / "bn.pt", with_agent=True)
    (tmp_path / "taken").write_text("a file")
    code, _, err = cli(
        [str(checkpoint), "--data-dir", str(data), "--out", str(tmp_path / "taken")], capsys
    )
    assert code == 2
    assert err == f"error: --out {tmp_path / 'taken'} is a file: give a folder for the reports\n"
    code, _, err = cli(
        [
            str(checkpoint),
            "--data-dir",
            str(data),
            "--out",
            str(tmp_path / "o"),
            "--val-size",
            str(10**9),
        ],
        capsys,
    )
    assert code == 2
    assert "--val-size 1000000000 is not smaller than the 40 training" in err
    assert err.count("\n") == 1
