"""BudgetNet training under torchrun with 2 CPU processes (gloo)."""

from __future__ import annotations

from pathlib import Path

import torch
from budgetnet_helpers import write_backbone_checkpoint, write_tiny_fashion_mnist
from two_ranks import failure_report, run_two_ranks

from budget_edge.models.checkpoint import load_checkpoint

WORKER = Path(__file__).with_name("ddp_worker.py")


def test_two_processes_keep_identical_models(tmp_path: Path) -> None:
    data = write_tiny_fashion_mnist(tmp_path / "data", n_train=64, n_test=16)
    checkpoint = write_backbone_checkpoint(tmp_path / "backbone.pt")
    out = tmp_path / "run"
    proc = run_two_ranks([str(WORKER), str(out), str(data), str(checkpoint)], out)
    assert proc.returncode == 0, failure_report(proc)

    for epoch, stage in ((0, "curriculum"), (1, "finetune")):
        rank0 = torch.load(out / f"rank0_epoch{epoch}.pt", weights_only=True)
        rank1 = torch.load(out / f"rank1_epoch{epoch}.pt", weights_only=True)
        assert rank0.keys() == rank1.keys()
        # Each rank trained on its own shard; DDP's averaged gradients keep them equal.
        assert all(torch.equal(rank0[k], rank1[k]) for k in rank0), stage
    first = torch.load(out / "rank0_epoch0.pt", weights_only=True)
    second = torch.load(out / "rank0_epoch1.pt", weights_only=True)
    assert any(not torch.equal(first[k], second[k]) for k in first if k.startswith("backbone"))

    final = load_checkpoint(out / "budgetnet.pt")
    assert final.agent is not None
    assert final.train_state is not None
    history = final.train_state["history"]
    assert [h["stage"] for h in history] == ["curriculum", "finetune"]
