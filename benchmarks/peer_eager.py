"""The runtime next to PyTorch eager per-sample inference, with the same masks, in one run.

The eager path is the reference implementations' test-time inference
(BlockDrop's and BudgetNet's `forward_single`): the agent runs on the batch,
then a Python loop over the samples runs, for each sample alone, the stem,
every block with a Python `if` on that sample's mask (kept: the block, or
for ResNeXt its kept paths; dropped: the skip), and the head. The runtime
runs `rt.infer(batch, budget=c, cap="components")`: policy graph, mask,
batched gather/scatter of block graphs through ONNX Runtime (or one static
graph when a mask keeps everything).

Same masks: the runtime's masks for every timed batch are computed first and
the eager loop runs exactly those (the eager agent still runs, for its time;
its probabilities equal the runtime's). Both start from the same
preprocessed float32 batch, and both use the same number of threads. Before
timing, the eager logits are checked against the runtime's. Models, weights
and the untrained agent: see bench_models.py. Timing: every row of a model and
batch size in one process, warmed up, interleaved in rounds (the discipline
of `budget-edge bench`, budget_edge/bench/measure.py).

    .venv/bin/python benchmarks/peer_eager.py                 # all three models
    .venv/bin/python benchmarks/peer_eager.py --models resnet56 --iterations 20

Writes benchmarks/results/peer_eager.json and .md (see --out).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import bench_models
import numpy as np
import torch

from budget_edge.bench.measure import (
    LatencyStats,
    TimedJob,
    time_jobs,
    timing_pool,
)
from budget_edge.commands.options import parse_batches, parse_budgets
from budget_edge.models.checkpoint import LoadedCheckpoint
from budget_edge.runtime import BudgetRuntime
from budget_edge.runtime.inputs import prepare_images
from budget_edge.runtime.machine import load_average, machine_info

RESULTS = Path(__file__).resolve().parent / "results"
WORK = bench_models.WORK


class EagerReference:
    """Per-sample eager inference with a Python `if` per block, like `forward_single`."""

    def __init__(self, loaded: LoadedCheckpoint) -> None:
        assert loaded.agent is not None
        self.net, self.agent = loaded.backbone.eval(), loaded.agent.eval()
        self.block_components = [self.net.block_components(b) for b in range(len(self.net.blocks))]

    def forward_single(self, x: torch.Tensor, mask: list[int]) -> torch.Tensor:
        h = self.net.stem(x)
        for block, comps in zip(self.net.blocks, self.block_components, strict=True):
            if block.num_paths == 1:
                h = block(h) if mask[comps[0]] else block.skip(h)
            else:
                h = block(h, paths=[p for p, k in enumerate(comps) if mask[k]])
        return self.net.head(h)

    def __call__(self, item: tuple[torch.Tensor, float, list[list[int]]]) -> None:
        x, budget, masks = item
        with torch.no_grad():
            self.agent(x, torch.full((x.shape[0],), budget))
            torch.cat([self.forward_single(x[i : i + 1], masks[i]) for i in range(x.shape[0])])

    def logits(self, x: torch.Tensor, masks: list[list[int]]) -> np.ndarray:
        with torch.no_grad():
            out = [self.forward_single(x[i : i + 1], masks[i]) for i in range(x.shape[0])]
        return torch.cat(out).numpy()


def _stats_row(job: TimedJob, **extra: Any) -> dict[str, Any]:
    stats = LatencyStats.of(job.times)
    row = {
        "kind": job.kind,
        "batch": job.batch,
        "budget": job.budget,
        "latency": asdict(stats),
        "throughput": job.batch / (stats.mean / 1e3),
        "cpu_ms": float(np.median(job.cpu_times)),
        **extra,
    }
    if job.calls and job.parts:
        row["breakdown_ms"] = {k: v / job.calls for k, v in job.parts.items()}
    return row


def measure(
    rt: BudgetRuntime,
    eager: EagerReference,
    batch: int,
    budgets: list[float],
    iterations: int,
    warmup: int,
    rounds: int,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Time static, policy, runtime and eager rows for one batch size, interleaved."""
    c, h, w = rt.manifest.preprocessing.input_size
    pixels = np.random.default_rng(seed).integers(0, 256, (256, h, w, c), dtype=np.uint8)
    pool = [
        prepare_images(p, rt.manifest.preprocessing) for p in timing_pool(pixels, batch, iterations)
    ]
    torch_pool = [torch.from_numpy(x.copy()) for x in pool]

    def static(x: np.ndarray) -> None:
        rt.run_full(x)

    def policy(x: np.ndarray) -> None:
        rt.run_policy(x, 1.0)  # its cost does not depend on the budget

    jobs = [
        TimedJob("static", batch, None, static, pool),
        TimedJob("policy", batch, None, policy, pool),
    ]
    quality: dict[float, dict[str, Any]] = {}
    for budget in budgets:
        results = [rt.infer(x, budget=budget, cap=bench_models.CAP) for x in pool]
        masks = [r.mask.tolist() for r in results]
        diff = max(
            float(np.abs(eager.logits(t, m) - r.logits).max())
            for t, m, r in zip(torch_pool, masks, results, strict=True)
        )
        quality[budget] = {
            "usage": float(np.mean([r.usage.mean() for r in results])),
            "flops_share": float(np.mean([r.flops_share.mean() for r in results])),
            "eager_vs_runtime_max_abs_diff": diff,
        }

        def runtime_call(x: np.ndarray, c: float = budget) -> dict[str, float]:
            return rt.infer(x, budget=c, cap=bench_models.CAP).latency_ms

        jobs.append(TimedJob("runtime", batch, budget, runtime_call, pool))
        jobs.append(
            TimedJob(
                "eager",
                batch,
                budget,
                eager,
                [(t, budget, m) for t, m in zip(torch_pool, masks, strict=True)],
            )
        )
    time_jobs(jobs, warmup, iterations, rounds)
    rows = []
    for job in jobs:
        extra = quality[job.budget] if job.budget is not None else {}
        if job.kind == "policy":
            extra = {"flops_share": (rt.manifest.flops.policy or 0) / rt.full_flops}
        rows.append(_stats_row(job, **extra))
    return rows


def run_model(
    name: str, extractor: str, batches: list[int], budgets: list[float], args: argparse.Namespace
) -> dict[str, Any]:
    out = Path(args.work) / f"{name}-{extractor}"
    loaded, source = bench_models.export(name, extractor, out, reuse=not args.fresh)
    eager = EagerReference(loaded)
    with BudgetRuntime.load(out, backend="onnxruntime", threads=args.threads) as rt:
        rows = []
        for n in batches:
            t = time.perf_counter()
            rows += measure(rt, eager, n, budgets, args.iterations, args.warmup, args.rounds)
            print(f"{name} batch {n}: {time.perf_counter() - t:.0f} s", flush=True)
        m = rt.manifest
        return {
            "weights": source,
            "agent": f"untrained {extractor} agent, logit bias "
            f"+{bench_models.AGENT_LOGIT_BIAS}, cap={bench_models.CAP!r}",
            "num_components": m.num_components,
            "full_flops": m.full_flops,
            "policy_flops": m.flops.policy,
            "rows": rows,
        }


def find(
    rows: list[dict[str, Any]], kind: str, batch: int, budget: float | None = None
) -> dict[str, Any]:
    return next(
        r for r in rows if r["kind"] == kind and r["batch"] == batch and r["budget"] == budget
    )


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        "# Runtime vs PyTorch eager per-sample inference (same masks)",
        "",
        f"Machine: {env['cpu']}, {env['cpu_count']} cores, {env['os']}; "
        f"{result['settings']['threads']} thread(s) for ONNX Runtime and torch; "
        f"load average before {env['load_average_before']}, after "
        f"{env['load_average_after']}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
        + ".",
        "",
        f"Command: `{result['command']}` at commit {env['git']['commit']}. Latency in ms "
        "per batch, median (p90) over "
        f"{result['settings']['iterations']} interleaved calls; speedup = eager median / "
        "runtime median.",
        "",
        "| model | batch | c | usage | FLOPs | runtime ms | eager ms | speedup | static ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, model in result["models"].items():
        rows = model["rows"]
        for n in result["settings"]["batches"]:
            static = find(rows, "static", n)["latency"]
            for c in result["settings"]["budgets"]:
                rt_row, eager = find(rows, "runtime", n, c), find(rows, "eager", n, c)
                a, b = rt_row["latency"], eager["latency"]
                lines.append(
                    f"| {name} | {n} | {c:g} | {100 * rt_row['usage']:.0f}% | "
                    f"{100 * rt_row['flops_share']:.0f}% | {a['median']:.2f} ({a['p90']:.2f}) | "
                    f"{b['median']:.2f} ({b['p90']:.2f}) | {b['median'] / a['median']:.1f}x | "
                    f"{static['median']:.2f} |"
                )
    diff = max(
        r.get("eager_vs_runtime_max_abs_diff", 0.0)
        for m in result["models"].values()
        for r in m["rows"]
    )
    lines += [
        "",
        f"Both paths ran the same masks: their logits agree to {diff:.1e} (max abs "
        "difference over every timed batch).",
        "",
        "Weights and agents:",
        "",
    ]
    lines += [f"- {name}: {m['weights']}; {m['agent']}" for name, m in result["models"].items()]
    return "\n".join(lines) + "\n"


def git_state() -> dict[str, Any]:
    """The commit measured, and whether the runtime's files differ from it."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else "unknown"

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "runtime_modified": git("status", "--porcelain", "budget_edge/runtime") != "",
    }


def write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def parse_args(argv: list[str] | None = None, description: str | None = None) -> argparse.Namespace:
    """The command line of this script and of runtime_targets.py (its own description)."""
    ap = argparse.ArgumentParser(description=description or __doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet56,resnet110,resnext29")
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--budgets", default="0.25,0.5,0.75,1.0")
    ap.add_argument("--extractor", default="light", choices=["light", "resnet8"])
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=str(WORK), help="where exported artifacts are kept")
    ap.add_argument("--fresh", action="store_true", help="export again even if present")
    ap.add_argument(
        "--out",
        default=str(RESULTS / "peer_eager"),
        help="output path without extension (.json and .md are written)",
    )
    return ap.parse_args(argv)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    budgets, batches = parse_budgets(args.budgets), parse_batches(args.batch)
    result: dict[str, Any] = {
        "command": "python benchmarks/peer_eager.py " + " ".join(sys.argv[1:]),
        "settings": {
            "budgets": budgets,
            "batches": batches,
            "iterations": args.iterations,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "threads": args.threads,
            "extractor": args.extractor,
        },
        "environment": {
            **machine_info(),
            "load_average_before": load_average(),
            "torch": torch.__version__,
            "git": git_state(),
        },
        "models": {},
    }
    for name in args.models.split(","):
        result["models"][name] = run_model(name, args.extractor, batches, budgets, args)
    result["environment"]["load_average_after"] = load_average()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write(out.with_suffix(".json"), json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    write(out.with_suffix(".md"), text)
    print(text)


if __name__ == "__main__":
    main()
