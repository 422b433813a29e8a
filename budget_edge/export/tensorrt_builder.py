"""`build-engines`: one TensorRT engine per exported graph, on the target GPU.

    manifest = build_engines("artifacts/r56", precision="fp16", max_batch=8)

Reads and checks the artifact (manifest and every file's SHA-256), builds an
engine per graph (the policy its own engine) with a batch 1..max profile,
reuses and saves a timing cache, calibrates INT8 from a dataset, writes each
engine atomically, then records the engines, the TensorRT version and the GPU
in the manifest: engines only run where they were built, so build on the
Jetson itself. The TensorRT modules are imported only here, so everything
else in budget-edge works without TensorRT.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np

from budget_edge.errors import BackendError, ConfigError
from budget_edge.export.calibration import DEFAULT_COUNT, calibration_images
from budget_edge.export.calibration_feed import CalibrationInputs, batches
from budget_edge.export.engine_plan import (
    BuildSettings,
    EngineJob,
    calibration_cache_file,
    make_settings,
    plan_engines,
    timing_cache_file,
    with_engines,
)
from budget_edge.runtime.manifest import Manifest, verify_files, write_manifest

TENSORRT_HINT = (
    "install TensorRT 10 with its Python bindings: on a Jetson it comes with JetPack 6 "
    "(`sudo apt install python3-libnvinfer`); on a desktop GPU `pip install tensorrt cuda-python` "
    "(or `pip install 'budget-edge[tensorrt]'`)"
)

Progress = Callable[[str], None]


def require_tensorrt() -> tuple[ModuleType, ModuleType]:
    """The engine and calibrator modules, or a BackendError saying what to install.

    `import tensorrt` alone proves nothing: the type stubs install a `tensorrt`
    folder that imports as an empty namespace package.
    """
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendError(f"TensorRT is not installed: {TENSORRT_HINT}") from exc
    if not hasattr(tensorrt, "Builder"):
        raise BackendError(f"only type stubs of TensorRT are installed: {TENSORRT_HINT}")
    from budget_edge.export import trt_calibrator, trt_engine

    return trt_engine, trt_calibrator


def build_engines(
    artifact_dir: str | os.PathLike[str],
    precision: str = "fp16",
    max_batch: int = 8,
    workspace_mib: int = 1024,
    calib_data: str | np.ndarray | None = None,
    calib_count: int = DEFAULT_COUNT,
    progress: Progress | None = None,
) -> Manifest:
    """Build every engine of an artifact dir; return the updated manifest."""
    settings = make_settings(precision, max_batch, workspace_mib)
    root = Path(artifact_dir)
    manifest = verify_files(root)  # never build from a damaged graph
    jobs = plan_engines(manifest, settings.precision)
    calib = _calibration(root, manifest, jobs, settings, calib_data, calib_count)
    trt_engine, trt_calibrator = require_tensorrt()
    from budget_edge.export.cuda_device import gpu_info

    gpu = gpu_info()
    cache_path = root / timing_cache_file()
    builder = trt_engine.EngineBuilder(
        settings, cache_path.read_bytes() if cache_path.is_file() else b""
    )
    engines: dict[str, str] = {}
    for job in jobs:
        calibrator = None
        if settings.precision == "int8":
            feeds = [] if calib is None else batches(calib.for_job(job), settings.calib_batch)
            calibrator = trt_calibrator.ArrayCalibrator(
                feeds, settings.calib_batch, root / calibration_cache_file(job.graph)
            )
        try:
            engine = builder.build(root / job.onnx_file, calibrator)
        finally:
            if calibrator is not None:
                calibrator.free()
        atomic_write_bytes(root / job.engine_file, engine)
        # Save the cache as we go: an interrupted build still speeds up the next.
        atomic_write_bytes(cache_path, builder.timing_cache())
        engines[job.graph] = job.engine_file
        if progress is not None:
            progress(job.graph)
    updated = with_engines(manifest, engines, settings, trt_engine.tensorrt_version(),
                           gpu.name, gpu.compute_capability)
    return write_manifest(root, updated)


def _calibration(
    root: Path,
    manifest: Manifest,
    jobs: list[EngineJob],
    settings: BuildSettings,
    calib_data: str | np.ndarray | None,
    calib_count: int,
) -> CalibrationInputs | None:
    """Calibration inputs for int8; None when every graph has a calibration cache."""
    if settings.precision != "int8":
        if calib_data is not None:
            raise ConfigError(f"--calib-data is only used with --precision int8, not "
                              f"{settings.precision}")
        return None
    if calib_data is None:
        if all((root / calibration_cache_file(j.graph)).is_file() for j in jobs):
            return None
        raise ConfigError("--precision int8 needs --calib-data (a dataset such as "
                          "fashion-mnist or cifar10:PATH) to calibrate the engines")
    if isinstance(calib_data, str):
        pre = manifest.preprocessing
        images = calibration_images(calib_data, pre.mean, pre.std, pre.input_size, calib_count)
    else:
        images = np.asarray(calib_data, dtype=np.float32)
    if len(images) < settings.calib_batch:
        raise ConfigError(f"{len(images)} calibration images are fewer than one calibration "
                          f"batch ({settings.calib_batch}): give more data")
    return CalibrationInputs(root, manifest, images)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary name beside `path`, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
