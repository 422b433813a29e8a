"""Every TensorRT name budget-edge uses exists in each TensorRT it claims to support.

The name lists come from NVIDIA's binding wheels (tensorrt_names/extract.py).
The TensorRT code is read with `ast`: attributes of the `trt` module, and of
the TensorRT objects it creates (builder, config, network, engine, context...).
A name reached through getattr with a default is optional (it sits behind a
version check) and must exist in at least one version.
"""

from __future__ import annotations

import ast
import gzip
from pathlib import Path

import pytest

import budget_edge

NAMES = Path(__file__).parent / "tensorrt_names"
VERSIONS = ("10.3.0", "11.4.0.106")
PACKAGE = Path(budget_edge.__file__).parent
TENSORRT_MODULES = [
    PACKAGE / "export" / "trt_engine.py",
    PACKAGE / "runtime" / "backends" / "tensorrt_backend.py",
]
# Variables and attributes that hold TensorRT objects in those modules.
TRT_OBJECTS = {
    "trt",
    "builder",
    "_builder",
    "config",
    "network",
    "parser",
    "profile",
    "engine",
    "context",
    "_runtime",
    "tensor",
    "_cache",
    "_logger",
    "Logger",
}


def _load(version: str) -> list[str]:
    return gzip.decompress((NAMES / f"{version}.txt.gz").read_bytes()).decode().split()


@pytest.fixture(scope="module")
def names() -> dict[str, list[str]]:
    return {v: _load(v) for v in VERSIONS}


def present(name: str, listed: list[str]) -> bool:
    """Tail merging: the string of `name` may end a longer one."""
    return any(entry.endswith(name) for entry in listed)


def _receiver(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _rooted_in_tensorrt(node: ast.expr) -> bool:
    """Whether an expression is a TensorRT object: `trt`, `self._builder`,
    `trt.NetworkDefinitionCreationFlag`, `e.context`..."""
    while True:
        if _receiver(node) in TRT_OBJECTS:
            return True
        if not isinstance(node, ast.Attribute):
            return False
        node = node.value


def used_names(path: Path) -> tuple[set[str], set[str]]:
    """(required, optional) TensorRT names in one module."""
    tree = ast.parse(path.read_text())
    required, optional = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _rooted_in_tensorrt(node.value):
            required.add(node.attr)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _rooted_in_tensorrt(node.args[0])
        ):
            (optional if len(node.args) == 3 else required).add(node.args[1].value)
    # Names that are ours, not TensorRT's (attributes of our own objects named alike).
    return required - {"__version__"}, optional


def test_the_lists_tell_the_versions_apart(names: dict[str, list[str]]) -> None:
    """The check can fail: what TensorRT 11 removed is in 10.3's list only."""
    for removed in (
        "IInt8EntropyCalibrator2",
        "platform_has_fast_fp16",
        "set_calibration_profile",
        "int8_calibrator",
    ):
        assert present(removed, names["10.3.0"]), removed
        assert not present(removed, names["11.4.0.106"]), removed
    for kept in (
        "build_serialized_network",
        "execute_async_v3",
        "set_tensor_address",
        "STRONGLY_TYPED",
    ):
        assert all(present(kept, listed) for listed in names.values()), kept


def test_the_scanner_finds_the_calls() -> None:
    required, optional = used_names(TENSORRT_MODULES[0])
    assert {
        "create_network",
        "NetworkDefinitionCreationFlag",
        "STRONGLY_TYPED",
        "build_serialized_network",
        "set_memory_pool_limit",
    } <= required
    required, _ = used_names(TENSORRT_MODULES[1])
    assert {
        "execute_async_v3",
        "set_tensor_address",
        "set_input_shape",
        "deserialize_cuda_engine",
        "get_tensor_profile_shape",
    } <= required


@pytest.mark.parametrize("module", TENSORRT_MODULES, ids=lambda p: p.name)
def test_every_name_exists_in_every_supported_tensorrt(
    module: Path, names: dict[str, list[str]]
) -> None:
    required, optional = used_names(module)
    for version, listed in names.items():
        missing = sorted(n for n in required if not present(n, listed))
        assert not missing, f"{module.name} uses {missing}, missing from TensorRT {version}"
    for name in optional:
        assert any(present(name, listed) for listed in names.values()), name


def test_builder_flags_exist_where_they_are_set(names: dict[str, list[str]]) -> None:
    """Flags come from engine_plan by name: set ones must exist everywhere; cleared ones
    are skipped where a version lacks them (trt_engine uses getattr with a default)."""
    from budget_edge.export.engine_plan import PRECISIONS, builder_flags

    for precision in PRECISIONS:
        plan = builder_flags(precision)
        for flag in plan.set:
            assert all(present(flag, listed) for listed in names.values()), flag
        for flag in plan.clear:
            assert any(present(flag, listed) for listed in names.values()), flag


def test_the_builder_stand_in_has_each_versions_flags(names: dict[str, list[str]]) -> None:
    """The test stand-in for the builder carries only flags its version has."""
    from export.fake_trt_builder import make_fake_trt_builder

    for version, listed in names.items():
        trt = make_fake_trt_builder(version)
        for flag in trt.BuilderFlag.__members__:
            assert present(flag, listed), (version, flag)
        assert hasattr(trt.Builder, "platform_has_fast_fp16") == present(
            "platform_has_fast_fp16", listed
        )
