"""NVIDIA's tritonclient.http against a live server: defaults (binary), JSON tensors, errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

from .conftest import SERVER_BUDGET, Served, random_images  # noqa: E402


@pytest.fixture
def client(served: Served) -> Iterator[Any]:
    triton = httpclient.InferenceServerClient(
        url=served.url.removeprefix("http://"), network_timeout=30.0
    )
    yield triton
    triton.close()


def image_tensor(images: np.ndarray, binary: bool = True) -> Any:
    tensor = httpclient.InferInput("IMAGE", list(images.shape), "UINT8")
    tensor.set_data_from_numpy(images, binary_data=binary)
    return tensor


def test_health_and_metadata(client: Any, served: Served) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(served.name)
    assert not client.is_model_ready("other")
    assert client.get_server_metadata()["name"] == "budget-edge"
    meta = client.get_model_metadata(served.name)
    assert [t["name"] for t in meta["inputs"]] == ["IMAGE", "INPUT", "BUDGET", "MASK"]


def test_model_discovery_through_the_repository_index(client: Any, served: Served) -> None:
    index = client.get_model_repository_index()
    assert [(m["name"], m["state"]) for m in index] == [(served.name, "READY")]


def test_the_client_timeout_reaches_the_server(
    client: Any, served: Served, rng: np.random.Generator
) -> None:
    """tritonclient sends `timeout` in microseconds as a request parameter; the server
    takes it as the request's deadline (tests/serve/test_limits.py checks the bound)."""
    images = random_images(rng, 1, served.input_size)
    assert client.infer(served.name, [image_tensor(images)], timeout=5_000_000) is not None


def test_defaults_send_and_receive_binary_tensors(
    client: Any, served: Served, rng: np.random.Generator
) -> None:
    images = random_images(rng, 3, served.input_size)
    budgets = np.array([0.1, 0.5, 0.9], np.float32)
    budget = httpclient.InferInput("BUDGET", [3], "FP32")
    budget.set_data_from_numpy(budgets)
    result = client.infer(served.name, [image_tensor(images), budget], request_id="abc")
    response = result.get_response()
    assert response["id"] == "abc"
    assert all("binary_data_size" in o["parameters"] for o in response["outputs"])
    want = served.runtime.infer(images, budget=budgets)
    np.testing.assert_allclose(result.as_numpy("LOGITS"), want.logits, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(result.as_numpy("CLASS"), want.classes)
    np.testing.assert_array_equal(result.as_numpy("MASK"), want.mask.astype(bool))
    np.testing.assert_array_equal(result.as_numpy("FLOPS"), want.flops)
    np.testing.assert_allclose(result.as_numpy("PROBS"), want.probs, rtol=1e-6, atol=1e-6)


def test_json_tensors_and_requested_outputs(
    client: Any, served: Served, rng: np.random.Generator
) -> None:
    images = random_images(rng, 2, served.input_size)
    outputs = [
        httpclient.InferRequestedOutput("CLASS", binary_data=False),
        httpclient.InferRequestedOutput("MASK", binary_data=True),
    ]
    result = client.infer(
        served.name,
        [image_tensor(images, binary=False)],
        outputs=outputs,
        parameters={"budget": 0.8},
    )
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == ["CLASS", "MASK"]
    assert "data" in response["outputs"][0]
    assert result.as_numpy("LOGITS") is None
    want = served.runtime.infer(images, budget=0.8)
    np.testing.assert_array_equal(result.as_numpy("CLASS"), want.classes)
    np.testing.assert_array_equal(result.as_numpy("MASK"), want.mask.astype(bool))


def test_preprocessed_input_and_a_mask(
    client: Any, served: Served, rng: np.random.Generator
) -> None:
    x = rng.standard_normal((2, *served.input_size)).astype(np.float32)
    mask = np.array([[True, False, True], [False, False, False]])
    image = httpclient.InferInput("INPUT", list(x.shape), "FP32")
    image.set_data_from_numpy(x)
    chosen = httpclient.InferInput("MASK", list(mask.shape), "BOOL")
    chosen.set_data_from_numpy(mask)
    result = client.infer(served.name, [image, chosen])
    assert result.as_numpy("PROBS") is None
    np.testing.assert_array_equal(result.as_numpy("MASK"), mask)
    want = served.runtime.infer(x, mask=mask)
    np.testing.assert_allclose(result.as_numpy("LOGITS"), want.logits, rtol=1e-6, atol=1e-6)


def test_server_budget_is_reported(client: Any, served: Served, rng: np.random.Generator) -> None:
    result = client.infer(served.name, [image_tensor(random_images(rng, 1, served.input_size))])
    assert result.get_response()["parameters"]["budget"] == SERVER_BUDGET


def test_errors_arrive_as_exceptions_with_status_and_message(
    client: Any, served: Served, rng: np.random.Generator
) -> None:
    images = random_images(rng, 1, served.input_size)
    with pytest.raises(InferenceServerException) as info:
        client.infer("other", [image_tensor(images)])
    assert info.value.status() == "404"
    assert "unknown model 'other'" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        client.infer(served.name, [image_tensor(images)], parameters={"budget": 2.0})
    assert info.value.status() == "400"
    assert "outside [0, 1]" in info.value.message()
    wrong = httpclient.InferInput("IMAGE", [1, 8, 8, 3], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(InferenceServerException, match="IMAGE must be UINT8"):
        client.infer(served.name, [wrong])
    assert client.is_server_live()


def test_versioned_routes(client: Any, served: Served, rng: np.random.Generator) -> None:
    images = random_images(rng, 1, served.input_size)
    result = client.infer(served.name, [image_tensor(images)], model_version="1")
    assert result.get_response()["model_version"] == "1"
    assert client.is_model_ready(served.name, model_version="1")
    with pytest.raises(InferenceServerException, match="unknown version '2'"):
        client.infer(served.name, [image_tensor(images)], model_version="2")


def test_model_config_and_inference_statistics(
    client: Any, served: Served, rng: np.random.Generator
) -> None:
    """tritonclient users call both; they answer in Triton's shapes."""
    config = client.get_model_config(served.name)
    assert config["name"] == served.name
    assert config["max_batch_size"] >= 1
    image = next(t for t in config["input"] if t["name"] == "IMAGE")
    c, h, w = served.input_size
    assert image["data_type"] == "TYPE_UINT8"
    assert image["dims"] == [h, w, c]
    assert [t["name"] for t in config["output"]][:2] == ["LOGITS", "CLASS"]
    before = client.get_inference_statistics(served.name)["model_stats"][0]
    images = random_images(rng, 3, served.input_size)
    client.infer(served.name, [image_tensor(images)])
    with pytest.raises(InferenceServerException):
        client.infer(served.name, [httpclient.InferInput("NOPE", [1], "FP32")])
    after = client.get_inference_statistics(served.name)["model_stats"][0]
    assert after["name"] == served.name
    assert after["version"] == "1"
    assert after["inference_count"] - before["inference_count"] == 3
    assert after["execution_count"] > before["execution_count"]
    stats, was = after["inference_stats"], before["inference_stats"]
    assert stats["success"]["count"] - was["success"]["count"] == 1
    assert stats["fail"]["count"] - was["fail"]["count"] == 1
    assert stats["compute_infer"]["ns"] > was["compute_infer"]["ns"]
    assert after["last_inference"] > 0
    everything = client.get_inference_statistics()  # every model: the one served
    assert [m["name"] for m in everything["model_stats"]] == [served.name]
