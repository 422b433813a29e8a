"""`budget-edge quantize`: add an fp16 or int8 graph set to an exported artifact.

Every graph of the artifact (stem, block variants and skips, head, policy,
full, hot policies) is written again in the new precision under the same name,
with fp32 inputs and outputs, so the runtime dispatches it exactly like the
fp32 set (`BudgetRuntime.load(DIR, precision="int8")`). The fp32 set stays.

- fp16: ONNX Runtime's float16 converter (`onnxruntime.transformers.float16`),
  weights and compute in half precision, graph inputs and outputs kept fp32
  (`keep_io_types`), its default list of ops kept in fp32.
- int8: explicit quantization, `onnxruntime.quantization.quantize_static` in
  QDQ format (QuantizeLinear/DequantizeLinear pairs that TensorRT and ONNX
  Runtime both read), int8 weights per output channel, symmetric; every graph
  calibrated on the inputs it receives on the paths the policy takes
  (path_calibration.py), from the training split. The activation type
  depends on the target, chosen by measurement (benchmarks/results/quantize/):
  "cpu" takes uint8 asymmetric activations (ONNX Runtime's u8s8 kernels;
  symmetric int8 activations ran slower than fp32 on the dev Xeon), and
  "tensorrt" takes int8 symmetric activations (TensorRT reads only symmetric
  int8 Q/DQ) and leaves biases in fp32 (TensorRT's Dequantize reads no int32).
- The switch graph is composed again from the new stem, block and head graphs
  (switch_graph.py), so it runs exactly their operators.

Nothing half-written: the graphs go to a fresh folder
`quantized/<precision>-<token>/` in the artifact and are each loaded by ONNX
Runtime; only then is the manifest rewritten (atomically) to point at them,
and after that the set they replace is deleted. A crash at any step leaves a
manifest that matches its files; a folder it left behind is removed by the
next quantize. numpy, onnx and onnxruntime; no torch.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from budget_edge.errors import BackendError, BudgetEdgeError, ConfigError
from budget_edge.export.path_calibration import (
    DEFAULT_BUDGETS,
    DEFAULT_MAX_ROWS,
    GraphFeeds,
    record_graph_inputs,
)
from budget_edge.runtime.manifest import (
    QUANTIZED_PRECISIONS,
    Manifest,
    PrecisionSpec,
    artifact_lock,
    verify_files,
    write_manifest,
)

QUANTIZED_DIR = "quantized"
TARGETS = ("cpu", "tensorrt")
ACTIVATION_TYPES = ("auto", "u8", "s8")
CALIBRATE_METHODS = ("minmax", "percentile", "entropy")
DEFAULT_CALIB_IMAGES = 512
# Activations per target when --activation-type is auto (see the module docstring).
TARGET_ACTIVATIONS = {"cpu": "u8", "tensorrt": "s8"}
FEED_BATCH = 64

Progress = Callable[[str], None]


@dataclass
class QuantizeSettings:
    """How to make the graph set; `calib_data` names the training split (int8 only)."""

    precision: str
    calib_data: str | None = None
    calib_images: int = DEFAULT_CALIB_IMAGES
    budgets: Sequence[float] = DEFAULT_BUDGETS
    target: str = "cpu"
    activation_type: str = "auto"
    calibrate_method: str = "minmax"
    max_rows: int = DEFAULT_MAX_ROWS
    seed: int = 0
    threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self, has_images: bool = False) -> None:
        """Raise ConfigError on a bad setting (has_images: calibration images are given
        as an array, so calib_data is not needed)."""
        if self.precision not in QUANTIZED_PRECISIONS:
            raise ConfigError(
                f"precision {self.precision!r} is not one of "
                f"{', '.join(QUANTIZED_PRECISIONS)} (fp32 is the exported set)"
            )
        if self.target not in TARGETS:
            raise ConfigError(f"target {self.target!r} is not one of {', '.join(TARGETS)}")
        if self.activation_type not in ACTIVATION_TYPES:
            raise ConfigError(
                f"activation type {self.activation_type!r} is not one of "
                f"{', '.join(ACTIVATION_TYPES)}"
            )
        if self.calibrate_method not in CALIBRATE_METHODS:
            raise ConfigError(
                f"calibration method {self.calibrate_method!r} is not one of "
                f"{', '.join(CALIBRATE_METHODS)}"
            )
        if self.precision == "int8" and not self.calib_data and not has_images:
            raise ConfigError(
                "int8 needs calibration images: pass --calib-data with the "
                "training dataset, e.g. --calib-data fashion-mnist"
            )
        if self.calib_images < 1 or self.max_rows < 1:
            raise ConfigError(
                f"--calib-images and max rows must be at least 1 (got "
                f"{self.calib_images}, {self.max_rows})"
            )
        bad = [c for c in self.budgets if not 0.0 <= c <= 1.0]
        if not self.budgets or bad:
            raise ConfigError(
                f"calibration budgets must be a non-empty list in [0, 1], got {list(self.budgets)}"
            )
        if self.target == "tensorrt" and self.activation_type == "u8":
            raise ConfigError(
                "TensorRT reads only symmetric int8 Q/DQ: use "
                "--activation-type s8 (or auto) with --target tensorrt"
            )

    @property
    def activations(self) -> str:
        if self.activation_type == "auto":
            return TARGET_ACTIVATIONS[self.target]
        return self.activation_type


def quantize_artifact(
    directory: str | Path,
    settings: QuantizeSettings,
    progress: Progress | None = None,
    images: np.ndarray | None = None,
) -> Manifest:
    """Add (or replace) the `settings.precision` graph set of the artifact; see the module
    docstring. images: int8 calibration images (uint8 NHWC pixels or preprocessed
    float32 NCHW) instead of reading `settings.calib_data`. Returns the manifest."""
    settings.check(has_images=images is not None)
    root = Path(directory)
    Manifest.load(root)  # a clear error for a missing or broken artifact, before the lock
    with artifact_lock(root):
        return _quantize(root, settings, progress or (lambda _msg: None), images)


def _quantize(
    root: Path, settings: QuantizeSettings, say: Progress, images: np.ndarray | None
) -> Manifest:
    manifest = verify_files(root)  # quantizing graphs that changed would hide the change
    onnx, ort = _import_tools()
    _remove_orphans(root, manifest)
    token = secrets.token_hex(4)
    rel_dir = f"{QUANTIZED_DIR}/{settings.precision}-{token}"
    out_dir = root / rel_dir
    try:
        out_dir.mkdir(parents=True)
    except OSError as exc:
        raise BackendError(
            f"cannot write {out_dir} ({exc.strerror}): quantize needs a writable artifact directory"
        ) from exc
    try:
        if settings.precision == "fp16":
            models, recipe = _fp16_set(manifest, root, say)
        else:
            models, recipe = _int8_set(manifest, root, settings, out_dir, say, images)
        switch = manifest.roles.get("switch")
        if switch is not None:
            from budget_edge.export.switch_graph import switch_graph

            models[switch] = switch_graph(
                models,
                manifest.blocks,
                stem=str(manifest.roles["stem"]),
                head=str(manifest.roles["head"]),
            )
            recipe["switch"] = "composed from this set's stem, block and head graphs"
        files = {}
        for g in manifest.graphs:
            path = out_dir / Path(g.file).name
            _save(onnx, models[g.name], path)
            _check_loads(ort, path, g.name)
            files[g.name] = f"{rel_dir}/{path.name}"
        old = manifest.precisions.get(settings.precision)
        if old is not None:  # write_manifest keeps hashing listed files: unlist the old set
            gone = set(old.files.values())
            manifest.files = {k: v for k, v in manifest.files.items() if k not in gone}
        manifest.precisions[settings.precision] = PrecisionSpec(files, recipe)
        _drop_stale_engines(manifest, settings.precision)
        manifest = write_manifest(root, manifest)
    except BudgetEdgeError:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    except Exception as exc:  # the converter's or quantizer's own errors: one line
        shutil.rmtree(out_dir, ignore_errors=True)
        raise BackendError(
            f"quantizing to {settings.precision} failed ({type(exc).__name__}: "
            f"{exc}); the artifact is unchanged"
        ) from exc
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    if old is not None:  # the manifest no longer names them
        for folder in {Path(f).parent for f in old.files.values()}:
            if folder != Path(rel_dir):
                shutil.rmtree(root / folder, ignore_errors=True)
    return manifest


def _drop_stale_engines(manifest: Manifest, precision: str) -> None:
    """TensorRT engines built from the set being replaced no longer match it: unlist them
    (build-engines makes them again from the new graphs)."""
    trt = manifest.tensorrt
    if trt is not None and trt.precision == precision:
        stale = set(trt.engines.values()) | {trt.preprocess}
        manifest.files = {k: v for k, v in manifest.files.items() if k not in stale}
        manifest.tensorrt = None


def set_sizes(manifest: Manifest, directory: str | Path) -> dict[str, int]:
    """Bytes on disk of each precision's graph files (the switch graph included)."""
    root = Path(directory)
    sizes = {"fp32": sum((root / g.file).stat().st_size for g in manifest.graphs)}
    for precision, spec in manifest.precisions.items():
        sizes[precision] = sum((root / f).stat().st_size for f in spec.files.values())
    return sizes


# ---- fp16 --------------------------------------------------------------------------


def _fp16_set(
    manifest: Manifest, root: Path, say: Progress
) -> tuple[dict[str, Any], dict[str, Any]]:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    models = {}
    for g in _own_graphs(manifest):
        say(f"fp16: {g.name}")
        model = onnx.load(str(root / g.file))
        models[g.name] = _sorted_nodes(convert_float_to_float16(model, keep_io_types=True))
    recipe = {
        "tool": "onnxruntime.transformers.float16.convert_float_to_float16",
        "onnxruntime": _ort_version(),
        "keep_io_types": True,
        "op_block_list": "onnxruntime default (ops kept in fp32)",
    }
    return models, recipe


def _sorted_nodes(model: Any) -> Any:
    """The converter appends the Cast nodes of fp32 inputs after their readers; ONNX
    wants every node after the nodes that feed it (onnx.checker rejects the model)."""
    graph = model.graph
    ready = {t.name for t in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise BackendError("the fp16 converter wrote a graph with a cycle: report it")
        pending = rest
    copies = [type(n)() for n in ordered]
    for copy, node in zip(copies, ordered, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)
    return model


# ---- int8 --------------------------------------------------------------------------


def _int8_set(
    manifest: Manifest,
    root: Path,
    s: QuantizeSettings,
    work: Path,
    say: Progress,
    images: np.ndarray | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    import onnx

    from budget_edge.export.calibration import calibration_images

    if images is None:
        assert s.calib_data is not None
        pre = manifest.preprocessing
        say(f"reading {s.calib_images} calibration images from {s.calib_data} (training split)")
        images = calibration_images(
            s.calib_data, pre.mean, pre.std, pre.input_size, count=s.calib_images, seed=s.seed
        )
    recorded = record_graph_inputs(
        root, manifest, images, s.budgets, s.max_rows, s.threads, s.seed, say
    )
    models = {}
    with tempfile.TemporaryDirectory(dir=work, prefix=".work-") as tmp:
        for g in _own_graphs(manifest):
            if g.name == manifest.roles.get("allocator"):
                # Its counts hinge on small differences between chances, as the policy's
                # decisions on its last layers; at 2 % of the backbone it stays fp32.
                models[g.name] = onnx.load(str(root / g.file))
                continue
            say(f"int8: {g.name} ({recorded.rows[g.name]} calibration rows)")
            out = Path(tmp) / f"{g.name}.onnx"
            # The policy's decision layers stay fp32 (see _decision_nodes).
            keep = [t.name for t in g.inputs[1:]] if g.name == manifest.roles.get("policy") else []
            _quantize_graph(
                root / g.file,
                out,
                [t.name for t in g.inputs],
                recorded.feeds[g.name],
                s,
                Path(tmp),
                keep_fp32_after=keep,
            )
            models[g.name] = onnx.load(str(out))
    return models, _int8_recipe(s, len(images), recorded)


def _quantize_graph(
    src: Path,
    dst: Path,
    input_names: list[str],
    feeds: list[np.ndarray],
    s: QuantizeSettings,
    tmp: Path,
    keep_fp32_after: Sequence[str] = (),
) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = tmp / f"{src.stem}.pre.onnx"
    quant_pre_process(str(src), str(prepared))  # shape inference and ORT's basic fusions
    exclude = _decision_nodes(onnx.load(str(prepared)), keep_fp32_after)
    symmetric = s.activations == "s8"
    method = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[s.calibrate_method]
    quantize_static(
        str(prepared),
        str(dst),
        _FeedReader(input_names, feeds),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=method,
        nodes_to_exclude=exclude,
        extra_options={
            "ActivationSymmetric": symmetric,
            "WeightSymmetric": True,
            # TensorRT's Dequantize reads int8/fp8 only: an int32 bias would make its
            # parser refuse the graph (export/qdq_check.py). CPU kernels fuse int32 biases.
            "QuantizeBias": s.target != "tensorrt",
            **s.extra,
        },
    )


def _decision_nodes(model: Any, inputs: Sequence[str]) -> list[str]:
    """Names of the nodes downstream of these graph inputs.

    The policy concatenates its image features with the budget: quantized, the
    budget would share the features' scale (steps of ~0.04 on the dev model)
    and probabilities near the 0.5 threshold flip. Measured on the trained
    ResNet-20 at c = 0.5: usage 0.404 -> 0.370 and accuracy -0.57 points with
    the whole policy in int8, unchanged with these few small layers in fp32.
    """
    reached = set(inputs)
    names = []
    for node in model.graph.node:  # topological order
        if any(name in reached for name in node.input):
            reached.update(node.output)
            names.append(node.name)
    return names


class _FeedReader:
    """onnxruntime.quantization's CalibrationDataReader over recorded inputs."""

    def __init__(self, names: list[str], feeds: list[np.ndarray]) -> None:
        self.names = names
        self.feeds = feeds
        self._it = self._batches()

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(self.feeds[0]), FEED_BATCH):
            yield {
                n: np.ascontiguousarray(f[start : start + FEED_BATCH])
                for n, f in zip(self.names, self.feeds, strict=True)
            }

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = self._batches()


def _int8_recipe(s: QuantizeSettings, images: int, recorded: GraphFeeds) -> dict[str, Any]:
    symmetric = s.activations == "s8"
    return {
        "tool": "onnxruntime.quantization.quantize_static",
        "onnxruntime": _ort_version(),
        "format": "QDQ",
        "weights": "int8, per output channel, symmetric",
        "activations": "int8 symmetric" if symmetric else "uint8 asymmetric",
        "target": s.target,
        "calibrate_method": s.calibrate_method,
        "calibration": {
            "data": (
                f"{s.calib_data} training split, {images} images (seed {s.seed})"
                if s.calib_data
                else f"{images} images given as an array"
            ),
            "passes": recorded.passes,
            "max_rows_per_graph": s.max_rows,
            "rows": recorded.rows,
        },
        **({"extra_options": s.extra} if s.extra else {}),
    }


# ---- files ----------------------------------------------------------------------------


def _own_graphs(manifest: Manifest) -> list[Any]:
    """Every graph but the switch graph, which is composed from the others."""
    switch = manifest.roles.get("switch")
    return [g for g in manifest.graphs if g.name != switch]


def _import_tools() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
        import onnxruntime.quantization  # noqa: F401
    except ImportError as exc:
        raise BackendError(
            f"quantize needs onnx and onnxruntime ({exc}): pip install 'budget-edge[ort,export]'"
        ) from exc
    return onnx, onnxruntime


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def _save(onnx: Any, model: Any, path: Path) -> None:
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


def _check_loads(ort: Any, path: Path, name: str) -> None:
    """A graph ONNX Runtime cannot load must fail here, not on the device."""
    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise BackendError(
            f"the quantized graph {name!r} does not load in ONNX Runtime "
            f"({exc}); the artifact is unchanged"
        ) from exc


def _remove_orphans(root: Path, manifest: Manifest) -> None:
    """Folders under quantized/ that the manifest does not name: left by a crash."""
    folder = root / QUANTIZED_DIR
    if not folder.is_dir():
        return
    named = {
        Path(f).parts[1]
        for spec in manifest.precisions.values()
        for f in spec.files.values()
        if Path(f).parts[:1] == (QUANTIZED_DIR,)
    }
    for child in folder.iterdir():
        if child.is_dir() and child.name not in named:
            shutil.rmtree(child, ignore_errors=True)
