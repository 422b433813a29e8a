"""`budget-edge allocate`: add an allocator to a trained BudgetNet checkpoint."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from budget_edge.commands import command_line
from budget_edge.commands.options import SEED, THREADS, BoundedInt, FiniteFloat

if TYPE_CHECKING:
    from budget_edge.train.allocator import AllocatorConfig


def config_of(params: Mapping[str, Any]) -> AllocatorConfig:
    from budget_edge.train.allocator import AllocatorConfig

    calib_images = params["calib_images"]
    return AllocatorConfig(
        epochs=params["epochs"],
        batch_size=params["batch_size"],
        lr=params["lr"],
        calib_images=5000 if calib_images is None else calib_images,
        seed=params["seed"],
        accuracy_slack=None if params["no_saturation"] else params["accuracy_slack"],
    )


def check_options(params: Mapping[str, Any], environ: Mapping[str, str]) -> None:
    """The settings' ranges, by the options' text alone (nothing loaded): the command
    calls it first, and the docs test calls it on every documented `budget-edge
    allocate` line."""
    from budget_edge.errors import ConfigError

    config_of(params).check()
    if params["threads"] is not None and params["threads"] < 1:
        raise ConfigError("--threads must be >= 1")


@click.command("allocate")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="The checkpoint with the allocator (backbone and agent unchanged).",
)
@click.option(
    "--data",
    help="Dataset: fashion-mnist, cifar10:PATH, ... (default: the one "
    "the checkpoint names). Only its training split is read.",
)
@click.option("--data-dir", type=click.Path(path_type=Path), help="Where the dataset lives.")
@click.option("--limit-train", type=BoundedInt(), help="Use only the first N training images.")
@click.option(
    "--calib-images",
    type=BoundedInt(),
    help="The training split's last N images: calibration only, never fitted on [5000]. "
    "A checkpoint with a validation split calibrates on that split, or only on its "
    "last N when N is smaller (the rest of it then left out).",
)
@click.option("--epochs", type=BoundedInt(), default=8, show_default=True)
@click.option("--batch-size", type=BoundedInt(), default=256, show_default=True)
@click.option("--lr", type=FiniteFloat(), default=2e-3, show_default=True)
@click.option("--threads", type=THREADS, help="CPU threads [torch's default].")
@click.option(
    "--accuracy-slack",
    type=FiniteFloat(),
    default=0.001,
    show_default=True,
    help="Held-out accuracy (a fraction) a budget may give up against the best "
    "budget: components that buy less are not run, so usage stays under high "
    "budgets.",
)
@click.option(
    "--no-saturation",
    is_flag=True,
    help="Spend up to c at every budget, even where it buys no accuracy.",
)
@click.option("--seed", type=SEED, default=0, show_default=True)
def command(
    checkpoint: Path,
    out: Path,
    data: str | None,
    data_dir: Path | None,
    limit_train: int | None,
    calib_images: int | None,
    epochs: int,
    batch_size: int,
    lr: float,
    threads: int | None,
    accuracy_slack: float,
    no_saturation: bool,
    seed: int,
) -> None:
    """Train the allocator: how many of the agent's components each image runs.

    With it, `mode="allocate"` spends a budget c as a mean over images: easy images
    run fewer components, hard ones more (docs/budgetnet.md). Above the budget
    where held-out accuracy saturates, usage stays there (--accuracy-slack). Takes K + 1 passes
    over the training images, then a few minutes; the pass results are kept in
    OUT.levels.npz, so a rerun after a crash skips them.

    \b
    Example:
      budget-edge allocate runs/r20-budgetnet/budgetnet.pt --data fashion-mnist \\
          --out runs/r20-budgetnet/allocated.pt
    """
    import dataclasses

    import numpy as np
    import torch
    from rich.console import Console

    from budget_edge.data.arrays import ImageArrays
    from budget_edge.data.registry import load_arrays
    from budget_edge.data.split import arranged_for_choices
    from budget_edge.data.torch_dataset import as_tensors, check_data_fits, preprocessing_of
    from budget_edge.errors import ConfigError
    from budget_edge.models.checkpoint import load_checkpoint
    from budget_edge.train.allocator import train_allocator

    params = click.get_current_context().params
    check_options(params, os.environ)  # before anything is loaded
    cfg = config_of(params)
    if threads is not None:
        torch.set_num_threads(threads)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder: give the checkpoint file to write")
    loaded = load_checkpoint(checkpoint)
    name = data or loaded.meta.get("dataset")
    if not name:
        raise ConfigError(f"{checkpoint} does not name its dataset; pass --data")
    train, val_count = arranged_for_choices(
        load_arrays(name, data_dir, "train"), loaded.meta, str(checkpoint), limit_train
    )
    if val_count and calib_images is not None and calib_images < val_count:
        # A quick run: the split's last N images calibrate, and the rest of the split
        # is left out, so the fit still never sees a validation image.
        end = len(train.images)
        keep = np.r_[0 : end - val_count, end - calib_images : end]
        train = ImageArrays(train.images[keep], train.labels[keep], train.info)
        val_count = calib_images
    check_data_fits(train.info, loaded.backbone)
    images, labels = as_tensors(train, *preprocessing_of(loaded.meta, train.info))
    console = Console(soft_wrap=True)  # a log keeps each line whole
    source = f"{name} training split"
    if val_count:
        # The backbone's validation split, which nothing has trained on, calibrates.
        cfg = dataclasses.replace(cfg, calib_images=val_count)
        source = f"{name} validation split of {checkpoint}"
        console.print(f"calibrating on the checkpoint's validation split: {val_count} images")
    train_allocator(
        loaded,
        images,
        labels,
        out,
        cfg,
        source=source,
        progress=lambda text: console.print(text, highlight=False),
        meta={"allocate_command": command_line(click.get_current_context())},
    )
    console.print(f"wrote {out}")
