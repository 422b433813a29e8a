"""The runtime issue's "Done when" targets, measured on this CPU.

For ResNet-56, ResNet-110 and ResNeXt-29 (4x16d), batch 1 and 8, in one
process per model (every row of a batch size timed interleaved, same backend
and threads; see peer_eager.py for the rows and bench_models.py for weights
and the untrained agent):

1. c = 1.0: runtime latency <= 1.05 x the static `full` graph's;
2. c in {0.25, 0.5, 0.75}: runtime latency <= 1.15 x (executed FLOPs share x
   static latency) + policy latency;
3. policy latency <= 5% of the static model's (light extractor);
4. runtime >= 4x faster than PyTorch eager per-sample inference at every budget;
5. runtime resident memory <= 1.5 x that of one ONNX Runtime session of the
   static model: each measured in its own subprocess with psutil after
   running batches 1 and 8 at every budget (the runtime creates a graph's
   session on first use, so this counts every session the masks needed).

Latencies are medians (robust to a shared machine's load spikes); means and
percentiles are in the JSON.

    .venv/bin/python benchmarks/runtime_targets.py [--models ...] [--iterations 60]

Writes benchmarks/results/runtime_targets.json and .md (with a README snippet).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import peer_eager
import torch
from runtime_rss import run_child, runtime_rss

from budget_edge.commands.options import parse_batches, parse_budgets
from budget_edge.runtime.machine import load_average, machine_info

RESULTS = Path(__file__).resolve().parent / "results"
C1_MAX = 1.05
FLOPS_SLACK = 1.15
POLICY_MAX = 0.05
SPEEDUP_MIN = 4.0
MEMORY_MAX = 1.5

# Children for the memory measurement: torch made unimportable, one job each
# (the runtime's own is runtime_rss.py).
_STATIC_CHILD = """
import json, sys, numpy as np, onnxruntime as ort, psutil
sys.modules['torch'] = None
from budget_edge.runtime.backends.onnxruntime_backend import session_options
sess = ort.InferenceSession(sys.argv[1], session_options(ort, int(sys.argv[2])),
                            providers=['CPUExecutionProvider'])
name = sess.get_inputs()[0].name
for n in (1, 8):
    for _ in range(8):
        sess.run(None, {name: np.random.default_rng(0).standard_normal((n, 3, 32, 32),
                                                                      dtype=np.float32)})
print(json.dumps({'rss_mib': psutil.Process().memory_info().rss / 2**20}))
"""
_BASELINE_CHILD = """
import json, sys, numpy as np, onnxruntime, psutil
sys.modules['torch'] = None
import budget_edge.runtime
print(json.dumps({'rss_mib': psutil.Process().memory_info().rss / 2**20}))
"""


def memory(artifact: Path, threads: int) -> dict[str, Any]:
    """RSS in MiB of the runtime, of one static session, and of the bare interpreter."""
    full = artifact / "graphs" / "full.onnx"
    runtime = runtime_rss(artifact, threads)
    static = run_child(_STATIC_CHILD, str(full), str(threads))
    base = run_child(_BASELINE_CHILD)
    return {
        "runtime_rss_mib": runtime["rss_mib"],
        "runtime_sessions": runtime["sessions"],
        "static_rss_mib": static["rss_mib"],
        "interpreter_rss_mib": base["rss_mib"],
        "ratio": runtime["rss_mib"] / static["rss_mib"],
        "ratio_above_interpreter": (runtime["rss_mib"] - base["rss_mib"])
        / max(static["rss_mib"] - base["rss_mib"], 1e-9),
    }


def _limit(c: float, flops_share: float, static: float, policy: float) -> float:
    """Targets 1 and 2: the latency the runtime may take at budget c."""
    if c == 1.0:
        return C1_MAX * static
    return FLOPS_SLACK * flops_share * static + policy


def targets(rows: list[dict[str, Any]], batch: int, budgets: list[float]) -> dict[str, Any]:
    """Each target's measured value, limit and verdict for one model and batch size.

    Verdicts use wall-clock medians. The same ratios on process CPU time are
    recorded too (`cpu_*`): they are what the ONNX Runtime rows cost in work,
    nearly free of the other processes' load on a shared machine.
    """
    static_row = peer_eager.find(rows, "static", batch)
    policy_row = peer_eager.find(rows, "policy", batch)
    static, policy = static_row["latency"]["median"], policy_row["latency"]["median"]
    out: dict[str, Any] = {
        "static_ms": static,
        "policy_ms": policy,
        "policy_share": policy / static,
        "cpu_policy_share": policy_row["cpu_ms"] / static_row["cpu_ms"],
        "policy_ok": policy / static <= POLICY_MAX,
        "budgets": {},
    }
    for c in budgets:
        run = peer_eager.find(rows, "runtime", batch, c)
        eager = peer_eager.find(rows, "eager", batch, c)
        ms = run["latency"]["median"]
        limit = _limit(c, run["flops_share"], static, policy)
        cpu_limit = _limit(c, run["flops_share"], static_row["cpu_ms"], policy_row["cpu_ms"])
        out["budgets"][c] = {
            "runtime_ms": ms,
            "eager_ms": eager["latency"]["median"],
            "flops_share": run["flops_share"],
            "usage": run["usage"],
            "speedup": eager["latency"]["median"] / ms,
            "speedup_ok": eager["latency"]["median"] / ms >= SPEEDUP_MIN,
            "cpu_speedup": eager["cpu_ms"] / run["cpu_ms"],
            "limit_ms": limit,
            "ratio_to_limit": ms / limit,
            "latency_ok": ms <= limit,
            "cpu_ratio_to_limit": run["cpu_ms"] / cpu_limit,
        }
    return out


def _mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    s = result["settings"]
    lines = [
        '# Runtime targets (issue 5, "Done when") on this CPU',
        "",
        f"- machine: {env['cpu']}, {env['cpu_count']} cores ({env['usable_cores']} usable), "
        f"{env['os']}",
        f"- load average before {env['load_average_before']}, after "
        f"{env['load_average_after']} (a shared machine: other work ran alongside)",
        f"- ONNX Runtime CPU and torch, {s['threads']} thread(s) each; {s['extractor']} agent; "
        f"{s['iterations']} timed calls per row after {s['warmup']} warm-up, interleaved in "
        f"{s['rounds']} rounds; latencies are medians in ms per batch",
        "- versions: "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
        + f", torch {env['torch']}",
        f"- command: `{result['command']}` at commit {env['git']['commit']}"
        + (" (runtime files modified)" if env["git"]["runtime_modified"] else ""),
        "",
        "| model | batch | c | FLOPs | runtime ms | limit ms | latency (ratio) | CPU-time "
        "ratio | eager ms | speedup | >= 4x | CPU-time speedup |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---:|",
    ]
    for name, model in result["models"].items():
        for n, t in model["targets"].items():
            for c, e in t["budgets"].items():
                lines.append(
                    f"| {name} | {n} | {c:g} | {100 * e['flops_share']:.0f}% | "
                    f"{e['runtime_ms']:.2f} | {e['limit_ms']:.2f} | "
                    f"{_mark(e['latency_ok'])} ({e['ratio_to_limit']:.2f}x) | "
                    f"{e['cpu_ratio_to_limit']:.2f}x | {e['eager_ms']:.2f} | "
                    f"{e['speedup']:.1f}x | {_mark(e['speedup_ok'])} | "
                    f"{e['cpu_speedup']:.1f}x |"
                )
    lines += [
        "",
        "Limits: c = 1.0: 1.05 x static; c < 1: 1.15 x FLOPs share x static + "
        "policy. Ratio = runtime / limit (<= 1 meets it); the CPU-time ratio is the "
        "same on process CPU time.",
        "",
        "| model | batch | static ms | policy ms | policy share | CPU-time share | <= 5% |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, model in result["models"].items():
        for n, t in model["targets"].items():
            lines.append(
                f"| {name} | {n} | {t['static_ms']:.2f} | {t['policy_ms']:.3f} | "
                f"{100 * t['policy_share']:.1f}% | {100 * t['cpu_policy_share']:.1f}% "
                f"| {_mark(t['policy_ok'])} |"
            )
    lines += [
        "",
        "| model | runtime RSS MiB | static session RSS MiB | ratio | <= 1.5x | "
        "sessions | interpreter MiB | ratio above interpreter |",
        "|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for name, model in result["models"].items():
        m = model["memory"]
        lines.append(
            f"| {name} | {m['runtime_rss_mib']:.0f} | {m['static_rss_mib']:.0f} | "
            f"{m['ratio']:.2f}x | {_mark(m['ratio'] <= MEMORY_MAX)} | "
            f"{m['runtime_sessions']} | {m['interpreter_rss_mib']:.0f} | "
            f"{m['ratio_above_interpreter']:.2f}x |"
        )
    lines += ["", "Weights and agents:", ""]
    lines += [f"- {name}: {m['weights']}; {m['agent']}" for name, m in result["models"].items()]
    lines += ["", "## README snippet", "", *readme_snippet(result)]
    return "\n".join(lines) + "\n"


def _cases(result: dict[str, Any]) -> list[tuple[str, int, dict[str, Any]]]:
    return [
        (name, n, t)
        for name, model in result["models"].items()
        for n, t in model["targets"].items()
    ]


def _verdict(oks: list[bool]) -> str:
    met = sum(oks)
    return "met" if met == len(oks) else f"met in {met} of {len(oks)} cases"


def readme_snippet(result: dict[str, Any]) -> list[str]:
    """One line per target: met or not, with the numbers (worst case named)."""
    cases = _cases(result)
    env, threads = result["environment"], result["settings"]["threads"]
    c1 = [
        (e["ratio_to_limit"] * C1_MAX, e["cpu_ratio_to_limit"] * C1_MAX, f"{name} b{n}")
        for name, n, t in cases
        for c, e in t["budgets"].items()
        if c == 1.0
    ]
    below = [
        (e["ratio_to_limit"], e["cpu_ratio_to_limit"], f"{name} b{n} c={c:g}")
        for name, n, t in cases
        for c, e in t["budgets"].items()
        if c != 1.0
    ]
    speed = [
        (e["speedup"], e["cpu_speedup"], f"{name} b{n} c={c:g}")
        for name, n, t in cases
        for c, e in t["budgets"].items()
    ]
    policy = [(t["policy_share"], t["cpu_policy_share"], f"{name} b{n}") for name, n, t in cases]
    mem = [(m["memory"]["ratio"], name) for name, m in result["models"].items()]

    def both(rows: list[tuple[float, float, str]], ok: Any, worst: Any, fmt: str) -> str:
        wall, cpu = [r[0] for r in rows], [r[1] for r in rows]
        w_wall = worst(rows, key=lambda r: r[0])
        w_cpu = worst(rows, key=lambda r: r[1])
        return (
            f"wall clock {_verdict([ok(v) for v in wall])} (worst {fmt.format(w_wall[0])}, "
            f"{w_wall[2]}); CPU time {_verdict([ok(v) for v in cpu])} (worst "
            f"{fmt.format(w_cpu[1])}, {w_cpu[2]})"
        )

    return [
        f"Measured on {env['cpu']} ({env['cpu_count']} cores, shared: load average "
        f"{env['load_average_before'][0]} before, {env['load_average_after'][0]} after), "
        f"ONNX Runtime CPU and torch with {threads} thread{'s' if threads > 1 else ''}; "
        "medians; CPU time = this process's CPU time per call, which other processes' load "
        "barely moves. Every number: `benchmarks/results/runtime_targets.md`.",
        "",
        "- c = 1.0 within 1.05x of the static graph: "
        + both(c1, lambda v: v <= C1_MAX, max, "{:.2f}x"),
        "- c < 1 within 1.15 x FLOPs share x static + policy: "
        + both(below, lambda v: v <= 1.0, max, "{:.2f}x of the limit"),
        "- policy <= 5% of the static model: "
        + both(policy, lambda v: v <= POLICY_MAX, max, "{:.1%}"),
        "- >= 4x faster than PyTorch eager per-sample: "
        + both(speed, lambda v: v >= SPEEDUP_MIN, min, "{:.1f}x"),
        f"- resident memory <= 1.5x one static ONNX Runtime session: "
        f"{_verdict([r <= MEMORY_MAX for r, _ in mem])} ("
        + ", ".join(f"{w} {r:.2f}x" for r, w in mem)
        + ")",
    ]


def main() -> None:
    args = peer_eager.parse_args(description=__doc__.splitlines()[0])
    if args.out == str(peer_eager.RESULTS / "peer_eager"):
        args.out = str(RESULTS / "runtime_targets")
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    budgets, batches = parse_budgets(args.budgets), parse_batches(args.batch)
    result: dict[str, Any] = {
        "command": "python benchmarks/runtime_targets.py " + " ".join(sys.argv[1:]),
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
            "git": peer_eager.git_state(),
        },
        "models": {},
    }
    for name in args.models.split(","):
        model = peer_eager.run_model(name, args.extractor, batches, budgets, args)
        model["targets"] = {n: targets(model["rows"], n, budgets) for n in batches}
        model["memory"] = memory(Path(args.work) / f"{name}-{args.extractor}", args.threads)
        result["models"][name] = model
    result["environment"]["load_average_after"] = load_average()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    peer_eager.write(out.with_suffix(".json"), json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    peer_eager.write(out.with_suffix(".md"), text)
    print(text)


if __name__ == "__main__":
    main()
