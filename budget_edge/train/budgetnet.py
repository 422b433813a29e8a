"""BudgetNet training: actor-critic with a curriculum, then joint fine-tuning.

Reads top to bottom like a CleanRL script. One step of `train_epoch`:

    budgets c ~ U[c_min, 1]                       curriculum (per image)
    s, V = agent(x, c)                            Eq. 2, 3
    s' = explore(s)                               Eq. 11
    u ~ Bernoulli(s'), first i components on      Eq. 1, curriculum
    logits = backbone(x, u)                       masked forward: dropped parts cost nothing
    R = reward(usage(u), c, correct)              Eq. 4
    A = R - V                                     Eq. 7
    loss = -A log pi(u) + smooth_l1(R - V)        Eq. 8, 9-10 (+ optional entropy bonus)
         (+ cross-entropy of the logits in joint fine-tuning)

Stage 1 (curriculum): the backbone is frozen in eval mode; only the agent
learns. Stage 2 (joint fine-tuning): backbone and agent learn together, the
backbone with a smaller learning rate.

Checkpoints are written after every epoch (atomically, project format with the
agent and a `train_state`); `resume=True` continues from the last one and gives
the same result as an uninterrupted run: every epoch reseeds torch's RNG from
(seed, epoch, rank), so data order, augmentation, budgets and sampled masks
depend only on where the epoch starts.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from budget_edge.agent.explore import explore
from budget_edge.agent.losses import advantage, entropy_bonus, log_prob, policy_loss, value_loss
from budget_edge.agent.masks import correct_under_masks, policy_masks
from budget_edge.agent.policy import PolicyNet, build_agent
from budget_edge.agent.reward import reward
from budget_edge.agent.usage import USAGE_KINDS, usage, usage_weights
from budget_edge.data.arrays import ImageArrays
from budget_edge.data.registry import load_arrays
from budget_edge.data.split import arranged_for_choices
from budget_edge.data.torch_dataset import (
    ImageDataset,
    as_tensors,
    batch_collate,
    check_data_fits,
    preprocessing_of,
)
from budget_edge.errors import CheckpointError, ConfigError
from budget_edge.files import atomic_write_text
from budget_edge.models.backbone import Backbone
from budget_edge.models.checkpoint import load_checkpoint, save_checkpoint
from budget_edge.train.config_checks import not_finite, seed_problem
from budget_edge.train.curriculum import Curriculum, controlled_components, force_on
from budget_edge.train.distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    cpu_threads,
    init_distributed,
    shutdown,
    sync_buffers,
)
from budget_edge.train.divergence import stop_if_diverged
from budget_edge.train.precision import TRAIN_PRECISIONS, resolve_precision
from budget_edge.train.prior import PRIORS, apply_budget_prior, prior_order
from budget_edge.train.progress import TrainDisplay

LAST = "last.pt"
FINAL = "budgetnet.pt"
# The agent at the end of the curriculum, on the backbone as it came: the model without
# joint fine-tuning, for allocate/export/evaluate next to budgetnet.pt.
CURRICULUM = "curriculum.pt"
HISTORY = "history.json"


# -- configuration ----------------------------------------------------------------------


@dataclass
class BudgetNetConfig:
    """Every knob of a run. Defaults follow the paper / reference code where they exist."""

    # data
    data: str | None = None  # None: the dataset the checkpoint names
    data_dir: str | None = None
    limit_train: int | None = None  # first N training images (None: all)
    eval_images: int = 2000  # validation images for the per-epoch check (None: all)
    # stages (epochs)
    curriculum_epochs: int = 10
    finetune_epochs: int = 5
    forced_epochs: float | None = None  # ramp of i to 0; None: half the curriculum
    budget_epochs: float | None = None  # ramp of c_min to 0.1; None: half the curriculum
    forced_start: int | None = None  # i at the start; None: K - 1
    c_min_end: float = 0.1  # paper
    curriculum_unit: str = "batch"  # "epoch": the reference's one step per epoch
    # optimisation (Adam, as BlockDrop)
    batch_size: int = 256  # BlockDrop
    lr: float = 1e-3  # agent, curriculum (BlockDrop cl_training)
    finetune_lr: float = 1e-3  # agent, fine-tuning: keeps learning as in the curriculum
    backbone_lr: float = 1e-4  # backbone, fine-tuning: 10x smaller (BlockDrop finetune: 1e-4)
    weight_decay: float = 0.0  # BlockDrop
    # reward (Eq. 4), exploration (Eq. 11), loss weights
    gamma: float = 1.0  # penalty scale for wrong predictions (BlockDrop curriculum: 1)
    # extra penalty for going over the budget; chosen on a validation split (was 1.0,
    # chosen on test images: docs/budgetnet.md)
    omega: float = 0.5
    alpha: float = 0.8  # bound of Eq. 11 (BlockDrop)
    beta: float | None = None  # decay of Eq. 11; None: 1 / all epochs
    value_coef: float = 1.0
    entropy_coef: float = 0.0  # optional entropy bonus (not in the paper)
    usage: str = "components"  # or "flops"
    prior: str = "static"  # starting policy (train/prior.py): static, prefix or none (paper)
    prior_sharpness: float | None = None  # logit slope in c of the prior; None: 4 K
    prior_images: int = 2000  # held-out training images that rank the static order
    # Agent feature extractor: "resnet8" (the reference's), "light", or "auto": resnet8
    # unless it would cost more than AUTO_EXTRACTOR_SHARE of the backbone's FLOPs.
    extractor: str = "auto"
    seed: int = 0
    workers: int = 0  # DataLoader worker processes
    device: str = "auto"  # auto, cpu or cuda
    precision: str = "fp32"  # "bf16": autocast the forward passes (AMX CPUs, recent GPUs)
    threads: int = 0  # intra-op CPU threads per process; 0: the cores shared among processes
    eval_budgets: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)

    @property
    def total_epochs(self) -> int:
        return self.curriculum_epochs + self.finetune_epochs

    @property
    def exploration_decay(self) -> float:
        if self.beta is not None:
            return self.beta
        return 1.0 / self.total_epochs  # exploration ends with the run

    def check(self) -> None:
        """Raise ConfigError for settings that cannot work."""
        problems = not_finite(self) + seed_problem(self.seed)
        if problems:
            raise ConfigError("; ".join(problems))
        # Each setting spelled as the option that sets it (`--lr`), as a CLI user reads
        # it; the few with no option (weight_decay, c_min_end, eval_budgets) by their
        # Python names.
        if self.curriculum_epochs < 0 or self.finetune_epochs < 0 or self.total_epochs < 1:
            raise ConfigError(
                "--curriculum-epochs and --finetune-epochs must be >= 0, and at least one "
                "stage must run"
            )
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        for name in ("lr", "finetune_lr", "backbone_lr"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{_option(name)} must be > 0, got {getattr(self, name)}")
        if not 0.5 <= self.alpha <= 1.0:
            raise ConfigError(f"--alpha must lie in [0.5, 1] (Eq. 11 bound), got {self.alpha}")
        if self.gamma < 0 or self.omega < 0:
            raise ConfigError("--gamma and --omega must be >= 0")
        for name in ("value_coef", "entropy_coef"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{_option(name)} must be >= 0, got {getattr(self, name)}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        for name in ("beta", "prior_sharpness"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ConfigError(
                    f"{_option(name)} must be > 0 (or left out), got {getattr(self, name)}"
                )
        for name in ("forced_epochs", "budget_epochs"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ConfigError(
                    f"{_option(name)} must be >= 0 (or left out), got {getattr(self, name)}"
                )
        if not 0.0 <= self.c_min_end <= 1.0:
            raise ConfigError(f"c_min_end is a budget in [0, 1], got {self.c_min_end}")
        if self.eval_images is not None and self.eval_images < 1:
            raise ConfigError(f"--eval-images must be at least 1, got {self.eval_images}")
        if self.prior_images < 1:
            raise ConfigError(f"--prior-images must be at least 1, got {self.prior_images}")
        if self.usage not in USAGE_KINDS:
            raise ConfigError(
                f"--usage must be one of {', '.join(USAGE_KINDS)}, got {self.usage!r}"
            )
        if self.precision not in TRAIN_PRECISIONS:
            raise ConfigError(f"--precision must be fp32 or bf16, got {self.precision!r}")
        if self.prior not in PRIORS:
            raise ConfigError(f"--prior must be one of {', '.join(PRIORS)}, got {self.prior!r}")
        if self.curriculum_unit not in ("batch", "epoch"):
            raise ConfigError(
                f"--curriculum-unit must be 'batch' or 'epoch', got {self.curriculum_unit!r}"
            )
        if any(not 0.0 <= b <= 1.0 for b in self.eval_budgets):
            raise ConfigError("eval_budgets must lie in [0, 1]")

    def curriculum(self, num_components: int) -> Curriculum:
        half = self.curriculum_epochs / 2
        return Curriculum(
            num_components=num_components,
            forced_epochs=half if self.forced_epochs is None else self.forced_epochs,
            budget_epochs=half if self.budget_epochs is None else self.budget_epochs,
            forced_start=self.forced_start,
            c_min_end=self.c_min_end,
        )


# Presets, sized on the 2-core development machine (ResNet-20, Fashion-MNIST, fp32,
# 2 threads, quiet: ~1000 img/s in the curriculum, ~600 in fine-tuning; docs/budgetnet.md).
# demo: about a minute on a subset. paper: the full training set, ~1.5 h (<= 2 h).
PRESETS: dict[str, dict[str, Any]] = {
    "demo": {
        "limit_train": 6000,
        "eval_images": 1000,
        "curriculum_epochs": 3,
        "finetune_epochs": 3,
        "batch_size": 128,
    },
    "paper": {
        "curriculum_epochs": 20,
        "finetune_epochs": 40,
    },
}


def _option(name: str) -> str:
    """The `budget-edge train` option that sets the field `name`."""
    return "--" + name.replace("_", "-")


def make_config(preset: str | None = None, **overrides: Any) -> BudgetNetConfig:
    """A config from a preset name plus explicit overrides (None values are ignored)."""
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        values.update(PRESETS[preset])
    known = {f.name for f in fields(BudgetNetConfig)}
    for key, value in overrides.items():
        if key not in known:
            raise ConfigError(f"unknown training option {key!r}")
        if value is not None:
            values[key] = value
    if values.get("data_dir") is not None:
        values["data_dir"] = os.fspath(values["data_dir"])  # plain str: checkpoints hold no Paths
    if values.get("precision") == "auto":
        values["precision"] = resolve_precision("auto", values.get("device", "auto"))
    config = BudgetNetConfig(**values)
    config.eval_budgets = tuple(config.eval_budgets)
    config.check()
    return config


# -- data ---------------------------------------------------------------------------------


@dataclass
class RunData:
    train: ImageDataset
    eval_images: Tensor  # the check after each epoch: validation (or, without a split, test)
    eval_labels: Tensor
    held_out_images: Tensor  # the last training images, not augmented: rank the prior
    held_out_labels: Tensor
    checked_on: str = "test"  # which images eval_images are: "validation" or "test"


def load_run_data(config: BudgetNetConfig, backbone: Backbone, meta: dict[str, Any]) -> RunData:
    """Training set (augmented), the held-out images, and the first `eval_images` images
    of the per-epoch check, normalised.

    With the backbone's validation split (`meta`), the agent trains on the rest
    and the prior is ranked on the split; before splits existed, on the last
    training images.
    """
    if config.data is None:
        raise ConfigError("no dataset given; pass --data")
    train_arrays, val_count = arranged_for_choices(
        load_arrays(config.data, config.data_dir, "train"),
        meta,
        "the checkpoint",
        config.limit_train,
    )
    check_data_fits(train_arrays.info, backbone)
    mean, std = preprocessing_of(meta, train_arrays.info)
    if val_count:
        # The per-epoch check guides choices (gamma, omega, when to stop): validation only.
        val = ImageArrays(
            train_arrays.images[-val_count:], train_arrays.labels[-val_count:], train_arrays.info
        )
        checked = val.subset(config.eval_images)
    else:
        checked = load_arrays(config.data, config.data_dir, "test").subset(config.eval_images)
    images, labels = as_tensors(checked, mean, std)
    n = min(config.prior_images, val_count or len(train_arrays))
    held_out = ImageArrays(train_arrays.images[-n:], train_arrays.labels[-n:], train_arrays.info)
    held_images, held_labels = as_tensors(held_out, mean, std)
    if val_count:
        train_arrays = ImageArrays(
            train_arrays.images[:-val_count], train_arrays.labels[:-val_count], train_arrays.info
        )
    train = ImageDataset(train_arrays, train=True, mean=mean, std=std)
    checked_on = "validation" if val_count else "test"
    return RunData(train, images, labels, held_images, held_labels, checked_on)


def make_loader(
    dataset: ImageDataset, config: BudgetNetConfig, epoch: int, ctx: DistContext
) -> DataLoader[Any]:
    """Shuffled batches; each process gets its own shard under torchrun."""
    sampler: DistributedSampler[int] | None = None
    if ctx.distributed:
        sampler = DistributedSampler(
            dataset, ctx.world_size, ctx.rank, shuffle=True, seed=config.seed
        )
        sampler.set_epoch(epoch)
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=config.workers,
        collate_fn=batch_collate,
        drop_last=True,  # every rank runs the same number of steps
        pin_memory=ctx.device.type == "cuda",
    )


# -- state --------------------------------------------------------------------------------


@dataclass
class RunState:
    """Everything that changes during a run and must survive a restart."""

    backbone: Backbone
    agent: PolicyNet
    meta: dict[str, Any]
    config: BudgetNetConfig
    epoch: int = 0  # epochs completed
    optimizer_state: dict[str, Any] | None = None  # of the stage of epoch - 1
    history: list[dict[str, Any]] = field(default_factory=list)


def stage_of(epoch: int, config: BudgetNetConfig) -> str:
    return "curriculum" if epoch < config.curriculum_epochs else "finetune"


def make_optimizer(
    stage: str, agent: nn.Module, backbone: nn.Module, config: BudgetNetConfig
) -> torch.optim.Optimizer:
    """Curriculum: the agent alone. Fine-tuning: agent and backbone, the backbone slower."""
    if stage == "curriculum":
        groups = [{"params": list(agent.parameters()), "lr": config.lr}]
    else:
        groups = [
            {"params": list(agent.parameters()), "lr": config.finetune_lr},
            {"params": list(backbone.parameters()), "lr": config.backbone_lr},
        ]
    return torch.optim.Adam(groups, weight_decay=config.weight_decay)


# On ResNet-20 / Fashion-MNIST the reference's resnet8 extractor is 30% of the backbone's
# FLOPs and took 40% of its latency through the runtime, which made the runtime slower
# than the static graph at c >= 0.5; the light one is 3% (benchmarks/results/
# bench-resnet20-light/). Small convolutions run less efficiently than the backbone's,
# so the bound on FLOPs is set under the ~10% of latency an agent may cost: ResNet-110
# (resnet8 4.8%) keeps the reference extractor, ResNet-56 at 28x28 (9.5%) gets light.
AUTO_EXTRACTOR_SHARE = 0.05


def auto_extractor(backbone: Backbone) -> str:
    """resnet8 where it costs at most AUTO_EXTRACTOR_SHARE of the backbone, else light."""
    probe = build_agent(
        backbone.num_components, "resnet8", backbone.in_channels, backbone.input_size
    )
    share = probe.flops() / backbone.flops().total
    return "resnet8" if share <= AUTO_EXTRACTOR_SHARE else "light"


def start_state(checkpoint: str | Path, config: BudgetNetConfig) -> RunState:
    """A fresh run from a pretrained backbone (any format load_checkpoint reads)."""
    loaded = load_checkpoint(checkpoint)
    if config.data is None:
        config.data = loaded.meta.get("dataset")
        if not config.data:
            raise ConfigError(f"{checkpoint} does not name its dataset; pass --data")
    if config.extractor == "auto":
        config.extractor = auto_extractor(loaded.backbone)
    torch.manual_seed(config.seed)  # the agent's initial weights
    agent = build_agent(
        loaded.backbone.num_components,
        extractor=config.extractor,
        in_channels=loaded.backbone.in_channels,
        input_size=loaded.backbone.input_size,
    )
    return RunState(loaded.backbone, agent, dict(loaded.meta), config)


def resume_state(path: Path) -> RunState:
    """Continue from a checkpoint written by this trainer (it holds the run's config)."""
    loaded = load_checkpoint(path)
    ts = loaded.train_state
    if loaded.agent is None or not ts or ts.get("kind") != "budgetnet":
        raise CheckpointError(
            f"{path} is not a BudgetNet training checkpoint (no agent or train_state); "
            "start a new run with --checkpoint instead of --resume"
        )
    values = dict(ts["config"])
    values["eval_budgets"] = tuple(values["eval_budgets"])
    # Epochs from before precisions were recorded ran in the run's.
    history = [{"precision": values.get("precision", "fp32"), **h} for h in ts.get("history", [])]
    return RunState(
        loaded.backbone,
        loaded.agent,
        {k: v for k, v in loaded.meta.items() if k != "budgetnet"},
        make_config(**values),
        epoch=int(ts["epoch"]),
        optimizer_state=ts.get("optimizer"),
        history=history,
    )


def save_run(state: RunState, optimizer_state: dict[str, Any] | None, path: Path) -> None:
    """Atomic checkpoint: backbone + agent + meta + train_state (for --resume)."""
    config = asdict(state.config)
    config["eval_budgets"] = list(config["eval_budgets"])
    meta = {**state.meta, "budgetnet": {"epoch": state.epoch, "usage": state.config.usage}}
    train_state = {
        "kind": "budgetnet",
        "epoch": state.epoch,
        "config": config,
        "optimizer": optimizer_state,
        "history": state.history,
    }
    save_checkpoint(path, state.backbone, state.agent, meta=meta, train_state=train_state)


# -- one epoch ----------------------------------------------------------------------------


@dataclass
class EpochStats:
    """Running sums for the progress bar and the epoch summary."""

    images: int = 0
    reward: float = 0.0
    correct: float = 0.0
    usage: float = 0.0
    budget: float = 0.0
    policies: set[bytes] = field(default_factory=set)
    seconds: float = 0.0

    def add(
        self, rewards: Tensor, correct: Tensor, used: Tensor, budgets: Tensor, actions: Tensor
    ) -> None:
        self.images += len(rewards)
        self.reward += rewards.sum().item()
        self.correct += correct.sum().item()
        self.usage += used.sum().item()
        self.budget += budgets.sum().item()
        packed = np.packbits(actions.to(torch.uint8).cpu().numpy(), axis=1)
        self.policies.update(row.tobytes() for row in packed)

    def summary(self) -> dict[str, float]:
        n = max(self.images, 1)
        return {
            "reward": self.reward / n,
            "accuracy": self.correct / n,
            "usage": self.usage / n,
            "budget": self.budget / n,
            "unique_policies": len(self.policies),
            "images_per_s": self.images / max(self.seconds, 1e-9),
        }


# What the abbreviations of the progress and epoch lines mean, printed once per run.
LOG_LEGEND = (
    "fields: R mean reward (Eq. 4); acc training accuracy under the sampled masks; "
    "usage/c mean share of the model run (--usage) / mean budget drawn; pol distinct "
    "masks sampled; img/s training images per second; forced leading components the "
    "curriculum keeps on; c_min lowest budget drawn; validation|test c=C: accuracy and "
    "usage u of the agent's own masks (p >= 0.5) at budget C"
)


def stats_text(s: dict[str, float]) -> str:
    return (
        f"R {s['reward']:+.3f} acc {100 * s['accuracy']:.1f}% "
        f"usage {s['usage']:.2f}/c {s['budget']:.2f} pol {int(s['unique_policies'])} "
        f"{s['images_per_s']:.0f} img/s"
    )


def train_epoch(
    epoch: int,
    stage: str,
    backbone: nn.Module,
    agent: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader[Any],
    curriculum: Curriculum,
    weights: Tensor,
    config: BudgetNetConfig,
    device: torch.device,
    on_step: Callable[[int, EpochStats], None] | None = None,
) -> EpochStats:
    finetune = stage == "finetune"
    k = len(weights)
    bf16 = config.precision == "bf16"

    def autocast() -> torch.autocast:
        return torch.autocast(device.type, torch.bfloat16, enabled=bf16)

    stats = EpochStats()
    steps = len(loader)
    start = time.perf_counter()
    for step, (images, labels) in enumerate(loader):
        images, labels = images.to(device), labels.to(device)
        # Curriculum time: whole epochs (the reference) or a smooth ramp per batch.
        t = epoch + (step / steps if config.curriculum_unit == "batch" else 0.0)
        forced = 0 if finetune else curriculum.forced_components(t)
        budgets = curriculum.sample_budgets(len(images), t).to(device)

        with autocast():
            probs, values = agent(images, budgets)  # Eq. 2, 3: s and V(x, c)
        probs, values = probs.float(), values.float()  # the losses in fp32
        probs = explore(probs, config.alpha, config.exploration_decay, t)  # Eq. 11: s'
        actions = force_on(torch.bernoulli(probs.detach()), forced)  # u ~ Bernoulli(s')
        controlled = controlled_components(k, forced).to(device)

        with torch.set_grad_enabled(finetune), autocast():  # curriculum: no graph, frozen
            logits = backbone(images, actions).float()  # masked: dropped parts cost nothing
        correct = logits.argmax(1) == labels
        used = usage(actions, weights)
        rewards = reward(used, budgets, correct, config.gamma, config.omega)  # Eq. 4

        adv = advantage(rewards, values)  # Eq. 7: A = R - V
        loss_policy = policy_loss(log_prob(probs, actions, controlled), adv)  # Eq. 8
        loss_value = value_loss(rewards, values)  # Eq. 9, 10: smooth-L1(R - V)
        loss = loss_policy + config.value_coef * loss_value
        if config.entropy_coef > 0:
            loss = loss - config.entropy_coef * entropy_bonus(probs, controlled)
        if finetune:
            loss = loss + F.cross_entropy(logits, labels)  # the backbone adapts to its masks

        stop_if_diverged(
            loss.item(),
            where=f"in epoch {epoch + 1}, step {step + 1}",
            kept=f"{LAST} holds the last finished epoch",
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

        stats.add(rewards, correct, used, budgets, actions)
        stats.seconds = time.perf_counter() - start
        if on_step is not None:
            on_step(step + 1, stats)
    return stats


@torch.no_grad()
def check_budgets(
    backbone: Backbone,
    agent: PolicyNet,
    data: RunData,
    budgets: tuple[float, ...],
    weights: Tensor,
    forced: int = 0,
) -> dict[str, dict[str, float]]:
    """Accuracy and usage of the deterministic policy at a few budgets, on the images
    given (the validation split; test images only for checkpoints without one).

    As in the reference's curriculum test, the first `forced` components stay on:
    the actor has not learnt them yet.
    """
    backbone.eval()
    agent.eval()
    device = next(backbone.parameters()).device
    images, labels = data.eval_images.to(device), data.eval_labels.to(device)
    results = {}
    for budget in budgets:
        masks = force_on(policy_masks(agent, images, budget), forced)
        correct = correct_under_masks(backbone, images, labels, masks)
        results[f"{budget:g}"] = {
            "accuracy": correct.float().mean().item(),
            "usage": usage(masks, weights).mean().item(),
        }
    return results


# -- the run ------------------------------------------------------------------------------


# Settings a resumed run may change: they decide where and how fast it runs, not what it
# learns (precision: bf16 is slow where the CPU lacks it, train/precision.py).
RESUME_OVERRIDES = ("device", "threads", "workers", "precision")


def train_budgetnet(
    out_dir: str | Path,
    checkpoint: str | Path | None = None,
    config: BudgetNetConfig | None = None,
    resume: bool = False,
    display: TrainDisplay | None = None,
    stop_after: int | None = None,
    resume_overrides: dict[str, Any] | None = None,
) -> Path:
    """Run (or resume) a BudgetNet training; returns the checkpoint written last.

    `stop_after` ends the run after that many epochs in total (tests, and a way
    to split a long run into sessions); `resume=True` picks it up again, with
    the run's own settings except those in `resume_overrides` (RESUME_OVERRIDES).
    """
    out = Path(out_dir)
    state = _load_state(out, checkpoint, config, resume, resume_overrides or {})
    ctx = init_distributed(state.config.device)
    try:
        display = display or TrainDisplay(enabled=ctx.is_main)
        torch.set_num_threads(cpu_threads(ctx, state.config.threads))
        return _run(out, state, ctx, display, stop_after)
    finally:
        shutdown(ctx)


def _load_state(
    out: Path,
    checkpoint: str | Path | None,
    config: BudgetNetConfig | None,
    resume: bool,
    overrides: dict[str, Any],
) -> RunState:
    if resume:
        if not (out / LAST).exists():
            raise CheckpointError(
                f"nothing to resume: {out / LAST} does not exist; start without --resume"
            )
        state = resume_state(out / LAST)
        for key, value in overrides.items():
            if key not in RESUME_OVERRIDES:
                raise ConfigError(
                    f"a resumed run keeps its settings; only {', '.join(RESUME_OVERRIDES)} "
                    f"may change, not {key}"
                )
            if value is not None:
                setattr(state.config, key, value)
        state.config.precision = resolve_precision(state.config.precision, state.config.device)
        state.config.check()
        return state
    if checkpoint is None:
        raise ConfigError("give a pretrained backbone checkpoint (--checkpoint)")
    if (out / LAST).exists():
        raise ConfigError(
            f"{out} already holds a run ({LAST}); pass --resume to continue it or choose "
            "another --out"
        )
    return start_state(checkpoint, config if config is not None else make_config())


def _run(
    out: Path, state: RunState, ctx: DistContext, display: TrainDisplay, stop_after: int | None
) -> Path:
    cfg = state.config
    backbone = state.backbone.to(ctx.device)
    agent = state.agent.to(ctx.device)
    data = load_run_data(cfg, backbone, state.meta)
    curriculum = cfg.curriculum(backbone.num_components)
    flops = backbone.flops()
    weights = usage_weights(cfg.usage, flops.components).to(ctx.device)
    display.log(_describe(state, flops.total, ctx))
    display.log(LOG_LEGEND)
    if state.epoch == 0 and cfg.prior != "none":
        backbone.eval()
        held_out = data.held_out_images.to(ctx.device), data.held_out_labels.to(ctx.device)
        order = prior_order(cfg.prior, backbone, *held_out)
        sharpness = cfg.prior_sharpness or 4.0 * backbone.num_components
        apply_budget_prior(agent, order, sharpness)
        display.log(f"starting policy: components dropped in the order {order}")

    # All agent parameters take part in every step; DDP averages their gradients.
    train_agent: nn.Module = DistributedDataParallel(agent) if ctx.distributed else agent
    train_backbone: nn.Module = backbone
    optimizer: torch.optim.Optimizer | None = None
    end = cfg.total_epochs if stop_after is None else min(cfg.total_epochs, stop_after)

    for epoch in range(state.epoch, end):
        stage = stage_of(epoch, cfg)
        # Reseed per epoch: a resumed run replays exactly what an uninterrupted one does.
        torch.manual_seed(cfg.seed * 1_000_003 + epoch * 1009 + ctx.rank)
        if stage == "curriculum":
            backbone.eval().requires_grad_(False)
        else:
            backbone.train().requires_grad_(True)
        agent.train()
        if optimizer is None or stage != stage_of(epoch - 1, cfg):
            optimizer = make_optimizer(stage, agent, backbone, cfg)
            if state.optimizer_state is not None and stage == stage_of(state.epoch - 1, cfg):
                optimizer.load_state_dict(state.optimizer_state)
            state.optimizer_state = None
            if stage == "finetune" and ctx.distributed:
                # Blocks that no image of a batch keeps get no gradient on that rank.
                train_backbone = DistributedDataParallel(backbone, find_unused_parameters=True)

        epoch_start = time.perf_counter()
        loader = make_loader(data.train, cfg, epoch, ctx)
        label = f"epoch {epoch + 1}/{cfg.total_epochs} {stage}"
        with display.bar(label, len(loader)) as update:
            stats = train_epoch(
                epoch,
                stage,
                train_backbone,
                train_agent,
                optimizer,
                loader,
                curriculum,
                weights,
                cfg,
                ctx.device,
                on_step=lambda step, s: update(step, stats_text(s.summary())),
            )

        sync_buffers(backbone, ctx)  # every rank saves / evaluates the same model
        sync_buffers(agent, ctx)
        summary: dict[str, Any] = {"epoch": epoch + 1, "stage": stage, "precision": cfg.precision}
        summary.update(_mean_over_ranks(stats.summary(), ctx))
        forced = curriculum.forced_components(epoch + 1) if stage == "curriculum" else 0
        if stage == "curriculum":
            summary.update(forced=forced, c_min=curriculum.c_min(epoch + 1))
        if ctx.is_main:
            summary[data.checked_on] = check_budgets(
                backbone, agent, data, cfg.eval_budgets, weights, forced
            )
        summary["seconds"] = round(time.perf_counter() - epoch_start, 3)  # wall, with the check
        state.history.append(summary)
        state.epoch = epoch + 1
        if ctx.is_main:
            save_run(state, optimizer.state_dict(), out / LAST)
            if state.epoch == cfg.curriculum_epochs and cfg.finetune_epochs > 0:
                save_run(state, optimizer.state_dict(), out / CURRICULUM)
            _write_json(out / HISTORY, state.history)
        display.log(_epoch_line(summary))
        barrier(ctx)

    if state.epoch < cfg.total_epochs:
        return out / LAST
    final = out / FINAL
    if ctx.is_main:
        optimizer_state = optimizer.state_dict() if optimizer is not None else state.optimizer_state
        save_run(state, optimizer_state, final)
        display.log(f"wrote {final}")
    barrier(ctx)
    return final


def _mean_over_ranks(summary: dict[str, float], ctx: DistContext) -> dict[str, float]:
    """Average the per-rank statistics; images/s adds up. (Unique policies: mean per rank.)"""
    keys = sorted(summary)
    values = torch.tensor([float(summary[k]) for k in keys], dtype=torch.float64)
    values = all_reduce_sum(values, ctx) / ctx.world_size
    out = dict(zip(keys, values.tolist(), strict=True))
    out["images_per_s"] *= ctx.world_size
    return out


def _epoch_line(summary: dict[str, Any]) -> str:
    line = f"epoch {summary['epoch']} {summary['stage']}: {stats_text(summary)}"
    if "forced" in summary:
        line += f" | forced {summary['forced']} c_min {summary['c_min']:.2f}"
    for checked_on in ("validation", "test"):
        if summary.get(checked_on):
            line += f" | {checked_on} " + " ".join(
                f"c={c}: {100 * r['accuracy']:.1f}% u={r['usage']:.2f}"
                for c, r in summary[checked_on].items()
            )
    return line


def _describe(state: RunState, backbone_flops: int, ctx: DistContext) -> str:
    cfg = state.config
    agent_flops = state.agent.flops()
    return (
        f"BudgetNet on {cfg.data}: {state.backbone.config.get('name')} with "
        f"K={state.backbone.num_components} components, agent '{cfg.extractor}' "
        f"{agent_flops / 1e6:.2f} MFLOPs ({100 * agent_flops / backbone_flops:.1f}% of the "
        f"backbone's {backbone_flops / 1e6:.2f}); {cfg.curriculum_epochs} curriculum + "
        f"{cfg.finetune_epochs} fine-tuning epochs from epoch {state.epoch}; "
        f"{ctx.world_size} process(es) on {ctx.device}"
    )


def _write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2) + "\n", error=CheckpointError)
