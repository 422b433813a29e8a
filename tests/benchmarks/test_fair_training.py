"""The training queue: two workers on one machine never train the same run."""

import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import fair_training  # noqa: E402

from budget_edge.cli import check_command  # noqa: E402


def test_a_run_held_by_one_worker_is_skipped_by_the_next(tmp_path: Path) -> None:
    with fair_training.run_lock(tmp_path / "run") as first:
        with fair_training.run_lock(tmp_path / "run") as second:
            assert first is True
            assert second is False
    with fair_training.run_lock(tmp_path / "run") as again:
        assert again is True  # released when the first worker is done


def test_every_run_is_a_command_pretrain_accepts(tmp_path: Path) -> None:
    """A typo in a queued run would surface only when the runs before it finish."""
    for runs in fair_training.QUEUES.values():
        for name, options in runs.items():
            for channels_last, threads in ((False, 1), (True, 2)):
                launch = fair_training.Launch(channels_last=channels_last, threads=threads)
                words = fair_training.command(name, options, launch)
                check_command(words[1:], environ={})
                assert words[words.index("--threads") + 1] == str(threads)
            # On a lent GPU: another results folder, the device, data carried along.
            launch = fair_training.Launch(
                ("python", "-m", "budget_edge.cli"),
                tmp_path,
                extra=("--device", "cuda", "--data-dir", "runs/fashion-mnist"),
            )
            words = fair_training.command(name, options, launch)
            check_command(words[3:], environ={})
            assert words[words.index("--out") + 1] == str(tmp_path / name)


def test_the_progress_table_says_which_precision_each_epoch_ran_in() -> None:
    """A run resumed on a CPU without bf16 goes on in fp32: the table must show the mix."""
    history = {
        "config": {"precision": "fp32"},  # what the run was saved with last
        "epochs": [{"precision": "bf16"}] * 9 + [{"precision": "fp32"}] * 2,
    }
    assert fair_training.precisions(history) == "bf16 x9 + fp32 x2"
    older = {"config": {"precision": "bf16"}, "epochs": [{}] * 30}  # before it was kept
    assert fair_training.precisions(older) == "bf16 x30"


def test_a_run_from_another_runs_weights_waits_for_it(tmp_path: Path, monkeypatch) -> None:
    launched: list[list[str]] = []
    monkeypatch.setattr(
        fair_training.subprocess, "run", lambda words, check: launched.append(words)
    )
    launch = fair_training.Launch(results=tmp_path)
    # The sandwich from scratch has finished; the plain ResNet-56 has not.
    for name, epochs in (("sandwich-resnet56-s0", 30), ("resnet56-s0", 2)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "history.json").write_text(json.dumps({"epochs": [{}] * epochs}))
    fair_training.train_queue("sandwich", launch)
    assert launched == []
    (tmp_path / "resnet56-s0" / "history.json").write_text(json.dumps({"epochs": [{}] * 30}))
    fair_training.train_queue("sandwich", launch)
    (words,) = launched
    assert words[words.index("--init") + 1] == str(tmp_path / "resnet56-s0" / "best.pt")
    assert words[words.index("--out") + 1] == str(tmp_path / "sandwich-resnet56-from-plain")


def test_the_run_from_the_plain_network_trains_at_its_own_rate(tmp_path: Path) -> None:
    """The recipe's --lr 0.1 comes first; pretrain (click) keeps the last one given."""
    options = fair_training.QUEUES["sandwich"]["sandwich-resnet56-from-plain"]
    words = fair_training.command("sandwich-resnet56-from-plain", options, fair_training.Launch())
    rates = [words[i + 1] for i, word in enumerate(words) if word == "--lr"]
    assert rates[-1] == "0.01"
    assert words.count("--epochs") == 1
    assert words[words.index("--epochs") + 1] == "10"


def test_a_waiting_worker_starts_once_the_run_it_needs_has_finished(
    tmp_path: Path, monkeypatch
) -> None:
    launched: list[list[str]] = []
    monkeypatch.setattr(
        fair_training.subprocess, "run", lambda words, check: launched.append(words)
    )
    runs = (("sandwich-resnet56-s0", 30), ("resnet20-s0", 30), ("resnet56-s0", 29))
    for name, epochs in runs:
        (tmp_path / name).mkdir()
        (tmp_path / name / "history.json").write_text(json.dumps({"epochs": [{}] * epochs}))

    def another_worker_finishes_it(seconds: float) -> None:
        history = tmp_path / "resnet56-s0" / "history.json"
        history.write_text(json.dumps({"epochs": [{}] * 30}))

    monkeypatch.setattr(fair_training.time, "sleep", another_worker_finishes_it)
    fair_training.train_queue("sandwich", fair_training.Launch(results=tmp_path), wait=True)
    assert [w[w.index("--out") + 1] for w in launched] == [
        str(tmp_path / "sandwich-resnet20-from-plain"),
        str(tmp_path / "sandwich-resnet56-from-plain"),
    ]


def test_the_zoo_summary_is_over_finished_seeds_only(tmp_path: Path) -> None:
    def run(name: str, val: float, test: float, epochs: int = 30) -> None:
        (tmp_path / name).mkdir()
        epoch = {"val_accuracy": val, "test_accuracy": test}
        history = {"meta": {"best_epoch": 1}, "epochs": [epoch] * epochs}
        (tmp_path / name / "history.json").write_text(json.dumps(history))

    run("resnet8-s0", 0.93, 0.92)
    run("resnet8-s1", 0.95, 0.94)
    run("resnet8-s2", 0.10, 0.10, epochs=3)  # unfinished: not in the mean
    run("resnet20-s0-60ep", 0.99, 0.99, epochs=60)  # another recipe: not a seed
    run("resnet20-s0", 0.949, 0.942)
    lines = fair_training.zoo_summary(tmp_path)
    assert lines[2] == "| ResNet-8 | 2 | 94.00% (1.41%) | 93.00% (1.41%) | 92.00%-94.00% |"
    assert lines[3] == "| ResNet-20 | 1 | 94.90% (-) | 94.20% (-) | 94.20%-94.20% |"
    assert len(lines) == 4
