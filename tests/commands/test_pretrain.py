"""`budget-edge pretrain` end to end on tiny generated Fashion-MNIST files."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from two_ranks import failure_report, run_two_ranks

from budget_edge.cli import main
from budget_edge.commands.pretrain import command_line
from budget_edge.data.registry import load_arrays
from budget_edge.models.checkpoint import load_checkpoint, save_checkpoint


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture
def fmnist(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    folder = tmp_path / "fmnist"
    folder.mkdir()
    for prefix, n in (("train", 24), ("t10k", 12)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return folder


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(["pretrain", *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tiny(fmnist: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--data-dir", str(fmnist), "--out", str(out), "--epochs", "1", "--batch-size", "8",
        "--limit-train", "16", "--eval-images", "8", "--threads", "1", "--val-size", "4", *extra,
    ]  # fmt: skip


def test_trains_and_prints_the_final_accuracy(fmnist: Path, tmp_path: Path, capsys):
    out = tmp_path / "run"
    code, stdout, stderr = cli(tiny(fmnist, out), capsys)
    assert code == 0, stderr
    assert "final test accuracy" in stdout
    assert "epoch 1/1" in stdout
    assert "\x1b[" not in stdout  # no progress bar escapes outside a terminal
    loaded = load_checkpoint(out / "last.pt")
    assert loaded.meta["dataset"] == "fashion-mnist"
    assert loaded.meta["class_names"][0] == "T-shirt/top"
    assert loaded.meta["preprocessing"]["input_size"] == [1, 28, 28]
    assert loaded.meta["command"].startswith("budget-edge pretrain --backbone resnet20")
    assert "--limit-train 16" in loaded.meta["command"]
    assert "--data fashion-mnist" in loaded.meta["command"]
    history = json.loads((out / "history.json").read_text())
    assert len(history["epochs"]) == 1


def test_quiet_prints_nothing(fmnist: Path, tmp_path: Path, capsys):
    code, stdout, _ = cli(tiny(fmnist, tmp_path / "run", "--quiet"), capsys)
    assert code == 0
    assert stdout == ""


@pytest.mark.parametrize("has_bf16", [True, False])
def test_precision_auto_follows_the_cpu(
    fmnist: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch, has_bf16: bool
):
    from budget_edge.runtime import machine

    monkeypatch.setattr(machine, "cpu_has_bf16", lambda: has_bf16)
    out = tmp_path / "run"
    code, stdout, stderr = cli(tiny(fmnist, out, "--precision", "auto", "--device", "cpu"), capsys)
    assert code == 0, stderr
    want = "bf16" if has_bf16 else "fp32"
    assert f"img/s in {want}" in stdout
    assert json.loads((out / "history.json").read_text())["epochs"][0]["precision"] == want


def test_resume_keeps_the_runs_precision_unless_told(fmnist: Path, tmp_path: Path, capsys):
    """Leaving out --precision on resume keeps bf16, as leaving out --lr keeps the lr."""
    out = tmp_path / "run"
    assert cli(tiny(fmnist, out, "--precision", "bf16", "--device", "cpu"), capsys)[0] == 0
    code, stdout, stderr = cli(tiny(fmnist, out, "--resume", "--device", "cpu"), capsys)
    assert code == 0, stderr
    assert "precision:" not in stdout  # no change announced
    code, stdout, stderr = cli(
        tiny(fmnist, out, "--resume", "--precision", "fp32", "--device", "cpu"), capsys
    )
    assert code == 0, stderr
    assert "precision: fp32 from epoch 2 on (the run's was bf16" in stdout


def test_resume_keeps_the_runs_memory_format_unless_told(fmnist: Path, tmp_path: Path, capsys):
    """Channels-last is a layout, not the recipe: a resumed run keeps it or may drop it."""
    out = tmp_path / "run"
    assert cli(tiny(fmnist, out, "--channels-last", "--device", "cpu"), capsys)[0] == 0
    code, stdout, stderr = cli(tiny(fmnist, out, "--resume", "--device", "cpu"), capsys)
    assert code == 0, stderr
    assert "memory format:" not in stdout
    code, stdout, stderr = cli(
        tiny(fmnist, out, "--resume", "--no-channels-last", "--device", "cpu"), capsys
    )
    assert code == 0, stderr
    assert "memory format: NCHW from epoch 2 on" in stdout


def test_resume_continues_the_run(fmnist: Path, tmp_path: Path, capsys):
    out = tmp_path / "run"
    assert cli(tiny(fmnist, out), capsys)[0] == 0
    code, stdout, _ = cli(tiny(fmnist, out, "--resume"), capsys)
    assert code == 0
    assert "resuming" in stdout


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--backbone", "resnet7"], "error: unknown backbone 'resnet7'"),
        (["--data", "mnist"], "error: unknown dataset 'mnist'"),
        (["--lr", "-0.1"], "error: --lr must be positive, got -0.1"),
        (["--epochs", "0"], "error: --epochs must be at least 1, got 0"),
        (["--drop-prob", "1.5"], r"error: --drop-prob must be in [0, 1), got 1.5"),
        (["--momentum", "1"], "error: --momentum must be in [0, 1), got 1.0"),
        (["--resume"], "error: --resume: there is no checkpoint at"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(
    fmnist: Path, tmp_path: Path, capsys, extra: list[str], message: str
):
    code, _, stderr = cli(tiny(fmnist, tmp_path / "run", *extra), capsys)
    assert code == 2
    assert stderr.startswith(message)
    assert stderr.count("\n") == 1


@pytest.mark.parametrize(
    "extra",
    [["--workers", "-1"], ["--lr", "inf"], ["--weight-decay", "nan"], ["--seed", str(2**70)]],
)
def test_numbers_no_run_can_use_are_refused_before_it_starts(
    fmnist: Path, tmp_path: Path, capsys, extra: list[str]
):
    code, _, stderr = cli(tiny(fmnist, tmp_path / "run", *extra), capsys)
    assert code == 2
    assert f"Invalid value for '{extra[0]}'" in stderr
    assert not (tmp_path / "run").exists()


def test_a_run_whose_loss_diverges_stops_without_saving_it(fmnist: Path, tmp_path: Path, capsys):
    out = tmp_path / "run"
    code, _, stderr = cli(tiny(fmnist, out, "--lr", "1e30"), capsys)
    assert code == 2
    assert stderr.startswith("error: the training loss became ")
    assert "in epoch 1: the run stopped without saving it (nothing was written)" in stderr
    assert not (out / "last.pt").exists()
    assert not (out / "best.pt").exists()


def test_out_must_not_be_a_file(fmnist: Path, tmp_path: Path, capsys):
    (tmp_path / "taken").write_text("a file")
    code, _, stderr = cli(tiny(fmnist, tmp_path / "taken"), capsys)
    assert code == 2
    assert stderr == f"error: --out {tmp_path / 'taken'} is a file: give a folder for the run\n"


def test_resume_with_another_backbone_is_refused(fmnist: Path, tmp_path: Path, capsys):
    out = tmp_path / "run"
    assert cli(tiny(fmnist, out), capsys)[0] == 0
    code, _, stderr = cli(tiny(fmnist, out, "--resume", "--backbone", "resnet32"), capsys)
    assert code == 2
    assert "holds a resnet20 backbone, not resnet32" in stderr


def test_missing_dataset_says_how_to_get_it(tmp_path: Path, capsys):
    code, _, stderr = cli(["--data-dir", str(tmp_path / "none"), "--out", str(tmp_path)], capsys)
    assert code == 2
    assert "apt-get install dataset-fashion-mnist" in stderr


def test_command_line_spells_out_every_option():
    line = command_line(
        [
            ("--backbone", "resnet20"),
            ("--resume", True),
            ("--quiet", False),
            ("--data-dir", None),
            ("--lr", 0.1),
            ("--out", Path("runs/a b")),
        ]
    )
    assert line == "budget-edge pretrain --backbone resnet20 --resume --lr 0.1 --out 'runs/a b'"


def test_an_off_switch_given_is_recorded_as_typed():
    """`--no-channels-last` on resume changes the run: the recorded command must say so
    (left out, it would replay as the run's own layout)."""
    from budget_edge.commands.pretrain import command, given_option

    param = next(p for p in command.params if p.name == "channels_last")
    assert given_option(param, False) == ("--no-channels-last", True)
    assert given_option(param, True) == ("--channels-last", True)
    assert given_option(param, None) == ("--channels-last", None)  # not given: left out


@pytest.mark.slow
def test_torchrun_two_processes(fmnist: Path, tmp_path: Path):
    out = tmp_path / "run"
    proc = run_two_ranks(
        ["-m", "budget_edge.cli", "pretrain", *tiny(fmnist, out, "--device", "cpu")], out
    )
    assert proc.returncode == 0, failure_report(proc)
    assert proc.stdout.count("final test accuracy") == 1  # rank 0 alone prints
    assert "2 process(es)" in proc.stdout
    assert load_checkpoint(out / "last.pt").meta["world_size"] == 2


def test_the_default_split_is_a_tenth_and_a_resume_keeps_the_runs(
    fmnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from budget_edge.commands.pretrain import default_val_size

    assert default_val_size(60000) == 5000
    assert default_val_size(24) == 2
    assert default_val_size(9) == 0  # too few to hold any out
    args = [a for a in tiny(fmnist, tmp_path) if a not in ("--val-size", "4")]
    code, _, err = cli([*args, "--epochs", "2"], capsys)
    assert code == 0, err
    split = load_checkpoint(tmp_path / "last.pt").meta["validation_split"]
    assert split["size"] == default_val_size(len(load_arrays("fashion-mnist", fmnist, "train")))
    # A run started without a split (before --val-size existed) resumes without one.
    old = tmp_path / "old"
    code, _, err = cli([*args, "--out", str(old), "--val-size", "0", "--epochs", "2"], capsys)
    assert code == 0, err
    state = load_checkpoint(old / "last.pt")
    assert state.train_state is not None
    del state.train_state["config"]["val_size"]
    save_checkpoint(old / "last.pt", state.backbone, meta=state.meta, train_state=state.train_state)
    code, _, err = cli([*args, "--out", str(old), "--epochs", "2", "--resume"], capsys)
    assert code == 0, err


def test_init_starts_a_sandwich_run_from_a_trained_network(fmnist: Path, tmp_path: Path, capsys):
    alone = tmp_path / "alone"
    assert cli(tiny(fmnist, alone, "--backbone", "resnet8"), capsys)[0] == 0
    out = tmp_path / "sandwich"
    extra = ["--backbone", "resnet8", "--sandwich", "--epochs", "2"]
    code, stdout, stderr = cli(tiny(fmnist, out, *extra, "--init", str(alone / "best.pt")), capsys)
    assert code == 0, stderr
    assert f"starting from the weights of {alone / 'best.pt'}" in stdout
    assert "--init" in load_checkpoint(out / "best.pt").meta["command"]
    # The run is complete; resuming checks the settings. Without --init the run keeps
    # the start it recorded (the weights come from last.pt).
    code, stdout, stderr = cli(tiny(fmnist, out, *extra, "--resume"), capsys)
    assert code == 0, stderr
    assert "resuming" in stdout
    # A queue repeats its whole command: --init again, even where the file has gone.
    moved = tmp_path / "moved.pt"
    (alone / "best.pt").rename(moved)
    again = tiny(fmnist, out, *extra, "--resume", "--init", str(alone / "best.pt"))
    assert cli(again, capsys)[0] == 0
    # Another start than the run's is refused.
    other = tmp_path / "other"
    assert cli(tiny(fmnist, other, "--backbone", "resnet8", "--seed", "3"), capsys)[0] == 0
    wrong = tiny(fmnist, out, *extra, "--resume", "--init", str(other / "best.pt"))
    code, _, stderr = cli(wrong, capsys)
    assert code == 2
    assert "did not start from --init" in stderr


def test_init_from_a_missing_file_is_one_line(fmnist: Path, tmp_path: Path, capsys):
    code, _, stderr = cli(tiny(fmnist, tmp_path / "run", "--init", str(tmp_path / "no.pt")), capsys)
    assert code == 2
    assert "error: --init" in stderr
    assert "there is no checkpoint file there" in stderr
    assert "Traceback" not in stderr
