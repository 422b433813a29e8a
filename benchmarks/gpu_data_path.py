"""The TensorRT backend's device data path on a real CUDA GPU, without TensorRT.

What runs for real: `TensorRTBackend` and `BudgetRuntime` unchanged, on real
cuda-python (pinned staging buffers, pooled device buffers that consecutive
blocks reuse, device-to-device gather and scatter of a batch's rows, one CUDA
stream, the synchronisations). What stands in for TensorRT: each "engine" is a
small CUDA kernel compiled at run time with NVRTC and launched on the backend's
stream by `execute_async_v3`, on a synthetic artifact whose blocks are
elementwise residual units, so numpy can check every logit:

    prep    image     = pixels (uint8 NHWC) * scale[c] - shift[c], as NCHW float
    stem    f[n, j]   = mean(image[n, j % C]) * w[j]
    block   y[n, j]   = x[n, j] + relu(x[n, j] * a[j] + c[j])
    head    l[n, k]   = sum_i x[n, k * J + i]
    policy  p[n, k]   = sigmoid(u[k] * mean(image[n]) + 8 v[k] (budget[n] - 0.5))

For each batch size and mode (explicit masks, the policy), it checks the
logits against numpy, counts host copies and synchronisations per `infer`
(through a counting wrapper around cudart), and times the call: wall clock on
the host; the engines' GPU time, summed from CUDA events around each kernel
launch (the GPU's own work, not the host's waits between launches); and the
stream's span from the call's first to its last event (which includes those
waits). uint8 pixels go up as they are and the preprocess "engine" normalises
them on the GPU, as TensorRT's preprocess engine does.

    python benchmarks/gpu_data_path.py --out benchmarks/results/gpu-data-path/NAME
    python benchmarks/gpu_data_path.py --dry-run    # no GPU: host memory, numpy kernels

--dry-run runs the same path on the tests' host-memory cudart stand-in with
numpy in place of the kernels: it checks the script, not a GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import string
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

from budget_edge.runtime import BudgetRuntime
from budget_edge.runtime.backends import tensorrt_backend as tb
from budget_edge.runtime.machine import machine_info
from budget_edge.runtime.manifest import (
    BackboneSpec,
    BlockSpec,
    ComponentSpec,
    FlopsSpec,
    GraphSpec,
    Manifest,
    Preprocessing,
    TensorRTSpec,
    TensorSpec,
    VariantSpec,
    write_manifest,
)

C, H, W = 3, 32, 32
FEATURES = 64
CLASSES = 8
BLOCKS = 12
MAX_BATCH = 16

KERNELS = string.Template(r"""
extern "C" __global__ void prep(const unsigned char* px, const float* scale,
                                const float* shift, float* img, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;  // one thread per output value
    if (i >= n * ${C} * ${HW}) return;
    int row = i / (${C} * ${HW}), c = (i / ${HW}) % ${C}, hw = i % ${HW};
    img[i] = px[((size_t)row * ${HW} + hw) * ${C} + c] * scale[c] - shift[c];
}
extern "C" __global__ void stem(const float* img, const float* w, float* out, int n) {
    int row = blockIdx.x, j = threadIdx.x;  // one block per image, one thread per feature
    if (row >= n || j >= ${F}) return;
    const float* ch = img + (size_t)row * ${C} * ${HW} + (j % ${C}) * ${HW};
    float s = 0.f;
    for (int i = 0; i < ${HW}; ++i) s += ch[i];
    out[row * ${F} + j] = s / ${HW} * w[j];
}
extern "C" __global__ void block(const float* x, const float* a, const float* c, float* y,
                                 int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n * ${F}) return;
    int j = i % ${F};
    float v = x[i] * a[j] + c[j];
    y[i] = x[i] + (v > 0.f ? v : 0.f);
}
extern "C" __global__ void head(const float* x, float* out, int n) {
    int row = blockIdx.x, k = threadIdx.x;
    if (row >= n || k >= ${K}) return;
    float s = 0.f;
    for (int i = 0; i < ${J}; ++i) s += x[row * ${F} + k * ${J} + i];
    out[row * ${K} + k] = s;
}
extern "C" __global__ void policy(const float* img, const float* budget, const float* u,
                                  const float* v, float* probs, float* value, int n) {
    int row = blockIdx.x, k = threadIdx.x;
    if (row >= n || k >= ${B}) return;
    const float* p = img + (size_t)row * ${C} * ${HW};
    float s = 0.f;
    for (int i = 0; i < ${C} * ${HW}; ++i) s += p[i];
    float z = u[k] * s / (${C} * ${HW}) + 8.f * v[k] * (budget[row] - 0.5f);
    probs[row * ${B} + k] = 1.f / (1.f + expf(-z));
    if (k == 0) value[row] = 0.f;
}
""").substitute(F=FEATURES, C=C, HW=H * W, K=CLASSES, J=FEATURES // CLASSES, B=BLOCKS)


# ---- the synthetic model, in numpy ------------------------------------------------------


def weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {
        "w": rng.uniform(0.5, 1.5, FEATURES).astype(np.float32),
        "u": rng.normal(0, 2, BLOCKS).astype(np.float32),
        "v": rng.uniform(0.5, 1.5, BLOCKS).astype(np.float32),
    }
    for b in range(BLOCKS):
        out[f"a{b}"] = rng.normal(0, 0.3, FEATURES).astype(np.float32)
        out[f"c{b}"] = rng.normal(0, 0.1, FEATURES).astype(np.float32)
    return out


def np_prep(px: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    return (
        px.transpose(0, 3, 1, 2) * scale.reshape(1, C, 1, 1) - shift.reshape(1, C, 1, 1)
    ).astype(np.float32)


def np_stem(img: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    means = img.reshape(img.shape[0], C, -1).mean(axis=2)
    return (means[:, np.arange(FEATURES) % C] * p["w"]).astype(np.float32)


def np_block(x: np.ndarray, p: dict[str, np.ndarray], b: int) -> np.ndarray:
    return (x + np.maximum(x * p[f"a{b}"] + p[f"c{b}"], 0)).astype(np.float32)


def np_head(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], CLASSES, -1).sum(axis=2).astype(np.float32)


def np_policy(img: np.ndarray, budget: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    z = p["u"] * img.reshape(img.shape[0], -1).mean(axis=1)[:, None] + 8 * p["v"] * (
        budget[:, None] - 0.5
    )
    return (1 / (1 + np.exp(-z))).astype(np.float32)


def np_forward(img: np.ndarray, mask: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    h = np_stem(img, p)
    for b in range(BLOCKS):
        h = np.where(mask[:, b : b + 1] == 1, np_block(h, p, b), h)
    return np_head(h)


# ---- the artifact: a manifest, placeholder graph files, engine specs --------------------


def write_artifact(root: Path, gpu: str, cc: str) -> None:
    def spec(name: str, shape: list[Any]) -> TensorSpec:
        return TensorSpec(name, ["batch", *shape])

    image, feats = spec("image", [C, H, W]), spec("features", [FEATURES])
    graphs = [
        GraphSpec("stem", "stem.onnx", [image], [feats]),
        GraphSpec("head", "head.onnx", [feats], [spec("logits", [CLASSES])]),
        GraphSpec(
            "policy",
            "policy.onnx",
            [image, spec("budget", [])],
            [spec("probs", [BLOCKS]), spec("value", [])],
        ),
    ]
    graphs += [
        GraphSpec(f"block{b:02d}", f"block{b:02d}.onnx", [feats], [spec("block_out", [FEATURES])])
        for b in range(BLOCKS)
    ]
    engines = {}
    for g in graphs:
        (root / g.file).write_bytes(b"placeholder: the engines below stand in for it\n")
        kind = g.name.rstrip("0123456789")
        (root / f"{g.name}.engine").write_text(
            json.dumps(
                {
                    "kernel": kind,
                    "block": int(g.name[5:]) if kind == "block" else -1,
                    "inputs": [t.name for t in g.inputs],
                    "outputs": [t.name for t in g.outputs],
                    "shapes": {t.name: t.shape[1:] for t in [*g.inputs, *g.outputs]},
                }
            )
        )
        engines[g.name] = f"{g.name}.engine"
    channel = [C, 1, 1]
    (root / "preprocess.engine").write_text(
        json.dumps(
            {
                "kernel": "prep",
                "block": -1,
                "inputs": ["pixels", "scale", "shift"],
                "outputs": ["image"],
                "dtypes": {"pixels": "UINT8"},
                "shapes": {
                    "pixels": [H, W, C],
                    "scale": channel,
                    "shift": channel,
                    "image": [C, H, W],
                },
            }
        )
    )
    flops = 2 * FEATURES
    manifest = Manifest(
        backbone_spec=BackboneSpec("synthetic", {}),
        num_classes=CLASSES,
        class_names=[f"c{k}" for k in range(CLASSES)],
        preprocessing=Preprocessing([0.5] * C, [0.25] * C, [C, H, W]),
        components=[ComponentSpec(b, 0, b, None, flops) for b in range(BLOCKS)],
        blocks=[BlockSpec(b, 0, 1, 0, [VariantSpec([0], f"block{b:02d}")]) for b in range(BLOCKS)],
        graphs=graphs,
        roles={"stem": "stem", "head": "head", "policy": "policy", "full": None, "switch": None},
        flops=FlopsSpec(stem=C * H * W, head=FEATURES, policy=C * H * W),
        versions={"onnx": "-", "opset": 17, "budget_edge": "gpu_data_path"},
        tensorrt=TensorRTSpec(
            "10.3.0", gpu, "fp32", MAX_BATCH, engines, cc, preprocess="preprocess.engine"
        ),
    )
    write_manifest(root, manifest)


# ---- a stand-in `tensorrt` whose engines are kernels --------------------------------------


class _Context:
    def __init__(self, engine: _Engine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}

    def set_device_memory(self, memory: int, size: int) -> None:
        pass  # the kernels need no scratch (device_memory_size_v2 is 0)

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        ok = 1 <= shape[0] <= MAX_BATCH and list(shape[1:]) == self.engine.spec["shapes"][name]
        if ok:
            self.shapes[name] = tuple(shape)
        return ok

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        if int(ptr) % 256:  # as TensorRT: tensor addresses are 256-byte aligned
            return False
        self.addresses[name] = int(ptr)
        return True

    def execute_async_v3(self, stream: int) -> bool:
        e = self.engine
        n = self.shapes[e.spec["inputs"][0]][0]
        ptrs = [self.addresses[t] for t in [*e.spec["inputs"], *e.spec["outputs"]]]
        e.kernels.launch(e.spec, ptrs, n, stream)
        return True


class _Engine:
    def __init__(self, spec: dict[str, Any], kernels: Any) -> None:
        self.spec, self.kernels = spec, kernels
        self.num_io_tensors = len(spec["inputs"]) + len(spec["outputs"])
        self.device_memory_size_v2 = 0

    def get_tensor_name(self, i: int) -> str:
        return [*self.spec["inputs"], *self.spec["outputs"]][i]

    def get_tensor_mode(self, name: str) -> str:
        return "INPUT" if name in self.spec["inputs"] else "OUTPUT"

    def get_tensor_dtype(self, name: str) -> str:
        return str(self.spec.get("dtypes", {}).get(name, "FLOAT"))

    def get_tensor_profile_shape(self, name: str, profile: int) -> list[list[int]]:
        return [[1], [1], [MAX_BATCH]]

    def create_execution_context(self, strategy: str = "STATIC") -> _Context:
        return _Context(self)


def fake_tensorrt(kernels: Any) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0"  # type: ignore[attr-defined]
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")  # type: ignore[attr-defined]
    trt.nptype = lambda dtype: {"FLOAT": np.float32, "UINT8": np.uint8}[dtype]  # type: ignore[attr-defined]
    trt.ExecutionContextAllocationStrategy = types.SimpleNamespace(  # type: ignore[attr-defined]
        USER_MANAGED="USER_MANAGED"
    )

    class Logger:
        WARNING = 2

        def __init__(self, severity: int) -> None:
            pass

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> _Engine:
            return _Engine(json.loads(data), kernels)

    trt.Logger, trt.Runtime = Logger, Runtime  # type: ignore[attr-defined]
    return trt


class GpuKernels:
    """NVRTC-compiled kernels launched with the driver API on the backend's stream."""

    def __init__(self, params: dict[str, np.ndarray], compute_capability: str) -> None:
        from cuda.bindings import driver, nvrtc
        from cuda.bindings import runtime as cudart

        self.driver, self.cudart = driver, cudart
        tb.cuda_call(cudart.cudaFree(0))  # make the primary context current
        prog = tb.cuda_call(nvrtc.nvrtcCreateProgram(KERNELS.encode(), b"k.cu", 0, [], []))
        # Machine code for this GPU, not PTX: a driver older than this NVRTC cannot JIT
        # the newer PTX ISA it would write ("unsupported PTX version").
        arch = f"--gpu-architecture=sm_{compute_capability.replace('.', '')}".encode()
        err = nvrtc.nvrtcCompileProgram(prog, 2, [b"--use_fast_math", arch])
        if int(err[0]) != 0:
            size = tb.cuda_call(nvrtc.nvrtcGetProgramLogSize(prog))
            log = b" " * size
            nvrtc.nvrtcGetProgramLog(prog, log)
            raise RuntimeError(log.decode())
        cubin = b" " * tb.cuda_call(nvrtc.nvrtcGetCUBINSize(prog))
        tb.cuda_call(nvrtc.nvrtcGetCUBIN(prog, cubin))
        module = tb.cuda_call(driver.cuModuleLoadData(cubin))
        self.fn = {
            k: tb.cuda_call(driver.cuModuleGetFunction(module, k.encode()))
            for k in ("prep", "stem", "block", "head", "policy")
        }
        self.params = {}
        for name, value in params.items():  # weights live on the device, like an engine's
            ptr = tb.cuda_call(cudart.cudaMalloc(value.nbytes))
            tb.cuda_call(
                cudart.cudaMemcpy(
                    ptr,
                    value.ctypes.data,
                    value.nbytes,
                    cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
                )
            )
            self.params[name] = int(ptr)
        self.events: list[Any] = []  # (start, end) around each launch, while timing
        self.launches: dict[str, int] = {}

    def launch(self, spec: dict[str, Any], ptrs: list[int], n: int, stream: int) -> None:
        import ctypes

        kind, b, p = spec["kernel"], spec["block"], self.params
        self.launches[kind] = self.launches.get(kind, 0) + 1
        if kind == "prep":
            grid, threads = math.ceil(n * C * H * W / 128), 128
            args = [*ptrs, n]
        elif kind == "stem":
            args, grid, threads = [ptrs[0], p["w"], ptrs[1], n], n, FEATURES
        elif kind == "block":
            grid, threads = math.ceil(n * FEATURES / 128), 128
            args = [ptrs[0], p[f"a{b}"], p[f"c{b}"], ptrs[1], n]
        elif kind == "head":
            args, grid, threads = [ptrs[0], ptrs[1], n], n, CLASSES
        else:
            args, grid, threads = [ptrs[0], ptrs[1], p["u"], p["v"], ptrs[2], ptrs[3], n], n, BLOCKS
        values = [
            ctypes.c_void_p(a) if i < len(args) - 1 else ctypes.c_int(a) for i, a in enumerate(args)
        ]
        types_ = [ctypes.c_void_p] * (len(args) - 1) + [ctypes.c_int]
        start, end = (tb.cuda_call(self.cudart.cudaEventCreate()) for _ in range(2))
        tb.cuda_call(self.cudart.cudaEventRecord(start, stream))
        tb.cuda_call(
            self.driver.cuLaunchKernel(
                self.fn[kind],
                grid,
                1,
                1,
                threads,
                1,
                1,
                0,
                self.driver.CUstream(stream),
                (tuple(v.value for v in values), tuple(types_)),
                0,
            )
        )
        tb.cuda_call(self.cudart.cudaEventRecord(end, stream))
        self.events.append((start, end))

    def kernel_ms(self) -> float:
        """GPU time of the launches since the last call, summed; waits for the last one."""
        total = 0.0
        if self.events:
            tb.cuda_call(self.cudart.cudaEventSynchronize(self.events[-1][1]))
        for start, end in self.events:
            total += float(tb.cuda_call(self.cudart.cudaEventElapsedTime(start, end)))
            for e in (start, end):
                tb.cuda_call(self.cudart.cudaEventDestroy(e))
        self.events.clear()
        return total


class HostKernels:
    """--dry-run: numpy in place of the kernels, on the host-memory cudart stand-in."""

    def __init__(self, params: dict[str, np.ndarray], memory: Any) -> None:
        self.params, self.memory = params, memory
        self.launches: dict[str, int] = {}

    def launch(self, spec: dict[str, Any], ptrs: list[int], n: int, stream: int) -> None:
        kind, b, p, mem = spec["kernel"], spec["block"], self.params, self.memory
        self.launches[kind] = self.launches.get(kind, 0) + 1

        def run() -> None:
            if kind == "prep":
                scale, shift = mem.read(ptrs[1], (C,)), mem.read(ptrs[2], (C,))
                px = mem.read(ptrs[0], (n, H, W, C), np.uint8)
                mem.write(ptrs[3], np_prep(px, scale, shift))
            elif kind == "stem":
                mem.write(ptrs[1], np_stem(mem.read(ptrs[0], (n, C, H, W)), p))
            elif kind == "block":
                mem.write(ptrs[1], np_block(mem.read(ptrs[0], (n, FEATURES)), p, b))
            elif kind == "head":
                mem.write(ptrs[1], np_head(mem.read(ptrs[0], (n, FEATURES))))
            else:
                img, budget = mem.read(ptrs[0], (n, C, H, W)), mem.read(ptrs[1], (n,))
                mem.write(ptrs[2], np_policy(img, budget, p))
                mem.write(ptrs[3], np.zeros(n, np.float32))

        mem.enqueue(run)


class Counting:
    """cudart, counting the copies by kind and the stream synchronisations."""

    def __init__(self, cudart: Any) -> None:
        self._cudart = cudart
        self.counts = {"h2d": 0, "d2h": 0, "d2d": 0, "sync": 0}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cudart, name)

    def cudaMemcpyAsync(self, dst: int, src: int, count: int, kind: Any, stream: Any) -> Any:
        k = self._cudart.cudaMemcpyKind
        name = {
            int(k.cudaMemcpyHostToDevice): "h2d",
            int(k.cudaMemcpyDeviceToHost): "d2h",
            int(k.cudaMemcpyDeviceToDevice): "d2d",
        }[int(kind)]
        self.counts[name] += 1
        return self._cudart.cudaMemcpyAsync(dst, src, count, kind, stream)

    def cudaStreamSynchronize(self, stream: Any) -> Any:
        self.counts["sync"] += 1
        return self._cudart.cudaStreamSynchronize(stream)


# ---- the measurement ------------------------------------------------------------------


def measure(
    rt: BudgetRuntime,
    counting: Counting,
    params: dict[str, np.ndarray],
    batch: int,
    mode: str,
    calls: int,
    kernels: Any,
) -> dict[str, Any]:
    gpu = isinstance(kernels, GpuKernels)
    rng = np.random.default_rng(batch)
    pixels = rng.integers(0, 256, (batch, H, W, C), np.uint8)
    img = (pixels.transpose(0, 3, 1, 2).astype(np.float32) / 255 - 0.5) / 0.25
    masks = (rng.random((batch, BLOCKS)) < 0.5).astype(np.uint8)
    kwargs: dict[str, Any] = {"mask": masks} if mode == "mask" else {"budget": 0.5}
    out = rt.infer(pixels, **kwargs)  # warm: engines load, pools fill
    want = np_forward(img, out.mask, params)
    error = float(np.abs(out.logits - want).max())
    if mode == "policy":
        want_mask = np_policy(img, np.full(batch, 0.5, np.float32), params) >= 0.5
        error = max(error, float((out.mask != want_mask).mean()))
    before, launched = dict(counting.counts), dict(kernels.launches)
    rt.infer(pixels, **kwargs)
    per_call = {k: counting.counts[k] - before[k] for k in before}
    # Engine runs of one call, by kind: the preprocess engine normalises the uint8 pixels.
    per_call["launches"] = {k: v - launched.get(k, 0) for k, v in kernels.launches.items()}
    wall, span, busy = [], [], []
    stream = rt.backend._stream  # type: ignore[attr-defined]
    cudart = counting._cudart
    if gpu:
        kernels.kernel_ms()  # drop the warm-up calls' events
    for _ in range(calls):
        if gpu:
            start, end = (tb.cuda_call(cudart.cudaEventCreate()) for _ in range(2))
            tb.cuda_call(cudart.cudaEventRecord(start, stream))
        t = time.perf_counter()
        rt.infer(pixels, **kwargs)
        wall.append((time.perf_counter() - t) * 1e3)
        if gpu:
            tb.cuda_call(cudart.cudaEventRecord(end, stream))
            tb.cuda_call(cudart.cudaEventSynchronize(end))
            span.append(float(tb.cuda_call(cudart.cudaEventElapsedTime(start, end))))
            for e in (start, end):
                tb.cuda_call(cudart.cudaEventDestroy(e))
            busy.append(kernels.kernel_ms())
    return {
        "batch": batch,
        "mode": mode,
        "max_abs_error": error,
        "per_infer": per_call,
        "wall_ms_median": float(np.median(wall)),
        # The engines' own GPU time, and the stream's span (with the host's waits).
        "kernel_ms_median": float(np.median(busy)) if busy else None,
        "stream_span_ms_median": float(np.median(span)) if span else None,
        "distinct_masks": len({m.tobytes() for m in out.mask}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="write NAME.json and NAME.md")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--batches", default="1,4,16")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="no GPU: the tests' host-memory cudart, numpy kernels",
    )
    args = parser.parse_args()
    params = weights()
    if args.dry_run:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from runtime.fake_tensorrt import FakeCudart

        base: Any = FakeCudart()
        kernels: Any = HostKernels(params, base)
        gpu, cc = "Fake GPU", "8.7"
    else:
        base = tb.import_cudart()
        device = tb.cuda_call(base.cudaGetDevice())
        props = tb.cuda_call(base.cudaGetDeviceProperties(device))
        gpu, cc = tb.decode_gpu_name(props.name), f"{props.major}.{props.minor}"
        kernels = GpuKernels(params, cc)
    counting = Counting(base)
    tb.import_cudart = lambda: counting  # type: ignore[assignment]
    sys.modules["tensorrt"] = fake_tensorrt(kernels)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        write_artifact(Path(tmp), gpu, cc)
        rt = BudgetRuntime.load(tmp, backend="tensorrt")
        for batch in (int(b) for b in args.batches.split(",")):
            for mode in ("mask", "policy"):
                row = measure(rt, counting, params, batch, mode, args.calls, kernels)
                rows.append(row)
                print(json.dumps(row))
        rt.close()
    result = {
        "gpu": gpu,
        "compute_capability": cc,
        "dry_run": args.dry_run,
        "machine": machine_info(),
        "blocks": BLOCKS,
        "rows": rows,
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
        dry = " - DRY RUN, no GPU" if args.dry_run else ""
        lines = [
            f"# Device data path on {gpu} (sm {cc}){dry}",
            "",
            "| batch | mode | max abs error | h2d | d2h | d2d | syncs | wall ms "
            "| kernel ms | stream span ms |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            c = r["per_infer"]
            ms = [
                "-" if r[k] is None else f"{r[k]:.3f}"
                for k in ("kernel_ms_median", "stream_span_ms_median")
            ]
            lines.append(
                f"| {r['batch']} | {r['mode']} | {r['max_abs_error']:.2e} | {c['h2d']} "
                f"| {c['d2h']} | {c['d2d']} | {c['sync']} | {r['wall_ms_median']:.3f} | "
                f"{ms[0]} | {ms[1]} |"
            )
        args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
