"""Build one serialized TensorRT engine from one ONNX graph (TensorRT 10 API).

Imports tensorrt at the top so mypy checks every call against the stubs;
`tensorrt_builder` imports this module lazily and turns a missing TensorRT
into a BackendError. Only TensorRT 10 calls: networks are always explicit
batch (create_network(0)), memory limits via set_memory_pool_limit, and
build_serialized_network instead of the removed build_engine.
"""

from __future__ import annotations

from pathlib import Path

import tensorrt as trt

from budget_edge.errors import BackendError, ConfigError
from budget_edge.export.engine_plan import (
    BuildSettings,
    builder_flags,
    calibration_shape,
    profile_shapes,
)
from budget_edge.export.trt_calibrator import ArrayCalibrator

_LOGGER = trt.Logger(trt.Logger.WARNING)


def tensorrt_version() -> str:
    return str(trt.__version__)


def _parse(
    builder: trt.Builder, onnx_path: Path
) -> tuple[trt.INetworkDefinition, trt.OnnxParser]:
    """The network and its parser: the parser owns the weights, so keep both alive."""
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, _LOGGER)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    return network, parser


def _dims(dims: trt.Dims) -> list[int]:
    return [dims[i] for i in range(len(dims))]


def _add_profiles(
    builder: trt.Builder,
    config: trt.IBuilderConfig,
    network: trt.INetworkDefinition,
    settings: BuildSettings,
) -> None:
    profile = builder.create_optimization_profile()
    calib_profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = _dims(tensor.shape)
        shapes = profile_shapes(tensor.name, shape, settings)
        profile.set_shape(
            tensor.name, trt.Dims(list(shapes.min)), trt.Dims(list(shapes.opt)),
            trt.Dims(list(shapes.max)),
        )
        fixed = trt.Dims(list(calibration_shape(shape, settings)))
        calib_profile.set_shape(tensor.name, fixed, fixed, fixed)
    if config.add_optimization_profile(profile) < 0:
        raise BackendError("TensorRT rejected the optimisation profile (batch 1..max)")
    if settings.precision == "int8":
        # A network with a dynamic batch needs its own fixed-shape profile to calibrate.
        config.set_calibration_profile(calib_profile)


class EngineBuilder:
    """One TensorRT builder and one timing cache shared by every graph of a build.

    Blocks of a stage have identical layers, so the cache filled by the first
    block's tactic timing makes the others fast; saved, it makes rebuilds fast.
    """

    def __init__(self, settings: BuildSettings, timing_cache: bytes = b"") -> None:
        self.settings = settings
        self._builder = trt.Builder(_LOGGER)
        self._check_platform()
        self._cache = self._builder.create_builder_config().create_timing_cache(timing_cache)

    def _check_platform(self) -> None:
        plan = builder_flags(self.settings.precision)
        if "FP16" in plan.set and not self._builder.platform_has_fast_fp16:
            precision = self.settings.precision
            raise ConfigError(f"this GPU has no fast fp16: use --precision fp32, not {precision}")
        if "INT8" in plan.set and not self._builder.platform_has_fast_int8:
            raise ConfigError("this GPU has no fast int8: build with --precision fp16 or fp32")

    def _config(self, network: trt.INetworkDefinition) -> trt.IBuilderConfig:
        config = self._builder.create_builder_config()
        config.set_memory_pool_limit(
            trt.MemoryPoolType.WORKSPACE, self.settings.workspace_mib << 20
        )
        plan = builder_flags(self.settings.precision)
        for name in plan.set:
            config.set_flag(getattr(trt.BuilderFlag, name))
        for name in plan.clear:
            config.clear_flag(getattr(trt.BuilderFlag, name))
        _add_profiles(self._builder, config, network, self.settings)
        if not config.set_timing_cache(self._cache, False):
            raise BackendError(
                "TensorRT rejected the timing cache (built on another GPU or TensorRT?): "
                "delete engines/timing.cache and build again"
            )
        return config

    def build(self, onnx_path: Path, calibrator: ArrayCalibrator | None = None) -> bytes:
        """The serialized engine of one graph."""
        network, _parser = _parse(self._builder, onnx_path)
        config = self._config(network)
        if self.settings.precision == "int8":
            if calibrator is None:
                raise ConfigError("int8 needs calibration data: pass --calib-data")
            config.int8_calibrator = calibrator
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
