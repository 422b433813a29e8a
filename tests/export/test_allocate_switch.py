"""The allocate_switch graph: mode 'allocate' for one image in one call, exactly as the
allocator graph, the choice on the host and the backbone would run it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from budget_edge.agent.allocator import build_allocator
from budget_edge.agent.policy import build_agent
from budget_edge.errors import ManifestError
from budget_edge.export.allocate_switch import can_compose
from budget_edge.export.exporter import export_checkpoint
from budget_edge.export.quantize import QuantizeSettings, quantize_artifact
from budget_edge.models import build_backbone
from budget_edge.models.checkpoint import LoadedCheckpoint
from budget_edge.runtime.manifest import BlockSpec, Manifest, VariantSpec
from budget_edge.runtime.runtime import BudgetRuntime

from .conftest import CALIBRATION, META

# Budgets on, between, below and above the calibrated ones (0, 0.25, 0.5, 0.75, 1).
BUDGETS = (0.0, 0.1, 0.25, 0.4, 0.5, 0.74, 0.75, 1.0)


def _calls(rt: BudgetRuntime) -> list[str]:
    """Record the graph of every backend call from now on."""
    calls: list[str] = []
    inner = rt.backend.run_device

    def spy(graph: str, inputs: Any) -> Any:
        calls.append(graph)
        return inner(graph, inputs)

    rt.backend.run_device = spy  # type: ignore[method-assign]
    return calls


def test_the_export_writes_it_with_the_allocator(allocated) -> None:
    m = allocated["manifest"]
    assert m.roles["allocate_switch"] == "allocate_switch"
    g = m.graph("allocate_switch")
    assert [t.name for t in g.inputs] == ["image", "level"]
    assert g.inputs[1].dtype == "int64" and g.inputs[1].shape == [1]
    assert [t.name for t in g.outputs] == ["logits", "mask", "probs"]


@pytest.mark.parametrize("budget", BUDGETS)
def test_one_image_in_one_call_equals_the_batch_path(allocated, budget) -> None:
    x = np.random.default_rng(11).standard_normal((12, 3, 32, 32)).astype(np.float32)
    with BudgetRuntime.load(allocated["dir"], threads=1) as rt:
        batch = rt.infer(x, budget=budget, mode="allocate")  # allocator + host + switch
        calls = _calls(rt)
        for i in range(len(x)):
            calls.clear()
            one = rt.infer(x[i:i + 1], budget=budget, mode="allocate")
            assert calls == ["allocate_switch"]
            np.testing.assert_array_equal(one.mask, batch.mask[i:i + 1])
            np.testing.assert_allclose(one.probs, batch.probs[i:i + 1], rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(one.logits, batch.logits[i:i + 1], rtol=1e-4, atol=1e-4)
            assert one.policy_flops == allocated["manifest"].flops.allocator
            assert one.latency_ms["hot"] > 0 and one.latency_ms["policy"] == 0
    if budget == 0.5:  # the counts vary: the choice inside the graph is put to the test
        assert len(np.unique(batch.mask.sum(axis=1))) >= 2


def test_chain_dispatch_a_cap_or_a_batch_take_the_separate_graphs(allocated) -> None:
    x = np.random.default_rng(12).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with BudgetRuntime.load(allocated["dir"], threads=1) as rt:
        calls = _calls(rt)
        rt.infer(x[:1], budget=0.5, mode="allocate", cap="components")
        assert "allocator" in calls and "allocate_switch" not in calls
        calls.clear()
        rt.infer(x, budget=0.5, mode="allocate")
        assert "allocator" in calls and "allocate_switch" not in calls
    with BudgetRuntime.load(allocated["dir"], threads=1, dispatch="chain") as rt:
        calls = _calls(rt)
        rt.infer(x[:1], budget=0.5, mode="allocate")
        assert "allocator" in calls and "allocate_switch" not in calls


def test_tied_probabilities_rank_the_lower_index_first_as_on_the_host(tmp_path, exporter
                                                                      ) -> None:
    torch.manual_seed(0)
    net = build_backbone("resnet20", shortcut="A").eval()
    agent = build_agent(net.num_components, "light").eval()
    allocator = build_allocator(net.num_components, calibration=CALIBRATION).eval()
    with torch.no_grad():  # every component gets the same probability
        agent.logit.weight.copy_(agent.logit.weight[:1].expand_as(agent.logit.weight))
        agent.logit.bias.fill_(0.1)
    loaded = LoadedCheckpoint(net, agent, META, "budget-edge", allocator=allocator)
    export_checkpoint(loaded, tmp_path, exporter=exporter)
    x = np.random.default_rng(13).standard_normal((4, 3, 32, 32)).astype(np.float32)
    with BudgetRuntime.load(tmp_path, threads=1) as rt:
        for budget in (0.25, 0.5, 0.75):
            batch = rt.infer(x, budget=budget, mode="allocate")
            for i in range(len(x)):
                one = rt.infer(x[i:i + 1], budget=budget, mode="allocate")
                np.testing.assert_array_equal(one.mask, batch.mask[i:i + 1])
                kept = int(one.mask.sum())
                assert one.mask[0, :kept].all()  # a prefix: lower indices first


def test_quantized_sets_compose_their_own(allocated, tmp_path) -> None:
    out = tmp_path / "artifact"
    shutil.copytree(allocated["dir"], out)
    manifest = quantize_artifact(out, QuantizeSettings("fp16"))
    spec = manifest.precisions["fp16"]
    assert "allocate_switch" in spec.files
    assert "allocate_switch" in spec.recipe
    x = np.random.default_rng(14).standard_normal((6, 3, 32, 32)).astype(np.float32)
    with BudgetRuntime.load(out, threads=1, precision="fp16") as rt:
        batch = rt.infer(x, budget=0.5, mode="allocate")
        calls = _calls(rt)
        for i in range(len(x)):
            one = rt.infer(x[i:i + 1], budget=0.5, mode="allocate")
            np.testing.assert_allclose(one.logits, batch.logits[i:i + 1], rtol=1e-2, atol=1e-2)
        assert set(calls) == {"allocate_switch"}


def test_tensorrt_never_plans_it(allocated) -> None:
    from budget_edge.export.engine_plan import plan_engines
    from budget_edge.runtime.backends.tensorrt_backend import graphs_to_run

    jobs = {j.graph for j in plan_engines(allocated["manifest"], "fp32")}
    assert "allocate_switch" not in jobs and "switch" not in jobs
    assert "allocate_switch" not in graphs_to_run(allocated["manifest"])


def _manifest_data(allocated) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((Path(allocated["dir"]) / "manifest.json").read_text())
    return data


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["roles"].update(allocator=None), "roles.allocate_switch"),
    (lambda d: next(g for g in d["graphs"] if g["name"] == "allocate_switch")["inputs"][1]
     .update(shape=[2]), "roles.allocate_switch"),
    (lambda d: next(g for g in d["graphs"] if g["name"] == "allocate_switch")["outputs"]
     .pop(), "roles.allocate_switch"),
])
def test_an_inconsistent_entry_is_refused(allocated, edit, message) -> None:
    data = _manifest_data(allocated)
    edit(data)
    if data["roles"].get("allocator") is None:  # keep the allocator's own checks quiet
        data["allocation"] = None
        data["flops"]["allocator"] = None
    with pytest.raises(ManifestError, match=message):
        Manifest.from_dict(data).validate()


def test_blocks_with_prefix_path_sets_get_no_one_call_graph() -> None:
    single = BlockSpec(0, 0, 1, 0, [VariantSpec([0], "b0")])
    prefix = BlockSpec(1, 0, 2, 0, [VariantSpec([0], "b1a"), VariantSpec([0, 1], "b1b")],
                       "b1s", variant_scheme="prefix")
    assert can_compose([single])
    assert not can_compose([single, prefix])
