"""`budget-edge evaluate`: sweep budgets on a trained BudgetNet checkpoint."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from budget_edge.commands.options import BUDGETS, SEED, BoundedInt, Renamed


def check_options(params: Mapping[str, Any], environ: Mapping[str, str]) -> None:
    """The ranges click's types leave open, by the options' text alone (nothing loaded):
    the command calls it first, and the docs test calls it on every documented
    `budget-edge evaluate` line."""
    from budget_edge.errors import ConfigError

    val_size = params["val_size"]
    too_small = (val_size is not None and val_size < 1) or params["batch_size"] < 1
    if too_small or params["latency_images"] < 0:
        raise ConfigError("--val-size and --batch-size must be >= 1, --latency-images >= 0")


@click.command("evaluate")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option(
    "--data",
    help="Dataset: fashion-mnist, cifar10, cifar100, folder "
    "(default: the one the checkpoint names).",
)
@click.option("--data-dir", type=click.Path(path_type=Path), help="Where the dataset lives.")
@click.option(
    "--budgets",
    type=BUDGETS,
    default="0.1:1.0:0.05",
    show_default=True,
    help="start:stop:step (stop included) or a comma list.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder for sweep.json, sweep.csv, sweep.md and the PNG plots.",
)
@click.option(
    "--eval-images",
    "--limit",  # the older name, kept for a release
    "limit",
    cls=Renamed,
    old=["--limit"],
    type=BoundedInt(),
    help="Evaluate only the first N test images (as pretrain, train and bench call it).",
)
@click.option(
    "--val-size",
    type=BoundedInt(),
    help="Last N training images: the split that ranks the static drop order and searches "
    "the static masks [5000]. A checkpoint with a validation split (pretrain --val-size) "
    "uses that split instead, or only its last N when N is smaller.",
)
@click.option("--batch-size", type=BoundedInt(), default=500, show_default=True)
@click.option(
    "--latency-images",
    type=BoundedInt(),
    default=50,
    show_default=True,
    help="Images timed one by one per budget (PyTorch latency, information only).",
)
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the random masks.")
@click.option(
    "--mode",
    type=click.Choice(["greedy", "rank", "allocate"]),
    help="greedy: keep p >= 0.5 (the paper); rank: keep the round(c K) most probable "
    "components of each image (the runtime's mode='rank'); allocate: each "
    "image's count from the checkpoint's allocator, c as the mean. Default: allocate "
    "when the checkpoint has an allocator (as its export runs), else greedy.",
)
@click.option(
    "--zoo",
    "zoo_text",
    default="",
    help="Comma list of backbone checkpoints trained on their own (smaller models "
    "of the same task): each is one point next to the sweep.",
)
def command(
    checkpoint: Path,
    data: str | None,
    data_dir: Path | None,
    budgets: list[float],
    out: Path,
    limit: int | None,
    val_size: int | None,
    batch_size: int,
    latency_images: int,
    seed: int,
    mode: str | None,
    zoo_text: str,
) -> None:
    """Sweep budgets: accuracy, usage, FLOPs, unique policies, baselines and plots.

    Per budget the agent picks each image's components (probability >= 0.5, or with
    --mode rank its round(c K) most probable ones);
    random masks and a static drop order run at the same usage for comparison.

    \b
    Example:
      budget-edge evaluate runs/r20-budgetnet/budgetnet.pt --data fashion-mnist \\
          --budgets 0.1:1.0:0.05 --out runs/r20-budgetnet/eval
    """
    import torch
    from rich.console import Console

    from budget_edge.commands.status import status_line
    from budget_edge.data.arrays import ImageArrays
    from budget_edge.data.registry import load_arrays
    from budget_edge.data.split import arranged_for_choices
    from budget_edge.data.torch_dataset import as_tensors, check_data_fits, preprocessing_of
    from budget_edge.errors import CheckpointError, ConfigError
    from budget_edge.evaluate import markdown_table, sweep, write_reports, zoo_point
    from budget_edge.models.checkpoint import load_checkpoint
    from budget_edge.runtime.machine import machine_info

    check_options(click.get_current_context().params, os.environ)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file: give a folder for the reports")
    loaded = load_checkpoint(checkpoint)
    if loaded.agent is None:
        raise CheckpointError(
            f"{checkpoint} holds a backbone without an agent, so there is no policy to "
            "evaluate; train one first: budget-edge train --checkpoint "
            f"{checkpoint} --out RUN, then evaluate RUN/budgetnet.pt"
        )
    if mode is None:  # as the checkpoint's export runs by default
        mode = "allocate" if loaded.allocator is not None else "greedy"
    if mode == "allocate" and loaded.allocator is None:
        raise CheckpointError(
            f"{checkpoint} has no allocator for --mode allocate: run "
            f"budget-edge allocate {checkpoint} --out CKPT2 first"
        )
    name = data or loaded.meta.get("dataset")
    if not name:
        raise ConfigError(f"{checkpoint} does not name its dataset; pass --data")
    test = load_arrays(name, data_dir, "test").subset(limit)
    train, val_count = arranged_for_choices(
        load_arrays(name, data_dir, "train"), loaded.meta, str(checkpoint)
    )
    if val_count:
        # The backbone's own validation split, which it never trained on; a smaller
        # --val-size (a quick run) takes part of it, never training images.
        val_size = val_count if val_size is None else min(val_size, val_count)
    elif val_size is None:
        val_size = 5000
    if val_size >= len(train.images):
        raise ConfigError(
            f"--val-size {val_size} is not smaller than the {len(train.images)} "
            f"training images of {name}: the static baselines are searched on "
            "the split's tail, so pass a smaller --val-size"
        )
    check_data_fits(test.info, loaded.backbone)
    val = ImageArrays(train.images[-val_size:], train.labels[-val_size:], train.info)
    mean, std = preprocessing_of(loaded.meta, test.info)
    images, labels = as_tensors(test, mean, std)
    val_images, val_labels = as_tensors(val, mean, std)

    # Zoo checkpoints load before the sweep: a wrong path fails in a second, not after it.
    zoo_models = [
        (path, load_checkpoint(path))
        for path in (Path(p) for p in zoo_text.split(",") if p.strip())
    ]
    for _, zoo in zoo_models:
        check_data_fits(test.info, zoo.backbone)

    console = Console(soft_wrap=True)  # a log keeps each line whole
    with status_line(console, f"evaluating {len(budgets)} budgets") as status:
        result = sweep(
            loaded.backbone,
            loaded.agent,
            images,
            labels,
            val_images,
            val_labels,
            budgets,
            seed=seed,
            batch_size=batch_size,
            latency_images=latency_images,
            progress=lambda done, total: status.update(f"evaluated {done}/{total} budgets"),
            mode=mode,
            allocator=loaded.allocator,
            say=status.update,
        )
    for path, zoo in zoo_models:
        zoo_images, _ = as_tensors(test, *preprocessing_of(zoo.meta, test.info))
        result.zoo.append(zoo_point(str(path), zoo.backbone, zoo_images, labels, batch_size))
    result.info = {
        **result.info,
        "checkpoint": str(checkpoint),
        "dataset": name,
        "split": "test",
        "validation": f"last {len(val)} training images",
        "backbone": loaded.backbone.config.get("name"),
        "extractor": loaded.agent.config.get("extractor"),
        "machine": {**machine_info(), "torch_threads": torch.get_num_threads()},
    }
    paths = write_reports(result, out)
    console.print(markdown_table(result), markup=False, highlight=False)
    console.print(f"wrote {', '.join(str(p) for p in paths)}")
