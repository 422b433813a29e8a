"""What one inference call asks for: images, a budget, and what decides the mask.

Three kinds of decision, one class each, checked when made:

- ``Agent(mode, seed, cap)``: the artifact's policy graph (or, in mode "allocate",
  its allocator) chooses each image's components for its budget.
- ``Static()``: the artifact's searched static mask with round(c K) components,
  the same for every image (`budget-edge export --static-masks`).
- ``Mask(components)``: exactly these components; no budget, nothing decided.

`BudgetRuntime.run` takes an :class:`InferenceRequest`; `BudgetRuntime.infer`
keeps the keyword form (``infer(images, budget=0.5)``) and builds one with
:func:`decision_from_options`; the server and bench build them directly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from budget_edge.errors import InputError
from budget_edge.runtime.masks import CAPS, MODES

POLICIES = ("agent", "static")


@dataclass(frozen=True)
class Agent:
    """The agent decides per image. mode None: the artifact's own (`default_mode`)."""

    mode: str | None = None
    seed: int | None = None  # for mode "sample"
    cap: str | None = None  # "components" or "flops": the budget as a ceiling per image

    def __post_init__(self) -> None:
        if self.mode is not None and self.mode not in MODES:
            raise InputError(f"mode {self.mode!r} is not one of {MODES}")
        if self.cap is not None and self.cap not in CAPS:
            raise InputError(f"cap {self.cap!r} is not one of {CAPS} (or None)")
        seed = self.seed
        if seed is not None and (
            isinstance(seed, (bool, np.bool_))
            or not isinstance(seed, (int, np.integer))
            or seed < 0
        ):
            raise InputError(f"seed must be a non-negative integer (or None), got {seed!r}")


@dataclass(frozen=True)
class Static:
    """The artifact's searched static mask for the budget, the same for every image."""


@dataclass(frozen=True, eq=False)
class Mask:
    """Exactly these components: (K,) for every image or (N, K), of 0/1."""

    components: ArrayLike


Decision = Agent | Static | Mask
DEFAULT_AGENT = Agent()  # the artifact's own mode, no seed, no cap


def decision_from_options(
    mask: ArrayLike | None = None,
    mode: str | None = None,
    seed: int | None = None,
    cap: str | None = None,
    policy: str = "agent",
) -> Decision:
    """The keyword options of `BudgetRuntime.infer` (and of a v2 request) as one decision."""
    if mask is not None:
        given = [n for n, v in (("mode", mode), ("seed", seed), ("cap", cap)) if v is not None]
        given += ["policy"] if policy != "agent" else []
        if given:  # a caller who passed one of them expected it to matter
            raise InputError(
                f"a mask runs exactly its components, so {', '.join(given)} would be "
                "ignored: pass either a mask, or a budget with these options"
            )
        return Mask(mask)
    if policy == "agent" and mode is None and seed is None and cap is None:
        return DEFAULT_AGENT  # infer(images, budget=c): nothing to check, nothing to make
    if policy not in POLICIES:
        raise InputError(f"policy {policy!r} is not one of {POLICIES}")
    agent = Agent(mode, seed, cap)  # checks the options' values either way
    if policy == "agent":
        return agent
    if cap is not None:
        raise InputError(
            "cap needs the agent's probabilities: drop cap with "
            "policy='static' (its masks already fit round(c K))"
        )
    if mode == "allocate":
        raise InputError(
            "mode 'allocate' ranks the agent's components: use it with "
            "policy='agent', or drop it with policy='static'"
        )
    return Static()


@dataclass(frozen=True, eq=False)
class InferenceRequest:
    """One inference call: images, their budget (a float or one per image) and a decision.

    images: uint8 NHWC pixels (NHW or HW for one channel), normalised with the
    manifest's preprocessing, or float32 NCHW already preprocessed. A budget goes
    with Agent and Static decisions (None: the caller, e.g. the server's budget
    controller, gives it later with `with_budget`); a Mask takes none.
    """

    images: ArrayLike
    budget: ArrayLike | None = None
    decision: Decision = Agent()

    def __post_init__(self) -> None:
        if not isinstance(self.decision, (Agent, Static, Mask)):
            raise InputError(
                f"decision must be Agent(...), Static() or Mask(components), got {self.decision!r}"
            )
        if isinstance(self.decision, Mask) and self.budget is not None:
            raise InputError(
                "give a budget or a mask, not both: a mask runs exactly its "
                "components, so the budget would be ignored"
            )

    def with_budget(self, budget: float) -> InferenceRequest:
        """The request at `budget` if it has none and one is needed, else unchanged."""
        if self.budget is not None or isinstance(self.decision, Mask):
            return self
        return dataclasses.replace(self, budget=budget)

    def split(self, chunk: int) -> list[InferenceRequest]:
        """Consecutive requests of at most `chunk` images (per-image inputs split too).

        Only a batch with its batch axis (NHWC pixels or NCHW inputs, 4 axes) is split:
        a single image (HW, HWC) runs whole. So does sampling (mode "sample", or the
        artifact's own mode when none is named): its random draws depend on each
        image's row in the batch, so chunks would change the answer.
        """
        images = np.asarray(self.images)
        decision = self.decision
        sampled = isinstance(decision, Agent) and decision.mode in ("sample", None)
        if images.ndim != 4 or images.shape[0] <= chunk or sampled or self._misfit(images):
            return [self]
        n = images.shape[0]
        return [self._rows(images, slice(i, i + chunk)) for i in range(0, n, chunk)]

    def _misfit(self, images: np.ndarray) -> bool:
        """Per-image budgets or masks of another count: left whole, so the runtime's
        error names the request's image count, not a chunk's."""
        n = images.shape[0]
        budget, decision = self.budget, self.decision
        if budget is not None and np.ndim(budget) == 1 and np.shape(budget)[0] != n:
            return True
        masks = decision.components if isinstance(decision, Mask) else None
        return masks is not None and np.ndim(masks) == 2 and np.shape(masks)[0] != n

    def _rows(self, images: np.ndarray, rows: slice) -> InferenceRequest:
        budget = self.budget
        if budget is not None and np.ndim(budget) == 1:
            budget = np.asarray(budget)[rows]
        decision = self.decision
        if isinstance(decision, Mask) and np.ndim(decision.components) == 2:
            decision = Mask(np.asarray(decision.components)[rows])
        return InferenceRequest(images[rows], budget, decision)
