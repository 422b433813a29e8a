"""benchmarks/sub_networks.py: only zoo members whose runs have finished are compared."""

import sys
from pathlib import Path

from budgetnet_helpers import FMNIST_META, tiny_backbone

from budget_edge.models.checkpoint import save_checkpoint

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import sub_networks  # noqa: E402


def run_folder(folder: Path, epoch: int | None) -> Path:
    """best.pt, and last.pt after `epoch` of 3 epochs (None: no last.pt)."""
    folder.mkdir()
    net = tiny_backbone()
    best = save_checkpoint(folder / "best.pt", net, meta={**FMNIST_META, "epoch": 1, "epochs": 3})
    if epoch is not None:
        save_checkpoint(folder / "last.pt", net, meta={**FMNIST_META, "epoch": epoch, "epochs": 3})
    return best


def test_a_zoo_member_still_training_is_left_out(tmp_path: Path) -> None:
    assert sub_networks.finished_training(run_folder(tmp_path / "done", 3))
    assert not sub_networks.finished_training(run_folder(tmp_path / "training", 2))
    assert sub_networks.finished_training(run_folder(tmp_path / "alone", None))
