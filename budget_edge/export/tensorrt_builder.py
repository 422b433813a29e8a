"""`build-engines`: one TensorRT engine per exported graph, on the target GPU.

    manifest = build_engines("artifacts/r56", precision="fp16", max_batch=8)

Reads and checks the artifact (manifest and every file's SHA-256), builds an
engine per graph (the policy its own engine) with a batch 1..max profile
from the graph set of that precision (fp32: the exported graphs; fp16 and
int8: the sets `budget-edge quantize` adds, int8 with `--target tensorrt`),
as strongly typed networks (engine_plan.py says why), reuses and saves a
timing cache, writes each engine atomically, then records the engines, the
TensorRT version and the GPU in the manifest: engines only run where they
were built, so build on the Jetson itself. The TensorRT modules are imported
only here, so everything else in budget-edge works without TensorRT.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from budget_edge.errors import BackendError, ConfigError
from budget_edge.export.engine_plan import (
    ENGINE_DIR,
    PREPROCESS,
    BuildSettings,
    engine_file,
    make_settings,
    plan_engines,
    preprocess_shapes,
    timing_cache_file,
    with_engines,
)
from budget_edge.files import atomic_write_bytes
from budget_edge.runtime.device_graphs import PREPROCESS as PREPROCESS_GRAPH
from budget_edge.runtime.manifest import Manifest, artifact_lock, verify_files, write_manifest

# cuda-python 13 needs a CUDA 13 driver; JetPack 6 and most desktops run CUDA 12.
TENSORRT_HINT = (
    "install TensorRT 10.3 or later with its Python bindings: on a Jetson it comes with "
    "JetPack 6 (`sudo apt install python3-libnvinfer`); on a desktop GPU "
    "`pip install tensorrt 'cuda-python>=12,<13'` (or `pip install 'budget-edge[tensorrt]'`)"
)

Progress = Callable[[str], None]


def require_tensorrt() -> ModuleType:
    """The engine-building module, or a BackendError saying what to install.

    `import tensorrt` alone proves nothing: the type stubs install a `tensorrt`
    folder that imports as an empty namespace package.
    """
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendError(f"TensorRT is not installed: {TENSORRT_HINT}") from exc
    if not hasattr(tensorrt, "Builder"):
        raise BackendError(f"only type stubs of TensorRT are installed: {TENSORRT_HINT}")
    from budget_edge.runtime.backends.tensorrt_backend import check_tensorrt_version

    check_tensorrt_version(str(getattr(tensorrt, "__version__", "")))
    from budget_edge.export import trt_engine

    return trt_engine


def check_qdq_for_tensorrt(root: Path, jobs: list[Any]) -> None:
    """Refuse, before TensorRT parses anything, a graph with Q/DQ it cannot take."""
    import onnx

    from budget_edge.export.qdq_check import tensorrt_qdq_problems

    for job in jobs:
        problems = tensorrt_qdq_problems(onnx.load(str(root / job.onnx_file)))
        if problems:
            raise ConfigError(
                f"graph {job.graph!r} has Q/DQ that TensorRT's parser refuses ({problems[0]}"
                + (f", and {len(problems) - 1} more" if len(problems) > 1 else "")
                + "): quantize again with `budget-edge quantize DIR --precision int8 "
                "--target tensorrt`"
            )


def build_engines(
    artifact_dir: str | os.PathLike[str],
    precision: str = "fp16",
    max_batch: int = 8,
    workspace_mib: int = 1024,
    opt_batch: int | None = None,
    progress: Progress | None = None,
) -> Manifest:
    """Build every engine of an artifact dir; return the updated manifest."""
    settings = make_settings(precision, max_batch, workspace_mib, opt_batch)
    root = Path(artifact_dir)
    Manifest.load(root)  # a clear error for a missing or broken artifact, before the lock
    with artifact_lock(root):
        return _build(root, settings, progress)


def _build(root: Path, settings: BuildSettings, progress: Progress | None) -> Manifest:
    """Build into a fresh folder engines/<precision>-<token>/, then point the manifest at
    it and delete the engines it replaces: a failed build leaves the artifact as it was."""
    manifest = verify_files(root)  # never build from a damaged graph
    folder = f"{ENGINE_DIR}/{settings.precision}-{secrets.token_hex(4)}"
    jobs = plan_engines(manifest, settings.precision, folder)  # the set must exist
    check_qdq_for_tensorrt(root, jobs)
    trt_engine = require_tensorrt()
    from budget_edge.export.cuda_device import gpu_info

    gpu = gpu_info()
    cache_path = root / timing_cache_file(
        trt_engine.tensorrt_version(), gpu.name, gpu.compute_capability
    )
    builder = trt_engine.EngineBuilder(
        settings, cache_path.read_bytes() if cache_path.is_file() else b"", str(cache_path)
    )
    try:
        updated = _build_into(
            root,
            manifest,
            settings,
            jobs,
            folder,
            builder,
            cache_path,
            progress,
            (trt_engine.tensorrt_version(), gpu),
        )
        updated = write_manifest(root, updated)
    except BaseException:
        shutil.rmtree(root / folder, ignore_errors=True)
        raise
    old = manifest.tensorrt
    if old is not None:  # the manifest no longer names them
        for stale in {Path(f).parent for f in [*old.engines.values(), old.preprocess] if f}:
            if stale != Path(folder):
                shutil.rmtree(root / stale, ignore_errors=True)
    return updated


def _build_into(
    root: Path,
    manifest: Manifest,
    settings: BuildSettings,
    jobs: list[Any],
    folder: str,
    builder: Any,
    cache_path: Path,
    progress: Progress | None,
    made_by: tuple[str, Any],
) -> Manifest:
    """Every engine, then the preprocess engine, into `folder`; the manifest to write."""
    engines: dict[str, str] = {}
    for job in jobs:
        engine = builder.build(root / job.onnx_file)
        write_file(root / job.engine_file, engine)
        # Save the cache as we go: an interrupted build still speeds up the next.
        write_file(cache_path, builder.timing_cache())
        engines[job.graph] = job.engine_file
        if progress is not None:
            progress(job.graph)
    # uint8 pixels are normalised on the GPU by one more engine (runtime/device_graphs.py).
    graph_path = root / folder / f"{PREPROCESS}.onnx"
    write_file(graph_path, PREPROCESS_GRAPH)
    preprocess = engine_file(PREPROCESS, settings.precision, folder)
    write_file(root / preprocess, builder.build(graph_path, preprocess_shapes(manifest)))
    write_file(cache_path, builder.timing_cache())
    graph_path.unlink()
    if progress is not None:
        progress(PREPROCESS)
    version, gpu = made_by
    return with_engines(
        manifest, engines, settings, version, gpu.name, gpu.compute_capability, preprocess
    )


def write_file(path: Path, data: bytes) -> None:
    """Write atomically, creating the folder (engines/ of a fresh artifact)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
