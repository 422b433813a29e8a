"""benchmarks/investigations/depth_returns.py: each run paired with the reference on test."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from budgetnet_helpers import FMNIST_META, tiny_backbone

from budget_edge.models.checkpoint import save_checkpoint

INVESTIGATIONS = Path(__file__).resolve().parents[2] / "benchmarks" / "investigations"
sys.path.insert(0, str(INVESTIGATIONS))

import depth_returns  # noqa: E402


def scored(run: str, mflops: float, right: int, dataset: str = "fashion-mnist") -> dict:
    """A run right on the first `right` of 100 test images, and on none of its validation
    images (so a mix-up of the two shows)."""
    test = np.zeros(100, dtype=bool)
    test[:right] = True
    return {
        "run": run,
        "backbone": run.split("-")[0],
        "dataset": dataset,
        "mflops": mflops,
        "best_epoch": 30,
        "train_accuracy_last_epoch": 0.95,
        "val": np.zeros(50, dtype=bool),
        "test": test,
    }


def test_each_run_is_paired_with_the_reference_on_test() -> None:
    rows = depth_returns.compare(
        [scored("resnet56-s0", 125.0, 90), scored("resnet20-s0", 41.0, 80)], "resnet20-s0"
    )
    assert [r["run"] for r in rows] == ["resnet20-s0", "resnet56-s0"]  # by compute
    assert "against" not in rows[0]
    deeper = rows[1]["against"]
    # The ten images only ResNet-56 gets right: +10 points, and ten discordant pairs
    # all one way give an exact two-sided p of 2 / 2**10.
    assert deeper["delta"] == pytest.approx(0.10)
    assert deeper["p"] == pytest.approx(2 / 2**10)
    assert rows[1]["test_accuracy"] == pytest.approx(0.90)
    assert rows[1]["val_accuracy"] == 0.0
    assert rows[1]["test_ci"][0] < 0.90 < rows[1]["test_ci"][1]
    table = depth_returns.markdown(rows, "cmd", "cpu")
    assert "+10.00 vs resnet20-s0, p = 0.002" in table


def test_a_reference_not_among_the_runs_is_refused() -> None:
    with pytest.raises(SystemExit, match="--against resnet20-s0: not among the runs"):
        depth_returns.compare([scored("resnet8-s0", 10.0, 90)], "resnet20-s0")


def test_runs_on_other_data_are_not_paired() -> None:
    runs = [scored("resnet20-s0", 41.0, 80), scored("resnet56-s0", 125.0, 90, "cifar10")]
    with pytest.raises(SystemExit, match="different data"):
        depth_returns.compare(runs, "resnet20-s0")


def test_a_run_is_finished_once_its_history_has_every_epoch() -> None:
    assert depth_returns.finished([{}] * 3, {"epochs": 3})
    assert not depth_returns.finished([{}] * 2, {"epochs": 3})


def test_a_run_still_training_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "resnet20-s0"
    run.mkdir()
    save_checkpoint(run / "best.pt", tiny_backbone(), meta={**FMNIST_META, "epoch": 2, "epochs": 3})
    (run / "history.json").write_text(json.dumps({"epochs": [{"epoch": 1}, {"epoch": 2}]}))
    with pytest.raises(SystemExit, match="2 of 3 epochs; wait for the run"):
        depth_returns.score_run(run, None)
