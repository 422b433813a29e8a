"""ServedModel: metadata from the manifest, requests to runtime calls, answers, and errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from budget_edge.errors import ConfigError, InputError
from budget_edge.runtime import BudgetRuntime
from budget_edge.runtime.budget import FixedBudget
from budget_edge.serve.errors import RequestError
from budget_edge.serve.model import ServedModel
from budget_edge.serve.tensors import DATATYPES

from .conftest import SERVER_BUDGET, artifacts, image_input, load_model, random_images


class RecordingBudget:
    """A controller that hands out a fixed budget and records what it observes."""

    def __init__(self, value: float) -> None:
        self.value = value
        self.calls = 0
        self.observed: list[tuple[float, float | None]] = []

    def budget(self) -> float:
        self.calls += 1
        return self.value

    def observe(self, latency_ms: float, budget: float | None = None) -> None:
        self.observed.append((latency_ms, budget))


@pytest.fixture(scope="module")
def model(tiny_artifact: Path) -> Iterator[ServedModel]:
    served = load_model(tiny_artifact)
    yield served
    served.runtime.close()


@pytest.fixture(scope="module")
def reference(tiny_artifact: Path) -> Iterator[BudgetRuntime]:
    runtime = BudgetRuntime.load(tiny_artifact, backend="onnxruntime", threads=1)
    yield runtime
    runtime.close()


def answer(model: ServedModel, header: dict[str, Any], *sections: bytes) -> dict[str, Any]:
    """Send one request body to the model; return the JSON answer with binary outputs decoded."""
    text = json.dumps(header).encode()
    length = str(len(text)) if sections else None
    body, json_length = model.infer_body(text + b"".join(sections), length)
    if json_length is None:
        return json.loads(body)
    result = json.loads(body[:json_length])
    offset = json_length
    for out in result["outputs"]:
        size = out.get("parameters", {}).get("binary_data_size")
        if size is not None:
            raw = body[offset : offset + size]
            offset += size
            out["data"] = np.frombuffer(raw, DATATYPES[out["datatype"]]).tolist()
    assert offset == len(body)
    return result


def outputs(result: dict[str, Any]) -> dict[str, np.ndarray]:
    return {
        out["name"]: np.asarray(out["data"], DATATYPES[out["datatype"]]).reshape(out["shape"])
        for out in result["outputs"]
    }


def check_same(got: dict[str, np.ndarray], want: Any) -> None:
    """The served outputs equal a direct runtime result."""
    np.testing.assert_allclose(got["LOGITS"], want.logits, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got["CLASS"], want.classes)
    np.testing.assert_array_equal(got["MASK"], want.mask.astype(bool))
    np.testing.assert_array_equal(got["FLOPS"], want.flops)
    if want.probs is not None:
        np.testing.assert_allclose(got["PROBS"], want.probs, rtol=1e-6, atol=1e-6)


def test_metadata_describes_the_manifest(model: ServedModel) -> None:
    meta = model.metadata()
    c, h, w = model.runtime.manifest.preprocessing.input_size
    k = model.runtime.num_components
    assert meta["name"] == model.runtime.manifest.backbone
    assert meta["versions"] == ["1"]
    assert meta["platform"] == "budget-edge_onnxruntime"
    assert meta["inputs"] == [
        {"name": "IMAGE", "datatype": "UINT8", "shape": [-1, h, w, c]},
        {"name": "INPUT", "datatype": "FP32", "shape": [-1, c, h, w]},
        {"name": "BUDGET", "datatype": "FP32", "shape": [-1]},
        {"name": "MASK", "datatype": "BOOL", "shape": [-1, k]},
    ]
    assert meta["outputs"] == [
        {"name": "LOGITS", "datatype": "FP32", "shape": [-1, model.runtime.num_classes]},
        {"name": "CLASS", "datatype": "INT64", "shape": [-1]},
        {"name": "MASK", "datatype": "BOOL", "shape": [-1, k]},
        {"name": "PROBS", "datatype": "FP32", "shape": [-1, k]},
        {"name": "FLOPS", "datatype": "INT64", "shape": [-1]},
    ]


def test_without_a_policy_there_is_no_budget_input_and_masks_are_required(
    tmp_path: Path,
) -> None:
    artifacts.write_artifact(artifacts.make_net("resnet"), tmp_path, policy=False)
    model = load_model(tmp_path, name="static")
    names = [t["name"] for t in model.metadata()["inputs"]]
    assert names == ["IMAGE", "INPUT", "MASK"]
    assert "PROBS" not in [t["name"] for t in model.metadata()["outputs"]]
    images = random_images(np.random.default_rng(0), 1, (3, 8, 8))
    with pytest.raises(InputError, match="no policy graph"):
        answer(model, {"inputs": [image_input(images)]})
    mask = {"name": "MASK", "datatype": "BOOL", "shape": [1, 3], "data": [True, False, True]}
    result = outputs(answer(model, {"inputs": [image_input(images), mask]}))
    assert result["MASK"].tolist() == [[True, False, True]]
    model.runtime.close()


def test_static_masks_serve_budgets_without_an_agent(tmp_path: Path) -> None:
    from budget_edge.runtime.static_masks import attach_static_masks

    net = artifacts.make_net("resnet")
    artifacts.write_artifact(net, tmp_path, policy=False)
    rng = np.random.default_rng(3)
    images = random_images(rng, 24, (3, 8, 8))
    labels = rng.integers(0, net.num_classes, 24)
    manifest = attach_static_masks(tmp_path, images, labels, "synthetic")
    assert manifest.static_masks is not None
    by_count = {sum(m.mask): m.mask for m in manifest.static_masks.masks}
    model = load_model(tmp_path, name="static-masks")
    assert "BUDGET" in [t["name"] for t in model.metadata()["inputs"]]
    assert "PROBS" not in [t["name"] for t in model.metadata()["outputs"]]
    one = images[:1]
    for budget, count in ((0.34, 1), (0.7, 2)):
        result = outputs(
            answer(model, {"inputs": [image_input(one)], "parameters": {"budget": budget}})
        )
        assert result["MASK"].astype(int).tolist() == [by_count[count]]
    # The server's controller (0.5 -> round(1.5) = 1, a tie rounds down) without a budget.
    result = outputs(answer(model, {"inputs": [image_input(one)]}))
    assert result["MASK"].astype(int).tolist() == [by_count[1]]
    with pytest.raises(InputError, match="policy 'oracle'"):
        answer(model, {"inputs": [image_input(one)], "parameters": {"policy": "oracle"}})
    with pytest.raises(RequestError, match="unknown output 'PROBS'"):
        answer(
            model,
            {
                "inputs": [image_input(one)],
                "outputs": [{"name": "PROBS"}],
                "parameters": {"budget": 0.5},
            },
        )
    model.runtime.close()


def test_json_request_without_budget_runs_at_the_controllers_budget(
    model: ServedModel, reference: BudgetRuntime, rng: np.random.Generator
) -> None:
    images = random_images(rng, 4, (3, 8, 8))
    result = answer(model, {"id": "req-7", "inputs": [image_input(images)]})
    assert result["id"] == "req-7"
    assert result["model_name"] == model.name
    assert result["model_version"] == "1"
    assert result["parameters"]["budget"] == SERVER_BUDGET
    assert result["parameters"]["latency_ms_total"] > 0
    assert [o["name"] for o in result["outputs"]] == ["LOGITS", "CLASS", "MASK", "PROBS", "FLOPS"]
    assert all("data" in o for o in result["outputs"])  # JSON unless binary is asked for
    check_same(outputs(result), reference.infer(images, budget=SERVER_BUDGET))


def test_budget_tensor_gives_one_budget_per_image(
    model: ServedModel, reference: BudgetRuntime, rng: np.random.Generator
) -> None:
    images = random_images(rng, 3, (3, 8, 8))
    budgets = np.array([0.1, 0.6, 1.0], np.float32)
    budget = {"name": "BUDGET", "datatype": "FP32", "shape": [3], "data": budgets.tolist()}
    result = answer(model, {"inputs": [image_input(images), budget]})
    assert "budget" not in result["parameters"]  # the request chose, not the server
    check_same(outputs(result), reference.infer(images, budget=budgets))


def test_budget_parameter_applies_to_every_image(
    model: ServedModel, reference: BudgetRuntime, rng: np.random.Generator
) -> None:
    images = random_images(rng, 2, (3, 8, 8))
    result = answer(model, {"parameters": {"budget": 0}, "inputs": [image_input(images)]})
    check_same(outputs(result), reference.infer(images, budget=0.0))


def test_preprocessed_input_matches_pixels_normalised_by_the_runtime(
    model: ServedModel, reference: BudgetRuntime, rng: np.random.Generator
) -> None:
    images = random_images(rng, 2, (3, 8, 8))
    pre = model.runtime.manifest.preprocessing
    x = (images / 255.0 - np.asarray(pre.mean)) / np.asarray(pre.std)
    x = np.ascontiguousarray(x.transpose(0, 3, 1, 2).astype(np.float32))
    spec = {
        "name": "INPUT",
        "datatype": "FP32",
        "shape": list(x.shape),
        "parameters": {"binary_data_size": x.nbytes},
    }
    result = answer(model, {"inputs": [spec], "parameters": {"budget": 0.7}}, x.tobytes())
    check_same(outputs(result), reference.infer(x, budget=0.7))


def test_binary_outputs_follow_the_json_in_order(
    model: ServedModel, reference: BudgetRuntime, rng: np.random.Generator
) -> None:
    images = random_images(rng, 2, (3, 8, 8))
    spec = {
        "name": "IMAGE",
        "datatype": "UINT8",
        "shape": list(images.shape),
        "parameters": {"binary_data_size": images.nbytes},
    }
    header = {"inputs": [spec], "parameters": {"binary_data_output": True, "budget": 0.3}}
    text = json.dumps(header).encode()
    body, length = model.infer_body(text + images.tobytes(), str(len(text)))
    assert length is not None
    head = json.loads(body[:length])
    assert all("data" not in o and o["parameters"]["binary_data_size"] > 0 for o in head["outputs"])
    result = answer(model, header, images.tobytes())
    check_same(outputs(result), reference.infer(images, budget=0.3))


def test_requested_outputs_come_in_the_asked_order_and_form(
    model: ServedModel, rng: np.random.Generator
) -> None:
    images = random_images(rng, 1, (3, 8, 8))
    header = {
        "inputs": [image_input(images)],
        "outputs": [{"name": "FLOPS", "parameters": {"binary_data": True}}, {"name": "CLASS"}],
    }
    text = json.dumps(header).encode()
    body, length = model.infer_body(text, None)
    assert length is not None
    head = json.loads(body[:length])
    assert [o["name"] for o in head["outputs"]] == ["FLOPS", "CLASS"]
    assert head["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert "data" in head["outputs"][1]
    assert len(body) == length + 8


def test_mask_input_runs_exactly_that_mask(
    model: ServedModel, reference: BudgetRuntime, rng: np.random.Generator
) -> None:
    images = random_images(rng, 2, (3, 8, 8))
    mask = np.array([[1, 1, 1], [0, 1, 0]], bool)
    spec = {"name": "MASK", "datatype": "BOOL", "shape": [2, 3], "data": mask.ravel().tolist()}
    result = answer(model, {"inputs": [image_input(images), spec]})
    got = outputs(result)
    assert "PROBS" not in got  # the policy did not run
    assert "budget" not in result["parameters"]
    check_same(got, reference.infer(images, mask=mask))
    with pytest.raises(RequestError, match="PROBS exists only when the agent runs"):
        answer(model, {"inputs": [image_input(images), spec], "outputs": [{"name": "PROBS"}]})


def test_sample_mode_with_a_seed_and_a_flops_cap_match_the_runtime(
    model: ServedModel, reference: BudgetRuntime, rng: np.random.Generator
) -> None:
    images = random_images(rng, 4, (3, 8, 8))
    parameters = {"budget": 0.5, "mode": "sample", "seed": 7, "cap": "flops"}
    result = answer(model, {"parameters": parameters, "inputs": [image_input(images)]})
    want = reference.infer(images, budget=0.5, mode="sample", seed=7, cap="flops")
    check_same(outputs(result), want)


def test_model_name_can_be_chosen(tiny_artifact: Path) -> None:
    model = load_model(tiny_artifact, name="edge-classifier")
    assert model.name == "edge-classifier"
    assert model.metadata()["name"] == "edge-classifier"
    with pytest.raises(ConfigError, match="cannot be part of a URL"):
        ServedModel(model.runtime, FixedBudget(0.5), name="models/x")
    model.runtime.close()


def test_only_single_image_calls_at_the_servers_budget_steer_the_controller(
    tiny_artifact: Path, rng: np.random.Generator
) -> None:
    controller = RecordingBudget(0.75)
    model = load_model(tiny_artifact, controller=controller)
    one = image_input(random_images(rng, 1, (3, 8, 8)))
    two = image_input(random_images(rng, 2, (3, 8, 8)))
    assert answer(model, {"inputs": [one]})["parameters"]["budget"] == 0.75
    answer(model, {"inputs": [two]})  # a batch: latency is not comparable to the table
    answer(model, {"inputs": [one], "parameters": {"budget": 0.2}})  # the request decided
    assert controller.calls == 2
    assert len(controller.observed) == 1
    latency, budget = controller.observed[0]
    assert latency > 0
    assert budget == 0.75
    model.runtime.close()


def image(n: int = 1, **changes: Any) -> dict[str, Any]:
    spec = image_input(np.zeros((n, 8, 8, 3), np.uint8))
    spec.update(changes)
    return spec


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (
            {"inputs": [image(), {"name": "EXTRA", "datatype": "FP32", "shape": [1], "data": [1]}]},
            "unknown input 'EXTRA'",
        ),
        ({"inputs": [image(datatype="FP32")]}, "IMAGE must be UINT8, got FP32"),
        ({"inputs": [image(shape=[1, 8, 24], data=[0] * 192)]}, "has shape [1, 8, 24] but"),
        ({"inputs": [image(shape=[1, 4, 16, 3])]}, "has shape [1, 4, 16, 3] but"),
        (
            {
                "inputs": [
                    image(),
                    {
                        "name": "INPUT",
                        "datatype": "FP32",
                        "shape": [1, 3, 8, 8],
                        "data": [0.0] * 192,
                    },
                ]
            },
            "exactly one image input",
        ),
        (
            {"inputs": [{"name": "BUDGET", "datatype": "FP32", "shape": [1], "data": [1]}]},
            "exactly one image input",
        ),
        (
            {
                "inputs": [
                    image(2),
                    {"name": "BUDGET", "datatype": "FP32", "shape": [1], "data": [0.5]},
                ]
            },
            "BUDGET has 1 rows for 2 image(s)",
        ),
        (
            {
                "inputs": [
                    image(),
                    {"name": "BUDGET", "datatype": "FP64", "shape": [1], "data": [0.5]},
                ]
            },
            "BUDGET must be FP32",
        ),
        (
            {
                "inputs": [
                    image(),
                    {"name": "BUDGET", "datatype": "FP32", "shape": [1], "data": [0.5]},
                ],
                "parameters": {"budget": 0.5},
            },
            "send the budget once",
        ),
        ({"inputs": [image()], "parameters": {"budget": "high"}}, "must be a number in [0, 1]"),
        ({"inputs": [image()], "parameters": {"budget": True}}, "must be a number in [0, 1]"),
        ({"inputs": [image()], "parameters": {"budget": 1.5}}, "budget 1.5 is outside [0, 1]"),
        ({"inputs": [image()], "parameters": {"budget": -0.1}}, "outside [0, 1]"),
        (
            {
                "inputs": [
                    image(),
                    {"name": "BUDGET", "datatype": "FP32", "shape": [1], "data": [2.0]},
                ]
            },
            "outside [0, 1]",
        ),
        ({"inputs": [image()], "parameters": {"budgett": 0.5}}, "unknown parameter 'budgett'"),
        ({"inputs": [image()], "parameters": {"mode": "best"}}, "mode 'best' is not one of"),
        ({"inputs": [image()], "parameters": {"mode": 1}}, "mode must be a non-empty string"),
        ({"inputs": [image()], "parameters": {"cap": "watts"}}, "cap 'watts' is not one of"),
        ({"inputs": [image()], "parameters": {"seed": -1}}, "seed must be an integer in"),
        ({"inputs": [image()], "parameters": {"seed": 1.5}}, "seed must be an integer in"),
        ({"inputs": [image(0, shape=[0, 8, 8, 3], data=[])]}, "the batch is empty"),
        (
            {
                "inputs": [
                    image(),
                    {"name": "MASK", "datatype": "BOOL", "shape": [1, 2], "data": [True, True]},
                ]
            },
            "MASK has shape [1, 2] but",
        ),
        ({"inputs": [image()], "outputs": [{"name": "SCORES"}]}, "unknown output 'SCORES'"),
    ],
)
def test_bad_requests_are_refused_before_or_by_the_runtime(
    model: ServedModel, header: dict[str, Any], message: str
) -> None:
    with pytest.raises(InputError) as info:
        answer(model, header)
    assert message in str(info.value)


def test_nan_and_inf_in_binary_images_are_refused(model: ServedModel) -> None:
    x = np.zeros((1, 3, 8, 8), np.float32)
    x[0, 1, 2, 3] = np.nan
    spec = {
        "name": "INPUT",
        "datatype": "FP32",
        "shape": [1, 3, 8, 8],
        "parameters": {"binary_data_size": x.nbytes},
    }
    with pytest.raises(InputError, match="NaN or inf"):
        answer(model, {"inputs": [spec]}, x.tobytes())
    budget = np.array([np.nan], np.float32)
    bspec = {
        "name": "BUDGET",
        "datatype": "FP32",
        "shape": [1],
        "parameters": {"binary_data_size": 4},
    }
    with pytest.raises(InputError, match="NaN"):
        answer(model, {"inputs": [image(), bspec]}, budget.tobytes())


def test_a_quantized_set_is_named_in_the_platform(tmp_path: Path) -> None:
    from budget_edge.export.quantize import QuantizeSettings, quantize_artifact
    from budget_edge.runtime.budget import FixedBudget

    from .conftest import artifacts

    artifacts.write_artifact(artifacts.make_net("resnet"), tmp_path)
    quantize_artifact(tmp_path, QuantizeSettings("fp16"))
    with BudgetRuntime.load(tmp_path, precision="fp16", threads=1) as rt:
        served = ServedModel(rt, FixedBudget(0.5))
        assert served.metadata()["platform"] == "budget-edge_onnxruntime_fp16"


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"mode": "fast"}, "mode 'fast' is not one of"),
        ({"policy": "oracle"}, "policy 'oracle' is not one of"),
        ({"policy": "static", "cap": "flops"}, "cap needs the agent's probabilities"),
    ],
)
def test_options_that_cannot_run_are_refused_before_the_request_queues(
    tiny_artifact: Path, rng: np.random.Generator, parameters: dict[str, Any], message: str
) -> None:
    """Checked when the request is parsed: it never takes a turn of the model."""
    from .conftest import GatedRuntime

    runtime = GatedRuntime(BudgetRuntime.load(tiny_artifact, backend="onnxruntime", threads=1))
    runtime.open()  # a call would run, and be counted
    served = ServedModel(runtime, FixedBudget(0.5))  # type: ignore[arg-type]
    header = {"inputs": [image_input(random_images(rng, 2, (3, 8, 8)))], "parameters": parameters}
    with pytest.raises(InputError, match=message):
        served.infer_body(json.dumps(header).encode(), None)
    runtime.close()
    assert runtime.calls == []
