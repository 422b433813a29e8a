"""The bench figure: which model to deploy at which latency, in three panels.

1. latency against the budget, one line style per batch size;
2. accuracy (or, without labels, the executed FLOPs share) against the budget;
3. accuracy against measured latency: the front a user picks from (labelled data only).

Every method keeps one colour in every panel (BudgetNet, its static masks, the static
full graph, each zoo model), so a reader follows one method across panels; methods
without a budget (the full graph, the zoo) are horizontal lines in panels 1 and 2 and
points in panel 3. Accuracy is in percent, every point is inside the axes, and the
legend sits under the panels, outside the data. Torch-free; matplotlib is imported
only when a plot is drawn.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from budget_edge.bench.measure import BenchResult, BenchRow
from budget_edge.figures import new_figure, save_png

BUDGETNET, STATIC_MASK = "C0", "C2"
MODE_COLOURS = ("C1", "teal", "navy")  # decision modes measured beside the main one
STATIC_COLOURS = ("k", "C7", "0.6")  # the full graph of each precision, the main one black
ZOO_COLOURS = ("C3", "C4", "C5", "C6", "C8", "C9")
BATCH_STYLES = ("-", "--", ":", "-.")  # batch sizes, in increasing order
PRECISION_MARKERS = ("o", "^", "v", "D")  # graph sets, the main one first


def write_plot(result: BenchResult, path: str | os.PathLike[str]) -> Path:
    """Draw the bench figure for `result` and write it to `path` as PNG (atomically)."""
    from budget_edge.bench.report import write_bytes

    png = io.BytesIO()
    save_png(figure(result), png, rect=(0, 0.12, 1, 1))
    return write_bytes(path, png.getvalue())


def figure(result: BenchResult) -> Any:
    """The bench figure (a matplotlib Figure), not yet written."""
    labelled = bool(result.data["labelled"])
    fig, axes = new_figure(1, 3 if labelled else 2, figsize=(16.5 if labelled else 11, 5.2))
    batches = sorted({r.batch for r in result.rows})
    _latency_panel(axes[0], result, batches)
    _quality_panel(axes[1], result, batches[0])
    if labelled:
        _front_panel(axes[2], result, batches[0])
    fig.suptitle(title(result), fontsize=10)
    _legend_below(fig, axes)
    return fig


def check_plotting() -> None:
    """Fail now, not after minutes of timing, when matplotlib is missing."""
    new_figure(figsize=(1, 1))


def title(result: BenchResult) -> str:
    """What was measured, where: model, mode, precisions, data, machine."""
    env, data = result.environment, result.data
    precisions = ", ".join(_precisions(result))
    return (
        f"{result.model['backbone']} · {result.modes_text} · {precisions} · {data['name']} "
        f"({data['eval_images']} images) · {env['cpu']}, {env['backend']}, "
        f"{env['threads_effective']} thread(s)"
    )


def _latency_panel(ax: Any, result: BenchResult, batches: list[int]) -> None:
    for i, n in enumerate(batches):
        style = BATCH_STYLES[i % len(BATCH_STYLES)]
        for j, p in enumerate(_precisions(result)):
            rows = _rows(result, "budget", n, p)
            ax.errorbar(
                [r.budget for r in rows],
                [r.latency.median for r in rows],
                yerr=[[0.0] * len(rows), [r.latency.p90 - r.latency.median for r in rows]],
                marker=PRECISION_MARKERS[j % len(PRECISION_MARKERS)],
                linestyle=style,
                color=BUDGETNET,
                capsize=3,
                alpha=1.0 if j == 0 else 0.6,
                label=_budgetnet_label(result, p),
            )
        series = [(rows, "o", colour, label) for rows, colour, label in _other_modes(result, n)]
        masks = _rows(result, "static-mask", n)
        if masks:
            series.append((masks, "s", STATIC_MASK, _masks_label(masks)))
        for rows, marker, colour, label in series:
            ax.plot(
                [r.budget for r in rows],
                [r.latency.median for r in rows],
                marker=marker,
                linestyle=style,
                color=colour,
                label=label,
            )
        for row, colour, label in _fixed_methods(result, n):
            ax.axhline(row.latency.median, color=colour, linestyle=style, label=label)
    ax.set_xlabel("budget c")
    ax.set_ylabel("median latency, ms per batch (bars: p90)")
    ax.set_title(f"latency; line style: batch {', '.join(map(str, batches))}", fontsize=9)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)


def _quality_panel(ax: Any, result: BenchResult, batch: int) -> None:
    """Accuracy (%) when the data has labels, else the executed FLOPs share."""
    labelled = bool(result.data["labelled"])
    value, name = (_percent, "accuracy (%)") if labelled else (_flops, "executed FLOPs share")
    for j, p in enumerate(_precisions(result)):
        rows = _rows(result, "budget", batch, p)
        ax.plot(
            [r.budget for r in rows],
            [value(r) for r in rows],
            marker=PRECISION_MARKERS[j % len(PRECISION_MARKERS)],
            color=BUDGETNET,
            alpha=1.0 if j == 0 else 0.6,
            label=_budgetnet_label(result, p),
        )
    for rows, colour, label in _other_modes(result, batch):
        ax.plot([r.budget for r in rows], [value(r) for r in rows], "o-", color=colour, label=label)
    masks = _rows(result, "static-mask", batch)
    if masks:
        ax.plot(
            [r.budget for r in masks],
            [value(r) for r in masks],
            marker="s",
            linestyle="--",
            color=STATIC_MASK,
            label=_masks_label(masks),
        )
    for row, colour, label in _fixed_methods(result, batch):
        if value(row) is not None:
            ax.axhline(value(row), color=colour, linestyle="--", label=label)
    if not labelled:
        ax.plot([0, 1], [0, 1], color="gray", linestyle=":", label="share = budget")
    ax.set_xlabel("budget c")
    ax.set_ylabel(name)
    ax.set_title(f"{name}, batch {batch}", fontsize=9)
    ax.grid(alpha=0.3)


def _budgetnet_label(result: BenchResult, precision: str) -> str:
    """ "BudgetNet", with its mode when other modes are drawn beside it."""
    mode = f", {result.settings.get('mode')}" if result.settings.get("also_modes") else ""
    return f"BudgetNet{mode}{_tag(result, precision)}"


def _other_modes(result: BenchResult, batch: int) -> Iterator[tuple[list[BenchRow], str, str]]:
    """The rows of each mode measured beside the main one (bench --also-mode), with its
    colour and label, e.g. "BudgetNet, greedy"."""
    modes = sorted({r.name for r in result.rows if r.kind == "mode" and r.name})
    for i, mode in enumerate(modes):
        rows = [r for r in _rows(result, "mode", batch) if r.name == mode]
        tag = _tag(result, _precisions(result)[0])  # another mode runs the main precision
        yield rows, MODE_COLOURS[i % len(MODE_COLOURS)], f"BudgetNet, {mode}{tag}"


def _masks_label(masks: list[BenchRow]) -> str:
    """The one-mask-for-every-image method: searched static masks, or the allocator's
    count table (bench --count-table)."""
    kind = masks[0].name if masks and masks[0].name else "static"
    return f"{kind} mask per budget"


def _front_panel(ax: Any, result: BenchResult, batch: int) -> None:
    """Accuracy against measured latency: up and to the left is better. Budgets that ran
    the same decisions sit at the median of their latencies (BenchRow.reported_ms)."""
    near = _near(result, batch)
    for j, p in enumerate(_precisions(result)):
        rows = sorted(_rows(result, "budget", batch, p), key=lambda r: r.reported_ms)
        _line_with_budgets(
            ax,
            rows,
            f"{PRECISION_MARKERS[j % len(PRECISION_MARKERS)]}-",
            BUDGETNET,
            _budgetnet_label(result, p),
            near,
        )
    for rows, colour, label in _other_modes(result, batch):
        rows = sorted(rows, key=lambda r: r.reported_ms)
        _line_with_budgets(ax, rows, "o-", colour, label, near)
    masks = sorted(_rows(result, "static-mask", batch), key=lambda r: r.reported_ms)
    _line_with_budgets(ax, masks, "s--", STATIC_MASK, _masks_label(masks), near)
    for row, colour, label in _fixed_methods(result, batch):
        ax.plot(
            [row.reported_ms],
            [_percent(row)],
            "*" if row.kind == "static" else "D",
            color=colour,
            markersize=11 if row.kind == "static" else 8,
            label=label,
        )
    ax.set_xlabel(f"median latency, ms per batch of {batch}")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("accuracy against latency: up and left is better", fontsize=9)
    ax.set_xlim(left=0)
    ax.margins(y=0.08)  # every point inside, the lowest included
    ax.grid(alpha=0.3)


def _line_with_budgets(
    ax: Any,
    rows: list[BenchRow],
    style: str,
    colour: str,
    label: str,
    near: tuple[float, float],
) -> None:
    """A method's points joined, each marked with its budget; the labels alternate above
    and below the line, so neighbouring points do not write over each other, and
    points on top of each other (budgets that ran the same decisions) share one label,
    e.g. "0.4-1"."""
    if not rows:
        return
    ax.plot(
        [r.reported_ms for r in rows],
        [_percent(r) for r in rows],
        style,
        color=colour,
        label=label,
    )
    every = sorted(r.budget for r in rows if r.budget is not None)
    for k, group in enumerate(_coinciding(rows, near)):
        ax.annotate(
            _budgets_text(sorted(r.budget for r in group if r.budget is not None), every),
            (group[0].reported_ms, _percent(group[0]) or 0.0),
            fontsize=7,
            color=colour,
            textcoords="offset points",
            xytext=(3, 5 if k % 2 else -10),
        )


def _near(result: BenchResult, batch: int) -> tuple[float, float]:
    """How close two points of the front panel are when their labels would collide:
    3% of the panel's spread of latency and of accuracy."""
    rows = [r for r in result.rows if r.batch == batch and r.accuracy is not None]
    xs = [r.reported_ms for r in rows] or [0.0]
    ys = [_percent(r) or 0.0 for r in rows] or [0.0]
    return 0.03 * ((max(xs) - min(xs)) or 1.0), 0.03 * ((max(ys) - min(ys)) or 1.0)


def _budgets_text(budgets: list[float], every: list[float]) -> str:
    """ "0.4-1" for budgets that follow each other in the method's list, else "0.4, 1"."""
    at = [every.index(b) for b in budgets]
    if len(budgets) > 2 and at == list(range(at[0], at[0] + len(at))):
        return f"{budgets[0]:g}-{budgets[-1]:g}"
    return ", ".join(f"{b:g}" for b in budgets)


def _coinciding(rows: list[BenchRow], near: tuple[float, float]) -> list[list[BenchRow]]:
    """Neighbouring points (in latency order) within `near` of their group's first point
    on both axes, grouped."""
    groups = [[rows[0]]]
    for row in rows[1:]:
        last = groups[-1][0]
        dx = abs(row.reported_ms - last.reported_ms)
        dy = abs((_percent(row) or 0.0) - (_percent(last) or 0.0))
        if dx <= near[0] and dy <= near[1]:
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


def _fixed_methods(result: BenchResult, batch: int) -> Iterator[tuple[BenchRow, str, str]]:
    """Methods without a budget at this batch: the static full graph of each precision
    (the main one black), then each zoo model in its own colour."""
    for j, p in enumerate(_precisions(result)):
        for row in _rows(result, "static", batch, p):
            colour = STATIC_COLOURS[j % len(STATIC_COLOURS)]
            yield row, colour, f"static full graph{_tag(result, p)}"
    zoo = sorted({r.name for r in result.rows if r.kind == "zoo" and r.name})
    for i, name in enumerate(zoo):
        for row in _rows(result, "zoo", batch):
            if row.name == name:
                yield row, ZOO_COLOURS[i % len(ZOO_COLOURS)], f"zoo: {name}"


def _legend_below(fig: Any, axes: Any) -> None:
    """One legend for the figure, each method once, under the panels."""
    seen: dict[str, Any] = {}
    # The latency panel (first) draws BudgetNet as an errorbar container, which matplotlib
    # lists after every line: the other panels give the order methods were drawn in.
    for ax in [*axes[1:], *axes[:1]]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    order = ("BudgetNet", "static mask", "count mask", "static full graph", "zoo", "share")

    def rank(label: str) -> int:  # methods in a fixed order; stable within one
        return next((i for i, o in enumerate(order) if label.startswith(o)), len(order))

    labels = sorted(seen, key=rank)
    fig.legend(
        [seen[t] for t in labels],
        labels,
        loc="lower center",
        ncol=min(len(labels), 5),
        fontsize=8,
        frameon=False,
    )


def _rows(
    result: BenchResult, kind: str, batch: int, precision: str | None = None
) -> list[BenchRow]:
    """Rows of one kind at one batch (and precision), in budget order."""
    return sorted(
        (
            r
            for r in result.rows
            if r.kind == kind and r.batch == batch and precision in (None, r.precision)
        ),
        key=lambda r: r.budget or 0.0,
    )


def _percent(row: BenchRow) -> float | None:
    return None if row.accuracy is None else 100.0 * row.accuracy


def _flops(row: BenchRow) -> float | None:
    return row.flops_share


def _precisions(result: BenchResult) -> list[str]:
    """The graph sets measured, the main one first."""
    return list(result.environment.get("precisions") or ["fp32"])


def _tag(result: BenchResult, precision: str) -> str:
    """' int8' in legends when several precisions were measured, else nothing."""
    return f" {precision}" if len(_precisions(result)) > 1 else ""
