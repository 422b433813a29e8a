"""Does the allocator need the agent's per-image ranking, or would one mask per count do?

Measured before building the table of count masks: an artifact whose allocator
ranks with the agent per image (an allocator saved before `count_masks`, such as
`budgetnet-resnet20-allocate/allocated-ranking.pt`) runs, per image, the agent's
top-k components with k from the allocator. With the same counts (the same
calibrated prices) this script runs instead, on the Fashion-MNIST test set
through the runtime:

- the artifact's searched static mask of size k (`export --static-masks`:
  nested, greedy backward elimination);
- the agent's most common top-k mask at budget k / K over the last 5,000
  training images (what `budget-edge allocate` now stores as the table);

next to the static mask of round(c K) components for every image:

    python benchmarks/investigations/allocate_static_masks.py ARTIFACT \\
        --out benchmarks/results/NAME/static-counts

Writes the .json and .md. Accuracy only: either variant needs no agent at run
time, only the allocator graph.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from budget_edge.agent.masks import most_frequent_masks
from budget_edge.data.registry import load_arrays
from budget_edge.runtime import allocation
from budget_edge.runtime.machine import machine_info
from budget_edge.runtime.runtime import BudgetRuntime

CHUNK = 500


def chances_of(rt: BudgetRuntime, images: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [rt.run_allocator(images[s : s + CHUNK]) for s in range(0, len(images), CHUNK)]
    )


def accuracy(rt: BudgetRuntime, images: np.ndarray, labels: np.ndarray, masks: np.ndarray) -> float:
    right = 0
    for s in range(0, len(images), CHUNK):
        out = rt.infer(images[s : s + CHUNK], mask=masks[s : s + CHUNK])
        right += int((out.classes == labels[s : s + CHUNK]).sum())
    return right / len(images)


def agent_count_masks(rt: BudgetRuntime, images: np.ndarray) -> np.ndarray:
    """(K + 1, K): the agent's most common top-k mask at budget k / K on `images`."""
    k = rt.num_components
    rows = []
    for count in range(k + 1):
        masks = np.concatenate(
            [
                rt.infer(images[s : s + CHUNK], budget=count / k, mode="rank").mask
                for s in range(0, len(images), CHUNK)
            ]
        )
        rows.append(most_frequent_masks(masks, 1)[0])
    return np.array(rows, np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("artifact")
    parser.add_argument("--out", required=True, help="path prefix of the .json and .md")
    parser.add_argument("--budgets", default="0.2,0.3,0.4,0.5,0.6,0.7,0.8")
    args = parser.parse_args()
    rt = BudgetRuntime.load(args.artifact, threads=1)
    if not (rt.has_allocator and rt.has_static_masks):
        raise SystemExit(
            "the artifact needs an allocator and static masks "
            "(`budget-edge export CKPT --static-masks DATA`)"
        )
    spec = rt.manifest.allocation
    assert spec is not None
    table_budgets, prices = np.asarray(spec.budgets), np.asarray(spec.prices)
    table = agent_count_masks(rt, load_arrays("fashion-mnist", None, "train").images[-5000:])
    test = load_arrays("fashion-mnist", None, "test")
    images, labels = test.images, np.asarray(test.labels)
    chances = chances_of(rt, images)
    k = rt.num_components
    rows = []
    for c in (float(v) for v in args.budgets.split(",")):
        price = allocation.prices_for(np.full(len(images), c), table_budgets, prices)
        counts = allocation.counts_for(chances, price)
        static_counts = rt._static_table[counts]  # the static mask of each image's count
        agent = np.concatenate(
            [
                rt.infer(images[s : s + CHUNK], budget=c, mode="allocate").mask
                for s in range(0, len(images), CHUNK)
            ]
        )
        one = rt._static_masks(np.array([c], np.float32))  # round(c K) for every image
        table_counts = table[counts]
        rows.append(
            {
                "budget": c,
                "usage": float(counts.mean() / k),
                "allocate_accuracy": accuracy(rt, images, labels, agent),
                "allocate_masks": len(np.unique(agent, axis=0)),
                "static_counts_accuracy": accuracy(rt, images, labels, static_counts),
                "static_counts_usage": float(static_counts.mean()),
                "static_counts_masks": len(np.unique(static_counts, axis=0)),
                "table_accuracy": accuracy(rt, images, labels, table_counts),
                "table_masks": len(np.unique(table_counts, axis=0)),
                "static_mask_accuracy": accuracy(
                    rt, images, labels, np.repeat(one, len(images), axis=0)
                ),
                "static_mask_usage": float(one.mean()),
            }
        )
        print(rows[-1], flush=True)
    result = {
        "artifact": args.artifact,
        "machine": machine_info(),
        "command": "python benchmarks/investigations/allocate_static_masks.py "
        f"{args.artifact} --out {args.out} --budgets {args.budgets}",
        "budgets": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    result["table"] = table.tolist()
    lines = [
        f"# The allocator's counts with other masks ({args.artifact})",
        "",
        f"- command: `{result['command']}`",
        "- Fashion-MNIST test set, 10,000 images",
        f"- machine: {result['machine'].get('cpu', '?')}",
        "",
        "| c | allocate (agent's ranking) | usage | masks | allocator counts, the agent's "
        "most common mask per count | masks | allocator counts, static masks | usage | "
        "masks | static mask of round(c K) | usage |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['budget']:g} | {r['allocate_accuracy']:.2%} | {r['usage']:.3f} | "
            f"{r['allocate_masks']} | {r['table_accuracy']:.2%} | "
            f"{r['table_masks']} | {r['static_counts_accuracy']:.2%} | "
            f"{r['static_counts_usage']:.3f} | {r['static_counts_masks']} | "
            f"{r['static_mask_accuracy']:.2%} | {r['static_mask_usage']:.3f} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
