"""BudgetRuntime: batched mask dispatch against a per-sample numpy reference, policy, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from budget_edge.errors import BackendError, ConfigError, InputError, ManifestError
from budget_edge.runtime import BudgetRuntime
from budget_edge.runtime.manifest import MANIFEST_NAME

from .conftest import make_net, write_artifact

ATOL = 1e-4


@pytest.fixture(scope="module")
def resnet_rt(resnet_artifact: Any) -> BudgetRuntime:
    return BudgetRuntime.load(resnet_artifact.path, backend="onnxruntime", threads=1)


@pytest.fixture(scope="module")
def resnext_rt(resnext_artifact: Any) -> BudgetRuntime:
    return BudgetRuntime.load(resnext_artifact.path, backend="onnxruntime", threads=1)


def _images(net: Any, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *net.input_size)).astype(np.float32)


def _valid_masks(rt: BudgetRuntime, n: int, seed: int) -> np.ndarray:
    """Random masks the artifact can run (prefix-scheme blocks keep paths 0..m-1)."""
    rng = np.random.default_rng(seed)
    m = (rng.random((n, rt.num_components)) < 0.5).astype(np.uint8)
    for b in rt.manifest.blocks:
        if b.variant_scheme == "prefix":
            idx = rt.manifest.block_components(b.index)
            counts = rng.integers(0, len(idx) + 1, size=n)
            m[:, idx] = np.arange(len(idx))[None, :] < counts[:, None]
    return m


@pytest.mark.parametrize("which", ["resnet", "resnext"])
def test_mixed_masks_match_per_sample_reference(which: str, request: pytest.FixtureRequest) -> None:
    artifact = request.getfixturevalue(f"{which}_artifact")
    rt = request.getfixturevalue(f"{which}_rt")
    x = _images(artifact.net, 16, seed=3)
    mask = _valid_masks(rt, 16, seed=4)
    mask[0] = 0  # every block skipped
    mask[1] = 1  # everything (the full graph)
    result = rt.infer(x, mask=mask)
    ref = artifact.net.np_forward(x, mask)
    np.testing.assert_allclose(result.logits, ref, atol=ATOL, rtol=1e-4)
    np.testing.assert_array_equal(result.mask, mask)
    np.testing.assert_array_equal(result.classes, ref.argmax(axis=1))
    assert result.probs is None
    assert result.policy_flops == 0


def test_every_single_variant(resnext_artifact: Any, resnext_rt: BudgetRuntime) -> None:
    """Each of the 2^3 path sets of the 'all' block, one image each, in one batch."""
    net = resnext_artifact.net
    masks = np.ones((8, resnext_rt.num_components), np.uint8)
    for i in range(8):
        masks[i, :3] = [(i >> j) & 1 for j in range(3)]
    x = _images(net, 8, seed=5)
    result = resnext_rt.infer(x, mask=masks)
    np.testing.assert_allclose(result.logits, net.np_forward(x, masks), atol=ATOL, rtol=1e-4)


def test_same_mask_for_all_uses_one_call(resnet_artifact: Any, resnet_rt: BudgetRuntime) -> None:
    x = _images(resnet_artifact.net, 4)
    result = resnet_rt.infer(x, mask=[0, 1, 1])
    ref = resnet_artifact.net.np_forward(x, np.tile([0, 1, 1], (4, 1)))
    np.testing.assert_allclose(result.logits, ref, atol=ATOL, rtol=1e-4)


def test_hot_policy_and_full_graph_are_used(resnet_artifact: Any, resnet_rt: BudgetRuntime) -> None:
    net = resnet_artifact.net
    x = _images(net, 6, seed=7)
    mask = np.array([[1, 0, 1], [1, 1, 1], [0, 1, 0], [1, 0, 1], [1, 1, 1], [0, 0, 0]], np.uint8)
    calls: list[str] = []
    backend = resnet_rt.backend
    original = backend.run

    def spy(graph: str, inputs: Any) -> Any:
        calls.append(graph)
        return original(graph, inputs)

    backend.run = spy  # type: ignore[method-assign]
    try:
        result = resnet_rt.infer(x, mask=mask)
    finally:
        backend.run = original  # type: ignore[method-assign]
    np.testing.assert_allclose(result.logits, net.np_forward(x, mask), atol=ATOL, rtol=1e-4)
    assert "hot0" in calls
    assert "full" in calls
    assert calls.count("stem") == 1  # the other two rows, dispatched block by block
    assert result.latency_ms["hot"] > 0


def test_policy_greedy_matches_reference(resnet_artifact: Any, resnet_rt: BudgetRuntime) -> None:
    net = resnet_artifact.net
    x = _images(net, 12, seed=8)
    budget = np.linspace(0.0, 1.0, 12)
    result = resnet_rt.infer(x, budget=budget)
    probs = net.np_policy(x, budget)
    assert result.probs is not None
    np.testing.assert_allclose(result.probs, probs, atol=1e-5)
    expected = (probs >= 0.5).astype(np.uint8)
    np.testing.assert_array_equal(result.mask, expected)
    np.testing.assert_allclose(result.logits, net.np_forward(x, expected), atol=ATOL, rtol=1e-4)
    m = resnet_rt.manifest
    np.testing.assert_array_equal(
        result.flops, m.base_flops + expected @ np.array([c.flops for c in m.components])
    )
    assert result.policy_flops == m.flops.policy
    assert set(result.latency_ms) == {"policy", "stem", "blocks", "head", "hot", "total"}
    np.testing.assert_allclose(result.usage, expected.mean(axis=1))
    assert (result.flops_share <= 1.0).all()


def test_sample_mode_is_seeded(resnext_rt: BudgetRuntime, resnext_artifact: Any) -> None:
    x = _images(resnext_artifact.net, 32, seed=9)
    a = resnext_rt.infer(x, budget=0.5, mode="sample", seed=11)
    b = resnext_rt.infer(x, budget=0.5, mode="sample", seed=11)
    c = resnext_rt.infer(x, budget=0.5, mode="sample", seed=12)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert (a.mask != c.mask).any()
    # The policy's masks pass through the prefix projection: they must run correctly.
    np.testing.assert_allclose(
        a.logits, resnext_artifact.net.np_forward(x, a.mask), atol=ATOL, rtol=1e-4
    )


def test_prefix_projection_keeps_counts(resnext_rt: BudgetRuntime, resnext_artifact: Any) -> None:
    x = _images(resnext_artifact.net, 32, seed=10)
    result = resnext_rt.infer(x, budget=0.5, mode="sample", seed=1)
    rng = np.random.default_rng(1)
    assert result.probs is not None
    drawn = (rng.random(result.probs.shape) < result.probs).astype(np.uint8)
    idx = resnext_rt.manifest.block_components(1)  # the 'prefix' block
    np.testing.assert_array_equal(result.mask[:, idx].sum(1), drawn[:, idx].sum(1))
    counts = result.mask[:, idx].sum(1)
    np.testing.assert_array_equal(
        result.mask[:, idx], np.arange(len(idx))[None, :] < counts[:, None]
    )


def test_explicit_non_prefix_mask_is_refused(
    resnext_rt: BudgetRuntime, resnext_artifact: Any
) -> None:
    mask = np.ones(resnext_rt.num_components, np.uint8)
    mask[3] = 0  # block 1 keeps paths 1..4 but not path 0
    with pytest.raises(InputError, match="prefix path sets"):
        resnext_rt.infer(_images(resnext_artifact.net, 2), mask=mask)


@pytest.mark.parametrize("cap", ["components", "flops"])
def test_cap_is_a_hard_ceiling(resnext_rt: BudgetRuntime, resnext_artifact: Any, cap: str) -> None:
    x = _images(resnext_artifact.net, 24, seed=13)
    budget = np.linspace(0.0, 1.0, 24)
    result = resnext_rt.infer(x, budget=budget, cap=cap)
    if cap == "components":
        assert (result.usage <= budget + 1e-9).all()
    else:
        floor = resnext_rt.min_flops_fraction
        assert (result.flops_share <= np.maximum(budget, floor) + 1e-9).all()
    free = resnext_rt.infer(x, budget=budget)
    assert (result.mask <= free.mask).all()  # the cap only drops components
    np.testing.assert_allclose(
        result.logits, resnext_artifact.net.np_forward(x, result.mask), atol=ATOL, rtol=1e-4
    )


def test_rank_mode_follows_the_budget(resnext_rt: BudgetRuntime, resnext_artifact: Any) -> None:
    x = _images(resnext_artifact.net, 12, seed=15)
    budget = np.linspace(0.0, 1.0, 12)
    result = resnext_rt.infer(x, budget=budget, mode="rank")
    k = resnext_rt.num_components
    assert (np.abs(result.usage - budget) <= 0.5 / k + 1e-9).all()
    np.testing.assert_allclose(
        result.logits, resnext_artifact.net.np_forward(x, result.mask), atol=ATOL, rtol=1e-4
    )


def test_uint8_images_are_normalised(resnext_rt: BudgetRuntime, resnext_artifact: Any) -> None:
    pixels = np.random.default_rng(14).integers(0, 256, (3, 8, 8), dtype=np.uint8)  # NHW
    pre = resnext_rt.manifest.preprocessing
    x = ((pixels / 255.0 - pre.mean[0]) / pre.std[0]).astype(np.float32)[:, None]
    mask = np.ones(resnext_rt.num_components)
    a = resnext_rt.infer(pixels, mask=mask)
    b = resnext_rt.infer(x, mask=mask)
    np.testing.assert_allclose(a.logits, b.logits, atol=1e-5)
    one = resnext_rt.infer(pixels[0], mask=mask)  # HW
    np.testing.assert_allclose(one.logits, a.logits[:1], atol=1e-5)


def test_run_full_and_policy(resnet_artifact: Any, resnet_rt: BudgetRuntime) -> None:
    x = _images(resnet_artifact.net, 3)
    full = resnet_rt.run_full(x)
    np.testing.assert_allclose(
        full, resnet_artifact.net.np_forward(x, np.ones((3, 3))), atol=ATOL, rtol=1e-4
    )
    probs = resnet_rt.run_policy(x, 0.25)
    np.testing.assert_allclose(probs, resnet_artifact.net.np_policy(x, np.full(3, 0.25)), atol=1e-5)


@pytest.mark.parametrize(
    "call, message",
    [
        ({"budget": 0.5, "mask": [1, 1, 1]}, "a budget or a mask, not both"),
        ({"budget": 0.5, "mode": "sample", "seed": -1}, "non-negative integer"),
        ({"budget": 0.5, "mode": "sample", "seed": "x"}, "non-negative integer"),
        ({"budget": 0.5, "mode": "sample", "seed": 1.5}, "non-negative integer"),
        ({"budget": 0.5, "mode": "sample", "seed": True}, "non-negative integer"),
    ],
)
def test_contradictory_or_bad_arguments_are_input_errors(
    resnet_rt: BudgetRuntime, resnet_artifact: Any, call: dict[str, Any], message: str
) -> None:
    """Each was silently ignored or a numpy traceback (ValueError, TypeError)."""
    with pytest.raises(InputError, match=message):
        resnet_rt.infer(_images(resnet_artifact.net, 2), **call)


def test_any_non_negative_integer_seeds_sampling(
    resnet_rt: BudgetRuntime, resnet_artifact: Any
) -> None:
    images = _images(resnet_artifact.net, 2)
    first = resnet_rt.infer(images, budget=0.5, mode="sample", seed=2**70)
    again = resnet_rt.infer(images, budget=0.5, mode="sample", seed=np.int64(2**40))
    assert first.mask.shape == again.mask.shape == (2, 3)


def test_without_policy_mask_is_required(tmp_path: Path) -> None:
    net = make_net("resnet", seed=2)
    write_artifact(net, tmp_path, policy=False, full=False)
    with BudgetRuntime.load(tmp_path, backend="onnxruntime") as rt:
        assert not rt.has_policy
        x = _images(net, 2)
        with pytest.raises(InputError, match="no policy graph.*mask="):
            rt.infer(x, budget=0.5)
        with pytest.raises(InputError, match="no `full` graph"):
            rt.run_full(x)
        result = rt.infer(x, mask=[1, 0, 1])
        np.testing.assert_allclose(
            result.logits, net.np_forward(x, np.tile([1, 0, 1], (2, 1))), atol=ATOL, rtol=1e-4
        )


INFER_ERRORS = [
    ({"budget": None}, "a budget is needed"),
    ({"budget": 0.5, "mode": "best"}, "mode 'best'"),
    ({"budget": 0.5, "cap": "watts"}, "cap 'watts'"),
    ({"mask": [1, 0, 1], "cap": "flops"}, "so cap would be ignored"),
    ({"mask": [1, 0, 1], "policy": "static"}, "so policy would be ignored"),
    ({"mask": [1, 0, 1], "mode": "sample", "seed": 3}, "so mode, seed would be ignored"),
    ({"mask": [1, 0, 1], "budget": 2.0}, "not both"),
    ({"budget": float("nan")}, "NaN"),
    ({"budget": -0.1}, "outside"),
    ({"budget": 1.5}, "outside"),
    ({"budget": [0.5, 0.5, 0.5]}, "one value per image"),
    ({"mask": [1, 0]}, "shape"),
    ({"mask": [[1, 0, 2], [1, 1, 1]]}, "only 0 and 1"),
]


@pytest.mark.parametrize("kwargs,message", INFER_ERRORS, ids=[m for _, m in INFER_ERRORS])
def test_infer_argument_errors(
    resnet_artifact: Any, resnet_rt: BudgetRuntime, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        resnet_rt.infer(_images(resnet_artifact.net, 2), **kwargs)


def test_load_refuses_a_corrupted_file(fresh_artifact: Any) -> None:
    path = fresh_artifact.path / "head.onnx"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ManifestError, match="head.onnx"):
        BudgetRuntime.load(fresh_artifact.path)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not an onnx graph", "graph 'stem' .* is not a readable ONNX file"),
        (b"\x08\x07", r"graph 'stem' .* has inputs \[\] but the manifest says \['x'\]"),
    ],
)
def test_unloadable_graph_is_a_manifest_error_at_load(
    fresh_artifact: Any, content: bytes, message: str
) -> None:
    """A graph whose hash matches (rewritten manifest) but is not the graph listed: refused
    when the artifact loads, not inside a request."""
    from budget_edge.runtime.manifest import write_manifest

    (fresh_artifact.path / "stem.onnx").write_bytes(content)
    write_manifest(fresh_artifact.path, fresh_artifact.manifest)
    with pytest.raises(ManifestError, match=message):
        BudgetRuntime.load(fresh_artifact.path, backend="onnxruntime")


def test_backend_choice_errors(resnet_artifact: Any) -> None:
    with pytest.raises(ConfigError, match="backend 'cuda'"):
        BudgetRuntime.load(resnet_artifact.path, backend="cuda")
    with pytest.raises(BackendError, match="no TensorRT engines"):
        BudgetRuntime.load(resnet_artifact.path, backend="tensorrt")
    with pytest.raises(ConfigError, match="threads"):
        BudgetRuntime.load(resnet_artifact.path, threads=0)
    rt = BudgetRuntime.load(resnet_artifact.path)  # auto, without engines
    assert rt.backend.name == "onnxruntime"


def test_auto_falls_back_when_tensorrt_cannot_run(fresh_artifact: Any) -> None:
    """Engines listed, but no usable TensorRT here: auto picks ONNX Runtime."""
    from budget_edge.runtime.backends.tensorrt_backend import tensorrt_unavailable
    from budget_edge.runtime.manifest import TensorRTSpec, write_manifest

    if tensorrt_unavailable() is None:
        pytest.skip("TensorRT runs on this machine")
    root = fresh_artifact.path
    engines = {}
    for g in fresh_artifact.manifest.graphs:
        (root / f"{g.name}.engine").write_bytes(b"x")
        engines[g.name] = f"{g.name}.engine"
    fresh_artifact.manifest.tensorrt = TensorRTSpec("10.3.0", "Orin", "fp16", 8, engines)
    write_manifest(root, fresh_artifact.manifest)
    with pytest.warns(RuntimeWarning, match="TensorRT cannot run here"):
        assert BudgetRuntime.load(root).backend.name == "onnxruntime"
    with pytest.raises(BackendError, match="pip install tensorrt"):
        BudgetRuntime.load(root, backend="tensorrt")


def test_concurrent_calls_from_threads(resnext_artifact: Any) -> None:
    """A server calls infer from a thread pool; lazily created sessions are shared."""
    from concurrent.futures import ThreadPoolExecutor

    rt = BudgetRuntime.load(resnext_artifact.path, backend="onnxruntime", threads=1)
    net = resnext_artifact.net
    jobs = [(_images(net, 4, seed=s), _valid_masks(rt, 4, seed=s)) for s in range(12)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda job: rt.infer(job[0], mask=job[1]), jobs))
    for (x, mask), result in zip(jobs, results, strict=True):
        np.testing.assert_allclose(result.logits, net.np_forward(x, mask), atol=ATOL, rtol=1e-4)


def test_manifest_file_is_plain_json(resnet_artifact: Any) -> None:
    data = json.loads((resnet_artifact.path / MANIFEST_NAME).read_text())
    assert data["schema_version"] == 1
    assert data["roles"]["policy"] == "policy"


TORCH_FREE = """
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
import numpy as np
from budget_edge.runtime import BudgetRuntime
from budget_edge.runtime.budget import BatteryBudget, LatencyBudget, min_of
rt = BudgetRuntime.load(sys.argv[1])
x = np.zeros((2, 8, 8, 3), np.uint8)
control = min_of(BatteryBudget([(50, 1.0), (0, 0.5)]),
                 LatencyBudget(50.0, [(0.5, 1.0), (1.0, 2.0)]))
r = rt.infer(x, budget=control.budget(), cap="flops")
control.observe(r.latency_ms["total"])
print(r.classes.tolist(), sorted(k for k in sys.modules if k.split(".")[0] == "torch"))
"""


def test_runtime_imports_and_runs_without_torch(resnet_artifact: Any) -> None:
    out = subprocess.run(
        [sys.executable, "-c", TORCH_FREE, str(resnet_artifact.path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("['torch']")  # only our None placeholder


# ---- precisions and dispatch ---------------------------------------------------------


def test_load_picks_the_graph_set_of_a_precision(fresh_artifact: Any) -> None:
    from budget_edge.export.quantize import QuantizeSettings, quantize_artifact

    quantize_artifact(fresh_artifact.path, QuantizeSettings("fp16"))
    x = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), np.uint8)
    with (
        BudgetRuntime.load(fresh_artifact.path, threads=1) as fp32,
        BudgetRuntime.load(fresh_artifact.path, threads=1, precision="fp16") as fp16,
    ):
        assert (fp32.precision, fp16.precision) == ("fp32", "fp16")
        assert fp16.manifest.graph("stem").file.startswith("quantized/fp16-")
        a = fp32.infer(x, mask=np.ones(3)).logits
        b = fp16.infer(x, mask=np.ones(3)).logits
    assert not np.array_equal(a, b)  # it really ran other graphs
    np.testing.assert_allclose(b, a, rtol=0.02, atol=0.02 * np.abs(a).max())
    with pytest.raises(ConfigError, match="no fp16 TensorRT engines .*not built.*build-engines"):
        BudgetRuntime.load(fresh_artifact.path, backend="tensorrt", precision="fp16")


def test_a_precision_the_artifact_lacks_is_one_line(resnet_artifact: Any) -> None:
    with pytest.raises(
        ConfigError,
        match="no int8 graphs .*budget-edge quantize DIR --precision int8 --calib-data DATA",
    ):
        BudgetRuntime.load(resnet_artifact.path, precision="int8")
    with pytest.raises(ConfigError, match="precision 'fp64' is not one of"):
        BudgetRuntime.load(resnet_artifact.path, precision="fp64")


def test_chain_dispatch_calls_a_graph_per_block(resnet_artifact: Any) -> None:
    x = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), np.uint8)
    hot = np.array([1, 0, 1], np.uint8)  # the artifact's hot policy: one whole graph
    with (
        BudgetRuntime.load(resnet_artifact.path, threads=1) as auto,
        BudgetRuntime.load(resnet_artifact.path, threads=1, dispatch="chain") as chain,
    ):
        a = auto.infer(x, mask=hot)
        c = chain.infer(x, mask=hot)
    assert a.latency_ms["hot"] > 0
    assert a.latency_ms["blocks"] == 0
    assert c.latency_ms["hot"] == 0
    assert c.latency_ms["blocks"] > 0
    np.testing.assert_allclose(c.logits, a.logits, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="dispatch 'fast' is not one of"):
        BudgetRuntime.load(resnet_artifact.path, dispatch="fast")


def test_non_finite_logits_are_an_error_not_an_answer(resnet_artifact: Any) -> None:
    """Finite float32 inputs far outside a normalised range overflow inside the model."""
    with BudgetRuntime.load(resnet_artifact.path, threads=1) as rt:
        x = np.zeros((3, 3, 8, 8), np.float32)
        x[1] = 3e38
        with pytest.raises(InputError, match=r"non-finite logits for image\(s\) \[1\]"):
            rt.infer(x, mask=[1, 1, 1])
        rt.infer(x[[0, 2]], mask=[1, 1, 1])  # the others are fine


def test_a_graph_replaced_after_loading_does_not_run(fresh_artifact: Any) -> None:
    """Sessions open on first use, from the bytes checked against the manifest then."""
    root = fresh_artifact.path
    rt = BudgetRuntime.load(root, threads=1)
    (root / "head.onnx").write_bytes((root / "stem.onnx").read_bytes())  # swapped behind it
    with pytest.raises(ManifestError, match="head.onnx .*changed since the artifact was loaded"):
        rt.infer(np.zeros((1, 3, 8, 8), np.float32), mask=[1, 0, 1])
    rt.close()


def test_symbolic_links_in_an_artifact_are_refused(fresh_artifact: Any, tmp_path: Path) -> None:
    root = fresh_artifact.path
    outside = tmp_path.parent / f"{tmp_path.name}-outside.onnx"
    outside.write_bytes((root / "head.onnx").read_bytes())
    (root / "head.onnx").unlink()
    (root / "head.onnx").symlink_to(outside)
    with pytest.raises(ManifestError, match="head.onnx .*is a symbolic link"):
        BudgetRuntime.load(root)
