"""Masks in torch: what the agent, the allocator and the static baselines keep.

Training (the agent's per-epoch check, the allocator's calibration, the prior),
evaluation and export all ask the same questions of a trained agent and backbone:
which components does each image keep at budget c, and is the prediction right under
a given mask. One answer for each lives here; the runtime's numpy versions
(runtime/masks.py, runtime/allocation.py) follow the same rules.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from budget_edge.agent.allocator import Allocator, allocate
from budget_edge.agent.policy import PolicyNet
from budget_edge.errors import ConfigError
from budget_edge.runtime.masks import rank_counts

if TYPE_CHECKING:  # the backbone is only called here; models imports agent, not back
    from budget_edge.models.backbone import Backbone

# A probability at or above this keeps a component (the reference's test).
KEEP_THRESHOLD = 0.5
MASK_MODES = ("greedy", "rank", "allocate")
# Budgets the calibration images are paired with: the range a device sweeps.
DEFAULT_BUDGETS = tuple(round(0.1 * i, 1) for i in range(1, 11))


def _batches(n: int, batch_size: int) -> list[slice]:
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def masks_from_probs(probs: Tensor, budget: float, mode: str = "greedy") -> Tensor:
    """(N, K) bool. greedy: p >= 0.5 (the paper). rank: the round(c K) most probable
    components of each image, a tie at .5 rounding down (as the runtime's `rank`)."""
    if mode == "greedy":
        return probs >= KEEP_THRESHOLD
    if mode == "rank":
        k = probs.shape[1]
        count = int(rank_counts(np.array([budget]), k)[0])  # the runtime's rounding rule
        keep = torch.zeros_like(probs, dtype=torch.bool)
        keep.scatter_(1, probs.topk(count, dim=1).indices, True)
        return keep
    raise ConfigError(f"mask mode {mode!r} is not one of {', '.join(MASK_MODES)}")


@torch.no_grad()
def policy_masks(
    agent: torch.nn.Module,
    images: Tensor,
    budget: float,
    batch_size: int = 500,
    mode: str = "greedy",
    allocator: Allocator | None = None,
) -> Tensor:
    """(N, K) bool: the agent's deterministic masks for every image at budget c
    (mode "allocate": the allocator's counts, as the runtime's mode)."""
    if mode == "allocate":
        return allocated_masks(agent, allocator, images, budget, batch_size)
    masks = []
    for part in _batches(len(images), batch_size):
        probs, _ = agent(images[part], budget)
        masks.append(masks_from_probs(probs, budget, mode))
    return torch.cat(masks)


@torch.no_grad()
def allocated_masks(
    agent: torch.nn.Module,
    allocator: Allocator | None,
    images: Tensor,
    budget: float,
    batch_size: int = 500,
) -> Tensor:
    """(N, K) bool: mode "allocate" (runtime/allocation.py) computed with torch."""
    if allocator is None or allocator.calibration is None:
        raise ConfigError(
            "mode 'allocate' needs a checkpoint with a calibrated allocator: "
            "run `budget-edge allocate CKPT --out CKPT2` first"
        )
    masks = [
        torch.from_numpy(
            allocate(
                allocator,
                agent,  # type: ignore[arg-type]
                images[part],  # type: ignore[arg-type]
                [budget],
            )[0]
        ).bool()
        for part in _batches(len(images), batch_size)
    ]
    return torch.cat(masks)


@torch.no_grad()
def correct_under_masks(
    backbone: Backbone, images: Tensor, labels: Tensor, masks: Tensor | None, batch_size: int = 500
) -> Tensor:
    """(N,) bool: whether the backbone, run with each image's mask, predicts its label."""
    correct = []
    for part in _batches(len(images), batch_size):
        mask = None if masks is None else masks[part]
        correct.append(backbone(images[part], mask).argmax(1) == labels[part])
    return torch.cat(correct)


def random_masks(counts: Tensor, num_components: int, generator: torch.Generator) -> Tensor:
    """(N, K) bool: row i keeps exactly counts[i] components, chosen uniformly."""
    scores = torch.rand(len(counts), num_components, generator=generator)
    ranks = scores.argsort(dim=1).argsort(dim=1)  # a random permutation per row
    return ranks < counts[:, None]


def static_drop_order(
    backbone: Backbone, images: Tensor, labels: Tensor, batch_size: int = 500
) -> list[int]:
    """Components ordered from least to most harmful to drop, measured one at a time."""
    k = backbone.num_components
    accuracies = []
    for component in range(k):
        mask = torch.ones(len(images), k, dtype=torch.bool)
        mask[:, component] = False
        correct = correct_under_masks(backbone, images, labels, mask, batch_size)
        accuracies.append(correct.float().mean().item())
    # Highest accuracy without it first; ties keep mask order (sorted is stable).
    return sorted(range(k), key=lambda c: -accuracies[c])


def best_static_masks(
    backbone: Backbone,
    images: Tensor,
    labels: Tensor,
    batch_size: int = 500,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """(K+1, K) bool: row m is the best fixed mask with m components found by greedy
    backward elimination on these (validation) images: from all kept, drop at each step
    the component whose removal costs the least accuracy. The runtime's
    `static_masks.search_static_masks` does the same through ONNX Runtime.
    `progress(trials_done, trials)` is called after each step (K (K+1) / 2 trials)."""
    k = backbone.num_components
    table = torch.zeros(k + 1, k, dtype=torch.bool)
    kept = torch.ones(k, dtype=torch.bool)
    table[k] = kept
    trials, done = k * (k + 1) // 2, 0
    for m in range(k - 1, -1, -1):
        best_acc, best = -1.0, kept
        for component in torch.nonzero(kept).flatten().tolist():
            trial = kept.clone()
            trial[component] = False
            masks = trial.expand(len(images), k)
            acc = correct_under_masks(backbone, images, labels, masks, batch_size)
            if acc.float().mean().item() > best_acc:
                best_acc, best = acc.float().mean().item(), trial
        kept = best
        table[m] = kept
        done += m + 1
        if progress is not None:
            progress(done, trials)
    return table


def mutual_information(masks: Tensor, labels: Tensor) -> float:
    """I(class; mask) in bits from the empirical joint counts: 0 when the mask is a
    function of the budget alone, up to H(class) when it sorts images by class."""
    _, mask_ids = torch.unique(masks, dim=0, return_inverse=True)
    _, class_ids = torch.unique(labels, return_inverse=True)
    joint = torch.zeros(int(mask_ids.max()) + 1, int(class_ids.max()) + 1, dtype=torch.float64)
    joint.index_put_(
        (mask_ids, class_ids), torch.ones(len(labels), dtype=torch.float64), accumulate=True
    )
    joint /= joint.sum()
    outer = joint.sum(1, keepdim=True) * joint.sum(0, keepdim=True)
    nz = joint > 0
    return float((joint[nz] * torch.log2(joint[nz] / outer[nz])).sum())


def static_masks(counts: Tensor, order: list[int], num_components: int) -> Tensor:
    """(N, K) bool: row i drops the first K - counts[i] components of the drop order."""
    position = torch.empty(num_components, dtype=torch.long)
    position[torch.tensor(order)] = torch.arange(num_components)
    return position[None, :] >= (num_components - counts)[:, None]


def most_frequent_masks(masks: np.ndarray, k: int) -> list[tuple[int, ...]]:
    """The `k` most frequent rows of a 0/1 (N, K) array; ties go to the smaller mask."""
    if k < 0:
        raise ConfigError(f"--fuse-top must be 0 or more, got {k}")
    counts = Counter(tuple(int(v) for v in row) for row in np.asarray(masks))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [mask for mask, _ in ranked[:k]]


@torch.no_grad()
def masks_over_budgets(
    agent: PolicyNet,
    images: np.ndarray,
    budgets: Sequence[float] = DEFAULT_BUDGETS,
    batch_size: int = 256,
    allocator: Allocator | None = None,
) -> np.ndarray:
    """Greedy masks (keep where p >= 0.5, like the reference and the runtime), image x budget;
    with a calibrated allocator also the masks of mode 'allocate'."""
    agent = agent.eval()
    rows = []
    x_all = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    for start in range(0, len(x_all), batch_size):
        x = x_all[start : start + batch_size]
        for c in budgets:
            probs, _ = agent(x, torch.full((len(x),), float(c)))
            rows.append((probs >= 0.5).to(torch.int64).numpy())
        if allocator is not None:
            rows += [m.astype(np.int64) for m in allocate(allocator, agent, x, budgets)]
    return np.concatenate(rows) if rows else np.zeros((0, agent.num_components), np.int64)
