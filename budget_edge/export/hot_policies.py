"""`--fuse-top K`: the K masks the policy picks most often, for whole-mask graphs.

With an allocator the masks of mode 'allocate' count too: one per count (the
allocator's table of count masks), so K + 1 graphs cover all of them.

The paper observes that the agent uses few distinct policies in practice, so
exporting the most frequent masks as single static graphs lets the runtime
run a whole image in one call instead of one call per block.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch

from budget_edge.agent.allocator import Allocator, allocate
from budget_edge.agent.policy import PolicyNet
from budget_edge.errors import ConfigError

# Budgets the calibration images are paired with: the range a device sweeps.
DEFAULT_BUDGETS = tuple(round(0.1 * i, 1) for i in range(1, 11))


def most_frequent_masks(masks: np.ndarray, k: int) -> list[tuple[int, ...]]:
    """The `k` most frequent rows of a 0/1 (N, K) array; ties go to the smaller mask."""
    if k < 0:
        raise ConfigError(f"--fuse-top must be 0 or more, got {k}")
    counts = Counter(tuple(int(v) for v in row) for row in np.asarray(masks))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [mask for mask, _ in ranked[:k]]


@torch.no_grad()
def policy_masks(
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

