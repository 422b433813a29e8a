"""`budget-edge demo --from-scratch`: the pipeline with nothing committed (smoke preset).

This runs the stages up to `train`: pretraining the backbone and the zoo member, then the
agent on that backbone and its small validation split (128 images). allocate, evaluate,
export, quantize, export-zoo, bench and serve run the same commands from the committed
model (tests/commands/test_demo.py), whose checkpoints `pretrain` made too. A file of its
own, so that the test runner's workers run the two smoke demos side by side."""

from __future__ import annotations

from pathlib import Path

import pytest

from budget_edge.cli import main
from budget_edge.commands import demo
from budget_edge.models.checkpoint import load_checkpoint

from .test_demo import needs_fmnist


@needs_fmnist
@pytest.mark.slow
def test_smoke_demo_from_scratch_pretrains_what_the_agent_and_allocator_train_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo, "COMMITTED", tmp_path / "absent.pt")
    monkeypatch.setattr(demo, "COMMITTED_ZOO", tmp_path / "absent-zoo.pt")
    out = tmp_path / "demo"
    main(["demo", "--from-scratch", "--preset", "smoke", "--out", str(out), "--until", "train"])
    printed = capsys.readouterr().out
    assert "demo stopped after train (--until)" in printed
    assert load_checkpoint(out / "pretrain-zoo" / "best.pt").backbone.num_components == 3
    pretrained = load_checkpoint(out / "pretrain" / "best.pt")
    trained = load_checkpoint(out / "budgetnet" / "budgetnet.pt")
    assert trained.agent is not None
    assert trained.backbone.num_components == 9  # the ResNet-20 pretrained just before
    # The agent trained on that backbone's own validation split.
    assert trained.meta["validation_split"] == pretrained.meta["validation_split"]
    assert not (out / "budgetnet" / "allocated.pt").exists()


def test_until_a_stage_the_demo_does_not_have_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "mine.pt"
    ckpt.write_bytes(b"")
    with pytest.raises(SystemExit) as info:
        main(
            ["demo", "--checkpoint", str(ckpt), "--out", str(tmp_path / "d"), "--until", "pretrain"]
        )
    assert info.value.code == 2
    assert "--until pretrain: this demo's stages are train, allocate" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
