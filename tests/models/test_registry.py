"""build_backbone / list_backbones: names, options, config round trip."""

import pytest

from budget_edge.errors import ConfigError
from budget_edge.models import build_backbone, list_backbones

CIFAR_RESNETS = ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]


def test_cifar_resnets_are_registered():
    assert set(CIFAR_RESNETS) <= set(list_backbones())


def test_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError, match="resnet20") as info:
        build_backbone("resnet21")
    assert "unknown backbone 'resnet21'" in str(info.value)


def test_unknown_option_lists_valid_options():
    with pytest.raises(ConfigError, match="shortcut") as info:
        build_backbone("resnet20", widht=3)
    assert "widht" in str(info.value)


def test_config_round_trip():
    net = build_backbone(
        "resnet32", num_classes=7, in_channels=1, input_size=(1, 28, 28), shortcut="B"
    )
    assert net.config == {
        "name": "resnet32",
        "num_classes": 7,
        "in_channels": 1,
        "input_size": [1, 28, 28],
        "shortcut": "B",
    }
    again = build_backbone(**net.config)
    assert again.config == net.config
    again.load_state_dict(net.state_dict(), strict=True)


def test_defaults_fill_the_config():
    net = build_backbone("resnet20")
    assert net.config["input_size"] == [3, 32, 32]
    assert net.config["shortcut"] == "A"
    assert net.input_size == (3, 32, 32)
