"""benchmarks/device_check.py --dry-run: the one-run GPU check works as a script here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "device_check.py"


# About 30 s of export and checks in a subprocess: `make test-slow`, run before a lent
# GPU's device check, not every `make test`.
@pytest.mark.slow_job
def test_the_device_check_runs_dry_and_says_what_it_skipped(tmp_path: Path) -> None:
    out = tmp_path / "dry"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(out.with_suffix(".json").read_text())
    stages = report["stages"]
    assert list(stages) == [
        "export", "onnxruntime-cpu", "tensorrt", "onnxruntime-cuda", "torch", "gpu-data-path"
    ]  # fmt: skip
    assert stages["tensorrt"] == {"status": "skipped", "why": "dry run", "seconds": 0.0}
    # The reference agrees with itself in every precision, at batch 1, 8 and 9 (one above
    # the engines' maximum), for explicit masks and budgets in the artifact's own mode.
    rows = stages["onnxruntime-cpu"]["rows"]
    assert {r["precision"] for r in rows} == {"fp32", "fp16", "int8"}
    assert {r["batch"] for r in rows} == {1, 8, 9}
    assert all(r["ok"] and r["same_masks"] for r in rows)
    # Budgets run different, non-empty rows of the count table (1, 2 and 3 components of
    # ResNet-8's 3 per image), and the masks case runs two masks per batch.
    per_image = {r["case"]: r["components_run"] / r["batch"] for r in rows if r["batch"] == 8}
    assert (per_image["budget 0.4"], per_image["budget 0.7"], per_image["budget 1"]) == (1, 2, 3)
    assert {r["distinct_masks"] for r in rows if r["case"] == "masks" and r["batch"] > 1} == {2}
    assert stages["export"]["mode"] == "allocate"  # so budgets at batch 1 take the count plan
    assert stages["torch"]["ok"]
    assert stages["gpu-data-path"]["ok"]
    assert "| tensorrt | skipped |" in out.with_suffix(".md").read_text()
