"""The docs' command lines too slow for `make test`, run by `make test-slow` (issue 23).

Marked `slow_job`: tests/conftest.py skips them unless BUDGET_EDGE_SLOW_TESTS=1, which
`make test-slow` sets. Each runs what the doc says today, read from the doc, with the
changes test_doc_walkthrough.py allows (tmp paths, files generated in the documented
formats, the smallest option that limits a pass over a whole dataset):

- docs/checkpoints.md's second block: a FlatResNet32 alone in BlockDrop's layout exported
  as `--format budgetnet`, a ResNet-110 with an agent exported with `--fuse-top 4` on a
  CIFAR-10 archive, and a reference BudgetNet ResNeXt-29 file evaluated on it (ResNet-110's
  54 blocks make this the slow one: about two minutes on 2 cores);
- docs/pretrain.md's reference run (15 epochs, on 64 images);
- the torchrun lines of docs/pretrain.md and docs/budgetnet.md, two processes each.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from data.formats import cifar_files, write_cifar_tar
from export.conftest import blockdrop_file, budgetnet_file

from budget_edge.agent.policy import build_agent
from budget_edge.models import build_backbone
from budget_edge.models.checkpoint import save_checkpoint
from budget_edge.runtime.manifest import verify_files

from .test_doc_walkthrough import FMNIST, in_tmp, run, sh_block
from .test_docs import ROOT, fenced_blocks, shell_commands, shell_lines

pytestmark = pytest.mark.slow_job

CIFAR_META = {
    "preprocessing": {
        "mean": [0.4914, 0.4824, 0.4467],
        "std": [0.2471, 0.2435, 0.2616],
        "input_size": [3, 32, 32],
    },
    "dataset": "cifar10",
}


def fenced_line(doc: str, needle: str) -> list[str]:
    """The words of the fenced shell line of DOC (README.md, docs/...) holding `needle`."""
    for _, code in fenced_blocks((ROOT / doc).read_text()):
        for line in shell_lines(code):
            if needle in line:
                return shell_commands(line.strip())[0][1]
    raise AssertionError(f"{doc} has no fenced line with {needle!r}")


def reference_files(folder: Path) -> dict[str, Path]:
    """The three checkpoints of docs/checkpoints.md's second block, in their formats."""
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    r32 = build_backbone("resnet32", shortcut="B")
    blockdrop = blockdrop_file(folder / "blockdrop-r32.t7", r32, build_agent(r32.num_components))
    alone = torch.load(blockdrop, weights_only=True)
    del alone["agent"]  # the FlatResNet32 alone: BlockDrop and BudgetNet both write it
    torch.save(alone, blockdrop)
    r110 = build_backbone("resnet110")
    agent = build_agent(r110.num_components, "light", 3, (3, 32, 32))
    save_checkpoint(folder / "r110-c10.pt", r110, agent, meta=dict(CIFAR_META))
    resnext = build_backbone("resnext29", cardinality=2, base_width=2, widen_factor=1)
    budgetnet = budgetnet_file(
        folder / "budgetnet-resnext29.t7", resnext, build_agent(resnext.num_components)
    )
    return {
        "checkpoints/blockdrop-r32.t7": blockdrop,
        "checkpoints/r110-c10.pt": folder / "r110-c10.pt",
        "checkpoints/budgetnet-resnext29.t7": budgetnet,
    }


def test_checkpoints_md_reference_files_export_and_evaluate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = write_cifar_tar(tmp_path / "cifar-10-python.tar.gz", cifar_files("cifar10"))
    moved = {**reference_files(tmp_path / "files"), "data/cifar-10-python.tar.gz": archive}
    lines = [shell_commands(line)[0][1][1:] for line in sh_block("docs/checkpoints.md", "r110")]
    assert [words[0] for words in lines] == ["export", "export", "evaluate"]
    # `cifar10:data/...` names the archive inside one word.
    local = [
        [w.replace("cifar10:data/cifar-10-python.tar.gz", f"cifar10:{archive}") for w in words]
        for words in lines
    ]
    blockdrop, r110, evaluate = (in_tmp(words, tmp_path, moved) for words in local)

    assert "budgetnet" in run(blockdrop, capsys)  # the format asked for, not blockdrop
    assert verify_files(tmp_path / "artifacts/r32").backbone == "resnet32"
    run(r110, capsys)
    manifest = verify_files(tmp_path / "artifacts/r110")
    assert manifest.backbone == "resnet110"
    assert len(manifest.hot_policies) == 4  # the masks the agent picks most on the archive
    # The archive holds 20 training and 6 test images: its validation split and the
    # static-mask search take 8; no timing.
    run([*evaluate, "--val-size", "8", "--latency-images", "0"], capsys)
    sweep = json.loads((tmp_path / "runs/resnext29-eval/sweep.json").read_text())
    assert len(sweep["rows"]) == 10  # 0.1:1.0:0.1


def needs_fmnist() -> None:
    if not (FMNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not installed in {FMNIST}")


def test_pretrain_md_reference_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    needs_fmnist()
    pretrain = in_tmp(fenced_line("docs/pretrain.md", "--epochs 15")[1:], tmp_path)
    # Every epoch of the documented 15, each over 64 images, 32 held out, 32 test images.
    few = ["--limit-train", "64", "--val-size", "32", "--eval-images", "32", "--threads", "1"]
    assert "epoch 15/15" in run([*pretrain, *few], capsys)
    assert (tmp_path / "runs/pretrain-r20-fmnist/best.pt").is_file()


def torchrun(words: list[str], tmp_path: Path) -> str:
    """A documented torchrun line as a subprocess, torchrun from this Python's folder."""
    executable = Path(sys.executable).parent / "torchrun"
    if not executable.is_file() and shutil.which("torchrun") is None:
        pytest.skip("torchrun is not installed beside this Python")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [str(executable) if executable.is_file() else "torchrun", *words[1:]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_torchrun_lines_of_pretrain_md_and_budgetnet_md(tmp_path: Path) -> None:
    needs_fmnist()
    pretrain = in_tmp(fenced_line("docs/pretrain.md", "torchrun"), tmp_path)
    few = ["--epochs", "1", "--limit-train", "64", "--val-size", "32", "--eval-images", "32"]
    assert "final test accuracy" in torchrun([*pretrain, *few], tmp_path)
    checkpoint = tmp_path / "runs/r20/best.pt"
    assert checkpoint.is_file()

    train = fenced_line("docs/budgetnet.md", "torchrun")
    # The doc's placeholders: the checkpoint just pretrained, and a run folder.
    train = [
        str(checkpoint) if w == "..." and train[i - 1] == "--checkpoint" else w
        for i, w in enumerate(train)
    ]
    train = [str(tmp_path / "runs/bn") if w == "..." else w for w in train]
    few = ["--limit-train", "64", "--curriculum-epochs", "1", "--finetune-epochs", "1"]
    few += ["--eval-images", "16", "--prior-images", "16"]
    assert "epoch 2 finetune" in torchrun([*train, *few], tmp_path)
    assert (tmp_path / "runs/bn/budgetnet.pt").is_file()
