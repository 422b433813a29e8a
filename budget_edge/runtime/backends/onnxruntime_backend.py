"""ONNX Runtime backend: one InferenceSession per graph, created on first use.

Sessions are created lazily: a ResNeXt artifact holds a graph per kept-path
variant of every block, and a policy rarely uses all of them, so only the
variants that run take memory (each session costs roughly 1 MB beyond its
weights here; call `load(names)` to pay the creation time up front).
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from budget_edge.errors import BackendError, ManifestError
from budget_edge.runtime.backends import HostTensors
from budget_edge.runtime.backends.shared_weights import WeightPool
from budget_edge.runtime.device_graphs import GATHER_ROWS, PREPROCESS, SCATTER_ROWS
from budget_edge.runtime.inputs import scale_and_shift
from budget_edge.runtime.manifest import Manifest, Preprocessing, read_checked
from budget_edge.runtime.onnx_wire import check_graphs

INSTALL_HINT = "pip install onnxruntime (or onnxruntime-gpu on a CUDA machine)"
# Preferred order when onnxruntime-gpu is installed and `providers` is not given.
# The TensorRT execution provider is opt-in (providers=["TensorrtExecutionProvider",
# ...]): it builds an engine per session at load time, minutes for a ResNeXt artifact.
DEFAULT_GPU_PROVIDERS = ("CUDAExecutionProvider",)
# One CPU memory arena for every session of the process instead of one each: the
# runtime holds a session per graph (30-60 of them), and per-session arenas made
# its resident memory grow with the number of graphs, not the weights
# (ResNeXt-29: 270 -> 123 MiB; benchmarks/results/runtime-findings.md, section 4).
SHARED_ARENA = True
# One copy of each weight for all CPU sessions (backends/shared_weights.py): the
# whole-mask graphs repeat the blocks' weights, and mode allocate switches between
# them nearly every image.
SHARED_WEIGHTS = True
_arena_lock = threading.Lock()
_arena_registered = False


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendError(f"ONNX Runtime is not installed: {INSTALL_HINT}") from exc
    if hasattr(onnxruntime, "disable_telemetry_events"):
        onnxruntime.disable_telemetry_events()  # a device sends nothing anywhere
    return onnxruntime


# What a Jetson needs from the GPU providers. CUDA: a heuristic convolution search (the
# default, exhaustive, re-tunes at every new gathered sub-batch size) and an arena that
# grows by what is asked (the GPU shares the Jetson's RAM). TensorRT EP: engines and
# timing caches kept in the artifact dir, so a restart does not rebuild every engine.
CUDA_OPTIONS = {"cudnn_conv_algo_search": "HEURISTIC", "arena_extend_strategy": "kSameAsRequested"}
GPU_DEVICE_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def provider_options(name: str, directory: Path) -> dict[str, Any]:
    """budget-edge's options for a provider given by name only."""
    if name == "CUDAExecutionProvider":
        return dict(CUDA_OPTIONS)
    if name == "TensorrtExecutionProvider":
        cache = str(directory / "engines" / "ort-tensorrt")
        return {
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": cache,
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": cache,
        }
    return {}


def with_options(providers: Sequence[Any], directory: Path) -> list[Any]:
    """Providers given by name get budget-edge's options; (name, options) stay as given."""
    out: list[Any] = []
    for p in providers:
        if isinstance(p, tuple):
            out.append(p)
        else:
            options = provider_options(p, directory)
            out.append((p, options) if options else p)
    return out


def choose_providers(available: Sequence[str], requested: Sequence[Any] | None) -> list[Any]:
    """Execution providers for every session; CPU always last as the fallback."""
    if requested is None:
        chosen: list[Any] = [p for p in DEFAULT_GPU_PROVIDERS if p in available]
    else:
        chosen = list(requested)
        for p in chosen:
            name = p[0] if isinstance(p, tuple) else p
            if name not in available:
                raise BackendError(
                    f"execution provider {name!r} is not available in this "
                    f"onnxruntime (available: {', '.join(available)}): install "
                    "onnxruntime-gpu for CUDA/TensorRT, or leave providers unset"
                )
    names = [p[0] if isinstance(p, tuple) else p for p in chosen]
    if "CPUExecutionProvider" not in names:
        chosen.append("CPUExecutionProvider")
    return chosen


def default_threads() -> int:
    """Threads per session: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def register_shared_arena(ort: Any) -> bool:
    """Register one CPU arena allocator with ONNX Runtime's environment, once per process.

    Returns whether sessions may use it (`session.use_env_allocators`). Older
    onnxruntime builds without the call keep an arena per session.
    """
    global _arena_registered
    with _arena_lock:
        if _arena_registered:
            return True
        if not hasattr(ort, "create_and_register_allocator"):
            return False
        info = ort.OrtMemoryInfo(
            "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
        )
        try:
            ort.create_and_register_allocator(info, None)
        except Exception:  # noqa: BLE001 (already registered by other code in this process)
            pass
        _arena_registered = True
        return True


def session_options(ort: Any, threads: int | None, shared_arena: bool = False) -> Any:
    """Options for every session, chosen by measurement.

    The runtime runs many small sessions one after another (stem, a graph per
    block, head), never two at once. `python benchmarks/investigations/ort_session_options.py`
    times a ResNet-56 shaped chain of 29 sessions against the one static graph
    (onnxruntime 1.32, the 2-core dev VM while other jobs ran, load ~8, so
    treat small differences as noise; median ms):

        options                          batch 1: chain / static   batch 8: chain / static
        default (per-session spinning)             205  / 1.9              846 / 39
        intra 2, inter 1, sequential, spinning     207  / 1.8              725 / 25
        the same with allow_spinning = 0           3.0  / 2.0              15  / 16
        intra 1                                    2.4  / 1.9              34  / 29

    Each session's pool spins after its run while the next session wants the
    cores, so spinning pools are ~70x slower in a chain. Without spinning the
    chain matches the static graph at batch 8; one thread per session is a
    little faster at batch 1 but half as fast at batch 8. So: intra-op threads
    = cores (or `threads`), allow_spinning = 0, inter-op 1, sequential.
    IO binding with pre-allocated outputs measured the same as `run` on CPU
    (87 us vs 87 us per block call), so plain `run` is used.
    """
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or default_threads()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3  # errors only: warnings about unused initialisers are noise
    if shared_arena:
        so.add_session_config_entry("session.use_env_allocators", "1")
    return so


class OnnxRuntimeBackend(HostTensors):
    """Runs the artifact's ONNX graphs with ONNX Runtime (CPU, CUDA or TensorRT EP).

    On the CPU its tensors are numpy arrays (HostTensors). With a GPU provider
    first, they are OrtValues on the GPU, bound to every session with IOBinding,
    and rows are gathered and scattered there by two tiny graphs (Gather,
    ScatterND), so activations do not leave the GPU between block sessions.
    `device` forces that path onto another device ("cpu": the tests run it).
    """

    name = "onnxruntime"

    def __init__(
        self,
        manifest: Manifest,
        directory: Path,
        threads: int | None = None,
        providers: Sequence[Any] | None = None,
        device: str | None = None,
    ) -> None:
        self._ort = import_onnxruntime()
        self._manifest = manifest
        self._dir = Path(directory)
        self.providers = with_options(
            choose_providers(self._ort.get_available_providers(), providers), self._dir
        )
        first = self.providers[0][0] if isinstance(self.providers[0], tuple) else self.providers[0]
        self.device = device or ("cuda" if first in GPU_DEVICE_PROVIDERS else None)
        self._rows: Any = None  # the Gather / ScatterND sessions, made on first use
        self._constants: tuple[Any, ...] | None = None  # preprocess scale and shift
        shared = SHARED_ARENA and register_shared_arena(self._ort)
        self._options = session_options(self._ort, threads, shared_arena=shared)
        self._threads, self._shared_arena = threads, shared
        cpu_only = all(
            (p[0] if isinstance(p, tuple) else p) == "CPUExecutionProvider" for p in self.providers
        )
        self._weights = (
            WeightPool(self._ort) if SHARED_WEIGHTS and cpu_only and self.device is None else None
        )
        self._sessions: dict[str, tuple[Any, list[str], list[str]]] = {}
        self._lock = threading.Lock()  # session.run is thread-safe; creating them is ours
        # Every graph declares what its manifest entry says and holds its own weights: a
        # swapped or foreign file fails here, at load, not inside a request.
        check_graphs(manifest.graphs, lambda name: read_checked(self._dir, manifest, name))
        if self.device == "cuda" and device is None:
            self._check_gpu_provider_loads(first, chosen_by_user=providers is not None)

    def _check_gpu_provider_loads(self, provider: str, chosen_by_user: bool) -> None:
        """A GPU provider can be listed and still fail to load (no cuDNN 9, a CUDA runtime
        the driver is too old for): ONNX Runtime then runs the session on the CPU, and
        the GPU tensors bound to it fail later, mid-request. Probe one session now."""
        stem = self._manifest.roles.get("stem") or self._manifest.graphs[0].name
        in_use = self._session(stem)[0].get_providers()
        if in_use and in_use[0] in GPU_DEVICE_PROVIDERS:
            return  # (TensorRT's provider may fall back to CUDA's: still on the GPU)
        problem = (
            f"onnxruntime lists {provider} but its session runs on {in_use[0] if in_use else '?'}"
            " (the provider did not load: often cuDNN 9 or CUDA 12 libraries are missing)"
        )
        if chosen_by_user:
            raise BackendError(
                f"{problem}: install what it needs, or pass providers=['CPUExecutionProvider']"
            )
        warnings.warn(f"{problem}; running on the CPU", RuntimeWarning, stacklevel=4)
        self.providers = ["CPUExecutionProvider"]
        self.device = None
        self._sessions.clear()
        # On the CPU the sessions share their weights again (a Jetson's RAM is the GPU's).
        self._weights = WeightPool(self._ort) if SHARED_WEIGHTS else None

    def _session(self, graph: str) -> tuple[Any, list[str], list[str]]:
        entry = self._sessions.get(graph)
        if entry is not None:
            return entry
        with self._lock:
            return self._create(graph)

    def _create(self, graph: str) -> tuple[Any, list[str], list[str]]:
        entry = self._sessions.get(graph)
        if entry is None:
            spec = self._manifest.graph(graph)
            path = self._dir / spec.file
            model = read_checked(self._dir, self._manifest, spec.file)
            try:
                sess = self._shared_session(model)
                if sess is None:
                    sess = self._ort.InferenceSession(
                        model, sess_options=self._options, providers=self.providers
                    )
            except Exception as exc:  # onnxruntime raises its own exception types
                raise ManifestError(
                    f"ONNX Runtime cannot load graph {graph!r} from {path} "
                    f"({exc}): re-export the model"
                ) from exc
            entry = (sess, [t.name for t in spec.inputs], [t.name for t in spec.outputs])
            self._sessions[graph] = entry
        return entry

    def _shared_session(self, model: bytes) -> Any | None:
        """The session with its weights from the pool; None without a pool, or when the
        pool cannot make this graph's (the switch graph: its If bodies), which then keeps
        its own weights. The pool stays: sessions made from it use its buffers."""
        if self._weights is None:
            return None
        try:
            return self._weights.session(model, self._fresh_options, self.providers)
        except Exception:  # noqa: BLE001 (the plain session made next reports real errors)
            return None

    def _fresh_options(self, level: Any | None) -> Any:
        options = session_options(self._ort, self._threads, shared_arena=self._shared_arena)
        if level is not None:
            options.graph_optimization_level = level
        return options

    @property
    def weight_bytes(self) -> tuple[int, int]:
        """(bytes of weights the sessions made so far hold, distinct bytes behind them);
        (0, 0) without shared weights."""
        if self._weights is None:
            return 0, 0
        return self._weights.total_bytes, self._weights.distinct_bytes

    def load(self, graphs: Sequence[str]) -> None:
        """Create the sessions of these graphs now rather than on first use."""
        for g in graphs:
            self._session(g)

    def run(self, graph: str, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        sess, in_names, out_names = self._session(graph)
        outputs: list[np.ndarray] = sess.run(out_names, dict(zip(in_names, inputs, strict=True)))
        return outputs

    # ---- device tensors (OrtValues bound with IOBinding) when self.device is set ------

    def run_device(self, graph: str, inputs: Sequence[Any]) -> list[Any]:
        if self.device is None:
            return self.run(graph, inputs)
        sess, in_names, out_names = self._session(graph)
        return self._bound(sess, in_names, out_names, inputs)

    def _bound(
        self, sess: Any, in_names: list[str], out_names: list[str], inputs: Sequence[Any]
    ) -> list[Any]:
        binding = sess.io_binding()
        for name, value in zip(in_names, inputs, strict=True):
            binding.bind_ortvalue_input(name, value)
        for name in out_names:
            binding.bind_output(name, self.device)
        sess.run_with_iobinding(binding)
        outputs: list[Any] = binding.get_outputs()
        return outputs

    def to_device(self, array: np.ndarray) -> Any:
        if self.device is None:
            return array
        return self._ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device)

    def to_host(self, tensors: Sequence[Any]) -> list[np.ndarray]:
        if self.device is None:
            return super().to_host(tensors)
        return [np.asarray(t.numpy(), np.float32) for t in tensors]

    def empty(self, shape: tuple[int, ...]) -> Any:
        if self.device is None:
            return super().empty(shape)
        return self._ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.float32, self.device)

    def take(self, tensor: Any, rows: np.ndarray) -> Any:
        if self.device is None:
            return super().take(tensor, rows)
        gather, _, _ = self._device_sessions()
        index = self.to_device(np.asarray(rows, np.int64))
        return self._bound(gather, ["data", "rows"], ["out"], [tensor, index])[0]

    def put(self, dst: Any, rows: np.ndarray, src: Any) -> Any:
        if self.device is None:
            return super().put(dst, rows, src)
        _, scatter, _ = self._device_sessions()
        index = self.to_device(np.asarray(rows, np.int64).reshape(-1, 1))
        return self._bound(scatter, ["data", "rows", "updates"], ["out"], [dst, index, src])[0]

    def upload_pixels(self, pixels: np.ndarray, pre: Preprocessing) -> Any | None:
        """uint8 pixels up, normalised by the preprocess graph on the device."""
        if self.device is None:
            return None
        _, _, prep = self._device_sessions()
        if self._constants is None:  # on the device once, for every call
            self._constants = tuple(self.to_device(v) for v in scale_and_shift(pre))
        values = [self.to_device(pixels), *self._constants]
        return self._bound(prep, ["pixels", "scale", "shift"], ["image"], values)[0]

    def _device_sessions(self) -> tuple[Any, Any, Any]:
        """Gather rows, ScatterND rows and preprocess (runtime/device_graphs.py)."""
        if self._rows is None:
            with self._lock:
                self._rows = tuple(
                    self._ort.InferenceSession(
                        model, sess_options=self._options, providers=self.providers
                    )
                    for model in (GATHER_ROWS, SCATTER_ROWS, PREPROCESS)
                )
        return self._rows

    def close(self) -> None:
        self._sessions.clear()
        self._rows = None
