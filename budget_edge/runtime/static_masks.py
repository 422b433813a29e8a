"""The best static mask for each number of kept components: the baseline a policy must beat.

A static mask runs the same components for every image. The fair static
baseline for a budget is not the drop order of the blocks but the best fixed
mask of that size, found on labelled images the policy is not judged on (the
model's validation split; the end of the training split for a model trained
without one; never the test set). Greedy backward elimination:
start with every component; at each step drop the component whose removal
costs the least accuracy on the search images; the mask after each step is the
best-known mask with one component fewer. K(K+1)/2 evaluations instead of 2^K,
each one call of the switch graph per chunk of images.

Torch-free: the masks are evaluated through the runtime, so the search runs
wherever the artifact runs (and `budget-edge bench` times the masks it finds
next to the policy in the same run).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from budget_edge.errors import InputError
from budget_edge.runtime import masks as masklib
from budget_edge.runtime.manifest import (
    Manifest,
    StaticMaskSpec,
    StaticMasksSpec,
    artifact_lock,
    write_manifest,
)
from budget_edge.runtime.runtime import BudgetRuntime

Progress = Callable[[str], None]


@dataclass(frozen=True)
class StaticMask:
    """One mask of the search: `kept` components, its accuracy on the search images
    (None for masks not found by a search: the allocator's count masks)."""

    kept: int
    mask: tuple[int, ...]
    accuracy: float | None
    flops_share: float


def mask_correct(
    rt: BudgetRuntime, images: np.ndarray, labels: np.ndarray, mask: np.ndarray, batch: int = 256
) -> np.ndarray:
    """Per image, whether one fixed mask classifies it right (bool, len(images))."""
    parts = []
    for start in range(0, len(images), batch):
        x = images[start : start + batch]
        rows = np.broadcast_to(mask, (len(x), mask.size))
        parts.append(rt.infer(x, mask=rows).classes == labels[start : start + batch])
    return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)


def mask_accuracy(
    rt: BudgetRuntime, images: np.ndarray, labels: np.ndarray, mask: np.ndarray, batch: int = 256
) -> float:
    """Accuracy of one fixed mask over `images` (uint8 or preprocessed float32)."""
    return float(mask_correct(rt, images, labels, mask, batch).mean())


def search_static_masks(
    rt: BudgetRuntime,
    images: np.ndarray,
    labels: np.ndarray,
    batch: int = 256,
    progress: Progress | None = None,
) -> list[StaticMask]:
    """Greedy backward elimination; one mask per kept count, from K down to the fewest
    the artifact can run, best first found. `images` must not be the test set."""
    if len(images) == 0 or len(images) != len(labels):
        raise InputError(
            f"the static-mask search needs labelled images, got {len(images)} "
            f"images and {len(labels)} labels"
        )
    k = rt.num_components
    mask = np.ones(k, np.uint8)
    found = [_entry(rt, mask, mask_accuracy(rt, images, labels, mask, batch))]
    prefix_blocks = masklib.prefix_blocks(rt.manifest)
    while mask.any():
        best: tuple[float, np.ndarray] | None = None
        for j in np.flatnonzero(mask):
            trial = mask.copy()
            trial[j] = 0
            if not _runnable(rt, trial, prefix_blocks):
                continue
            acc = mask_accuracy(rt, images, labels, trial, batch)
            if best is None or acc > best[0]:
                best = (acc, trial)
        if best is None:  # only non-runnable removals left (prefix-scheme blocks)
            break
        mask = best[1]
        found.append(_entry(rt, mask, best[0]))
        if progress is not None:
            progress(f"best static mask with {int(mask.sum())} of {k}: {100 * best[0]:.1f}%")
    return found


def for_budget(masks: list[StaticMask], budget: float, num_components: int) -> StaticMask:
    """The searched mask with round(budget K) components (the fewest found if smaller)."""
    if not masks:
        raise InputError("no static masks: run the search first")
    want = int(masklib.rank_counts(np.array([budget]), num_components)[0])
    fitting = [m for m in masks if m.kept <= want]
    return max(fitting, key=lambda m: m.kept) if fitting else min(masks, key=lambda m: m.kept)


def attach_static_masks(
    directory: str | os.PathLike[str],
    images: np.ndarray,
    labels: np.ndarray,
    source: str,
    threads: int | None = None,
    progress: Progress | None = None,
) -> Manifest:
    """Search the artifact's best static masks and record them in its manifest, so the
    runtime can run `policy="static"`. `source` says which images (never the test set)."""
    with artifact_lock(directory):
        with BudgetRuntime.load(directory, backend="onnxruntime", threads=threads) as rt:
            found = search_static_masks(rt, images, labels, progress=progress)
            manifest = rt.manifest
        manifest.static_masks = StaticMasksSpec(
            source=f"{source}, greedy backward elimination",
            # A search measures every mask it keeps.
            masks=[StaticMaskSpec(list(m.mask), float(m.accuracy or 0.0)) for m in found],
        )
        return write_manifest(Path(directory), manifest)


def from_manifest(rt: BudgetRuntime) -> list[StaticMask]:
    """The static masks recorded in the artifact (`attach_static_masks`); [] if none."""
    spec = rt.manifest.static_masks
    if spec is None:
        return []
    return [_entry(rt, np.asarray(s.mask, np.uint8), s.accuracy) for s in spec.masks]


def from_count_table(rt: BudgetRuntime) -> list[StaticMask]:
    """The allocator's count masks, row k keeping k components: the masks mode allocate
    runs, here for every image alike (the same weights and graphs without the per-image
    choice). Row 0 (nothing kept) is left out: no budget a user asks for runs it alone."""
    allocation = rt.manifest.allocation
    if allocation is None or allocation.count_masks is None:
        raise InputError(
            "this artifact has no table of count masks: export a checkpoint made by "
            "`budget-edge allocate` (or compare with --static-search-images)"
        )
    rows = [np.asarray(row, np.uint8) for row in allocation.count_masks]
    return [_entry(rt, row, None) for row in rows if row.any()]


def _entry(rt: BudgetRuntime, mask: np.ndarray, accuracy: float | None) -> StaticMask:
    flops = rt.manifest.base_flops + sum(
        c.flops for c, keep in zip(rt.manifest.components, mask, strict=True) if keep
    )
    return StaticMask(int(mask.sum()), tuple(int(v) for v in mask), accuracy, flops / rt.full_flops)


def _runnable(rt: BudgetRuntime, mask: np.ndarray, prefix_blocks: list[list[int]]) -> bool:
    try:
        masklib.check_variants(mask[None], rt.manifest, prefix_blocks)
    except InputError:
        return False
    return True
