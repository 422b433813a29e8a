"""`budget-edge export` and `budget-edge build-engines` from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from budget_edge.cli import main
from budget_edge.models import build_backbone
from budget_edge.models.checkpoint import save_checkpoint
from budget_edge.runtime.manifest import verify_files

META = {
    "preprocessing": {"mean": [0.5] * 3, "std": [0.25] * 3, "input_size": [3, 32, 32]},
    "class_names": [str(i) for i in range(10)],
}


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_export_then_build_engines_without_tensorrt(tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "r20.pt", build_backbone("resnet20"), meta=META)
    code, out, err = cli(["export", str(ckpt), "--out", str(tmp_path / "art")], capsys)
    assert code == 0, err
    assert "exported resnet20 (budget-edge)" in out
    assert "policy no" in out
    manifest = verify_files(tmp_path / "art")
    assert manifest.roles["policy"] is None
    assert manifest.roles["full"] == "full"
    # This machine has TensorRT's type stubs but not TensorRT: one line saying what to install.
    code, _, err = cli(["build-engines", str(tmp_path / "art"), "--precision", "fp32"], capsys)
    assert code == 2
    assert err.startswith("error: ")
    assert "pip install tensorrt" in err
    assert "\n" == err[-1]


def test_export_errors_are_one_line(tmp_path: Path, capsys) -> None:
    code, _, err = cli(
        ["export", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")], capsys
    )
    assert code == 2
    assert "checkpoint file not found" in err
    assert err.count("\n") == 1


def test_an_opset_below_18_is_refused_up_front(tmp_path: Path, capsys) -> None:
    """torch's exporter writes 18 and its down-conversion failed at 17 with a traceback."""
    code, _, err = cli(
        ["export", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o"), "--opset", "17"],
        capsys,
    )
    assert code == 2
    assert "--opset" in err
    assert "18" in err


FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
@pytest.mark.skipif(
    not (FMNIST / "train-images-idx3-ubyte.gz").exists(),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_export_with_static_masks(tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    meta = {
        "preprocessing": {"mean": [0.286], "std": [0.353], "input_size": [1, 28, 28]},
        "class_names": [str(i) for i in range(10)],
    }
    net = build_backbone("resnet8", in_channels=1, input_size=(1, 28, 28))
    ckpt = save_checkpoint(tmp_path / "r8.pt", net, meta=meta)
    art = tmp_path / "art"
    code, _, err = cli(["export", str(ckpt), "--out", str(art), "--static-masks", "random"], capsys)
    assert code == 2
    assert err.startswith(
        "error: the static-mask search needs labelled data, not --static-masks random"
    )
    assert not art.exists()  # refused before the export
    code, out, err = cli(
        [
            "export",
            str(ckpt),
            "--out",
            str(art),
            "--static-masks",
            "fashion-mnist",
            "--static-search-images",
            "32",
        ],
        capsys,
    )
    assert code == 0, err
    assert "4 static masks" in out
    manifest = verify_files(art)
    assert manifest.static_masks is not None
    assert manifest.static_masks.source.startswith("fashion-mnist train[59968:]")
    assert [sum(s.mask) for s in manifest.static_masks.masks] == [3, 2, 1, 0]


def test_a_greedy_default_says_how_to_get_the_allocator() -> None:
    from budget_edge.commands.export import greedy_advice

    advice = greedy_advice("greedy", None, Path("runs/my r20/budgetnet.pt"))
    assert advice is not None
    assert "`budget-edge allocate 'runs/my r20/budgetnet.pt' --out CKPT2`" in advice
    # Asked for greedy, already allocating, or no agent at all: nothing to say.
    assert greedy_advice("greedy", "greedy", Path("a.pt")) is None
    assert greedy_advice("allocate", None, Path("a.pt")) is None
    assert greedy_advice(None, None, Path("a.pt")) is None
