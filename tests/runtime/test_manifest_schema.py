"""docs/manifest.schema.json: made from runtime/manifest.py's structures, current, and an
independent validator (jsonschema) agrees with the runtime on the suite's artifacts."""

from __future__ import annotations

import copy
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from budget_edge.errors import ManifestError
from budget_edge.runtime import artifact_files
from budget_edge.runtime.manifest import MANIFEST_NAME, Manifest

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "docs" / "manifest.schema.json"
TOOL = ROOT / "tools" / "manifest_schema.py"


def _tool() -> Any:
    spec = importlib.util.spec_from_file_location("manifest_schema_tool", TOOL)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def validator() -> Any:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _data(path: Path) -> dict[str, Any]:
    return json.loads((path / MANIFEST_NAME).read_text())


def test_the_committed_schema_is_current() -> None:
    assert SCHEMA.read_text() == _tool().schema_text(), "run: python tools/manifest_schema.py"


def test_the_suite_checks_every_manifest_it_writes() -> None:
    """tests/conftest.py validates each manifest.json that write_manifest writes."""
    assert getattr(artifact_files.atomic_write_text, "checks_schema", False)


def _everything(data: dict[str, Any]) -> dict[str, Any]:
    """The resnet artifact's manifest with every optional part filled in."""
    data = copy.deepcopy(data)
    k = len(data["components"])
    data["tensorrt"] = {
        "version": "10.3.0",
        "gpu": "Orin",
        "compute_capability": "8.7",
        "precision": "fp16",
        "max_batch": 8,
        "engines": {"stem": "engines/stem.engine"},
        "preprocess": "engines/preprocess.engine",
    }
    data["precisions"] = {
        "int8": {
            "files": {g["name"]: f"int8/{g['name']}.onnx" for g in data["graphs"]},
            "recipe": {"tool": "test"},
        }
    }
    data["static_masks"] = {"source": "test", "masks": [{"mask": [1] * k, "accuracy": 0.9}]}
    data["validation_split"] = {"size": 10, "seed": 0, "indices_sha256": "ab" * 32}
    data["decision_mode"] = "rank"
    for name in Manifest.from_dict(data).referenced_files():
        data["files"].setdefault(name, "0" * 64)
    return data


def test_the_suites_artifacts_validate(
    resnet_artifact: Any, resnext_artifact: Any, validator: Any
) -> None:
    full = _everything(_data(resnet_artifact.path))
    Manifest.from_dict(full).validate()  # the runtime accepts it too
    for data in (_data(resnet_artifact.path), _data(resnext_artifact.path), full):
        validator.validate(data)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(d: Any) -> None:
        *keys, last = [int(k) if k.isdigit() else k for k in path.split(".")]
        for key in keys:
            d = d[key]
        d[last] = value

    return edit


# What a schema can say: the runtime's decoder and jsonschema both refuse each of these.
REFUSED = [
    ("a billion paths", _set("blocks.0.num_paths", 10**9)),
    ("a misspelt field", _set("blocks.0.skp", None)),
    ("a missing field", lambda d: d.pop("num_classes")),
    ("no schema_version", lambda d: d.pop("schema_version")),
    ("a bool for an int", _set("num_classes", True)),
    ("an unknown dtype", _set("graphs.0.inputs.0.dtype", "int8")),
    ("a file outside", _set("graphs.0.file", "../x.onnx")),
    ("an absolute file", _set("graphs.0.file", "/etc/passwd")),
    ("a hash key outside", _set("files", {"/etc/passwd": "0" * 64})),
    ("a short hash", lambda d: d["files"].update({"stem.onnx": "abc"})),
    ("a negative FLOP count", _set("components.0.flops", -1)),
    ("FLOPs past 2**53", _set("components.0.flops", 2**60)),
    ("no components", _set("components", [])),
    ("a two-number input size", _set("preprocessing.input_size", [3, 8])),
    ("an unknown decision mode", _set("decision_mode", "fastest")),
    (
        "an engine batch of 0",
        _set(
            "tensorrt",
            {"version": "1", "gpu": "g", "precision": "fp16", "max_batch": 0, "engines": {}},
        ),
    ),
]


@pytest.mark.parametrize("case, edit", REFUSED, ids=[c[0] for c in REFUSED])
def test_the_schema_and_the_runtime_refuse_the_same_structure(
    resnet_artifact: Any, validator: Any, case: str, edit: Callable[[dict[str, Any]], None]
) -> None:
    data = _data(resnet_artifact.path)
    edit(data)
    assert not validator.is_valid(data)
    with pytest.raises(ManifestError):
        Manifest.from_dict(data)
