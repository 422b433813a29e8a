"""One run that settles the GPU path: every GPU backend against ONNX Runtime on the CPU.

On a machine with a CUDA GPU, in one command and a few minutes:

1. the environment: GPU, driver, CUDA in torch, cuda-python, TensorRT, ONNX
   Runtime's providers (what is missing is said, and the rest runs);
2. a small artifact exported here (ResNet-8 shape on 1x28x28 images, an agent
   and an allocator with its count masks, so the count plan runs), its fp16
   and int8 (`--target tensorrt`) sets, and for each precision TensorRT
   engines (`build-engines`) compared with ONNX Runtime on the CPU: explicit
   mixed masks at batch 1, 8 and 9 (one above the engines' maximum: run in
   chunks) and budgets through the artifact's own mode (the count plan at
   batch 1);
3. ONNX Runtime on the CPU, the reference: its block chain against its
   whole-mask graphs in every precision; then ONNX Runtime's CUDA provider, the
   fp32 comparisons (TF32 off), after checking that the sessions run on CUDA (a
   listed provider can fail to load);
4. PyTorch on CUDA: the backbone's masked forward against the CPU graphs;
5. `gpu_data_path.py`: the TensorRT backend's device data path with NVRTC
   kernels (copies, synchronisations, CUDA-event GPU time per infer).

    python benchmarks/device_check.py --out benchmarks/results/device-check/NAME
    python benchmarks/device_check.py --dry-run --out /tmp/dry   # no GPU: the script itself

Writes OUT.json and OUT.md and prints the table; exits 1 if any stage that ran
disagrees with the CPU. --dry-run runs stages 1, 2 (export and CPU reference
only), 4 on the CPU and 5 with its own --dry-run: it checks the script, not a
GPU (`make test-slow` runs it).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from budget_edge.agent.allocator import build_allocator
from budget_edge.agent.policy import build_agent
from budget_edge.bench.interleaved import write_result
from budget_edge.export.exporter import export_checkpoint
from budget_edge.export.quantize import QuantizeSettings, quantize_artifact
from budget_edge.models import build_backbone
from budget_edge.models.checkpoint import LoadedCheckpoint
from budget_edge.runtime import BudgetRuntime
from budget_edge.runtime.machine import machine_info
from budget_edge.train.allocator import count_masks_of

SIZE = (1, 28, 28)
MAX_BATCH = 8
BATCHES = (1, MAX_BATCH, MAX_BATCH + 1)
BUDGETS = (0.4, 0.7, 1.0)
# Logits may differ by this much from ONNX Runtime's fp32 on the CPU (fp32 engines may use
# TF32-free kernels of another order of summation; fp16 rounds every activation).
TOLERANCE = {"fp32": 1e-3, "fp16": 5e-2}
INT8_AGREEMENT = 0.9  # int8: the share of all images that get the CPU int8 set's class
CPU = ["CPUExecutionProvider"]  # the reference: never a GPU, even where one is installed


def environment() -> dict[str, Any]:
    """What this machine has; every lookup says what it found or why not."""
    found: dict[str, Any] = {"machine": machine_info()}
    smi = shutil.which("nvidia-smi")
    if smi:
        done = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
        found["nvidia_smi"] = done.stdout.strip() or done.stderr.strip()
    else:
        found["nvidia_smi"] = "not found"
    found["torch"] = torch.__version__
    found["torch_cuda"] = torch.version.cuda if torch.cuda.is_available() else "unavailable"
    if torch.cuda.is_available():
        found["torch_gpu"] = torch.cuda.get_device_name(0)
    for package in ("cuda-python", "cuda-bindings", "tensorrt", "onnxruntime", "onnxruntime-gpu"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    import onnxruntime

    found["onnxruntime_providers"] = onnxruntime.get_available_providers()
    return found


def tiny_checkpoint() -> LoadedCheckpoint:
    """ResNet-8 shape with an agent and a calibrated allocator: every graph kind, small."""
    torch.manual_seed(0)
    net = build_backbone("resnet8", num_classes=10, in_channels=1, input_size=SIZE)
    agent = build_agent(net.num_components, "light", in_channels=1, input_size=SIZE)
    x = torch.randn(64, *SIZE)
    with torch.no_grad():  # running statistics measured, so BatchNorm is not an identity
        for module in (net, agent):
            for bn in (m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)):
                bn.momentum = None
            module.train()
        net(x)
        agent(x, torch.rand(64))
    net.eval(), agent.eval()
    # Prices and chances (below) such that budgets 0.4, 0.7 and 1 run 1, 2 and 3
    # components: the count plan picks different, non-empty rows.
    calibration = {
        "budgets": [0.0, 0.4, 0.7, 1.0],
        "prices": [3.0, 1.1, 0.5, 0.0],
        "source": "device",
    }
    allocator = build_allocator(
        net.num_components,
        in_channels=1,
        input_size=SIZE,
        calibration=calibration,
        count_masks=count_masks_of(agent, x).tolist(),
    ).eval()
    with torch.no_grad():  # chances rising with the count, less and less (ResNet-8: K = 3)
        allocator.chance.bias.copy_(torch.tensor([-3.0, 0.0, 1.5, 2.25]))
    meta = {
        "preprocessing": {"mean": [0.3], "std": [0.3], "input_size": list(SIZE), "layout": "NCHW"},
        "class_names": [f"c{i}" for i in range(10)],
    }
    return LoadedCheckpoint(net, agent, meta, "budget-edge", allocator=allocator)


def inputs(num_components: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per batch size: uint8 NHWC images and masks mixing two patterns (few distinct masks
    per batch: the runtime runs them as whole-mask graphs, not the block chain)."""
    rng = np.random.default_rng(0)
    patterns = np.array([[1, 0, 1], [0, 1, 1]], np.uint8)[:, :num_components]
    return {n: (pixels(rng, n), patterns[rng.integers(0, 2, n)]) for n in BATCHES}


def pixels(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, (n, SIZE[1], SIZE[2], SIZE[0]), dtype=np.uint8)


def compare(
    rt: BudgetRuntime, reference: BudgetRuntime, data: dict[int, Any], precision: str
) -> list[dict[str, Any]]:
    """Masks and budgets at every batch size against the reference runtime."""
    rows = []
    for n, (images, masks) in data.items():
        cases: list[tuple[str, dict[str, Any]]] = [("masks", {"mask": masks})]
        cases += [(f"budget {c:g}", {"budget": c}) for c in BUDGETS]
        for label, kwargs in cases:
            want = reference.infer(images, **kwargs)
            start = time.perf_counter()
            got = rt.infer(images, **kwargs)
            wall_ms = (time.perf_counter() - start) * 1e3
            same_masks = bool(np.array_equal(got.mask, want.mask))
            error = float(np.abs(got.logits - want.logits).max())
            # int8 is judged over all its images together (below), not per small batch.
            ok = same_masks and (precision == "int8" or error <= TOLERANCE[precision])
            rows.append(
                {
                    "precision": precision,
                    "batch": n,
                    "case": label,
                    "same_masks": same_masks,
                    "distinct_masks": len({row.tobytes() for row in got.mask}),
                    "components_run": int(got.mask.sum()),
                    "max_abs_logit_error": error,
                    "agreeing": int((got.classes == want.classes).sum()),
                    "images": n,
                    "wall_ms": wall_ms,
                    "ok": ok,
                }
            )
    int8 = [r for r in rows if r["precision"] == "int8"]
    if int8:
        agreement = sum(r["agreeing"] for r in int8) / sum(r["images"] for r in int8)
        for r in int8:
            r["int8_class_agreement"] = agreement
            r["ok"] = r["ok"] and agreement >= INT8_AGREEMENT
    return rows


def stage(name: str, report: dict[str, Any], body: Callable[[], dict[str, Any]]) -> None:
    """Run one stage; a missing piece is 'skipped' with the reason, a crash is 'error'."""
    start = time.perf_counter()
    try:
        result = body()
    except Skip as why:
        result = {"status": "skipped", "why": str(why)}
    except Exception as exc:  # noqa: BLE001 (the next stages still run; the report says)
        result = {"status": "error", "why": f"{type(exc).__name__}: {exc}"}
        result["traceback"] = traceback.format_exc(limit=6)
    result["seconds"] = round(time.perf_counter() - start, 1)
    report["stages"][name] = result
    print(f"{name}: {result['status']}" + (f" ({result.get('why')})" if "why" in result else ""))


class Skip(Exception):
    """What this stage needs is not on this machine."""


def tensorrt_stage(art: Path, data: dict[int, Any], dry_run: bool) -> dict[str, Any]:
    if dry_run:
        raise Skip("dry run")
    from budget_edge.export.tensorrt_builder import build_engines
    from budget_edge.runtime.backends.tensorrt_backend import tensorrt_unavailable

    why = tensorrt_unavailable()  # only a missing TensorRT or GPU skips; any other error fails
    if why is not None:
        raise Skip(why)
    rows: list[dict[str, Any]] = []
    for precision in ("fp32", "fp16", "int8"):
        build_engines(art, precision=precision, max_batch=MAX_BATCH)
        with (
            BudgetRuntime.load(art, backend="tensorrt", precision=precision) as rt,
            BudgetRuntime.load(
                art, backend="onnxruntime", precision=precision, providers=CPU
            ) as cpu,
        ):
            rows += compare(rt, cpu, data, precision)
    return {"status": "ran", "ok": all(r["ok"] for r in rows), "rows": rows}


def cpu_dispatch_stage(art: Path, data: dict[int, Any]) -> dict[str, Any]:
    """The reference itself: the block chain against the whole-mask graphs, per precision."""
    rows: list[dict[str, Any]] = []
    for precision in ("fp32", "fp16", "int8"):
        with (
            BudgetRuntime.load(
                art, backend="onnxruntime", precision=precision, providers=CPU
            ) as whole,
            BudgetRuntime.load(
                art, backend="onnxruntime", precision=precision, dispatch="chain", providers=CPU
            ) as chain,
        ):
            rows += compare(chain, whole, data, precision)
    return {"status": "ran", "ok": all(r["ok"] for r in rows), "rows": rows}


def onnxruntime_cuda_stage(art: Path, data: dict[int, Any]) -> dict[str, Any]:
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        raise Skip("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
    rows: list[dict[str, Any]] = []
    # TF32 off: the fp32 tolerance is for fp32 arithmetic (TF32 rounds to 10 bits).
    providers = [("CUDAExecutionProvider", {"use_tf32": 0}), "CPUExecutionProvider"]
    with (
        BudgetRuntime.load(art, backend="onnxruntime", providers=providers) as rt,
        BudgetRuntime.load(art, backend="onnxruntime", providers=CPU) as cpu,
    ):
        rows += compare(rt, cpu, data, "fp32")
        # A provider that is listed but cannot load (no cuDNN, say) leaves sessions on the CPU.
        sessions = rt.backend._sessions.values()  # type: ignore[attr-defined]
        running = sorted({p for session, _, _ in sessions for p in session.get_providers()})
    on_cuda = "CUDAExecutionProvider" in running
    result = {"status": "ran", "ok": on_cuda and all(r["ok"] for r in rows), "rows": rows}
    result["providers_in_use"] = running
    if not on_cuda:
        result["why"] = "the sessions run on the CPU: the CUDA provider did not load"
    return result


def torch_stage(loaded: LoadedCheckpoint, art: Path, data: dict[int, Any], dry_run: bool) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not dry_run:
        raise Skip("torch has no CUDA here")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 against fp32, not TF32
    torch.backends.cudnn.allow_tf32 = False
    net = loaded.backbone.to(device)
    rows = []
    with BudgetRuntime.load(art, backend="onnxruntime", providers=CPU) as cpu:
        for n, (images, masks) in data.items():
            want = cpu.infer(images, mask=masks).logits
            x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.3) / 0.3
            with torch.no_grad():
                got = net(x.to(device), torch.from_numpy(masks).to(device)).cpu().numpy()
            error = float(np.abs(got - want).max())
            rows.append({"batch": n, "max_abs_logit_error": error, "ok": error <= 1e-3})
    return {"status": "ran", "device": device, "ok": all(r["ok"] for r in rows), "rows": rows}


def data_path_stage(out: Path, dry_run: bool) -> dict[str, Any]:
    script = Path(__file__).parent / "gpu_data_path.py"
    args = [sys.executable, str(script), "--out", str(out), "--calls", "20" if dry_run else "200"]
    # 17: one above its engines' maximum (16), so chunks run at unaligned offsets.
    done = subprocess.run(
        args + (["--dry-run", "--batches", "1,17"] if dry_run else ["--batches", "1,4,16,17"]),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        return {"status": "error", "why": done.stderr.strip().splitlines()[-1:]}
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    return {"status": "ran", "ok": all(r["max_abs_error"] < 1e-4 for r in rows), "rows": rows}


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        f"# Device check{' (dry run: no GPU)' if report['dry_run'] else ''}",
        "",
        f"- GPU: {env['nvidia_smi']}; torch {env['torch']} (CUDA {env['torch_cuda']}); "
        f"cuda-python {env['cuda-python']}; TensorRT {env['tensorrt']}; "
        f"ONNX Runtime providers {', '.join(env['onnxruntime_providers'])}",
        f"- CPU: {env['machine']['cpu']}; command: `{report['command']}`",
        "",
        "| stage | status | agrees with the CPU | seconds | why |",
        "|---|---|---|---:|---|",
    ]
    for name, result in report["stages"].items():
        ok = {True: "yes", False: "**no**", None: "-"}[result.get("ok")]
        lines.append(
            f"| {name} | {result['status']} | {ok} | {result['seconds']} | "
            f"{str(result.get('why', '')).replace('|', '/')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="write OUT.json and OUT.md")
    parser.add_argument("--dry-run", action="store_true", help="no GPU: check the script")
    args = parser.parse_args()
    report: dict[str, Any] = {
        "dry_run": args.dry_run,
        "command": " ".join(["python", *sys.argv]),
        "environment": environment(),
        "stages": {},
    }
    loaded = tiny_checkpoint()
    data = inputs(loaded.backbone.num_components)
    with tempfile.TemporaryDirectory() as folder:
        art = Path(folder) / "artifact"

        def export() -> dict[str, Any]:
            manifest = export_checkpoint(loaded, art)
            # Calibration images drawn as the test images are, normalised as the model does.
            calib = (pixels(np.random.default_rng(1), 64).transpose(0, 3, 1, 2) / 255 - 0.3) / 0.3
            calib = calib.astype(np.float32)
            quantize_artifact(art, QuantizeSettings("fp16"))
            tensorrt_int8 = QuantizeSettings("int8", target="tensorrt", calib_images=64)
            quantize_artifact(art, tensorrt_int8, images=calib)
            return {"status": "ran", "graphs": len(manifest.graphs), "mode": manifest.decision_mode}

        stage("export", report, export)
        stage("onnxruntime-cpu", report, lambda: cpu_dispatch_stage(art, data))
        stage("tensorrt", report, lambda: tensorrt_stage(art, data, args.dry_run))
        stage("onnxruntime-cuda", report, lambda: onnxruntime_cuda_stage(art, data))
        stage("torch", report, lambda: torch_stage(loaded, art, data, args.dry_run))
        stage(
            "gpu-data-path",
            report,
            lambda: data_path_stage(args.out.with_name(args.out.name + "-data-path"), args.dry_run),
        )
    write_result(str(args.out), report, markdown(report))
    failed = [
        n for n, r in report["stages"].items() if r["status"] == "error" or r.get("ok") is False
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
