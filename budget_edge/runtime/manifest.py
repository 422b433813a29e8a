"""The artifact manifest: the only contract between export and the runtime.

An artifact directory holds ``manifest.json`` and the files it names (ONNX
graphs, TensorRT engines). The exporter builds a :class:`Manifest` from these
dataclasses and writes it with :func:`write_manifest`, which hashes every file;
the runtime reads it with :meth:`Manifest.load` and checks the hashes with
:func:`verify_files`. Both sides call :meth:`Manifest.validate`, so a manifest
that one side accepts the other accepts too.

Layout of ``manifest.json`` (schema version 1)::

    {"schema_version": 1,
     "backbone": {"name": "resnet56", "config": {...build_backbone kwargs...}},
     "num_classes": 10, "class_names": ["airplane", ...],
     "preprocessing": {"mean": [...], "std": [...], "layout": "NCHW",
                       "input_size": [3, 32, 32], "channels": 3},
     "components": [{"index": 0, "stage": 0, "block": 0, "path": null, "flops": 4718592}, ...],
     "blocks": [{"index": 0, "stage": 0, "num_paths": 1, "fixed_flops": 0,
                 "variant_scheme": "single", "variants": [{"paths": [0], "graph": "block00"}],
                 "skip": null}, ...],
     "graphs": [{"name": "stem", "file": "stem.onnx",
                 "inputs": [{"name": "image", "shape": ["batch", 3, 32, 32], "dtype": "float32"}],
                 "outputs": [{"name": "features", "shape": ["batch", 16, 32, 32],
                              "dtype": "float32"}]}, ...],
     "roles": {"stem": "stem", "head": "head", "policy": "policy", "full": "full",
               "switch": "switch"},
     "flops": {"stem": 442368, "head": 1280, "policy": 8000000, "allocator": 4000000},
     "hot_policies": [{"mask": [1, 0, ...], "graph": "hot00"}],
     "static_masks": null or {"source": "fashion-mnist train[55000:], greedy backward ...",
                              "masks": [{"mask": [1, 1, ...], "accuracy": 0.939}, ...]},
     "allocation": null or {"source": "fashion-mnist training split: last 5000 images",
                            "budgets": [0.0, 0.05, ...], "prices": [3.2, 1.1, ...],
                            "count_masks": null or [[0, 0, ...], [1, 0, ...], ...]},
     "precisions": {"int8": {"files": {"stem": "quantized/int8-1a2b3c4d/stem.onnx", ...},
                             "recipe": {"tool": "onnxruntime.quantization", ...}}},
     "versions": {"torch": "2.13.0", "onnx": "1.23.2", "opset": 17, "budget_edge": "0.1.0"},
     "files": {"stem.onnx": "<sha256 hex>", ...},
     "tensorrt": null or {"version": "10.3.0", "gpu": "Orin", "compute_capability": "8.7",
                          "precision": "fp16", "max_batch": 8,
                          "engines": {"stem": "engines/stem.engine", ...},
                          "preprocess": "engines/fp16/preprocess.engine" or null}}

Graph conventions (checked by :meth:`Manifest.validate`):

- every tensor's first axis is the symbolic batch axis (a string), the others
  are positive integers; the one exception is an int64 control input of one
  fixed size (the switch graph's per-block ``codes``);
- ``stem``: image -> features; each block graph: features -> features; ``head``:
  features -> logits (batch, num_classes); ``full`` (the static model) and each
  hot-policy graph: image -> logits;
- ``policy``: inputs (image, budget) with budget shaped (batch,) or (batch, 1);
  outputs (probs (batch, K), value (batch,) or (batch, 1)), in that order;
- ``switch``: inputs (image, codes int64 (blocks,)) -> logits: every block
  behind an If on its kept-path code (export/switch_graph.py);
- ``allocator``: image -> chances (batch, K + 1), the allocator's chance of a
  right answer with k components, when ``allocation.count_masks`` gives the
  mask of each count (K + 1 rows, row k keeping k components; a 'prefix' block
  runs the prefix of the same size, as for any policy mask);
  without them image -> (chances, level_probs (batch, K + 1, K)), the agent's
  probabilities at budget k / K (agent/allocator.py). Needs ``allocation``,
  the calibrated prices (runtime/allocation.py): budgets rising in [0, 1],
  prices >= 0 never rising;
- ``static_masks``: at most one mask per kept count, each runnable (prefix
  blocks keep a prefix), accuracy in [0, 1].
- ``decision_mode``: null (artifacts from before it: "greedy", what they ran
  then), or the mode the artifact was exported for
  and that `infer`, `serve` and `bench` use unless told otherwise: one of
  runtime/masks.py's MODES; "allocate" needs an allocator.
- ``validation_split``: null, or the training images the backbone never
  trained on (data/split.py: size >= 1, seed, sha256 of the indices); the
  bench searches static masks there.
- ``precisions``: graph sets in a lower precision written by `budget-edge
  quantize` (export/quantize.py), "fp16" or "int8": a file for every graph of
  ``graphs`` (same names, inputs and outputs: fp32 at the graph edges), and
  the recipe that made them. ``graphs`` itself is the fp32 set;
  :meth:`Manifest.for_precision` swaps the files in.

Blocks and variants. Component k of the mask is ``components[k]``; the
components of block b are contiguous, ordered by path. A block's ``variants``
are graphs for the non-empty sets of kept paths; ``skip`` is the graph for the
block's output when every component of it is dropped, ``null`` meaning the
identity (only allowed when the block keeps its shape and has a single path:
a multi-path block always needs one, since it gives ReLU(shortcut(x) + BN(0))).
``variant_scheme`` says which path sets have a graph:

- ``"single"``: a one-path (ResNet) block, one variant ``paths=[0]``;
- ``"all"``: every non-empty subset of the C paths (2^C - 1 graphs; used for
  C <= 4);
- ``"prefix"``: only the prefixes ``paths=[0..m-1]`` for m = 1..C (C graphs;
  used for larger C to keep the file count sane). All paths of such a block
  must have equal FLOPs. The runtime maps a policy's kept-path set of size m to
  the prefix of size m (same count, same cost) and reports the mask it ran; an
  explicit mask must ask for an available path set (see runtime.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from budget_edge.errors import ConfigError, ManifestError

# How a budget becomes masks (runtime/masks.py); an artifact names the one it is made for.
DECISION_MODES = ("greedy", "sample", "rank", "allocate")

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".lock"  # held by commands that rewrite an artifact (artifact_lock)
BATCH_AXIS = "batch"
DTYPES = ("float32", "float16")
# Control inputs (the switch graph's per-block codes) are int64 with a fixed shape.
CONTROL_DTYPE = "int64"
VARIANT_SCHEMES = ("single", "all", "prefix")
TRT_PRECISIONS = ("fp32", "fp16", "int8")
# Graph sets: "fp32" is `graphs` itself; the others are written by `budget-edge quantize`.
PRECISIONS = ("fp32", "fp16", "int8")
QUANTIZED_PRECISIONS = ("fp16", "int8")
ROLES = ("stem", "head", "policy", "full", "switch", "allocator")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class TensorSpec:
    """One graph input or output: name, shape (first axis symbolic), dtype."""

    name: str
    shape: list[int | str]
    dtype: str = "float32"


@dataclass
class GraphSpec:
    """One ONNX graph file with its inputs and outputs, in call order."""

    name: str
    file: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


@dataclass
class Preprocessing:
    """How raw uint8 pixels become the float input: (pixel / 255 - mean) / std per channel."""

    mean: list[float]
    std: list[float]
    input_size: list[int]  # (C, H, W)
    layout: str = "NCHW"
    channels: int = 0  # 0: taken from input_size[0]

    def __post_init__(self) -> None:
        if self.channels == 0 and len(self.input_size) == 3:
            self.channels = int(self.input_size[0])


@dataclass
class ComponentSpec:
    """One droppable component: a whole block (path None) or one ResNeXt path."""

    index: int
    stage: int
    block: int
    path: int | None
    flops: int


@dataclass
class VariantSpec:
    """The graph that runs a block with exactly these paths kept."""

    paths: list[int]
    graph: str


@dataclass
class BlockSpec:
    """A residual block: its variants, its skip graph (None: identity), fixed FLOPs."""

    index: int
    stage: int
    num_paths: int
    fixed_flops: int  # shortcut convolution: runs even when the block is dropped
    variants: list[VariantSpec]
    skip: str | None = None
    variant_scheme: str = "single"


@dataclass
class HotPolicySpec:
    """A whole mask exported as one static graph (image -> logits)."""

    mask: list[int]
    graph: str


@dataclass
class StaticMaskSpec:
    """A best static mask found by a search (runtime/static_masks.py): the mask, and its
    accuracy on the images it was searched on."""

    mask: list[int]
    accuracy: float


@dataclass
class StaticMasksSpec:
    """The searched static masks, one per kept count, and where they were searched."""

    source: str  # e.g. "fashion-mnist train[55000:60000], greedy backward elimination"
    masks: list[StaticMaskSpec]


@dataclass
class AllocationSpec:
    """The allocator's prices per budget (runtime/allocation.py) and the images they
    were calibrated on."""

    source: str
    budgets: list[float]
    prices: list[float]
    # Row k: the mask run with k components (the agent's most common top-k mask);
    # None for allocators made before the table, which rank with the agent per image.
    count_masks: list[list[int]] | None = None


@dataclass
class PrecisionSpec:
    """Every graph again in a lower precision (`budget-edge quantize`): graph name -> file,
    and how the files were made (converter, calibration data and recipe)."""

    files: dict[str, str]
    recipe: dict[str, Any] = field(default_factory=dict)


@dataclass
class FlopsSpec:
    """FLOPs (2 x MACs) of the parts that are not components."""

    stem: int
    head: int
    policy: int | None = None
    allocator: int | None = None  # the allocator graph (agent included without count masks)


@dataclass
class TensorRTSpec:
    """Engines built by `build-engines`; they run only on the TensorRT and GPU that built them."""

    version: str
    gpu: str
    precision: str
    max_batch: int
    engines: dict[str, str]  # graph name -> engine file
    compute_capability: str | None = None
    # uint8 NHWC pixels -> the normalised image, on the GPU (runtime/device_graphs.py)
    preprocess: str | None = None


@dataclass
class Manifest:
    """Everything the runtime needs about an artifact directory."""

    backbone: str
    backbone_config: dict[str, Any]
    num_classes: int
    class_names: list[str]
    preprocessing: Preprocessing
    components: list[ComponentSpec]
    blocks: list[BlockSpec]
    graphs: list[GraphSpec]
    roles: dict[str, str | None]
    flops: FlopsSpec
    versions: dict[str, Any]
    hot_policies: list[HotPolicySpec] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    tensorrt: TensorRTSpec | None = None
    schema_version: int = SCHEMA_VERSION
    static_masks: StaticMasksSpec | None = None
    precisions: dict[str, PrecisionSpec] = field(default_factory=dict)
    allocation: AllocationSpec | None = None
    validation_split: dict[str, Any] | None = None
    decision_mode: str | None = None

    # ---- lookups -------------------------------------------------------------

    @property
    def num_components(self) -> int:
        return len(self.components)

    @property
    def full_flops(self) -> int:
        """FLOPs of the unmasked backbone (policy excluded)."""
        fixed = sum(b.fixed_flops for b in self.blocks)
        return self.flops.stem + self.flops.head + fixed + sum(c.flops for c in self.components)

    @property
    def base_flops(self) -> int:
        """FLOPs that run whatever the mask: stem, head and the shortcut convolutions."""
        return self.flops.stem + self.flops.head + sum(b.fixed_flops for b in self.blocks)

    def graph(self, name: str) -> GraphSpec:
        for g in self.graphs:
            if g.name == name:
                return g
        raise ManifestError(f"manifest has no graph named {name!r}: re-export the model")

    def role(self, role: str) -> GraphSpec | None:
        name = self.roles.get(role)
        return None if name is None else self.graph(name)

    def block_components(self, block: int) -> list[int]:
        return [c.index for c in self.components if c.block == block]

    def referenced_files(self) -> list[str]:
        """Every file the manifest points at: graphs, other precisions, then engines."""
        out = [g.file for g in self.graphs]
        for spec in self.precisions.values():
            out += list(spec.files.values())
        if self.tensorrt is not None:
            out += list(self.tensorrt.engines.values())
            if self.tensorrt.preprocess is not None:
                out.append(self.tensorrt.preprocess)
        return out

    @property
    def available_precisions(self) -> list[str]:
        return ["fp32", *(p for p in QUANTIZED_PRECISIONS if p in self.precisions)]

    def for_precision(self, precision: str) -> Manifest:
        """This manifest with the graph files of `precision` ("fp32": itself)."""
        if precision not in PRECISIONS:
            raise ConfigError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        if precision == "fp32":
            return self
        spec = self.precisions.get(precision)
        if spec is None:
            raise ConfigError(
                f"this artifact has no {precision} graphs (it has "
                f"{', '.join(self.available_precisions)}): run `budget-edge quantize DIR "
                f"--precision {precision}"
                + (" --calib-data DATA" if precision == "int8" else "")
                + "` first, or use fp32"
            )
        graphs = [dataclasses.replace(g, file=spec.files[g.name]) for g in self.graphs]
        return dataclasses.replace(self, graphs=graphs)

    # ---- (de)serialisation ---------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        config = d.pop("backbone_config")
        d["backbone"] = {"name": self.backbone, "config": config}
        order = [
            "schema_version",
            "backbone",
            "num_classes",
            "class_names",
            "preprocessing",
            "components",
            "blocks",
            "graphs",
            "roles",
            "flops",
            "hot_policies",
            "static_masks",
            "allocation",
            "decision_mode",
            "validation_split",
            "precisions",
            "versions",
            "files",
            "tensorrt",
        ]
        return {k: d[k] for k in order}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """Parse a decoded manifest.json; type errors raise ManifestError naming the field."""
        return _parse_manifest(data)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Manifest:
        """Read and validate ``DIR/manifest.json`` (file hashes: see :func:`verify_files`)."""
        path = Path(directory) / MANIFEST_NAME
        if not Path(directory).is_dir():
            raise ManifestError(
                f"artifact directory {directory} does not exist: "
                "pass the --out directory of `budget-edge export`"
            )
        if not path.is_file():
            raise ManifestError(
                f"{path} is missing: this is not an artifact directory "
                "written by `budget-edge export`"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(f"{path} is not valid JSON ({exc}): re-export the model") from exc
        except RecursionError as exc:  # "[[[[..." 100,000 deep
            raise ManifestError(
                f"{path} nests JSON too deeply to be a manifest: re-export the model"
            ) from exc
        manifest = cls.from_dict(data)
        manifest.validate()
        return manifest

    # ---- validation ----------------------------------------------------------

    def validate(self) -> None:
        """Check types and consistency; raise ManifestError naming the first bad field."""
        # The parser type-checks every field by name (a numpy int where an int belongs,
        # say), so an exporter's mistake is reported the same way as a corrupt file.
        _parse_manifest(self.to_dict())
        try:
            json.dumps(self.to_dict(), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ManifestError(
                f"manifest is not plain JSON ({exc}): backbone.config and versions "
                "must hold only str, int, float, bool, list, dict"
            ) from exc
        if self.schema_version != SCHEMA_VERSION:
            raise ManifestError(
                f"schema_version: {self.schema_version} is not supported (this budget-edge "
                f"reads {SCHEMA_VERSION}): export again with this version of budget-edge"
            )
        _check(
            isinstance(self.backbone, str) and self.backbone != "",
            "backbone.name",
            "must be a non-empty string",
        )
        _check(self.num_classes >= 1, "num_classes", "must be at least 1")
        _check(
            len(self.class_names) == self.num_classes,
            "class_names",
            f"has {len(self.class_names)} names for {self.num_classes} classes",
        )
        _validate_preprocessing(self.preprocessing)
        graphs = _validate_graphs(self.graphs)
        _validate_components(self)
        _validate_roles(self, graphs)
        _validate_blocks(self, graphs)
        _validate_hot(self, graphs)
        _validate_static_masks(self)
        _validate_validation_split(self)
        _validate_allocation(self)
        _validate_decision_mode(self)
        _validate_precisions(self)
        _validate_flops(self)
        for key in ("onnx", "opset", "budget_edge"):
            _check(key in self.versions, f"versions.{key}", "is missing")
        if self.tensorrt is not None:
            _validate_tensorrt(self.tensorrt, graphs)
        _validate_files(self)


# ---- validation helpers ------------------------------------------------------


def _check(ok: bool, where: str, problem: str) -> None:
    if not ok:
        raise ManifestError(
            f"manifest field {where} {problem}: re-export the model "
            "(or fix the exporter that wrote it)"
        )


def check_preprocessing(p: Preprocessing) -> None:
    """The rules `Manifest.validate` applies to preprocessing, for an exporter to check
    before it writes anything."""
    _validate_preprocessing(p)


def _validate_preprocessing(p: Preprocessing) -> None:
    _check(p.layout == "NCHW", "preprocessing.layout", f"is {p.layout!r}, expected 'NCHW'")
    _check(
        len(p.input_size) == 3 and all(isinstance(v, int) and v > 0 for v in p.input_size),
        "preprocessing.input_size",
        f"must be three positive integers (C, H, W), got {p.input_size}",
    )
    _check(
        p.channels == p.input_size[0],
        "preprocessing.channels",
        f"is {p.channels} but input_size has {p.input_size[0]} channels",
    )
    _check(len(p.mean) == p.channels, "preprocessing.mean", f"needs {p.channels} values")
    _check(len(p.std) == p.channels, "preprocessing.std", f"needs {p.channels} values")
    _check(all(math.isfinite(v) for v in p.mean), "preprocessing.mean", "must be finite")
    _check(
        all(math.isfinite(s) and s > 0 for s in p.std),
        "preprocessing.std",
        "must be positive and finite",
    )
    # pixel / 255 / std: a tiny std turns every pixel into inf (std 1e-300 did)
    _check(
        all(s >= 1e-6 for s in p.std),
        "preprocessing.std",
        "must be at least 1e-6 (a pixel divided by it must stay finite)",
    )
    _check(all(abs(v) <= 1e6 for v in p.mean), "preprocessing.mean", "must lie in [-1e6, 1e6]")


def _validate_tensor(t: TensorSpec, where: str) -> None:
    _check(t.name != "", f"{where}.name", "must not be empty")
    if t.dtype == CONTROL_DTYPE:
        _check(
            len(t.shape) == 1 and isinstance(t.shape[0], int) and t.shape[0] > 0,
            f"{where}.shape",
            f"of an int64 control input must be one fixed size, got {t.shape}",
        )
        return
    _check(
        t.dtype in DTYPES,
        f"{where}.dtype",
        f"is {t.dtype!r}, expected one of {(*DTYPES, CONTROL_DTYPE)}",
    )
    _check(
        len(t.shape) >= 1 and isinstance(t.shape[0], str),
        f"{where}.shape",
        f"must start with the symbolic batch axis, got {t.shape}",
    )
    rest = t.shape[1:]
    _check(
        all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in rest),
        f"{where}.shape",
        f"needs positive integer sizes after the batch axis, got {t.shape}",
    )


def _validate_relpath(path: str, where: str) -> None:
    pure = Path(path)
    _check(
        path != "" and not pure.is_absolute() and ".." not in pure.parts and "\\" not in path,
        where,
        f"must be a relative path inside the artifact directory, got {path!r}",
    )


def _validate_graphs(graphs: list[GraphSpec]) -> dict[str, GraphSpec]:
    by_name: dict[str, GraphSpec] = {}
    files: set[str] = set()
    for i, g in enumerate(graphs):
        where = f"graphs[{i}]"
        _check(
            g.name != "" and g.name not in by_name,
            f"{where}.name",
            f"must be unique and non-empty, got {g.name!r}",
        )
        _validate_relpath(g.file, f"{where}.file")
        _check(g.file not in files, f"{where}.file", f"{g.file!r} is used by two graphs")
        _check(len(g.inputs) >= 1 and len(g.outputs) >= 1, where, "needs inputs and outputs")
        for j, t in enumerate(g.inputs):
            _validate_tensor(t, f"{where}.inputs[{j}]")
        for j, t in enumerate(g.outputs):
            _validate_tensor(t, f"{where}.outputs[{j}]")
        by_name[g.name] = g
        files.add(g.file)
    return by_name


def _validate_components(m: Manifest) -> None:
    _check(len(m.components) >= 1, "components", "must not be empty")
    _check(len(m.blocks) >= 1, "blocks", "must not be empty")
    last = (-1, -1)
    for k, c in enumerate(m.components):
        where = f"components[{k}]"
        _check(c.index == k, f"{where}.index", f"is {c.index}, expected {k} (mask order)")
        _check(0 <= c.block < len(m.blocks), f"{where}.block", f"{c.block} is not a block index")
        _check(c.flops >= 0, f"{where}.flops", "must not be negative")
        _check(
            c.stage == m.blocks[c.block].stage,
            f"{where}.stage",
            f"is {c.stage} but block {c.block} is in stage {m.blocks[c.block].stage}",
        )
        key = (c.block, -1 if c.path is None else c.path)
        _check(key > last, where, "is out of order: components go by block, then path")
        last = key


def _expected_variants(scheme: str, num_paths: int) -> list[tuple[int, ...]]:
    paths = range(num_paths)
    if scheme == "single":
        return [(0,)]
    if scheme == "prefix":
        return [tuple(range(m)) for m in range(1, num_paths + 1)]
    return [s for r in range(1, num_paths + 1) for s in itertools.combinations(paths, r)]


def _io(g: GraphSpec) -> tuple[list[int | str], list[int | str]]:
    return g.inputs[0].shape, g.outputs[0].shape


def _same(a: Sequence[object], b: Sequence[object]) -> bool:
    return list(a[1:]) == list(b[1:]) and len(a) == len(b)


def _validate_roles(m: Manifest, graphs: dict[str, GraphSpec]) -> None:
    for role in m.roles:
        _check(role in ROLES, f"roles.{role}", f"is not one of {ROLES}")
    for role in ("stem", "head"):
        _check(m.roles.get(role) is not None, f"roles.{role}", "is missing")
    for role, name in m.roles.items():
        _check(name is None or name in graphs, f"roles.{role}", f"names unknown graph {name!r}")
    image = [BATCH_AXIS, *m.preprocessing.input_size]
    logits = [BATCH_AXIS, m.num_classes]
    stem = graphs[str(m.roles["stem"])]
    _check(
        len(stem.inputs) == 1 and len(stem.outputs) == 1,
        "roles.stem",
        "graph must have one input and one output",
    )
    _check(
        _same(stem.inputs[0].shape, image),
        "roles.stem",
        f"input shape {stem.inputs[0].shape} does not match input_size {image}",
    )
    head = graphs[str(m.roles["head"])]
    _check(
        len(head.inputs) == 1 and len(head.outputs) == 1,
        "roles.head",
        "graph must have one input and one output",
    )
    _check(
        _same(head.outputs[0].shape, logits),
        "roles.head",
        f"output shape {head.outputs[0].shape} is not (batch, num_classes)",
    )
    full = m.roles.get("full")
    if full is not None:
        g = graphs[full]
        _check(
            len(g.inputs) == 1
            and _same(g.inputs[0].shape, image)
            and _same(g.outputs[0].shape, logits),
            "roles.full",
            "graph must map the image to (batch, num_classes)",
        )
    policy = m.roles.get("policy")
    if policy is not None:
        g = graphs[policy]
        _check(
            len(g.inputs) == 2 and len(g.outputs) == 2,
            "roles.policy",
            "graph must have inputs (image, budget) and outputs (probs, value)",
        )
        _check(
            _same(g.inputs[0].shape, image),
            "roles.policy",
            f"image input shape {g.inputs[0].shape} does not match input_size",
        )
        _check(
            len(g.inputs[1].shape) in (1, 2) and g.inputs[1].shape[1:] in ([], [1]),
            "roles.policy",
            "budget input must be shaped (batch,) or (batch, 1)",
        )
        _check(
            _same(g.outputs[0].shape, [BATCH_AXIS, m.num_components]),
            "roles.policy",
            f"probs output shape {g.outputs[0].shape} is not (batch, {m.num_components})",
        )
        _check(
            g.outputs[1].shape[1:] in ([], [1]),
            "roles.policy",
            "value output must be shaped (batch,) or (batch, 1)",
        )
    allocator = m.roles.get("allocator")
    if allocator is not None:
        g = graphs[allocator]
        k = m.num_components
        ok = (
            len(g.inputs) == 1
            and _same(g.inputs[0].shape, image)
            and len(g.outputs) >= 1
            and _same(g.outputs[0].shape, [BATCH_AXIS, k + 1])
        )
        if m.allocation is None:  # _validate_allocation says what is missing
            _check(ok, "roles.allocator", f"graph must map the image to chances (batch, {k + 1})")
        elif m.allocation.count_masks is not None:
            _check(
                ok and len(g.outputs) == 1,
                "roles.allocator",
                f"graph must map the image to chances (batch, {k + 1}): the count "
                "masks give the components",
            )
        else:
            _check(
                ok and len(g.outputs) == 2 and _same(g.outputs[1].shape, [BATCH_AXIS, k + 1, k]),
                "roles.allocator",
                f"graph must map the image to chances (batch, {k + 1}) and level "
                f"probabilities (batch, {k + 1}, {k})",
            )
    switch = m.roles.get("switch")
    if switch is not None:
        g = graphs[switch]
        codes = [len(m.blocks)]
        _check(
            len(g.inputs) == 2
            and _same(g.inputs[0].shape, image)
            and g.inputs[1].dtype == CONTROL_DTYPE
            and g.inputs[1].shape == codes
            and len(g.outputs) == 1
            and _same(g.outputs[0].shape, logits),
            "roles.switch",
            f"graph must map (image, int64 codes {codes}) to (batch, num_classes)",
        )


def _validate_blocks(m: Manifest, graphs: dict[str, GraphSpec]) -> None:
    shape = _io(graphs[str(m.roles["stem"])])[1]
    for b, block in enumerate(m.blocks):
        where = f"blocks[{b}]"
        _check(block.index == b, f"{where}.index", f"is {block.index}, expected {b}")
        _check(block.fixed_flops >= 0, f"{where}.fixed_flops", "must not be negative")
        comps = [m.components[k] for k in m.block_components(b)]
        if block.num_paths == 1:
            _check(
                len(comps) == 1 and comps[0].path is None,
                where,
                "a one-path block needs exactly one component with path null",
            )
        else:
            _check(
                [c.path for c in comps] == list(range(block.num_paths)),
                where,
                f"needs components for paths 0..{block.num_paths - 1} in order",
            )
        scheme = block.variant_scheme
        _check(
            scheme in VARIANT_SCHEMES,
            f"{where}.variant_scheme",
            f"is {scheme!r}, expected one of {VARIANT_SCHEMES}",
        )
        _check(
            (scheme == "single") == (block.num_paths == 1),
            f"{where}.variant_scheme",
            "must be 'single' exactly for one-path blocks",
        )
        if scheme == "prefix":
            _check(
                len({c.flops for c in comps}) == 1,
                f"{where}.variant_scheme",
                "'prefix' needs every path of the block to have the same FLOPs",
            )
        got = sorted(tuple(v.paths) for v in block.variants)
        want = sorted(_expected_variants(scheme, block.num_paths))
        _check(
            got == want,
            f"{where}.variants",
            f"do not match scheme {scheme!r}: expected path sets {want}",
        )
        out_shape: list[int | str] | None = None
        for j, v in enumerate(block.variants):
            vw = f"{where}.variants[{j}].graph"
            _check(v.graph in graphs, vw, f"names unknown graph {v.graph!r}")
            g = graphs[v.graph]
            _check(
                len(g.inputs) == 1 and len(g.outputs) == 1,
                vw,
                "graph must have one input and one output",
            )
            _check(
                _same(g.inputs[0].shape, shape),
                vw,
                f"input shape {g.inputs[0].shape} does not match the previous output {shape}",
            )
            if out_shape is None:
                out_shape = g.outputs[0].shape
            _check(_same(g.outputs[0].shape, out_shape), vw, "output shape differs from variant 0")
        assert out_shape is not None
        if block.skip is None:
            _check(
                block.num_paths == 1,
                f"{where}.skip",
                "is null but a multi-path block needs a skip graph (ReLU(shortcut + BN(0)))",
            )
            _check(
                _same(shape, out_shape),
                f"{where}.skip",
                "is null (identity) but the block changes the shape: export a skip graph",
            )
        else:
            _check(block.skip in graphs, f"{where}.skip", f"names unknown graph {block.skip!r}")
            g = graphs[block.skip]
            _check(
                len(g.inputs) == 1
                and _same(g.inputs[0].shape, shape)
                and _same(g.outputs[0].shape, out_shape),
                f"{where}.skip",
                "graph must map the block input shape to the block output shape",
            )
        shape = out_shape
    head = graphs[str(m.roles["head"])]
    _check(
        _same(head.inputs[0].shape, shape),
        "roles.head",
        f"input shape {head.inputs[0].shape} does not match the last block output {shape}",
    )


def _validate_hot(m: Manifest, graphs: dict[str, GraphSpec]) -> None:
    image = [BATCH_AXIS, *m.preprocessing.input_size]
    seen: set[tuple[int, ...]] = set()
    for i, h in enumerate(m.hot_policies):
        where = f"hot_policies[{i}]"
        _check(
            len(h.mask) == m.num_components and all(v in (0, 1) for v in h.mask),
            f"{where}.mask",
            f"must be {m.num_components} values of 0 or 1",
        )
        _check(tuple(h.mask) not in seen, f"{where}.mask", "is listed twice")
        for b in m.blocks:
            if b.variant_scheme == "prefix":
                part = [h.mask[k] for k in m.block_components(b.index)]
                _check(
                    part == sorted(part, reverse=True),
                    f"{where}.mask",
                    f"keeps a non-prefix path set of block {b.index} (scheme 'prefix'), "
                    "which the runtime never runs",
                )
        seen.add(tuple(h.mask))
        _check(h.graph in graphs, f"{where}.graph", f"names unknown graph {h.graph!r}")
        g = graphs[h.graph]
        _check(
            len(g.inputs) == 1
            and _same(g.inputs[0].shape, image)
            and _same(g.outputs[0].shape, [BATCH_AXIS, m.num_classes]),
            f"{where}.graph",
            "graph must map the image to (batch, num_classes)",
        )


def _validate_decision_mode(m: Manifest) -> None:
    if m.decision_mode is None:
        return
    _check(
        m.decision_mode in DECISION_MODES,
        "decision_mode",
        f"must be one of {', '.join(DECISION_MODES)}",
    )
    if m.decision_mode == "allocate":
        _check(m.allocation is not None, "decision_mode", "is 'allocate' but there is no allocator")
    else:
        _check(m.roles.get("policy") is not None, "decision_mode", "needs a policy graph")


def _validate_validation_split(m: Manifest) -> None:
    split = m.validation_split
    if split is None:
        return
    size, seed, digest = split.get("size"), split.get("seed"), split.get("indices_sha256")
    _check(type(size) is int and size >= 1, "validation_split.size", "must be an int >= 1")
    _check(type(seed) is int, "validation_split.seed", "must be an int")
    _check(
        isinstance(digest, str)
        and len(digest) == 64
        and all(c in "0123456789abcdef" for c in digest),
        "validation_split.indices_sha256",
        "must be 64 lowercase hex digits",
    )


def _validate_static_masks(m: Manifest) -> None:
    if m.static_masks is None:
        return
    _check(len(m.static_masks.masks) >= 1, "static_masks.masks", "must not be empty")
    kept: set[int] = set()
    prefix = [m.block_components(b.index) for b in m.blocks if b.variant_scheme == "prefix"]
    for i, s in enumerate(m.static_masks.masks):
        where = f"static_masks.masks[{i}]"
        _check(
            len(s.mask) == m.num_components and all(v in (0, 1) for v in s.mask),
            f"{where}.mask",
            f"must be {m.num_components} values of 0 or 1",
        )
        _check(
            sum(s.mask) not in kept,
            f"{where}.mask",
            f"keeps {sum(s.mask)} components, like an earlier mask: one mask per count",
        )
        _check(
            math.isfinite(s.accuracy) and 0.0 <= s.accuracy <= 1.0,
            f"{where}.accuracy",
            "must lie in [0, 1]",
        )
        for idx in prefix:
            part = [s.mask[k] for k in idx]
            _check(
                part == sorted(part, reverse=True),
                f"{where}.mask",
                "keeps a non-prefix path set of a 'prefix' block, which never runs",
            )
        kept.add(sum(s.mask))


def _validate_allocation(m: Manifest) -> None:
    has_graph = m.roles.get("allocator") is not None
    _check(
        (m.allocation is not None) == has_graph,
        "allocation",
        "must be given exactly when there is an allocator graph",
    )
    _check(
        (m.flops.allocator is not None) == has_graph,
        "flops.allocator",
        "must be given exactly when there is an allocator graph",
    )
    if m.allocation is None:
        return
    a = m.allocation
    _check(
        len(a.budgets) >= 1 and len(a.budgets) == len(a.prices),
        "allocation",
        "needs equally long, non-empty budgets and prices",
    )
    _check(all(math.isfinite(v) for v in a.budgets + a.prices), "allocation", "holds NaN or inf")
    _check(
        all(0.0 <= b <= 1.0 for b in a.budgets)
        and all(b2 > b1 for b1, b2 in itertools.pairwise(a.budgets)),
        "allocation.budgets",
        "must rise strictly within [0, 1]",
    )
    _check(
        all(p >= 0.0 for p in a.prices)
        and all(p2 <= p1 for p1, p2 in itertools.pairwise(a.prices)),
        "allocation.prices",
        "must be >= 0 and never rise with the budget",
    )
    if a.count_masks is not None:
        k = m.num_components
        rows = a.count_masks
        _check(
            len(rows) == k + 1
            and all(len(r) == k for r in rows)
            and all(v in (0, 1) for r in rows for v in r)
            and [sum(r) for r in rows] == list(range(k + 1)),
            "allocation.count_masks",
            f"must be {k + 1} rows of {k} zeros and ones, row k keeping k components",
        )


def _validate_precisions(m: Manifest) -> None:
    fp32_files = {g.file for g in m.graphs}
    if m.tensorrt is not None:  # engines are not graphs either
        fp32_files |= set(m.tensorrt.engines.values())
        if m.tensorrt.preprocess is not None:
            fp32_files.add(m.tensorrt.preprocess)
    seen: set[str] = set()
    names = {g.name for g in m.graphs}
    for precision, spec in m.precisions.items():
        where = f"precisions[{precision!r}]"
        _check(
            precision in QUANTIZED_PRECISIONS,
            where,
            f"is not one of {QUANTIZED_PRECISIONS} (fp32 is `graphs` itself)",
        )
        _check(
            set(spec.files) == names,
            f"{where}.files",
            "must name a file for every graph of `graphs`, and nothing else",
        )
        for name, path in spec.files.items():
            _validate_relpath(path, f"{where}.files[{name!r}]")
            _check(
                path not in fp32_files and path not in seen,
                f"{where}.files[{name!r}]",
                "is a file of another graph set or engine",
            )
        seen |= set(spec.files.values())
        _check(
            len(set(spec.files.values())) == len(spec.files),
            f"{where}.files",
            "names one file for two graphs",
        )


# FLOPs are summed in int64 per image: keep totals far from its 9.2e18 limit (a real
# model is under 1e13; 4.15e19 once wrapped round to 4.6e18 without a word).
MAX_FLOPS = 1 << 53


def _validate_flops(m: Manifest) -> None:
    _check(
        m.flops.stem >= 0 and m.flops.head >= 0 and (m.flops.allocator or 0) >= 0,
        "flops",
        "must not be negative",
    )
    _check(all(c.flops >= 0 for c in m.components), "components.flops", "must not be negative")
    _check(
        m.full_flops + (m.flops.policy or 0) < MAX_FLOPS,
        "flops",
        f"total {m.full_flops:.3g}, is not a model's FLOPs (at most 2**53)",
    )
    has_policy = m.roles.get("policy") is not None
    _check(
        (m.flops.policy is not None) == has_policy,
        "flops.policy",
        "must be given exactly when there is a policy graph",
    )
    _check(m.full_flops > 0, "flops", "the full model must have positive FLOPs")


def _validate_files(m: Manifest) -> None:
    for name, digest in m.files.items():
        _validate_relpath(name, f"files[{name!r}]")
        _check(
            isinstance(digest, str) and bool(_SHA256.match(digest)),
            f"files[{name!r}]",
            "must be a lowercase hex SHA-256",
        )
    for name in m.referenced_files():
        _check(name in m.files, "files", f"has no SHA-256 for {name!r}")


def _validate_tensorrt(t: TensorRTSpec, graphs: dict[str, GraphSpec]) -> None:
    _check(t.version != "", "tensorrt.version", "must not be empty")
    _check(t.gpu != "", "tensorrt.gpu", "must not be empty")
    _check(
        t.precision in TRT_PRECISIONS,
        "tensorrt.precision",
        f"is {t.precision!r}, expected one of {TRT_PRECISIONS}",
    )
    _check(t.max_batch >= 1, "tensorrt.max_batch", "must be at least 1")
    for name, path in t.engines.items():
        _check(name in graphs, f"tensorrt.engines[{name!r}]", "names an unknown graph")
        _validate_relpath(path, f"tensorrt.engines[{name!r}]")
    if t.preprocess is not None:
        _validate_relpath(t.preprocess, "tensorrt.preprocess")


# ---- parsing -----------------------------------------------------------------


def _req(d: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(d, dict):
        raise ManifestError(
            f"manifest field {where or 'top level'} must be an object: re-export the model"
        )
    if key not in d:
        raise ManifestError(f"manifest field {_join(where, key)} is missing: re-export the model")
    return _typed(d[key], kind, _join(where, key))


def _opt(d: Any, key: str, kind: type | tuple[type, ...], where: str, default: Any) -> Any:
    if not isinstance(d, dict):
        raise ManifestError(
            f"manifest field {where or 'top level'} must be an object: re-export the model"
        )
    if d.get(key) is None:
        return default
    return _typed(d[key], kind, _join(where, key))


def _typed(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int in Python; a flag where a count belongs is still a mistake
    if isinstance(value, bool) and bool not in kinds:
        ok = False
    elif float in kinds and isinstance(value, int):
        ok = True
    else:
        ok = isinstance(value, kinds)
    if not ok:
        names = " or ".join(k.__name__ for k in kinds)
        raise ManifestError(
            f"manifest field {where} must be {names}, got {value!r}: re-export the model"
        )
    return value


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _list(d: Any, key: str, where: str) -> list[Any]:
    return list(_req(d, key, list, where))


def _tensor(d: Any, where: str) -> TensorSpec:
    shape = _list(d, "shape", where)
    for i, v in enumerate(shape):
        _typed(v, (int, str), f"{where}.shape[{i}]")
    return TensorSpec(_req(d, "name", str, where), shape, _req(d, "dtype", str, where))


def _graph(d: Any, where: str) -> GraphSpec:
    return GraphSpec(
        name=_req(d, "name", str, where),
        file=_req(d, "file", str, where),
        inputs=[
            _tensor(t, f"{where}.inputs[{i}]") for i, t in enumerate(_list(d, "inputs", where))
        ],
        outputs=[
            _tensor(t, f"{where}.outputs[{i}]") for i, t in enumerate(_list(d, "outputs", where))
        ],
    )


def _ints(values: list[Any], where: str) -> list[int]:
    return [_typed(v, int, f"{where}[{i}]") for i, v in enumerate(values)]


def _block(d: Any, where: str) -> BlockSpec:
    variants = []
    for j, v in enumerate(_list(d, "variants", where)):
        vw = f"{where}.variants[{j}]"
        variants.append(
            VariantSpec(_ints(_list(v, "paths", vw), f"{vw}.paths"), _req(v, "graph", str, vw))
        )
    return BlockSpec(
        index=_req(d, "index", int, where),
        stage=_req(d, "stage", int, where),
        num_paths=_req(d, "num_paths", int, where),
        fixed_flops=_req(d, "fixed_flops", int, where),
        variants=variants,
        skip=_opt(d, "skip", str, where, None),
        variant_scheme=_req(d, "variant_scheme", str, where),
    )


def _parse_manifest(data: Any) -> Manifest:
    version = _req(data, "schema_version", int, "")
    if version != SCHEMA_VERSION:
        raise ManifestError(
            f"schema_version {version} is not supported (this budget-edge reads "
            f"{SCHEMA_VERSION}): use the budget-edge version that exported it, or export again"
        )
    backbone = _req(data, "backbone", dict, "")
    pre = _req(data, "preprocessing", dict, "")
    flops = _req(data, "flops", dict, "")
    pre_w = "preprocessing"
    preprocessing = Preprocessing(
        mean=[
            float(_typed(v, float, f"{pre_w}.mean[{i}]"))
            for i, v in enumerate(_list(pre, "mean", pre_w))
        ],
        std=[
            float(_typed(v, float, f"{pre_w}.std[{i}]"))
            for i, v in enumerate(_list(pre, "std", pre_w))
        ],
        input_size=_ints(_list(pre, "input_size", pre_w), f"{pre_w}.input_size"),
        layout=_req(pre, "layout", str, pre_w),
        channels=_req(pre, "channels", int, pre_w),
    )
    components = []
    for k, c in enumerate(_list(data, "components", "")):
        w = f"components[{k}]"
        components.append(
            ComponentSpec(
                _req(c, "index", int, w),
                _req(c, "stage", int, w),
                _req(c, "block", int, w),
                _opt(c, "path", int, w, None),
                _req(c, "flops", int, w),
            )
        )
    hot = []
    for i, h in enumerate(_opt(data, "hot_policies", list, "", [])):
        w = f"hot_policies[{i}]"
        hot.append(HotPolicySpec(_ints(_list(h, "mask", w), f"{w}.mask"), _req(h, "graph", str, w)))
    static = _opt(data, "static_masks", dict, "", None)
    if static is not None:
        masks = [
            StaticMaskSpec(
                _ints(
                    _list(e, "mask", f"static_masks.masks[{i}]"), f"static_masks.masks[{i}].mask"
                ),
                float(_req(e, "accuracy", float, f"static_masks.masks[{i}]")),
            )
            for i, e in enumerate(_list(static, "masks", "static_masks"))
        ]
        static = StaticMasksSpec(_req(static, "source", str, "static_masks"), masks)
    allocation = _opt(data, "allocation", dict, "", None)
    if allocation is not None:
        budgets, prices = (
            [
                float(_typed(v, float, f"allocation.{key}[{i}]"))
                for i, v in enumerate(_list(allocation, key, "allocation"))
            ]
            for key in ("budgets", "prices")
        )
        allocation = AllocationSpec(
            _req(allocation, "source", str, "allocation"),
            budgets,
            prices,
            count_masks=None
            if allocation.get("count_masks") is None
            else [
                _ints(
                    _typed(row, list, f"allocation.count_masks[{i}]"),
                    f"allocation.count_masks[{i}]",
                )
                for i, row in enumerate(_list(allocation, "count_masks", "allocation"))
            ],
        )
    roles = _req(data, "roles", dict, "")
    for role, name in roles.items():
        if name is not None:
            _typed(name, str, f"roles.{role}")
    files = _req(data, "files", dict, "")
    for name, digest in files.items():
        _typed(digest, str, f"files[{name!r}]")
    trt = _opt(data, "tensorrt", dict, "", None)
    precisions = {}
    for precision, spec in _opt(data, "precisions", dict, "", {}).items():
        w = f"precisions[{precision!r}]"
        pfiles = _req(spec, "files", dict, w)
        for name, path in pfiles.items():
            _typed(path, str, f"{w}.files[{name!r}]")
        precisions[precision] = PrecisionSpec(dict(pfiles), dict(_opt(spec, "recipe", dict, w, {})))
    return Manifest(
        schema_version=version,
        backbone=_req(backbone, "name", str, "backbone"),
        backbone_config=dict(_req(backbone, "config", dict, "backbone")),
        num_classes=_req(data, "num_classes", int, ""),
        class_names=[
            _typed(v, str, f"class_names[{i}]")
            for i, v in enumerate(_list(data, "class_names", ""))
        ],
        preprocessing=preprocessing,
        components=components,
        blocks=[_block(b, f"blocks[{i}]") for i, b in enumerate(_list(data, "blocks", ""))],
        graphs=[_graph(g, f"graphs[{i}]") for i, g in enumerate(_list(data, "graphs", ""))],
        roles=dict(roles),
        flops=FlopsSpec(
            _req(flops, "stem", int, "flops"),
            _req(flops, "head", int, "flops"),
            _opt(flops, "policy", int, "flops", None),
            _opt(flops, "allocator", int, "flops", None),
        ),
        versions=dict(_req(data, "versions", dict, "")),
        hot_policies=hot,
        static_masks=static,
        allocation=allocation,
        validation_split=_opt(data, "validation_split", dict, "", None),
        decision_mode=_opt(data, "decision_mode", str, "", None),
        precisions=precisions,
        files=dict(files),
        tensorrt=None if trt is None else _parse_tensorrt(trt),
    )


def _parse_tensorrt(d: Any) -> TensorRTSpec:
    w = "tensorrt"
    engines = _req(d, "engines", dict, w)
    for name, path in engines.items():
        _typed(path, str, f"{w}.engines[{name!r}]")
    return TensorRTSpec(
        version=_req(d, "version", str, w),
        gpu=_req(d, "gpu", str, w),
        precision=_req(d, "precision", str, w),
        max_batch=_req(d, "max_batch", int, w),
        engines=dict(engines),
        compute_capability=_opt(d, "compute_capability", str, w, None),
        preprocess=_opt(d, "preprocess", str, w, None),
    )


# ---- files and hashes --------------------------------------------------------


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, read in 1 MiB chunks (engines can be hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_files(directory: str | os.PathLike[str], manifest: Manifest | None = None) -> Manifest:
    """Check the SHA-256 of every file the manifest lists; return the manifest.

    A missing, truncated or edited file raises ManifestError naming the file.
    """
    manifest = Manifest.load(directory) if manifest is None else manifest
    root = Path(directory)
    for name, digest in manifest.files.items():
        path = artifact_file(root, name)
        if sha256_file(path) != digest:
            raise ManifestError(
                f"{name} in {root} does not match its SHA-256 in the manifest "
                "(corrupted, truncated or edited): copy it again or re-export"
            )
    return manifest


def artifact_file(root: Path, name: str) -> Path:
    """The path of a listed file: a plain file inside the artifact, never a symbolic link
    (one pointing at /etc/hostname was once read and hashed as a graph)."""
    path = root
    linked = False
    for part in Path(name).parts:  # the file and every folder between it and the root
        path = path / part
        linked = linked or path.is_symlink()
    if linked:
        raise ManifestError(
            f"{name} in {root} is a symbolic link: an artifact holds its own "
            "files; copy them in (cp -L) instead of linking"
        )
    if not path.is_file():
        raise ManifestError(
            f"{name} is listed in the manifest but missing from {root}: "
            "copy the whole artifact directory, or export again"
        )
    return path


def read_checked(root: Path, manifest: Manifest, name: str) -> bytes:
    """A listed file's bytes, checked against its SHA-256 as they are read: the bytes that
    run are the bytes that were checked, even if the file changes after loading."""
    data = artifact_file(root, name).read_bytes()
    if hashlib.sha256(data).hexdigest() != manifest.files.get(name):
        raise ManifestError(
            f"{name} in {root} changed since the artifact was loaded (its "
            "SHA-256 no longer matches the manifest): copy it again or "
            "re-export, then load again"
        )
    return data


def write_manifest(directory: str | os.PathLike[str], manifest: Manifest) -> Manifest:
    """Hash every referenced file, validate, and write ``DIR/manifest.json`` atomically.

    Files already in ``manifest.files`` that nothing references (a timing cache,
    say) are hashed again too. Returns the manifest with ``files`` filled in.
    """
    root = Path(directory)
    names = list(dict.fromkeys([*manifest.referenced_files(), *manifest.files]))
    files = {}
    for name in names:
        _validate_relpath(name, f"files[{name!r}]")
        if not (root / name).is_file():
            raise ManifestError(
                f"{name} is named in the manifest but missing from {root}: "
                "write every graph and engine before the manifest"
            )
        files[name] = sha256_file(root / name)
    manifest.files = files
    manifest.validate()
    atomic_write_text(root / MANIFEST_NAME, manifest.to_json())
    return manifest


@contextlib.contextmanager
def artifact_lock(directory: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the artifact's lock while a command rewrites it (quantize, build-engines,
    static masks): two writers would each read the manifest, then the last to write
    would drop the other's entries, and one could delete the other's new folder."""
    path = Path(directory) / LOCK_NAME
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        yield
        return
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ManifestError(
                f"{directory} is being written by another budget-edge "
                "command (quantize or build-engines): wait for it, then run "
                "again"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path`` and rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
