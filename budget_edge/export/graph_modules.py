"""The torch modules that become ONNX graphs: one per stem, block variant, head.

Every module here is built from an eval-mode copy of the backbone and has its
BatchNorms folded into the preceding convolutions, so an exported graph is
only Conv / Relu / Add / Pad / pooling / Gemm, and its weights are plain
parameters named like the module's state dict (which lets `onnx_export` reuse
one traced graph for every block of the same shape).

ResNeXt blocks: a variant that keeps paths P is built by slicing the paths'
weights into three convolutions, as in the grouped-convolution form of
ResNeXt (Xie et al., Fig. 3c): a 1x1 reduce with |P| x d outputs, a 3x3 with
|P| groups, and a 1x1 expand whose input channels are the kept paths'
(summing the paths' expands is one convolution over their concatenation).
The block BatchNorm on the sum folds into the expand. Dropped paths are simply
not in the weights, so they cost nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.fx.experimental.optimization import fuse as fx_fuse
from torch.nn.utils.fusion import fuse_conv_bn_eval

from budget_edge.errors import ConfigError
from budget_edge.models.backbone import Backbone, ResidualBlock
from budget_edge.models.resnext import ResNeXtBlock, ResNeXtPath


def fold_batchnorms(module: nn.Module) -> nn.Module:
    """Trace `module` and fold every Conv -> BatchNorm pair into one Conv.

    The original convolutions are left untouched (fusing copies them).
    """
    traced = fx.symbolic_trace(module.eval())
    return fx_fuse(traced, inplace=True)


class StemGraph(nn.Module):
    """image -> features."""

    def __init__(self, net: Backbone) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: Tensor) -> Tensor:
        return self.net.stem(image)


class HeadGraph(nn.Module):
    """features -> logits (global pool and classifier)."""

    def __init__(self, net: Backbone) -> None:
        super().__init__()
        self.net = net

    def forward(self, features: Tensor) -> Tensor:
        return self.net.head(features)


class BlockGraph(nn.Module):
    """One ResNet block run with fixed `paths` ([0]: the block, []: its skip)."""

    def __init__(self, block: ResidualBlock, paths: Sequence[int]) -> None:
        super().__init__()
        self.block = block
        self.paths = list(paths)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x, self.paths)


def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """BN(x) = scale * x + shift in eval mode."""
    assert bn.running_mean is not None
    assert bn.running_var is not None
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    fused = fuse_conv_bn_eval(conv, bn)
    assert fused.bias is not None
    return fused.weight.detach(), fused.bias.detach()


def _conv(
    weight: Tensor, bias: Tensor, stride: int = 1, padding: int = 0, groups: int = 1
) -> nn.Conv2d:
    out_channels, in_per_group, k, _ = weight.shape
    conv = nn.Conv2d(
        in_per_group * groups,
        out_channels,
        k,
        stride=stride,
        padding=padding,
        groups=groups,
        bias=True,
    )
    conv.weight = nn.Parameter(weight.clone(), requires_grad=False)
    conv.bias = nn.Parameter(bias.clone(), requires_grad=False)
    return conv.eval()


def _folded_shortcut(block: ResNeXtBlock) -> nn.Module:
    if not hasattr(block.shortcut, "shortcut_conv"):
        return nn.Identity()
    conv = cast(nn.Conv2d, block.shortcut.shortcut_conv)
    weight, bias = _folded(conv, cast(nn.BatchNorm2d, block.shortcut.shortcut_bn))
    return _conv(weight, bias, stride=int(conv.stride[0]))


class ResNeXtVariant(nn.Module):
    """ReLU(shortcut(x) + BN(sum of paths P)) with P's weights sliced into three convs."""

    def __init__(self, block: ResNeXtBlock, paths: Sequence[int]) -> None:
        super().__init__()
        kept = [cast(ResNeXtPath, block.path[p]) for p in block.check_paths(paths)]
        if not kept:
            raise ConfigError("a ResNeXt variant needs at least one path; use ResNeXtSkip")
        reduce = [_folded(p.conv_reduce, p.bn_reduce) for p in kept]
        middle = [_folded(p.conv_conv, p.bn) for p in kept]
        scale, shift = _bn_scale_shift(block.bn)
        expand = torch.cat([p.conv_expand.weight.detach() for p in kept], dim=1)
        stride = int(kept[0].conv_conv.stride[0])
        self.reduce = _conv(torch.cat([w for w, _ in reduce]), torch.cat([b for _, b in reduce]))
        self.grouped = _conv(
            torch.cat([w for w, _ in middle]),
            torch.cat([b for _, b in middle]),
            stride=stride,
            padding=1,
            groups=len(kept),
        )
        self.expand = _conv(expand * scale.detach()[:, None, None, None], shift.detach())
        self.shortcut = _folded_shortcut(block)

    def forward(self, x: Tensor) -> Tensor:
        paths = self.expand(F.relu(self.grouped(F.relu(self.reduce(x)))))
        return F.relu(self.shortcut(x) + paths)


class ResNeXtSkip(nn.Module):
    """Every path dropped: ReLU(shortcut(x) + BN(0)), BN(0) being the BN's shift."""

    def __init__(self, block: ResNeXtBlock) -> None:
        super().__init__()
        _, shift = _bn_scale_shift(block.bn)
        self.shortcut = _folded_shortcut(block)
        self.shift = nn.Parameter(shift.detach().reshape(1, -1, 1, 1), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.shortcut(x) + self.shift)


def block_module(block: ResidualBlock, paths: Sequence[int]) -> nn.Module:
    """The folded module for `block` with `paths` kept ([] gives its skip)."""
    if isinstance(block, ResNeXtBlock):
        chosen = block.check_paths(paths)
        return ResNeXtVariant(block, chosen) if chosen else ResNeXtSkip(block)
    if block.num_paths != 1:
        raise ConfigError(
            f"cannot export a {type(block).__name__} with {block.num_paths} paths: "
            "only ResNeXt blocks have several paths"
        )
    return fold_batchnorms(BlockGraph(block, paths))


def stem_module(net: Backbone) -> nn.Module:
    return fold_batchnorms(StemGraph(net))


def head_module(net: Backbone) -> nn.Module:
    return fold_batchnorms(HeadGraph(net))


def is_identity_skip(block: ResidualBlock, example: Tensor) -> bool:
    """A one-path block whose dropped output is its input (no graph needed)."""
    if block.num_paths != 1:
        return False
    with torch.no_grad():
        out = block.skip(example)
    return out.shape == example.shape and bool(torch.equal(out, example))
