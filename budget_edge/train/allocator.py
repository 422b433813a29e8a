"""Train the allocator of a BudgetNet checkpoint (`budget-edge allocate`).

1. Count masks: for each count k = 0..K, the agent's most common top-k mask at
   budget k / K on the split's tail (the agent alone: fast). The runtime runs
   row k for an image given k components, so it needs no agent features.
   Correctness table: for every training image and every count k, is the
   backbone right with row k? (K + 1 masked passes over the images; saved next
   to the output after every count, so a rerun after a crash goes on from the
   next count, and one during the fit does not repeat the table.)
2. Fit the allocator on the table (binary cross-entropy per count), on every
   training image except the split's tail.
3. Calibrate: on the tail, which the fit never saw, find for each budget the
   price at which the mean usage is at most the budget
   (`budget_edge.runtime.allocation`). Then the saturation budget: the smallest
   budget at which the tail's accuracy comes within `accuracy_slack` of the
   best any budget reaches; every larger budget gets its price, so no budget
   spends components that buy no accuracy (usage then stays under c).
   The test split is never read.

The backbone and the agent are not changed: the allocator only decides how
many of the agent's components each image runs.
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from budget_edge.agent.allocator import Allocator, build_allocator
from budget_edge.agent.policy import PolicyNet
from budget_edge.errors import CheckpointError, ConfigError
from budget_edge.files import atomic_writer
from budget_edge.models.backbone import Backbone
from budget_edge.models.checkpoint import LoadedCheckpoint, save_checkpoint
from budget_edge.models.checkpoint_formats import state_digest
from budget_edge.runtime.allocation import calibrate_prices, counts_for
from budget_edge.runtime.masks import prefix_blocks, project_to_variants
from budget_edge.train.config_checks import not_finite, seed_problem
from budget_edge.train.divergence import stop_if_diverged

Progress = Callable[[str], None]

# Budgets the prices are calibrated at; the runtime interpolates between them.
CALIBRATION_BUDGETS = [round(0.05 * i, 2) for i in range(21)]
# A larger slack would let a budget give up more than 5 points; a user passing 0.5
# for "half a point" would switch the allocator nearly off.
MAX_SLACK = 0.05
# Budgets the saturation budget is searched among.
SATURATION_BUDGETS = [round(0.01 * i, 2) for i in range(101)]


@dataclass(frozen=True)
class AllocatorConfig:
    epochs: int = 8
    batch_size: int = 256
    lr: float = 2e-3
    calib_images: int = 5000  # the training split's tail: calibration only
    extractor: str = "light"
    seed: int = 0
    # Held-out accuracy (a fraction) a budget may give up against the best budget;
    # components beyond the saturation budget buy less and are not run. None turns
    # it off (every budget spends up to c).
    accuracy_slack: float | None = 0.001

    def check(self) -> None:
        problems = not_finite(self) + seed_problem(self.seed)
        if problems:
            raise ConfigError("; ".join(problems))
        if self.epochs < 1 or self.batch_size < 1 or self.calib_images < 1:
            raise ConfigError("--epochs, --batch-size and --calib-images must be >= 1")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.accuracy_slack is not None and not 0.0 <= self.accuracy_slack <= MAX_SLACK:
            raise ConfigError(
                f"--accuracy-slack is a fraction in [0, {MAX_SLACK}] (0.001 is "
                f"0.1 point), got {self.accuracy_slack}"
            )


@torch.no_grad()
def count_masks_of(
    agent: PolicyNet,
    images: Tensor,
    batch_size: int = 500,
    prefix_blocks: list[list[int]] | None = None,
) -> np.ndarray:
    """(K + 1, K) uint8: row k is the agent's most common top-k mask at budget k / K
    over `images` (ties: the smaller mask, as for the fused graphs). `prefix_blocks`
    (`runtime.masks.prefix_blocks`): blocks whose kept paths the runtime runs
    as a prefix; each row keeps the prefix of the same size there, so the table,
    the fit and the exported graphs describe the masks that run."""
    from budget_edge.agent.masks import most_frequent_masks, policy_masks

    k = agent.num_components
    rows = [
        most_frequent_masks(
            policy_masks(agent, images, count / k, batch_size, mode="rank").numpy(), 1
        )[0]
        for count in range(k + 1)
    ]
    return project_to_variants(np.array(rows, np.uint8), prefix_blocks or [])


@torch.no_grad()
def level_correctness(
    backbone: Backbone,
    count_masks: np.ndarray,
    images: Tensor,
    labels: Tensor,
    batch_size: int = 500,
    progress: Progress | None = None,
    table: np.ndarray | None = None,
    start: int = 0,
    save: Callable[[np.ndarray, int], None] | None = None,
) -> np.ndarray:
    """(N, K + 1) bool: right with row k of `count_masks`, for every count k.

    Counts before `start` are taken from `table` (a run stopped part way); `save(table,
    counts_done)` is called after each count."""
    from budget_edge.agent.masks import correct_under_masks

    k = backbone.num_components
    if table is None:
        table = np.zeros((len(images), k + 1), bool)
    for count in range(start, k + 1):
        masks = torch.from_numpy(count_masks[count]).bool().expand(len(images), k)
        table[:, count] = correct_under_masks(backbone, images, labels, masks, batch_size).numpy()
        if save is not None:
            save(table, count + 1)
        if progress is not None:
            progress(f"{count} of {k} components: {100 * table[:, count].mean():.1f}% right")
    return table


TableCompute = Callable[[np.ndarray | None, int, Callable[[np.ndarray, int], None]], np.ndarray]


def cached_correctness(path: Path, key: str, compute: TableCompute) -> np.ndarray:
    """The table from `path` when it was made for `key` (same weights, same images),
    else `compute(table, counts_done, save)`: from scratch (None, 0), or from the count
    after the last one a stopped run saved. The file is rewritten atomically after every
    count, so a crash or a kill loses at most one count's pass over the images."""
    table, done = None, 0
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as saved:
                if str(saved["key"]) == key:
                    table = np.array(saved["table"], bool)
                    # Files from before counts were saved one by one hold whole tables.
                    done = int(saved["done"]) if "done" in saved.files else table.shape[1]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            table, done = None, 0  # damaged or foreign: compute it again
    if table is not None and done >= table.shape[1]:
        return table

    def save(partial: np.ndarray, counts_done: int) -> None:
        with atomic_writer(path, error=CheckpointError) as handle:
            np.savez(handle, key=np.array(key), table=partial, done=np.array(counts_done))

    return compute(table, done, save)


def fit_allocator(
    allocator: Allocator,
    images: Tensor,
    table: np.ndarray,
    cfg: AllocatorConfig,
    progress: Progress | None = None,
) -> list[float]:
    """Binary cross-entropy of every count's chance; returns the loss of each epoch."""
    generator = torch.Generator().manual_seed(cfg.seed)
    targets = torch.from_numpy(table.astype(np.float32))
    optimizer = torch.optim.Adam(allocator.parameters(), lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.epochs)
    losses = []
    allocator.train()
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(images), generator=generator)
        total = 0.0
        for start in range(0, len(order), cfg.batch_size):
            rows = order[start : start + cfg.batch_size]
            loss = F.binary_cross_entropy_with_logits(allocator(images[rows]), targets[rows])
            stop_if_diverged(
                loss.item(),
                where=f"in allocator epoch {epoch + 1}",
                kept="the checkpoint was not changed",
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(rows)
        schedule.step()
        losses.append(total / len(images))
        if progress is not None:
            progress(f"epoch {epoch + 1}/{cfg.epochs}: loss {losses[-1]:.4f}")
    allocator.eval()
    return losses


@torch.no_grad()
def chances(allocator: Allocator, images: Tensor, batch_size: int = 1000) -> np.ndarray:
    """(N, K + 1) float64: the allocator's chance of being right with each count."""
    allocator.eval()
    parts = [
        torch.sigmoid(allocator(images[i : i + batch_size]))
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(parts).double().numpy()


def held_out_accuracy(chances: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Accuracy of `correct` (N, K + 1) under the counts of `chances` (N, K + 1) at the
    price of each of SATURATION_BUDGETS."""
    rows = np.arange(len(chances))
    prices = calibrate_prices(chances, np.array(SATURATION_BUDGETS))
    return np.array(
        [correct[rows, counts_for(chances, np.full(len(rows), p))].mean() for p in prices]
    )


def saturation_budget(chances: np.ndarray, correct: np.ndarray, slack: float) -> float:
    """The smallest budget at which the accuracy of `correct` (N, K + 1) under the counts
    of `chances` (N, K + 1) comes within `slack` of the best over all budgets (beyond
    the peak it may fall: components the allocator adds there do not pay)."""
    return _first_within(held_out_accuracy(chances, correct), slack)


def _first_within(accuracy: np.ndarray, slack: float) -> float:
    """The first of SATURATION_BUDGETS whose `accuracy` is within `slack` of the best."""
    return float(SATURATION_BUDGETS[np.flatnonzero(accuracy >= accuracy.max() - slack)[0]])


def saturated_prices(
    chances: np.ndarray,
    correct: np.ndarray,
    slack: float | None,
    accuracy: np.ndarray | None = None,
) -> tuple[list[float], float]:
    """Prices of CALIBRATION_BUDGETS, none under the saturation budget's (slack None:
    no floor, the saturation budget is 1); and that budget. `accuracy`: the
    `held_out_accuracy` of `chances` and `correct`, when the caller has it already."""
    prices = calibrate_prices(chances, np.array(CALIBRATION_BUDGETS))
    if slack is None:
        return [float(p) for p in prices], 1.0
    if accuracy is None:
        accuracy = held_out_accuracy(chances, correct)
    saturation = _first_within(accuracy, slack)
    floor = calibrate_prices(chances, np.array([saturation]))[0]
    return [float(p) for p in np.maximum(prices, floor)], saturation


def train_allocator(
    loaded: LoadedCheckpoint,
    images: Tensor,
    labels: Tensor,
    out: Path,
    cfg: AllocatorConfig,
    source: str,
    progress: Progress | None = None,
    meta: dict[str, Any] | None = None,
) -> Allocator:
    """Fit and calibrate an allocator for `loaded` on training `images`; save the
    checkpoint with it to `out`. `source` names the images in the calibration."""
    cfg.check()
    agent = loaded.agent
    if agent is None:
        raise CheckpointError(
            "the checkpoint has no agent: the allocator ranks the agent's "
            "components, so train one first (budget-edge train)"
        )
    if cfg.calib_images >= len(images):
        raise ConfigError(
            f"--calib-images {cfg.calib_images} leaves none of the "
            f"{len(images)} training images to fit on; pass fewer"
        )
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    backbone = loaded.backbone.eval()
    fit = slice(0, len(images) - cfg.calib_images)
    tail = slice(len(images) - cfg.calib_images, len(images))
    count_masks = count_masks_of(agent, images[tail], prefix_blocks=prefix_blocks(backbone))
    # Every image and label counts (hashing 60,000 Fashion-MNIST images takes well
    # under a second; the table takes minutes), and the count masks the table used.
    key = "|".join(
        [
            state_digest(backbone.state_dict()),
            state_digest(agent.state_dict()),
            state_digest({"x": images, "y": labels, "count_masks": torch.from_numpy(count_masks)}),
        ]
    )
    levels = out.with_name(out.name + ".levels.npz")

    def compute(
        table: np.ndarray | None, done: int, save: Callable[[np.ndarray, int], None]
    ) -> np.ndarray:
        if table is not None and table.shape != (len(images), count_masks.shape[0]):
            table, done = None, 0  # not this table after all (an edited file): start again
        if done and progress is not None:
            progress(f"{levels}: counts 0-{done - 1} done by an earlier run; going on at {done}")
        return level_correctness(
            backbone,
            count_masks,
            images,
            labels,
            progress=progress,
            table=table,
            start=done,
            save=save,
        )

    table = cached_correctness(levels, key, compute)
    allocator = build_allocator(
        agent.num_components,
        cfg.extractor,
        agent.in_channels,
        agent.input_size,
        count_masks=count_masks.tolist(),
    )
    losses = fit_allocator(allocator, images[fit], table[fit], cfg, progress)
    tail_chances = chances(allocator, images[tail])
    curve = held_out_accuracy(tail_chances, table[tail])  # a few seconds: computed once
    prices, saturation = saturated_prices(tail_chances, table[tail], cfg.accuracy_slack, curve)
    calibration = {
        "budgets": list(CALIBRATION_BUDGETS),
        "prices": prices,
        "source": f"{source}: last {cfg.calib_images} images",
    }
    allocator = _with_calibration(allocator, calibration)
    info = {
        "fit_images": fit.stop,
        "calib_images": cfg.calib_images,
        "epochs": cfg.epochs,
        "lr": cfg.lr,
        "losses": losses,
        "accuracy_slack": cfg.accuracy_slack,
        "saturation_budget": saturation,
        # What the saturation budget was read from: the tail's accuracy at each budget.
        "held_out_accuracy": {
            f"{b:g}": round(float(a), 4)
            for b, a in zip(SATURATION_BUDGETS, curve, strict=True)
            if round(b * 100) % 5 == 0
        },
        "wall_s": round(time.perf_counter() - start, 1),
        "level_accuracy_train": [float(v) for v in table.mean(axis=0)],
    }
    save_checkpoint(
        out,
        backbone,
        agent,
        meta={**loaded.meta, **(meta or {}), "allocator": info},
        allocator=allocator,
    )
    return allocator


def _with_calibration(allocator: Allocator, calibration: dict[str, Any]) -> Allocator:
    """The same weights with the calibration in the config (the checkpoint keeps it)."""
    config = {**allocator.config, "calibration": calibration}
    calibrated = build_allocator(**config)
    calibrated.load_state_dict(allocator.state_dict())
    return calibrated.eval()
