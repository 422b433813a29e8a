"""The count table against the agent's per-image ranking, on the validation split (issue 22).

Mode `allocate` gives each image a count k, then runs row k of the allocator's
table of count masks (the agent's most common top-k mask) rather than the k
components the agent ranks highest for that image. That design was chosen
from test accuracy (`benchmarks/results/allocate-count-masks/`, before
checkpoints had a validation split). This redoes the comparison where choices
belong: on the checkpoint's validation split, with the same counts for both
(the allocator's, at each budget), the same weights and the full network's
BatchNorm statistics, torch only:

    python benchmarks/investigations/count_table_choice.py \\
        benchmarks/results/fair-fmnist/front/agent/allocated.pt \\
        --out benchmarks/results/fair-fmnist/front/count-table-choice

Writes choice.json and choice.md: accuracy of each, their difference and the
exact McNemar p-value per budget, and how many distinct masks each ran.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from budget_edge.agent.allocator import AllocatorGraph
from budget_edge.agent.masks import correct_under_masks
from budget_edge.bench.significance import mcnemar_exact
from budget_edge.data.registry import load_arrays
from budget_edge.data.split import arranged_for_choices
from budget_edge.data.torch_dataset import as_tensors, preprocessing_of
from budget_edge.errors import ConfigError
from budget_edge.files import atomic_write_text
from budget_edge.models.checkpoint import LoadedCheckpoint, load_checkpoint
from budget_edge.runtime import allocation
from budget_edge.runtime.machine import machine_info

BUDGETS = (0.1, 0.2, 0.3, 0.4, 0.5)


def validation_tensors(
    loaded: LoadedCheckpoint, source: str, data_dir: Path | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The checkpoint's validation split, preprocessed as it was trained."""
    name = loaded.meta.get("dataset")
    arrays = load_arrays(name, data_dir, "train")
    train, val_count = arranged_for_choices(arrays, loaded.meta, source)
    if not val_count:
        raise ConfigError(f"{source} has no validation split: nothing to choose on")
    images, labels = as_tensors(train, *preprocessing_of(loaded.meta, train.info))
    return images[-val_count:], labels[-val_count:]


@torch.no_grad()
def both_masks(
    loaded: LoadedCheckpoint, images: torch.Tensor, budget: float
) -> tuple[np.ndarray, np.ndarray]:
    """(table masks, ranking masks), each (N, K) uint8, from the same counts."""
    allocator, agent = loaded.allocator, loaded.agent
    if allocator is None or agent is None or allocator.count_masks is None:
        raise ConfigError("needs a checkpoint with an agent and a table allocator")
    calibration = allocator.calibration
    if calibration is None:
        raise ConfigError("the allocator was never calibrated: run `budget-edge allocate`")
    prices = np.asarray(calibration["budgets"]), np.asarray(calibration["prices"])
    graph = AllocatorGraph(allocator, agent).eval()
    chances, levels = (o.numpy() for o in graph(images))
    spend = np.full(len(images), budget)
    table = allocation.CountTable.of(allocator.count_masks)
    by_table = allocation.table_masks(chances, table, spend, *prices)[0]
    by_rank = allocation.allocated_masks(chances, levels, spend, *prices)[0]
    return by_table, by_rank


def compare(loaded: LoadedCheckpoint, images: torch.Tensor, labels: torch.Tensor) -> list[dict]:
    backbone = loaded.backbone.eval()
    rows = []
    for c in BUDGETS:
        table, rank = both_masks(loaded, images, c)
        right = {
            name: correct_under_masks(backbone, images, labels, torch.from_numpy(m).bool()).numpy()
            for name, m in (("table", table), ("ranking", rank))
        }
        test = mcnemar_exact(right["table"], right["ranking"])
        rows.append(
            {
                "budget": c,
                "usage": float(table.mean()),
                "table_accuracy": float(right["table"].mean()),
                "ranking_accuracy": float(right["ranking"].mean()),
                "table_minus_ranking": test.accuracy_delta,
                "p_value": test.p_value,
                # Images one gets right and the other wrong: 0 and 0 is the same to the image.
                "only_table": test.only_a,
                "only_ranking": test.only_b,
                "table_masks": len(np.unique(table, axis=0)),
                "ranking_masks": len(np.unique(rank, axis=0)),
            }
        )
        print(
            f"c={c:g}: table {100 * rows[-1]['table_accuracy']:.2f}%, "
            f"ranking {100 * rows[-1]['ranking_accuracy']:.2f}%",
            flush=True,
        )
    return rows


def markdown(rows: list[dict], source: str, images: int, info: dict[str, Any]) -> str:
    lines = [
        "# Count table or per-image ranking, on the validation split",
        "",
        f"`{source}`, {images} images of its validation split (never trained on), the full "
        "network's BatchNorm statistics; both run the allocator's counts. The table and the "
        "allocator's prices were made on these images too (without their labels for the "
        f"table): in-sample for the table. Machine: {info['cpu']}.",
        "",
        "| c | usage | count table | agent's ranking | difference | right only with the "
        "table / the ranking | McNemar p | masks (table / ranking) |",
        "|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['budget']:g} | {r['usage']:.3f} | {100 * r['table_accuracy']:.2f}% "
            f"| {100 * r['ranking_accuracy']:.2f}% | {100 * r['table_minus_ranking']:+.2f} "
            f"| {r['only_table']} / {r['only_ranking']} | {r['p_value']:.2g} "
            f"| {r['table_masks']} / {r['ranking_masks']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path, help="an allocated checkpoint (allocate's --out)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=5000, help="validation images [5000]")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, help="the dataset's folder (default: its own)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    loaded = load_checkpoint(args.checkpoint)
    images, labels = validation_tensors(loaded, str(args.checkpoint), args.data_dir)
    images, labels = images[: args.images], labels[: args.images]
    rows = compare(loaded, images, labels)
    info = machine_info()
    result = {
        "checkpoint": str(args.checkpoint),
        "images": len(images),
        "rows": rows,
        "machine": info,
        "wall_s": time.perf_counter() - started,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "choice.json", json.dumps(result, indent=2) + "\n")
    text = markdown(rows, str(args.checkpoint), len(images), info)
    atomic_write_text(args.out / "choice.md", text)
    print(text)


if __name__ == "__main__":
    main()
