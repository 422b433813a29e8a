"""Choose Eq. 4's gamma and omega again, on the validation split (issue 22).

The defaults gamma = omega = 1 were chosen from the agents' usage on 2,000 test
images, before checkpoints had a validation split (docs/budgetnet.md). This
makes the same choice the fair way: one agent per candidate on a backbone with
a validation split (the fair ResNet-20, `fair-fmnist/resnet20-s0/best.pt`),
on the schedule of the original choice (30,000 training images, 5 curriculum
and 5 joint fine-tuning epochs), each read from its own per-epoch check on the
first 2,000 validation images (`history.json`: deterministic usage at
c = 0.25, 0.5, 0.75 and 1 after the last epoch). The rule is the original's,
written down: usage at or below every budget (within 0.005), and of those the
closest to it (the smallest total shortfall); if none stays under, the one
that overspends least. Like the original, it reads usage only, no labels.

Each candidate trains in its own folder; the script skips a finished one (its
history.json has every epoch: the committed histories rebuild the choice) and
resumes a stopped one (`train --resume`), so it can be killed and run again:

    python benchmarks/investigations/reward_weights.py \\
        benchmarks/results/fair-fmnist/resnet20-s0/best.pt \\
        --out benchmarks/results/fair-fmnist/reward-weights

Writes choice.json and choice.md in --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from budget_edge.files import atomic_write_text
from budget_edge.runtime.machine import machine_info

# (gamma, omega): the four the original choice compared (docs/budgetnet.md).
CANDIDATES = [(1.0, 0.5), (0.5, 0.5), (0.1, 1.0), (1.0, 1.0)]
SCHEDULE = [
    "--limit-train",
    "30000",
    "--curriculum-epochs",
    "5",
    "--finetune-epochs",
    "5",
    "--eval-images",
    "2000",
]
# Usage this far over a budget still counts as within it: a 9-block agent's usage
# moves in steps of 1/9, its mean over 2,000 images by far less.
OVER = 0.005


EPOCHS = 10  # SCHEDULE's curriculum and fine-tuning epochs


def finished(run: Path) -> bool:
    """Its history has every epoch: the committed histories (the weights stay out of the
    repository) are enough to rebuild the choice without training again."""
    history = run / "history.json"
    return history.is_file() and len(json.loads(history.read_text())) >= EPOCHS


def folder_of(out: Path, gamma: float, omega: float) -> Path:
    return out / f"gamma{gamma:g}-omega{omega:g}"


def train_command(checkpoint: Path, run: Path, gamma: float, omega: float) -> list[str]:
    """Train one candidate, or resume it where it stopped (its own settings)."""
    cli = [sys.executable, "-m", "budget_edge.cli", "train"]
    speed = ["--precision", "auto", "--threads", "1"]
    if (run / "last.pt").exists():
        return [*cli, "--out", str(run), "--resume", *speed]
    weights = ["--gamma", f"{gamma:g}", "--omega", f"{omega:g}"]
    return [*cli, "--checkpoint", str(checkpoint), *SCHEDULE, *weights, *speed, "--out", str(run)]


def final_check(run: Path) -> dict[float, dict[str, float]]:
    """{budget: {"usage", "accuracy"}} of the last epoch's check on validation images."""
    last = json.loads((run / "history.json").read_text())[-1]
    return {float(c): dict(v) for c, v in last["validation"].items()}


def choose(usages: dict[str, dict[float, float]]) -> tuple[str, str]:
    """The candidate the rule picks from {name: {budget: usage}}, and why."""
    under = {
        name: sum(c - u for c, u in usage.items())
        for name, usage in usages.items()
        if all(u <= c + OVER for c, u in usage.items())
    }
    if under:
        name = min(under, key=under.__getitem__)
        return name, f"at or below every budget, closest to it (shortfall {under[name]:.3f})"
    over = {name: max(u - c for c, u in usage.items()) for name, usage in usages.items()}
    name = min(over, key=over.__getitem__)
    return name, f"every candidate overspends; this one least ({over[name]:+.3f})"


def report(out: Path, checks: dict[str, dict[float, dict[str, float]]]) -> dict[str, Any]:
    chosen, why = choose({n: {c: v["usage"] for c, v in ch.items()} for n, ch in checks.items()})
    budgets = sorted(next(iter(checks.values())))
    lines = [
        "# gamma and omega, chosen on the validation split",
        "",
        f"Machine: {machine_info()['cpu']}. Each agent's last check on the first 2,000 "
        "validation images (deterministic usage; accuracy shown, not used). Rule: usage "
        f"at or below every budget (within {OVER}), then the closest.",
        "",
        "| gamma, omega | usage at c = " + " / ".join(f"{c:g}" for c in budgets) + " | accuracy |",
        "|---|---|---|",
    ]
    for name, check in checks.items():
        usage = " / ".join(f"{check[c]['usage']:.2f}" for c in budgets)
        accuracy = " / ".join(f"{100 * check[c]['accuracy']:.1f}%" for c in budgets)
        mark = " (chosen)" if name == chosen else ""
        lines.append(f"| {name}{mark} | {usage} | {accuracy} |")
    lines += ["", f"Chosen: **{chosen}**: {why}."]
    result = {"chosen": chosen, "why": why, "checks": checks, "machine": machine_info()}
    atomic_write_text(out / "choice.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / "choice.md", "\n".join(lines) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a backbone with a validation split")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    checks = {}
    for gamma, omega in CANDIDATES:
        run = folder_of(args.out, gamma, omega)
        if not finished(run):
            command = train_command(args.checkpoint, run, gamma, omega)
            print(" ".join(command), flush=True)
            if subprocess.run(command).returncode != 0:
                sys.exit(f"training {run.name} failed; run again to resume it")
        checks[f"{gamma:g}, {omega:g}"] = final_check(run)
    result = report(args.out, checks)
    print(f"chosen: {result['chosen']} ({result['why']})")


if __name__ == "__main__":
    main()
