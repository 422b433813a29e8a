"""Figures for reports, without pyplot's global state.

A ``matplotlib.figure.Figure`` made directly draws to a file with no backend chosen and
no figure manager to close: importing the toolkit never switches a caller's backend (as
``matplotlib.use("Agg")`` did), and figures are freed like any other object. Torch-free.
"""

from __future__ import annotations

from typing import IO, Any

from budget_edge.errors import BackendError


def new_figure(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float]) -> tuple[Any, Any]:
    """(figure, axes) as ``pyplot.subplots`` gives them; BackendError without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise BackendError(
            f"plots need matplotlib ({exc}): pip install 'budget-edge[plot]', or drop the "
            "plot option"
        ) from exc
    figure = Figure(figsize=figsize)
    return figure, figure.subplots(nrows, ncols)


def save_png(
    figure: Any,
    handle: IO[bytes],
    dpi: int = 120,
    rect: tuple[float, float, float, float] = (0, 0, 1, 1),
) -> None:
    """Lay the figure out inside `rect` (room for a legend outside it) and write it as PNG
    to an open binary file."""
    figure.tight_layout(rect=rect)
    figure.savefig(handle, format="png", dpi=dpi)
