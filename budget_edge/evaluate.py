"""Budget sweeps: what the agent does at each budget, next to two baselines.

For each budget c the agent picks a mask per image (keep component k when its
probability s_k >= 0.5, as the reference's test does), the backbone runs with
it, and we record accuracy, usage (mean, std, distance to c), FLOPs per image
(backbone plus agent), unique policies and PyTorch latency (information only).

Three baselines run at the same usage, image by image (each image keeps as many
components as the agent kept for it), so the agent's value is visible:
- random masks: that many components chosen uniformly at random;
- static drop order: components ranked once on a validation split by the
  accuracy drop when each is removed alone, and dropped in that order;
- best static mask: for each number of kept components, the fixed mask that
  greedy backward elimination finds best on the validation split (never the
  test set): the strongest static alternative inside the same model.

And one baseline at the same mean cost: the static front, the best static
masks' test accuracy at the row's mean total FLOPs, agent included (the best
mask that costs no more, or linearly between two neighbouring masks: what
running the two neighbouring static masks on a share of the images each
gives). It is the fair line for `allocate`, whose per-image counts the
image-by-image baselines above would borrow.

Outputs: sweep.json, sweep.csv, sweep.md and three PNG plots in the style of
the paper's Fig. 3/4.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from budget_edge.agent.allocator import Allocator, decision_graph
from budget_edge.agent.masks import (
    MASK_MODES,
    best_static_masks,
    correct_under_masks,
    mutual_information,
    policy_masks,
    random_masks,
    static_drop_order,
    static_masks,
)
from budget_edge.errors import ConfigError
from budget_edge.figures import new_figure, save_png
from budget_edge.files import atomic_write_text, atomic_writer
from budget_edge.models.backbone import Backbone


@dataclass
class BudgetRow:
    """One budget's results; accuracies in [0, 1], FLOPs per image."""

    budget: float
    accuracy: float
    usage_mean: float  # fraction of components kept (the paper's usage)
    usage_std: float
    usage_abs_error: float  # mean over images of |usage - c|
    flops_usage_mean: float  # FLOPs of kept components / FLOPs of all components
    flops_mean: float  # backbone + agent
    flops_std: float
    unique_policies: int
    latency_ms: float  # batch 1, agent + backbone, PyTorch on this machine
    random_accuracy: float
    random_flops_mean: float  # backbone only: the baselines need no agent
    static_accuracy: float
    static_flops_mean: float
    best_static_accuracy: float  # each image: the best fixed mask with the agent's count
    best_static_flops_mean: float
    mask_class_mi: float  # bits: how much the mask says about the image's class
    # The best static masks at this row's mean total FLOPs (agent included).
    static_front_accuracy: float = float("nan")


@dataclass
class Sweep:
    rows: list[BudgetRow]
    full_accuracy: float
    full_flops: int
    agent_flops: int
    num_components: int
    drop_order: list[int]
    num_images: int
    info: dict[str, Any] = field(default_factory=dict)
    best_static_masks: list[list[int]] = field(default_factory=list)  # row m: m kept
    # Test accuracy and FLOPs (backbone only) of each best static mask: the static front.
    best_static_accuracy: list[float] = field(default_factory=list)
    best_static_flops: list[float] = field(default_factory=list)
    zoo: list[dict[str, Any]] = field(default_factory=list)  # name, backbone, accuracy, flops


def zoo_point(
    name: str, backbone: Backbone, images: Tensor, labels: Tensor, batch_size: int = 500
) -> dict[str, Any]:
    """A separately trained model's test accuracy and FLOPs: one point of the zoo."""
    backbone.eval()
    with torch.no_grad():
        correct = correct_under_masks(backbone, images, labels, None, batch_size)
    return {
        "name": name,
        "backbone": backbone.config.get("name"),
        "accuracy": correct.double().mean().item(),
        "flops": backbone.flops().total,
    }


def _latency_ms(
    backbone: Backbone,
    agent: torch.nn.Module,
    images: Tensor,
    budget: float,
    mode: str,
    allocator: Allocator | None = None,
) -> float:
    """Mean batch-1 latency of agent + masked backbone over `images` (after one warm-up)."""
    if len(images) == 0:
        return float("nan")
    with torch.no_grad():
        backbone(images[:1], policy_masks(agent, images[:1], budget, 1, mode, allocator))
        start = time.perf_counter()
        for i in range(len(images)):
            x = images[i : i + 1]
            backbone(x, policy_masks(agent, x, budget, 1, mode, allocator))
    return (time.perf_counter() - start) * 1000.0 / len(images)


def decision_flops(agent: torch.nn.Module, mode: str, allocator: Allocator | None) -> int:
    """Per image: the agent's FLOPs, or with mode "allocate" the allocator graph's."""
    if mode == "allocate" and allocator is not None:
        return decision_graph(allocator, agent).flops()  # type: ignore[arg-type]
    return int(agent.flops())  # type: ignore[operator]


def static_front(static_flops: list[float], static_accuracy: list[float], flops: float) -> float:
    """The best static masks' accuracy at a total FLOPs per image: the best mask that
    costs at most that much, or linearly between two neighbouring masks (what running
    each on a share of the images gives)."""
    order = np.argsort(static_flops)
    f = np.asarray(static_flops, np.float64)[order]
    a = np.maximum.accumulate(np.asarray(static_accuracy, np.float64)[order])
    return float(np.interp(flops, f, a))


def evaluate_budget(
    backbone: Backbone,
    agent: torch.nn.Module,
    images: Tensor,
    labels: Tensor,
    budget: float,
    drop_order: list[int],
    generator: torch.Generator,
    best_masks: Tensor,
    batch_size: int = 500,
    latency_images: int = 50,
    mode: str = "greedy",
    allocator: Allocator | None = None,
    static_accuracy: Tensor | None = None,
) -> BudgetRow:
    """Agent, random, static-order and best-static-mask results at one budget (the
    baselines keep as many components as the agent does, image by image).
    `static_accuracy` (K + 1,): the best static masks' test accuracy per count, for
    the static front at the same mean usage."""
    table = backbone.flops()
    k = backbone.num_components
    component_flops = torch.tensor(table.components, dtype=torch.float64)
    agent_flops = float(decision_flops(agent, mode, allocator))

    def flops_per_image(masks: Tensor) -> Tensor:
        return table.base + masks.double() @ component_flops

    masks = policy_masks(agent, images, budget, batch_size, mode, allocator)
    counts = masks.sum(dim=1)
    usage = counts.double() / k
    flops = flops_per_image(masks) + agent_flops
    correct = correct_under_masks(backbone, images, labels, masks, batch_size)
    rand = random_masks(counts, k, generator)
    stat = static_masks(counts, drop_order, k)
    rand_correct = correct_under_masks(backbone, images, labels, rand, batch_size)
    stat_correct = correct_under_masks(backbone, images, labels, stat, batch_size)
    best = best_masks[counts]
    best_correct = correct_under_masks(backbone, images, labels, best, batch_size)
    return BudgetRow(
        budget=budget,
        accuracy=correct.double().mean().item(),
        usage_mean=usage.mean().item(),
        usage_std=usage.std(unbiased=False).item(),
        usage_abs_error=(usage - budget).abs().mean().item(),
        flops_usage_mean=(masks.double() @ component_flops).mean().item()
        / component_flops.sum().item(),
        flops_mean=flops.mean().item(),
        flops_std=flops.std(unbiased=False).item(),
        unique_policies=len(torch.unique(masks, dim=0)),
        latency_ms=_latency_ms(backbone, agent, images[:latency_images], budget, mode, allocator),
        random_accuracy=rand_correct.double().mean().item(),
        random_flops_mean=flops_per_image(rand).mean().item(),
        static_accuracy=stat_correct.double().mean().item(),
        static_flops_mean=flops_per_image(stat).mean().item(),
        best_static_accuracy=best_correct.double().mean().item(),
        best_static_flops_mean=flops_per_image(best).mean().item(),
        mask_class_mi=mutual_information(masks, labels),
        static_front_accuracy=float("nan")
        if static_accuracy is None
        else static_front(
            [float(table.masked(m.int().tolist())) for m in best_masks],
            static_accuracy.tolist(),
            flops.mean().item(),
        ),
    )


def sweep(
    backbone: Backbone,
    agent: torch.nn.Module,
    images: Tensor,
    labels: Tensor,
    val_images: Tensor,
    val_labels: Tensor,
    budgets: list[float],
    seed: int = 0,
    batch_size: int = 500,
    latency_images: int = 50,
    progress: Any = None,
    mode: str = "greedy",
    allocator: Allocator | None = None,
    say: Callable[[str], None] | None = None,
) -> Sweep:
    """Evaluate every budget; the static drop order is ranked once on the validation split.

    `progress(i, n)` is called after each budget when given; `say(message)` before
    each step, the minutes of static baselines before the first budget included;
    `mode` turns the agent's probabilities into masks (`masks_from_probs`).
    """
    tell = say or (lambda _message: None)
    k, n_val, n_test = backbone.num_components, len(val_images), len(images)
    if mode not in MASK_MODES:
        raise ConfigError(f"mask mode {mode!r} is not one of {', '.join(MASK_MODES)}")
    backbone.eval()
    agent.eval()
    generator = torch.Generator().manual_seed(seed)
    tell(f"static drop order: dropping each of {k} components on {n_val} validation images")
    order = static_drop_order(backbone, val_images, val_labels, batch_size)
    best_masks = best_static_masks(
        backbone,
        val_images,
        val_labels,
        batch_size,
        progress=lambda done, trials: tell(
            f"best static masks: {done}/{trials} trials on {n_val} validation images"
        ),
    )
    tell(f"the full model on {n_test} test images")
    full = correct_under_masks(backbone, images, labels, None, batch_size)
    scores = []
    for m, mask in enumerate(best_masks):
        tell(f"best static masks: {m}/{k + 1} scored on {n_test} test images")
        correct = correct_under_masks(backbone, images, labels, mask.expand(n_test, -1), batch_size)
        scores.append(correct.double().mean())
    static_accuracy = torch.stack(scores)
    rows = []
    for i, budget in enumerate(budgets):
        tell(f"budget {budget:g} ({i + 1}/{len(budgets)}) on {n_test} test images")
        rows.append(
            evaluate_budget(
                backbone,
                agent,
                images,
                labels,
                budget,
                order,
                generator,
                best_masks,
                batch_size,
                latency_images,
                mode,
                allocator,
                static_accuracy,
            )
        )
        if progress is not None:
            progress(i + 1, len(budgets))
    return Sweep(
        rows=rows,
        full_accuracy=full.double().mean().item(),
        full_flops=backbone.flops().total,
        agent_flops=decision_flops(agent, mode, allocator),
        num_components=backbone.num_components,
        drop_order=order,
        num_images=len(images),
        info={"mask_mode": mode},
        best_static_masks=best_masks.int().tolist(),
        best_static_accuracy=static_accuracy.tolist(),
        best_static_flops=[float(backbone.flops().masked(m.int().tolist())) for m in best_masks],
    )


# -- reports -------------------------------------------------------------------


def sweep_as_dict(result: Sweep) -> dict[str, Any]:
    return {
        "full_model": {"accuracy": result.full_accuracy, "flops": result.full_flops},
        "agent_flops": result.agent_flops,
        "agent_flops_share": result.agent_flops / result.full_flops,
        "num_components": result.num_components,
        "static_drop_order": result.drop_order,
        "best_static_masks": result.best_static_masks,
        "best_static_accuracy": result.best_static_accuracy,
        "best_static_flops": result.best_static_flops,
        "zoo": result.zoo,
        "num_images": result.num_images,
        **result.info,
        "rows": [asdict(row) for row in result.rows],
    }


def markdown_table(result: Sweep) -> str:
    """The sweep as a Markdown table (accuracies in %, FLOPs in MFLOPs)."""
    lines = [
        f"Full model: {100 * result.full_accuracy:.2f}% at {result.full_flops / 1e6:.2f} MFLOPs; "
        f"agent {result.agent_flops / 1e6:.2f} MFLOPs "
        f"({100 * result.agent_flops / result.full_flops:.1f}% of the backbone); "
        f"{result.num_images} images; masks: {result.info.get('mask_mode', 'greedy')}.",
        "",
        "| budget | accuracy % | usage | mean abs(usage - c) | MFLOPs | unique policies "
        "| I(class; mask) bits "
        "| random % | static order % | best static mask % | static front % | latency ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    zoo = [
        f"{z['backbone']} {100 * z['accuracy']:.2f}% at {z['flops'] / 1e6:.2f} MFLOPs"
        for z in result.zoo
    ]
    if zoo:
        lines.insert(1, f"Zoo (trained on their own): {'; '.join(zoo)}.")
    for r in result.rows:
        lines.append(
            f"| {r.budget:.2f} | {100 * r.accuracy:.2f} | {r.usage_mean:.3f} ± {r.usage_std:.3f} "
            f"| {r.usage_abs_error:.3f} | {r.flops_mean / 1e6:.2f} | {r.unique_policies} "
            f"| {r.mask_class_mi:.3f} "
            f"| {100 * r.random_accuracy:.2f} | {100 * r.static_accuracy:.2f} "
            f"| {100 * r.best_static_accuracy:.2f} | {100 * r.static_front_accuracy:.2f} "
            f"| {_ms_cell(r.latency_ms)} |"
        )
    return "\n".join(lines) + "\n"


def _ms_cell(ms: float) -> str:
    """A latency for the table; '-' when it was not measured (no latency images)."""
    return "-" if math.isnan(ms) else f"{ms:.2f}"


def write_reports(result: Sweep, out_dir: Path) -> list[Path]:
    """sweep.json, sweep.csv, sweep.md and the plots in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, csv_path, md_path = (out_dir / f"sweep.{ext}" for ext in ("json", "csv", "md"))
    atomic_write_text(json_path, json.dumps(sweep_as_dict(result), indent=2) + "\n")
    rows = [asdict(row) for row in result.rows]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(csv_path, text.getvalue())
    atomic_write_text(md_path, markdown_table(result))
    return [json_path, csv_path, md_path, *plot_sweep(result, out_dir)]


def accuracy_figure(result: Sweep) -> Any:
    """Accuracy against FLOPs for every method of the sweep, the legend under the axes,
    titled with the model, the data and the decision mode."""
    rows = result.rows
    mode = result.info.get("mask_mode", "greedy")
    fig, ax = new_figure(figsize=(6, 5.5))
    ax.plot(
        [r.flops_mean / 1e6 for r in rows],
        [100 * r.accuracy for r in rows],
        "o-",
        label=f"BudgetNet, mode {mode} (decision included)",
    )
    ax.plot(
        [r.static_flops_mean / 1e6 for r in rows],
        [100 * r.static_accuracy for r in rows],
        "s--",
        label="static drop order",
    )
    ax.plot(
        [r.best_static_flops_mean / 1e6 for r in rows],
        [100 * r.best_static_accuracy for r in rows],
        "D-.",
        label="best static mask (validation search)",
    )
    if result.best_static_accuracy:
        ax.plot(
            [f / 1e6 for f in result.best_static_flops],
            [100 * a for a in result.best_static_accuracy],
            "-",
            color="0.6",
            label="static front (best mask per count)",
        )
    ax.plot(
        [r.random_flops_mean / 1e6 for r in rows],
        [100 * r.random_accuracy for r in rows],
        "x:",
        label="random masks",
    )
    ax.plot(
        [result.full_flops / 1e6],
        [100 * result.full_accuracy],
        "k*",
        markersize=12,
        label="full model",
    )
    for i, z in enumerate(result.zoo):
        ax.plot(
            [z["flops"] / 1e6],
            [100 * z["accuracy"]],
            "D",
            color=f"C{4 + i}",
            label=f"zoo: {z['backbone']}",
        )
    ax.set(xlabel="MFLOPs per image", ylabel="accuracy (%)")
    ax.set_title("accuracy against FLOPs: up and left is better", fontsize=9)
    fig.suptitle(_figure_title(result), fontsize=10)
    ax.grid(alpha=0.3)
    # Under the axes, never over a point.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=7, frameon=False)
    return fig


def _figure_title(result: Sweep) -> str:
    """'resnet20 · fashion-mnist test, 3000 images · mode allocate'."""
    info = result.info
    data = f"{info.get('dataset', '')} {info.get('split', '')}".strip()
    where = f"{data}, {result.num_images} images" if data else f"{result.num_images} images"
    parts = [str(info.get("backbone") or ""), where, f"mode {info.get('mask_mode', 'greedy')}"]
    return " · ".join(part for part in parts if part)


def plot_sweep(result: Sweep, out_dir: Path) -> list[Path]:
    """Three PNGs like the paper's Fig. 3/4: accuracy vs FLOPs, usage and policies vs budget."""
    rows = result.rows
    budgets = [r.budget for r in rows]
    paths = [_save(accuracy_figure(result), out_dir / "accuracy_vs_flops.png")]

    fig, ax = new_figure(figsize=(5, 4))
    ax.errorbar(
        budgets,
        [r.usage_mean for r in rows],
        yerr=[r.usage_std for r in rows],
        fmt="o-",
        capsize=3,
        label="component usage (mean ± std)",
    )
    ax.plot([0, 1], [0, 1], "k:", label="usage = budget")
    ax.set(
        xlabel="budget c",
        ylabel="component usage",
        title="Usage vs budget",
        xlim=(0, 1.05),
        ylim=(0, 1.05),
    )
    ax.grid(alpha=0.3)
    ax.legend()
    paths.append(_save(fig, out_dir / "usage_vs_budget.png"))

    fig, ax = new_figure(figsize=(5, 4))
    ax.plot(budgets, [r.unique_policies for r in rows], "o-")
    ax.set(xlabel="budget c", ylabel="unique policies", title="Unique policies vs budget")
    ax.grid(alpha=0.3)
    paths.append(_save(fig, out_dir / "unique_policies_vs_budget.png"))
    return paths


def _save(fig: Any, path: Path) -> Path:
    with atomic_writer(path) as handle:
        save_png(fig, handle)
    return path
