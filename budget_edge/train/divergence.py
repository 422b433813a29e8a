"""Stop a run whose loss is no longer a number, before its weights are saved.

A NaN loss makes NaN gradients and NaN weights; saving them would overwrite the last
good checkpoint with one that predicts nothing, and the command would exit 0. One
check per step costs one host sync, which every training loop here pays for its
progress display anyway.
"""

from __future__ import annotations

import math

from budget_edge.errors import TrainingError


def stop_if_diverged(loss: float, *, where: str, kept: str) -> None:
    """Raise TrainingError if ``loss`` is NaN or infinite.

    ``where`` says when ("in epoch 3, step 41"); ``kept`` what is still on disk.
    """
    if math.isfinite(loss):
        return
    raise TrainingError(
        f"the training loss became {loss} {where}: the run stopped without saving it "
        f"({kept}); lower the learning rate or train in fp32, then start again"
    )
