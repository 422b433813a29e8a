"""int8 on this CPU: which activation type, and where the time of a masked int8 call goes.

1. Activation type. Copies ARTIFACT twice, quantizes one copy with uint8
   asymmetric activations and one with int8 symmetric activations (weights int8
   per channel symmetric in both, the same calibration), and times the static
   `full` graph of fp32, u8 and s8 interleaved, one ONNX Runtime thread, at
   batch 1 and 8. This is the measurement behind `quantize --target cpu`
   choosing u8 (export/quantize.py).
2. Where the time goes. ONNX Runtime's profiler on the int8 and fp32 sets of
   ARTIFACT (quantized already): the static graph, and the runtime's call for
   the agent's most common mask at budget c (the switch graph, or a hot
   policy's whole graph when the mask has one), batch 8; time per op type.

    python benchmarks/investigations/quantized_cpu.py ARTIFACT --calib-data fashion-mnist \
        --out benchmarks/results/quantize/NAME

Writes NAME.json and NAME.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from budget_edge.data.registry import load_arrays
from budget_edge.export.quantize import QuantizeSettings, quantize_artifact
from budget_edge.runtime.backends.onnxruntime_backend import import_onnxruntime, session_options
from budget_edge.runtime.inputs import prepare_images
from budget_edge.runtime.machine import machine_info
from budget_edge.runtime.runtime import BudgetRuntime


def time_static(runtimes: dict[str, BudgetRuntime], x: np.ndarray, calls: int) -> dict[str, float]:
    """Median ms of the static graph per runtime, calls interleaved."""
    times: dict[str, list[float]] = {k: [] for k in runtimes}
    for call in range(calls + 10):
        for name, rt in runtimes.items():
            t = time.perf_counter()
            rt.run_full(x)
            if call >= 10:
                times[name].append(time.perf_counter() - t)
    return {k: float(np.median(v) * 1e3) for k, v in times.items()}


def activation_types(artifact: Path, calib: str, images: np.ndarray, calls: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        copies = {}
        for act in ("u8", "s8"):
            copies[act] = Path(tmp) / act
            shutil.copytree(artifact, copies[act], ignore=shutil.ignore_patterns("quantized"))
            manifest = json.loads((copies[act] / "manifest.json").read_text())
            if manifest.get("precisions"):  # the copy has no quantized/ folder: drop the sets
                for spec in manifest["precisions"].values():
                    for f in spec["files"].values():
                        manifest["files"].pop(f, None)
                manifest["precisions"] = {}
                (copies[act] / "manifest.json").write_text(json.dumps(manifest))
            quantize_artifact(
                copies[act],
                QuantizeSettings("int8", calib_data=calib, calib_images=256, activation_type=act),
            )
        runtimes = {"fp32": BudgetRuntime.load(copies["u8"], threads=1)}
        runtimes |= {
            a: BudgetRuntime.load(p, threads=1, precision="int8") for a, p in copies.items()
        }
        for n in (1, 8):
            out[f"batch {n}"] = time_static(runtimes, images[:n], calls)
    return out


def profile(path: Path, feeds: dict[str, np.ndarray], runs: int) -> Counter[str]:
    """Microseconds per op type over `runs` calls, from ONNX Runtime's profiler."""
    ort = import_onnxruntime()
    so = session_options(ort, 1)
    so.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        so.profile_file_prefix = str(Path(tmp) / "p")
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            sess.run(None, feeds)
        trace = json.loads(Path(sess.end_profiling()).read_text())
    per_op: Counter[str] = Counter()
    for event in trace:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"]
    return Counter({k: v / runs for k, v in per_op.items()})


def where_time_goes(artifact: Path, images: np.ndarray, budget: float, runs: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    x8 = images[:8]
    for precision in ("fp32", "int8"):
        rt = BudgetRuntime.load(artifact, threads=1, precision=precision)
        x = prepare_images(x8, rt.manifest.preprocessing)
        masks = rt.infer(images[:256], budget=budget).mask
        keys, counts = np.unique(masks, axis=0, return_counts=True)
        mask = keys[counts.argmax()]
        whole = rt._whole.get(mask.tobytes())
        full = rt.manifest.graph(str(rt.manifest.roles["full"]))
        static = profile(artifact / full.file, {full.inputs[0].name: x}, runs)
        if whole is not None:
            g = rt.manifest.graph(whole)
            masked = profile(artifact / g.file, {g.inputs[0].name: x}, runs)
            path = f"hot policy graph {whole}"
        else:
            g = rt.manifest.graph(str(rt.manifest.roles["switch"]))
            codes = mask.astype(np.int64) @ rt._code_weights
            masked = profile(
                artifact / g.file, {g.inputs[0].name: x, g.inputs[1].name: codes}, runs
            )
            path = "switch graph"
        result[precision] = {
            "mask_kept": int(mask.sum()),
            "path": path,
            "static_us": dict(static.most_common()),
            "masked_us": dict(masked.most_common()),
        }
        rt.close()
    return result


def markdown(data: dict[str, Any]) -> str:
    lines = [
        f"# int8 on this CPU: {data['artifact']}",
        "",
        f"- machine: {data['machine']['cpu']}, {data['machine']['cpu_count']} cores; "
        "one ONNX Runtime thread",
        "",
        "## Activation type (static graph, median ms, interleaved)",
        "",
        "| batch | fp32 | int8 u8 activations | int8 s8 activations | u8 / fp32 | s8 / fp32 |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for batch, t in data["activation_types"].items():
        lines.append(
            f"| {batch.split()[1]} | {t['fp32']:.3f} | {t['u8']:.3f} | {t['s8']:.3f} | "
            f"{t['u8'] / t['fp32']:.2f} | {t['s8'] / t['fp32']:.2f} |"
        )
    lines += [
        "",
        f"## Where the time goes (batch 8, c = {data['budget']:g}, us per call by "
        "ONNX Runtime's profiler)",
        "",
    ]
    for precision, d in data["profile"].items():
        total_s, total_m = sum(d["static_us"].values()), sum(d["masked_us"].values())
        lines += [
            f"### {precision}: static {total_s:.0f} us; mask ({d['mask_kept']} kept, "
            f"{d['path']}) {total_m:.0f} us",
            "",
            "| op | static us | masked us |",
            "|---|---:|---:|",
        ]
        ops = sorted(
            set(d["static_us"]) | set(d["masked_us"]), key=lambda o: -d["static_us"].get(o, 0.0)
        )
        for op in ops:
            lines.append(
                f"| {op} | {d['static_us'].get(op, 0.0):.0f} | {d['masked_us'].get(op, 0.0):.0f} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--calib-data", default="fashion-mnist")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--budget", type=float, default=0.25)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    images = load_arrays(args.data, None, "test").subset(256).images
    data = {
        "artifact": str(args.artifact),
        "machine": machine_info(),
        "budget": args.budget,
        "activation_types": activation_types(args.artifact, args.calib_data, images, args.calls),
        "profile": where_time_goes(args.artifact, images, args.budget, 50),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(data))
    print(markdown(data))


if __name__ == "__main__":
    main()
