"""`export_checkpoint`: a checkpoint -> an artifact directory the runtime can load.

    manifest = export_checkpoint("runs/r20/model.pt", "artifacts/r20")

writes `graphs/*.onnx` (stem, one graph per block variant, skips, head, policy,
the static `full` model, and `--fuse-top` whole-mask graphs) and
`manifest.json` through the runtime's schema. The model passed in is never
changed: everything is exported from a deep copy in eval mode.

Graph names: `stem`, `head`, `policy`, `full`; block b's graphs are
`block{b:03d}` (ResNet), `block{b:03d}_v{i:02d}` (the i-th ResNeXt variant in
the manifest's list) and `block{b:03d}_skip`; hot masks are `hot{i:02d}`.

ResNeXt variants (the manifest's `variant_scheme`): with C <= 4 paths every
non-empty subset of paths has a graph ("all", 2^C - 1 graphs); with more,
only the prefixes 0..m-1 of the fixed path order ("prefix", C graphs), which
keeps the file count linear; the runtime then runs m kept paths as the prefix
of size m (same count, same FLOPs, since a block's paths are equally wide).
"""

from __future__ import annotations

import copy
import itertools
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import Tensor, nn

import budget_edge
from budget_edge.agent.allocator import Allocator, ChancesGraph, decision_graph
from budget_edge.agent.masks import masks_over_budgets, most_frequent_masks
from budget_edge.agent.policy import PolicyNet
from budget_edge.errors import ConfigError
from budget_edge.export.calibration import DEFAULT_COUNT, calibration_images
from budget_edge.export.engine_plan import ENGINE_DIR
from budget_edge.export.graph_modules import (
    block_module,
    head_module,
    is_identity_skip,
    stem_module,
)
from budget_edge.export.onnx_export import (
    DEFAULT_OPSET,
    GraphExporter,
    chain_graphs,
    check_graph,
    check_opset,
    save_model,
    tensor_specs,
)
from budget_edge.export.quantize import QUANTIZED_DIR
from budget_edge.export.switch_graph import switch_graph
from budget_edge.models.backbone import Backbone, ResidualBlock
from budget_edge.models.batchnorm import recalibrate_batchnorm
from budget_edge.models.checkpoint import LoadedCheckpoint, load_checkpoint
from budget_edge.runtime.manifest import (
    DECISION_MODES,
    LOCK_NAME,
    MANIFEST_NAME,
    AllocationSpec,
    BackboneSpec,
    BlockSpec,
    ComponentSpec,
    FlopsSpec,
    GraphSpec,
    HotPolicySpec,
    Manifest,
    Preprocessing,
    VariantSpec,
    check_preprocessing,
    write_manifest,
)
from budget_edge.runtime.masks import variant_scheme
from budget_edge.runtime.signing import SIGNATURE_NAME

GRAPH_DIR = "graphs"
EXAMPLE_BATCH = 2  # not 1: the exporter would specialise a batch of 1 to a constant


def variant_path_sets(num_paths: int) -> list[list[int]]:
    """The kept-path sets that get a graph, in manifest order (by size, then paths)."""
    scheme = variant_scheme(num_paths)
    if scheme == "single":
        return [[0]]
    if scheme == "prefix":
        return [list(range(m)) for m in range(1, num_paths + 1)]
    return [
        list(subset)
        for size in range(1, num_paths + 1)
        for subset in itertools.combinations(range(num_paths), size)
    ]


Progress = Callable[[str], None]


@dataclass
class _Writer:
    """Exports modules into `out/graphs/` and remembers their manifest entries."""

    out: Path
    exporter: GraphExporter
    progress: Progress | None = None
    graphs: list[GraphSpec] = field(default_factory=list)
    models: dict[str, onnx.ModelProto] = field(default_factory=dict)

    def add(
        self,
        name: str,
        module: nn.Module,
        example: Sequence[Tensor],
        inputs: Sequence[str],
        outputs: Sequence[str],
        reuse: bool = True,
    ) -> None:
        self.write(name, self.exporter.export(module, example, inputs, outputs, reuse=reuse))

    def write(self, name: str, model: onnx.ModelProto) -> None:
        check_graph(model, name)
        file = f"{GRAPH_DIR}/{name}.onnx"
        save_model(model, self.out / file)
        self.graphs.append(
            GraphSpec(name, file, tensor_specs(model.graph.input), tensor_specs(model.graph.output))
        )
        self.models[name] = model
        if self.progress is not None:
            self.progress(name)


def export_checkpoint(
    checkpoint: str | os.PathLike[str] | LoadedCheckpoint,
    out_dir: str | os.PathLike[str],
    opset: int = DEFAULT_OPSET,
    fuse_top: int | None = None,
    calib_data: str | np.ndarray | None = None,
    calib_count: int = DEFAULT_COUNT,
    class_names: Sequence[str] | None = None,
    progress: Progress | None = None,
    exporter: GraphExporter | None = None,
    mode: str | None = None,
    own_batchnorm: bool | None = None,
) -> Manifest:
    """Export a checkpoint (path or loaded) to `out_dir`; return the written manifest.

    `mode` is the decision mode the artifact is made for (the manifest's
    `decision_mode`, what the runtime uses by default): None picks "allocate"
    when the checkpoint has an allocator, else "greedy". `fuse_top` None fuses
    what that mode needs: every row of the allocator's table of count masks
    (one image is then two graph calls), nothing in other modes. `own_batchnorm`
    gives each whole-mask graph BatchNorm statistics recomputed for its mask on
    `calib_data` (None: yes for a sandwich-trained backbone). `fuse_top`
    K > 0 also exports the K masks the policy picks most often on
    `calib_data` (a dataset spec such as "fashion-mnist" or "cifar10:PATH", or
    preprocessed float32 NCHW images) as whole-mask graphs; with an allocator's
    table of count masks, its rows come first (most frequent first). Passing the same
    `exporter` to several exports (checkpoints of one architecture, say) lets
    them share its traced graphs.
    """
    check_opset(opset)  # seconds now instead of an error after minutes of export
    loaded = checkpoint if isinstance(checkpoint, LoadedCheckpoint) else load_checkpoint(checkpoint)
    # Deep copies in eval mode: exporting never touches the caller's modules.
    net = copy.deepcopy(loaded.backbone).eval()
    agent = None if loaded.agent is None else copy.deepcopy(loaded.agent).eval()
    allocator = None if loaded.allocator is None else copy.deepcopy(loaded.allocator).eval()
    preprocessing = _preprocessing(loaded.meta, net)
    check_preprocessing(preprocessing)  # before any graph is written: NaN std, say
    names = _class_names(class_names, loaded.meta, net.num_classes)
    mode = decision_mode(mode, agent, allocator)
    if fuse_top is None:
        hot_masks = masks_the_mode_runs(mode, allocator)
    else:
        hot_masks = _hot_masks(agent, fuse_top, calib_data, calib_count, preprocessing, allocator)
    statistics = None
    if hot_masks:  # only whole-mask graphs carry statistics of their own
        statistics = _statistics_images(
            loaded.meta, own_batchnorm, calib_data, calib_count, preprocessing
        )
    if exporter is not None and exporter.opset != opset:
        raise ConfigError(f"the exporter writes opset {exporter.opset}, not {opset}")
    out = _check_out_dir(out_dir)
    # Everything is written to a staging folder, which replaces the previous export only
    # once complete: a failure or a crash never leaves a half-written artifact, nor
    # destroys the previous one.
    staging = _staging_dir(out)
    try:
        manifest = _export_into(
            staging,
            net,
            agent,
            preprocessing,
            names,
            hot_masks,
            _Writer(staging, exporter or GraphExporter(opset), progress),
            opset,
            allocator,
            loaded.meta.get("validation_split"),
            mode,
            statistics,
        )
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _export_into(
    out: Path,
    net: Backbone,
    agent: PolicyNet | None,
    preprocessing: Preprocessing,
    names: list[str],
    hot_masks: list[tuple[int, ...]],
    writer: _Writer,
    opset: int,
    allocator: Allocator | None = None,
    validation_split: dict[str, Any] | None = None,
    mode: str | None = None,
    statistics: list[Tensor] | None = None,
) -> Manifest:
    """Write every graph and the manifest into `out`. With `statistics` (batches of
    preprocessed images), every whole-mask graph gets BatchNorm statistics of its own."""
    with torch.no_grad():
        blocks, block_inputs = _export_backbone(writer, net)
        if agent is not None:
            _export_policy(writer, agent, net)
        allocation = None
        if allocator is not None and agent is not None:
            allocation = _export_allocator(writer, allocator, agent, net)
        all_kept = [1] * net.num_components
        writer.write("full", _mask_chain(writer, net, blocks, block_inputs, all_kept))
        writer.write("switch", switch_graph(writer.models, blocks))
        hot = []
        for i, mask in enumerate(hot_masks):
            if statistics is None:
                chain = _mask_chain(writer, net, blocks, block_inputs, mask)
            else:
                chain = _own_statistics_chain(writer, net, blocks, mask, statistics)
            writer.write(f"hot{i:02d}", chain)
            hot.append(HotPolicySpec(list(mask), f"hot{i:02d}"))

    table = net.flops()
    manifest = Manifest(
        backbone_spec=BackboneSpec(str(net.config["name"]), _plain(net.config)),
        num_classes=net.num_classes,
        class_names=names,
        preprocessing=preprocessing,
        components=[
            ComponentSpec(c.index, c.stage, c.block, c.path, int(c.flops)) for c in net.components
        ],
        blocks=blocks,
        graphs=writer.graphs,
        roles={
            "stem": "stem",
            "head": "head",
            "policy": "policy" if agent else None,
            "full": "full",
            "switch": "switch",
            "allocator": "allocator" if allocation else None,
        },
        flops=FlopsSpec(
            stem=int(table.stem),
            head=int(table.head),
            policy=None if agent is None else int(agent.flops(net.input_size)),
            allocator=None if allocation is None else allocation[1],
        ),
        versions=_versions(opset),
        hot_policies=hot,
        allocation=None if allocation is None else allocation[0],
        validation_split=validation_split,
        decision_mode=mode,
    )
    return write_manifest(out, manifest)


def _export_backbone(writer: _Writer, net: Backbone) -> tuple[list[BlockSpec], list[Tensor]]:
    """Stem, every block's variants and skip, head; returns block specs and block inputs."""
    table = net.flops()
    stem = stem_module(net)
    image = torch.randn(EXAMPLE_BATCH, *net.input_size)
    writer.add("stem", stem, (image,), ["image"], ["features"])
    x = stem(image)
    specs: list[BlockSpec] = []
    inputs: list[Tensor] = []
    for b, block in enumerate(net.blocks):
        inputs.append(x)
        spec, full = _export_block(writer, b, block, x, net, table.blocks[b].fixed)
        specs.append(spec)
        x = full(x)
    writer.add("head", head_module(net), (x,), ["features"], ["logits"])
    return specs, inputs


def _export_block(
    writer: _Writer, b: int, block: ResidualBlock, x: Tensor, net: Backbone, fixed_flops: int
) -> tuple[BlockSpec, nn.Module]:
    scheme = variant_scheme(block.num_paths)
    variants: list[VariantSpec] = []
    full: nn.Module | None = None
    for i, paths in enumerate(variant_path_sets(block.num_paths)):
        name = f"block{b:03d}" if scheme == "single" else f"block{b:03d}_v{i:02d}"
        module = block_module(block, paths)
        writer.add(name, module, (x,), ["x"], ["y"])
        variants.append(VariantSpec(paths, name))
        if len(paths) == block.num_paths:
            full = module
    skip: str | None = None
    if not is_identity_skip(block, x):
        skip = f"block{b:03d}_skip"
        writer.add(skip, block_module(block, []), (x,), ["x"], ["y"])
    assert full is not None  # every scheme includes the set of all paths
    stage = net.components[net.block_components(b)[0]].stage
    spec = BlockSpec(b, stage, block.num_paths, int(fixed_flops), variants, skip, scheme)
    return spec, full


def _export_policy(writer: _Writer, agent: PolicyNet, net: Backbone) -> None:
    if tuple(agent.input_size) != tuple(net.input_size):
        raise ConfigError(
            f"the agent takes images of {tuple(agent.input_size)} but the backbone "
            f"{tuple(net.input_size)}; the checkpoint mixes two models"
        )
    image = torch.randn(EXAMPLE_BATCH, *net.input_size)
    budget = torch.rand(EXAMPLE_BATCH)
    writer.add(
        "policy", agent, (image, budget), ["image", "budget"], ["probs", "value"], reuse=False
    )


def _export_allocator(
    writer: _Writer, allocator: Allocator, agent: PolicyNet, net: Backbone
) -> tuple[AllocationSpec, int]:
    """The allocator graph (the allocator alone with count masks, else with the agent's
    features); its calibration, count masks and FLOPs for the manifest."""
    calibration = allocator.calibration
    if calibration is None:
        raise ConfigError(
            "the checkpoint's allocator was never calibrated: run "
            "`budget-edge allocate` again to make a complete one"
        )
    graph = decision_graph(allocator, agent)
    outputs = ["chances"] if isinstance(graph, ChancesGraph) else ["chances", "level_probs"]
    image = torch.randn(EXAMPLE_BATCH, *net.input_size)
    writer.add("allocator", graph, (image,), ["image"], outputs, reuse=False)
    spec = AllocationSpec(
        str(calibration.get("source", "")),
        [float(b) for b in calibration["budgets"]],
        [float(p) for p in calibration["prices"]],
        allocator.count_masks,
    )
    return spec, int(graph.flops(net.input_size))


def _mask_chain(
    writer: _Writer,
    net: Backbone,
    blocks: Sequence[BlockSpec],
    block_inputs: Sequence[Tensor],
    mask: Sequence[int],
) -> onnx.ModelProto:
    """image -> logits for one fixed mask, joined from the graphs already exported.

    A kept-path set with no graph of its own (a non-prefix set of a "prefix"
    block) is exported here from its module, without a file.
    """
    parts = [writer.models["stem"]]
    for b, block in enumerate(blocks):
        kept = [p for p, k in enumerate(net.block_components(b)) if mask[k]]
        if not kept:
            if block.skip is not None:
                parts.append(writer.models[block.skip])
            continue
        graph = next((v.graph for v in block.variants if v.paths == kept), None)
        if graph is not None:
            parts.append(writer.models[graph])
        else:
            module = block_module(net.blocks[b], kept)
            parts.append(writer.exporter.export(module, (block_inputs[b],), ["x"], ["y"]))
    parts.append(writer.models["head"])
    return chain_graphs(parts, "image", "logits")


def _hot_masks(
    agent: PolicyNet | None,
    fuse_top: int,
    calib_data: str | np.ndarray | None,
    calib_count: int,
    preprocessing: Preprocessing,
    allocator: Allocator | None = None,
) -> list[tuple[int, ...]]:
    if fuse_top < 0:
        raise ConfigError(f"--fuse-top must be 0 or more, got {fuse_top}")
    if fuse_top == 0:
        return []
    if agent is None:
        raise ConfigError(
            "--fuse-top needs a policy, but the checkpoint has no agent: "
            "train one with `budget-edge train`, or drop --fuse-top"
        )
    if calib_data is None:
        raise ConfigError(
            "--fuse-top needs --calib-data to find the frequent masks, e.g. "
            "--calib-data fashion-mnist"
        )
    if isinstance(calib_data, str):
        images = calibration_images(
            calib_data, preprocessing.mean, preprocessing.std, preprocessing.input_size, calib_count
        )
    else:
        images = np.asarray(calib_data, dtype=np.float32)
        if images.ndim != 4 or list(images.shape[1:]) != list(preprocessing.input_size):
            raise ConfigError(
                f"calibration images have shape {images.shape}; expected "
                f"(N, {', '.join(map(str, preprocessing.input_size))}), "
                "preprocessed float32"
            )
    masks = masks_over_budgets(agent, images, allocator=allocator)
    ranked = most_frequent_masks(masks, len(masks))
    table = (
        []
        if allocator is None or allocator.count_masks is None
        else [tuple(int(v) for v in row) for row in allocator.count_masks]
    )
    if table:
        # The table's rows first: they are every mask mode 'allocate' runs, and with a
        # graph for each the runtime runs one image in two calls (runtime/count_plan.py).
        rows = set(table)
        ranked = (
            [m for m in ranked if m in rows]
            + [m for m in table if m not in ranked]
            + [m for m in ranked if m not in rows]
        )
    # All kept is the static `full` graph, exported anyway: a hot copy would repeat it.
    return [m for m in ranked if not all(m)][:fuse_top]


def _own_statistics_chain(
    writer: _Writer,
    net: Backbone,
    blocks: Sequence[BlockSpec],
    mask: Sequence[int],
    statistics: list[Tensor],
) -> onnx.ModelProto:
    """image -> logits for one fixed mask, its BatchNorm statistics recomputed for it
    (models/batchnorm.py); the traced templates are reused, only the weights differ."""
    own = copy.deepcopy(net)
    recalibrate_batchnorm(own, torch.tensor([bool(k) for k in mask]), statistics)
    x = torch.randn(EXAMPLE_BATCH, *net.input_size)
    stem = stem_module(own)
    parts = [writer.exporter.export(stem, (x,), ["image"], ["features"])]
    x = stem(x)
    for b, block in enumerate(blocks):
        kept = [p for p, k in enumerate(net.block_components(b)) if mask[k]]
        if not kept and block.skip is None:
            continue  # an identity shortcut: nothing runs
        module = block_module(own.blocks[b], kept)
        parts.append(writer.exporter.export(module, (x,), ["x"], ["y"]))
        x = module(x)
    parts.append(writer.exporter.export(head_module(own), (x,), ["features"], ["logits"]))
    return chain_graphs(parts, "image", "logits")


def _statistics_images(
    meta: dict[str, Any],
    own_batchnorm: bool | None,
    calib_data: str | np.ndarray | None,
    calib_count: int,
    preprocessing: Preprocessing,
) -> list[Tensor] | None:
    """Batches to recompute each whole-mask graph's BatchNorm statistics on, or None.

    None (the default) means yes for a backbone trained with sandwich training,
    whose sub-networks need statistics of their own (train/sandwich.py). The
    images come from `calib_data`, else the checkpoint's own dataset, and never
    from its validation split.
    """
    sandwich = bool((meta.get("pretrain") or {}).get("sandwich"))
    if own_batchnorm is None:
        own_batchnorm = sandwich
    if not own_batchnorm:
        return None
    calib_data = calib_data if calib_data is not None else meta.get("dataset")
    if calib_data is None:
        raise ConfigError(
            "whole-mask graphs with BatchNorm statistics of their own need training "
            "images: pass --calib-data fashion-mnist (or the model's dataset)"
            + (", or --shared-batchnorm" if sandwich else "")
        )
    if isinstance(calib_data, str):
        images = calibration_images(
            calib_data,
            preprocessing.mean,
            preprocessing.std,
            preprocessing.input_size,
            calib_count,
            validation_split=meta.get("validation_split"),
        )
    else:
        images = np.asarray(calib_data, dtype=np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(images))
    return list(tensor.split(256))


def masks_the_mode_runs(mode: str | None, allocator: Allocator | None) -> list[tuple[int, ...]]:
    """What `--fuse-top` fuses by default: in mode allocate with a table of count masks,
    every row but all kept (the static `full` graph runs that); nothing otherwise."""
    if mode != "allocate" or allocator is None or allocator.count_masks is None:
        return []
    return [tuple(int(v) for v in row) for row in allocator.count_masks if not all(row)]


def decision_mode(
    mode: str | None, agent: PolicyNet | None, allocator: Allocator | None
) -> str | None:
    """The artifact's decision mode: as asked, or allocate where there is an allocator,
    else greedy; None for a backbone without an agent (it runs masks it is given)."""
    if agent is None:
        if mode is not None:
            raise ConfigError(
                f"--mode {mode}: the checkpoint has no agent to decide with; train one "
                "(budget-edge train), or export without --mode"
            )
        return None
    if mode is None:
        return "allocate" if allocator is not None else "greedy"
    if mode not in DECISION_MODES:
        raise ConfigError(f"--mode must be one of {', '.join(DECISION_MODES)}, got {mode!r}")
    if mode == "allocate" and allocator is None:
        raise ConfigError(
            "--mode allocate needs an allocator: run `budget-edge allocate CKPT --out CKPT2` "
            "and export CKPT2"
        )
    return mode


def _preprocessing(meta: dict[str, Any], net: Backbone) -> Preprocessing:
    pre = meta.get("preprocessing")
    if not isinstance(pre, dict) or "mean" not in pre or "std" not in pre:
        raise ConfigError(
            "the checkpoint's meta has no preprocessing (mean, std): save it with "
            "save_checkpoint(..., meta={'preprocessing': {'mean': [...], 'std': [...], "
            "'input_size': [C, H, W]}}) so the runtime normalises images like training did"
        )
    size = [int(v) for v in pre.get("input_size", net.input_size)]
    if tuple(size) != tuple(net.input_size):
        raise ConfigError(
            f"the checkpoint's preprocessing input_size {size} differs from the backbone's "
            f"{list(net.input_size)}; fix the checkpoint meta"
        )
    return Preprocessing(
        mean=[float(v) for v in pre["mean"]],
        std=[float(v) for v in pre["std"]],
        input_size=size,
        layout=str(pre.get("layout", "NCHW")),
    )


def _class_names(given: Sequence[str] | None, meta: dict[str, Any], num_classes: int) -> list[str]:
    names = given if given is not None else meta.get("class_names")
    if names is None:
        return [f"class_{i}" for i in range(num_classes)]
    names = [str(n) for n in names]
    if len(names) != num_classes:
        raise ConfigError(
            f"{len(names)} class names given for a model with {num_classes} "
            "classes: give one name per class"
        )
    return names


def _check_out_dir(out_dir: str | os.PathLike[str]) -> Path:
    """A new or empty folder, or a previous export to replace.

    Anything else in it means the user pointed at the wrong folder: refuse
    rather than mix our files with theirs or delete them.
    """
    out = Path(out_dir)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ConfigError(f"--out {out} is a file or a link: give a directory")
    ours = {GRAPH_DIR, MANIFEST_NAME, ENGINE_DIR, QUANTIZED_DIR, LOCK_NAME, SIGNATURE_NAME}
    foreign = (
        sorted(
            p.name
            for p in out.iterdir()
            if p.name not in ours and not p.name.startswith((STAGING_PREFIX, OLD_PREFIX))
        )
        if out.is_dir()
        else []
    )
    if foreign:
        raise ConfigError(
            f"--out {out} holds other files ({', '.join(foreign[:3])}): "
            "give a new or empty directory, or a previous export to overwrite"
        )
    return out


STAGING_PREFIX = ".partial-"  # out/.partial-<pid>: the new export, until complete
OLD_PREFIX = ".old-"  # out/.old-<pid>: the previous export, for the instant of the swap
# What a previous export may hold; the swap moves these (.lock stays: others may wait on it).
ARTIFACT_ENTRIES = (MANIFEST_NAME, GRAPH_DIR, ENGINE_DIR, QUANTIZED_DIR, SIGNATURE_NAME)


def _staging_dir(out: Path) -> Path:
    """A fresh staging folder inside `out` (only `out` need be writable: `--out .` and
    mount points work); leftovers of a crashed export are cleaned up first."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot create it ({exc.strerror})") from exc
    _recover(out)
    staging = out / f"{STAGING_PREFIX}{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir()
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write in it ({exc.strerror})") from exc
    return staging


def _recover(out: Path) -> None:
    """Undo what a crashed export left: a previous artifact moved aside mid-swap goes
    back (if no manifest replaced it); staging folders go."""
    for leftover in sorted(out.glob(f"{OLD_PREFIX}*")) + sorted(out.glob(f"{STAGING_PREFIX}*")):
        pid = leftover.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or _process_alive(int(pid)):
            continue  # another export, running now
        if leftover.name.startswith(OLD_PREFIX) and not (out / MANIFEST_NAME).exists():
            _move_entries(leftover, out)
        shutil.rmtree(leftover, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists (POSIX)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _move_entries(source: Path, target: Path) -> None:
    """Move the artifact entries of `source` into `target`, the manifest last."""
    names = [n for n in ARTIFACT_ENTRIES[1:] + ARTIFACT_ENTRIES[:1] if (source / n).exists()]
    for name in names:
        os.replace(source / name, target / name)


def _move_into_place(staging: Path, out: Path) -> None:
    """Replace the previous export in `out` by the complete `staging` folder. Readers see
    the old artifact, then no manifest (a clear error), then the new one, never a mix:
    the old manifest leaves first and the new one arrives last. The previous export goes
    whole, with its engines, quantized sets and signature: they belonged to its graphs."""
    old = out / f"{OLD_PREFIX}{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)
    old.mkdir()
    moved: list[str] = []
    arriving = False
    try:
        for name in ARTIFACT_ENTRIES:  # the manifest is the first entry
            if (out / name).exists():
                os.replace(out / name, old / name)
                moved.append(name)
        arriving = True
        _move_entries(staging, out)
    except BaseException:
        # Whatever of the new export arrived goes; then the old entries come back, the
        # manifest last.
        for name in ARTIFACT_ENTRIES if arriving else ():
            _remove(out / name)
        for name in ARTIFACT_ENTRIES[::-1]:
            if name in moved:
                os.replace(old / name, out / name)
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)


def _plain(value: Any) -> Any:
    """JSON-ready copy of a config (tuples become lists)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _versions(opset: int) -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "opset": opset,
        "budget_edge": budget_edge.__version__,
    }
