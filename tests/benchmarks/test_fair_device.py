"""benchmarks/fair_device.py: what it copies to the GPU machine and how its workers run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import fair_device  # noqa: E402
import fair_training  # noqa: E402

from budget_edge.cli import check_command  # noqa: E402


def write_run(folder: Path, epochs: int) -> None:
    folder.mkdir(parents=True)
    history = {"config": {"precision": "fp32"}, "epochs": [{"epoch": e} for e in range(epochs)]}
    (folder / "history.json").write_text(json.dumps(history))
    (folder / "last.pt").write_bytes(b"state")
    (folder / "best.pt").write_bytes(b"best")


def test_unfinished_runs_travel_with_their_state_finished_ones_with_their_history(
    tmp_path: Path,
) -> None:
    source, out = tmp_path / "committed", tmp_path / "out"
    for name in ("resnet20-s0", "resnet8-s0", "resnet14-s0"):  # the first three: finished
        write_run(source / name, fair_training.EPOCHS)
    write_run(source / "resnet32-s0", 15)  # half way
    unfinished = fair_device.stage_runs(source, out)
    assert "resnet8-s0" not in unfinished
    assert unfinished[0] == "resnet32-s0"  # the queue's order: the first unfinished run
    assert "resnet56-s0" in unfinished  # never started: trains from scratch
    assert sorted(p.name for p in (out / "resnet8-s0").iterdir()) == ["history.json"]
    assert (out / "resnet32-s0" / "last.pt").read_bytes() == b"state"
    # The workers see the finished run as finished, and go on from the copied state.
    assert fair_training.progress(out / "resnet8-s0") == fair_training.EPOCHS
    assert fair_training.progress(out / "resnet32-s0") == 15


def test_the_worker_command_trains_the_queue_on_the_device_in_out(tmp_path: Path) -> None:
    words = fair_device.worker_command(tmp_path, "cuda", "runs/fashion-mnist")
    assert words[words.index("--queue") + 1] == "zoo"
    assert words[words.index("--results") + 1] == str(tmp_path)
    assert words[words.index("--device") + 1] == "cuda"
    # What each run becomes, through fair_training's own Launch: pretrain accepts it.
    launch = fair_training.Launch(
        ("python", "-m", "budget_edge.cli"),
        tmp_path,
        extra=("--device", "cuda", "--data-dir", "runs/fashion-mnist"),
    )
    run = fair_training.command("resnet56-s0", fair_training.QUEUES["zoo"]["resnet56-s0"], launch)
    check_command(run[3:], environ={})


def test_one_worker_takes_the_sandwich_queue_while_it_has_a_run_left(tmp_path: Path) -> None:
    zoo_left = ["resnet56-s0", "resnet20-s0-60ep", "resnet20-s1", "resnet20-s2"]
    with_sandwich = [*zoo_left, "sandwich-resnet56-from-plain"]
    assert fair_device.worker_queues(with_sandwich, 4) == ["zoo"] * 3 + ["sandwich"]
    assert fair_device.worker_queues(zoo_left, 4) == ["zoo"] * 4
    assert fair_device.worker_queues(["sandwich-resnet56-from-plain"], 4) == ["sandwich"]
    assert fair_device.worker_queues(["resnet56-s0"], 4) == ["zoo"]
    # The sandwich worker waits for the plain ResNet-56 another worker trains.
    words = fair_device.worker_command(tmp_path, "cuda", None, queue="sandwich")
    assert words[words.index("--queue") + 1] == "sandwich"
    assert "--wait" in words


def test_an_unfinished_sandwich_run_travels_with_its_state(tmp_path: Path) -> None:
    source, out = tmp_path / "committed", tmp_path / "out"
    write_run(source / "sandwich-resnet56-s0", fair_training.EPOCHS)
    write_run(source / "sandwich-resnet56-from-plain", 3)
    unfinished = fair_device.stage_runs(source, out)
    assert "sandwich-resnet56-s0" not in unfinished
    assert unfinished[-1] == "sandwich-resnet56-from-plain"
    assert (out / "sandwich-resnet56-from-plain" / "last.pt").read_bytes() == b"state"
