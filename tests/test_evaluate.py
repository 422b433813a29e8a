"""Budget sweeps, baselines, reports and plots (tiny models, generated data)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from budgetnet_helpers import tiny_backbone
from torch import Tensor, nn

from budget_edge.agent.masks import (
    best_static_masks,
    masks_from_probs,
    mutual_information,
    random_masks,
    static_drop_order,
    static_masks,
)
from budget_edge.errors import ConfigError
from budget_edge.evaluate import accuracy_figure, evaluate_budget, sweep, write_reports


def test_random_masks_keep_the_requested_count() -> None:
    counts = torch.tensor([0, 3, 9, 5])
    masks = random_masks(counts, 9, torch.Generator().manual_seed(0))
    assert masks.sum(dim=1).tolist() == [0, 3, 9, 5]


def test_static_masks_drop_in_order() -> None:
    # Drop order 2, 0, 1, 3: keeping 2 of 4 drops components 2 and 0.
    masks = static_masks(torch.tensor([2, 4, 0, 3]), [2, 0, 1, 3], 4)
    assert masks.int().tolist() == [[0, 1, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 0, 1]]


class KeyComponentNet(nn.Module):
    """Right on every image while component `key` runs, wrong otherwise; FLOPs = 10 per kept one."""

    num_components = 4

    def __init__(self, key: int) -> None:
        super().__init__()
        self.key = key

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        labels = x[:, 0, 0, 0].long()
        logits = torch.nn.functional.one_hot(labels, 10).float()
        if mask is not None:
            wrong = torch.nn.functional.one_hot((labels + 1) % 10, 10).float()
            logits = torch.where(mask[:, self.key, None].bool(), logits, wrong)
        return logits

    def flops(self) -> object:
        class Table:
            base, components, total = 5, (10, 10, 10, 10), 45

        return Table()


class PrefixAgent(nn.Module):
    """Keeps the first round(c * K) components: a policy whose numbers are known by hand."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: Tensor, budget: float) -> tuple[Tensor, Tensor]:
        keep = (torch.arange(self.k) < round(budget * self.k)).float()
        return keep.expand(len(x), self.k), torch.zeros(len(x))

    def flops(self) -> int:
        return 3


def _images(n: int) -> tuple[Tensor, Tensor]:
    labels = torch.arange(n) % 10
    return labels.float().view(n, 1, 1, 1).expand(n, 1, 2, 2).clone(), labels


def test_static_drop_order_puts_the_essential_component_last() -> None:
    images, labels = _images(20)
    order = static_drop_order(KeyComponentNet(key=1), images, labels)  # type: ignore[arg-type]
    assert order == [0, 2, 3, 1]


def test_best_static_masks_keep_the_essential_component_to_the_end() -> None:
    images, labels = _images(20)
    table = best_static_masks(KeyComponentNet(key=1), images, labels)  # type: ignore[arg-type]
    assert table.sum(dim=1).tolist() == [0, 1, 2, 3, 4]
    assert table[1].int().tolist() == [0, 1, 0, 0]
    for m in range(4):  # each row drops one component of the row above
        assert bool((table[m] <= table[m + 1]).all())


def test_evaluate_budget_by_hand() -> None:
    images, labels = _images(20)
    net = KeyComponentNet(key=3)
    best = best_static_masks(net, images, labels)  # type: ignore[arg-type]
    row = evaluate_budget(
        net,
        PrefixAgent(4),
        images,
        labels,
        budget=0.5,
        drop_order=[0, 1, 2, 3],  # type: ignore[arg-type]
        generator=torch.Generator().manual_seed(0),
        best_masks=best,
        latency_images=2,
    )
    # The agent keeps components 0 and 1: the key component 3 is dropped, every answer wrong.
    assert row.accuracy == 0.0
    assert row.usage_mean == 0.5
    assert row.usage_std == 0.0
    assert row.usage_abs_error == 0.0
    assert row.flops_mean == 5 + 20 + 3  # base + two components + agent
    assert row.unique_policies == 1
    # Static order drops 0 and 1, keeps 2 and 3: all right, at the same usage.
    assert row.static_accuracy == 1.0
    assert row.static_flops_mean == 25
    assert row.random_flops_mean == 25
    # The best static mask with two components keeps the key component: all right.
    assert row.best_static_accuracy == 1.0
    assert row.best_static_flops_mean == 25
    assert 0.0 <= row.random_accuracy <= 1.0
    assert row.latency_ms > 0


def test_rank_masks_keep_the_most_probable() -> None:
    probs = torch.tensor([[0.1, 0.9, 0.3, 0.8], [0.2, 0.1, 0.7, 0.6]])
    assert masks_from_probs(probs, 0.5, "rank").int().tolist() == [[0, 1, 0, 1], [0, 0, 1, 1]]
    assert masks_from_probs(probs, 0.375, "rank").sum(1).tolist() == [1, 1]  # 1.5: tie down
    assert masks_from_probs(probs, 0.5, "greedy").int().tolist() == [[0, 1, 0, 1], [0, 0, 1, 1]]
    assert masks_from_probs(probs, 1.0, "rank").all()
    with pytest.raises(ConfigError, match="not one of greedy, rank"):
        masks_from_probs(probs, 0.5, "top")


def test_evaluate_budget_rank_mode_keeps_round_c_k() -> None:
    images, labels = _images(20)
    row = evaluate_budget(
        KeyComponentNet(key=3),
        PrefixAgent(4),
        images,
        labels,
        budget=0.75,  # type: ignore[arg-type]
        drop_order=[0, 1, 2, 3],
        generator=torch.Generator().manual_seed(0),
        best_masks=torch.ones(5, 4, dtype=torch.bool),
        latency_images=0,
        mode="rank",
    )
    assert row.usage_mean == 0.75
    assert row.usage_abs_error == 0.0


def test_sweep_and_reports(tmp_path: Path) -> None:
    from budget_edge.agent.policy import build_agent

    backbone = tiny_backbone()
    agent = build_agent(backbone.num_components, "light", 1, (1, 28, 28))
    images, labels = torch.randn(12, 1, 28, 28), torch.arange(12) % 10
    said: list[str] = []
    result = sweep(
        backbone,
        agent,
        images,
        labels,
        images[:6],
        labels[:6],
        [0.2, 1.0],
        latency_images=1,
        say=said.append,
    )
    assert [r.budget for r in result.rows] == [0.2, 1.0]
    # Every step says what it does, the static baselines before the first budget too.
    k = backbone.num_components
    trials = k * (k + 1) // 2
    assert said[0] == f"static drop order: dropping each of {k} components on 6 validation images"
    searched = [m for m in said if m.startswith("best static masks: ") and "trials" in m]
    assert len(searched) == k
    scored = [m for m in said if m.startswith("best static masks: ") and "scored" in m]
    assert scored[-1] == f"best static masks: {k}/{k + 1} scored on 12 test images"
    assert searched[-1] == f"best static masks: {trials}/{trials} trials on 6 validation images"
    assert said[-2:] == [
        "budget 0.2 (1/2) on 12 test images",
        "budget 1 (2/2) on 12 test images",
    ]
    assert sorted(result.drop_order) == list(range(backbone.num_components))
    assert result.full_flops == backbone.flops().total
    for row in result.rows:
        assert row.flops_mean <= result.full_flops + result.agent_flops
        assert 1 <= row.unique_policies <= 12

    # The accuracy figure decides: a cue, what was measured, the legend under the data.
    result.info.update(backbone="tiny", dataset="fashion-mnist", split="test")
    fig = accuracy_figure(result)
    assert fig.axes[0].get_title() == "accuracy against FLOPs: up and left is better"
    assert fig.get_suptitle() == "tiny · fashion-mnist test, 12 images · mode greedy"
    legend = fig.axes[0].get_legend()
    assert legend.get_texts()[0].get_text() == "BudgetNet, mode greedy (decision included)"
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    fig.tight_layout()
    canvas.draw()
    renderer = canvas.get_renderer()
    data_box = fig.axes[0].get_window_extent(renderer)
    legend_box = legend.get_window_extent(renderer)
    assert legend_box.y1 < data_box.y0  # entirely under the plotting area
    assert legend_box.y0 >= 0  # and inside the image

    paths = write_reports(result, tmp_path / "eval")
    names = sorted(p.name for p in paths)
    assert names == sorted(
        [
            "sweep.json",
            "sweep.csv",
            "sweep.md",
            "accuracy_vs_flops.png",
            "usage_vs_budget.png",
            "unique_policies_vs_budget.png",
        ]
    )
    data = json.loads((tmp_path / "eval" / "sweep.json").read_text())
    assert len(data["rows"]) == 2
    assert data["full_model"]["flops"] == result.full_flops
    assert [sum(m) for m in data["best_static_masks"]] == list(range(k + 1))
    with (tmp_path / "eval" / "sweep.csv").open() as f:
        assert [float(r["budget"]) for r in csv.DictReader(f)] == [0.2, 1.0]
    table = (tmp_path / "eval" / "sweep.md").read_text()
    assert "| 0.20 |" in table
    assert "| 1.00 |" in table
    for png in tmp_path.glob("eval/*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mutual_information_of_masks_and_classes() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    one_mask = torch.ones(8, 3, dtype=torch.bool)
    assert mutual_information(one_mask, labels) == 0.0  # a lookup from the budget
    by_class = torch.stack([labels == 0, labels == 1, labels >= 2], dim=1)
    # Three masks that split 4 equally likely classes 2/2/4: H(mask) = 1.5 bits.
    assert mutual_information(by_class, labels) == pytest.approx(1.5)
    per_image = torch.eye(8, dtype=torch.bool)[:, :3] | (torch.arange(8) % 2 == 0)[:, None]
    assert 0.0 <= mutual_information(per_image, labels) <= 2.0


def test_static_front_reads_the_best_mask_at_a_cost() -> None:
    from budget_edge.evaluate import static_front

    flops, accuracy = [10.0, 20.0, 30.0, 40.0], [0.5, 0.8, 0.9, 0.85]
    assert static_front(flops, accuracy, 20.0) == pytest.approx(0.8)
    assert static_front(flops, accuracy, 25.0) == pytest.approx(0.85)  # half of each
    # A cheaper mask that is better counts: 40 FLOPs buys the 30-FLOPs mask's 0.9.
    assert static_front(flops, accuracy, 40.0) == pytest.approx(0.9)
    assert static_front(flops, accuracy, 5.0) == pytest.approx(0.5)


def test_an_unmeasured_latency_is_a_dash_in_the_table() -> None:
    """`--latency-images 0` measures nothing: the table says so rather than printing nan."""
    from budget_edge.evaluate import _ms_cell

    assert _ms_cell(float("nan")) == "-"
    assert _ms_cell(1.234) == "1.23"
