import pytest
import torch
from torch import nn

from budget_edge.errors import ConfigError
from budget_edge.models import build_backbone
from budget_edge.models.batchnorm import recalibrate_batchnorm
from budget_edge.train.sandwich import (
    depth_mask,
    distillation_loss,
    frozen_batchnorm_statistics,
    sandwich_masks,
    smallest_mask,
    stage_lengths,
)


def net(name: str = "resnet20"):
    torch.manual_seed(0)
    return build_backbone(name, num_classes=4, in_channels=1, input_size=(1, 8, 8))


def test_depth_masks_keep_a_prefix_of_every_stage():
    model = net()
    assert stage_lengths(model) == [3, 3, 3]
    assert smallest_mask(model).tolist() == [1, 0, 0] * 3
    assert depth_mask(model, [3, 1, 2]).tolist() == [1, 1, 1, 1, 0, 0, 1, 1, 0]
    with pytest.raises(ConfigError, match="do not fit stages of"):
        depth_mask(model, [4, 1, 1])


def test_resnext_depth_masks_keep_every_path_of_a_kept_block():
    model = build_backbone("resnext29", num_classes=4, in_channels=1, input_size=(1, 8, 8))
    mask = smallest_mask(model)
    for component, keep in zip(model.components, mask.tolist(), strict=True):
        first_of_stage = min(c.block for c in model.components if c.stage == component.stage)
        assert keep == (component.block == first_of_stage)


def test_sandwich_masks_start_with_the_smallest_and_keep_a_block():
    model = net()
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        masks = sandwich_masks(model, 3, generator)
        assert len(masks) == 4
        assert masks[0].tolist() == smallest_mask(model).tolist()
        assert all(bool(m.any()) for m in masks)


def test_distillation_pulls_the_student_to_the_teacher_only():
    teacher = torch.tensor([[2.0, 0.0, -1.0]], requires_grad=True)
    student = teacher.detach().clone().requires_grad_(True)
    loss = distillation_loss(student, teacher)
    loss.backward()
    assert teacher.grad is None  # the full network learns from the labels alone
    assert torch.allclose(student.grad, torch.zeros(1, 3), atol=1e-6)  # at its minimum


def test_frozen_statistics_leave_running_stats_and_momentum_alone():
    model = net().train()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    with frozen_batchnorm_statistics(model):
        model(torch.randn(8, 1, 8, 8))
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    model(torch.randn(8, 1, 8, 8))
    assert not torch.equal(model.state_dict()["bn1.running_mean"], before["bn1.running_mean"])


def test_recalibration_gives_the_sub_network_its_own_exact_statistics():
    model = net()
    batches = [torch.randn(8, 1, 8, 8) + 1.0 for _ in range(3)]
    mask = smallest_mask(model)
    recalibrate_batchnorm(model, mask, batches)
    assert not model.training
    # The stem's BatchNorm sees the images whatever the mask: its mean is theirs.
    stem = model.conv1(torch.cat(batches))
    torch.testing.assert_close(model.bn1.running_mean, stem.mean(dim=(0, 2, 3)))
    # A dropped block's layers keep their reset statistics.
    dropped = model.blocks[1]
    assert all(
        torch.equal(m.running_mean, torch.zeros_like(m.running_mean))
        for m in dropped.modules()
        if isinstance(m, nn.BatchNorm2d)
    )
    with pytest.raises(ConfigError, match="at least one batch"):
        recalibrate_batchnorm(model, mask, [])
