"""Names to backbone builders, timm style: `build_backbone("resnet110")`.

Each family module decorates its builder functions with `@register_backbone`;
the function name is the registry name. Builders take keyword options only,
with `num_classes` and `in_channels` first, so every model speaks the same
keywords.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from budget_edge.errors import ConfigError
from budget_edge.models.backbone import Backbone

Builder = TypeVar("Builder", bound=Callable[..., Backbone])

_BUILDERS: dict[str, Callable[..., Backbone]] = {}

# Imported on first use so that registering is a side effect of the family
# modules, and the family modules can import this one without a cycle.
_FAMILY_MODULES = (
    "budget_edge.models.cifar_resnet",
    "budget_edge.models.resnext",
    "budget_edge.models.torchvision_resnet",
)


def register_backbone(fn: Builder) -> Builder:
    """Decorator: make `fn` buildable as `build_backbone(fn.__name__, ...)`."""
    if fn.__name__ in _BUILDERS:
        raise ValueError(f"backbone {fn.__name__!r} is registered twice")
    _BUILDERS[fn.__name__] = fn
    return fn


def _load_families() -> None:
    for module in _FAMILY_MODULES:
        importlib.import_module(module)


def list_backbones() -> list[str]:
    """Every registered backbone name, sorted."""
    _load_families()
    return sorted(_BUILDERS)


def backbone_options(name: str) -> list[str]:
    """The keyword options backbone `name` accepts."""
    return list(inspect.signature(_builder(name)).parameters)


def _builder(name: str) -> Callable[..., Backbone]:
    _load_families()
    if name not in _BUILDERS:
        raise ConfigError(
            f"unknown backbone {name!r}; choose one of: {', '.join(sorted(_BUILDERS))}"
        )
    return _BUILDERS[name]


def build_backbone(
    name: str, num_classes: int = 10, in_channels: int = 3, **options: Any
) -> Backbone:
    """Build backbone `name`; `net.config` holds every argument, so
    `build_backbone(**net.config)` rebuilds the same architecture."""
    builder = _builder(name)
    valid = backbone_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(
            f"backbone {name!r} has no option(s) {', '.join(unknown)}; "
            f"valid options: {', '.join(valid)}"
        )
    return builder(num_classes=num_classes, in_channels=in_channels, **options)
