"""Started by test_budgetnet_ddp.py under torchrun (2 CPU processes).

Trains a tiny BudgetNet and, after every epoch, saves this rank's parameters,
so the test can check that DDP kept the ranks' models identical.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

import budget_edge.train.budgetnet as budgetnet


def main(out: str, data_dir: str, checkpoint: str) -> None:
    original = budgetnet.train_epoch

    def recording(epoch: int, stage: str, backbone: Any, agent: Any, *args: Any, **kw: Any) -> Any:
        stats = original(epoch, stage, backbone, agent, *args, **kw)
        params = {}
        for name, module in (("agent", agent), ("backbone", backbone)):
            plain = getattr(module, "module", module)  # unwrap DistributedDataParallel
            params.update({f"{name}.{n}": p.detach().clone() for n, p in plain.named_parameters()})
        torch.save(params, Path(out) / f"rank{dist.get_rank()}_epoch{epoch}.pt")
        return stats

    budgetnet.train_epoch = recording  # type: ignore[assignment]
    config = budgetnet.make_config(
        data_dir=data_dir,
        batch_size=16,
        eval_images=16,
        extractor="light",
        curriculum_epochs=1,
        finetune_epochs=1,
        eval_budgets=(0.5,),
    )
    Path(out).mkdir(parents=True, exist_ok=True)
    budgetnet.train_budgetnet(out, checkpoint, config)


if __name__ == "__main__":
    main(*sys.argv[1:4])
