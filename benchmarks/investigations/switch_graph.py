"""Switch graph against the block chain and the static graph, through the runtime.

For each budget c, masks keep round(c K) random components (a new mask per
call, cycling through `--masks` of them, so neither path benefits from one
repeated mask); each batch row gets its own mask unless --same-mask. The three
paths run interleaved call by call, one ONNX Runtime thread, so their ratios
come from the same minutes of the same machine:

    static   the `full` graph (every block)
    chain    stem, a session call per kept block (rows gathered), head
    switch   the `switch` graph: one call per distinct mask of the batch

    python benchmarks/investigations/switch_graph.py ARTIFACT \\
        --out benchmarks/results/switch-graph/NAME

Writes NAME.json and NAME.md (median ms per call, and each path over static).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from budget_edge.runtime.machine import machine_info
from budget_edge.runtime.runtime import BudgetRuntime

PATHS = ("static", "chain", "switch")


def random_masks(rng: np.random.Generator, count: int, k: int, keep: int) -> np.ndarray:
    masks = np.zeros((count, k), np.uint8)
    for m in masks:
        m[rng.permutation(k)[:keep]] = 1
    return masks


def time_paths(
    rt: BudgetRuntime, x: np.ndarray, masks: np.ndarray, calls: int, warmup: int, same_mask: bool
) -> dict[str, float]:
    switch = rt._switch
    n = x.shape[0]
    times: dict[str, list[float]] = {p: [] for p in PATHS}
    for call in range(calls + warmup):
        start = (call * n) % len(masks)
        batch = masks[[start] * n] if same_mask else masks[(start + np.arange(n)) % len(masks)]
        for path in PATHS:
            rt._switch = switch if path == "switch" else None
            t = time.perf_counter()
            if path == "static":
                rt.run_full(x)
            else:
                rt.infer(x, mask=batch)
            if call >= warmup:
                times[path].append(time.perf_counter() - t)
    rt._switch = switch
    return {p: float(np.median(v) * 1e3) for p, v in times.items()}


def check_parity(rt: BudgetRuntime, x: np.ndarray, masks: np.ndarray) -> float:
    switch = rt._switch
    batch = masks[np.arange(x.shape[0]) % len(masks)]
    rt._switch = None
    chain = rt.infer(x, mask=batch).logits
    rt._switch = switch
    return float(np.abs(rt.infer(x, mask=batch).logits - chain).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("artifact")
    ap.add_argument("--out", required=True, help="path prefix for .json and .md")
    ap.add_argument("--budgets", default="0.25,0.5,0.75,1.0")
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--masks", type=int, default=16)
    ap.add_argument("--same-mask", action="store_true", help="one mask for the whole batch")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    rt = BudgetRuntime.load(args.artifact, threads=args.threads)
    if rt._switch is None:
        raise SystemExit("this artifact has no switch graph: re-export it")
    rng = np.random.default_rng(0)
    k = rt.num_components
    rows = []
    for batch in (int(b) for b in args.batch.split(",")):
        x = rng.standard_normal((batch, *rt.manifest.preprocessing.input_size)).astype(np.float32)
        for c in (float(v) for v in args.budgets.split(",")):
            keep = round(c * k)
            masks = random_masks(rng, args.masks, k, keep)
            diff = check_parity(rt, x, masks)
            med = time_paths(rt, x, masks, args.calls, args.warmup, args.same_mask)
            rows.append(
                {
                    "batch": batch,
                    "c": c,
                    "kept": keep,
                    "max_abs_diff": diff,
                    "median_ms": med,
                    "over_static": {p: med[p] / med["static"] for p in PATHS},
                }
            )
            print(
                f"batch {batch} c {c}: "
                + ", ".join(f"{p} {med[p]:.3f} ms ({med[p] / med['static']:.2f}x)" for p in PATHS)
            )
    report = {
        "artifact": args.artifact,
        "backbone": rt.manifest.backbone,
        "machine": machine_info(),
        "threads": args.threads,
        "calls": args.calls,
        "same_mask": args.same_mask,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    lines = [
        f"# Switch graph vs block chain vs static: {rt.manifest.backbone}",
        "",
        f"Machine: {report['machine']}; {args.threads} thread(s); median of "
        f"{args.calls} interleaved calls; random masks of round(c K) components, "
        + ("one per batch." if args.same_mask else "one per image."),
        "",
        "| batch | c | kept | static ms | chain ms | switch ms | chain/static | "
        "switch/static | max abs diff |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m, o = r["median_ms"], r["over_static"]
        lines.append(
            f"| {r['batch']} | {r['c']} | {r['kept']}/{k} | {m['static']:.3f} | "
            f"{m['chain']:.3f} | {m['switch']:.3f} | {o['chain']:.2f} | "
            f"{o['switch']:.2f} | {r['max_abs_diff']:.1e} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
