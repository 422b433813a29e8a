"""`budget-edge train`: train the BudgetNet agent on a pretrained backbone."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from budget_edge.commands.options import SEED, THREADS, BoundedInt, FiniteFloat

USAGE_CHOICES = ("components", "flops")
EXTRACTOR_CHOICES = ("auto", "resnet8", "light")


# Parameters of the command that are not training settings.
NOT_SETTINGS = ("checkpoint", "out", "resume", "preset")


def check_options(params: Mapping[str, Any], environ: Mapping[str, str]) -> None:
    """The rules between train's options that click cannot state, by their text alone
    (--resume takes no settings, a new run needs --checkpoint, the settings' ranges):
    the command calls it first, and the docs test calls it on every documented
    `budget-edge train` line."""
    from budget_edge.errors import ConfigError
    from budget_edge.train.budgetnet import RESUME_OVERRIDES, make_config

    options = {k: v for k, v in params.items() if k not in NOT_SETTINGS}
    if params["resume"]:
        given = [k for k, v in options.items() if v is not None and k not in RESUME_OVERRIDES]
        if params["checkpoint"] is not None or params["preset"] is not None or given:
            raise ConfigError(
                "--resume continues the run in --out with its own settings; drop the other "
                f"options (only --{', --'.join(RESUME_OVERRIDES)} may change)"
            )
    else:
        if params["checkpoint"] is None:
            raise ConfigError("give the pretrained backbone with --checkpoint PATH")
        make_config(params["preset"], **options)  # each setting in its range


@click.command("train")
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    help="Pretrained backbone: any checkpoint budget-edge reads (own, akamaster, ...).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Run folder: last.pt after every epoch, budgetnet.pt at the end, history.json.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in --out from last.pt with its settings "
    "(--device, --threads, --workers may change).",
)
@click.option(
    "--preset",
    type=click.Choice(["demo", "paper"]),
    help="demo: minutes on a subset; paper: the full schedule (options override it).",
)
@click.option(
    "--data",
    help="Dataset: fashion-mnist, cifar10, cifar100, folder "
    "(default: the one the checkpoint names).",
)
@click.option("--data-dir", type=click.Path(path_type=Path), help="Where the dataset lives.")
@click.option("--limit-train", type=BoundedInt(), help="Use only the first N training images.")
@click.option(
    "--eval-images",
    type=BoundedInt(),
    help="Images for the check after each epoch: the validation split's first N (test "
    "images without a split).",
)
@click.option(
    "--curriculum-epochs", type=BoundedInt(), help="Stage 1: agent only, backbone frozen."
)
@click.option("--finetune-epochs", type=BoundedInt(), help="Stage 2: agent and backbone together.")
@click.option(
    "--forced-epochs",
    type=FiniteFloat(),
    help="Epochs for the forced-on components i to reach 0 (default: half stage 1).",
)
@click.option(
    "--budget-epochs",
    type=FiniteFloat(),
    help="Epochs for c_min to fall from 1.0 to 0.1 (default: half stage 1).",
)
@click.option(
    "--curriculum-unit",
    type=click.Choice(["batch", "epoch"]),
    help="Move the curriculum every batch (smooth) or every epoch (the reference).",
)
@click.option("--batch-size", type=BoundedInt(), help="Images per step and process [256].")
@click.option("--lr", type=FiniteFloat(), help="Agent learning rate in stage 1 [1e-3].")
@click.option("--finetune-lr", type=FiniteFloat(), help="Agent learning rate in stage 2 [1e-3].")
@click.option("--backbone-lr", type=FiniteFloat(), help="Backbone learning rate in stage 2 [1e-4].")
@click.option(
    "--gamma", type=FiniteFloat(), help="Eq. 4: penalty scale for wrong predictions [1.0]."
)
@click.option(
    "--omega", type=FiniteFloat(), help="Eq. 4: extra penalty for exceeding the budget [0.5]."
)
@click.option("--alpha", type=FiniteFloat(), help="Eq. 11: exploration bound [0.8].")
@click.option("--beta", type=FiniteFloat(), help="Eq. 11: bound decay per epoch [1/all epochs].")
@click.option("--value-coef", type=FiniteFloat(), help="Weight of the value loss, Eq. 9 [1.0].")
@click.option(
    "--entropy-coef", type=FiniteFloat(), help="Weight of the optional entropy bonus [0]."
)
@click.option(
    "--usage",
    type=click.Choice(USAGE_CHOICES),
    help="Budget usage as a fraction of components (paper) or of FLOPs.",
)
@click.option(
    "--prior",
    type=click.Choice(["static", "prefix", "none"]),
    help="Starting policy: static drop order (default), last blocks first, or the "
    "paper's plain initialisation (none); see docs/budgetnet.md.",
)
@click.option(
    "--prior-sharpness",
    type=FiniteFloat(),
    help="Slope in c of the starting policy's logits [4 K].",
)
@click.option(
    "--prior-images",
    type=BoundedInt(),
    help="With --prior static: validation images that rank the components' drop order "
    "(the last training images without a split) [2000].",
)
@click.option(
    "--extractor",
    type=click.Choice(EXTRACTOR_CHOICES),
    help="Agent feature extractor: resnet8 (reference), light (about 10x cheaper) or "
    "auto (resnet8 unless it costs over 5% of the backbone) [auto].",
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16", "auto"]),
    help="bf16: autocast the forward passes, about 2x faster on CPUs with AMX or "
    "AVX512-BF16, slow elsewhere; auto: bf16 where the device has it [fp32]. A resumed "
    "run may change it.",
)
@click.option("--workers", type=BoundedInt(), help="DataLoader worker processes [0].")
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    help="Where to train [auto: the GPU if there is one].",
)
@click.option(
    "--threads", type=THREADS, help="CPU threads per process [0: the cores shared among processes]."
)
@click.option("--seed", type=SEED, help="Random seed [0].")
def command(
    checkpoint: Path | None, out: Path, resume: bool, preset: str | None, **options: Any
) -> None:
    """Train the BudgetNet agent: curriculum, then joint fine-tuning.

    Stage 1 freezes the backbone and trains the agent with the actor-critic
    losses while the curriculum widens (fewer forced components, lower budgets);
    stage 2 fine-tunes backbone and agent together. Run it under torchrun for
    several processes (DDP, gloo on CPU).

    \b
    Example:
      budget-edge train --checkpoint runs/r20/backbone.pt --data fashion-mnist \\
          --preset paper --out runs/r20-budgetnet
      torchrun --nproc_per_node 2 -m budget_edge.cli train --checkpoint ... --out ...
    """
    from budget_edge.errors import ConfigError
    from budget_edge.train.budgetnet import RESUME_OVERRIDES, make_config, train_budgetnet

    check_options(click.get_current_context().params, os.environ)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file: give a folder for the run")
    config = None
    overrides = {key: options.pop(key) for key in RESUME_OVERRIDES}
    if not resume:
        config = make_config(preset, **options, **overrides)
    train_budgetnet(out, checkpoint, config, resume=resume, resume_overrides=overrides)
