"""`budget-edge demo --from-scratch`: the pipeline with nothing committed (smoke preset).

A file of its own so that the test runner's workers, which take a file each, run the
two smoke demos side by side (each is about a minute on two cores)."""

from __future__ import annotations

from pathlib import Path

import pytest

from budget_edge.cli import main
from budget_edge.commands import demo

from .test_demo import _check_outputs, needs_fmnist


@needs_fmnist
@pytest.mark.slow
def test_smoke_demo_from_scratch_needs_nothing_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo, "COMMITTED", tmp_path / "absent.pt")
    monkeypatch.setattr(demo, "COMMITTED_ZOO", tmp_path / "absent-zoo.pt")
    out = tmp_path / "demo"
    main(["demo", "--from-scratch", "--preset", "smoke", "--out", str(out)])
    assert (out / "pretrain" / "best.pt").exists()
    assert (out / "pretrain-zoo" / "best.pt").exists()
    _check_outputs(out, "resnet8")
