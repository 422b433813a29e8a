"""From the policy's probabilities to the mask that runs.

- ``greedy``: keep a component when its probability is >= 0.5, as the BlockDrop
  and BudgetNet reference test code does (``policy[policy < 0.5] = 0;
  policy[policy >= 0.5] = 1``).
- ``sample``: draw each component from Bernoulli(p) (the exploration-free sampled
  mask), reproducible with a seed.
- ``rank``: keep the round(c K) most probable components (a tie at .5 rounds
  down). The policy still picks *which* components each image runs; the budget
  fixes *how many*, so usage is within 0.5 / K of c at every budget. Not in the
  paper: thresholding at 0.5 leaves usage wherever the trained sigmoids cross,
  often a whole component below c (docs/budgetnet.md).
- ``allocate``: each image's count from the allocator, so that the mean usage
  over images is c; which components, from the allocator's table of count
  masks (the agent's choice at each count; runtime/allocation.py). Not in the
  paper either: needs an artifact exported from a checkpoint with an allocator
  (`budget-edge allocate`).
- ``cap``: make the budget a hard ceiling by dropping the kept components with
  the lowest probability until the cost is within c.
- ``project_to_variants``: blocks exported with only prefix path sets (large
  cardinality) run the prefix with the same number of kept paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from budget_edge.errors import InputError
from budget_edge.runtime.manifest import DECISION_MODES, Manifest

MODES = DECISION_MODES
CAPS = ("components", "flops")


def choose(
    probs: np.ndarray, mode: str, seed: int | None, budget: np.ndarray | None = None
) -> np.ndarray:
    """uint8 (N, K) mask from probabilities (N, K); `rank` needs the budgets (N,)."""
    if mode == "greedy":
        return (probs >= 0.5).astype(np.uint8)
    if mode == "sample":
        rng = np.random.default_rng(seed)
        return (rng.random(probs.shape) < probs).astype(np.uint8)
    if mode == "rank":
        if budget is None:
            raise InputError("mode 'rank' keeps round(budget x K) components: give a budget")
        return rank_masks(probs, budget)
    if mode == "allocate":
        raise InputError(
            "mode 'allocate' needs the allocator graph's outputs: run it through "
            "BudgetRuntime.infer"
        )
    raise InputError(f"mode {mode!r} is not one of {MODES}")


def rank_counts(budget: np.ndarray, num_components: int) -> np.ndarray:
    """round(c K) per image, a tie at .5 rounding down (the budget is also a ceiling)."""
    return np.clip(np.ceil(budget * num_components - 0.5 - 1e-9), 0, num_components).astype(
        np.int64
    )


def rank_masks(probs: np.ndarray, budget: np.ndarray) -> np.ndarray:
    """Keep each image's round(c K) most probable components (ties: lower index first)."""
    n, k = probs.shape
    order = np.argsort(-probs, axis=1, kind="stable")
    keep = np.arange(k)[None, :] < rank_counts(np.asarray(budget, np.float64), k)[:, None]
    out = np.zeros((n, k), np.uint8)
    np.put_along_axis(out, order, keep.astype(np.uint8), axis=1)
    return out


@dataclass(frozen=True)
class CostModel:
    """cost(mask) = (base + mask @ weights) / total; the cap keeps it <= c."""

    weights: np.ndarray  # (K,)
    base: float
    total: float

    @classmethod
    def for_cap(cls, cap: str, manifest: Manifest) -> CostModel:
        if cap == "components":
            return cls(np.ones(manifest.num_components), 0.0, float(manifest.num_components))
        if cap == "flops":
            flops = np.array([c.flops for c in manifest.components], np.float64)
            return cls(flops, float(manifest.base_flops), float(manifest.full_flops))
        raise InputError(f"cap {cap!r} is not one of {CAPS} (or None for no ceiling)")

    def cost(self, mask: np.ndarray) -> np.ndarray:
        return (self.base + mask @ self.weights) / self.total


def cap(mask: np.ndarray, probs: np.ndarray, budget: np.ndarray, model: CostModel) -> np.ndarray:
    """Drop kept components, least probable first, until cost <= budget per image.

    With the FLOPs cap the stem, head and shortcut convolutions always run, so a
    budget below ``base / total`` leaves every component dropped and the cost at
    that floor (`BudgetRuntime.min_flops_fraction`).
    """
    out = mask.copy()
    tol = 1e-9 * model.total  # so c * K = 2.0000000001 still allows 2 components
    for i in range(mask.shape[0]):
        excess = model.base + out[i] @ model.weights - budget[i] * model.total
        if excess <= tol:
            continue
        kept = np.flatnonzero(out[i])
        order = kept[np.argsort(probs[i, kept], kind="stable")]
        freed = np.cumsum(model.weights[order])
        enough = np.flatnonzero(freed >= excess - tol)
        drop = order if enough.size == 0 else order[: enough[0] + 1]
        out[i, drop] = 0
    return out


MAX_ALL_SUBSETS = 4  # C <= 4: every path subset gets a graph; above: prefixes only


def variant_scheme(num_paths: int) -> str:
    """Which kept-path sets of a block get a graph: "single", "all" or "prefix"."""
    if num_paths == 1:
        return "single"
    return "all" if num_paths <= MAX_ALL_SUBSETS else "prefix"


def prefix_blocks(model: Any) -> list[list[int]]:
    """Component indices of each block exported with the 'prefix' scheme, whose kept-path
    sets run as the prefix of the same size. `model`: a Manifest or a Backbone (both
    have `blocks` with `num_paths`, in order, and `block_components(block)`)."""
    return [
        model.block_components(b)
        for b, block in enumerate(model.blocks)
        if variant_scheme(block.num_paths) == "prefix"
    ]


def project_to_variants(mask: np.ndarray, blocks: list[list[int]]) -> np.ndarray:
    """Map kept-path sets of prefix-scheme blocks (`prefix_blocks`) to the prefix of
    the same size.

    Paths of such a block have equal FLOPs (the manifest checks it), so the
    cost of the mask is unchanged.
    """
    if not blocks:
        return mask
    out = mask.copy()
    for idx in blocks:
        counts = out[:, idx].sum(axis=1)
        out[:, idx] = (np.arange(len(idx))[None, :] < counts[:, None]).astype(np.uint8)
    return out


def check_variants(
    mask: np.ndarray, manifest: Manifest, blocks: list[list[int]] | None = None
) -> None:
    """An explicit mask must ask only for path sets that have a graph.

    blocks: `prefix_blocks(manifest)`, when the caller has it already.
    """
    for idx in prefix_blocks(manifest) if blocks is None else blocks:
        part = mask[:, idx]
        counts = part.sum(axis=1)
        prefix = np.arange(len(idx))[None, :] < counts[:, None]
        bad = np.flatnonzero((part != prefix).any(axis=1))
        if bad.size:
            i = int(bad[0])
            block = manifest.components[idx[0]].block
            paths = np.flatnonzero(part[i]).tolist()
            raise InputError(
                f"mask row {i} keeps paths {paths} of block {block}, but this {len(idx)}-path "
                f"block was exported with prefix path sets only (paths 0..m-1): keep the "
                f"first m paths of the block (components {idx[0]}..{idx[-1]})"
            )
