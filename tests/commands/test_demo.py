"""`budget-edge demo`: every stage runs for real (smoke preset), and a rerun resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from budget_edge.cli import main
from budget_edge.commands import demo

FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(
    not (FMNIST / "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)


def test_plan_names_each_stage_output_in_order(tmp_path: Path) -> None:
    stages = demo.plan(tmp_path, None, demo.PRESETS["demo"], "resnet20")
    assert [s.name for s in stages] == [
        "pretrain",
        "train",
        "allocate",
        "evaluate",
        "export",
        "quantize",
        "bench",
    ]
    # Each stage reads what the one before it wrote.
    assert str(tmp_path / "pretrain" / "best.pt") in stages[1].args
    assert str(tmp_path / "budgetnet" / "budgetnet.pt") in stages[2].args
    allocated = str(tmp_path / "budgetnet" / "allocated.pt")
    assert allocated in stages[3].args and allocated in stages[4].args
    assert str(tmp_path / "artifact") in stages[5].args
    assert str(tmp_path / "artifact") in stages[6].args
    # The evaluation, the export and the bench show the per-image allocation by default,
    # as a user's own commands would: no --mode, no --fuse-top.
    for stage in stages:
        assert "--mode" not in stage.args and "--fuse-top" not in stage.args


@needs_fmnist
@pytest.mark.slow
def test_smoke_demo_runs_every_stage_then_skips_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    main(["demo", "--preset", "smoke", "--out", str(out)])
    report = json.loads((out / "bench" / "bench.json").read_text())
    assert report["rows"], "bench wrote no rows"
    assert {r["precision"] for r in report["rows"]} == {"fp32", "int8"}
    assert report["settings"]["mode"] == "allocate"
    assert (out / "bench" / "bench.png").stat().st_size > 0
    assert (out / "artifact" / "manifest.json").exists()
    sweep = json.loads((out / "evaluate" / "sweep.json").read_text())
    assert len(sweep["rows"]) == 4, "one evaluate row per demo budget"
    assert (out / "evaluate" / "sweep.md").exists()
    capsys.readouterr()

    # A second run finds every stage done and does nothing again.
    main(["demo", "--preset", "smoke", "--out", str(out)])
    printed = capsys.readouterr().out
    assert printed.count("done already") == 7


def test_fresh_refuses_a_folder_that_is_not_a_demo(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(SystemExit) as info:
        main(["demo", "--fresh", "--out", str(tmp_path)])
    assert info.value.code == 2
    assert (tmp_path / "precious.txt").exists()
