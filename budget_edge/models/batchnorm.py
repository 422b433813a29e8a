"""BatchNorm statistics that belong to the sub-network that runs.

A network trained so that its sub-networks (depth masks) work on their own
(train/sandwich.py) keeps one set of running statistics: the full network's.
A sub-network sees other activation statistics, so before it is evaluated or
exported as a whole graph it gets its own, recomputed on training images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from budget_edge.errors import ConfigError
from budget_edge.models.backbone import Backbone


@torch.no_grad()
def recalibrate_batchnorm(
    backbone: Backbone, mask: Tensor | None, batches: Sequence[Tensor]
) -> None:
    """Replace every BatchNorm's running statistics with those of `mask`'s sub-network.

    `batches` are normalised training images (no labels needed); the statistics
    are the average of the per-batch statistics (momentum None), so batches of one
    size weigh alike. The caller owns the copy:
    this changes `backbone` in place and leaves it in eval mode.
    """
    if not batches:
        raise ConfigError("recalibrating BatchNorm needs at least one batch of images")
    layers = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
    backbone.train()
    try:
        for images in batches:
            rows = None if mask is None else mask.reshape(1, -1).expand(images.shape[0], -1)
            backbone(images, rows)
    finally:
        for m, momentum in zip(layers, saved, strict=True):
            m.momentum = momentum
        backbone.eval()
