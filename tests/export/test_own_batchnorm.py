"""Whole-mask graphs of a sandwich-trained backbone carry BatchNorm statistics of their own."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from budget_edge.agent.allocator import build_allocator
from budget_edge.agent.policy import build_agent
from budget_edge.errors import ConfigError
from budget_edge.export.exporter import export_checkpoint
from budget_edge.models import build_backbone
from budget_edge.models.batchnorm import recalibrate_batchnorm
from budget_edge.models.checkpoint import LoadedCheckpoint
from budget_edge.runtime.runtime import BudgetRuntime
from budget_edge.train.allocator import count_masks_of

from .conftest import META, realistic

SANDWICH_META = {**META, "pretrain": {"sandwich": True}}
CALIBRATION = {"budgets": [0.0, 0.5, 1.0], "prices": [9.0, 0.3, 0.0], "source": "test"}


@pytest.fixture(scope="module")
def checkpoint() -> LoadedCheckpoint:
    torch.manual_seed(0)
    net = realistic(build_backbone("resnet20", shortcut="A"), seed=7)
    agent = realistic(build_agent(net.num_components, "light"), seed=8, agent=True)
    table = count_masks_of(agent, torch.randn(32, 3, 32, 32)).tolist()
    allocator = realistic(
        build_allocator(net.num_components, calibration=CALIBRATION, count_masks=table), seed=9
    )
    return LoadedCheckpoint(net, agent, SANDWICH_META, "budget-edge", allocator=allocator)


def test_each_fused_mask_runs_with_statistics_recomputed_for_it(
    checkpoint, tmp_path, exporter
) -> None:
    calib = np.random.default_rng(1).normal(size=(64, 3, 32, 32)).astype(np.float32)
    manifest = export_checkpoint(checkpoint, tmp_path / "own", exporter=exporter, calib_data=calib)
    shared = export_checkpoint(
        checkpoint, tmp_path / "shared", exporter=exporter, own_batchnorm=False
    )
    assert len(manifest.hot_policies) == checkpoint.backbone.num_components  # K rows fused
    mask = next(h.mask for h in manifest.hot_policies if 0 < sum(h.mask) < 5)
    x = np.random.default_rng(2).normal(size=(4, 3, 32, 32)).astype(np.float32)
    own = copy.deepcopy(checkpoint.backbone)
    recalibrate_batchnorm(own, torch.tensor(mask, dtype=torch.bool), [torch.from_numpy(calib)])
    with torch.no_grad():
        want = own(torch.from_numpy(x), torch.tensor([mask] * 4)).numpy()
    with BudgetRuntime.load(tmp_path / "own", backend="onnxruntime", threads=1) as rt:
        got = rt.infer(x, mask=np.array(mask, np.uint8)).logits
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
    with BudgetRuntime.load(tmp_path / "shared", backend="onnxruntime", threads=1) as rt:
        before = rt.infer(x, mask=np.array(mask, np.uint8)).logits
    assert shared.hot_policies == manifest.hot_policies
    assert np.abs(before - want).max() > 1e-2  # the statistics matter


def test_a_sandwich_backbone_without_images_to_recompute_on_is_refused(
    checkpoint, tmp_path, exporter
) -> None:
    # The meta names no dataset to draw from, and none is given.
    with pytest.raises(ConfigError, match="pass --calib-data .* or --shared-batchnorm"):
        export_checkpoint(checkpoint, tmp_path / "a", exporter=exporter)


def test_a_sandwich_checkpoint_that_fuses_nothing_exports_with_no_flags(
    checkpoint, tmp_path, exporter
) -> None:
    """Greedy mode, or a backbone alone: no whole-mask graph, no statistics needed."""
    greedy = export_checkpoint(checkpoint, tmp_path / "greedy", exporter=exporter, mode="greedy")
    assert greedy.hot_policies == []
    backbone = LoadedCheckpoint(checkpoint.backbone, None, SANDWICH_META, "budget-edge")
    assert export_checkpoint(backbone, tmp_path / "backbone", exporter=exporter).hot_policies == []


def test_statistics_images_never_come_from_the_validation_split(tmp_path) -> None:
    from budgetnet_helpers import write_tiny_fashion_mnist

    from budget_edge.data.registry import load_arrays
    from budget_edge.data.split import split_validation
    from budget_edge.export.calibration import calibration_images, normalise

    data = write_tiny_fashion_mnist(tmp_path, n_train=40, n_test=4)
    rest, val, split = split_validation(load_arrays("fashion-mnist", data, "train"), 10)
    mean, std, size = [0.3], [0.3], [1, 28, 28]
    drawn = calibration_images(
        f"fashion-mnist:{data}", mean, std, size, count=40, validation_split=split.as_meta()
    )
    assert len(drawn) == 30  # all of the rest, none of the 10 held out
    held = {row.tobytes() for row in normalise(val.images, mean, std, size)}
    assert not held & {row.tobytes() for row in drawn}
