"""`budget-edge allocate`, then `evaluate --mode allocate`: a whole run on tiny data, and
one-line errors with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from budgetnet_helpers import write_backbone_checkpoint, write_tiny_fashion_mnist

from budget_edge.cli import main
from budget_edge.models.checkpoint import load_checkpoint


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_fashion_mnist(tmp_path_factory.mktemp("allocate") / "data", 60, 20)


QUICK = ["--epochs", "2", "--calib-images", "20", "--batch-size", "16"]


def test_allocate_then_evaluate(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = write_backbone_checkpoint(tmp_path / "bn.pt", with_agent=True)
    out = tmp_path / "allocated.pt"
    code, stdout, err = run(
        ["allocate", str(checkpoint), "--data-dir", str(data), "--out", str(out), *QUICK], capsys
    )
    assert code == 0, err
    assert "epoch 2/2" in stdout
    assert f"wrote {out}" in stdout
    loaded = load_checkpoint(out)
    assert loaded.allocator is not None
    table = loaded.allocator.count_masks  # row k: the agent's top-k mask
    assert table is not None
    assert [sum(row) for row in table] == list(range(len(table)))
    assert loaded.meta["allocate_command"].startswith("budget-edge allocate ")
    assert 0.0 <= loaded.meta["allocator"]["saturation_budget"] <= 1.0
    assert "saturation" not in loaded.meta["allocate_command"]
    code, stdout, err = run(
        [
            "evaluate",
            str(out),
            "--data-dir",
            str(data),
            "--budgets",
            "0.3,0.6",
            "--out",
            str(tmp_path / "eval"),
            "--val-size",
            "20",
            "--latency-images",
            "1",
            "--mode",
            "allocate",
        ],
        capsys,
    )
    assert code == 0, err
    result = json.loads((tmp_path / "eval" / "sweep.json").read_text())
    assert result["mask_mode"] == "allocate"
    # The decision is the allocator alone: the table replaces the agent's features.
    assert result["agent_flops"] == loaded.allocator.flops()
    assert len(result["best_static_accuracy"]) == result["num_components"] + 1
    for row in result["rows"]:
        assert 0.0 <= row["static_front_accuracy"] <= 1.0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--epochs", "0"], "must be >= 1"),
        (["--calib-images", "60"], "leaves none"),
        (["--threads", "0"], "--threads"),
        (["--accuracy-slack", "1.5"], "--accuracy-slack"),
    ],
)
def test_bad_options_fail_in_one_line(
    data: Path, tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = write_backbone_checkpoint(tmp_path / "bn.pt", with_agent=True)
    code, _, err = run(
        [
            "allocate",
            str(checkpoint),
            "--data-dir",
            str(data),
            "--out",
            str(tmp_path / "a.pt"),
            *QUICK,
            *extra,
        ],
        capsys,
    )
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a.pt").exists()


def test_no_saturation_spends_up_to_every_budget(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = write_backbone_checkpoint(tmp_path / "bn.pt", with_agent=True)
    out = tmp_path / "allocated.pt"
    code, _, err = run(
        [
            "allocate",
            str(checkpoint),
            "--data-dir",
            str(data),
            "--out",
            str(out),
            *QUICK,
            "--no-saturation",
        ],
        capsys,
    )
    assert code == 0, err
    meta = load_checkpoint(out).meta
    assert meta["allocator"]["accuracy_slack"] is None
    assert meta["allocator"]["saturation_budget"] == 1.0
    # The recorded command runs again as it was: a flag without a value.
    assert meta["allocate_command"].endswith("--no-saturation --seed 0")


def test_a_backbone_alone_or_a_folder_is_refused(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = write_backbone_checkpoint(tmp_path / "bare.pt")
    code, _, err = run(
        ["allocate", str(bare), "--data-dir", str(data), "--out", str(tmp_path / "a.pt"), *QUICK],
        capsys,
    )
    assert code == 2
    assert "no agent" in err
    code, _, err = run(
        ["allocate", str(bare), "--data-dir", str(data), "--out", str(tmp_path), *QUICK], capsys
    )
    assert code == 2
    assert "is a folder" in err


def test_evaluate_allocate_needs_an_allocator(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = write_backbone_checkpoint(tmp_path / "bn.pt", with_agent=True)
    code, _, err = run(
        [
            "evaluate",
            str(checkpoint),
            "--data-dir",
            str(data),
            "--out",
            str(tmp_path / "eval"),
            "--mode",
            "allocate",
        ],
        capsys,
    )
    assert code == 2
    assert "budget-edge allocate" in err


def test_a_checkpoint_with_a_validation_split_calibrates_on_it(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from budget_edge.data.registry import load_arrays
    from budget_edge.data.split import split_validation
    from budget_edge.models.checkpoint import save_checkpoint

    plain = load_checkpoint(write_backbone_checkpoint(tmp_path / "bn.pt", with_agent=True))
    _, _, split = split_validation(load_arrays("fashion-mnist", data, "train"), 24)
    checkpoint = tmp_path / "split.pt"
    meta = {**plain.meta, "validation_split": split.as_meta()}
    save_checkpoint(checkpoint, plain.backbone, plain.agent, meta=meta)
    out = tmp_path / "allocated.pt"
    quick = ["--epochs", "2", "--batch-size", "16"]
    code, stdout, err = run(
        ["allocate", str(checkpoint), "--data-dir", str(data), "--out", str(out), *quick], capsys
    )
    assert code == 0, err
    assert "validation split: 24 images" in stdout
    info = load_checkpoint(out).meta["allocator"]
    assert info["calib_images"] == 24  # the split, not the default 5000
    assert info["fit_images"] == 60 - 24
    assert "validation split" in load_checkpoint(out).allocator.config["calibration"]["source"]
    assert load_checkpoint(out).meta["validation_split"] == split.as_meta()  # travels on

    # A quick run asks for fewer: the split's last 20 calibrate, and the fit still gets
    # no validation image (the split's other 4 are left out).
    out = tmp_path / "quick.pt"
    code, stdout, err = run(
        ["allocate", str(checkpoint), "--data-dir", str(data), "--out", str(out), *QUICK], capsys
    )
    assert code == 0, err
    assert "validation split: 20 images" in stdout
    info = load_checkpoint(out).meta["allocator"]
    assert (info["calib_images"], info["fit_images"]) == (20, 60 - 24)
