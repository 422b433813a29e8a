"""BudgetRuntime: run an exported BudgetNet artifact with numpy and ONNX Runtime or TensorRT.

One call of :meth:`BudgetRuntime.infer` does, for a batch of images::

    policy(image, budget) -> probabilities -> mask (greedy / sample, optional cap)
    stem on the whole batch
    for each block: gather the images that keep it (grouped by kept-path variant
                    for ResNeXt), run that variant's graph, scatter back; images
                    that drop the block take its skip output (identity or skip graph)
    head -> logits

Images whose mask equals an exported hot policy (or all ones, when the static
`full` graph exists) run as one graph instead. No torch anywhere.

Where tensors live. The runtime works on the backend's own tensors (see
backends/__init__.py): the images go to the backend once, activations stay
there between graphs (gathered and scattered there), and only two things come
back: the policy's probabilities (the mask is chosen on the host) and the
logits. On a GPU that is one upload and at most two synchronisations per call
(one with an explicit mask or static policy); on the CPU every step is a
numpy array and nothing is copied.

Masks and variants. Component k of a mask is manifest.components[k]. A block
exported with every kept-path subset ('single' and 'all' schemes) runs any
mask. A block exported with prefix path sets only ('prefix', large
cardinality) runs paths 0..m-1: a mask the policy chose is mapped to the
prefix with the same number of kept paths (same cost; `InferResult.mask` is
the mask that ran), and an explicit `mask=` that asks for another path set is
an InputError.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from budget_edge.errors import ConfigError, InputError
from budget_edge.runtime import allocation
from budget_edge.runtime import masks as masklib
from budget_edge.runtime.backends import Backend, create_backend
from budget_edge.runtime.count_plan import CountPlan
from budget_edge.runtime.inputs import (
    pixels_nhwc,
    prepare_budget,
    prepare_images,
    prepare_mask,
)
from budget_edge.runtime.manifest import Manifest, verify_files
from budget_edge.runtime.request import (
    Agent,
    Decision,
    InferenceRequest,
    Mask,
    Static,
    decision_from_options,
)

LATENCY_KEYS = ("policy", "stem", "blocks", "head", "hot", "total")
# "auto": whole-mask graphs and the switch graph where they pay; "chain": a graph
# call per block always (what TensorRT runs; calibration records every block's inputs).
DISPATCHES = ("auto", "chain")


@dataclass
class InferResult:
    """What one `infer` call gives back; arrays have one row per image."""

    logits: np.ndarray  # (N, num_classes) float32
    classes: np.ndarray  # (N,) int64, argmax of logits
    mask: np.ndarray  # (N, K) uint8, the mask that ran
    # (N, K) float32 policy probabilities; None with an explicit mask. Mode 'allocate'
    # with count masks: each kept component's share of the table's rows (0 if dropped).
    probs: np.ndarray | None
    flops: np.ndarray  # (N,) int64 executed backbone FLOPs (policy not included)
    latency_ms: dict[str, float]  # policy, stem, blocks, head, hot (whole-mask graphs), total
    policy_flops: int = 0  # per image; 0 when the policy did not run
    full_flops: int = 1  # FLOPs of the unmasked backbone

    @property
    def usage(self) -> np.ndarray:
        """Fraction of components run, per image."""
        return self.mask.mean(axis=1)

    @property
    def flops_share(self) -> np.ndarray:
        """Executed FLOPs as a share of the full model, per image."""
        return self.flops / self.full_flops

    @classmethod
    def concat(cls, results: Sequence[InferResult]) -> InferResult:
        """One result from consecutive parts of a batch, rows in order; latencies add up."""
        if not results:
            raise ValueError("no results to concatenate")
        if len(results) == 1:
            return results[0]
        first = results[0]
        latency: dict[str, float] = {}
        for result in results:
            for key, value in result.latency_ms.items():
                latency[key] = latency.get(key, 0.0) + value
        probs = [r.probs for r in results if r.probs is not None]
        return replace(
            first,
            logits=np.concatenate([r.logits for r in results]),
            classes=np.concatenate([r.classes for r in results]),
            mask=np.concatenate([r.mask for r in results]),
            # Every part ran the same decision, so probabilities are all there or none.
            probs=np.concatenate(probs) if len(probs) == len(results) else None,
            flops=np.concatenate([r.flops for r in results]),
            latency_ms=latency,
        )


class _Batch(NamedTuple):
    """One call's images: uint8 NHWC `pixels` (normalised on the backend where it can)
    or preprocessed float32 `x`, and their count."""

    images: ArrayLike  # as the caller gave them
    pixels: np.ndarray | None
    x: np.ndarray | None
    n: int


@dataclass(frozen=True)
class _BlockPlan:
    """How to run one block: a graph per kept-path code, and the output shape.

    A kept-path code is the block's slice of the mask read as a binary number
    (bit j set: path j kept), so one matrix product gives every block's code
    for every image (see `BudgetRuntime._codes`). Code 0 maps to the skip
    graph, or None for an identity skip.
    """

    graphs: dict[int, str | None]
    out_shape: tuple[int, ...]  # without the batch axis
    same_shape: bool


class BudgetRuntime:
    """An artifact directory loaded for inference. Build with :meth:`load`."""

    def __init__(
        self,
        manifest: Manifest,
        directory: Path,
        backend: Backend,
        precision: str = "fp32",
        dispatch: str = "auto",
    ) -> None:
        if dispatch not in DISPATCHES:
            raise ConfigError(f"dispatch {dispatch!r} is not one of {DISPATCHES}")
        self.manifest = manifest
        self.directory = Path(directory)
        self.backend = backend
        self.precision = precision
        self._resolved_agents: dict[Agent, Agent] = {}  # mode None -> the default mode
        # One call at a time on a backend with one stream and pooled device memory;
        # ONNX Runtime sessions run concurrently.
        self._lock: Any = (
            threading.Lock() if getattr(backend, "serial", False) else contextlib.nullcontext()
        )
        self._plans = [self._plan(b.index) for b in manifest.blocks]
        self._code_weights = self._code_matrix()
        self._comp_flops = np.array([c.flops for c in manifest.components], np.int64)
        # Cached: the manifest re-sums its components on every access.
        self._full_flops = manifest.full_flops
        self._base_flops = manifest.base_flops
        self._cost_models = {c: masklib.CostModel.for_cap(c, manifest) for c in masklib.CAPS}
        self._prefix_blocks = masklib.prefix_blocks(manifest)
        # Whole-mask graphs: the hot policies, and the static model for the all-ones mask.
        self._whole: dict[bytes, str] = {
            bytes(np.asarray(h.mask, np.uint8)): h.graph for h in manifest.hot_policies
        }
        full = manifest.roles.get("full")
        if dispatch == "chain":
            self._whole.clear()
        elif full is not None:
            self._whole.setdefault(bytes(np.ones(self.num_components, np.uint8)), full)
        # The switch graph runs any mask in one call (export/switch_graph.py); the
        # TensorRT backend runs an engine per block instead.
        switch = manifest.roles.get("switch")
        self._switch = switch if backend.name == "onnxruntime" and dispatch == "auto" else None
        # Mode 'allocate''s calibration as arrays (budgets, prices), read once.
        spec = manifest.allocation
        self._allocation_table = (
            None
            if spec is None
            else (np.asarray(spec.budgets, np.float64), np.asarray(spec.prices, np.float64))
        )
        self._count_table = (
            None
            if spec is None or spec.count_masks is None
            else allocation.CountTable.of(spec.count_masks)
        )
        allocator = manifest.roles.get("allocator")
        self._count_plan = (
            None
            if self._count_table is None or allocator is None or self._allocation_table is None
            else CountPlan.build(
                allocator,
                self._count_table,
                self._whole,
                *self._allocation_table,
                self._base_flops,
                self._comp_flops,
                self._prefix_blocks,
            )
        )
        # The searched static masks as a table from any count 0..K to the mask used.
        self._static_table = _count_table(
            {
                sum(s.mask): np.asarray(s.mask, np.uint8)
                for s in (manifest.static_masks.masks if manifest.static_masks else [])
            },
            self.num_components,
        )

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        backend: str = "auto",
        threads: int | None = None,
        providers: Sequence[Any] | None = None,
        precision: str = "fp32",
        dispatch: str = "auto",
        trusted_keys: Sequence[str | os.PathLike[str]] | None = None,
        warm_up: bool = False,
    ) -> BudgetRuntime:
        """Validate the manifest and every file's SHA-256, then set up the backend.

        backend: "auto" (TensorRT when the artifact has engines and TensorRT runs
        here, else ONNX Runtime), "onnxruntime" or "tensorrt". threads: intra-op
        threads per ONNX Runtime session (default: the cores this process may
        use). providers: ONNX Runtime execution providers, for example
        ["CUDAExecutionProvider"] (default: CUDA when onnxruntime-gpu has it).
        precision: the graph set to run, "fp32" or one that `budget-edge quantize`
        added ("fp16", "int8"); engines of that precision run when TensorRT can
        (fp32, the default, takes whatever engines were built), else the ONNX set.
        dispatch: "auto" or "chain" (a graph per block, no whole-mask graphs).
        trusted_keys: Ed25519 public key files; when given, the artifact must carry a
        signature by one of them (runtime/signing.py). An empty list is refused: a
        device whose key list came out empty must not run unsigned artifacts.
        warm_up: run every whole-mask graph and the decision once before returning
        (`warm_up()`), so that the first real call is not the slow one.
        """
        root = Path(directory)
        keys = None
        if trusted_keys is not None:
            # One path where a list belongs, or a list that came out empty, fails closed.
            single = isinstance(trusted_keys, (str, os.PathLike))
            keys = [] if single else list(trusted_keys)  # a generator is read once
            if not keys:
                raise ConfigError(
                    "trusted_keys must be a non-empty list of public key files; pass None "
                    "to load without a signature check"
                )
        manifest = Manifest.load(root)
        if keys:
            from budget_edge.runtime.signing import verify_signature

            verify_signature(root, manifest, keys)
        verify_files(root, manifest)
        chosen = manifest.for_precision(precision)
        engines = manifest.tensorrt.precision if manifest.tensorrt is not None else None
        if precision != "fp32" and engines != precision:
            # The engines (if any) are of another precision: the ONNX set runs.
            if backend == "tensorrt":
                raise ConfigError(
                    f"this artifact has no {precision} TensorRT engines (they are "
                    f"{engines or 'not built'}): run `budget-edge build-engines "
                    f"DIR --precision {precision}` on the device, or use "
                    "--backend onnxruntime (backend='onnxruntime' in Python)"
                )
            backend = "onnxruntime"
        made = create_backend(backend, chosen, root, threads, providers)
        if made.name == "tensorrt" and manifest.tensorrt is not None:
            precision = manifest.tensorrt.precision  # what runs is what the engines are
        runtime = cls(chosen, root, made, precision=precision, dispatch=dispatch)
        if warm_up:
            runtime.warm_up()
        return runtime

    def graph_names(self) -> list[str]:
        """Every graph a call of this runtime may run: roles, block variants and skips,
        whole-mask graphs, and the switch graph where it is used."""
        roles = self.manifest.roles
        names = [
            roles[r]
            for r in ("stem", "head", "policy", "allocator", "full")
            if roles.get(r) is not None
        ]
        names += [g for plan in self._plans for g in plan.graphs.values() if g is not None]
        names += list(self._whole.values())
        if self._switch is not None:
            names.append(self._switch)
        return [str(n) for n in dict.fromkeys(names)]

    def load_sessions(self) -> None:
        """Make the session (or engine) of every graph this runtime may run, now, from
        bytes checked against the manifest as they are read. From then on no call reads
        the artifact directory, so it may be deleted or exported again in place while a
        server runs: the loaded model keeps answering (see docs/protocol.md, redeploy)."""
        load = getattr(self.backend, "load", None)
        if load is not None:
            load(self.graph_names())

    def warm_up(self) -> None:
        """Make every session (`load_sessions`), then run each whole-mask graph, the static
        graph and the decision once on a blank image. The first call of a graph plans its
        memory (tens of ms, where a steady call takes one or two): a `latency:` budget or
        a deadline must not see that."""
        self.load_sessions()
        c, h, w = self.manifest.preprocessing.input_size
        blank = np.zeros((1, h, w, c), np.uint8)
        for hot in self.manifest.hot_policies:
            self.infer(blank, mask=np.asarray(hot.mask, np.uint8))
        if self.manifest.roles.get("full") is not None:
            self.run_full(blank)
        if self.has_policy:
            self.infer(blank, budget=0.5)

    # ---- facts ------------------------------------------------------------------

    @property
    def num_components(self) -> int:
        return self.manifest.num_components

    @property
    def num_classes(self) -> int:
        return self.manifest.num_classes

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest.class_names)

    @property
    def has_policy(self) -> bool:
        return self.manifest.roles.get("policy") is not None

    @property
    def full_flops(self) -> int:
        return self._full_flops

    @property
    def min_flops_fraction(self) -> float:
        """The FLOPs share that runs whatever the mask (stem, head, shortcut convs)."""
        return self._base_flops / self._full_flops

    # ---- inference ----------------------------------------------------------------

    def infer(
        self,
        images: ArrayLike,
        budget: ArrayLike | None = None,
        mask: ArrayLike | None = None,
        mode: str | None = None,
        seed: int | None = None,
        cap: str | None = None,
        policy: str = "agent",
    ) -> InferResult:
        """Classify a batch under a budget (or an explicit mask).

        images: uint8 NHWC pixels (NHW or HW for one channel), normalised with the
        manifest's preprocessing, or float32 NCHW already preprocessed.
        budget: a float in [0, 1] or one per image; needed when the policy runs.
        mask: (N, K) or (K,) of 0/1: run exactly these components, no policy.
        mode: None (the artifact's own: `default_mode`), "greedy" (keep p >= 0.5),
        "sample" (Bernoulli(p), seeded by `seed`) or "rank" (keep the round(c K)
        most probable components) or "allocate" (the allocator gives each image its
        count so that the mean usage over images is c; artifacts from a checkpoint
        with an allocator, runtime/allocation.py).
        cap: None, "components" or "flops": drop the least probable kept
        components until the cost is at most the budget. With mode "allocate" that
        makes the budget a ceiling per image as well, so the mean usage falls below c
        (a deadline per image on top of an average).
        policy: "agent" (the policy graph decides per image) or "static" (the
        artifact's searched static mask with round(c K) components, the same for
        every image; no policy graph needed: `budget-edge export --static-masks`).

        The keyword form of `run(InferenceRequest(images, budget, decision))`.
        """
        decision = decision_from_options(mask, mode, seed, cap, policy)
        return self.run(InferenceRequest(images, budget, decision))

    def run(self, request: InferenceRequest) -> InferResult:
        """Run one inference request (runtime/request.py)."""
        t_start = time.perf_counter()
        decision = request.decision
        if isinstance(decision, Agent) and decision.mode is None:
            decision = self._own_mode(decision)
        batch = self._batch(request.images)
        # One image in mode 'allocate' has a cheaper path: the count plan.
        one_count = self._takes_count_plan(decision, batch.n)
        strategy = self._run_one_count if one_count else self._run_batch
        return strategy(batch, request.budget, decision, t_start)

    def _batch(self, images: ArrayLike) -> _Batch:
        """The images as uint8 NHWC pixels where they are pixels, else preprocessed."""
        pixels = pixels_nhwc(images, self.manifest.preprocessing)
        if pixels is not None:
            return _Batch(images, pixels, None, pixels.shape[0])
        x = prepare_images(images, self.manifest.preprocessing)
        return _Batch(images, None, x, x.shape[0])

    def _own_mode(self, agent: Agent) -> Agent:
        """`agent` with the artifact's default mode, made once per distinct agent (a
        frozen dataclass re-checked on every call cost microseconds on the hot path)."""
        resolved = self._resolved_agents.get(agent)
        if resolved is None:
            resolved = self._resolved_agents[agent] = replace(agent, mode=self.default_mode)
        return resolved

    def _takes_count_plan(self, decision: Decision, n: int) -> bool:
        return (
            n == 1
            and self._count_plan is not None
            and isinstance(decision, Agent)
            and decision.mode == "allocate"
            and decision.cap is None
            and self.has_policy
        )

    def _run_batch(
        self, batch: _Batch, budget: ArrayLike | None, decision: Decision, t_start: float
    ) -> InferResult:
        """Any request: decide the masks, then run the blocks each image keeps."""
        latency = dict.fromkeys(LATENCY_KEYS, 0.0)
        with self._lock:
            try:
                xd = self._upload(batch)
                probs, run_mask = self._decide(xd, batch.n, budget, decision, latency)
                logits = self.backend.to_host([self._backbone(xd, run_mask, latency)])[0]
            finally:
                self.backend.release()
        _check_finite(logits)
        latency["total"] = _ms(t_start)
        flops = self._base_flops + run_mask @ self._comp_flops  # uint8 @ int64: int64
        mode = decision.mode if isinstance(decision, Agent) else None
        return InferResult(
            logits=logits,
            classes=logits.argmax(axis=1).astype(np.int64, copy=False),
            mask=run_mask,
            probs=probs,
            flops=flops,
            latency_ms=latency,
            policy_flops=self.decision_flops(mode) if probs is not None and mode else 0,
            full_flops=self.full_flops,
        )

    def _run_one_count(
        self, batch: _Batch, budget: ArrayLike | None, decision: Decision, t_start: float
    ) -> InferResult:
        """Mode 'allocate' on one image through the count plan (runtime/count_plan.py):
        the same result as `_run_batch`, with a fraction of its host work."""
        plan = self._count_plan
        assert plan is not None
        b = float(prepare_budget(budget, 1)[0])
        latency = dict.fromkeys(LATENCY_KEYS, 0.0)
        be = self.backend
        with self._lock:
            try:
                xd = self._upload(batch)
                t = time.perf_counter()
                chances = np.asarray(be.to_host(be.run_device(plan.allocator, [xd])[:1])[0])
                if chances.size != len(plan.levels):
                    raise InputError(
                        f"allocator outputs do not fit: chances {chances.shape}, "
                        f"count masks {plan.masks.shape}"
                    )
                count = plan.count(chances, b)
                latency["policy"] = _ms(t)
                graph = plan.graphs[count]
                if graph is None:  # no whole-mask graph for this count: the general dispatch
                    logits = be.to_host(
                        [self._backbone(xd, plan.masks[count : count + 1], latency)]
                    )[0]
                else:
                    t = time.perf_counter()
                    logits = be.to_host([be.run_device(graph, [xd])[0]])[0]
                    latency["hot"] = _ms(t)
            finally:
                be.release()
        logits = np.asarray(logits, np.float32).reshape(1, self.num_classes)
        _check_finite(logits)
        latency["total"] = _ms(t_start)
        return InferResult(
            logits=logits,
            classes=logits.argmax(axis=1).astype(np.int64, copy=False),
            mask=plan.masks[count : count + 1].copy(),
            probs=plan.shares[count : count + 1].copy(),
            flops=plan.flops[count : count + 1].copy(),
            latency_ms=latency,
            policy_flops=self.decision_flops("allocate"),
            full_flops=self.full_flops,
        )

    def _upload(self, batch: _Batch) -> Any:
        """The images on the backend: uint8 pixels normalised there when it can (a quarter
        of the bytes to move), else normalised here and uploaded."""
        x = batch.x
        if batch.pixels is not None:
            on_device = self.backend.upload_pixels(batch.pixels, self.manifest.preprocessing)
            if on_device is not None:
                return on_device
            x = prepare_images(batch.images, self.manifest.preprocessing)
        assert x is not None
        return self.backend.to_device(x)

    def _decide(
        self,
        xd: Any,
        n: int,
        budget: ArrayLike | None,
        decision: Decision,
        latency: dict[str, float],
    ) -> tuple[np.ndarray | None, np.ndarray]:
        """The policy's probabilities (None when it does not run) and the mask to run."""
        if isinstance(decision, Mask):
            run_mask = prepare_mask(decision.components, n, self.num_components)
            masklib.check_variants(run_mask, self.manifest, self._prefix_blocks)
            return None, run_mask
        if isinstance(decision, Static):
            return None, self._static_masks(prepare_budget(budget, n))
        if not self.has_policy:
            raise InputError(
                "this artifact has no policy graph (it was exported without "
                "an agent): pass mask= with the components to run"
            )
        b = prepare_budget(budget, n)
        t = time.perf_counter()
        mode = decision.mode or self.default_mode
        if mode == "allocate":
            run_mask, probs = self._allocate(xd, b)
        else:
            probs = self._policy(xd, b)
            run_mask = masklib.choose(probs, mode, decision.seed, b)
        latency["policy"] = _ms(t)
        if decision.cap is not None:
            run_mask = masklib.cap(run_mask, probs, b, self._cost_models[decision.cap])
        return probs, masklib.project_to_variants(run_mask, self._prefix_blocks)

    @property
    def has_static_masks(self) -> bool:
        return self.manifest.static_masks is not None

    def _static_masks(self, budget: np.ndarray) -> np.ndarray:
        """Each image's searched static mask: the one with round(c K) components, or
        the nearest count the search kept below it (the fewest found if none)."""
        if not self.has_static_masks:
            raise InputError(
                "this artifact has no static masks: export it with "
                "`budget-edge export ... --static-masks DATA`, or use "
                "policy='agent'"
            )
        want = masklib.rank_counts(budget, self.num_components)
        return self._static_table[np.minimum(want, self.num_components)]

    def run_policy(self, images: ArrayLike, budget: ArrayLike) -> np.ndarray:
        """The policy's probabilities (N, K) alone (a benchmark baseline)."""
        if not self.has_policy:
            raise InputError("this artifact has no policy graph (exported without an agent)")
        x = prepare_images(images, self.manifest.preprocessing)
        b = prepare_budget(budget, x.shape[0])
        with self._lock:
            try:
                return self._policy(self.backend.to_device(x), b)
            finally:
                self.backend.release()

    def run_allocator(self, images: ArrayLike) -> np.ndarray:
        """The allocator graph alone: its chances (N, K + 1) (a benchmark baseline)."""
        if not self.has_allocator:
            raise InputError("this artifact has no allocator graph (`budget-edge allocate`)")
        spec = self.manifest.role("allocator")
        assert spec is not None
        x = prepare_images(images, self.manifest.preprocessing)
        with self._lock:
            try:
                outs = self.backend.run_device(spec.name, [self.backend.to_device(x)])
                return np.asarray(self.backend.to_host(outs[:1])[0], np.float32)
            finally:
                self.backend.release()

    def run_full(self, images: ArrayLike) -> np.ndarray:
        """Logits of the static, unmasked `full` graph (the baseline to compare with)."""
        name = self.manifest.roles.get("full")
        if name is None:
            raise InputError(
                "this artifact has no `full` graph: re-export it with the static "
                "model, or run infer(mask=np.ones(K))"
            )
        x = prepare_images(images, self.manifest.preprocessing)
        with self._lock:
            return self.backend.run(name, [x])[0]

    def close(self) -> None:
        with self._lock:  # not while a call is using the backend's buffers
            self.backend.close()

    def __enter__(self) -> BudgetRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- dispatch -------------------------------------------------------------------

    def _policy(self, xd: Any, budget: np.ndarray) -> np.ndarray:
        """The probabilities, on the host: the mask is chosen there (a synchronisation)."""
        spec = self.manifest.role("policy")
        assert spec is not None
        b = budget.reshape(-1, 1) if len(spec.inputs[1].shape) == 2 else budget
        probs_d = self.backend.run_device(spec.name, [xd, self.backend.to_device(b)])[0]
        probs = self.backend.to_host([probs_d])[0]
        return np.asarray(probs, np.float32).reshape(budget.shape[0], self.num_components)

    def decision_flops(self, mode: str) -> int:
        """Per image: the policy graph's FLOPs, or with mode 'allocate' the allocator graph's."""
        flops = self.manifest.flops
        return int((flops.allocator if mode == "allocate" else flops.policy) or 0)

    @property
    def has_allocator(self) -> bool:
        return self.manifest.roles.get("allocator") is not None

    @property
    def default_mode(self) -> str:
        """The mode `infer` uses when given none: the one the artifact was exported for.
        Artifacts exported before the manifest recorded it keep what they ran then:
        greedy (a device that updates budget-edge must not change how it decides)."""
        return self.manifest.decision_mode or "greedy"

    def _allocate(self, xd: Any, budget: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Masks and probabilities of mode 'allocate': one call of the allocator graph."""
        spec, table = self.manifest.role("allocator"), self._allocation_table
        if spec is None or table is None:
            raise InputError(
                "this artifact has no allocator: add one with `budget-edge "
                "allocate CKPT --out CKPT2`, export CKPT2, or use mode 'rank'"
            )
        outs = self.backend.to_host(self.backend.run_device(spec.name, [xd]))
        n, k = budget.shape[0], self.num_components
        if np.size(outs[0]) != n * (k + 1):
            raise InputError(
                f"allocator outputs do not fit: chances {np.shape(outs[0])} for "
                f"{n} image(s) and {k + 1} counts"
            )
        # Shaped here: a TensorRT engine's buffers come back flat.
        arrays: list[np.ndarray] = [np.asarray(outs[0], np.float32).reshape(n, k + 1)]
        if self._count_table is None:  # an allocator from before the table: the agent ranks
            arrays.append(np.asarray(outs[1], np.float32).reshape(n, k + 1, k))
        return allocation.decide(arrays, self._count_table, budget, *table)

    def _backbone(self, x: Any, mask: np.ndarray, latency: dict[str, float]) -> Any:
        """The logits of every row, as a backend tensor."""
        if self._switch is not None:
            n = mask.shape[0]
            groups: dict[bytes, list[int]] = {}
            for i in range(n):
                groups.setdefault(mask[i].tobytes(), []).append(i)
            # A call per distinct mask beats gathering rows per block while the masks
            # repeat; with a different mask for most rows of a batch the block chain
            # is ahead (benchmarks/results/switch-graph/: batch 8, a mask per image).
            if len(groups) <= max(1, n // 2):
                t = time.perf_counter()
                logits = self._run_switch(self._switch, x, mask, groups)
                latency["hot"] = _ms(t)
                return logits
        return self._chain(x, mask, latency)

    def _run_switch(
        self, switch: str, x: Any, mask: np.ndarray, groups: dict[bytes, list[int]]
    ) -> Any:
        """One call per distinct mask (`groups`: its rows): its whole-mask graph if there
        is one, else the switch graph with the mask's per-block codes."""
        n = mask.shape[0]
        be = self.backend
        logits = None
        for key, rows in groups.items():
            xs = x if len(rows) == n else be.take(x, np.asarray(rows))
            whole = self._whole.get(key)
            if whole is not None:
                out = be.run_device(whole, [xs])[0]
            else:
                codes = mask[rows[0]].astype(np.int64) @ self._code_weights
                out = be.run_device(switch, [xs, be.to_device(codes)])[0]
            if len(rows) == n:
                return out
            if logits is None:
                logits = be.empty((n, self.num_classes))
            logits = be.put(logits, np.asarray(rows), out)
        return logits

    def _chain(self, x: Any, mask: np.ndarray, latency: dict[str, float]) -> Any:
        """Stem, a graph call per kept block (rows gathered per kept-path code), head."""
        n = mask.shape[0]
        be = self.backend
        logits = be.empty((n, self.num_classes))
        rest = np.arange(n)
        if self._whole:
            t = time.perf_counter()
            logits, rest = self._run_whole(x, mask, logits)
            latency["hot"] = _ms(t)
        if rest.size == 0:
            return logits
        xs, ms = (x, mask) if rest.size == n else (be.take(x, rest), mask[rest])
        t = time.perf_counter()
        h = be.run_device(str(self.manifest.roles["stem"]), [xs])[0]
        latency["stem"] = _ms(t)
        t = time.perf_counter()
        for plan, codes in zip(self._plans, self._codes(ms), strict=True):
            h = self._run_block(plan, h, codes)
        latency["blocks"] = _ms(t)
        t = time.perf_counter()
        out = be.run_device(str(self.manifest.roles["head"]), [h])[0]
        latency["head"] = _ms(t)
        if rest.size == n:
            return out
        return be.put(logits, rest, out)

    def _run_whole(self, x: Any, mask: np.ndarray, logits: Any) -> tuple[Any, np.ndarray]:
        """Run images whose mask has a whole-mask graph; return the logits and the other
        rows."""
        n = mask.shape[0]
        groups: dict[str, list[int]] = {}
        rest = []
        for i in range(n):
            graph = self._whole.get(mask[i].tobytes())
            if graph is None:
                rest.append(i)
            else:
                groups.setdefault(graph, []).append(i)
        for graph, rows in groups.items():
            xs = x if len(rows) == n else self.backend.take(x, np.asarray(rows))
            logits = self.backend.put(
                logits, np.asarray(rows), self.backend.run_device(graph, [xs])[0]
            )
        return logits, np.asarray(rest, np.int64)

    def _codes(self, mask: np.ndarray) -> list[list[int]]:
        """Every block's kept-path code for every image: one matmul, then plain lists
        (grouping small batches in Python is faster than numpy calls per block)."""
        codes: list[list[int]] = (mask.astype(np.int64) @ self._code_weights).T.tolist()
        return codes

    def _run_block(self, plan: _BlockPlan, h: Any, codes: list[int]) -> Any:
        """Gather the images of each kept-path code, run its graph, scatter back."""
        n = len(codes)
        be = self.backend
        if codes.count(codes[0]) == n:  # the whole batch runs one graph: no gather or scatter
            graph = self._graph_for(plan, codes[0])
            return h if graph is None else be.run_device(graph, [h])[0]
        groups: dict[int, list[int]] = {}
        for i, code in enumerate(codes):
            groups.setdefault(code, []).append(i)
        # Same shape: write kept rows in place; dropped rows (identity) stay as they are.
        # h is always a graph's output here (the stem runs first), never the caller's array.
        out = h if plan.same_shape else be.empty((n, *plan.out_shape))
        for code, rows in groups.items():
            graph = self._graph_for(plan, code)
            r = np.asarray(rows)
            if graph is not None:
                out = be.put(out, r, be.run_device(graph, [be.take(h, r)])[0])
            elif not plan.same_shape:  # identity skip on a shape change: the manifest forbids
                out = be.put(out, r, be.take(h, r))
        return out

    @staticmethod
    def _graph_for(plan: _BlockPlan, code: int) -> str | None:
        try:
            return plan.graphs[code]
        except KeyError:  # masks are checked before dispatch; this is an internal error
            paths = [j for j in range(code.bit_length()) if code >> j & 1]
            raise InputError(
                f"no graph for kept paths {paths}: the artifact does not export this variant"
            ) from None

    def _plan(self, b: int) -> _BlockPlan:
        block = self.manifest.blocks[b]
        first = self.manifest.graph(block.variants[0].graph)
        in_shape = tuple(int(v) for v in first.inputs[0].shape[1:])
        out_shape = tuple(int(v) for v in first.outputs[0].shape[1:])
        graphs: dict[int, str | None] = {0: block.skip}
        graphs.update({sum(1 << p for p in v.paths): v.graph for v in block.variants})
        return _BlockPlan(graphs=graphs, out_shape=out_shape, same_shape=in_shape == out_shape)

    def _code_matrix(self) -> np.ndarray:
        """W (K, blocks) with W[k, b] = 2**j when component k is path j of block b."""
        weights = np.zeros((self.num_components, len(self._plans)), np.int64)
        for b in range(len(self._plans)):
            for j, k in enumerate(self.manifest.block_components(b)):
                weights[k, b] = 1 << j
        return weights


def _count_table(by_count: dict[int, np.ndarray], k: int) -> np.ndarray:
    """(K+1, K): row m is the mask with the most kept components <= m (the fewest kept
    when none is that small)."""
    table = np.zeros((k + 1, k), np.uint8)
    if not by_count:
        return table
    counts = sorted(by_count)
    for m in range(k + 1):
        below = [c for c in counts if c <= m]
        table[m] = by_count[below[-1] if below else counts[0]]
    return table


def _check_finite(logits: np.ndarray) -> None:
    if not np.isfinite(logits).all():
        rows = np.flatnonzero(~np.isfinite(logits).all(axis=1))
        raise InputError(
            f"the model gave non-finite logits for image(s) {rows[:5].tolist()}"
            f"{' ...' if rows.size > 5 else ''}: float32 images must be preprocessed "
            "(about -10..10 after normalisation); pass uint8 pixels to let the runtime "
            "normalise them"
        )


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1e3
