"""Would the allocator's counts pay with the searched static masks instead of the agent's ranking?

A question for the next step, measured before building anything: mode
'allocate' runs, per image, the agent's top-k components with k from the
allocator. The artifact's static masks (`export --static-masks`) are nested
(greedy backward elimination), one per count, so "the allocator's k, the
static mask of size k" would need no agent at all (half the decision's
weights) and at most K + 1 distinct masks (each a whole-mask graph). This
script measures its accuracy and usage on the Fashion-MNIST test set through
the runtime, next to mode 'allocate' and the static mask of round(c K)
components, with the same calibrated prices:

    python benchmarks/allocate_static_masks.py ARTIFACT --out benchmarks/results/NAME/static-counts

Writes static-counts.json and static-counts.md. Accuracy only: the latency of
such a mode would need its own graph (the allocator without the agent).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from budget_edge.data.registry import load_arrays
from budget_edge.runtime import allocation
from budget_edge.runtime.machine import machine_info
from budget_edge.runtime.runtime import BudgetRuntime

CHUNK = 500


def chances_of(rt: BudgetRuntime, images: np.ndarray) -> np.ndarray:
    return np.concatenate([rt.run_allocator(images[s:s + CHUNK])
                           for s in range(0, len(images), CHUNK)])


def accuracy(rt: BudgetRuntime, images: np.ndarray, labels: np.ndarray,
             masks: np.ndarray) -> float:
    right = 0
    for s in range(0, len(images), CHUNK):
        out = rt.infer(images[s:s + CHUNK], mask=masks[s:s + CHUNK])
        right += int((out.classes == labels[s:s + CHUNK]).sum())
    return right / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("artifact")
    parser.add_argument("--out", required=True, help="path prefix of the .json and .md")
    parser.add_argument("--budgets", default="0.2,0.3,0.4,0.5,0.6,0.7,0.8")
    args = parser.parse_args()
    rt = BudgetRuntime.load(args.artifact, threads=1)
    if not (rt.has_allocator and rt.has_static_masks):
        raise SystemExit("the artifact needs an allocator and static masks "
                         "(`budget-edge export CKPT --static-masks DATA`)")
    spec = rt.manifest.allocation
    assert spec is not None
    table_budgets, prices = np.asarray(spec.budgets), np.asarray(spec.prices)
    test = load_arrays("fashion-mnist", None, "test")
    images, labels = test.images, np.asarray(test.labels)
    chances = chances_of(rt, images)
    k = rt.num_components
    rows = []
    for c in (float(v) for v in args.budgets.split(",")):
        price = allocation.prices_for(np.full(len(images), c), table_budgets, prices)
        counts = allocation.counts_for(chances, price)
        static_counts = rt._static_table[counts]  # the static mask of each image's count
        agent = np.concatenate([rt.infer(images[s:s + CHUNK], budget=c, mode="allocate").mask
                                for s in range(0, len(images), CHUNK)])
        one = rt._static_masks(np.array([c], np.float32))  # round(c K) for every image
        rows.append({
            "budget": c,
            "usage": float(counts.mean() / k),
            "allocate_accuracy": accuracy(rt, images, labels, agent),
            "allocate_masks": len(np.unique(agent, axis=0)),
            "static_counts_accuracy": accuracy(rt, images, labels, static_counts),
            "static_counts_usage": float(static_counts.mean()),
            "static_counts_masks": len(np.unique(static_counts, axis=0)),
            "static_mask_accuracy": accuracy(rt, images, labels,
                                             np.repeat(one, len(images), axis=0)),
            "static_mask_usage": float(one.mean()),
        })
        print(rows[-1], flush=True)
    result = {"artifact": args.artifact, "machine": machine_info(),
              "command": f"python benchmarks/allocate_static_masks.py {args.artifact} "
                         f"--out {args.out} --budgets {args.budgets}", "budgets": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# The allocator's counts with the static masks ({args.artifact})", "",
             f"- command: `{result['command']}`", "- Fashion-MNIST test set, 10,000 images",
             "", "| c | allocate (agent's ranking) | usage | masks | allocator counts, static "
             "masks | usage | masks | static mask of round(c K) | usage |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['budget']:g} | {r['allocate_accuracy']:.2%} | {r['usage']:.3f} | "
                     f"{r['allocate_masks']} | {r['static_counts_accuracy']:.2%} | "
                     f"{r['static_counts_usage']:.3f} | {r['static_counts_masks']} | "
                     f"{r['static_mask_accuracy']:.2%} | {r['static_mask_usage']:.3f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
