"""An allocator exported with the model: the runtime's mode 'allocate' equals torch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from budget_edge.agent.allocator import build_allocator
from budget_edge.agent.masks import allocated_masks
from budget_edge.agent.policy import build_agent
from budget_edge.bench.measure import BenchData, BenchSettings, run_bench
from budget_edge.errors import ConfigError, InputError, ManifestError
from budget_edge.export.exporter import export_checkpoint
from budget_edge.models import build_backbone
from budget_edge.models.checkpoint import LoadedCheckpoint
from budget_edge.runtime.manifest import Manifest
from budget_edge.runtime.runtime import BudgetRuntime
from budget_edge.train.allocator import count_masks_of

from .conftest import META, realistic

CALIBRATION = {
    "budgets": [0.0, 0.25, 0.5, 0.75, 1.0],
    "prices": [9.0, 0.6, 0.3, 0.1, 0.0],
    "source": "test",
}


# Two ResNet-20 artifacts built here make this one of the suite's longest files: it goes
# out first (tests/conftest.py).
pytestmark = pytest.mark.slow


# "table": the allocator's count masks give the components (what `budget-edge allocate`
# makes); "ranking": an allocator from before the table, the agent ranks per image.
@pytest.fixture(scope="module", params=["table", "ranking"])
def allocated(request, tmp_path_factory, exporter):
    torch.manual_seed(0)
    net = realistic(build_backbone("resnet20", shortcut="A"), seed=4)
    agent = realistic(build_agent(net.num_components, "light"), seed=5, agent=True)
    table = None
    if request.param == "table":
        table = count_masks_of(agent, torch.randn(64, 3, 32, 32)).tolist()
    allocator = realistic(
        build_allocator(net.num_components, calibration=CALIBRATION, count_masks=table), seed=6
    )
    with torch.no_grad():  # spread the chances, so the counts differ between images
        allocator.chance.weight.mul_(20.0)
    out = tmp_path_factory.mktemp("allocated")
    loaded = LoadedCheckpoint(net, agent, META, "budget-edge", allocator=allocator)
    manifest = export_checkpoint(loaded, out, exporter=exporter)
    return {"net": net, "agent": agent, "allocator": allocator, "dir": out, "manifest": manifest}


def test_the_manifest_records_the_allocator(allocated) -> None:
    m = allocated["manifest"]
    assert m.roles["allocator"] == "allocator"
    assert m.allocation.budgets == CALIBRATION["budgets"]
    assert m.allocation.prices == CALIBRATION["prices"]
    graph = next(g for g in m.graphs if g.name == "allocator")
    if allocated["allocator"].count_masks is None:  # the agent's features run too
        assert m.allocation.count_masks is None
        assert len(graph.outputs) == 2
        assert m.flops.allocator > m.flops.policy
    else:  # the allocator alone
        assert m.allocation.count_masks == allocated["allocator"].count_masks
        assert [o.name for o in graph.outputs] == ["chances"]
        assert m.flops.allocator == allocated["allocator"].flops()


def test_with_count_masks_each_image_runs_the_row_of_its_count(allocated) -> None:
    table = allocated["allocator"].count_masks
    if table is None:
        pytest.skip("an allocator without count masks ranks with the agent")
    x = np.random.default_rng(7).standard_normal((32, 3, 32, 32)).astype(np.float32)
    with BudgetRuntime.load(allocated["dir"], threads=1) as rt:
        for budget in (0.3, 0.6):
            out = rt.infer(x, budget=budget, mode="allocate")
            counts = out.mask.sum(axis=1)
            np.testing.assert_array_equal(out.mask, np.asarray(table, np.uint8)[counts])
            assert out.probs is not None
            assert (out.probs[out.mask == 0] == 0).all()


@pytest.mark.parametrize("fused", [False, True])
def test_one_image_at_a_time_equals_the_general_path(allocated, fused, tmp_path, exporter) -> None:
    """Batch 1 decides through the count plan (runtime/count_plan.py) and runs the
    count's whole-mask graph when export fused the table's rows; it must give what the
    general path gives, field for field, and what the batch gives, row for row."""
    table = allocated["allocator"].count_masks
    if table is None:
        pytest.skip("an allocator without count masks ranks with the agent")
    rng = np.random.default_rng(8)
    x = rng.standard_normal((24, 3, 32, 32)).astype(np.float32)
    pixels = rng.integers(0, 256, (6, 32, 32, 3), np.uint8)
    directory = allocated["dir"]
    if fused:  # the rows come first among the fused masks
        directory = tmp_path / "fused"
        loaded = LoadedCheckpoint(
            allocated["net"],
            allocated["agent"],
            META,
            "budget-edge",
            allocator=allocated["allocator"],
        )
        manifest = export_checkpoint(
            loaded, directory, exporter=exporter, fuse_top=len(table) - 1, calib_data=x
        )
        # every row but all ones, which the static `full` graph runs
        assert {tuple(h.mask) for h in manifest.hot_policies} == {
            tuple(r) for r in table if not all(r)
        }
    with (
        BudgetRuntime.load(directory, threads=1) as rt,
        BudgetRuntime.load(directory, threads=1) as general,
    ):
        general._count_plan = None
        ran: list[str] = []
        run_device = rt.backend.run_device
        rt.backend.run_device = lambda graph, inputs: (
            ran.append(graph)
            or run_device(  # type: ignore[method-assign]
                graph, inputs
            )
        )

        def no_general_path(*args, **kwargs):
            raise AssertionError("batch 1 should take the count plan")

        rt._decide = no_general_path  # type: ignore[method-assign]
        whole = {tuple(h.mask): h.graph for h in rt.manifest.hot_policies}
        whole[(1,) * rt.num_components] = "full"
        for budget in (0.0, 0.3, 0.7, 1.0, 1):
            batch = general.infer(x, budget=budget, mode="allocate")
            for i, image in enumerate([*x, *pixels]):
                ran.clear()
                one = rt.infer(image[None], budget=budget, mode="allocate")
                want = general.infer(image[None], budget=budget, mode="allocate")
                for field in ("mask", "flops", "logits", "probs", "classes"):
                    got, expected = getattr(one, field), getattr(want, field)
                    assert got.dtype == expected.dtype, field
                    np.testing.assert_array_equal(got, expected, err_msg=field)
                assert one.policy_flops == want.policy_flops
                if i < len(x):
                    np.testing.assert_array_equal(one.mask, batch.mask[i : i + 1])
                    np.testing.assert_allclose(one.logits, batch.logits[i : i + 1], atol=1e-5)
                if fused:  # two calls: the allocator, then the count's graph
                    assert ran == ["allocator", whole[tuple(one.mask[0].tolist())]]
            one.mask[:] = 1  # a caller's edit must not reach the plan's table
            again = rt.infer(x[-1:], budget=budget, mode="allocate")
            np.testing.assert_array_equal(again.mask, batch.mask[-1:])
            # A budget given as one value per image takes the plan too, to the same answer.
            per_image = rt.infer(x[-1:], budget=np.array([budget], np.float32), mode="allocate")
            np.testing.assert_array_equal(per_image.logits, again.logits)


@pytest.mark.parametrize("budget", [0.2, 0.5, 0.9])
def test_runtime_allocate_equals_torch(allocated, budget) -> None:
    x = np.random.default_rng(1).standard_normal((16, 3, 32, 32)).astype(np.float32)
    with BudgetRuntime.load(allocated["dir"], threads=1) as rt:
        out = rt.infer(x, budget=budget, mode="allocate")
        want = (
            allocated_masks(allocated["agent"], allocated["allocator"], torch.from_numpy(x), budget)
            .numpy()
            .astype(np.uint8)
        )
        np.testing.assert_array_equal(out.mask, want)
        with torch.no_grad():
            logits = allocated["net"](torch.from_numpy(x), torch.from_numpy(want).bool())
        np.testing.assert_allclose(out.logits, logits.numpy(), rtol=1e-4, atol=1e-4)
        assert out.policy_flops == allocated["manifest"].flops.allocator
        chances = rt.run_allocator(x)
        assert chances.shape == (16, rt.num_components + 1)


def test_allocate_runs_easy_and_hard_images_differently(allocated) -> None:
    x = np.random.default_rng(2).standard_normal((64, 3, 32, 32)).astype(np.float32)
    with BudgetRuntime.load(allocated["dir"], threads=1) as rt:
        out = rt.infer(x, budget=0.5, mode="allocate")
    assert len(np.unique(out.mask.sum(axis=1))) >= 2


def test_an_artifact_without_an_allocator_says_how_to_get_one(tmp_path, exporter) -> None:
    torch.manual_seed(0)
    net = build_backbone("resnet8", shortcut="A").eval()
    agent = build_agent(net.num_components, "light").eval()
    export_checkpoint(
        LoadedCheckpoint(net, agent, META, "budget-edge"), tmp_path, exporter=exporter
    )
    x = np.zeros((2, 3, 32, 32), np.float32)
    with BudgetRuntime.load(tmp_path, threads=1) as rt:
        with pytest.raises(InputError, match="budget-edge allocate"):
            rt.infer(x, budget=0.5, mode="allocate")
        settings = BenchSettings(
            budgets=[0.5], batches=[1], warmup=0, iterations=1, mode="allocate"
        )
        with pytest.raises(ConfigError, match="allocator"):
            run_bench(rt, BenchData("random", np.zeros((2, 32, 32, 3), np.uint8), None), settings)


def test_an_uncalibrated_allocator_is_not_exported(tmp_path, exporter) -> None:
    torch.manual_seed(0)
    net = build_backbone("resnet8", shortcut="A").eval()
    agent = build_agent(net.num_components, "light").eval()
    bare = build_allocator(net.num_components).eval()
    with pytest.raises(ConfigError, match="never calibrated"):
        export_checkpoint(
            LoadedCheckpoint(net, agent, META, "budget-edge", allocator=bare),
            tmp_path / "out",
            exporter=exporter,
        )


def test_bench_measures_the_papers_agent_beside_the_router_in_one_run(allocated) -> None:
    """--also-mode greedy: every budget again in mode greedy, its own method, paired
    with its nearest competitor; the main mode listed again is measured once."""
    x = np.random.default_rng(7).integers(0, 255, (16, 32, 32, 3)).astype(np.uint8)
    labels = np.random.default_rng(8).integers(0, 10, 16)
    data = BenchData("test", x, labels)
    both = BenchSettings(
        budgets=[0.25, 0.75], batches=[1], warmup=0, iterations=2, also_modes=["greedy", "allocate"]
    )
    alone = BenchSettings(budgets=[0.25, 0.75], batches=[1], warmup=0, iterations=2, mode="greedy")
    with BudgetRuntime.load(allocated["dir"], threads=1) as rt:
        result = run_bench(rt, data, both)
        greedy = run_bench(rt, data, alone)
    assert result.settings["mode"] == "allocate"  # the artifact's own
    assert result.settings["also_modes"] == ["greedy"]
    assert [r.label for r in result.rows if r.kind == "mode"] == ["greedy c=0.25", "greedy c=0.75"]
    for c in (0.25, 0.75):
        row = result.row("mode", 1, c, name="greedy")
        same = greedy.row("budget", 1, c)
        assert (row.accuracy, row.usage) == (same.accuracy, same.usage)  # greedy really ran
        assert row.paired is not None
    assert "mode allocate (and greedy)" in result.modes_text


def test_bench_also_mode_allocate_needs_an_allocator(tmp_path) -> None:
    from runtime.conftest import make_net, write_artifact  # a tiny artifact, no allocator

    write_artifact(make_net("resnet"), tmp_path)
    x = np.zeros((2, 8, 8, 3), np.uint8)
    settings = BenchSettings(budgets=[0.5], batches=[1], iterations=1, also_modes=["allocate"])
    with (
        BudgetRuntime.load(tmp_path, threads=1) as rt,
        pytest.raises(ConfigError, match="allocator"),
    ):
        run_bench(rt, BenchData("random", x, None), settings)


def test_bench_times_the_allocator_as_the_decision(allocated) -> None:
    x = np.random.default_rng(3).integers(0, 255, (8, 32, 32, 3)).astype(np.uint8)
    settings = BenchSettings(budgets=[0.5], batches=[1], warmup=0, iterations=2, mode="allocate")
    with BudgetRuntime.load(allocated["dir"], threads=1) as rt:
        result = run_bench(rt, BenchData("random", x, None), settings)
        policy_row = result.row("policy", 1, name="allocator")  # the row says what decides
        assert policy_row.flops_share == pytest.approx(
            allocated["manifest"].flops.allocator / rt.full_flops
        )
        assert result.row("budget", 1, 0.5).distinct_masks >= 1


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.pop("allocation"), "allocation"),
        (lambda d: d["allocation"].update(prices=[1, 2, 3, 4, 5]), "never rise"),
        (lambda d: d["allocation"].update(budgets=[0.0, 0.5]), "equally long"),
        (lambda d: d["allocation"].update(prices=["a"] * 5), r"prices\[0\]: expected `float`"),
        # JSON cannot hold inf, a Python caller can: named at its field, not as "not JSON"
        (
            lambda d: d["allocation"].update(prices=[float("inf"), 0.6, 0.3, 0.1, 0.0]),
            r"allocation\.prices\[0\]: expected `float` <= 1e\+30",
        ),
        (lambda d: d["flops"].pop("allocator"), "flops.allocator"),
        (lambda d: d["roles"].pop("allocator"), "allocation"),
        (
            lambda d: next(g for g in d["graphs"] if g["name"] == "allocator")["outputs"][0].update(
                shape=["batch", 3]
            ),
            "roles.allocator",
        ),
    ],
)
def test_inconsistent_allocator_entries_are_refused(allocated, edit, message) -> None:
    data = json.loads((allocated["dir"] / "manifest.json").read_text())
    edit(data)
    with pytest.raises(ManifestError, match=message):
        Manifest.from_dict(data).validate()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.pop(), "count_masks"),
        (lambda t: t[1].__setitem__(slice(None), [1] * len(t[1])), "row k keeping k"),
        (lambda t: t[2].__setitem__(0, 2), r"count_masks\[2\]\[0\]: expected `int` <= 1"),
        (lambda t: t[2].__setitem__(0, "1"), "expected `int`, got '1'"),
    ],
)
def test_a_damaged_table_of_count_masks_is_refused(allocated, edit, message) -> None:
    data = json.loads((allocated["dir"] / "manifest.json").read_text())
    if data["allocation"]["count_masks"] is None:
        pytest.skip("no count masks to damage")
    edit(data["allocation"]["count_masks"])
    with pytest.raises(ManifestError, match=message):
        Manifest.from_dict(data).validate()


def test_an_allocator_graph_must_match_its_count_masks(allocated) -> None:
    data = json.loads((allocated["dir"] / "manifest.json").read_text())
    k = len(data["components"])
    if data["allocation"]["count_masks"] is None:  # two outputs: a table would need one
        data["allocation"]["count_masks"] = [[1] * i + [0] * (k - i) for i in range(k + 1)]
        want = "the count masks give the components"
    else:  # one output: without the table the level probabilities are missing
        data["allocation"]["count_masks"] = None
        want = "level probabilities"
    with pytest.raises(ManifestError, match=want):
        Manifest.from_dict(data).validate()


def test_the_server_answers_mode_allocate_like_the_runtime(allocated) -> None:
    from serve.conftest import image_input, infer_json, load_model, serving

    images = np.random.default_rng(4).integers(0, 255, (5, 32, 32, 3)).astype(np.uint8)
    model = load_model(allocated["dir"])
    try:
        with serving(model) as url:
            response = infer_json(
                url,
                model.name,
                {
                    "inputs": [image_input(images)],
                    "parameters": {"budget": 0.5, "mode": "allocate"},
                },
            )
            # Without a mode the server runs the artifact's own: allocate.
            default = infer_json(
                url, model.name, {"inputs": [image_input(images)], "parameters": {"budget": 0.5}}
            )
        assert response.status == 200, response.json()
        assert model.metadata()["parameters"] == {"mode": "allocate"}
        want = model.runtime.infer(images, budget=0.5, mode="allocate")
        for answer in (response, default):
            outputs = {o["name"]: o for o in answer.json()["outputs"]}
            mask = np.reshape(outputs["MASK"]["data"], outputs["MASK"]["shape"])
            np.testing.assert_array_equal(mask.astype(np.uint8), want.mask)
    finally:
        model.runtime.close()


def test_serve_mode_overrides_the_artifacts_and_is_checked(allocated) -> None:
    from serve.conftest import load_model

    from budget_edge.serve.model import ServedModel

    model = load_model(allocated["dir"])
    try:
        greedy = ServedModel(model.runtime, model.controller, mode="greedy")
        assert greedy.metadata()["parameters"] == {"mode": "greedy"}
        with pytest.raises(ConfigError, match="--mode must be one of"):
            ServedModel(model.runtime, model.controller, mode="fastest")
    finally:
        model.runtime.close()


def test_hot_masks_include_the_allocated_masks(allocated) -> None:
    from budget_edge.agent.masks import masks_over_budgets

    x = np.random.default_rng(5).standard_normal((12, 3, 32, 32)).astype(np.float32)
    budgets = (0.3, 0.7)
    plain = masks_over_budgets(allocated["agent"], x, budgets)
    both = masks_over_budgets(allocated["agent"], x, budgets, allocator=allocated["allocator"])
    assert len(both) == 2 * len(plain)
    want = np.concatenate(
        [
            allocated_masks(
                allocated["agent"], allocated["allocator"], torch.from_numpy(x), c
            ).numpy()
            for c in budgets
        ]
    )
    np.testing.assert_array_equal(both[len(plain) :], want.astype(np.int64))


def test_build_engines_plans_an_engine_for_the_allocator(allocated) -> None:
    from budget_edge.export.engine_plan import plan_engines
    from budget_edge.runtime.backends.tensorrt_backend import graphs_to_run

    jobs = {j.graph: j.role for j in plan_engines(allocated["manifest"], "fp32")}
    assert jobs["allocator"] == "allocator"
    assert "allocator" in graphs_to_run(allocated["manifest"])


def test_allocate_with_static_masks_is_refused_not_ignored(allocated) -> None:
    x = np.zeros((1, 3, 32, 32), np.float32)
    with BudgetRuntime.load(allocated["dir"], threads=1) as rt:
        with pytest.raises(InputError, match="policy='agent'"):
            rt.infer(x, budget=0.5, mode="allocate", policy="static")


def test_negative_allocator_flops_are_refused(allocated) -> None:
    data = json.loads((allocated["dir"] / "manifest.json").read_text())
    data["flops"]["allocator"] = -5
    with pytest.raises(ManifestError, match=r"flops\.allocator: expected `int` >= 0, got -5"):
        Manifest.from_dict(data).validate()


def test_a_cap_makes_the_allocated_budget_a_ceiling_per_image(allocated) -> None:
    x = np.random.default_rng(6).standard_normal((32, 3, 32, 32)).astype(np.float32)
    with BudgetRuntime.load(allocated["dir"], threads=1) as rt:
        k = rt.num_components
        # A budget at which some images run more than c K components.
        budget = next(
            c
            for c in (0.3, 0.5, 0.7)
            if (rt.infer(x, budget=c, mode="allocate").mask.sum(axis=1) > c * k).any()
        )
        free = rt.infer(x, budget=budget, mode="allocate")
        capped = rt.infer(x, budget=budget, mode="allocate", cap="components")
    assert (capped.mask.sum(axis=1) <= budget * k).all()
    assert (capped.mask <= free.mask).all()  # only the least probable ones were dropped
    assert capped.usage.mean() < free.usage.mean()


@pytest.mark.parametrize("n", [1, 3])
def test_allocator_outputs_of_the_wrong_size_are_refused(allocated, n) -> None:
    """A graph whose chances do not have K + 1 values per image (a swapped or damaged
    graph that still loads) is an InputError on the batch-1 path and the general one."""
    if allocated["allocator"].count_masks is None:
        pytest.skip("the table's paths")
    x = np.zeros((n, 3, 32, 32), np.float32)
    with BudgetRuntime.load(allocated["dir"], threads=1) as rt:
        run_device = rt.backend.run_device

        def short(graph, inputs):
            out = run_device(graph, inputs)
            return [np.asarray(out[0])[:, :-1], *out[1:]] if graph == "allocator" else out

        rt.backend.run_device = short  # type: ignore[method-assign]
        with pytest.raises(InputError, match="allocator outputs do not fit"):
            rt.infer(x, budget=0.5, mode="allocate")


def test_the_artifact_runs_its_own_mode_by_default(allocated, tmp_path, exporter) -> None:
    """`export CKPT` then `infer(image, budget=c)`: mode allocate with the count masks fused."""
    m = allocated["manifest"]
    assert m.decision_mode == "allocate"
    table = allocated["allocator"].count_masks
    fused = {tuple(h.mask) for h in m.hot_policies}
    if table is not None:  # every row but all kept (the static graph) has its graph
        assert fused == {tuple(r) for r in table if not all(r)}
    else:
        assert fused == set()
    rt = BudgetRuntime.load(allocated["dir"], backend="onnxruntime", threads=1)
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    default = rt.infer(images, budget=0.4)
    explicit = rt.infer(images, budget=0.4, mode="allocate")
    assert np.array_equal(default.mask, explicit.mask)
    assert rt.default_mode == "allocate"
    # The paper's agent stays one flag away, in the manifest too.
    loaded = LoadedCheckpoint(
        allocated["net"], allocated["agent"], META, "budget-edge", allocator=allocated["allocator"]
    )
    greedy = export_checkpoint(loaded, tmp_path / "greedy", exporter=exporter, mode="greedy")
    assert greedy.decision_mode == "greedy"
    assert greedy.hot_policies == []
    rt_greedy = BudgetRuntime.load(tmp_path / "greedy", backend="onnxruntime", threads=1)
    assert np.array_equal(
        rt_greedy.infer(images, budget=0.4).mask, rt.infer(images, budget=0.4, mode="greedy").mask
    )


def test_a_mode_the_checkpoint_cannot_run_is_refused(allocated, tmp_path, exporter) -> None:
    no_allocator = LoadedCheckpoint(allocated["net"], allocated["agent"], META, "budget-edge")
    with pytest.raises(ConfigError, match="--mode allocate needs an allocator"):
        export_checkpoint(no_allocator, tmp_path / "a", exporter=exporter, mode="allocate")
    assert export_checkpoint(no_allocator, tmp_path / "b", exporter=exporter).decision_mode == (
        "greedy"
    )
    backbone_only = LoadedCheckpoint(allocated["net"], None, META, "budget-edge")
    with pytest.raises(ConfigError, match="no agent to decide with"):
        export_checkpoint(backbone_only, tmp_path / "c", exporter=exporter, mode="greedy")
    m = Manifest.load(allocated["dir"])
    m.decision_mode = "fastest"
    with pytest.raises(ManifestError, match="decision_mode"):
        m.validate()


def test_the_count_table_is_the_uniform_baseline_of_the_same_graphs(allocated) -> None:
    from budget_edge.bench.measure import Baselines
    from budget_edge.runtime.static_masks import from_count_table

    x = np.random.default_rng(5).integers(0, 255, (12, 32, 32, 3)).astype(np.uint8)
    labels = np.random.default_rng(6).integers(0, 10, 12)
    with BudgetRuntime.load(allocated["dir"], threads=1) as rt:
        if allocated["allocator"].count_masks is None:
            with pytest.raises(InputError, match="no table of count masks"):
                from_count_table(rt)
            return
        masks = from_count_table(rt)
        table = allocated["allocator"].count_masks
        assert [m.mask for m in masks] == [tuple(r) for r in table if any(r)]
        assert [m.kept for m in masks] == list(range(1, len(table)))
        settings = BenchSettings(budgets=[0.5], batches=[1], warmup=0, iterations=2)
        baselines = Baselines(static_masks=masks, static_masks_name="count")  # as bench does
        result = run_bench(rt, BenchData("test", x, labels), settings, baselines=baselines)
    row = result.row("static-mask", 1, 0.5, name="count")
    assert row.label == "count mask c=0.5"  # named for what it is, not a searched mask
    k = round(0.5 * len(masks))
    assert row.usage == pytest.approx(k / len(masks))  # row k of the table, for every image
    low, high = row.accuracy_ci
    assert low <= row.accuracy <= high
    budget = result.row("budget", 1, 0.5)
    assert budget.paired is not None
    assert row.paired is not None
    # What the per-image choice adds over the count mask of the same budget.
    uniform = budget.paired_uniform
    assert uniform is not None
    assert uniform["against"] == row.label  # the only mask measured
    assert uniform["accuracy_delta"] == pytest.approx(budget.accuracy - row.accuracy)
    assert uniform["usage"] == budget.usage
    assert 0 <= uniform["p_value"] <= 1
    pairs = budget.paired_uniform_latency  # the only mask: on one side of it, or the other
    assert pairs is not None
    for stat, ms in (("median", row.reported_ms), ("mean", row.latency.mean)):
        sides = [p for p in pairs[stat].values() if p is not None]
        assert len(sides) == 1 or sides[0] == sides[1]  # on both sides only at equal ms
        assert sides[0]["against"] == row.label
        assert sides[0]["against_ms"] == ms
        assert sides[0]["accuracy_delta"] == uniform["accuracy_delta"]


def test_warm_up_makes_every_session_the_default_path_needs(allocated) -> None:
    x = np.random.default_rng(7).integers(0, 255, (1, 32, 32, 3)).astype(np.uint8)
    with BudgetRuntime.load(allocated["dir"], threads=1, warm_up=True) as rt:
        made = set(rt.backend._sessions)
        assert {h.graph for h in rt.manifest.hot_policies} <= made
        assert rt.manifest.roles["full"] in made
        assert rt.manifest.roles["allocator"] in made
        for budget in (0.1, 0.5, 0.9):
            rt.infer(x, budget=budget)
        assert set(rt.backend._sessions) == made  # no call after it makes a session


def test_an_empty_list_of_trusted_keys_is_refused_not_ignored(allocated) -> None:
    for keys in ([], "", allocated["dir"]):
        with pytest.raises(ConfigError, match="non-empty list of public key files"):
            BudgetRuntime.load(allocated["dir"], threads=1, trusted_keys=keys)


def test_an_artifact_from_before_the_mode_was_recorded_keeps_deciding_greedy(
    allocated, tmp_path
) -> None:
    import shutil

    from budget_edge.runtime.manifest import write_manifest

    old = tmp_path / "old"
    shutil.copytree(allocated["dir"], old)
    manifest = Manifest.load(old)
    manifest.decision_mode = None
    write_manifest(old, manifest)
    x = np.random.default_rng(8).integers(0, 255, (4, 32, 32, 3)).astype(np.uint8)
    with BudgetRuntime.load(old, threads=1) as rt:
        assert rt.default_mode == "greedy"
        assert np.array_equal(
            rt.infer(x, budget=0.5).mask, rt.infer(x, budget=0.5, mode="greedy").mask
        )
