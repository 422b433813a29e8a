"""Bench results as a rich table, JSON, CSV and Markdown (the figure: plot.py).

Torch-free. Every file is written to a temporary name and renamed, so a crash
never leaves half a report.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from budget_edge.bench.measure import BenchResult, BenchRow
from budget_edge.files import atomic_write_bytes, check_writable_file
from budget_edge.runtime.runtime import LATENCY_KEYS

STAT_FIELDS = ("min", "mean", "median", "p90", "p95", "p99")
CSV_FIELDS = (
    ["label", "kind", "precision", "budget", "batch"]
    + [f"{f}_ms" for f in STAT_FIELDS]
    + ["throughput_ips", "usage", "flops_share", "accuracy", "cpu_ms", "distinct_masks"]
    + [f"{k}_ms" for k in LATENCY_KEYS]
    # Added later: at the end, so readers that go by position keep working.
    + ["accuracy_low", "accuracy_high", "paired_against", "paired_delta", "paired_p"]
    + ["uniform_against", "uniform_delta", "uniform_p"]
    + ["reported_ms", "same_decisions"]
    + [
        f"uniform_no_slower_{by}_{k}"
        for by in ("median", "mean")
        for k in ("against", "accuracy_delta", "p")
    ]
)


def check_writable(path: str | os.PathLike[str]) -> Path:
    """A report path must be a file we can write (checked before timing)."""
    return check_writable_file(path)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write a report file atomically, after checking the path can take it."""
    out = check_writable(path)
    atomic_write_bytes(out, data)
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def table_rows(result: BenchResult) -> list[list[str]]:
    """The rows every human-readable view shows, in the JSON's order."""
    out = []
    for r in result.rows:
        lat = r.latency
        static = _find(result.rows, "static", r.batch, r.precision)
        ratio = None if static is None else r.reported_ms / static.latency.median
        # *: the median over the budgets that ran the same decisions (same_decisions_text)
        mark = "*" if r.same_decisions else ""
        out.append(
            [r.label, str(r.batch)]
            + [f"{getattr(lat, f):.2f}" for f in STAT_FIELDS]
            + [
                _fmt(ratio, ".2f") + (mark if ratio is not None else ""),
                f"{r.throughput:.1f}",
                _pct(r.usage),
                _pct(r.flops_share),
                _pct(r.accuracy),
                _interval(r.accuracy_ci),
                _paired(r.paired),
                _fmt(r.distinct_masks, "d"),
            ]
        )
    return out


def _interval(ci: tuple[float, float] | None) -> str:
    return "-" if ci is None else f"{100 * ci[0]:.1f}-{100 * ci[1]:.1f}"


def _paired(paired: dict[str, Any] | None) -> str:
    """'+0.4 vs zoo resnet8, p=0.03': points of accuracy over the nearest-latency rival."""
    if paired is None:
        return "-"
    return (
        f"{100 * paired['accuracy_delta']:+.2f} vs {paired['against']}, p={paired['p_value']:.2g}"
    )


# Latency columns are ms per batch (the titles say so): short headers keep the table
# narrow, and LEGEND, printed under every table, says what the others mean.
# "paired" is bench/significance.py's exact McNemar test.
LEGEND = (
    "latency columns: ms per batch; x static: median latency over the static graph's at "
    "the same batch and precision (below 1: faster; with *, the median over the budgets "
    "that ran the very same masks, listed under the table); usage: share of the components run; "
    "FLOPs: share of the static graph's; 95% CI: Wilson interval of the accuracy; paired: "
    "accuracy points over the nearest-latency row of another method, exact McNemar p-value "
    "on the same images; masks: distinct masks over the images; policy (allocator in mode "
    "allocate): the decision alone, the part of every c= row that chooses the mask"
)
HEADERS = [
    "row",
    "batch",
    *STAT_FIELDS,
    "x static",
    "img/s",
    "usage",
    "FLOPs",
    "accuracy",
    "95% CI",
    "paired",
    "masks",
]


def verdict(result: BenchResult, batch: int | None = None) -> str | None:
    """One line per batch size: which row to deploy. The most accurate row, and the fastest
    row whose accuracy interval still reaches it (indistinguishable on these images);
    None without labels."""
    sizes = sorted({r.batch for r in result.rows}) if batch is None else [batch]
    lines = []
    for n in sizes:
        rows = [r for r in result.rows if r.batch == n and r.accuracy is not None]
        if not rows:
            return None
        best = max(rows, key=lambda r: (r.accuracy or 0.0, -r.reported_ms))
        tied = [
            r for r in rows if r.accuracy_ci is None or r.accuracy_ci[1] >= (best.accuracy or 0)
        ]
        fastest = min(tied, key=lambda r: r.reported_ms)
        static = _find(result.rows, "static", n, "fp32")
        ratio = (
            "" if static is None else f", {fastest.reported_ms / static.latency.median:.2f}x static"
        )
        line = (
            f"batch {n}: deploy {fastest.label} ({_pct(fastest.accuracy)}, "
            f"{fastest.reported_ms:.2f} ms{ratio})"
        )
        if fastest is not best:
            line += (
                f": as accurate as the best row, {best.label} ({_pct(best.accuracy)}, "
                f"{best.reported_ms:.2f} ms), within its 95% interval"
            )
        lines.append(line)
    return "\n".join(lines)


def rich_table(result: BenchResult) -> Any:
    """A rich Table of every row (rich is a base dependency)."""
    from rich import box
    from rich.table import Table

    env = result.environment
    table = Table(
        title=f"{result.model['backbone']} · {result.modes_text}, "
        f"{result.model.get('precision', 'fp32')} · on {env['cpu']} · {env['backend']}, "
        f"{env['threads_effective']} thread(s) · data: {result.data['name']}",
        box=box.SIMPLE_HEAD,
    )
    for i, h in enumerate(HEADERS):
        table.add_column(h, justify="left" if i == 0 else "right", no_wrap=True)
    for cells in table_rows(result):
        table.add_row(*cells)
    return table


def full_width(table: Any) -> int:
    """The characters `table` needs so that no cell is cut or wrapped (a log has no
    terminal width to respect)."""
    from rich.console import Console
    from rich.measure import Measurement

    console = Console(width=100_000, file=io.StringIO())
    return max(Measurement.get(console, console.options, table).maximum, 80)


def same_decisions_text(result: BenchResult) -> list[str]:
    """One line per group of rows that ran the very same masks: one measurement repeated,
    so the table reports their median latency, not the fastest of them."""
    lines, seen = [], set()
    for r in result.rows:
        if not r.same_decisions or r.group_median_ms is None:
            continue
        key = (r.method, r.batch, r.precision, tuple(r.same_decisions))
        if key in seen:
            continue
        seen.add(key)
        members = [
            m
            for m in result.rows
            if (m.method, m.batch, m.precision) == key[:3] and m.same_decisions == r.same_decisions
        ]
        fastest = min(m.latency.median for m in members)
        slowest = max(m.latency.median for m in members)
        budgets = ", ".join(f"{c:g}" for c in r.same_decisions)
        # As the rows are labelled: "c=..." for the artifact's mode, "greedy c=..." else.
        prefix = (f"{r.precision} " if r.precision != "fp32" else "") + (
            f"{r.name} " if r.kind == "mode" else ""
        )
        lines.append(
            f"{prefix}c = {budgets}, batch {r.batch}: median {r.group_median_ms:.2f} ms "
            f"(their medians {fastest:.2f}-{slowest:.2f} ms)"
        )
    return lines


def markdown(result: BenchResult) -> str:
    env, model, data = result.environment, result.model, result.data
    lines = [
        f"# budget-edge bench: {model['backbone']}, {result.modes_text}",
        "",
        f"- artifact: `{model['directory']}` ({model['num_components']} components, "
        f"{model['full_flops'] / 1e6:.1f} MFLOPs full model, policy "
        f"{_fmt(model['policy_flops'] and model['policy_flops'] / 1e6, '.2f')} MFLOPs)",
        f"- machine: {env['cpu']}, {env['cpu_count']} cores ({env['usable_cores']} usable), "
        f"{env['os']}",
        f"- backend: {env['backend']}, threads {env['threads_effective']}; load average "
        f"before {env['load_average_before']}, after {env['load_average_after']}",
        f"- data: {data['name']}, {data['eval_images']} evaluation images"
        + ("" if data["labelled"] else " (no labels: no accuracy)"),
        f"- timing: {result.settings['iterations']} calls per row after "
        f"{result.settings['warmup']} warm-up calls, interleaved in "
        f"{result.settings['rounds']} rounds; latency columns in ms per batch",
        f"- {LEGEND}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in env['versions'].items())}",
        *([f"- command: `{result.settings['command']}`"] if result.settings.get("command") else []),
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(HEADERS) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(result)]
    groups = same_decisions_text(result)
    if groups:
        lines += [
            "",
            "**Budgets that ran the same decisions** (the same mask for every image):",
            "",
        ]
        lines += [f"- {line}" for line in groups]
    # Accuracy does not depend on the timing batch: the smallest batch's pairs say it all.
    first = min((r.batch for r in result.rows), default=1)
    uniform = [r for r in result.rows if r.paired_uniform is not None and r.batch == first]
    if uniform:
        lines += [
            "",
            "**The per-image decision against one mask for every image** (the static or "
            "count mask of the nearest usage; exact McNemar test on the same images):",
            "",
            "| row | usage | against | its usage | accuracy difference | p |",
            "|---|---:|---|---:|---:|---:|",
        ]
        for r in uniform:
            u = r.paired_uniform or {}
            lines.append(
                f"| {r.label} | {u['usage']:.3f} | {u['against']} | {u['against_usage']:.3f} "
                f"| {100 * u['accuracy_delta']:+.2f} | {u['p_value']:.2g} |"
            )
    lines += _uniform_at_latency(result)
    decided = verdict(result)
    if decided is not None:
        lines += ["", "**Verdict** (the fastest row as accurate as the best, on these images):", ""]
        lines += [f"- {line}" for line in decided.splitlines()]
    return "\n".join(lines) + "\n"


def _uniform_at_latency(result: BenchResult) -> list[str]:
    """The decided rows against the uniform masks around their latency, by median and by
    mean, every batch size (unlike accuracy, the partners depend on the batch)."""
    rows = [r for r in result.rows if r.paired_uniform_latency is not None]
    if not rows:
        return []
    lines = [
        "",
        "**The per-image decision against one mask for every image at equal latency**: the "
        "most accurate static or count mask at no more latency (the decision pays if it "
        "beats this one) and the fastest at no less, same batch size; exact McNemar test on "
        "the same images. By median and by mean latency: a router's latency is skewed, so "
        "its mean, which time and energy over many images follow, can sit far above its "
        "median.",
    ]
    for stat in ("median", "mean"):
        lines += [
            "",
            f"| row | batch | {stat} ms | best mask no slower | its ms | difference | p "
            "| fastest mask no faster | its ms | difference | p |",
            "|---|---:|---:|---|---:|---:|---:|---|---:|---:|---:|",
        ]
        for r in rows:
            pairs = (r.paired_uniform_latency or {})[stat]
            ms = next(u["ms"] for u in pairs.values() if u is not None)
            cells = [_pair_cells(pairs[side]) for side in ("no_slower", "no_faster")]
            lines.append(f"| {r.label} | {r.batch} | {ms:.2f} | {cells[0]} | {cells[1]} |")
    return lines


def _pair_cells(pair: dict[str, Any] | None) -> str:
    if pair is None:
        return "none | - | - | -"
    return (
        f"{pair['against']} | {pair['against_ms']:.2f} | {100 * pair['accuracy_delta']:+.2f} "
        f"| {pair['p_value']:.2g}"
    )


def csv_records(result: BenchResult) -> list[dict[str, Any]]:
    records = []
    for r in result.rows:
        rec: dict[str, Any] = {
            "label": r.label,
            "kind": r.kind,
            "precision": r.precision,
            "budget": r.budget,
            "batch": r.batch,
            "throughput_ips": r.throughput,
            "usage": r.usage,
            "flops_share": r.flops_share,
            "accuracy": r.accuracy,
            "accuracy_low": None if r.accuracy_ci is None else r.accuracy_ci[0],
            "accuracy_high": None if r.accuracy_ci is None else r.accuracy_ci[1],
            "paired_against": None if r.paired is None else r.paired["against"],
            "paired_delta": None if r.paired is None else r.paired["accuracy_delta"],
            "paired_p": None if r.paired is None else r.paired["p_value"],
            "uniform_against": None if r.paired_uniform is None else r.paired_uniform["against"],
            "uniform_delta": None
            if r.paired_uniform is None
            else r.paired_uniform["accuracy_delta"],
            "uniform_p": None if r.paired_uniform is None else r.paired_uniform["p_value"],
            "cpu_ms": r.cpu_ms,
            "distinct_masks": r.distinct_masks,
            "reported_ms": r.reported_ms,
            "same_decisions": None
            if r.same_decisions is None
            else " ".join(f"{c:g}" for c in r.same_decisions),
        }
        for by in ("median", "mean"):
            u = ((r.paired_uniform_latency or {}).get(by) or {}).get("no_slower") or {}
            rec.update(
                {
                    f"uniform_no_slower_{by}_against": u.get("against"),
                    f"uniform_no_slower_{by}_accuracy_delta": u.get("accuracy_delta"),
                    f"uniform_no_slower_{by}_p": u.get("p_value"),
                }
            )
        rec.update({f"{f}_ms": getattr(r.latency, f) for f in STAT_FIELDS})
        rec.update({f"{k}_ms": r.breakdown_ms.get(k) for k in LATENCY_KEYS})
        records.append(rec)
    return records


def write_json(result: BenchResult, path: str | os.PathLike[str]) -> Path:
    text = json.dumps(result.to_dict(), indent=1) + "\n"
    return write_bytes(path, text.encode())


def write_csv(result: BenchResult, path: str | os.PathLike[str]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_records(result))
    return write_bytes(path, buf.getvalue().encode())


def write_markdown(result: BenchResult, path: str | os.PathLike[str]) -> Path:
    return write_bytes(path, markdown(result).encode())


def _find(
    rows: list[BenchRow], kind: str, batch: int, precision: str | None = None
) -> BenchRow | None:
    """The first row of this kind and batch (and precision, when given)."""
    return next(
        (
            r
            for r in rows
            if r.kind == kind and r.batch == batch and precision in (None, r.precision)
        ),
        None,
    )
