"""bench: option parsing, data checks, latency statistics, and what run_bench measures."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from runtime.conftest import make_net, write_artifact

from budget_edge.bench.measure import (
    Baselines,
    BenchData,
    BenchRow,
    BenchSettings,
    Countdown,
    LatencyStats,
    TimedJob,
    _jobs,
    duration_text,
    load_bench_data,
    load_search_data,
    run_bench,
    split_data_spec,
    time_jobs,
    timing_pool,
)
from budget_edge.errors import ConfigError, DataError
from budget_edge.runtime import BudgetRuntime
from budget_edge.runtime.static_masks import mask_accuracy, search_static_masks

FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def rt(resnet_artifact: Any) -> BudgetRuntime:
    return BudgetRuntime.load(resnet_artifact.path, backend="onnxruntime", threads=1)


def _pixels(rt: BudgetRuntime, n: int, seed: int = 0) -> np.ndarray:
    c, h, w = rt.manifest.preprocessing.input_size
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"budgets": []}, "no budgets"),
        ({"batches": [0]}, "at least 1"),
        ({"iterations": 0}, "--iterations"),
        ({"warmup": -1}, "--warmup"),
        ({"mode": "best"}, "--mode"),
        ({"cap": "watts"}, "--cap"),
        ({"rounds": 0}, "rounds"),
    ],
)
def test_settings_check(change: dict[str, Any], match: str) -> None:
    settings = (
        BenchSettings(budgets=[0.5], **change)
        if "budgets" not in change
        else BenchSettings(**change)
    )
    with pytest.raises(ConfigError, match=match):
        settings.check()


# ---- statistics and timing pools ------------------------------------------------------


def test_latency_stats_follow_trtexec_fields() -> None:
    stats = LatencyStats.of([float(v) for v in range(100, 0, -1)])  # order must not matter
    assert stats.min == 1.0
    assert stats.mean == 50.5
    assert stats.median == 50.5
    assert stats.p90 == pytest.approx(90.1)
    assert stats.p95 == pytest.approx(95.05)
    assert stats.p99 == pytest.approx(99.01)
    with pytest.raises(ValueError):
        LatencyStats.of([])


def test_timing_pool_takes_consecutive_images_and_wraps() -> None:
    images = np.arange(5, dtype=np.uint8).reshape(5, 1, 1, 1)
    pool = timing_pool(images, batch=2, iterations=100)
    assert len(pool) == 3  # ceil(5 / 2) distinct batches cover every image
    assert [p.ravel().tolist() for p in pool] == [[0, 1], [2, 3], [4, 0]]
    assert len(timing_pool(images, batch=1, iterations=2)) == 2
    assert len(timing_pool(np.zeros((1000, 1, 1, 1), np.uint8), 1, 1000)) == 64


def test_time_jobs_times_exactly_the_iterations_in_rounds() -> None:
    order: list[str] = []
    pool = [np.zeros(1)] * 3

    def call(name: str) -> Any:
        return lambda x: order.append(name)

    jobs = [
        TimedJob("static", 1, None, call("a"), pool),
        TimedJob("budget", 1, 0.5, call("b"), pool),
    ]
    time_jobs(jobs, warmup=2, iterations=7, rounds=3)
    assert [len(j.times) for j in jobs] == [7, 7]
    assert [len(j.cpu_times) for j in jobs] == [7, 7]
    # Priming (3 pool batches) and warmup (2) first, then rounds of 3, 2, 2 calls.
    assert order[:10] == ["a"] * 5 + ["b"] * 5
    assert order[10:] == ["a"] * 3 + ["b"] * 3 + ["a"] * 2 + ["b"] * 2 + ["a"] * 2 + ["b"] * 2


def test_time_jobs_tells_its_progress_between_jobs_never_within_one() -> None:
    events: list[Any] = []
    pool = [np.zeros(1)] * 2
    jobs = [TimedJob("static", 1, None, lambda x: events.append("call"), pool) for _ in range(3)]
    time_jobs(jobs, warmup=1, iterations=5, rounds=2, progress=lambda d, t: events.append((d, t)))
    told = [e for e in events if e != "call"]
    total = 3 * (2 + 1 + 5)
    assert all(t == total for _, t in told)
    assert told[-1] == (total, total)
    assert [d for d, _ in told] == sorted({d for d, _ in told})  # rising
    # Each report comes after whole jobs: the calls before it add up to what it says.
    calls = 0
    for event in events:
        if event == "call":
            calls += 1
        else:
            assert event[0] == calls


def test_countdown_says_the_count_and_the_time_left() -> None:
    said: list[str] = []
    now = [100.0]
    countdown = Countdown(said.append, clock=lambda: now[0])
    countdown(0, 4, "step 1/4")  # no pace yet
    now[0] += 30.0
    countdown(1, 4, "step 2/4")  # 30 s a step, 3 to go
    now[0] += 60.0
    countdown(3, 4, "step 4/4")
    countdown(4, 4, "done")
    assert said == [
        "step 1/4",
        "step 2/4; about 1 min 30 s left",
        "step 4/4; about 30 s left",
        "done",
    ]
    assert [duration_text(s) for s in (0.4, 59.6, 61, 3599, 7322)] == [
        "0 s",
        "1 min 00 s",
        "1 min 01 s",
        "59 min 59 s",
        "2 h 02 min",
    ]


def test_the_decision_row_is_named_for_what_decides() -> None:
    """In mode allocate the allocator decides, and its row says so (not 'policy')."""
    from types import SimpleNamespace

    fake = SimpleNamespace(manifest=SimpleNamespace(roles={"full": "full"}), precision="fp32")
    data = BenchData("pixels", np.zeros((2, 4, 4, 1), np.uint8), None)
    stats = LatencyStats(1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    for mode, label in (("allocate", "allocator"), ("greedy", "policy"), (None, "policy")):
        jobs = _jobs(cast(BudgetRuntime, fake), data, _settings(mode=mode), Baselines())
        deciding = [j for j in jobs if j.kind == "policy"]
        assert len(deciding) == 2  # one per batch size
        row = BenchRow("policy", 1, None, stats, 1.0, name=deciding[0].name)
        assert row.label == label, mode


# ---- data ---------------------------------------------------------------------------


def test_random_data_has_the_model_shape_and_no_labels(rt: BudgetRuntime) -> None:
    data = load_bench_data("random", rt, eval_images=12, seed=3)
    c, h, w = rt.manifest.preprocessing.input_size
    assert data.images.shape == (12, h, w, c)
    assert data.images.dtype == np.uint8
    assert data.labels is None
    again = load_bench_data("random", rt, eval_images=12, seed=3)
    np.testing.assert_array_equal(data.images, again.images)
    assert len(load_bench_data("random", rt).images) == 256


def test_data_spec_errors(rt: BudgetRuntime, tmp_path: Path) -> None:
    assert split_data_spec("cifar10:/x", None) == ("cifar10", "/x")
    assert split_data_spec("cifar10", "/y") == ("cifar10", "/y")
    with pytest.raises(ConfigError, match="pass the path once"):
        split_data_spec("cifar10:/x", "/y")
    with pytest.raises(ConfigError, match="empty path"):
        split_data_spec("cifar10:", None)
    with pytest.raises(ConfigError, match="no --data-dir"):
        load_bench_data("random", rt, data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="--eval-images"):
        load_bench_data("random", rt, eval_images=0)
    with pytest.raises(DataError):
        load_bench_data("cifar10", rt, data_dir=str(tmp_path / "missing"))
    with pytest.raises(DataError, match="unknown dataset"):
        load_bench_data("imagenet-22k", rt)


@pytest.mark.skipif(not FMNIST.is_dir(), reason="Fashion-MNIST is not installed")
def test_dataset_that_does_not_fit_the_model_is_refused(rt: BudgetRuntime) -> None:
    with pytest.raises(DataError, match=r"\(1, 28, 28\) but the model takes"):
        load_bench_data("fashion-mnist", rt, eval_images=5)


def _folder_dataset(root: Path, rt: BudgetRuntime, per_class: int, classes: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    _, h, w = rt.manifest.preprocessing.input_size
    for k in range(classes):
        (root / f"class{k}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"class{k}" / f"{i}.png")
    return root


def test_folder_dataset_with_the_wrong_class_count_is_refused(
    rt: BudgetRuntime, tmp_path: Path
) -> None:
    root = _folder_dataset(tmp_path / "imgs", rt, per_class=1, classes=3)
    with pytest.raises(DataError, match="3 classes but the model predicts 5"):
        load_bench_data(f"folder:{root}", rt)


def test_folder_dataset_is_loaded_with_labels(rt: BudgetRuntime, tmp_path: Path) -> None:
    root = _folder_dataset(tmp_path / "imgs", rt, per_class=2, classes=5)
    data = load_bench_data("folder", rt, data_dir=str(root), eval_images=7)
    assert data.images.shape[0] == 7
    assert data.labels is not None
    assert data.labels.tolist() == [0, 0, 1, 1, 2, 2, 3]


# ---- run_bench -----------------------------------------------------------------------


def _settings(**change: Any) -> BenchSettings:
    base: dict[str, Any] = {
        "budgets": [0.3, 1.0],
        "batches": [1, 3],
        "warmup": 1,
        "iterations": 4,
        "rounds": 2,
        "eval_batch": 5,
    }
    return BenchSettings(**(base | change))


def test_run_bench_rows_and_what_they_measure(rt: BudgetRuntime) -> None:
    images = _pixels(rt, 11)
    # Labels the static model gets right by construction: its own predictions.
    labels = rt.run_full(images).argmax(axis=1).astype(np.int64)
    data = BenchData("synthetic", images, labels)
    result = run_bench(rt, data, _settings(), threads=1)

    kinds = [(r.kind, r.batch, r.budget) for r in result.rows]
    assert kinds == [
        ("static", 1, None),
        ("policy", 1, None),
        ("budget", 1, 0.3),
        ("budget", 1, 1.0),
        ("static", 3, None),
        ("policy", 3, None),
        ("budget", 3, 0.3),
        ("budget", 3, 1.0),
    ]
    static = result.row("static", 3)
    assert static.accuracy == 1.0
    assert static.usage == 1.0
    assert static.flops_share == 1.0
    for c in (0.3, 1.0):
        direct = rt.infer(images, budget=c)
        row = result.row("budget", 1, c)
        assert row.usage == pytest.approx(float(direct.usage.mean()))
        assert row.flops_share == pytest.approx(float(direct.flops_share.mean()))
        assert row.accuracy == pytest.approx(float((direct.classes == labels).mean()))
        assert row.distinct_masks == len({m.tobytes() for m in direct.mask})
        assert set(row.breakdown_ms) == {"policy", "stem", "blocks", "head", "hot", "total"}
        assert row.breakdown_ms["policy"] > 0
    policy = result.row("policy", 1)
    assert policy.accuracy is None
    assert policy.usage is None
    assert policy.flops_share == pytest.approx((rt.manifest.flops.policy or 0) / rt.full_flops)
    for r in result.rows:
        lat = r.latency
        assert 0 < lat.min <= lat.median <= lat.p90 <= lat.p95 <= lat.p99
        assert r.throughput == pytest.approx(r.batch / (lat.mean / 1e3))
        assert r.cpu_ms is not None
        assert r.cpu_ms >= 0
    env = result.environment
    assert env["backend"] == "onnxruntime"
    assert env["threads_effective"] == 1
    assert env["cpu"]
    assert env["versions"]["onnxruntime"]
    assert result.data == {"name": "synthetic", "eval_images": 11, "labelled": True}
    assert result.model["num_components"] == rt.num_components
    assert result.latency_table(3) == [
        (0.3, result.row("budget", 3, 0.3).latency.p95),
        (1.0, result.row("budget", 3, 1.0).latency.p95),
    ]


def test_a_budget_row_records_the_masks_it_ran(rt: BudgetRuntime) -> None:
    """The digest of every image's mask is what tells budgets that decided alike apart
    from those that did not (group_identical_decisions)."""
    from budget_edge.bench.measure import measure_quality

    data = BenchData("pixels", _pixels(rt, 12), None)
    s = _settings().in_mode("rank")  # round(c K) components: other budgets, other masks
    again = measure_quality(rt, data, 0.3, s)
    low, full = (measure_quality(rt, data, c, s) for c in (0.3, 1.0))
    assert low.decisions is not None
    assert low.decisions == again.decisions
    assert low.usage != full.usage  # other masks ran...
    assert low.decisions != full.decisions  # ...and the digest says so
    assert measure_quality(rt, data, None, _settings()).decisions is None  # the static graph


def test_run_bench_counts_what_it_evaluates_and_times(rt: BudgetRuntime) -> None:
    said: list[str] = []
    data = BenchData("pixels", _pixels(rt, 6), None)
    run_bench(rt, data, _settings(), threads=1, progress=said.append)
    evaluating = [m for m in said if m.startswith("evaluating ")]
    assert [m.split(":")[0] for m in evaluating] == [
        "evaluating 1/3",
        "evaluating 2/3",
        "evaluating 3/3",
    ]
    assert evaluating[0] == "evaluating 1/3: the static model (fp32), 6 images"
    assert evaluating[1].startswith("evaluating 2/3: budget 0.3 (fp32), 6 images; about ")
    timing = [m for m in said if m.startswith("timing 8 rows: ")]
    # four rows per batch size, each primed on its pool, warmed once and timed 4 times
    total = sum(4 * (len(timing_pool(data.images, n, 4)) + 1 + 4) for n in (1, 3))
    assert timing[-1] == f"timing 8 rows: {total}/{total} calls"
    assert all(" left" in m for m in timing[:-1])


def test_run_bench_without_labels_has_no_accuracy(rt: BudgetRuntime) -> None:
    data = load_bench_data("random", rt, eval_images=6)
    result = run_bench(rt, data, _settings(budgets=[0.5], batches=[2], cap="components"))
    assert all(r.accuracy is None for r in result.rows)
    # The component cap makes the budget a ceiling.
    usage = result.row("budget", 2, 0.5).usage
    assert usage is not None
    assert usage <= 0.5


def test_run_bench_needs_a_policy(tmp_path: Path) -> None:
    write_artifact(make_net("resnet"), tmp_path, policy=False)
    with BudgetRuntime.load(tmp_path, backend="onnxruntime", threads=1) as no_policy:
        data = load_bench_data("random", no_policy, eval_images=2)
        with pytest.raises(ConfigError, match="no policy graph"):
            run_bench(no_policy, data, _settings())


def test_run_bench_without_full_graph_has_no_static_row(tmp_path: Path) -> None:
    write_artifact(make_net("resnet"), tmp_path, full=False)
    with BudgetRuntime.load(tmp_path, backend="onnxruntime", threads=1) as rt_nofull:
        data = load_bench_data("random", rt_nofull, eval_images=3)
        result = run_bench(rt_nofull, data, _settings(budgets=[1.0], batches=[1]))
    assert [r.kind for r in result.rows] == ["policy", "budget"]


def test_run_bench_times_static_masks_and_zoo_in_the_same_run(
    rt: BudgetRuntime, tmp_path: Path
) -> None:
    images = _pixels(rt, 9)
    labels = rt.run_full(images).argmax(axis=1).astype(np.int64)
    data = BenchData("synthetic", images, labels)
    masks = search_static_masks(rt, images, labels)
    write_artifact(make_net("resnet", seed=5), tmp_path)
    with BudgetRuntime.load(tmp_path, backend="onnxruntime", threads=1) as small:
        baselines = Baselines(static_masks=masks, zoo={"small": small})
        result = run_bench(
            rt, data, _settings(budgets=[0.34, 1.0], batches=[2]), baselines=baselines
        )
        zoo_acc = float((small.run_full(images).argmax(axis=1) == labels).mean())
    kinds = [r.label for r in result.rows]
    assert kinds == [
        "static",
        "policy",
        "c=0.34",
        "c=1",
        "static mask c=0.34",
        "static mask c=1",
        "zoo small",
    ]
    one = result.row("static-mask", 2, 0.34)
    chosen = next(m for m in masks if m.kept == 1)  # round(0.34 * 3)
    assert one.usage == pytest.approx(1 / 3)
    assert one.flops_share == chosen.flops_share
    assert one.accuracy == pytest.approx(
        mask_accuracy(rt, images, labels, np.array(chosen.mask, np.uint8))
    )
    assert result.row("static-mask", 2, 1.0).accuracy == 1.0
    assert one.distinct_masks == 1
    zoo = result.row("zoo", 2, name="small")
    assert zoo.accuracy == pytest.approx(zoo_acc)
    assert zoo.usage is None
    assert result.to_dict()["static_masks"][0]["kept"] == rt.num_components


def test_zoo_of_another_task_is_refused(rt: BudgetRuntime, tmp_path: Path) -> None:
    write_artifact(make_net("resnext", channels=1), tmp_path)
    with BudgetRuntime.load(tmp_path, backend="onnxruntime", threads=1) as other:
        data = load_bench_data("random", rt, eval_images=2)
        with pytest.raises(ConfigError, match="same task"):
            run_bench(rt, data, _settings(), baselines=Baselines(zoo={"other": other}))


def test_static_search_needs_labelled_training_data(rt: BudgetRuntime) -> None:
    with pytest.raises(ConfigError, match="labelled data"):
        load_search_data("random", rt, None, 10)
    with pytest.raises(ConfigError, match="at least 1"):
        load_search_data("fashion-mnist", rt, None, 0)


def test_static_masks_are_searched_on_the_artifacts_validation_split(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from budgetnet_helpers import write_tiny_fashion_mnist

    from budget_edge.data.registry import load_arrays
    from budget_edge.data.split import split_validation

    data = write_tiny_fashion_mnist(tmp_path, n_train=60, n_test=4)
    _, val, split = split_validation(load_arrays("fashion-mnist", data, "train"), 12)
    manifest = SimpleNamespace(
        preprocessing=SimpleNamespace(input_size=(1, 28, 28)), validation_split=split.as_meta()
    )
    fake = cast(BudgetRuntime, SimpleNamespace(manifest=manifest, num_classes=10))
    search = load_search_data("fashion-mnist", fake, str(data), 8)
    assert search.name == "fashion-mnist validation split (8 images)"
    assert np.array_equal(search.images, val.images[:8])
    manifest.validation_split = None  # an artifact from before the split: the training tail
    assert load_search_data("fashion-mnist", fake, str(data), 8).name == "fashion-mnist train[52:]"


def test_each_row_is_paired_with_the_nearest_latency_row_of_another_method() -> None:
    from budget_edge.bench.measure import BenchRow, LatencyStats, pair_with_nearest

    def row(kind: str, median: float, name: str | None = None, batch: int = 1) -> BenchRow:
        stats = LatencyStats(median, median, median, median, median, median)
        return BenchRow(kind, batch, 0.5 if kind == "budget" else None, stats, 1.0, name=name)

    budget, other_budget = row("budget", 1.0), row("budget", 1.05)
    zoo, static, far = row("zoo", 1.2, "small"), row("static", 3.0), row("zoo", 1.0, batch=8)
    policy = row("policy", 1.0)
    rows = [budget, other_budget, zoo, static, far, policy]
    right = np.ones(100, bool)
    wrong_five = right.copy()
    wrong_five[:5] = False
    correct = {id(budget): right, id(other_budget): right, id(zoo): wrong_five}
    correct.update({id(static): right, id(far): wrong_five, id(policy): None})
    pair_with_nearest(rows, correct)
    # Not the other budget (same method), not the batch-8 row: the zoo model.
    assert budget.paired is not None
    assert budget.paired["against"] == "zoo small"
    assert budget.paired["accuracy_delta"] == pytest.approx(0.05)
    assert budget.paired["p_value"] == pytest.approx(2 / 2**5)
    assert zoo.paired is not None
    assert zoo.paired["against"] == "c=0.5"
    assert policy.paired is None
    assert far.paired is None


def test_the_timed_calls_run_inside_quiet_and_nothing_else_does(
    rt: BudgetRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench holds its status line's threads quiet around the timing, not the evaluation."""
    import contextlib

    from budget_edge.bench import measure

    inside: list[bool] = [False]
    seen: list[tuple[str, bool]] = []

    @contextlib.contextmanager
    def quiet() -> Any:
        inside[0] = True
        yield
        inside[0] = False

    real_time_jobs = measure.time_jobs

    def recording_time_jobs(*args: Any, **kwargs: Any) -> None:
        seen.append(("timing", inside[0]))
        real_time_jobs(*args, **kwargs)

    monkeypatch.setattr(measure, "time_jobs", recording_time_jobs)
    data = BenchData("pixels", _pixels(rt, 4), None)
    run_bench(
        rt,
        data,
        _settings(),
        threads=1,
        progress=lambda _m: seen.append(("say", inside[0])),
        quiet=quiet,
    )
    assert ("timing", True) in seen
    evaluation = [held for what, held in seen if what == "say"][:3]  # "evaluating 1/3" ...
    assert evaluation == [False, False, False]
    assert inside[0] is False
