"""The curriculum of the paper, in its two directions.

1. Components: the first i components are forced on and the actor controls the
   last K - i; i shrinks linearly from `forced_start` (default K - 1) to 0 over
   `forced_epochs` epochs. With forced_start = forced_epochs = K - 1 and whole
   epochs this is the reference's one more component per epoch.
2. Budgets: each image gets its own budget c ~ U[c_min, 1]; c_min shrinks
   linearly from 1.0 to 0.1 over `budget_epochs` epochs.

Times are epochs as floats: the training loop passes whole epochs (the
reference's step per epoch) or epoch + fraction (a smooth ramp per batch).
After the curriculum, fine-tuning uses the end values: i = 0, c_min = 0.1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from budget_edge.errors import ConfigError


def _progress(epoch: float, span: float) -> float:
    """Share of a linear ramp done at `epoch`: 0 at the start, 1 at `span` and after."""
    if span <= 0:
        return 1.0
    return min(max(epoch / span, 0.0), 1.0)


@dataclass(frozen=True)
class Curriculum:
    num_components: int
    forced_epochs: float
    budget_epochs: float
    forced_start: int | None = None  # None: K - 1, the actor starts with the last component
    c_min_start: float = 1.0
    c_min_end: float = 0.1

    def __post_init__(self) -> None:
        k = self.num_components
        if k < 1:
            raise ConfigError(f"the backbone has {k} components; it needs at least one")
        if self.forced_start is not None and not 0 <= self.forced_start < k:
            raise ConfigError(
                f"forced_start={self.forced_start} must be in [0, {k - 1}] for K={k} components"
            )
        if self.forced_epochs < 0 or self.budget_epochs < 0:
            raise ConfigError("curriculum ramp lengths (epochs) must be >= 0")
        if not 0.0 <= self.c_min_end <= self.c_min_start <= 1.0:
            raise ConfigError(
                f"need 0 <= c_min_end <= c_min_start <= 1, got c_min_start={self.c_min_start}, "
                f"c_min_end={self.c_min_end}"
            )

    @property
    def start(self) -> int:
        """i at epoch 0."""
        return self.num_components - 1 if self.forced_start is None else self.forced_start

    def forced_components(self, epoch: float) -> int:
        """i: how many leading components are forced on at `epoch`."""
        remaining = self.start * (1.0 - _progress(epoch, self.forced_epochs))
        # ceil, so i reaches 0 only at the end of the ramp (tolerance for float steps).
        return max(math.ceil(remaining - 1e-9), 0)

    def c_min(self, epoch: float) -> float:
        """Lower end of the budget range at `epoch`."""
        p = _progress(epoch, self.budget_epochs)
        return self.c_min_start + (self.c_min_end - self.c_min_start) * p

    def sample_budgets(
        self, n: int, epoch: float, generator: torch.Generator | None = None
    ) -> Tensor:
        """Per-image budgets c ~ U[c_min, 1], shape (n,)."""
        low = self.c_min(epoch)
        return low + (1.0 - low) * torch.rand(n, generator=generator)


def controlled_components(num_components: int, forced: int) -> Tensor:
    """(K,) bool: True for the components the actor controls (all but the first `forced`)."""
    controlled = torch.ones(num_components, dtype=torch.bool)
    controlled[:forced] = False
    return controlled


def force_on(actions: Tensor, forced: int) -> Tensor:
    """Copy of the (N, K) actions with the first `forced` components set to 1."""
    actions = actions.clone()
    actions[:, :forced] = 1
    return actions
