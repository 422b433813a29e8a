"""The bench figure: every method in every panel, one colour each, accuracy in %."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bench.test_report import _result
from budget_edge.bench import plot
from budget_edge.bench.measure import BenchResult, BenchRow, LatencyStats
from budget_edge.errors import BackendError


def _with_zoo_and_masks(labelled: bool = True) -> BenchResult:
    result = _result(labelled)
    stats = LatencyStats(0.5, 0.6, 0.6, 0.7, 0.8, 0.9)
    for n in (1, 8):
        acc = 0.85 if labelled else None
        result.rows.append(BenchRow("zoo", n, None, stats, 1e3, 1.0, 0.3, acc, name="resnet8"))
        for c in (0.5, 1.0):
            result.rows.append(
                BenchRow("static-mask", n, c, stats, 1e3, c, c, 0.7 * c if labelled else None)
            )
    return result


def _legend(fig) -> list[str]:
    return [t.get_text() for t in fig.legends[0].get_texts()]


def test_every_method_appears_once_in_one_legend_under_the_panels() -> None:
    fig = plot.figure(_with_zoo_and_masks())
    assert len(fig.axes) == 3
    assert _legend(fig) == [
        "BudgetNet",
        "static mask per budget",
        "static full graph",
        "zoo: resnet8",
    ]
    assert all(ax.get_legend() is None for ax in fig.axes)  # no legend over the data


def test_the_count_table_is_named_as_such() -> None:
    """bench --count-table: the allocator's count masks, not searched static masks."""
    result = _with_zoo_and_masks()
    for row in result.rows:
        if row.kind == "static-mask":
            row.name = "count"
    legend = _legend(plot.figure(result))
    assert "count mask per budget" in legend
    assert "static mask per budget" not in legend


def test_points_on_top_of_each_other_share_one_label() -> None:
    """A saturated allocator runs c = 0.5 to 1 alike: one "0.5-1", not labels written
    over each other; budgets that do not follow each other are listed."""
    result = _with_zoo_and_masks()
    one_point = result.rows[0].latency
    away = LatencyStats(0.2, 0.3, 0.3, 0.4, 0.4, 0.4)
    for row in result.rows:
        if row.kind == "budget" and row.batch == 1:
            row.latency, row.accuracy = one_point, 0.9
    for c, latency in ((0.75, one_point), (0.25, away)):
        result.rows.append(BenchRow("budget", 1, c, latency, 1e3, c, c, 0.9 if c > 0.5 else 0.6))

    def labels() -> list[str]:
        front = plot.figure(result).axes[2]
        return sorted(t.get_text() for t in front.texts if t.get_color() == plot.BUDGETNET)

    assert labels() == ["0.25", "0.5-1"]
    moved = next(r for r in result.rows if r.budget == 0.75 and r.kind == "budget")
    moved.latency, moved.accuracy = away, 0.6  # onto the point of 0.25
    assert labels() == ["0.25, 0.75", "0.5, 1"]  # not "0.5-1": 0.75 lies elsewhere


def test_a_mode_measured_beside_the_main_one_is_its_own_series() -> None:
    """bench --also-mode greedy on an allocate artifact: both named, in every panel."""
    result = _with_zoo_and_masks()
    result.settings.update(mode="allocate", also_modes=["greedy"])
    stats = LatencyStats(0.7, 0.8, 0.8, 0.9, 1.0, 1.1)
    for n in (1, 8):
        for c in (0.5, 1.0):
            result.rows.append(BenchRow("mode", n, c, stats, 1e3, c, c, 0.6, name="greedy"))
    fig = plot.figure(result)
    legend = _legend(fig)
    assert legend[:2] == ["BudgetNet, allocate", "BudgetNet, greedy"]
    for ax in fig.axes:
        assert "BudgetNet, greedy" in [line.get_label() for line in ax.get_lines()]
    assert "mode allocate (and greedy)" in fig._suptitle.get_text()


def test_a_method_without_rows_is_not_in_the_legend() -> None:
    assert "static mask per budget" not in _legend(plot.figure(_result()))


def test_a_method_keeps_its_colour_in_every_panel() -> None:
    fig = plot.figure(_with_zoo_and_masks())
    colours: dict[str, set[str]] = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            if not line.get_label().startswith("_"):
                colours.setdefault(line.get_label(), set()).add(line.get_color())
    zoo = colours["zoo: resnet8"]
    assert len(zoo) == 1
    assert zoo != colours["static full graph"]
    assert all(len(c) == 1 for c in colours.values()), colours


def test_accuracy_is_in_percent_and_every_point_is_inside_the_front() -> None:
    fig = plot.figure(_with_zoo_and_masks())
    front = fig.axes[2]
    assert front.get_ylabel() == "accuracy (%)"
    low, high = front.get_ylim()
    points = [y for line in front.get_lines() for y in line.get_ydata()]
    assert min(points) == pytest.approx(35.0)  # static mask at c = 0.5: 0.7 * 0.5
    assert low < min(points)
    assert high > max(points)


def test_the_title_says_what_was_measured_where() -> None:
    text = plot.title(_with_zoo_and_masks())
    for part in (
        "resnet56",
        "mode allocate",
        "fp32",
        "cifar10 (100 images)",
        "Test CPU",
        "onnxruntime",
        "2 thread(s)",
    ):
        assert part in text


@pytest.mark.parametrize("labelled", [True, False])
def test_the_png_is_drawn_without_touching_the_callers_backend(
    tmp_path: Path, labelled: bool
) -> None:
    import matplotlib
    from matplotlib.image import imread

    backend = matplotlib.get_backend()
    path = plot.write_plot(_with_zoo_and_masks(labelled), tmp_path / "bench.png")
    pixels = imread(path)
    width = 16.5 if labelled else 11.0  # the front is drawn only with labels
    assert pixels.shape[:2] == (round(5.2 * 120), round(width * 120))
    assert pixels[..., :3].std() > 0.05  # something is drawn
    assert matplotlib.get_backend() == backend


def test_without_matplotlib_it_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] == "matplotlib"] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if never installed
    with pytest.raises(BackendError, match=r"pip install 'budget-edge\[plot\]'"):
        plot.write_plot(_result(), tmp_path / "bench.png")
    assert not (tmp_path / "bench.png").exists()
