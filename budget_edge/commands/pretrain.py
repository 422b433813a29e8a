"""`budget-edge pretrain`: train a backbone on a dataset."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from budget_edge.commands.options import SEED, THREADS, BoundedInt, FiniteFloat, Renamed

# The defaults train ResNet-20 on Fashion-MNIST past 92% test accuracy in well
# under an hour on 2 CPU cores (see docs/pretrain.md for the measurements).
DEFAULTS = {
    "epochs": 15,
    "batch_size": 128,
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "drop_prob": 0.0,
    "seed": 0,
    "precision": "fp32",
    "sandwich_random": 2,
}


def default_val_size(train_images: int) -> int:
    """10% of the training set, at most 5,000 (Fashion-MNIST's and CIFAR's 5,000)."""
    return min(5000, train_images // 10)


def resumed_setting(out: Path, name: str, before: Any) -> Any:
    """A setting of the run in `out` as last saved (`before`: for runs from before the
    setting existed, and where there is no run)."""
    from budget_edge.models.checkpoint import load_checkpoint

    last = out / "last.pt"
    if not last.is_file():
        return before  # pretrain itself says there is nothing to resume
    state = load_checkpoint(last, format="budget-edge").train_state or {}
    return state.get("config", {}).get(name, before)


def given_option(param: click.Parameter, value: Any) -> tuple[str, Any]:
    """(flag, value) as typed: an on/off pair's off spelling where it was given
    (`--no-channels-last` on resume changes the run), else the option's first name."""
    if value is False and param.secondary_opts:
        return param.secondary_opts[0], True
    return param.opts[0], value


def command_line(options: list[tuple[str, Any]]) -> str:
    """The full command, every option spelled out, for the checkpoint's meta.

    `options` are (flag, value) pairs; None and False values are left out,
    True values (flags) appear bare.
    """
    words = ["budget-edge", "pretrain"]
    for flag, value in options:
        if value is None or value is False:
            continue
        words += [flag] if value is True else [flag, str(value)]
    return shlex.join(words)


# Parameters of the command that are not PretrainConfig fields.
NOT_SETTINGS = ("data_dir", "out", "resume", "workers", "device", "threads", "quiet", "init")


def check_options(params: Mapping[str, Any], environ: Mapping[str, str]) -> None:
    """The settings' ranges and rules that click cannot state, by the options' text
    alone (nothing loaded): the command calls it first, and the docs test calls it on
    every documented `budget-edge pretrain` line."""
    from budget_edge.errors import ConfigError
    from budget_edge.train.pretrain import PretrainConfig

    if params["workers"] < 0:
        raise ConfigError(f"--workers must be >= 0, got {params['workers']}")
    if params["threads"] < 0:
        raise ConfigError(f"--threads must be >= 0, got {params['threads']}")
    settings = {k: v for k, v in params.items() if k not in NOT_SETTINGS}
    # "auto" (and the default, None) is fp32 or bf16; either passes the same checks.
    precision = "fp32" if settings["precision"] in ("auto", None) else settings["precision"]
    PretrainConfig(
        **{**settings, "val_size": settings["val_size"] or 0, "precision": precision}
    ).check()


@click.command("pretrain")
@click.option(
    "--backbone",
    default="resnet20",
    show_default=True,
    help="Backbone name: resnet8/14/20/32/44/56/110, resnext29, resnext56, ...",
)
@click.option(
    "--data",
    "dataset",
    default="fashion-mnist",
    show_default=True,
    help="Dataset: fashion-mnist, cifar10, cifar100 or folder.",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    help="Where the dataset lives (fashion-mnist: /usr/share/datasets/fashion-mnist; "
    "cifar: the python .tar.gz or its folder; folder: ROOT/<class>/*.png).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Run folder: last.pt every epoch, best.pt, history.json.",
)
@click.option("--epochs", type=BoundedInt(), default=DEFAULTS["epochs"], show_default=True)
@click.option(
    "--batch-size",
    type=BoundedInt(),
    default=DEFAULTS["batch_size"],
    show_default=True,
    help="Images per step and process.",
)
@click.option(
    "--lr",
    type=FiniteFloat(),
    default=DEFAULTS["lr"],
    show_default=True,
    help="Initial learning rate; cosine to 0, stepped every batch.",
)
@click.option("--momentum", type=FiniteFloat(), default=DEFAULTS["momentum"], show_default=True)
@click.option(
    "--weight-decay", type=FiniteFloat(), default=DEFAULTS["weight_decay"], show_default=True
)
@click.option(
    "--drop-prob",
    type=FiniteFloat(),
    default=DEFAULTS["drop_prob"],
    show_default=True,
    help="Stochastic depth: drop probability of the last block (linear in depth).",
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16", "auto"]),
    help="bf16 autocast (fast on CPUs with AMX/AVX512-BF16 and on recent GPUs, slow "
    "elsewhere); auto: bf16 where the device has it, else fp32. [default: fp32; with "
    "--resume, the run's own, which this may change]",
)
@click.option(
    "--channels-last/--no-channels-last",
    default=None,
    help="The channels-last memory format (faster fp32 training on some CPUs: "
    "docs/pretrain.md). [default: off; with --resume, the run's own, which this may change]",
)
@click.option(
    "--warmup-epochs",
    type=FiniteFloat(),
    default=0.0,
    show_default=True,
    help="Linear learning-rate warmup before the cosine, in epochs (fractions allowed).",
)
@click.option(
    "--zero-init-residual",
    is_flag=True,
    help="Start the BatchNorm ending each residual branch at scale 0 (deep networks and "
    "sandwich training start from their shortcuts).",
)
@click.option(
    "--val-size",
    type=BoundedInt(),
    help="Training images held out as the validation split (the same images for every "
    "model of the dataset with this size); it picks best.pt, the test set only reports. "
    "0: none. Default: 10% of the training set, at most 5000; with --resume, what the "
    "run used.",
)
@click.option(
    "--sandwich",
    is_flag=True,
    help="Sandwich training with in-place distillation: each step also trains the "
    "smallest sub-network and --sandwich-random sampled ones on the full network's outputs.",
)
@click.option(
    "--sandwich-random",
    type=BoundedInt(),
    default=DEFAULTS["sandwich_random"],
    show_default=True,
    help="Sampled sub-networks per step with --sandwich.",
)
@click.option(
    "--init",
    type=click.Path(path_type=Path),
    help="Start from this checkpoint's backbone weights (e.g. the same network trained on "
    "its own, then made adaptive with --sandwich); it must hold out the same validation "
    "split. Its SHA-256 is recorded; --resume continues from last.pt.",
)
@click.option("--seed", type=SEED, default=DEFAULTS["seed"], show_default=True)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in --out from last.pt, exactly where it stopped.",
)
@click.option("--limit-train", type=BoundedInt(), help="Use only the first N training images.")
@click.option(
    "--eval-images",
    "--limit-test",  # the older name, kept for a release
    "limit_test",
    cls=Renamed,
    old=["--limit-test"],
    type=BoundedInt(),
    help="Score only the first N test images after each epoch (as train, evaluate and "
    "bench call it).",
)
@click.option(
    "--workers",
    type=BoundedInt(),
    default=0,
    show_default=True,
    help="DataLoader worker processes (augmentation is batched; 0 is usually best).",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="auto: the GPU if there is one.",
)
@click.option(
    "--threads",
    type=THREADS,
    default=0,
    show_default=True,
    help="CPU threads per process; 0: the cores shared among local processes.",
)
@click.option("--quiet", is_flag=True, help="Print nothing but errors.")
def command(
    data_dir: Path | None,
    out: Path,
    resume: bool,
    workers: int,
    device: str,
    threads: int,
    quiet: bool,
    init: Path | None,
    **settings: Any,
) -> None:
    """Train a backbone with SGD, a cosine learning rate and optional stochastic depth.

    Evaluates after every epoch and writes OUT/last.pt (resumable with
    --resume), OUT/best.pt and OUT/history.json. Under torchrun it trains with
    DistributedDataParallel (gloo on CPU, NCCL on GPU); rank 0 writes.

    \b
    Example:
      budget-edge pretrain --backbone resnet20 --data fashion-mnist --epochs 15 --out runs/r20
      budget-edge pretrain --backbone resnet56 --sandwich --epochs 30 --out runs/r56-sandwich
      budget-edge pretrain --backbone resnet56 --sandwich --init runs/r56/best.pt \\
          --epochs 10 --lr 0.01 --out runs/r56-sandwich-from-r56
      torchrun --standalone --nproc_per_node 2 -m budget_edge.cli pretrain --out runs/r20
    """
    from budget_edge.data import load_arrays
    from budget_edge.errors import ConfigError
    from budget_edge.train.precision import resolve_precision
    from budget_edge.train.pretrain import PretrainConfig, RunOptions, pretrain
    from budget_edge.train.warm_start import init_digest

    check_options(click.get_current_context().params, os.environ)  # typos first
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file: give a folder for the run")
    train = load_arrays(settings["dataset"], data_dir, "train")
    if settings["val_size"] is None:
        settings["val_size"] = (
            resumed_setting(out, "val_size", 0) if resume else default_val_size(len(train))
        )
    if settings["precision"] is None:  # a resumed run keeps its own unless told otherwise
        fp32 = DEFAULTS["precision"]
        settings["precision"] = resumed_setting(out, "precision", fp32) if resume else fp32
    settings["precision"] = resolve_precision(settings["precision"], device)
    if resume:
        # The weights come from last.pt: the run keeps the start it recorded, and an
        # --init given again (a queue repeats its command) need not be there any more.
        settings["init_sha256"] = resumed_setting(out, "init_sha256", None)
        if init is not None and init.is_file() and init_digest(init) != settings["init_sha256"]:
            raise ConfigError(f"--resume: {out} did not start from --init {init}")
        init = None
    elif init is not None:
        settings["init_sha256"] = init_digest(init)
    if settings["channels_last"] is None:
        keep = resumed_setting(out, "channels_last", False) if resume else False
        settings["channels_last"] = bool(keep)
    config = PretrainConfig(**settings)
    config.check()
    ctx = click.get_current_context()
    # Declaration order and the flags as typed (--data, not the parameter name).
    given = [given_option(p, ctx.params.get(p.name or "")) for p in ctx.command.params if p.opts]
    options = RunOptions(
        device=device,
        workers=workers,
        threads=threads,
        progress=not quiet,
        command=command_line(given),
    )
    test = load_arrays(config.dataset, data_dir, "test")
    pretrain(config, train, test, out, resume=resume, options=options, init=init)
