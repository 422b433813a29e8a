"""How long does `budget-edge export` take for ResNet-110 and ResNeXt-29 (4x16d)?

Writes a budget-edge checkpoint (backbone + resnet8 agent) per model, then
times the `budget-edge export` command end to end in a fresh process, as a
user runs it (Python start-up, imports, checkpoint load, tracing, ONNX checks,
manifest with SHA-256). Each model is exported `--repeats` times; the fastest
repeat is the one least disturbed by other processes on a shared machine, and
the child's CPU time is recorded too. The target is under 2 minutes each.

    .venv/bin/python benchmarks/export_time.py [--repeats 2] \
        [--out benchmarks/results/export_time]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from budget_edge.agent.policy import build_agent
from budget_edge.models import build_backbone
from budget_edge.models.checkpoint import save_checkpoint
from budget_edge.runtime.manifest import Manifest

MODELS = {
    "resnet110": {},
    "resnext29_4x16d": {"cardinality": 4, "base_width": 16},
}
META = {
    "preprocessing": {
        "mean": [0.49, 0.48, 0.45],
        "std": [0.25, 0.24, 0.26],
        "input_size": [3, 32, 32],
    }
}
TARGET_S = 120.0


def lscpu() -> dict[str, str]:
    fields: dict[str, str] = {}
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return fields
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket"):
            fields[key.strip()] = value.strip()
    return fields


def time_export(checkpoint: Path, out: Path) -> dict[str, float]:
    """Wall and CPU seconds of one `budget-edge export` run in a child process."""
    cli = [sys.executable, "-m", "budget_edge.cli", "export", str(checkpoint), "--out", str(out)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    subprocess.run(cli, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "load_avg_1min": round(load, 2)}


def measure(name: str, options: dict[str, Any], repeats: int, work: Path) -> dict[str, Any]:
    backbone = name.split("_")[0]
    torch.manual_seed(0)
    net = build_backbone(backbone, **options)
    agent = build_agent(net.num_components)
    checkpoint = save_checkpoint(work / f"{name}.pt", net, agent, meta=META)
    runs = [time_export(checkpoint, work / f"{name}-{i}") for i in range(repeats)]
    manifest = Manifest.load(work / f"{name}-0")
    best = min(runs, key=lambda r: r["wall_s"])
    return {
        "model": name,
        "options": options,
        "components": net.num_components,
        "graphs": len(manifest.graphs),
        "best_wall_s": best["wall_s"],
        "best_cpu_s": best["cpu_s"],
        "under_2_min": best["wall_s"] < TARGET_S,
        "runs": runs,
    }


def markdown(results: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    lines = [
        "# Export time (`budget-edge export`, fresh process, checkpoint with agent)",
        "",
        f"Machine: {machine['cpu_model']}, {machine['cpus']} CPUs "
        f"({machine['platform']}), torch {machine['torch']}. Shared by other jobs: "
        "the load average at the start of each run is in the JSON.",
        "",
        "| model | components | graphs | best wall (s) | its CPU (s) | all runs wall (s) "
        "| < 2 min |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        walls = ", ".join(str(run["wall_s"]) for run in r["runs"])
        lines.append(
            f"| {r['model']} | {r['components']} | {r['graphs']} | {r['best_wall_s']} "
            f"| {r['best_cpu_s']} | {walls} | {'yes' if r['under_2_min'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/export_time"))
    args = parser.parse_args()
    cpu = lscpu()
    machine = {
        "cpu_model": cpu.get("Model name", platform.processor()),
        "cpus": cpu.get("CPU(s)", str(os.cpu_count())),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(name, opts, args.repeats, Path(tmp)) for name, opts in MODELS.items()]
    report = {"machine": machine, "target_s": TARGET_S, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results, machine))
    print(markdown(results, machine))


if __name__ == "__main__":
    main()
