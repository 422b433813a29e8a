"""The artifact manifest (``manifest.json``): the only contract between export and the runtime.

An artifact directory holds ``manifest.json`` and the files it names (ONNX graphs,
TensorRT engines). The structures below declare the format once: msgspec decodes a
manifest into them strictly (every field typed, no unknown field, every count and value
bounded before anything is built from it), and ``docs/manifest.schema.json`` is generated
from them (``python tools/manifest_schema.py``) for loaders written in other languages.
What a schema cannot say (shapes chain from the stem to the head, masks have K entries,
every file is hashed) is checked by the plain functions of runtime/manifest_rules.py;
files, hashes, locks, reading and writing are in runtime/artifact_files.py.

The exporter builds a :class:`Manifest` and writes it with ``write_manifest``; the runtime
reads it with :meth:`Manifest.load` and checks the files with ``verify_files``. Both
sides call :meth:`Manifest.validate`, so a manifest that one side accepts the other
accepts too.
"""

from __future__ import annotations

import json
import os
import re
from types import UnionType
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, Union, get_args, get_origin

import msgspec
from msgspec import Meta

from budget_edge.errors import ConfigError, ManifestError

# Files, hashes, locks, reading and writing live in artifact_files.py; importers find
# them here too.
from budget_edge.runtime.artifact_files import INSIDE, read_manifest_json
from budget_edge.runtime.artifact_files import LOCK_NAME as LOCK_NAME
from budget_edge.runtime.artifact_files import MANIFEST_NAME as MANIFEST_NAME
from budget_edge.runtime.artifact_files import artifact_lock as artifact_lock
from budget_edge.runtime.artifact_files import read_checked as read_checked
from budget_edge.runtime.artifact_files import sha256_file as sha256_file
from budget_edge.runtime.artifact_files import verify_files as verify_files
from budget_edge.runtime.artifact_files import write_manifest as write_manifest

SCHEMA_VERSION: Final = 1
BATCH_AXIS = "batch"
CONTROL_DTYPE = "int64"  # the switch graph's per-block codes: one fixed size, no batch axis
# The enumerations: Literal types for the decoder and the schema, plain str for mypy
# (exporters build specs from strings they read; decoding checks the values).
if TYPE_CHECKING:
    DType = str
    Layout = str
    VariantScheme = str
    Role = str
    Precision = str
    Quantized = str
    DecisionMode = str
else:
    DType = Literal["float32", "float16", "int64"]
    Layout = Literal["NCHW"]
    VariantScheme = Literal["single", "all", "prefix"]
    Role = Literal["stem", "head", "policy", "full", "switch", "allocator"]
    Precision = Literal["fp32", "fp16", "int8"]
    # Graph sets: "fp32" is `graphs` itself; the others are written by `budget-edge quantize`.
    Quantized = Literal["fp16", "int8"]
    DecisionMode = Literal["greedy", "sample", "rank", "allocate"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
QUANTIZED_PRECISIONS: tuple[str, ...] = get_args(Quantized)
# How a budget becomes masks (runtime/masks.py); an artifact names the one it is made for.
DECISION_MODES: tuple[str, ...] = get_args(DecisionMode)

# Every count is bounded while decoding, before anything is built from it: the runtime
# makes (K + 1) x K mask tables and K x blocks code tables at load, and a manifest with
# a billion paths in one block once allocated 22 GB.
MAX_COMPONENTS = 4096
MAX_BLOCKS = 1024
MAX_PATHS = 63  # a block's kept paths are the bits of an int64 code (the switch graph)
MAX_ROW = 1 << 28  # values in one batch row of any tensor (an image, features, logits)
MAX_BATCH = 1 << 16
# FLOPs are summed in int64 per image: keep totals far from its 9.2e18 limit (a real
# model is under 1e13; 4.15e19 once wrapped round to 4.6e18 without a word).
MAX_FLOPS = 1 << 53

Count = Annotated[int, Meta(ge=0)]
Flops = Annotated[int, Meta(ge=0, lt=MAX_FLOPS)]
Name = Annotated[str, Meta(min_length=1)]
Size = Annotated[int, Meta(ge=1, le=MAX_ROW)]
PathIndex = Annotated[int, Meta(ge=0, lt=MAX_PATHS)]
Mask = Annotated[list[Annotated[int, Meta(ge=0, le=1)]], Meta(max_length=MAX_COMPONENTS)]
RelPath = Annotated[str, Meta(pattern=INSIDE, description="a path inside the artifact")]
Sha256 = Annotated[str, Meta(pattern="^[0-9a-f]{64}$", description="a lowercase hex SHA-256")]


class Spec(msgspec.Struct, forbid_unknown_fields=True):
    """A JSON object with exactly these fields (a misspelt field is an error)."""


class TensorSpec(Spec):
    """A graph input or output: the batch axis (a name), then sizes; or an int64 control
    input of one fixed size (the switch graph's codes)."""

    name: Name
    shape: Annotated[list[Size | str], Meta(min_length=1, max_length=8)]  # rank 8 at most
    dtype: DType = "float32"


class GraphSpec(Spec):
    """An ONNX graph file with its inputs and outputs, in call order."""

    name: Name
    file: RelPath
    inputs: Annotated[list[TensorSpec], Meta(min_length=1)]
    outputs: Annotated[list[TensorSpec], Meta(min_length=1)]


class Preprocessing(Spec):
    """How uint8 pixels become the float input: (pixel / 255 - mean) / std per channel."""

    mean: list[Annotated[float, Meta(ge=-1e6, le=1e6)]]
    std: list[Annotated[float, Meta(ge=1e-6, le=1e6)]]  # std 1e-300 made every pixel inf
    input_size: Annotated[list[Size], Meta(min_length=3, max_length=3)]  # (C, H, W)
    layout: Layout = "NCHW"
    channels: Count = 0  # 0: taken from input_size[0]

    def __post_init__(self) -> None:
        if self.channels == 0 and self.input_size:
            self.channels = int(self.input_size[0])


class ComponentSpec(Spec):
    """A droppable component, in mask order: a block (path null) or one path of a block."""

    index: Count
    stage: Count
    block: Count
    path: PathIndex | None
    flops: Flops


class VariantSpec(Spec):
    """The graph that runs a block with exactly these paths kept."""

    paths: Annotated[list[PathIndex], Meta(max_length=MAX_PATHS)]
    graph: str


class BlockSpec(Spec):
    """A residual block: graphs for its kept-path sets ('single': one path; 'all': every
    non-empty subset; 'prefix': paths 0..m-1), the graph for every path dropped (skip;
    null: the identity) and the FLOPs of its shortcut, which always runs."""

    index: Count
    stage: Count
    num_paths: Annotated[int, Meta(ge=1, le=MAX_PATHS)]
    fixed_flops: Flops
    variants: Annotated[list[VariantSpec], Meta(min_length=1)]
    skip: str | None = None
    variant_scheme: VariantScheme = "single"


class HotPolicySpec(Spec):
    """A whole mask exported as one graph (image -> logits)."""

    mask: Mask
    graph: str


class StaticMaskSpec(Spec):
    """A searched static mask (runtime/static_masks.py) and its accuracy where searched."""

    mask: Mask
    accuracy: Annotated[float, Meta(ge=0, le=1)]


class StaticMasksSpec(Spec):
    """The searched static masks, at most one per kept count, and where they were searched."""

    source: str  # e.g. "fashion-mnist train[55000:60000], greedy backward elimination"
    masks: Annotated[list[StaticMaskSpec], Meta(min_length=1, max_length=MAX_COMPONENTS + 1)]


class AllocationSpec(Spec):
    """The allocator's calibrated price per budget (runtime/allocation.py); count_masks
    row k is the mask run with k components (null: rank with the agent per image)."""

    source: str
    budgets: Annotated[list[Annotated[float, Meta(ge=0, le=1)]], Meta(min_length=1)]
    # Finite (JSON has none other, but a Python caller of from_dict could pass inf).
    prices: list[Annotated[float, Meta(ge=0, le=1e30)]]
    count_masks: Annotated[list[Mask], Meta(max_length=MAX_COMPONENTS + 1)] | None = None


class PrecisionSpec(Spec):
    """Every graph again in a lower precision (`budget-edge quantize`), and the recipe."""

    files: dict[str, RelPath]  # graph name -> file
    recipe: dict[str, Any] = {}


class FlopsSpec(Spec):
    """FLOPs (2 x MACs) per image of the parts that are not components."""

    stem: Flops
    head: Flops
    policy: Flops | None = None
    allocator: Flops | None = None  # the allocator graph (agent included without count masks)


class TensorRTSpec(Spec):
    """Engines built by `build-engines`, for the TensorRT and GPU that built them;
    preprocess: uint8 NHWC pixels -> the normalised image, on the GPU."""

    version: Name
    gpu: Name
    precision: Precision
    max_batch: Annotated[int, Meta(ge=1, le=MAX_BATCH)]
    engines: dict[str, RelPath]  # graph name -> engine file
    compute_capability: str | None = None
    preprocess: RelPath | None = None


class ValidationSplit(msgspec.Struct):
    """What `validation_split` records at least (data/split.py); it may hold more."""

    size: Annotated[int, Meta(ge=1)]
    seed: int
    indices_sha256: Sha256


class BackboneSpec(Spec):
    """The network exported: its name and the keyword arguments that build it."""

    name: Name
    config: dict[str, Any]


class Manifest(Spec, kw_only=True):
    """Everything the runtime needs about an artifact directory (schema version 1).

    roles name graphs: stem (image -> features), head (features -> logits), full and
    hot policies (image -> logits), policy ((image, budget) -> (probs, value)), switch
    ((image, int64 codes) -> logits), allocator (image -> chances). What a schema cannot
    say (shapes chain from stem to head, masks have K values, every file is hashed) is
    checked by budget_edge/runtime/manifest_rules.py and described in docs/internals.md."""

    schema_version: Literal[1] = SCHEMA_VERSION
    backbone_spec: BackboneSpec = msgspec.field(name="backbone")
    num_classes: Annotated[int, Meta(ge=1)]
    class_names: list[str]
    preprocessing: Preprocessing
    components: Annotated[list[ComponentSpec], Meta(min_length=1, max_length=MAX_COMPONENTS)]
    blocks: Annotated[list[BlockSpec], Meta(min_length=1, max_length=MAX_BLOCKS)]
    graphs: list[GraphSpec]
    roles: dict[Role, str | None]
    flops: FlopsSpec
    hot_policies: list[HotPolicySpec] = []
    static_masks: StaticMasksSpec | None = None
    allocation: AllocationSpec | None = None
    decision_mode: DecisionMode | None = None  # null: "greedy", what artifacts before it ran
    # the training images the backbone never trained on: a ValidationSplit and more
    validation_split: dict[str, Any] | None = None
    precisions: dict[Quantized, PrecisionSpec] = {}
    versions: dict[str, Any]
    files: dict[RelPath, Sha256] = {}  # every file the manifest names -> its SHA-256
    tensorrt: TensorRTSpec | None = None

    # ---- lookups -------------------------------------------------------------

    @property
    def backbone(self) -> str:
        return self.backbone_spec.name

    @property
    def backbone_config(self) -> dict[str, Any]:
        return self.backbone_spec.config

    @backbone_config.setter
    def backbone_config(self, config: dict[str, Any]) -> None:
        self.backbone_spec.config = config

    @property
    def num_components(self) -> int:
        return len(self.components)

    @property
    def full_flops(self) -> int:
        """FLOPs of the unmasked backbone (policy excluded)."""
        return self.base_flops + sum(c.flops for c in self.components)

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
        graphs = [msgspec.structs.replace(g, file=spec.files[g.name]) for g in self.graphs]
        return msgspec.structs.replace(self, graphs=graphs)

    # ---- reading, writing, checking --------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The manifest as plain JSON values, in file order."""
        data: dict[str, Any] = msgspec.to_builtins(self, enc_hook=_plain)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """Decode a parsed manifest.json; a wrong type or count raises ManifestError
        naming the field."""
        version = decode(data, _Versioned).schema_version
        if version != SCHEMA_VERSION:
            raise ManifestError(
                f"schema_version {version} is not supported (this budget-edge reads "
                f"{SCHEMA_VERSION}): use the budget-edge version that exported it, or export again"
            )
        return decode(data, cls)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Manifest:
        """Read and validate ``DIR/manifest.json`` (file hashes: see ``verify_files``)."""
        manifest = cls.from_dict(read_manifest_json(directory))
        manifest.validate()
        return manifest

    def validate(self) -> None:
        """Check types, bounds and the cross-field rules; raise ManifestError naming the
        first bad field. An exporter's mistake (a numpy int where an int belongs) is
        reported like a corrupt file: the manifest is checked as it would be read."""
        from budget_edge.runtime.manifest_rules import check_rules

        foreign: list[str] = []
        data = msgspec.to_builtins(self, enc_hook=lambda v: _foreign(v, foreign))
        check_rules(Manifest.from_dict(data))
        try:
            json.dumps(data, allow_nan=False)
        except ValueError:
            foreign.append("NaN or infinity")
        if foreign:
            raise ManifestError(
                f"manifest is not plain JSON ({', '.join(foreign)}): "
                "backbone.config and versions must hold only str, int, float, bool, list, dict"
            )


class _Versioned(msgspec.Struct):
    """What is read first, so a future format is named as such, not as a bad field."""

    schema_version: int


def _plain(value: Any) -> Any:
    """A str, int or float subclass (torch's version string, a numpy float) as its plain
    value, as json.dumps writes it; anything else is not JSON."""
    for plain in (str, int, float):
        if isinstance(value, plain):
            return plain(value)
    raise TypeError(f"a {type(value).__module__}.{type(value).__qualname__} is not JSON")


def _foreign(value: Any, seen: list[str]) -> Any:
    """`_plain`, or a stand-in for a value that is not JSON, so decoding names its field."""
    try:
        return _plain(value)
    except TypeError as exc:
        seen.append(str(exc).removesuffix(" is not JSON"))
        return f"<{seen[-1]}>"


def manifest_schema() -> dict[str, Any]:
    """The JSON Schema of manifest.json (docs/manifest.schema.json), made from the
    structures above."""
    schema = msgspec.json.schema(Manifest)
    # A file must carry its version (read first); the default only serves exporters' code.
    schema["$defs"]["Manifest"]["required"].insert(0, "schema_version")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "budget-edge artifact manifest (manifest.json), schema version 1",
        "description": "Generated from budget_edge/runtime/manifest.py by "
        "tools/manifest_schema.py. What a schema cannot say (shapes chain from stem to "
        "head, masks have K values, every file is hashed) is checked by "
        "budget_edge/runtime/manifest_rules.py and described in docs/internals.md.",
        **schema,
    }


# ---- decoding, with errors that name the field -------------------------------------

_STEP = re.compile(r"\.(\w+)|\[(\d+)\]|\[\.\.\.\]")


def decode(data: Any, kind: Any, where: str = "") -> Any:
    """``data`` (parsed JSON, found at field ``where``) as ``kind``, strictly. An error
    is msgspec's, at the field's path with the dict keys that msgspec leaves out, e.g.
    "manifest field blocks[0].num_paths: expected `int` <= 63, got 1000000000"."""
    try:
        return msgspec.convert(data, kind, strict=True)
    except msgspec.ValidationError as exc:
        problem, _, at = str(exc).partition(" - at `")
        where, value, kind = _locate(at.rstrip("`").removeprefix("key` in `"), data, kind, where)
        if at.startswith("key`"):  # a dict key, not its value
            kind = get_args(_bare(kind))[0]
            value = next(k for k in value if not _decodes(k, kind))
            where += f"[{value!r}]"
        for pattern in (RelPath, Sha256):  # a pattern in words
            meta = get_args(pattern)[1]
            problem = problem.replace(f"`str` matching regex {meta.pattern!r}", meta.description)
        if problem.startswith("Invalid enum"):
            problem += f", expected one of {get_args(_bare(kind))}"
        elif problem.startswith("Expected"):  # with the value found, not only its type
            got = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            problem = f"{problem.split(', got')[0]}, got {got}"
        raise ManifestError(
            f"manifest{' field ' + where if where else ''}: {problem[0].lower()}{problem[1:]}: "
            "re-export the model (or fix the exporter that wrote it)"
        ) from None


def _locate(at: str, data: Any, kind: Any, where: str) -> tuple[str, Any, Any]:
    """msgspec's path (``$.precisions[...].files``) as a field path with the dict keys
    that msgspec leaves out (``precisions['int8'].files``), and the value and type there."""
    for step in _STEP.finditer(at):
        kind = _bare(kind)
        if step[1] is not None:  # a field
            kind = next(f.type for f in msgspec.structs.fields(kind) if f.encode_name == step[1])
            key: Any = step[1]
        elif step[2] is not None:  # a list item
            kind, key = get_args(kind)[0], int(step[2])
        else:  # a dict entry: the first whose value does not decode
            kind = get_args(kind)[1]
            key = next(k for k, v in data.items() if not _decodes(v, kind))
        data = data[key]
        where += f".{key}" if step[1] is not None else f"[{key!r}]"
    return where.lstrip("."), data, kind


def _bare(kind: Any) -> Any:
    """The type under Annotated[...] and Optional[...]."""
    while get_origin(kind) in (Annotated, Union, UnionType):
        kind = get_args(kind)[0]  # X | None: every optional field here has one X
    return kind


def _decodes(value: Any, kind: Any) -> bool:
    try:
        msgspec.convert(value, kind, strict=True)
    except msgspec.ValidationError:
        return False
    return True


def check_preprocessing(p: Preprocessing) -> None:
    """The checks `Manifest.validate` applies to preprocessing, for an exporter to run
    before it writes anything."""
    from budget_edge.runtime.manifest_rules import preprocessing_is_usable

    data = msgspec.to_builtins(p, enc_hook=lambda v: _foreign(v, []))
    preprocessing_is_usable(decode(data, Preprocessing, "preprocessing"))
