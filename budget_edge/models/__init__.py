"""Backbones whose components (blocks or ResNeXt paths) can be dropped per image.

from budget_edge.models import build_backbone
net = build_backbone("resnet110", num_classes=10)
logits = net(images, mask)   # mask (N, K) of 0/1, K = net.num_components
"""

from budget_edge.models.backbone import (
    Backbone,
    BlockFlops,
    Component,
    FlopsTable,
    ResidualBlock,
)
from budget_edge.models.checkpoint import LoadedCheckpoint, load_checkpoint, save_checkpoint
from budget_edge.models.registry import build_backbone, list_backbones, register_backbone

__all__ = [
    "Backbone",
    "BlockFlops",
    "Component",
    "FlopsTable",
    "LoadedCheckpoint",
    "ResidualBlock",
    "build_backbone",
    "list_backbones",
    "load_checkpoint",
    "register_backbone",
    "save_checkpoint",
]
