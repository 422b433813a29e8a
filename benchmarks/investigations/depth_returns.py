"""Does depth pay on this dataset under one recipe? Each run's best epoch, paired on test.

For networks trained alone under the fair comparison's recipe
(`benchmarks/fair_training.py`): each run's `best.pt` (its best epoch on the
validation split) is scored on that split and on the test set, and paired image by
image with a reference run on the test set (exact McNemar; ResNet-20 by default).
Beside it, each run's accuracy on its own (augmented) training images in its last
epoch, from `history.json`: a deeper network that fits its training images better
but is no better on held-out images has stopped gaining from depth here.

    cd benchmarks/results/fair-fmnist
    python ../../investigations/depth_returns.py resnet8-s0 resnet14-s0 resnet20-s0 \\
        resnet32-s0 resnet56-s0 --against resnet20-s0 --out depth

Writes OUT/depth_returns.json and OUT/README.md. About a minute per ResNet-56 on one
core (15,000 images).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from budget_edge.agent.masks import correct_under_masks
from budget_edge.bench.significance import mcnemar_exact, wilson_interval
from budget_edge.data.registry import load_arrays
from budget_edge.data.split import split_from_meta
from budget_edge.data.torch_dataset import as_tensors, preprocessing_of
from budget_edge.models.checkpoint import load_checkpoint
from budget_edge.runtime.machine import machine_info


def finished(history: list[dict[str, Any]], meta: dict[str, Any]) -> bool:
    """Whether the run has trained all its epochs: a run still training would make its
    depth look worse than it is."""
    return len(history) >= meta["epochs"]


@torch.no_grad()
def score_run(run: Path, data_dir: str | None) -> dict[str, Any]:
    """The run's best epoch, image by image on its validation split and the test set."""
    loaded = load_checkpoint(run / "best.pt")
    net, meta = loaded.backbone.eval(), loaded.meta
    history = json.loads((run / "history.json").read_text())["epochs"]
    if not finished(history, meta):
        raise SystemExit(f"{run}: {len(history)} of {meta['epochs']} epochs; wait for the run")
    _, val, _ = split_from_meta(
        load_arrays(meta["dataset"], data_dir, "train"), meta.get("validation_split"), str(run)
    )
    test = load_arrays(meta["dataset"], data_dir, "test")
    norm = preprocessing_of(meta, test.info)
    return {
        "run": run.name,
        "backbone": net.config["name"],
        "dataset": meta["dataset"],
        "mflops": net.flops().total / 1e6,
        "best_epoch": meta["epoch"],
        "train_accuracy_last_epoch": history[-1]["train_accuracy"],
        "val": correct_under_masks(net, *as_tensors(val, *norm), None).numpy(),
        "test": correct_under_masks(net, *as_tensors(test, *norm), None).numpy(),
    }


def compare(scored: list[dict[str, Any]], against: str) -> list[dict[str, Any]]:
    """One row per run: accuracies with 95% intervals, and the paired test against one run."""
    reference = next((s for s in scored if s["run"] == against), None)
    if reference is None:
        raise SystemExit(f"--against {against}: not among the runs given")
    datasets = {s["dataset"] for s in scored}
    if len(datasets) > 1:
        raise SystemExit(f"the runs were trained on different data ({', '.join(sorted(datasets))})")
    rows = []
    for s in sorted(scored, key=lambda s: s["mflops"]):
        row = {k: v for k, v in s.items() if k not in ("val", "test")}
        row["val_accuracy"] = float(s["val"].mean())
        row["test_accuracy"] = float(s["test"].mean())
        row["test_ci"] = wilson_interval(int(s["test"].sum()), s["test"].size)
        if s is not reference:
            test = mcnemar_exact(s["test"], reference["test"])
            row["against"] = {"run": against, "delta": test.accuracy_delta, "p": test.p_value}
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], command: str, cpu: str) -> str:
    lines = [
        "# Does depth pay? Each network trained alone, its best epoch on validation",
        "",
        f"- machine: {cpu}; command: `{command}`",
        "- train: accuracy on its own augmented training images in the last epoch "
        "(history.json); test only reports",
        "",
        "| run | MFLOPs | train (last epoch) | val | test (95% CI) | paired on test |",
        "|---|---:|---:|---:|---|---|",
    ]
    for r in rows:
        lo, hi = r["test_ci"]
        paired = ""
        if "against" in r:
            a = r["against"]
            paired = f"{100 * a['delta']:+.2f} vs {a['run']}, p = {a['p']:.2g}"
        lines.append(
            f"| {r['run']} | {r['mflops']:.1f} | {r['train_accuracy_last_epoch']:.2%} | "
            f"{r['val_accuracy']:.2%} | {r['test_accuracy']:.2%} ({100 * lo:.1f}-{100 * hi:.1f}) "
            f"| {paired} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (best.pt, history.json)")
    parser.add_argument("--against", default="resnet20-s0", help="the reference run's folder name")
    parser.add_argument("--data-dir", help="Fashion-MNIST folder (default: Debian's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    scored = []
    for run in args.runs:
        scored.append(score_run(run, args.data_dir))
        print(f"{run}: test {scored[-1]['test'].mean():.2%}", flush=True)
    rows = compare(scored, args.against)
    machine = machine_info()
    command = " ".join(sys.argv)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"rows": rows, "machine": machine, "command": command}
    (args.out / "depth_returns.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "README.md").write_text(markdown(rows, command, machine["cpu"]))
    print(markdown(rows, command, machine["cpu"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
