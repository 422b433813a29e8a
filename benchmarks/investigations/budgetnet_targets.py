"""Check a BudgetNet sweep against the training issue's targets; write targets.md and .json.

Reads what `budget-edge evaluate` wrote (sweep.json) and, for the wall time,
the run's history.json (per-epoch "seconds") or --wall-minutes:

    .venv/bin/python benchmarks/investigations/budgetnet_targets.py \\
        benchmarks/results/budgetnet-resnet20-fmnist/sweep.json \\
        --history benchmarks/results/budgetnet-resnet20-fmnist/train-history.json \\
        --pretrained-accuracy 0.936

Targets (on the full test set, against the same backbone unmasked):
- budget honoured: mean over images of |usage - c| <= 0.05 for every c in [0.2, 1.0];
- accuracy at c = 0.5 within 1.5 points of the full model, at c = 0.25 within 5;
- at every c <= 0.75: >= 3 points above random masks of the same usage, and not
  below the static drop order;
- the `paper` preset (pretraining excluded) in at most 2 hours.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

USAGE_TOLERANCE = 0.05
ACCURACY_DROP = {0.5: 0.015, 0.25: 0.05}
RANDOM_MARGIN = 0.03
WALL_LIMIT_MIN = 120.0


def _row_at(rows: list[dict[str, Any]], c: float) -> dict[str, Any] | None:
    return next((r for r in rows if abs(r["budget"] - c) < 1e-6), None)


def budget_checks(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per budget in [0.2, 1.0]: the per-image error and the error of the mean usage."""
    out = []
    for r in rows:
        if not 0.2 - 1e-6 <= r["budget"] <= 1.0 + 1e-6:
            continue
        out.append(
            {
                "budget": r["budget"],
                "usage": r["usage_mean"],
                "mean_abs_error": r["usage_abs_error"],
                "error_of_mean": abs(r["usage_mean"] - r["budget"]),
                "met": r["usage_abs_error"] <= USAGE_TOLERANCE + 1e-9,
            }
        )
    return out


def accuracy_checks(rows: list[dict[str, Any]], full: float) -> list[dict[str, Any]]:
    out = []
    for c, drop in ACCURACY_DROP.items():
        r = _row_at(rows, c)
        if r is None:
            continue
        out.append(
            {
                "budget": c,
                "accuracy": r["accuracy"],
                "full": full,
                "allowed_drop": drop,
                "drop": full - r["accuracy"],
                "met": full - r["accuracy"] <= drop + 1e-9,
            }
        )
    return out


def baseline_checks(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        if r["budget"] > 0.75 + 1e-6:
            continue
        over_random = r["accuracy"] - r["random_accuracy"]
        over_static = r["accuracy"] - r["static_accuracy"]
        out.append(
            {
                "budget": r["budget"],
                "accuracy": r["accuracy"],
                "usage": r["usage_mean"],
                "random": r["random_accuracy"],
                "static": r["static_accuracy"],
                "over_random": over_random,
                "over_static": over_static,
                "met": over_random >= RANDOM_MARGIN - 1e-9 and over_static >= -1e-9,
            }
        )
    return out


def wall_minutes(history: Path | None, given: float | None) -> float | None:
    if given is not None:
        return given
    if history is None:
        return None
    epochs = json.loads(history.read_text())
    if not all("seconds" in e for e in epochs):
        return None
    return sum(e["seconds"] for e in epochs) / 60.0


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Training targets: `{report['sweep']}`", ""]
    lines += [
        "## Budget honoured (mean over images of |usage - c| <= 0.05, c in [0.2, 1])",
        "",
        "| c | mean usage | mean abs error | error of the mean | |",
        "|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {r['budget']:.2f} | {r['usage']:.3f} | {r['mean_abs_error']:.3f} | "
        f"{r['error_of_mean']:.3f} | {_mark(r['met'])} |"
        for r in report["budget"]
    ]
    met = sum(r["met"] for r in report["budget"])
    lines += ["", f"{met} of {len(report['budget'])} budgets met.", ""]
    lines += [
        "## Accuracy against the full model",
        "",
        "| c | accuracy | full model | drop | allowed | |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {r['budget']:.2f} | {_pct(r['accuracy'])} | {_pct(r['full'])} | "
        f"{100 * r['drop']:.2f} pts | {100 * r['allowed_drop']:.1f} pts | "
        f"{_mark(r['met'])} |"
        for r in report["accuracy"]
    ]
    if report.get("pretrained_accuracy") is not None:
        lines += [
            "",
            f"Full model = the fine-tuned backbone unmasked ({_pct(report['full'])}); "
            f"the pretrained backbone before fine-tuning: "
            f"{_pct(report['pretrained_accuracy'])}.",
        ]
    lines += [
        "",
        "## Against the baselines at the same usage (c <= 0.75)",
        "",
        "| c | usage | agent | random | static order | over random | over static | |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {r['budget']:.2f} | {r['usage']:.3f} | {_pct(r['accuracy'])} | "
        f"{_pct(r['random'])} | {_pct(r['static'])} | {100 * r['over_random']:+.2f} | "
        f"{100 * r['over_static']:+.2f} | {_mark(r['met'])} |"
        for r in report["baselines"]
    ]
    met = sum(r["met"] for r in report["baselines"])
    lines += ["", f"{met} of {len(report['baselines'])} budgets met.", ""]
    wall = report.get("wall_minutes")
    if wall is not None:
        lines += [
            "## Wall time",
            "",
            f"{wall:.1f} min of training (pretraining excluded): "
            f"{_mark(wall <= WALL_LIMIT_MIN)} (limit {WALL_LIMIT_MIN:.0f} min).",
            "",
        ]
    return "\n".join(lines)


def check(
    sweep_path: Path,
    history: Path | None = None,
    wall: float | None = None,
    pretrained: float | None = None,
) -> dict[str, Any]:
    sweep = json.loads(sweep_path.read_text())
    rows, full = sweep["rows"], sweep["full_model"]["accuracy"]
    return {
        "sweep": str(sweep_path),
        "full": full,
        "pretrained_accuracy": pretrained,
        "budget": budget_checks(rows),
        "accuracy": accuracy_checks(rows, full),
        "baselines": baseline_checks(rows),
        "wall_minutes": wall_minutes(history, wall),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", type=Path, help="sweep.json from budget-edge evaluate")
    ap.add_argument("--history", type=Path, help="the run's history.json (epoch seconds)")
    ap.add_argument("--wall-minutes", type=float, help="training wall time, when measured apart")
    ap.add_argument("--pretrained-accuracy", type=float, help="the backbone before fine-tuning")
    ap.add_argument("--out", type=Path, help="folder for targets.md/.json (default: the sweep's)")
    args = ap.parse_args()
    report = check(args.sweep, args.history, args.wall_minutes, args.pretrained_accuracy)
    out = args.out or args.sweep.parent
    (out / "targets.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (out / "targets.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
