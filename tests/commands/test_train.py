"""`budget-edge train`: end to end on generated data, user errors, resume after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from budgetnet_helpers import write_backbone_checkpoint, write_tiny_fashion_mnist

from budget_edge.cli import main
from budget_edge.models.checkpoint import load_checkpoint


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(["train", *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("train_cli")
    data = write_tiny_fashion_mnist(root / "data", n_train=64, n_test=16)
    return data, write_backbone_checkpoint(root / "backbone.pt")


def tiny(data: Path, checkpoint: Path, out: Path, epochs: tuple[int, int] = (1, 1)) -> list[str]:
    return [
        "--checkpoint", str(checkpoint), "--data-dir", str(data), "--out", str(out),
        "--curriculum-epochs", str(epochs[0]), "--finetune-epochs", str(epochs[1]),
        "--batch-size", "16", "--eval-images", "16", "--extractor", "light", "--threads", "1",
    ]  # fmt: skip


def test_trains_and_reports_each_epoch(
    inputs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(tiny(*inputs, tmp_path / "run"), capsys)
    assert code == 0, err
    assert "epoch 1 curriculum" in out
    assert "epoch 2 finetune" in out
    assert "img/s" in out
    assert "usage" in out
    # Once, before the first epoch: what each abbreviation of the epoch lines means.
    lines = out.splitlines()
    legend = [i for i, line in enumerate(lines) if line.startswith("fields: ")]
    first_epoch = next(i for i, line in enumerate(lines) if line.startswith("epoch 1 "))
    assert len(legend) == 1, out
    assert legend[0] < first_epoch, out
    epoch_lines = " ".join(line for line in lines if line.startswith("epoch "))
    explained = lines[legend[0]]
    # (as an epoch line writes it, as the legend names it)
    for used, named in [
        ("R ", "R mean reward"),
        ("acc ", "acc training accuracy"),
        ("usage ", "usage/c mean share"),
        ("/c ", "usage/c mean share"),
        ("pol ", "pol distinct masks"),
        ("img/s", "img/s training images per second"),
        ("forced ", "forced leading components"),
        ("c_min ", "c_min lowest budget"),
        (" u=", "usage u"),
        (" c=", "c=C"),
    ]:
        assert used in epoch_lines, (used, named)
        assert named in explained, (used, named)
    loaded = load_checkpoint(tmp_path / "run" / "budgetnet.pt")
    assert loaded.agent is not None


def test_needs_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(["--out", str(tmp_path / "run")], capsys)
    assert code == 2
    assert "--checkpoint" in err


def test_resume_takes_no_other_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(["--out", str(tmp_path), "--resume", "--lr", "0.1"], capsys)
    assert code == 2
    assert "drop the other options" in err


def test_precision_auto_is_resolved_by_the_machine(
    inputs: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """auto: fp32 on a CPU without bf16 instructions; a resumed run may change it."""
    from budget_edge.runtime import machine

    monkeypatch.setattr(machine, "cpu_has_bf16", lambda: False)
    run = tiny(*inputs, tmp_path / "run", epochs=(1, 0))
    code, _, err = cli([*run, "--precision", "auto", "--device", "cpu"], capsys)
    assert code == 0, err
    assert load_checkpoint(tmp_path / "run" / "last.pt").train_state["config"]["precision"] == (
        "fp32"
    )
    resume = ["--out", str(tmp_path / "run"), "--resume", "--precision", "bf16"]
    code, _, err = cli(resume, capsys)
    assert code == 0, err  # accepted, not "drop the other options" (it has nothing left to train)


def test_missing_checkpoint_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(
        ["--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "r")], capsys
    )
    assert code == 2
    assert "not found" in err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--alpha", "0.2", "error: --alpha must lie in [0.5, 1]"),
        ("--eval-images", "0", "error: --eval-images must be at least 1, got 0"),
        ("--lr", "0", "error: --lr must be > 0"),
        ("--finetune-lr", "0", "error: --finetune-lr must be > 0"),
        ("--forced-epochs", "-1", "error: --forced-epochs must be >= 0"),
        ("--gamma", "-1", "error: --gamma and --omega must be >= 0"),
        ("--prior-images", "0", "error: --prior-images must be at least 1, got 0"),
    ],
)
def test_a_bad_hyperparameter_is_named_as_the_option_that_set_it(
    inputs: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    option: str,
    value: str,
    message: str,
) -> None:
    code, _, err = cli([*tiny(*inputs, tmp_path / "run"), option, value], capsys)
    assert code == 2
    assert err.startswith(message), err


def _run_cli(args: list[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "budget_edge.cli", "train", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    loaded = load_checkpoint(path)
    assert loaded.agent is not None
    assert loaded.train_state is not None
    out = {f"b.{k}": v for k, v in loaded.backbone.state_dict().items()}
    out.update({f"a.{k}": v for k, v in loaded.agent.state_dict().items()})
    for key, state in loaded.train_state["optimizer"]["state"].items():
        out.update({f"o.{key}.{name}": v for name, v in state.items()})
    return out


def test_resume_after_kill_matches_an_uninterrupted_run(
    inputs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The kill lands after the first checkpoint (epoch 1, or 2 on a slow poll): the
    # resumed run then goes on into the fine-tuning epoch, crossing the stage boundary.
    killed_out = tmp_path / "killed"
    killed = _run_cli(tiny(*inputs, killed_out, epochs=(2, 1)))
    deadline = time.monotonic() + 300
    while not (killed_out / "last.pt").exists() and killed.poll() is None:
        assert time.monotonic() < deadline  # turns a hang into a failure; no speed claim
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL  # stopped mid-run, not finished
    assert not (killed_out / "budgetnet.pt").exists()
    saved = load_checkpoint(killed_out / "last.pt").train_state["epoch"]  # type: ignore[index]
    assert saved in (1, 2)

    code, _, err = cli(tiny(*inputs, tmp_path / "straight", epochs=(2, 1)), capsys)
    assert code == 0, err
    # Only what the killed process left on disk carries over to the resumed run, which
    # goes on after the saved epoch (a run started over would end with the same tensors:
    # each epoch reseeds, and the backbone is frozen in the curriculum).
    code, resumed, err = cli(["--out", str(killed_out), "--resume", "--threads", "1"], capsys)
    assert code == 0, err
    assert f"epoch {saved} " not in resumed
    assert f"epoch {saved + 1} " in resumed
    a = _tensors(tmp_path / "straight" / "budgetnet.pt")
    b = _tensors(killed_out / "budgetnet.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
