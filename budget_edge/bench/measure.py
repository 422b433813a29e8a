"""Measure an artifact with the runtime: latency, throughput, usage, FLOPs and accuracy per budget.

What `budget-edge bench` runs. Torch-free (numpy, the runtime and the numpy
data readers), so it works on a device that has only the runtime installed.

For every budget c, over the evaluation images (the first `eval_images` of
the test set, or random pixels):

- mean component usage, executed FLOPs as a share of the full backbone, and
  accuracy when the data has labels (the policy picks every image's mask).

For every budget c and batch size n, latency of `rt.infer(batch, budget=c)`
end to end (uint8 pixels in: normalisation, policy, mask, stem, blocks,
head), on batches of n consecutive evaluation images, in trtexec's terms: min,
mean, median, p90, p95, p99 in ms per batch, and throughput in images/s
(n / mean latency). Baselines timed in the same run on the same batches: the
static `full` graph (every component, one graph) and the policy alone.

Fair timing on a shared machine: before timing, every batch of a row's pool
runs once (ONNX Runtime creates a variant's session on first use; that is
start-up, not steady state), then `warmup` untimed calls; the timed calls of
all rows are interleaved in `rounds` rounds, so a change of machine load
spreads over every row instead of landing on one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from budget_edge.bench.significance import mcnemar_exact, wilson_interval
from budget_edge.errors import ConfigError, DataError
from budget_edge.runtime import masks as masklib
from budget_edge.runtime.machine import load_average, machine_info, peak_rss_mib, usable_cores
from budget_edge.runtime.request import Agent, InferenceRequest, Mask
from budget_edge.runtime.runtime import LATENCY_KEYS, BudgetRuntime
from budget_edge.runtime.static_masks import StaticMask, for_budget, mask_correct

RANDOM_DATA = "random"
DEFAULT_RANDOM_IMAGES = 256
MAX_POOL_BATCHES = 64  # distinct batches timed per row; more calls cycle through them
POLICY_BUDGET = 1.0  # the policy's cost does not depend on the budget value

Progress = Callable[[str], None]


# ---- parsing the command line's lists --------------------------------------------


def parse_precisions(text: str) -> list[str]:
    """'fp32,int8' -> ['fp32', 'int8']: graph sets to measure, the first the main one."""
    from budget_edge.runtime.manifest import PRECISIONS

    precisions = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in precisions if p not in PRECISIONS]
    if not precisions or bad:
        raise ConfigError(f"--precision {text!r}: give a comma list of {', '.join(PRECISIONS)}")
    return list(dict.fromkeys(precisions))


# ---- settings and data ----------------------------------------------------------------


@dataclass
class BenchSettings:
    """What to measure and how long."""

    budgets: list[float]
    batches: list[int] = field(default_factory=lambda: [1, 8])
    warmup: int = 10
    iterations: int = 100
    rounds: int = 5
    mode: str | None = None  # None: the artifact's decision mode
    # Other decision modes measured at every budget in the same run, each its own method
    # (rows of kind "mode"): the paper's agent (greedy) next to the depth router.
    also_modes: list[str] = field(default_factory=list)
    cap: str | None = None
    seed: int = 0
    eval_batch: int = 64

    @property
    def agent(self) -> Agent:
        """The decision every budget row runs."""
        return Agent(self.mode, self.seed, self.cap)

    def in_mode(self, mode: str) -> BenchSettings:
        """These settings deciding in `mode` (the rows of an also-measured mode)."""
        return dataclasses.replace(self, mode=mode, also_modes=[])

    def check(self) -> None:
        if not self.budgets:
            raise ConfigError("no budgets to measure: pass --budgets, e.g. 0.25,0.5,1.0")
        if not self.batches or min(self.batches) < 1:
            raise ConfigError("batch sizes must be at least 1, e.g. --batch 1,8")
        if self.warmup < 0 or self.iterations < 1:
            raise ConfigError(
                f"--warmup must be >= 0 and --iterations >= 1 (got warmup "
                f"{self.warmup}, iterations {self.iterations})"
            )
        if self.rounds < 1 or self.eval_batch < 1:
            raise ConfigError(
                f"rounds and eval_batch must be at least 1 (got {self.rounds}, {self.eval_batch})"
            )
        for mode in [self.mode, *self.also_modes]:
            if mode is not None and mode not in masklib.MODES:
                raise ConfigError(f"--mode {mode!r} is not one of {', '.join(masklib.MODES)}")
        if self.cap is not None and self.cap not in masklib.CAPS:
            raise ConfigError(f"--cap {self.cap!r} is not one of none, {', '.join(masklib.CAPS)}")


@dataclass
class BenchData:
    """The evaluation images (uint8 NHWC) and their labels (None for random pixels)."""

    name: str
    images: np.ndarray
    labels: np.ndarray | None


def split_data_spec(spec: str, data_dir: str | None) -> tuple[str, str | None]:
    """'cifar10:PATH' or 'cifar10' with --data-dir PATH -> (name, root)."""
    name, sep, path = spec.partition(":")
    if not sep:
        return spec, data_dir
    if data_dir is not None:
        raise ConfigError(
            f"--data {spec!r} names a path and --data-dir gives another: pass the path once"
        )
    if not path:
        raise ConfigError(f"--data {spec!r} has an empty path after ':'")
    return name, path


def load_bench_data(
    spec: str,
    rt: BudgetRuntime,
    data_dir: str | None = None,
    eval_images: int | None = None,
    seed: int = 0,
) -> BenchData:
    """`random` pixels, or the test split of a dataset checked against the model."""
    if eval_images is not None and eval_images < 1:
        raise ConfigError(f"--eval-images must be at least 1, got {eval_images}")
    c, h, w = rt.manifest.preprocessing.input_size
    if spec == RANDOM_DATA:
        if data_dir is not None:
            raise ConfigError("--data random takes no --data-dir: drop it, or name a dataset")
        count = eval_images or DEFAULT_RANDOM_IMAGES
        pixels = np.random.default_rng(seed).integers(0, 256, (count, h, w, c), dtype=np.uint8)
        return BenchData(RANDOM_DATA, pixels, None)
    from budget_edge.data.registry import load_arrays  # numpy-only readers

    name, root = split_data_spec(spec, data_dir)
    arrays = load_arrays(name, root, "test").subset(eval_images)
    _check_matches(name, tuple(arrays.info.input_size), arrays.info.num_classes, rt)
    return BenchData(name, arrays.images, arrays.labels)


def check_search_spec(spec: str, count: int, data_option: str = "--data") -> None:
    """Refuse a static-mask search that cannot run, before anything else is done.
    `data_option` is the option that named `spec` (bench's --data, export's
    --static-masks)."""
    if spec == RANDOM_DATA:
        raise ConfigError(
            f"the static-mask search needs labelled data, not {data_option} {RANDOM_DATA}: "
            f"pass {data_option} fashion-mnist (or the dataset the model was trained on)"
        )
    if count < 1:
        raise ConfigError(f"--static-search-images must be at least 1 image, got {count}")


def load_search_data(spec: str, rt: BudgetRuntime, data_dir: str | None, count: int) -> BenchData:
    """Where static masks are searched (never the test set the bench reports): up to
    `count` images of the artifact's validation split, or for artifacts without one,
    the last `count` training images."""
    check_search_spec(spec, count)
    from budget_edge.data.registry import load_arrays  # numpy-only readers
    from budget_edge.data.split import split_from_meta

    name, root = split_data_spec(spec, data_dir)
    arrays = load_arrays(name, root, "train")
    _check_matches(name, tuple(arrays.info.input_size), arrays.info.num_classes, rt)
    split = rt.manifest.validation_split
    if split is not None:
        # The backbone's validation split: images it never trained on.
        _, val, _ = split_from_meta(arrays, split, "the artifact")
        val = val.subset(count)
        return BenchData(f"{name} validation split ({len(val)} images)", val.images, val.labels)
    start = max(0, len(arrays.images) - count)
    return BenchData(f"{name} train[{start}:]", arrays.images[start:], arrays.labels[start:])


def _check_matches(name: str, size: tuple[int, ...], num_classes: int, rt: BudgetRuntime) -> None:
    want = tuple(rt.manifest.preprocessing.input_size)
    if size != want:
        raise DataError(
            f"{name} images are (C, H, W) = {size} but the model takes "
            f"{want}: pick the dataset the model was trained on"
        )
    if num_classes != rt.num_classes:
        raise DataError(
            f"{name} has {num_classes} classes but the model "
            f"predicts {rt.num_classes}: pick the dataset the model was trained on"
        )


# ---- latency statistics ----------------------------------------------------------------


@dataclass(frozen=True)
class LatencyStats:
    """trtexec's latency summary, ms per batch (percentiles by linear interpolation)."""

    min: float
    mean: float
    median: float
    p90: float
    p95: float
    p99: float

    @classmethod
    def of(cls, times_ms: list[float]) -> LatencyStats:
        t = np.asarray(times_ms, np.float64)
        if t.size == 0:
            raise ValueError("no latencies measured")
        p = np.percentile(t, [50, 90, 95, 99])
        return cls(
            float(t.min()), float(t.mean()), float(p[0]), float(p[1]), float(p[2]), float(p[3])
        )


@dataclass
class BenchRow:
    """One measured configuration: a budget (or a baseline) at one batch size.

    kind: "budget" (the runtime under budget c), "static" (the `full` graph),
    "policy" (the decision alone: the policy graph, or the allocator graph in mode
    allocate, `name` "allocator" then), "static-mask" (the best static mask with
    round(c K) components, no policy; `name` "count" for the allocator's count
    table), "zoo" (another artifact's static graph, `name` says which), "mode"
    (budget c decided in another mode, `name` says which). usage, flops_share,
    accuracy and distinct_masks (how many different masks ran: 1 for a static mask)
    are over the evaluation images (None where they do not apply); breakdown_ms is the
    runtime's mean per-part latency (policy, stem, blocks, head, hot, total).
    cpu_ms is the median CPU time of this process per call (all its threads):
    on a machine shared with other work it moves far less than the wall clock.
    precision: the artifact's graph set that ran (fp32, or fp16 / int8 from
    `budget-edge quantize`); the label names it when it is not fp32.
    """

    kind: str
    batch: int
    budget: float | None
    latency: LatencyStats
    throughput: float
    usage: float | None = None
    flops_share: float | None = None
    accuracy: float | None = None
    breakdown_ms: dict[str, float] = field(default_factory=dict)
    cpu_ms: float | None = None
    name: str | None = None
    distinct_masks: int | None = None
    precision: str = "fp32"
    accuracy_ci: tuple[float, float] | None = None  # 95% Wilson interval
    # The exact McNemar test against the nearest-latency row of another method
    # (same batch and images): {"against", "accuracy_delta", "p_value"}.
    paired: dict[str, Any] | None = None
    # A decided row (budget, mode) against the uniform mask (a static or count mask: one
    # mask for every image) of the nearest usage: what the per-image decision is worth.
    # The keys of `paired`, and both rows' usage.
    paired_uniform: dict[str, Any] | None = None
    # The same at equal latency (same batch and precision), what the decision adds once
    # its own cost is paid: {"median": ..., "mean": ...}, each {"no_slower": the most
    # accurate uniform mask at no more latency, "no_faster": the fastest at no less}, each
    # the keys of `paired` and both rows' ms, or None where no mask is that fast (slow).
    # Both statistics, since a router's latency is skewed (easy images cheap, hard ones
    # dear): its median hides what the mean, which time and energy over a stream of
    # images follow, shows.
    paired_uniform_latency: dict[str, dict[str, dict[str, Any] | None]] | None = None
    # Budgets of this method, batch size and precision that ran the very same mask on
    # every evaluation image (this row's included; None when no other did): one
    # measurement repeated, so each reports the median of their medians (reported_ms).
    same_decisions: list[float] | None = None
    group_median_ms: float | None = None

    @property
    def reported_ms(self) -> float:
        """The latency the row reports: its median, or where other budgets ran the same
        decisions, the median of theirs (a reader must not pick the luckiest of them)."""
        return self.latency.median if self.group_median_ms is None else self.group_median_ms

    @property
    def method(self) -> tuple[str, str | None]:
        """Rows of one method: every budget of this artifact is one, each zoo model one."""
        return (self.kind, self.name)

    @property
    def label(self) -> str:
        if self.kind == "budget":
            text = f"c={self.budget:g}"
        elif self.kind == "static-mask":
            text = f"{self.name or 'static'} mask c={self.budget:g}"
        elif self.kind == "zoo":
            text = f"zoo {self.name}"
        elif self.kind == "mode":
            text = f"{self.name} c={self.budget:g}"
        elif self.kind == "policy":
            text = self.name or "policy"  # "allocator" where the allocator decides
        else:
            text = self.kind
        return text if self.precision == "fp32" else f"{self.precision} {text}"


@dataclass
class BenchResult:
    """Everything `budget-edge bench` reports; `to_dict` is the JSON file."""

    rows: list[BenchRow]
    model: dict[str, Any]
    data: dict[str, Any]
    settings: dict[str, Any]
    environment: dict[str, Any]
    static_masks: list[StaticMask] = field(default_factory=list)

    @property
    def modes_text(self) -> str:
        """The decision mode of the budget rows, and any measured beside it:
        "mode allocate (and greedy)"."""
        mode = self.settings.get("mode") or self.model.get("decision_mode") or "greedy"
        also = self.settings.get("also_modes") or []
        return f"mode {mode}" + (f" (and {', '.join(also)})" if also else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "data": self.data,
            "settings": self.settings,
            "environment": self.environment,
            "rows": [{"label": r.label, **asdict(r)} for r in self.rows],
            "static_masks": [asdict(m) for m in self.static_masks],
        }

    def latency_table(self, batch: int, precision: str = "fp32") -> list[tuple[float, float]]:
        """(budget, p95 ms) at one batch size and precision: the starting table of
        `LatencyBudget`."""
        return [
            (r.budget, r.latency.p95)
            for r in self.rows
            if r.kind == "budget"
            and r.batch == batch
            and r.budget is not None
            and r.precision == precision
        ]

    def row(
        self,
        kind: str,
        batch: int,
        budget: float | None = None,
        name: str | None = None,
        precision: str = "fp32",
    ) -> BenchRow:
        for r in self.rows:
            if (r.kind, r.batch, r.budget, r.name, r.precision) == (
                kind,
                batch,
                budget,
                name,
                precision,
            ):
                return r
        raise KeyError((kind, batch, budget, name, precision))


# ---- measuring ----------------------------------------------------------------------------


@dataclass
class _Quality:
    usage: float | None
    flops_share: float | None
    correct: np.ndarray | None  # per evaluation image: right or not (None: no labels)
    distinct_masks: int | None = None
    decisions: str | None = None  # digest of every image's mask, in order (decided rows)

    @property
    def accuracy(self) -> float | None:
        return None if self.correct is None else float(self.correct.mean())


@dataclass
class Baselines:
    """What the policy is compared with besides the static graph, in the same run.

    static_masks: the searched best static masks (`static_masks.search_static_masks`);
    each budget gets the one with round(c K) components. zoo: other artifacts
    (smaller models trained on their own) by name; each runs its static graph.
    precisions: the same artifact loaded with its other graph sets (fp16, int8),
    each measured like the main one: every budget, the static graph, the policy.
    """

    static_masks: list[StaticMask] = field(default_factory=list)
    # "count": the static masks are the allocator's count table (`from_count_table`),
    # which the rows and plots then call count masks; None: searched masks.
    static_masks_name: str | None = None
    zoo: dict[str, BudgetRuntime] = field(default_factory=dict)
    precisions: dict[str, BudgetRuntime] = field(default_factory=dict)


@dataclass
class TimedJob:
    """One row's timed calls: a function of a batch, its pool of batches, its samples.

    Public so that the scripts in benchmarks/ time every path the same way.
    """

    kind: str
    batch: int
    budget: float | None
    call: Callable[[Any], dict[str, float] | None]  # takes one pool item
    pool: list[Any]  # image batches (or whatever `call` takes)
    name: str | None = None  # the zoo model of a "zoo" row
    precision: str = "fp32"
    times: list[float] = field(default_factory=list)  # wall clock, ms
    cpu_times: list[float] = field(default_factory=list)  # this process's CPU time, ms
    parts: dict[str, float] = field(default_factory=dict)
    calls: int = 0

    def run(self, i: int, timed: bool) -> None:
        x = self.pool[i % len(self.pool)]
        cpu = time.process_time()
        t = time.perf_counter()
        breakdown = self.call(x)
        elapsed = (time.perf_counter() - t) * 1e3
        cpu_elapsed = (time.process_time() - cpu) * 1e3
        if not timed:
            return
        self.times.append(elapsed)
        self.cpu_times.append(cpu_elapsed)
        self.calls += 1
        for k, v in (breakdown or {}).items():
            self.parts[k] = self.parts.get(k, 0.0) + v


def timing_pool(images: np.ndarray, batch: int, iterations: int) -> list[np.ndarray]:
    """Batches of `batch` consecutive images, wrapping around; at most MAX_POOL_BATCHES."""
    count = min(iterations, MAX_POOL_BATCHES, max(1, math.ceil(len(images) / batch)))
    n = len(images)
    return [np.ascontiguousarray(images[(np.arange(batch) + i * batch) % n]) for i in range(count)]


def _calls(
    rt: BudgetRuntime, s: BenchSettings
) -> dict[str, Callable[..., dict[str, float] | None]]:
    """What each kind of row times; only `infer` reports a latency breakdown."""

    def static(x: np.ndarray) -> None:
        rt.run_full(x)

    def policy(x: np.ndarray) -> None:
        if s.mode == "allocate":  # the allocator graph decides instead (agent included)
            rt.run_allocator(x)
        else:
            rt.run_policy(x, POLICY_BUDGET)

    agent = s.agent

    def budget(x: np.ndarray, c: float) -> dict[str, float]:
        return rt.run(InferenceRequest(x, c, agent)).latency_ms

    return {"static": static, "policy": policy, "budget": budget}


def _runtimes(rt: BudgetRuntime, baselines: Baselines) -> list[BudgetRuntime]:
    """The benched runtime, then the same artifact at its other precisions."""
    return [rt, *(other for p, other in baselines.precisions.items() if p != rt.precision)]


def _jobs(
    rt: BudgetRuntime, data: BenchData, s: BenchSettings, baselines: Baselines
) -> list[TimedJob]:
    jobs = []
    for n in s.batches:
        pool = timing_pool(data.images, n, s.iterations)
        for prt in _runtimes(rt, baselines):
            calls, p = _calls(prt, s), prt.precision
            if prt.manifest.roles.get("full") is not None:
                jobs.append(TimedJob("static", n, None, calls["static"], pool, precision=p))
            # In mode allocate the allocator decides (its row says so), else the policy.
            decider = "allocator" if s.mode == "allocate" else None
            jobs.append(
                TimedJob("policy", n, None, calls["policy"], pool, precision=p, name=decider)
            )
            jobs += [
                TimedJob("budget", n, c, functools.partial(calls["budget"], c=c), pool, precision=p)
                for c in s.budgets
            ]
        if baselines.static_masks:
            for c in s.budgets:
                mask = np.asarray(_static_mask(rt, baselines, c).mask, np.uint8)
                call = functools.partial(_run_static_mask, rt, np.tile(mask, (n, 1)))
                job = TimedJob("static-mask", n, c, call, pool, precision=rt.precision)
                job.name = baselines.static_masks_name
                jobs.append(job)
        for mode in s.also_modes:
            agent = s.in_mode(mode).agent
            for c in s.budgets:
                call = functools.partial(_run_agent, rt, agent, c)
                jobs.append(TimedJob("mode", n, c, call, pool, precision=rt.precision, name=mode))
        for name, zoo_rt in baselines.zoo.items():
            jobs.append(TimedJob("zoo", n, None, _zoo_call(zoo_rt), pool, name=name))
    return jobs


# Rows whose quality is keyed by (kind, budget, name): not the main mode's budgets.
OTHER_KINDS = ("static-mask", "zoo", "mode")


def _static_mask(rt: BudgetRuntime, baselines: Baselines, c: float) -> StaticMask:
    return for_budget(baselines.static_masks, c, rt.num_components)


def _run_agent(rt: BudgetRuntime, agent: Agent, c: float, x: np.ndarray) -> dict[str, float]:
    return rt.run(InferenceRequest(x, c, agent)).latency_ms


def _run_static_mask(rt: BudgetRuntime, mask: np.ndarray, x: np.ndarray) -> dict[str, float]:
    return rt.run(InferenceRequest(x, decision=Mask(mask))).latency_ms


def _zoo_call(zoo_rt: BudgetRuntime) -> Callable[[np.ndarray], None]:
    def call(x: np.ndarray) -> None:
        zoo_rt.run_full(x)

    return call


def time_jobs(
    jobs: list[TimedJob],
    warmup: int,
    iterations: int,
    rounds: int,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Prime and warm every job, then time `iterations` calls each, interleaved in rounds.
    `progress(calls_done, calls_total)` is called between jobs, never between the timed
    calls of one."""
    tell = progress or (lambda _done, _total: None)
    total = sum(len(job.pool) + warmup + iterations for job in jobs)
    done = 0
    for job in jobs:
        for i in range(len(job.pool)):
            job.run(i, timed=False)
        for i in range(warmup):
            job.run(i, timed=False)
        done += len(job.pool) + warmup
        tell(done, total)
    rounds = min(rounds, iterations)
    for r in range(rounds):
        # Split the iterations as evenly as rounds allow: the first rounds take the rest.
        count = iterations // rounds + (1 if r < iterations % rounds else 0)
        for job in jobs:
            for _ in range(count):
                job.run(job.calls, timed=True)
            done += count
            tell(done, total)


class Countdown:
    """Progress messages with a count and the time left, estimated from the pace so far:
    'evaluating 3/8: budget 0.5 (fp32), 10000 images; about 1 min 05 s left'."""

    def __init__(self, say: Progress, clock: Callable[[], float] = time.monotonic) -> None:
        self.say, self.clock = say, clock
        self.start = clock()

    def __call__(self, done: int, total: int, message: str) -> None:
        """`message` with `done` of `total` units of work finished."""
        left = ""
        if 0 < done < total:
            pace = (self.clock() - self.start) / done
            left = f"; about {duration_text(pace * (total - done))} left"
        self.say(message + left)


def duration_text(seconds: float) -> str:
    """'45 s', '3 min 05 s', '2 h 07 min'."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def static_mask_quality(
    rt: BudgetRuntime, data: BenchData, mask: StaticMask, s: BenchSettings
) -> _Quality:
    """Accuracy of one static mask over the evaluation images; its usage and FLOPs share."""
    correct = None
    if data.labels is not None:
        correct = mask_correct(
            rt, data.images, data.labels, np.asarray(mask.mask, np.uint8), s.eval_batch
        )
    return _Quality(mask.kept / rt.num_components, mask.flops_share, correct, 1)


def zoo_quality(
    zoo_rt: BudgetRuntime, rt: BudgetRuntime, data: BenchData, s: BenchSettings
) -> _Quality:
    """A zoo model's accuracy, and its FLOPs as a share of the benched model's."""
    correct = None
    if data.labels is not None:
        correct = np.concatenate(
            [
                zoo_rt.run_full(data.images[sl]).argmax(axis=1) == data.labels[sl]
                for sl in _chunks(len(data.images), s.eval_batch)
            ]
        )
    return _Quality(None, zoo_rt.full_flops / rt.full_flops, correct)


def check_zoo(rt: BudgetRuntime, zoo: dict[str, BudgetRuntime]) -> None:
    """Zoo models must take the same images and predict the same classes."""
    for name, z in zoo.items():
        if z.manifest.roles.get("full") is None:
            raise ConfigError(f"zoo model {name} has no static `full` graph: re-export it")
        same_input = z.manifest.preprocessing.input_size == rt.manifest.preprocessing.input_size
        if not same_input or z.num_classes != rt.num_classes:
            raise ConfigError(
                f"zoo model {name} takes {z.manifest.preprocessing.input_size} "
                f"images into {z.num_classes} classes, but the benched model "
                f"{rt.manifest.preprocessing.input_size} into {rt.num_classes}: "
                "a zoo holds models of the same task"
            )


def measure_quality(
    rt: BudgetRuntime, data: BenchData, budget: float | None, s: BenchSettings
) -> _Quality:
    """Usage, FLOPs share and accuracy over the evaluation images (budget None: static)."""
    correct = []
    usage = flops = 0.0
    seen: set[bytes] = set()  # distinct masks: is the policy per image, or per budget?
    decisions = hashlib.sha256()  # every image's mask in order: do two budgets decide alike?
    agent = s.agent
    for sl in _chunks(len(data.images), s.eval_batch):
        x = data.images[sl]
        if budget is None:
            classes = rt.run_full(x).argmax(axis=1)
        else:
            out = rt.run(InferenceRequest(x, budget, agent))
            classes = out.classes
            seen.update(row.tobytes() for row in out.mask)
            decisions.update(np.ascontiguousarray(out.mask, np.uint8).tobytes())
            usage += float(out.usage.sum())
            flops += float(out.flops_share.sum())
        if data.labels is not None:
            correct.append(classes == data.labels[sl])
    n = len(data.images)
    right = np.concatenate(correct) if data.labels is not None else None
    if budget is None:
        return _Quality(1.0, 1.0, right, 1)
    return _Quality(usage / n, flops / n, right, len(seen), decisions.hexdigest())


def _eval_batch(rt: BudgetRuntime, s: BenchSettings) -> int:
    """TensorRT engines take at most the batch they were built for."""
    trt = rt.manifest.tensorrt
    if rt.backend.name == "tensorrt" and trt is not None:
        too_big = [n for n in s.batches if n > trt.max_batch]
        if too_big:
            raise ConfigError(
                f"--batch {too_big[0]} exceeds the engines' max batch "
                f"{trt.max_batch}: rebuild the engines with a larger --max-batch"
            )
        return min(s.eval_batch, trt.max_batch)
    return s.eval_batch


def run_bench(
    rt: BudgetRuntime,
    data: BenchData,
    settings: BenchSettings,
    threads: int | None = None,
    progress: Progress | None = None,
    baselines: Baselines | None = None,
    quiet: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
) -> BenchResult:
    """Measure every budget and baseline at every batch size; see the module docstring.
    `quiet()` is held around the timed calls: no other thread of ours prints there."""
    settings.check()
    baselines = baselines or Baselines()
    check_zoo(rt, baselines.zoo)
    if not rt.has_policy:
        raise ConfigError(
            "this artifact has no policy graph (it was exported without an "
            "agent), so no budget can choose masks: export a trained checkpoint"
        )
    mode = settings.mode or rt.default_mode
    if "allocate" in (mode, *settings.also_modes) and not rt.has_allocator:
        raise ConfigError(
            "--mode allocate needs an artifact with an allocator: run "
            "`budget-edge allocate CKPT --out CKPT2` and export CKPT2"
        )
    # The main mode's rows are measured anyway; each other mode once.
    also = [m for m in dict.fromkeys(settings.also_modes) if m != mode]
    s = dataclasses.replace(
        settings, eval_batch=_eval_batch(rt, settings), mode=mode, also_modes=also
    )
    say = progress or (lambda _msg: None)
    load_before = load_average()
    # Every evaluation over the images, counted, then the timing, counted in calls.
    quality: dict[tuple[str, float | None], _Quality] = {}
    other: dict[tuple[str, float | None, str | None], _Quality] = {}
    steps: list[tuple[str, dict[Any, _Quality], Any, Callable[[], _Quality]]] = []
    run: Callable[[], _Quality]
    for prt in _runtimes(rt, baselines):
        p = prt.precision
        if prt.manifest.roles.get("full") is not None:
            run = functools.partial(measure_quality, prt, data, None, s)
            steps.append((f"the static model ({p})", quality, (p, None), run))
        for c in s.budgets:
            run = functools.partial(measure_quality, prt, data, c, s)
            steps.append((f"budget {c:g} ({p})", quality, (p, c), run))
    if baselines.static_masks:
        for c in s.budgets:
            mask = _static_mask(rt, baselines, c)
            run = functools.partial(static_mask_quality, rt, data, mask, s)
            key = ("static-mask", c, baselines.static_masks_name)
            steps.append((f"{key[2] or 'static'} mask c={c:g}", other, key, run))
    for mode in s.also_modes:
        for c in s.budgets:
            run = functools.partial(measure_quality, rt, data, c, s.in_mode(mode))
            steps.append((f"budget {c:g} in mode {mode}", other, ("mode", c, mode), run))
    for name, zoo_rt in baselines.zoo.items():
        run = functools.partial(zoo_quality, zoo_rt, rt, data, s)
        steps.append((f"zoo model {name}", other, ("zoo", None, name), run))
    evaluated = Countdown(say)
    for i, (what, into, key, run) in enumerate(steps):
        n = len(steps)
        evaluated(i, n, f"evaluating {i + 1}/{n}: {what}, {len(data.images)} images")
        into[key] = run()
    jobs = _jobs(rt, data, s, baselines)
    say(f"timing {len(jobs)} rows x {s.iterations} calls")
    timed = Countdown(say)

    def timing(done: int, total: int) -> None:
        timed(done, total, f"timing {len(jobs)} rows: {done}/{total} calls")

    with quiet():
        time_jobs(jobs, s.warmup, s.iterations, s.rounds, progress=timing)
    rows = [_row(rt, job, quality, other, s.mode or rt.default_mode) for job in jobs]
    group_identical_decisions(rows, {id(r): _quality_of(r, quality, other) for r in rows})
    correct = {id(r): _correct_of(r, quality, other) for r in rows}
    pair_with_nearest(rows, correct)
    pair_with_uniform(rows, correct)
    return BenchResult(
        static_masks=list(baselines.static_masks),
        rows=rows,
        model=_model_facts(rt),
        data={
            "name": data.name,
            "eval_images": len(data.images),
            "labelled": data.labels is not None,
        },
        settings=asdict(s),
        environment={
            **machine_info(),
            "backend": rt.backend.name,
            "precisions": [prt.precision for prt in _runtimes(rt, baselines)],
            "threads": threads,
            "threads_effective": threads or usable_cores(),
            "load_average_before": load_before,
            "load_average_after": load_average(),
            "peak_rss_mib": peak_rss_mib(),
        },
    )


def _row(
    rt: BudgetRuntime,
    job: TimedJob,
    quality: dict[tuple[str, float | None], _Quality],
    other: dict[tuple[str, float | None, str | None], _Quality],
    mode: str,
) -> BenchRow:
    stats = LatencyStats.of(job.times)
    row = BenchRow(
        job.kind,
        job.batch,
        job.budget,
        stats,
        throughput=job.batch / (stats.mean / 1e3),
        cpu_ms=float(np.median(job.cpu_times)),
        name=job.name,
        precision=job.precision,
    )
    if job.kind == "policy":
        row.flops_share = rt.decision_flops(mode) / rt.full_flops
        return row
    q = (
        other[job.kind, job.budget, job.name]
        if job.kind in OTHER_KINDS
        else quality[job.precision, job.budget]
    )
    row.usage, row.flops_share, row.accuracy = q.usage, q.flops_share, q.accuracy
    row.distinct_masks = q.distinct_masks
    if q.correct is not None and q.correct.size:
        row.accuracy_ci = wilson_interval(int(q.correct.sum()), q.correct.size)
    if job.kind in ("budget", "static-mask", "mode"):
        row.breakdown_ms = {k: job.parts.get(k, 0.0) / job.calls for k in LATENCY_KEYS}
    return row


def _quality_of(
    row: BenchRow,
    quality: dict[tuple[str, float | None], _Quality],
    other: dict[tuple[str, float | None, str | None], _Quality],
) -> _Quality | None:
    if row.kind == "policy":
        return None
    if row.kind in OTHER_KINDS:
        return other[row.kind, row.budget, row.name]
    return quality[row.precision, row.budget]


def _correct_of(
    row: BenchRow,
    quality: dict[tuple[str, float | None], _Quality],
    other: dict[tuple[str, float | None, str | None], _Quality],
) -> np.ndarray | None:
    q = _quality_of(row, quality, other)
    return None if q is None else q.correct


def group_identical_decisions(rows: list[BenchRow], qualities: dict[int, _Quality | None]) -> None:
    """Rows of one decided method (budget, or another mode) at one batch size and
    precision that ran the very same mask on every evaluation image are one measurement
    repeated (budgets past saturation in mode allocate, say): each gets the budgets of
    the group and the median of their median latencies. `qualities` maps id(row) to its
    evaluation."""
    groups: dict[tuple[Any, ...], list[BenchRow]] = {}
    for row in rows:
        q = qualities.get(id(row))
        if row.kind in ("budget", "mode") and q is not None and q.decisions is not None:
            groups.setdefault((row.method, row.batch, row.precision, q.decisions), []).append(row)
    for members in groups.values():
        if len(members) < 2:
            continue
        budgets = sorted(float(r.budget) for r in members if r.budget is not None)
        median = float(np.median([r.latency.median for r in members]))
        for r in members:
            r.same_decisions, r.group_median_ms = budgets, median


def pair_with_nearest(rows: list[BenchRow], correct: dict[int, np.ndarray | None]) -> None:
    """Give every row with an accuracy the paired test against its nearest competitor:
    the row of another method, at the same batch size, whose median latency is
    closest. `correct` maps id(row) to its per-image correctness."""
    for row in rows:
        mine = correct.get(id(row))
        if mine is None:
            continue
        rivals = [
            r
            for r in rows
            if r.batch == row.batch and r.method != row.method and correct.get(id(r)) is not None
        ]
        if not rivals:
            continue
        rival = min(rivals, key=lambda r: abs(r.reported_ms - row.reported_ms))
        test = mcnemar_exact(mine, correct[id(rival)])  # type: ignore[arg-type]
        row.paired = {
            "against": rival.label,
            "accuracy_delta": test.accuracy_delta,
            "p_value": test.p_value,
        }


def pair_with_uniform(rows: list[BenchRow], correct: dict[int, np.ndarray | None]) -> None:
    """Give every decided row (budget, mode) paired tests against the static or count
    masks measured at the same batch size and precision: against the mask that runs as
    many components as it does on average (the nearest usage; in mode greedy usage can
    be far from the budget), what the per-image decision adds at that compute; and
    against the masks around its latency, what it adds once the decision's own cost is
    paid (a router's decision and graph switches make it slower than a uniform mask of
    its usage)."""
    masks = [r for r in rows if r.kind == "static-mask" and correct.get(id(r)) is not None]
    for row in rows:
        mine = correct.get(id(row))
        same = [m for m in masks if (m.batch, m.precision) == (row.batch, row.precision)]
        if row.kind not in ("budget", "mode") or mine is None or not same:
            continue
        row.paired_uniform_latency = {
            "median": _around_latency(row, same, correct, lambda r: r.reported_ms),
            "mean": _around_latency(row, same, correct, lambda r: r.latency.mean),
        }
        if row.usage is None:
            continue
        by_usage = min(same, key=lambda m: abs((m.usage or 0.0) - (row.usage or 0.0)))
        test = mcnemar_exact(mine, correct[id(by_usage)])  # type: ignore[arg-type]
        row.paired_uniform = {
            "against": by_usage.label,
            "usage": row.usage,
            "against_usage": by_usage.usage,
            "accuracy_delta": test.accuracy_delta,
            "p_value": test.p_value,
        }


def _around_latency(
    row: BenchRow,
    masks: list[BenchRow],
    correct: dict[int, np.ndarray | None],
    ms: Callable[[BenchRow], float],
) -> dict[str, dict[str, Any] | None]:
    """The paired tests of `row` against the most accurate mask at no more latency `ms`
    (what a uniform mask can do in its time: the decision pays if it beats this one) and
    the fastest at no less (ties: the first measured)."""
    faster = [m for m in masks if ms(m) <= ms(row)]
    slower = [m for m in masks if ms(m) >= ms(row)]
    no_slower = max(faster, key=lambda m: (m.accuracy or 0.0, -ms(m)), default=None)
    no_faster = min(slower, key=ms, default=None)
    return {
        "no_slower": None if no_slower is None else _paired(row, no_slower, correct, ms),
        "no_faster": None if no_faster is None else _paired(row, no_faster, correct, ms),
    }


def _paired(
    row: BenchRow,
    mask: BenchRow,
    correct: dict[int, np.ndarray | None],
    ms: Callable[[BenchRow], float],
) -> dict[str, Any]:
    test = mcnemar_exact(correct[id(row)], correct[id(mask)])  # type: ignore[arg-type]
    return {
        "against": mask.label,
        "ms": ms(row),
        "against_ms": ms(mask),
        "accuracy_delta": test.accuracy_delta,
        "p_value": test.p_value,
    }


def _model_facts(rt: BudgetRuntime) -> dict[str, Any]:
    m = rt.manifest
    return {
        "directory": str(rt.directory),
        "backbone": m.backbone,
        "precision": rt.precision,
        "num_components": m.num_components,
        "full_flops": m.full_flops,
        "base_flops": m.base_flops,
        "policy_flops": m.flops.policy,
        "allocator_flops": m.flops.allocator,
        "has_full_graph": m.roles.get("full") is not None,
        "hot_policies": len(m.hot_policies),
        "artifact_versions": m.versions,
    }
