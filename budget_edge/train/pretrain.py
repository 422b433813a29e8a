"""Backbone pretraining: the network BudgetNet later learns to cut down.

Plain supervised training, read top to bottom:

- SGD with momentum and weight decay; the learning rate rises linearly over
  `warmup_epochs`, then follows a cosine from `lr` to 0, stepped after every
  batch (per iteration, so short runs and long runs anneal equally smoothly).
- Optional zero-initialised residuals (`zero_init_residual`): the BatchNorm
  that ends each block's residual branch starts with scale 0, so a deep
  network starts as its shortcuts and every sub-network starts sound
  (Goyal et al. 2017; BigNAS relies on it for its sandwich).
- Optional stochastic depth (`drop_prob` > 0): each image drops component k
  with probability drop_prob * (b + 1) / B, b the component's block and B the
  number of blocks (linear in depth, Huang et al. 2016). Dropped components
  take the backbone's real skip path (gather/scatter), so the trained network
  already tolerates what the agent will do to it.
- Optional sandwich training (`sandwich`): each step also trains the smallest
  sub-network and `sandwich_random` sampled depth masks on the full network's
  soft outputs (`train/sandwich.py`), so that one network's sub-networks
  approach networks of their shape trained alone.
- Optional starting weights (`init_sha256`, the checkpoint given to `pretrain`
  as `init`): a network trained on its own, then sandwich-trained from there
  (`train/warm_start.py`); its checkpoint must hold out the same validation images.
- A validation split (`val_size` images carved from the training set before
  training, the same images for every model of that dataset) picks the best
  epoch; the test set is evaluated every epoch and only reported.
- Evaluation after every epoch; `last.pt` (with everything --resume needs:
  optimizer, scheduler, epoch, every rank's RNG states) and `best.pt` are
  written atomically in the project's checkpoint format, plus `history.json`.
- Under `torchrun`: DistributedDataParallel, a DistributedSampler, results
  summed over ranks; only rank 0 prints and writes.

Resuming restores the model, optimizer, scheduler, epoch counter and the
torch/numpy/python RNG states saved at the end of the last finished epoch, so
a killed run continues exactly as if it had never stopped.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from budget_edge.data.arrays import DatasetInfo, ImageArrays
from budget_edge.data.split import ValidationSplit, split_validation
from budget_edge.data.torch_dataset import build_loaders, eval_loader
from budget_edge.errors import CheckpointError, ConfigError
from budget_edge.files import atomic_write_text
from budget_edge.models import Backbone, build_backbone
from budget_edge.models.batchnorm import recalibrate_batchnorm
from budget_edge.models.checkpoint import load_checkpoint, save_checkpoint
from budget_edge.train.config_checks import not_finite, seed_problem
from budget_edge.train.distributed import (
    DistContext,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    cpu_threads,
    init_distributed,
    shutdown,
    sync_buffers,
)
from budget_edge.train.divergence import stop_if_diverged
from budget_edge.train.precision import TRAIN_PRECISIONS
from budget_edge.train.progress import TrainDisplay
from budget_edge.train.sandwich import (
    distillation_loss,
    frozen_batchnorm_statistics,
    sandwich_masks,
    smallest_mask,
)
from budget_edge.train.warm_start import load_initial_weights

# Settings a resumed run may change: how fast it computes, not the recipe
# (train/precision.py; channels-last is a memory layout, the same arithmetic). --device,
# --threads and --workers are run options, not settings.
RESUME_MAY_CHANGE = ("precision", "channels_last")


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that decides the trained weights. A resumed run must match it, but for
    RESUME_MAY_CHANGE."""

    backbone: str = "resnet20"
    dataset: str = "fashion-mnist"
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    drop_prob: float = 0.0
    seed: int = 0
    precision: str = "fp32"
    channels_last: bool = False
    limit_train: int | None = None
    limit_test: int | None = None
    val_size: int = 0  # 0: no validation split (the best epoch is then the last one)
    sandwich: bool = False
    sandwich_random: int = 2  # sampled sub-networks per step besides the smallest
    warmup_epochs: float = 0.0
    zero_init_residual: bool = False
    # SHA-256 of the checkpoint whose weights the run starts from (`pretrain --init`,
    # train/warm_start.py); None: from scratch.
    init_sha256: str | None = None

    def check(self) -> None:
        """Refuse hyperparameters that cannot train, with what to give instead."""
        problems = not_finite(self) + seed_problem(self.seed)
        if self.epochs < 1:
            problems.append(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            problems.append(f"--batch-size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            problems.append(f"--lr must be positive, got {self.lr}")
        if not 0 <= self.momentum < 1:
            problems.append(f"--momentum must be in [0, 1), got {self.momentum}")
        if not self.weight_decay >= 0:
            problems.append(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.drop_prob < 1:
            problems.append(f"--drop-prob must be in [0, 1), got {self.drop_prob}")
        if self.precision not in TRAIN_PRECISIONS:
            problems.append(f"--precision must be one of {', '.join(TRAIN_PRECISIONS)}")
        if not 0 <= self.warmup_epochs < self.epochs:
            problems.append(f"--warmup-epochs must be in [0, --epochs), got {self.warmup_epochs}")
        if self.val_size < 0:
            problems.append(f"--val-size must be >= 0, got {self.val_size}")
        if self.sandwich_random < 0:
            problems.append(f"--sandwich-random must be >= 0, got {self.sandwich_random}")
        for name, option in (("limit_train", "--limit-train"), ("limit_test", "--eval-images")):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{option} must be at least 1, got {value}")
        if problems:
            raise ConfigError("; ".join(problems))


@dataclass(frozen=True)
class RunOptions:
    """How the run executes; none of this changes the result."""

    device: str = "auto"
    workers: int = 0
    threads: int = 0  # 0: the cores available, shared among local ranks
    progress: bool = True  # print (and draw bars on a terminal) on rank 0
    command: str = ""  # recorded in the checkpoint meta


@dataclass
class EpochStats:
    epoch: int
    lr: float
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    images_per_s: float
    train_s: float
    eval_s: float
    # None without a validation split (and in runs made before it existed).
    val_loss: float | None = None
    val_accuracy: float | None = None
    # Sandwich runs: the smallest sub-network with its own BatchNorm statistics.
    val_accuracy_smallest: float | None = None
    # fp32 or bf16; a resumed run may change it (None: an epoch from before it was kept).
    precision: str | None = None

    @property
    def score(self) -> float | None:
        """What picks the best epoch: validation accuracy, the mean of the full network's
        and the smallest's for a sandwich run; None without a validation split (the
        test set never picks)."""
        if self.val_accuracy is None:
            return None
        if self.val_accuracy_smallest is not None:
            return (self.val_accuracy + self.val_accuracy_smallest) / 2
        return self.val_accuracy


@dataclass
class PretrainResult:
    backbone: Backbone
    history: list[EpochStats]
    out_dir: Path
    best_score: float  # validation score of the best epoch; NaN without a split
    best_epoch: int
    train_wall_s: float

    @property
    def last_accuracy(self) -> float:
        return self.history[-1].test_accuracy if self.history else float("nan")


@dataclass
class RunState:
    """What changes epoch by epoch and survives a resume."""

    epoch: int = 0
    history: list[EpochStats] = field(default_factory=list)
    best_score: float = float("nan")
    best_epoch: int = 0
    train_wall_s: float = 0.0

    def record(self, stats: EpochStats) -> None:
        """Add an epoch; it is the best when its validation score is (or without a split,
        when it is the latest: a cosine schedule ends at its best)."""
        self.epoch = stats.epoch
        self.history.append(stats)
        self.train_wall_s += stats.train_s + stats.eval_s
        score = stats.score
        if score is None or np.isnan(self.best_score) or score > self.best_score:
            self.best_score = float("nan") if score is None else score
            self.best_epoch = stats.epoch


# -- stochastic depth -----------------------------------------------------------------


def drop_probabilities(backbone: Backbone, drop_prob: float) -> Tensor:
    """Per-component drop probability, linear in the depth of the component's block."""
    num_blocks = len(backbone.blocks)
    return torch.tensor(
        [drop_prob * (c.block + 1) / num_blocks for c in backbone.components],
        dtype=torch.float32,
    )


def sample_mask(probabilities: Tensor, batch: int) -> Tensor:
    """A (batch, K) keep-mask: each image keeps component k with prob 1 - p_k."""
    return torch.rand(batch, probabilities.shape[0]) >= probabilities


# -- reproducibility ------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng() -> dict[str, Any]:
    """RNG states as tensors and plain values (what a weights-only load reads back)."""
    legacy = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True))
    kind, keys, pos, has_gauss, cached = legacy
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- building blocks ------------------------------------------------------------------


def build_model(config: PretrainConfig, info: DatasetInfo) -> Backbone:
    """The backbone for this dataset's classes and input size (ConfigError if unknown)."""
    channels = info.input_size[0]
    return build_backbone(
        config.backbone,
        num_classes=info.num_classes,
        in_channels=channels,
        input_size=info.input_size,
    )


def make_optimizer(model: nn.Module, config: PretrainConfig) -> torch.optim.SGD:
    return torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )


def make_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from lr / warmup_steps, then a cosine from lr to 0, per batch."""
    total = max(1, total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# The BatchNorm that ends a block's residual branch, by block type: bn3 (bottleneck),
# bn2 (basic block), bn (ResNeXt, after the paths' sum).
RESIDUAL_NORMS = ("bn3", "bn2", "bn")


def zero_init_residuals(backbone: Backbone) -> None:
    """Scale 0 for the BatchNorm that ends every block's residual branch."""
    for block in backbone.blocks:
        norm = next(
            (
                getattr(block, n)
                for n in RESIDUAL_NORMS
                if isinstance(getattr(block, n, None), nn.BatchNorm2d)
            ),
            None,
        )
        if norm is None:
            raise ConfigError(
                f"--zero-init-residual: {type(block).__name__} has no BatchNorm named "
                f"{' or '.join(RESIDUAL_NORMS)} ending its branch"
            )
        nn.init.zeros_(norm.weight)


def preprocessing_meta(info: DatasetInfo) -> dict[str, Any]:
    return {
        "mean": list(info.mean),
        "std": list(info.std),
        "input_size": list(info.input_size),
        "layout": "NCHW",
    }


def write_json_atomic(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n", error=CheckpointError)


# -- one epoch ------------------------------------------------------------------------


@dataclass
class StepContext:
    """What the train and eval loops need besides the model."""

    ctx: DistContext
    config: PretrainConfig
    display: TrainDisplay
    drop: Tensor | None  # per-component drop probabilities, None: no stochastic depth
    backbone: Backbone  # the unwrapped model (masks are built from its structure)
    masks: torch.Generator | None = None  # draws the sandwich's sub-networks

    def to_device(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        non_blocking = self.ctx.device.type == "cuda"
        images = images.to(self.ctx.device, non_blocking=non_blocking)
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels.to(self.ctx.device, non_blocking=non_blocking)

    def autocast(self) -> torch.autocast:
        return torch.autocast(
            self.ctx.device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bf16"
        )


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader[tuple[Tensor, Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    step: StepContext,
    epoch: int,
) -> tuple[float, float, float, float]:
    """One pass over the training data: (loss, accuracy, images/s, seconds), over all ranks."""
    model.train()
    totals = torch.zeros(3, dtype=torch.float64, device=step.ctx.device)  # loss, correct, seen
    start = time.perf_counter()
    with step.display.bar(f"epoch {epoch}/{step.config.epochs}", len(loader)) as update:
        for i, (images, labels) in enumerate(loader):
            images, labels = step.to_device(images, labels)
            mask = None
            if step.drop is not None:
                mask = sample_mask(step.drop, images.shape[0]).to(step.ctx.device)
            optimizer.zero_grad(set_to_none=True)
            with step.autocast():
                logits = model(images, mask)
                loss = F.cross_entropy(logits, labels)
            loss.backward()
            if step.config.sandwich:
                train_sub_networks(model, images, logits, step)
            optimizer.step()
            scheduler.step()
            totals += torch.stack(
                [
                    loss.detach().double() * labels.shape[0],
                    (logits.argmax(1) == labels).sum().double(),
                    torch.tensor(labels.shape[0], dtype=torch.float64, device=labels.device),
                ]
            )
            if update.active and (i % 10 == 0 or i == len(loader) - 1):
                loss_sum, correct, seen = totals.tolist()
                rate = seen * step.ctx.world_size / (time.perf_counter() - start)
                update(
                    i + 1, f"loss {loss_sum / seen:.3f} acc {correct / seen:6.2%} {rate:5.0f} img/s"
                )
    seconds = time.perf_counter() - start
    loss_sum, correct, seen = all_reduce_sum(totals, step.ctx).tolist()
    return loss_sum / seen, correct / seen, seen / seconds, seconds


def train_sub_networks(model: nn.Module, images: Tensor, full: Tensor, step: StepContext) -> None:
    """The sandwich's lower slices: each sub-network learns the full network's soft outputs.

    Gradients add to the full network's; the caller takes one optimizer step.
    Running BatchNorm statistics stay the full network's.
    """
    assert step.masks is not None
    masks = sandwich_masks(step.backbone, step.config.sandwich_random, step.masks)
    with frozen_batchnorm_statistics(model):
        for keep in masks:
            rows = keep.reshape(1, -1).expand(images.shape[0], -1)
            with step.autocast():
                loss = distillation_loss(model(images, rows), full)
            loss.backward()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader[tuple[Tensor, Tensor]],
    step: StepContext,
    mask: Tensor | None = None,
) -> tuple[float, float]:
    """Loss and accuracy over `loader`, summed over all ranks.

    `mask` (K,) runs one sub-network on every image; None keeps every component.
    """
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=step.ctx.device)
    for images, labels in loader:
        images, labels = step.to_device(images, labels)
        rows = None if mask is None else mask.reshape(1, -1).expand(images.shape[0], -1)
        with step.autocast():
            logits = model(images, rows)
            loss = F.cross_entropy(logits.float(), labels, reduction="sum")
        totals[0] += loss.double()
        totals[1] += (logits.argmax(1) == labels).sum()
        totals[2] += labels.shape[0]
    loss_sum, correct, seen = all_reduce_sum(totals, step.ctx).tolist()
    return loss_sum / max(seen, 1), correct / max(seen, 1)


def evaluate_smallest(
    backbone: Backbone,
    loader: DataLoader[tuple[Tensor, Tensor]],
    calibration: list[Tensor],
    step: StepContext,
    info: DatasetInfo,
) -> float:
    """Validation accuracy of the smallest sub-network with its own BatchNorm statistics."""
    smallest = smallest_mask(backbone)
    copy = build_model(step.config, info).to(step.ctx.device)
    copy.load_state_dict(backbone.state_dict())
    recalibrate_batchnorm(copy, smallest, calibration)
    return evaluate(copy, loader, step, smallest)[1]


def calibration_batches(
    arrays: ImageArrays, info: DatasetInfo, images: int, batch_size: int, ctx: DistContext
) -> list[Tensor]:
    """A fixed random choice of `images` training images, normalised and unaugmented,
    in batches on the run's device."""
    pick = np.random.default_rng(0).permutation(len(arrays))[:images]
    chosen = ImageArrays(arrays.images[np.sort(pick)], arrays.labels[np.sort(pick)], arrays.info)
    return [batch.to(ctx.device) for batch, _ in eval_loader(chosen, info, batch_size)]


# -- checkpoints ----------------------------------------------------------------------


def checkpoint_meta(
    config: PretrainConfig,
    info: DatasetInfo,
    state: RunState,
    options: RunOptions,
    world: int,
    split: ValidationSplit | None,
) -> dict[str, Any]:
    """What the checkpoint says about itself. The split travels on so that every later
    choice (agent, allocator, masks) is made on the same held-out images."""
    last = state.history[-1]
    return {
        "preprocessing": preprocessing_meta(info),
        "class_names": list(info.class_names),
        "dataset": info.name,
        "epoch": state.epoch,
        "epochs": config.epochs,
        "test_accuracy": last.test_accuracy,
        "val_accuracy": last.val_accuracy,
        "best_val_score": None if np.isnan(state.best_score) else state.best_score,
        "best_epoch": state.best_epoch,
        "validation_split": None if split is None else split.as_meta(),
        "train_wall_s": state.train_wall_s,
        "command": options.command,
        "pretrain": asdict(config),
        "world_size": world,
    }


def save_run(
    out_dir: Path,
    backbone: Backbone,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    config: PretrainConfig,
    info: DatasetInfo,
    state: RunState,
    options: RunOptions,
    ctx: DistContext,
    split: ValidationSplit | None,
) -> None:
    """Write last.pt (and best.pt when this epoch is the best) and history.json.

    Every rank sends its RNG state; rank 0 alone writes.
    """
    rng_states = all_gather_objects(capture_rng(), ctx)
    if not ctx.is_main:
        return
    meta = checkpoint_meta(config, info, state, options, ctx.world_size, split)
    train_state = {
        "epoch": state.epoch,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_states,
        "config": asdict(config),
        "history": [asdict(h) for h in state.history],
        "best_score": state.best_score,
        "best_epoch": state.best_epoch,
        "train_wall_s": state.train_wall_s,
    }
    save_checkpoint(out_dir / "last.pt", backbone, meta=meta, train_state=train_state)
    if state.best_epoch == state.epoch:
        save_checkpoint(out_dir / "best.pt", backbone, meta=meta)
    history = {"config": asdict(config), "meta": meta, "epochs": train_state["history"]}
    write_json_atomic(out_dir / "history.json", history)


def resume_from(
    path: Path,
    backbone: Backbone,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    config: PretrainConfig,
    ctx: DistContext,
    display: TrainDisplay,
) -> RunState:
    """Load last.pt into the fresh model/optimizer/scheduler; restore this rank's RNG."""
    if not path.is_file():
        raise ConfigError(
            f"--resume: there is no checkpoint at {path}; run without --resume to start "
            "a new run, or point --out at the run to continue"
        )
    loaded = load_checkpoint(path, format="budget-edge")
    saved = loaded.train_state
    if saved is None:
        raise CheckpointError(
            f"{path} has no training state (optimizer, epoch, RNG) to resume from; "
            "start a new run in another --out"
        )
    if loaded.backbone.config.get("name") != backbone.config.get("name"):
        raise ConfigError(
            f"--resume: {path} holds a {loaded.backbone.config.get('name')} backbone, not "
            f"{config.backbone}; pass --backbone {loaded.backbone.config.get('name')} or "
            "choose another --out"
        )
    # Settings added since the run started had their default then.
    was = {f.name: saved["config"].get(f.name, f.default) for f in fields(config)}
    differences = [
        f"{name}: checkpoint {value!r}, now {getattr(config, name)!r}"
        for name, value in was.items()
        if value != getattr(config, name) and name not in RESUME_MAY_CHANGE
    ]
    if differences:
        raise ConfigError(
            f"--resume: {path} was trained with other settings ({'; '.join(differences)}); "
            "rerun with the same options or choose another --out"
        )
    backbone.load_state_dict(loaded.backbone.state_dict())
    optimizer.load_state_dict(saved["optimizer"])
    # Runs from before warmup saved a CosineAnnealingLR: the same curve without warmup.
    scheduler.load_state_dict({"lr_lambdas": [None], **saved["scheduler"]})
    rng = saved["rng"]
    if len(rng) == ctx.world_size:
        restore_rng(rng[ctx.rank])
    else:
        # Other shards, other random streams: the run goes on but not bit for bit.
        display.log(
            f"warning: {path} was saved by {len(rng)} process(es), this run has "
            f"{ctx.world_size}; continuing with fresh random streams"
        )
    # Epochs from before precisions were recorded ran in the checkpoint's.
    history = [EpochStats(**{"precision": was["precision"], **h}) for h in saved["history"]]
    display.log(f"resuming {path} after epoch {saved['epoch']}/{config.epochs}")
    if was["precision"] != config.precision:
        display.log(
            f"precision: {config.precision} from epoch {saved['epoch'] + 1} on (the run's was "
            f"{was['precision']}; each epoch's is in history.json)"
        )
    if was["channels_last"] != config.channels_last:
        layout = "channels-last" if config.channels_last else "NCHW"
        display.log(f"memory format: {layout} from epoch {saved['epoch'] + 1} on")
    return RunState(
        epoch=int(saved["epoch"]),
        history=history,
        best_score=float(saved.get("best_score", float("nan"))),
        best_epoch=int(saved["best_epoch"]),
        train_wall_s=float(saved["train_wall_s"]),
    )


# -- the run --------------------------------------------------------------------------


def check_out_dir(out_dir: Path, resume: bool) -> None:
    if not resume and (out_dir / "last.pt").exists():
        raise ConfigError(
            f"{out_dir} already holds a run (last.pt); pass --resume to continue it or "
            "choose another --out"
        )


def pretrain(
    config: PretrainConfig,
    train_arrays: ImageArrays,
    test_arrays: ImageArrays,
    out_dir: str | Path,
    resume: bool = False,
    options: RunOptions | None = None,
    on_epoch_end: Callable[[EpochStats], None] | None = None,
    init: str | Path | None = None,
) -> PretrainResult:
    """Train `config.backbone` on the arrays; checkpoints go to `out_dir`.

    `init`: a checkpoint whose backbone weights a new run starts from; its SHA-256
    must be `config.init_sha256` (a resumed run takes its weights from last.pt).

    Runs in one process or, under torchrun, in each rank (the arrays are read
    by every rank; each trains on its shard). `on_epoch_end` runs on every
    rank after the epoch's checkpoint is written.
    """
    options = options or RunOptions()
    config.check()
    if train_arrays.info.name != config.dataset:
        raise ConfigError(
            f"config.dataset is {config.dataset!r} but the arrays are {train_arrays.info.name!r}"
        )
    out = Path(out_dir)
    check_out_dir(out, resume)
    if (init is None) != (config.init_sha256 is None) and not resume:
        raise ConfigError("pass init (the checkpoint) together with config.init_sha256")
    ctx = init_distributed(options.device)
    start = None if resume or init is None else Path(init)
    try:
        return run(
            config, train_arrays, test_arrays, out, resume, options, on_epoch_end, ctx, start
        )
    finally:
        shutdown(ctx)


def run(
    config: PretrainConfig,
    train_arrays: ImageArrays,
    test_arrays: ImageArrays,
    out: Path,
    resume: bool,
    options: RunOptions,
    on_epoch_end: Callable[[EpochStats], None] | None,
    ctx: DistContext,
    init: Path | None = None,
) -> PretrainResult:
    """The body of `pretrain`, in a process that has joined its process group."""
    torch.set_num_threads(cpu_threads(ctx, options.threads))
    display = TrainDisplay(enabled=options.progress and ctx.is_main)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)

    seed_everything(config.seed + ctx.rank)
    info = train_arrays.info
    backbone = build_model(config, info).to(ctx.device)
    if config.zero_init_residual:
        zero_init_residuals(backbone)
    if config.channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    split = None
    val = None
    if config.val_size:
        # Split the whole training set, then limit what is left: every later step
        # (agent, allocator, bench) rebuilds the same split from the same data.
        train_arrays, val_arrays, split = split_validation(train_arrays, config.val_size)
        val = eval_loader(
            val_arrays, info, config.batch_size, options.workers, ctx.rank, ctx.world_size
        )
    if init is not None:
        load_initial_weights(init, backbone, config.dataset, cast(str, config.init_sha256), split)
        display.log(f"starting from the weights of {init}")
    train_arrays = train_arrays.subset(config.limit_train)
    loaders = build_loaders(
        train_arrays,
        test_arrays.subset(config.limit_test),
        config.batch_size,
        workers=options.workers,
        rank=ctx.rank,
        world_size=ctx.world_size,
        seed=config.seed,
        pin_memory=ctx.device.type == "cuda",
    )
    optimizer = make_optimizer(backbone, config)
    scheduler = make_scheduler(
        optimizer,
        config.epochs * len(loaders.train),
        round(config.warmup_epochs * len(loaders.train)),
    )
    # Before a resume restores the RNG: iterating a DataLoader draws from it.
    calibration: list[Tensor] = []
    if config.sandwich and val is not None:
        calibration = calibration_batches(train_arrays, info, 2000, 200, ctx)
    state = RunState()
    if resume:
        state = resume_from(out / "last.pt", backbone, optimizer, scheduler, config, ctx, display)

    model: nn.Module = backbone
    if ctx.distributed:
        # Stochastic depth and sub-networks leave whole blocks without gradient.
        model = DistributedDataParallel(
            backbone,
            device_ids=[ctx.device] if ctx.device.type == "cuda" else None,
            find_unused_parameters=config.drop_prob > 0 or config.sandwich,
        )
    drop = drop_probabilities(backbone, config.drop_prob) if config.drop_prob > 0 else None
    step = StepContext(ctx, config, display, drop, backbone)
    if state.epoch == 0:
        held = f" / {config.val_size} validation" if config.val_size else ""
        recipe = f", sandwich (smallest + {config.sandwich_random})" if config.sandwich else ""
        display.log(
            f"pretraining {config.backbone} on {info.name}: {len(loaders.train.dataset)} "  # type: ignore[arg-type]
            f"train{held} / {len(loaders.test.dataset)} test images, {config.epochs} epochs"  # type: ignore[arg-type]
            f"{recipe}, {ctx.world_size} process(es) on {ctx.device}, "
            f"{torch.get_num_threads()} thread(s)"
        )

    for epoch in range(state.epoch + 1, config.epochs + 1):
        sampler = loaders.train.sampler
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        # Seeded per epoch, the same on every rank: a resumed run draws the same masks.
        step.masks = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        loss, accuracy, rate, train_s = train_one_epoch(
            model, loaders.train, optimizer, scheduler, step, epoch
        )
        kept = f"last.pt holds epoch {state.epoch}" if state.epoch else "nothing was written"
        stop_if_diverged(loss, where=f"in epoch {epoch}", kept=kept)
        sync_buffers(backbone, ctx)
        eval_start = time.perf_counter()
        test_loss, test_accuracy = evaluate(backbone, loaders.test, step)
        val_loss = val_accuracy = smallest = None
        if val is not None:
            val_loss, val_accuracy = evaluate(backbone, val, step)
            if config.sandwich:
                smallest = evaluate_smallest(backbone, val, calibration, step, info)
        stats = EpochStats(
            epoch=epoch,
            lr=lr,
            train_loss=loss,
            train_accuracy=accuracy,
            test_loss=test_loss,
            test_accuracy=test_accuracy,
            images_per_s=rate,
            train_s=train_s,
            eval_s=time.perf_counter() - eval_start,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            val_accuracy_smallest=smallest,
            precision=config.precision,
        )
        state.record(stats)
        display.log(epoch_line(stats, config.epochs))
        save_run(out, backbone, optimizer, scheduler, config, info, state, options, ctx, split)
        barrier(ctx)
        if on_epoch_end is not None:
            on_epoch_end(stats)

    result = PretrainResult(
        backbone=backbone,
        history=state.history,
        out_dir=out,
        best_score=state.best_score,
        best_epoch=state.best_epoch,
        train_wall_s=state.train_wall_s,
    )
    chosen = "by validation" if config.val_size else "the last: no validation split"
    display.log(
        f"final test accuracy {result.last_accuracy:.2%} after {state.epoch} epochs; "
        f"best.pt is epoch {result.best_epoch} ({chosen}); "
        f"{state.train_wall_s / 60:.1f} min; checkpoints in {out}"
    )
    return result


def epoch_line(stats: EpochStats, epochs: int) -> str:
    """One line per epoch, every field named."""
    parts = [
        f"epoch {stats.epoch}/{epochs}",
        f"lr {stats.lr:.4f}",
        f"train loss {stats.train_loss:.4f} acc {stats.train_accuracy:.2%}",
    ]
    if stats.val_accuracy is not None:
        parts.append(f"val loss {stats.val_loss:.4f} acc {stats.val_accuracy:.2%}")
    if stats.val_accuracy_smallest is not None:
        parts.append(f"val acc of the smallest {stats.val_accuracy_smallest:.2%}")
    parts += [
        f"test acc {stats.test_accuracy:.2%} (reported, never chosen on)",
        f"{stats.images_per_s:.0f} img/s" + (f" in {stats.precision}" if stats.precision else ""),
        f"{stats.train_s:.0f}s train + {stats.eval_s:.0f}s eval",
    ]
    return "  ".join(parts)
