"""The manifest schema: round trip, validation naming the field, file checksums."""

from __future__ import annotations

import copy
import json
import os
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from budget_edge.errors import ConfigError, ManifestError
from budget_edge.runtime.manifest import (
    MANIFEST_NAME,
    Manifest,
    TensorRTSpec,
    sha256_file,
    verify_files,
    write_manifest,
)
from budget_edge.runtime.manifest_rules import blocks_chain_from_stem_to_head


def _data(path: Path) -> dict[str, Any]:
    return json.loads((path / MANIFEST_NAME).read_text())


def test_round_trip(resnet_artifact: Any) -> None:
    loaded = Manifest.load(resnet_artifact.path)
    assert loaded.to_dict() == resnet_artifact.manifest.to_dict()
    assert loaded.num_components == 3
    assert loaded.graph("stem").file == "stem.onnx"
    assert loaded.role("policy") is not None
    assert loaded.block_components(1) == [1]
    assert loaded.full_flops == loaded.base_flops + sum(c.flops for c in loaded.components)
    assert loaded.blocks[1].fixed_flops > 0  # the 1x1 shortcut conv
    assert loaded.blocks[0].skip is None
    assert loaded.blocks[1].skip == "block1_skip"


def test_resnext_variants(resnext_artifact: Any) -> None:
    m = Manifest.load(resnext_artifact.path)
    assert [b.variant_scheme for b in m.blocks] == ["all", "prefix", "single"]
    assert len(m.blocks[0].variants) == 7  # 2^3 - 1 path subsets
    assert [v.paths for v in m.blocks[1].variants] == [
        [0],
        [0, 1],
        [0, 1, 2],
        [0, 1, 2, 3],
        [0, 1, 2, 3, 4],
    ]
    assert m.num_components == 3 + 5 + 1


def test_every_file_hashed(resnet_artifact: Any) -> None:
    m = resnet_artifact.manifest
    assert set(m.files) == {g.file for g in m.graphs}
    for name, digest in m.files.items():
        assert sha256_file(resnet_artifact.path / name) == digest
    assert verify_files(resnet_artifact.path).files == m.files


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation that sets a dotted path (list indices as numbers) in the manifest dict."""

    def mutate(d: Any) -> None:
        keys: list[Any] = [int(k) if k.isdigit() else k for k in path.split(".")]
        for k in keys[:-1]:
            d = d[k]
        if value is _DELETE:
            del d[keys[-1]]
        else:
            d[keys[-1]] = value

    return mutate


_DELETE = object()

BAD_FIELDS = [
    ("schema_version", _set("schema_version", 2), "schema_version"),
    ("missing num_classes", _set("num_classes", _DELETE), "num_classes"),
    ("class names", _set("class_names", ["a"]), "class_names"),
    ("string flops", _set("components.0.flops", "many"), "components[0].flops"),
    ("bool as int", _set("blocks.0.num_paths", True), "blocks[0].num_paths"),
    ("component order", _set("components.1.index", 2), "components[1].index"),
    ("component block", _set("components.0.block", 7), "components[0].block"),
    ("component stage", _set("components.0.stage", 3), "components[0].stage"),
    ("layout", _set("preprocessing.layout", "NHWC"), "preprocessing.layout"),
    ("mean length", _set("preprocessing.mean", [0.5]), "preprocessing.mean"),
    ("std zero", _set("preprocessing.std", [1.0, 0.0, 1.0]), "preprocessing.std"),
    ("channels", _set("preprocessing.channels", 1), "preprocessing.channels"),
    ("input size", _set("preprocessing.input_size", [3, 8]), "preprocessing.input_size"),
    ("no batch axis", _set("graphs.0.inputs.0.shape", [1, 3, 8, 8]), "graphs[0].inputs[0].shape"),
    ("dtype", _set("graphs.0.outputs.0.dtype", "int8"), "graphs[0].outputs[0].dtype"),
    ("absolute file", _set("graphs.0.file", "/etc/passwd"), "graphs[0].file"),
    ("escaping file", _set("graphs.0.file", "../stem.onnx"), "graphs[0].file"),
    ("unknown variant graph", _set("blocks.0.variants.0.graph", "nope"), "blocks[0].variants[0]"),
    ("variant paths", _set("blocks.0.variants.0.paths", [1]), "blocks[0].variants"),
    ("scheme", _set("blocks.0.variant_scheme", "all"), "blocks[0].variant_scheme"),
    ("identity skip on downsample", _set("blocks.1.skip", None), "blocks[1].skip"),
    ("unknown skip", _set("blocks.1.skip", "nope"), "blocks[1].skip"),
    ("missing stem role", _set("roles.stem", None), "roles.stem"),
    ("unknown role", _set("roles.extra", "stem"), "roles['extra']"),
    ("policy flops", _set("flops.policy", None), "flops.policy"),
    ("bad hash", lambda d: d["files"].update({"stem.onnx": "abc"}), "files['stem.onnx']"),
    ("hash missing", _set("files", {}), "files"),
    ("missing opset", _set("versions.opset", _DELETE), "versions.opset"),
    ("hot mask", _set("hot_policies", [{"mask": [1, 2, 0], "graph": "full"}]), "hot_policies[0]"),
    (
        "trt precision",
        _set(
            "tensorrt",
            {"version": "10.3", "gpu": "Orin", "precision": "fp8", "max_batch": 8, "engines": {}},
        ),
        "tensorrt.precision",
    ),
    (
        "trt engine graph",
        _set(
            "tensorrt",
            {
                "version": "10.3",
                "gpu": "Orin",
                "precision": "fp16",
                "max_batch": 8,
                "engines": {"nope": "x.engine"},
            },
        ),
        "tensorrt.engines",
    ),
    ("not an object", _set("blocks.0", 3), "blocks[0]"),
    ("tiny std", _set("preprocessing.std", [1e-300, 0.2, 0.3]), "preprocessing.std"),
    ("huge mean", _set("preprocessing.mean", [1e300, 0.4, 0.3]), "preprocessing.mean"),
    ("flops past int64", _set("components.0.flops", 41_500_000_000_000_000_000), "flops"),
    ("negative component flops", _set("components.0.flops", -5), "components"),
    ("unknown precision", lambda d: _precision(d, "int4"), "precisions['int4']"),
    ("fp32 is not a set", lambda d: _precision(d, "fp32"), "precisions['fp32']"),
    ("precision misses a graph", lambda d: _precision(d, drop="head"), "precisions['int8'].files"),
    (
        "precision reuses an fp32 file",
        lambda d: _precision(d, stem="stem.onnx"),
        "precisions['int8'].files['stem']",
    ),
    (
        "precision file escapes",
        lambda d: _precision(d, stem="../stem.onnx"),
        "precisions['int8'].files['stem']",
    ),
    (
        "precision files not an object",
        _set("precisions", {"int8": {"files": []}}),
        "precisions['int8'].files",
    ),
    ("precision file unhashed", lambda d: _precision(d), "files"),
]


def _precision(
    d: dict[str, Any], key: str = "int8", drop: str | None = None, stem: str | None = None
) -> None:
    files = {
        g["name"]: f"quantized/{key}/{g['name']}.onnx" for g in d["graphs"] if g["name"] != drop
    }
    if stem is not None:
        files["stem"] = stem
    d["precisions"] = {key: {"files": files, "recipe": {}}}


@pytest.mark.parametrize("case,mutate,field", BAD_FIELDS, ids=[c[0] for c in BAD_FIELDS])
def test_invalid_field_is_named(
    resnet_artifact: Any, case: str, mutate: Callable[[dict[str, Any]], None], field: str
) -> None:
    data = copy.deepcopy(_data(resnet_artifact.path))
    mutate(data)
    with pytest.raises(ManifestError, match=field.replace("[", r"\[").replace(".", r"\.")):
        m = Manifest.from_dict(data)
        m.validate()


def test_shape_chain_checked(resnet_artifact: Any) -> None:
    data = _data(resnet_artifact.path)
    head = next(g for g in data["graphs"] if g["name"] == "head")
    head["inputs"][0]["shape"] = ["batch", 5, 4, 4]
    with pytest.raises(ManifestError, match="roles.head"):
        Manifest.from_dict(data).validate()


def test_multipath_block_needs_skip_graph(resnext_artifact: Any) -> None:
    data = _data(resnext_artifact.path)
    data["blocks"][0]["skip"] = None
    with pytest.raises(ManifestError, match=r"blocks\[0\]\.skip.*multi-path"):
        Manifest.from_dict(data).validate()


def test_hot_mask_must_be_runnable(resnext_artifact: Any) -> None:
    data = _data(resnext_artifact.path)
    mask = [1] * 9
    mask[3] = 0  # block 1 ('prefix') without its path 0
    data["hot_policies"] = [{"mask": mask, "graph": "full"}]
    with pytest.raises(ManifestError, match=r"hot_policies\[0\]\.mask.*non-prefix"):
        Manifest.from_dict(data).validate()
    mask[3], mask[7] = 1, 0  # paths 0..3 of block 1: a prefix
    Manifest.from_dict(data).validate()


def test_prefix_needs_equal_path_flops(resnext_artifact: Any) -> None:
    data = _data(resnext_artifact.path)
    data["components"][3]["flops"] += 1  # block 1, path 0
    with pytest.raises(ManifestError, match="same FLOPs"):
        Manifest.from_dict(data).validate()


def test_numpy_values_from_an_exporter_are_named(resnet_artifact: Any) -> None:
    m = copy.deepcopy(resnet_artifact.manifest)
    m.components[2].flops = np.int64(5)  # type: ignore[assignment]
    with pytest.raises(ManifestError, match=r"components\[2\]\.flops"):
        m.validate()
    m = copy.deepcopy(resnet_artifact.manifest)
    m.backbone_config = {"weights": np.zeros(2)}
    with pytest.raises(ManifestError, match="plain JSON"):
        m.validate()


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="does not exist"):
        Manifest.load(tmp_path / "nope")
    with pytest.raises(ManifestError, match="manifest.json is missing"):
        Manifest.load(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        Manifest.load(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(ManifestError, match="nests JSON too deeply"):
        Manifest.load(tmp_path)  # a RecursionError otherwise
    (tmp_path / MANIFEST_NAME).write_text("[1, 2]")
    with pytest.raises(ManifestError, match="manifest: expected `object`, got"):
        Manifest.load(tmp_path)


@pytest.mark.parametrize("damage", ["missing", "truncated", "edited"])
def test_verify_files_names_the_file(fresh_artifact: Any, damage: str) -> None:
    target = fresh_artifact.path / "block1_p0.onnx"
    data = target.read_bytes()
    if damage == "missing":
        target.unlink()
    elif damage == "truncated":
        target.write_bytes(data[: len(data) // 2])
    else:
        edited = bytearray(data)
        edited[-1] ^= 0x01
        target.write_bytes(bytes(edited))
    expected = "missing" if damage == "missing" else "does not match its SHA-256"
    with pytest.raises(ManifestError, match=f"block1_p0.onnx.*{expected}"):
        verify_files(fresh_artifact.path)


def test_write_manifest_hashes_extra_files_and_engines(fresh_artifact: Any) -> None:
    root = fresh_artifact.path
    (root / "engines").mkdir()
    (root / "engines" / "stem.engine").write_bytes(b"engine bytes")
    (root / "timing.cache").write_bytes(b"cache")
    m = msgspec.structs.replace(
        fresh_artifact.manifest,
        tensorrt=TensorRTSpec("10.3.0", "Orin", "fp16", 8, {"stem": "engines/stem.engine"}, "8.7"),
        files={**fresh_artifact.manifest.files, "timing.cache": "0" * 64},
    )
    written = write_manifest(root, m)
    assert written.files["engines/stem.engine"] == sha256_file(root / "engines" / "stem.engine")
    assert written.files["timing.cache"] == sha256_file(root / "timing.cache")
    loaded = verify_files(root)
    assert loaded.tensorrt == m.tensorrt
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]


def test_write_manifest_refuses_missing_file(fresh_artifact: Any) -> None:
    (fresh_artifact.path / "head.onnx").unlink()
    with pytest.raises(ManifestError, match="head.onnx.*missing"):
        write_manifest(fresh_artifact.path, fresh_artifact.manifest)


def test_static_masks_are_validated(tmp_path: Path) -> None:
    from budget_edge.runtime.manifest import StaticMaskSpec, StaticMasksSpec

    from .conftest import make_net, write_artifact

    write_artifact(make_net("resnet"), tmp_path)
    m = Manifest.load(tmp_path)
    k = m.num_components
    good = StaticMasksSpec(
        "train tail", [StaticMaskSpec([1] * k, 0.9), StaticMaskSpec([1] + [0] * (k - 1), 0.5)]
    )
    m.static_masks = good
    m.validate()
    assert Manifest.from_dict(json.loads(m.to_json())).static_masks == good
    for masks, match in (
        ([StaticMaskSpec([1] * (k + 1), 0.9)], "values of 0 or 1"),
        ([StaticMaskSpec([1] * k, 0.9), StaticMaskSpec([1] * k, 0.8)], "like an earlier mask"),
        ([StaticMaskSpec([1] * k, 1.5)], r"accuracy: expected `float` <= 1\.0, got 1\.5"),
        ([], "static_masks.masks: expected `array` of length >= 1"),
    ):
        m.static_masks = StaticMasksSpec("x", masks)
        with pytest.raises(ManifestError, match=match):
            m.validate()


def test_for_precision_swaps_the_graph_files(resnet_artifact: Any) -> None:
    data = copy.deepcopy(_data(resnet_artifact.path))
    _precision(data)
    for name in data["precisions"]["int8"]["files"].values():
        data["files"][name] = "0" * 64
    m = Manifest.from_dict(data)
    m.validate()
    assert m.available_precisions == ["fp32", "int8"]
    int8 = m.for_precision("int8")
    assert int8.graph("stem").file == "quantized/int8/stem.onnx"
    assert m.graph("stem").file == "stem.onnx"  # the original is not changed
    assert m.for_precision("fp32") is m
    with pytest.raises(
        ConfigError,
        match="no fp16 graphs .*it has fp32, int8.*budget-edge quantize DIR --precision fp16",
    ):
        m.for_precision("fp16")
    with pytest.raises(ConfigError, match="precision 'bf16' is not one of"):
        m.for_precision("bf16")


def test_the_validation_split_is_recorded_and_validated(resnet_artifact: Any) -> None:
    m = Manifest.load(resnet_artifact.path)
    good = {"size": 5000, "seed": 3, "indices_sha256": "ab" * 32}
    m.validation_split = good
    m.validate()
    assert Manifest.from_dict(json.loads(m.to_json())).validation_split == good
    for change, match in (
        ({"size": 0}, "validation_split.size"),
        ({"size": True}, "validation_split.size"),
        ({"seed": "3"}, "validation_split.seed"),
        ({"indices_sha256": "AB" * 32}, "validation_split.indices_sha256"),
    ):
        m.validation_split = {**good, **change}
        with pytest.raises(ManifestError, match=match):
            m.validate()


# ---- every count bounded before anything is built from it (issue 25.5) ----------------

BIG = 10**9

BOUNDED = [
    (
        lambda d: d["blocks"][0].update(num_paths=BIG),
        r"blocks\[0\]\.num_paths: expected `int` <= 63",
    ),
    (
        lambda d: d["preprocessing"].update(input_size=[3, BIG, BIG]),
        r"preprocessing\.input_size\[1\]: expected `int` <=",
    ),
    (
        lambda d: d["preprocessing"].update(input_size=[3, 2**14, 2**14]),
        r"preprocessing\.input_size is over",
    ),
    (
        lambda d: d["graphs"][1]["outputs"][0].update(shape=["batch", 2**15, 2**15, 1]),
        r"graphs\[1\]\.outputs\[0\]\.shape is too large",
    ),
    (
        lambda d: d["graphs"][1]["outputs"][0].update(shape=["batch"] + [1] * 9),
        r"graphs\[1\]\.outputs\[0\]\.shape: expected `array` of length <= 8",
    ),
    (
        lambda d: d.update(components=d["components"] * 1400),
        r"components: expected `array` of length <= 4096",
    ),
    (
        lambda d: d.update(hot_policies=[{"mask": [1] * 5000, "graph": "full"}]),
        r"hot_policies\[0\]\.mask: expected `array` of length <= 4096",
    ),
    (
        lambda d: d.update(
            tensorrt={
                "version": "10.3",
                "gpu": "Orin",
                "precision": "fp16",
                "max_batch": BIG,
                "engines": {},
            }
        ),
        r"tensorrt\.max_batch: expected `int` <= 65536",
    ),
    (lambda d: d["components"][0].update(block=BIG), r"components\[0\]\.block 1000000000 is not"),
]


@pytest.mark.parametrize("edit, message", BOUNDED)
def test_counts_are_bounded_before_anything_is_built(
    fresh_artifact: Any, edit: Any, message: str
) -> None:
    """The runtime builds tables from these numbers at load: each is refused first, with
    the field named and next to no memory used (a billion paths once took 22 GB)."""
    from budget_edge.runtime import BudgetRuntime

    data = _data(fresh_artifact.path)
    edit(data)
    (fresh_artifact.path / MANIFEST_NAME).write_text(json.dumps(data))
    tracemalloc.start()
    try:
        with pytest.raises(ManifestError, match=message):
            BudgetRuntime.load(fresh_artifact.path, backend="onnxruntime")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20


def test_path_sets_are_counted_before_they_are_listed(resnext_artifact: Any) -> None:
    """Block 0 ('all') claims 40 paths, with a component each: 2**40 - 1 path sets would
    be listed to compare with its 7 variants; their count is compared first."""
    data = _data(resnext_artifact.path)
    extra = [{"index": 0, "stage": 0, "block": 0, "path": p, "flops": 10} for p in range(40)]
    data["components"] = extra + data["components"][3:]
    for k, c in enumerate(data["components"]):
        c["index"] = k
    data["blocks"][0]["num_paths"] = 40
    with pytest.raises(ManifestError, match=r"blocks\[0\]\.variants are not the path sets"):
        blocks_chain_from_stem_to_head(Manifest.from_dict(data))


def test_a_huge_or_blocking_manifest_is_refused_unread(tmp_path: Path) -> None:
    """A 2 GiB manifest.json is refused by its size before a byte is read; a FIFO is
    refused without waiting for a writer."""
    with open(tmp_path / MANIFEST_NAME, "wb") as f:
        f.truncate(2 * 2**30)  # sparse: no disk used
    with pytest.raises(ManifestError, match=r"is 2\.0 GiB, more than the 16\.0 MiB"):
        Manifest.load(tmp_path)
    (tmp_path / MANIFEST_NAME).unlink()
    os.mkfifo(tmp_path / MANIFEST_NAME)
    with pytest.raises(ManifestError, match="not a regular file"):
        Manifest.load(tmp_path)


def test_unknown_fields_are_refused(resnet_artifact: Any) -> None:
    """Strict decoding: a misspelt field is named, not silently given its default."""
    data = _data(resnet_artifact.path)
    data["blocks"][0]["skp"] = None
    with pytest.raises(ManifestError, match=r"blocks\[0\]: object contains unknown field `skp`"):
        Manifest.from_dict(data)
    data = _data(resnet_artifact.path)
    data["files"]["../outside.onnx"] = "0" * 64
    with pytest.raises(
        ManifestError,
        match=r"files\['\.\./outside\.onnx'\]: expected a path inside the artifact",
    ):
        Manifest.from_dict(data)
