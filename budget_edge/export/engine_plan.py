"""What `build-engines` builds, decided without TensorRT or a GPU.

Everything here is plain Python so it is tested on any machine: the settings
a user may pass, which graph set each precision builds from, the builder
flags, the optimisation-profile shapes per input, and where each engine and
cache file goes. The TensorRT calls that act on these decisions live in
`trt_engine.py`.

One path for TensorRT 10.3 (JetPack 6) through 11: every network is strongly
typed, so the precision comes from the graphs, never from builder flags.
fp32 engines build from the exported graphs, fp16 and int8 engines from the
artifact's fp16 and int8 sets (`budget-edge quantize`; int8 with `--target
tensorrt`, whose Q/DQ pairs are symmetric int8). TensorRT 11 removed the
weakly typed precision flags (BuilderFlag.FP16, INT8) and implicit INT8
calibration that an older design relied on.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from budget_edge.errors import ConfigError
from budget_edge.runtime.manifest import Manifest, TensorRTSpec

PRECISIONS = ("fp32", "fp16", "int8")
ENGINE_DIR = "engines"
# Tuned for batch 1: a device classifies camera frames one by one, and the runtime's
# gathered sub-batches (the images of a batch that keep a block) are small too.
DEFAULT_OPT_BATCH = 1


@dataclass(frozen=True)
class BuildSettings:
    """The user's choices for one `build-engines` run."""

    precision: str
    max_batch: int
    opt_batch: int
    workspace_mib: int


def make_settings(
    precision: str,
    max_batch: int = 8,
    workspace_mib: int = 1024,
    opt_batch: int | None = None,
) -> BuildSettings:
    """Validate the options; the optimum batch defaults to 1."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if max_batch < 1:
        raise ConfigError(f"--max-batch must be at least 1, got {max_batch}")
    if workspace_mib < 1:
        raise ConfigError(f"--workspace must be at least 1 MiB, got {workspace_mib}")
    opt = min(DEFAULT_OPT_BATCH, max_batch) if opt_batch is None else opt_batch
    if not 1 <= opt <= max_batch:
        raise ConfigError(f"the optimum batch {opt} must lie in 1..{max_batch} (the --max-batch)")
    return BuildSettings(precision, max_batch, opt, workspace_mib)


@dataclass(frozen=True)
class FlagPlan:
    """BuilderFlag names to set and to clear for one precision."""

    set: tuple[str, ...]
    clear: tuple[str, ...]


def builder_flags(precision: str) -> FlagPlan:
    """Strongly typed networks take their types from the graphs, and TensorRT
    refuses the weakly typed flags (FP16, INT8) on them. fp32 clears TF32, so
    fp32 engines match ONNX Runtime to ~1e-5; fp16 and int8 set nothing."""
    if precision == "fp32":
        return FlagPlan(set=(), clear=("TF32",))
    if precision in ("fp16", "int8"):
        return FlagPlan(set=(), clear=())
    raise ConfigError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")


def engine_graphs(manifest: Manifest, precision: str) -> Manifest:
    """The manifest whose graph files the engines of `precision` build from: int8 engines
    need the set quantized for TensorRT (symmetric int8 activations)."""
    spec = manifest.precisions.get(precision) if precision == "int8" else None
    if precision == "int8" and (spec is None or spec.recipe.get("activations") != "int8 symmetric"):
        made = (
            "made for the CPU (uint8 activations, which TensorRT cannot read)"
            if spec
            else "missing"
        )
        raise ConfigError(
            f"int8 engines build from the artifact's int8 graphs for TensorRT, "
            f"and they are {made}: run `budget-edge quantize DIR --precision "
            "int8 --target tensorrt --calib-data DATA` first (on the workstation)"
        )
    return manifest.for_precision(precision)  # fp32 itself; a missing fp16 set says so


Shape = tuple[int, ...]


@dataclass(frozen=True)
class ProfileShapes:
    min: Shape
    opt: Shape
    max: Shape


def profile_shapes(name: str, shape: Sequence[int], settings: BuildSettings) -> ProfileShapes:
    """Batch 1..max for an input whose first axis is dynamic (-1) and the rest fixed.

    Exported graphs have exactly one dynamic axis, the batch; anything else
    means the graph was not written by `budget-edge export`.
    """
    dims = tuple(int(d) for d in shape)
    if not dims or dims[0] != -1:
        raise ConfigError(
            f"input {name!r} has shape {list(dims)}: expected a dynamic batch axis first; "
            "re-export the checkpoint with `budget-edge export`"
        )
    if any(d < 1 for d in dims[1:]):
        raise ConfigError(
            f"input {name!r} has shape {list(dims)}: only the batch axis may be dynamic; "
            "re-export the checkpoint with `budget-edge export`"
        )
    rest = dims[1:]
    return ProfileShapes(
        min=(1, *rest), opt=(settings.opt_batch, *rest), max=(settings.max_batch, *rest)
    )


def engine_file(graph_name: str, precision: str, folder: str | None = None) -> str:
    """<folder>/<graph name>.engine, relative to the artifact dir; the folder defaults to
    engines/<precision> (build-engines gives each build its own, see tensorrt_builder)."""
    return f"{folder or f'{ENGINE_DIR}/{precision}'}/{graph_name}.engine"


def timing_cache_file(tensorrt_version: str, gpu: str, compute_capability: str) -> str:
    """engines/timing-<TensorRT>-<GPU>-sm<cc>.cache: kernel timings are only valid for the
    TensorRT and GPU that measured them, so another pairing gets its own cache."""
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", gpu).strip("-").lower() or "gpu"
    return f"{ENGINE_DIR}/timing-{tensorrt_version}-{slug}-sm{compute_capability}.cache"


@dataclass(frozen=True)
class EngineJob:
    """One engine to build: graph name, its ONNX file, the engine file, and the
    graph's role (stem, block, head, policy, allocator, full, hot) with its block index."""

    graph: str
    onnx_file: str
    engine_file: str
    role: str
    block: int = -1


def plan_engines(manifest: Manifest, precision: str, folder: str | None = None) -> list[EngineJob]:
    """One engine per graph, in chain order: stem, each block's variants and skip,
    head, then policy, allocator, full and the hot-policy graphs; each from the graph set of
    `precision` (see engine_graphs)."""
    files = {g.name: g.file for g in engine_graphs(manifest, precision).graphs}

    def job(name: str, role: str, block: int = -1) -> EngineJob:
        return EngineJob(name, files[name], engine_file(name, precision, folder), role, block)

    jobs = [job(str(manifest.roles["stem"]), "stem")]
    for block in manifest.blocks:
        jobs += [job(v.graph, "block", block.index) for v in block.variants]
        if block.skip is not None:
            jobs.append(job(block.skip, "block", block.index))
    jobs.append(job(str(manifest.roles["head"]), "head"))
    for role in ("policy", "allocator", "full"):
        name = manifest.roles.get(role)
        if name is not None:
            jobs.append(job(name, role))
    jobs += [job(hot.graph, "hot") for hot in manifest.hot_policies]
    # The switch graph is for ONNX Runtime: on TensorRT the runtime dispatches an
    # engine per block (see tensorrt_backend.graphs_to_run).
    planned = {j.graph for j in jobs} | {manifest.roles.get("switch")}
    missing = sorted(set(files) - planned)
    if missing:
        raise ConfigError(
            f"manifest graphs {missing} belong to no stem, block, head, policy, "
            "allocator, full or hot policy: re-export the checkpoint"
        )
    return jobs


PREPROCESS = "preprocess"


def preprocess_shapes(manifest: Manifest) -> dict[str, tuple[int, ...]]:
    """The preprocess graph's inputs for this artifact (-1: the batch): its ONNX file
    leaves height, width and channels symbolic, the engine fixes them."""
    c, h, w = manifest.preprocessing.input_size
    return {"pixels": (-1, h, w, c), "scale": (1, c, 1, 1), "shift": (1, c, 1, 1)}


def with_engines(
    manifest: Manifest,
    engines: Mapping[str, str],
    settings: BuildSettings,
    tensorrt_version: str,
    gpu_name: str,
    compute_capability: str,
    preprocess: str | None = None,
) -> Manifest:
    """A copy of the manifest that lists the engines and what built them.

    Engines run only on the TensorRT version and GPU model that built them; the
    runtime compares these fields before it deserialises anything.
    """
    updated = copy.deepcopy(manifest)
    if manifest.tensorrt is not None:
        # Engines of an earlier build are no longer part of the artifact.
        stale = set(manifest.tensorrt.engines.values()) | {manifest.tensorrt.preprocess}
        updated.files = {k: v for k, v in updated.files.items() if k not in stale}
    updated.tensorrt = TensorRTSpec(
        version=tensorrt_version,
        gpu=gpu_name,
        precision=settings.precision,
        max_batch=settings.max_batch,
        engines=dict(engines),
        compute_capability=compute_capability,
        preprocess=preprocess,
    )
    return updated
