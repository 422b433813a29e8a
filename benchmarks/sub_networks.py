"""One network against a zoo: the best sub-network at each zoo member's FLOPs.

For a sandwich-trained backbone (`budget-edge pretrain --sandwich`) and zoo
members trained alone under the same recipe (benchmarks/fair_training.py):
for every zoo member Z, every depth sub-network (a prefix of each stage) with
at most Z's FLOPs that no block can be added to is evaluated on the
backbone's validation split with BatchNorm statistics recomputed for it; the
best there is then measured on the test set, next to Z's test accuracy (mean
and spread over Z's seeds) with 95% Wilson intervals and an exact McNemar test
against each seed. The test set chooses nothing.

    cd benchmarks/results/fair-fmnist
    python ../../sub_networks.py sandwich-resnet56-s0/best.pt \\
        --zoo 'resnet8-s?/best.pt,resnet14-s?/best.pt' --out sub-networks

(`s?`: one character, so not the 60-epoch `resnet20-s0-60ep`, another recipe.)
`fair_front.py` runs it with every seed of the zoo once all have finished.
Writes OUT/sub_networks.json and OUT/README.md. Minutes per zoo member on a
2-core CPU (each candidate: 2,000 images to recompute statistics, 5,000 to
validate).
"""

from __future__ import annotations

import argparse
import copy
import glob
import itertools
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from budget_edge.agent.masks import correct_under_masks
from budget_edge.bench.significance import mcnemar_exact, wilson_interval
from budget_edge.data.registry import load_arrays
from budget_edge.data.split import split_from_meta
from budget_edge.data.torch_dataset import as_tensors, preprocessing_of
from budget_edge.models import Backbone
from budget_edge.models.batchnorm import recalibrate_batchnorm
from budget_edge.models.checkpoint import load_checkpoint
from budget_edge.runtime.machine import machine_info
from budget_edge.train.sandwich import depth_mask, stage_lengths


@torch.no_grad()
def correct_of(
    net: Backbone, images: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None
) -> np.ndarray:
    """Per image, right or not, with one mask (K,) for every image (None: all kept)."""
    rows = None if mask is None else mask.reshape(1, -1).expand(len(images), -1)
    return correct_under_masks(net.eval(), images, labels, rows).numpy()


def maximal_depths(net: Backbone, flops_limit: int) -> list[tuple[int, ...]]:
    """Per-stage depths within the limit to which no stage can add a block."""
    lengths = stage_lengths(net)
    table = net.flops()
    fits = {
        depths
        for depths in itertools.product(*(range(1, n + 1) for n in lengths))
        if table.masked(depth_mask(net, depths).tolist()) <= flops_limit
    }
    return sorted(
        d
        for d in fits
        if not any(tuple(v + (i == s) for i, v in enumerate(d)) in fits for s in range(len(d)))
    )


def finished_training(best: Path) -> bool:
    """Whether the run that wrote `best` has trained all its epochs: a zoo member
    still training would make the zoo look worse than it is."""
    last = best.with_name("last.pt")
    if not last.exists():
        return True  # a checkpoint on its own: nothing says it is unfinished
    meta = load_checkpoint(last).meta
    return bool(meta.get("epoch", 0) >= meta.get("epochs", 0))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path, help="the sandwich-trained backbone")
    parser.add_argument(
        "--zoo", required=True, help="zoo checkpoints (best.pt): paths or globs, comma-separated"
    )
    parser.add_argument("--data-dir", help="Fashion-MNIST folder (default: Debian's)")
    parser.add_argument("--calibration-images", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    loaded = load_checkpoint(args.checkpoint)
    net, meta = loaded.backbone, loaded.meta
    rest, val, _ = split_from_meta(
        load_arrays(meta["dataset"], args.data_dir, "train"),
        meta.get("validation_split"),
        str(args.checkpoint),
    )
    test = load_arrays(meta["dataset"], args.data_dir, "test")
    norm = preprocessing_of(meta, test.info)
    val_x, val_y = as_tensors(val, *norm)
    test_x, test_y = as_tensors(test, *norm)
    pick = np.sort(np.random.default_rng(0).permutation(len(rest))[: args.calibration_images])
    calib_x, _ = as_tensors(type(rest)(rest.images[pick], rest.labels[pick], rest.info), *norm)
    batches = list(calib_x.split(200))

    zoo: dict[str, list[Any]] = {}
    for path in sorted(p for pattern in args.zoo.split(",") for p in glob.glob(pattern)):
        if not finished_training(Path(path)):
            print(f"{path}: its run has not finished (last.pt beside it): left out")
            continue
        member = load_checkpoint(path)
        zoo.setdefault(member.backbone.config["name"], []).append((path, member.backbone))
    full_flops = net.flops().total
    seen: dict[tuple[int, ...], dict[str, Any]] = {}

    def candidate(depths: tuple[int, ...]) -> dict[str, Any]:
        if depths not in seen:
            mask = depth_mask(net, depths)
            own = copy.deepcopy(net)
            recalibrate_batchnorm(own, mask, batches)
            seen[depths] = {
                "depths": list(depths),
                "flops": net.flops().masked(mask.tolist()),
                "val_accuracy": float(correct_of(own, val_x, val_y, mask).mean()),
                "net": own,
                "mask": mask,
            }
            print(f"  depths {depths}: val {seen[depths]['val_accuracy']:.2%}", flush=True)
        return seen[depths]

    rows = []
    for name, members in sorted(zoo.items(), key=lambda kv: kv[1][0][1].flops().total):
        limit = members[0][1].flops().total
        print(f"{name}: {limit / 1e6:.1f} MFLOPs, {len(members)} seed(s)", flush=True)
        best = max(
            (candidate(d) for d in maximal_depths(net, limit)), key=lambda c: c["val_accuracy"]
        )
        mine = correct_of(best["net"], test_x, test_y, best["mask"])
        theirs = [correct_of(m, test_x, test_y, None) for _, m in members]
        accuracies = [float(t.mean()) for t in theirs]
        rows.append(
            {
                "zoo": name,
                "zoo_flops": limit,
                "zoo_seeds": [p for p, _ in members],
                "zoo_test_accuracy": accuracies,
                "zoo_mean": statistics.mean(accuracies),
                "zoo_spread": statistics.pstdev(accuracies) if len(accuracies) > 1 else 0.0,
                "sub_network": best["depths"],
                "sub_network_flops": best["flops"],
                "sub_network_val_accuracy": best["val_accuracy"],
                "sub_network_test_accuracy": float(mine.mean()),
                "sub_network_ci": wilson_interval(int(mine.sum()), mine.size),
                "paired": [
                    {
                        "seed": p,
                        "delta": mcnemar_exact(mine, t).accuracy_delta,
                        "p_value": mcnemar_exact(mine, t).p_value,
                    }
                    for (p, _), t in zip(members, theirs, strict=True)
                ],
            }
        )
    full = correct_of(net, test_x, test_y, None)
    result = {
        "checkpoint": str(args.checkpoint),
        "full_flops": full_flops,
        "full_test_accuracy": float(full.mean()),
        "candidates": [
            {k: v for k, v in c.items() if k not in ("net", "mask")} for c in seen.values()
        ],
        "rows": rows,
        "machine": machine_info(),
        "command": " ".join(sys.argv),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sub_networks.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        f"# Sub-networks of `{args.checkpoint}` against the zoo",
        "",
        f"- machine: {result['machine']['cpu']}; command: `{result['command']}`",
        f"- full network: {result['full_test_accuracy']:.2%} test, {full_flops / 1e6:.1f} MFLOPs",
        "- sub-network: the best per-stage depth on the validation split among those within "
        "the zoo member's FLOPs (BatchNorm statistics recomputed for it); test only reports",
        "",
        "| zoo | MFLOPs | zoo test (mean, spread, seeds) | sub-network | MFLOPs | val "
        "| test (95% CI) | vs zoo seeds |",
        "|---|---:|---|---|---:|---:|---|---|",
    ]
    for r in rows:
        vs = ", ".join(f"{100 * q['delta']:+.2f} (p={q['p_value']:.2g})" for q in r["paired"])
        lines.append(
            f"| {r['zoo']} | {r['zoo_flops'] / 1e6:.1f} | "
            f"{r['zoo_mean']:.2%} ±{100 * r['zoo_spread']:.2f}, "
            f"{len(r['zoo_seeds'])} | {r['sub_network']} | {r['sub_network_flops'] / 1e6:.1f} | "
            f"{r['sub_network_val_accuracy']:.2%} | {r['sub_network_test_accuracy']:.2%} "
            f"({100 * r['sub_network_ci'][0]:.1f}-{100 * r['sub_network_ci'][1]:.1f}) | {vs} |"
        )
    (args.out / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
