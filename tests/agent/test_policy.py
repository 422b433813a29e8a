"""The agent network: shapes, budget handling, reference key layout, FLOPs."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from budget_edge.agent import PolicyNet, build_agent
from budget_edge.errors import ConfigError, InputError

# The parameter and buffer names of the reference Policy32BudgetConstraint with
# [1, 1, 1] blocks (BlockDrop's FlatResNet32 features, fc removed).
REFERENCE_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def reference_agent_keys() -> set[str]:
    keys = {"features.conv1.weight", "logit.weight", "logit.bias", "vnet.weight", "vnet.bias"}
    keys |= {f"features.bn1.{name}" for name in REFERENCE_BN}
    for stage in range(3):
        prefix = f"features.blocks.{stage}.0"
        keys |= {f"{prefix}.conv1.weight", f"{prefix}.conv2.weight"}
        keys |= {f"{prefix}.{bn}.{name}" for bn in ("bn1", "bn2") for name in REFERENCE_BN}
    return keys


def test_resnet8_has_the_reference_key_layout() -> None:
    agent = build_agent(15)
    assert set(agent.state_dict()) == reference_agent_keys()
    assert agent.logit.weight.shape == (15, 65)
    assert agent.vnet.weight.shape == (1, 65)


@pytest.mark.parametrize("extractor", ["resnet8", "light"])
def test_forward_shapes_and_ranges(extractor: str) -> None:
    torch.manual_seed(0)
    agent = build_agent(7, extractor=extractor).eval()
    probs, value = agent(torch.randn(4, 3, 32, 32), torch.rand(4))
    assert probs.shape == (4, 7)
    assert value.shape == (4,)
    assert bool(((probs > 0) & (probs < 1)).all())


def test_budget_forms_agree_and_budget_matters() -> None:
    torch.manual_seed(0)
    agent = build_agent(5).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        as_float, v_float = agent(x, 0.4)
        as_flat, v_flat = agent(x, torch.full((3,), 0.4))
        as_column, _ = agent(x, torch.full((3, 1), 0.4, dtype=torch.float64))
        as_scalar, _ = agent(x, torch.tensor(0.4))
        other, _ = agent(x, 0.9)
    for probs in (as_flat, as_column, as_scalar):
        torch.testing.assert_close(probs, as_float)
    torch.testing.assert_close(v_flat, v_float)
    assert not torch.allclose(other, as_float)


def test_budget_is_the_last_input_of_both_heads() -> None:
    agent = build_agent(2).eval()
    with torch.no_grad():
        for head in (agent.logit, agent.vnet):
            head.weight.zero_()
            head.bias.zero_()
            head.weight[:, -1] = 1.0
        budget = torch.tensor([0.25, -3.0])
        probs, value = agent(torch.randn(2, 3, 32, 32), budget)
    torch.testing.assert_close(probs, torch.sigmoid(budget)[:, None].expand(2, 2))
    torch.testing.assert_close(value, budget)


def test_gradients_reach_features_and_heads() -> None:
    agent = build_agent(3, extractor="light").train()
    probs, value = agent(torch.randn(2, 3, 16, 16), 0.5)
    (probs.sum() + value.sum()).backward()
    assert all(p.grad is not None for p in agent.parameters())


def test_config_rebuilds_the_same_architecture() -> None:
    agent = build_agent(9, extractor="light", in_channels=1, input_size=(1, 28, 28))
    rebuilt = build_agent(**agent.config)
    assert isinstance(rebuilt, PolicyNet)
    assert rebuilt.config == agent.config
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in agent.state_dict().items()
    }


def test_default_input_size_follows_in_channels() -> None:
    assert build_agent(3, in_channels=1).input_size == (1, 32, 32)


@pytest.mark.parametrize(
    ("images", "budget", "message"),
    [
        (torch.randn(3, 32, 32), 0.5, "4-D image batch"),
        (torch.randn(2, 1, 32, 32), 0.5, "3 input channels"),
        (torch.randn(2, 3, 32, 32), torch.rand(3), "does not fit a batch of 2"),
        (torch.randn(2, 3, 32, 32), torch.rand(2, 2), "does not fit a batch of 2"),
        (torch.randn(2, 3, 32, 32), "0.5", "budget must be a float"),
    ],
)
def test_bad_inputs_raise_input_error(images: torch.Tensor, budget: object, message: str) -> None:
    agent = build_agent(4)
    with pytest.raises(InputError, match=message):
        agent(images, budget)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_components": 0}, "at least 1"),
        ({"num_components": 2.0}, "must be an integer"),
        ({"num_components": 4, "extractor": "vgg"}, "resnet8, light"),
        ({"num_components": 4, "in_channels": 0}, "positive integer"),
        ({"num_components": 4, "input_size": (3, 32)}, "three positive integers"),
        ({"num_components": 4, "in_channels": 1, "input_size": (3, 32, 32)}, "make them agree"),
    ],
)
def test_bad_build_arguments_raise_config_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_agent(**kwargs)


def counted_flops(agent: PolicyNet, input_size: tuple[int, int, int]) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        agent(torch.randn(1, *input_size), 0.5)
    return counter.get_total_flops()


@pytest.mark.parametrize("extractor", ["resnet8", "light"])
@pytest.mark.parametrize("input_size", [(3, 32, 32), (1, 28, 28), (3, 45, 37)])
def test_flops_match_flop_counter(extractor: str, input_size: tuple[int, int, int]) -> None:
    agent = build_agent(11, extractor=extractor, in_channels=input_size[0], input_size=input_size)
    assert agent.flops() == counted_flops(agent, input_size)
    assert agent.flops((input_size[0], 64, 64)) == counted_flops(agent, (input_size[0], 64, 64))


def test_light_extractor_is_much_cheaper() -> None:
    heavy = build_agent(15).flops()
    light = build_agent(15, extractor="light").flops()
    assert 5 <= heavy / light <= 10
