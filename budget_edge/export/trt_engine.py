"""Build one serialized TensorRT engine from one ONNX graph (TensorRT 10.3 to 11).

Imports tensorrt at the top so mypy checks every call against the stubs;
`tensorrt_builder` imports this module lazily and turns a missing TensorRT
into a BackendError. Only calls that exist from TensorRT 10.3 (JetPack 6)
through 11.x, checked against NVIDIA's binding wheels of both: strongly typed
networks (the precision is the graph's: fp32, fp16, or int8 Q/DQ), memory
limits via set_memory_pool_limit, build_serialized_network. Nothing of the
weakly typed API that TensorRT 11 removed (BuilderFlag.FP16/INT8, INT8
calibrators, set_calibration_profile, platform_has_fast_fp16/int8 are read
only where they still exist).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import tensorrt as trt

from budget_edge.errors import BackendError, ConfigError
from budget_edge.export.engine_plan import (
    BuildSettings,
    ProfileShapes,
    builder_flags,
    profile_shapes,
)

_LOGGER = trt.Logger(trt.Logger.WARNING)


def tensorrt_version() -> str:
    return str(trt.__version__)


def _parse(builder: trt.Builder, onnx_path: Path) -> tuple[trt.INetworkDefinition, trt.OnnxParser]:
    """The network and its parser: the parser owns the weights, so keep both alive."""
    network = builder.create_network(strongly_typed_flags())
    parser = trt.OnnxParser(network, _LOGGER)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    return network, parser


def strongly_typed_flags() -> int:
    """create_network's flags: strongly typed (TensorRT 10 and 11; explicit batch is the
    only mode in both)."""
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def _dims(dims: trt.Dims) -> list[int]:
    return [dims[i] for i in range(len(dims))]


def _add_profiles(
    builder: trt.Builder,
    config: trt.IBuilderConfig,
    network: trt.INetworkDefinition,
    settings: BuildSettings,
    shapes_of: Mapping[str, tuple[int, ...]] | None = None,
) -> None:
    """Batch 1..max for every input; `shapes_of` gives the full shape (-1: batch) of
    inputs whose graph leaves other axes symbolic (the preprocess graph)."""
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list((shapes_of or {}).get(tensor.name, _dims(tensor.shape)))
        shapes = (
            profile_shapes(tensor.name, shape, settings)
            if shape[0] == -1
            else ProfileShapes(tuple(shape), tuple(shape), tuple(shape))
        )
        profile.set_shape(
            tensor.name,
            trt.Dims(list(shapes.min)),
            trt.Dims(list(shapes.opt)),
            trt.Dims(list(shapes.max)),
        )
    if config.add_optimization_profile(profile) < 0:
        raise BackendError("TensorRT rejected the optimisation profile (batch 1..max)")


class EngineBuilder:
    """One TensorRT builder and one timing cache shared by every graph of a build.

    Blocks of a stage have identical layers, so the cache filled by the first
    block's tactic timing makes the others fast; saved, it makes rebuilds fast.
    """

    def __init__(
        self, settings: BuildSettings, timing_cache: bytes = b"", cache_name: str = "the cache"
    ) -> None:
        self.settings = settings
        self.cache_name = cache_name  # the file to name when TensorRT rejects the cache
        self._builder = trt.Builder(_LOGGER)
        self._check_platform()
        self._cache = self._builder.create_builder_config().create_timing_cache(timing_cache)

    def _check_platform(self) -> None:
        """A clear error on a GPU without fast fp16/int8, where TensorRT can still say
        (the queries are gone in TensorRT 11, which builds what the graph asks)."""
        precision = self.settings.precision
        query = {"fp16": "platform_has_fast_fp16", "int8": "platform_has_fast_int8"}.get(precision)
        if query is not None and getattr(self._builder, query, True) is False:
            other = "fp32" if precision == "fp16" else "fp16 or fp32"
            raise ConfigError(f"this GPU has no fast {precision}: build with --precision {other}")

    def _config(
        self,
        network: trt.INetworkDefinition,
        shapes_of: Mapping[str, tuple[int, ...]] | None = None,
    ) -> trt.IBuilderConfig:
        config = self._builder.create_builder_config()
        config.set_memory_pool_limit(
            trt.MemoryPoolType.WORKSPACE, self.settings.workspace_mib << 20
        )
        plan = builder_flags(self.settings.precision)
        for name in plan.set:
            config.set_flag(getattr(trt.BuilderFlag, name))
        for name in plan.clear:
            flag = getattr(trt.BuilderFlag, name, None)
            if flag is not None:  # a flag a later TensorRT dropped is already off
                config.clear_flag(flag)
        _add_profiles(self._builder, config, network, self.settings, shapes_of)
        if not config.set_timing_cache(self._cache, False):
            raise BackendError(
                "TensorRT rejected the timing cache (built on another GPU or TensorRT?): "
                f"delete {self.cache_name} and build again"
            )
        return config

    def build(
        self, onnx_path: Path, shapes_of: Mapping[str, tuple[int, ...]] | None = None
    ) -> bytes:
        """The serialized engine of one graph (`shapes_of`: see _add_profiles)."""
        network, _parser = _parse(self._builder, onnx_path)
        config = self._config(network, shapes_of)
        serialized = self._builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendError(
                f"TensorRT failed to build {onnx_path.name}: see the TensorRT log above "
                "(a larger --workspace often helps)"
            )
        return bytes(memoryview(serialized))

    def timing_cache(self) -> bytes:
        """The cache with every timing measured so far, to save next to the engines."""
        return bytes(memoryview(self._cache.serialize()))
