"""Train the fair comparison's networks: the zoo and the sandwich ResNet-56, one recipe.

Every network gets the same recipe (SGD 0.1, momentum 0.9, weight decay 5e-4,
batch 128, one epoch of linear warmup then a cosine per step, zero-initialised
residual branches, crop and flip, bf16 autocast where the CPU has it and fp32
where it does not (`--precision auto`; history.json says which epoch ran in which),
the same 5,000-image validation split); the sandwich run adds sandwich training and nothing else.
A second sandwich run starts from the plain ResNet-56's weights once that has finished
(`pretrain --init`) and trains 10 epochs at lr 0.01: Once-for-All's order, the full
network first and its sub-networks after; a `--queue sandwich` worker skips it until
then, or with `--wait` waits for it.
(Without zero-initialised residuals the sandwich ResNet-56 stayed near chance
for its first 160 steps: its full network was at 17% where plain ResNet-56
was at 32%.)
Each run lives in RESULTS/<name>/ and is resumed where it stopped, so the
queue can be killed at any time and started again (across sessions too):

    python benchmarks/fair_training.py --queue zoo        # one core
    python benchmarks/fair_training.py --queue sandwich   # the other core

A run that has finished all its epochs is skipped, and so is a run another
worker is training (each run holds a lock on RESULTS/<name>/.train.lock while it
trains), so a second `--queue zoo` on a free core takes the next run. `--list`
shows how far each run is.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results" / "fair-fmnist"

RECIPE = [
    "--data", "fashion-mnist", "--batch-size", "128", "--lr", "0.1", "--momentum", "0.9",
    "--weight-decay", "5e-4", "--precision", "auto", "--val-size", "5000", "--threads", "1",
    "--warmup-epochs", "1", "--zero-init-residual",
]  # fmt: skip

EPOCHS = 30

# name -> extra options, in the order each queue trains them (most needed first).
QUEUES: dict[str, dict[str, list[str]]] = {
    "zoo": {
        "resnet20-s0": ["--backbone", "resnet20", "--seed", "0"],
        "resnet8-s0": ["--backbone", "resnet8", "--seed", "0"],
        "resnet14-s0": ["--backbone", "resnet14", "--seed", "0"],
        "resnet32-s0": ["--backbone", "resnet32", "--seed", "0"],
        # The seeds of the cheap members next: the zoo's mean and spread need them.
        "resnet8-s1": ["--backbone", "resnet8", "--seed", "1"],
        "resnet8-s2": ["--backbone", "resnet8", "--seed", "2"],
        "resnet14-s1": ["--backbone", "resnet14", "--seed", "1"],
        # Trained alone: the sandwich ResNet-56's full network against the same depth.
        # The sandwich (30 epochs) ended 1.1 points under ResNet-20 on validation: is
        # the recipe too short for 27 blocks, or is it the sandwich? Moved behind the
        # seeds when sessions came with AVX2-only CPUs (fp32: about 6 core-hours), then
        # before the last seed: the sandwich from its weights waits for it.
        "resnet56-s0": ["--backbone", "resnet56", "--seed", "0"],
        "resnet14-s2": ["--backbone", "resnet14", "--seed", "2"],
        # Twice the epochs: does the recipe converge? (under 0.3 points on validation)
        "resnet20-s0-60ep": ["--backbone", "resnet20", "--seed", "0", "--epochs", "60"],
        # ResNet-20's seeds last: the issue asks them "if time allows".
        "resnet20-s1": ["--backbone", "resnet20", "--seed", "1"],
        "resnet20-s2": ["--backbone", "resnet20", "--seed", "2"],
    },
    "sandwich": {
        "sandwich-resnet56-s0": ["--backbone", "resnet56", "--seed", "0", "--sandwich"],
        # The plain networks showed depth stops paying at ResNet-20 on Fashion-MNIST
        # (depth/): an adaptive ResNet-20 whose sub-networks (ResNet-8's and 14's shapes)
        # matched those networks trained alone would be the zoo in one network. Its
        # sandwich from the plain ResNet-20's weights, the same way as ResNet-56's below;
        # compute: 30 plain epochs (3 ResNet-8 epochs each) + 10 sandwich epochs (about
        # 7.5 each) = 165. First: a quarter of ResNet-56's cost.
        "sandwich-resnet20-from-plain": [
            "--backbone",
            "resnet20",
            "--seed",
            "0",
            "--sandwich",
            "--init",
            "{results}/resnet20-s0/best.pt",
            "--epochs",
            "10",
            "--lr",
            "0.01",
        ],  # fmt: skip
        # Once-for-All's order: the plain ResNet-56 first, then sandwich training from its
        # weights at a tenth of the learning rate. The sandwich from scratch underfit (94.1%
        # on its training images in its last epoch against ResNet-20's 95.5%); compute:
        # 30 plain epochs (9 ResNet-8 epochs each) + 10 sandwich epochs (19.5 each) = 465,
        # under the zoo's 510.
        "sandwich-resnet56-from-plain": [
            "--backbone",
            "resnet56",
            "--seed",
            "0",
            "--sandwich",
            "--init",
            "{results}/resnet56-s0/best.pt",
            "--epochs",
            "10",
            "--lr",
            "0.01",
        ],  # fmt: skip
    },
}

# A run that starts from another's weights waits until that run has finished.
NEEDS = {
    "sandwich-resnet20-from-plain": "resnet20-s0",
    "sandwich-resnet56-from-plain": "resnet56-s0",
}


def epochs_of(options: list[str]) -> int:
    return int(options[options.index("--epochs") + 1]) if "--epochs" in options else EPOCHS


def progress(out: Path) -> int:
    """Epochs finished in the run folder (0 when it has not started)."""
    history = out / "history.json"
    if not history.is_file():
        return 0
    return len(json.loads(history.read_text())["epochs"])


def precisions(history: dict[str, Any]) -> str:
    """Which precision a run's epochs ran in, in turn: "bf16 x9 + fp32 x21". Epochs from
    before precisions were recorded ran in the run's (a resume fills them in)."""
    ran = (e.get("precision") or history["config"]["precision"] for e in history["epochs"])
    return " + ".join(f"{p} x{len(list(group))}" for p, group in groupby(ran))


def progress_table(results: Path = RESULTS) -> str:
    """Epochs done, and the numbers of each run's best epoch on validation (what best.pt
    holds; the test set is only reported)."""
    lines = [
        "| run | epochs | best epoch (val) | its val acc | its val acc, smallest "
        "| its test acc (reported) | train min | precision |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for runs in QUEUES.values():
        for name, options in runs.items():
            history = results / name / "history.json"
            if not history.is_file():
                lines.append(f"| {name} | 0/{epochs_of(options)} | - | - | - | - | - | - |")
                continue
            data = json.loads(history.read_text())
            meta = data["meta"]
            best = data["epochs"][meta["best_epoch"] - 1]  # what best.pt holds
            smallest = best.get("val_accuracy_smallest")
            lines.append(
                f"| {name} | {len(data['epochs'])}/{epochs_of(options)} | {meta['best_epoch']} | "
                f"{best['val_accuracy']:.2%} | {'-' if smallest is None else f'{smallest:.2%}'} | "
                f"{best['test_accuracy']:.2%} | {meta['train_wall_s'] / 60:.0f} | "
                f"{precisions(data)} |"
            )
    return "\n".join([*lines, "", *zoo_summary(results)]) + "\n"


SEEDED = re.compile(r"^resnet(\d+)-s\d+$")  # a zoo seed under the recipe (not the 60-epoch run)


def zoo_summary(results: Path = RESULTS) -> list[str]:
    """The zoo by depth over its finished seeds: mean, standard deviation, range (the
    best epoch on validation of each; the test set reported)."""
    by_depth: dict[int, list[tuple[float, float]]] = {}
    for name, options in QUEUES["zoo"].items():
        depth = SEEDED.match(name)
        if depth is None or progress(results / name) < epochs_of(options):
            continue
        data = json.loads((results / name / "history.json").read_text())
        best = data["epochs"][data["meta"]["best_epoch"] - 1]
        by_depth.setdefault(int(depth[1]), []).append((best["val_accuracy"], best["test_accuracy"]))
    lines = [
        "| zoo member | finished seeds | val acc, mean (sd) | test acc, mean (sd) | test range |",
        "|---|---:|---:|---:|---:|",
    ]
    for depth in sorted(by_depth):
        val, test = (np.array(column) for column in zip(*by_depth[depth], strict=True))
        sd = lambda x: f"{x.std(ddof=1):.2%}" if len(x) > 1 else "-"  # noqa: E731
        lines.append(
            f"| ResNet-{depth} | {len(val)} | {val.mean():.2%} ({sd(val)}) | "
            f"{test.mean():.2%} ({sd(test)}) | {test.min():.2%}-{test.max():.2%} |"
        )
    return lines


@dataclass(frozen=True)
class Launch:
    """How and where a worker runs `pretrain`: run options only, never the recipe."""

    executable: tuple[str, ...] = ("budget-edge",)
    results: Path = RESULTS
    channels_last: bool = False  # a memory layout: the same arithmetic, faster or not
    threads: int = 1  # a queue alone on the machine may take both cores
    extra: tuple[str, ...] = ()  # --device cuda, --data-dir PATH, --workers N


def command(name: str, options: list[str], launch: Launch = Launch()) -> list[str]:
    out = launch.results / name
    words = [*launch.executable, "pretrain", *RECIPE, "--out", str(out)]
    if launch.channels_last:
        words.append("--channels-last")
    words[words.index("--threads") + 1] = str(launch.threads)
    if "--epochs" not in options:
        words += ["--epochs", str(EPOCHS)]
    words += [word.format(results=launch.results) for word in options] + [*launch.extra]
    if (out / "last.pt").is_file():
        words.append("--resume")
    return words


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[bool]:
    """Hold the run's lock while training it; yields False when another worker holds it."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".train.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queue", choices=sorted(QUEUES), help="the queue to train")
    parser.add_argument("--list", action="store_true", help="show how far every run is")
    parser.add_argument(
        "--progress-md", type=Path, help="write how far every run is as a Markdown table"
    )
    parser.add_argument(
        "--budget-edge",
        default=str(Path(sys.executable).parent / "budget-edge"),
        help="the budget-edge command, split as the shell would (default: the executable "
        "beside this Python; on a machine without it: 'python -m budget_edge.cli')",
    )
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help=f"where the runs live (default {RESULTS})"
    )
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="train in the channels-last layout (fp32 ResNet-32 trained faster in it on an "
        "AVX2-only EPYC, ResNet-20 not: benchmarks/results/pretrain-throughput-avx2/)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per run (default 1: one core)"
    )
    parser.add_argument("--device", help="pretrain's --device (default: pretrain's own)")
    parser.add_argument("--data-dir", help="where Fashion-MNIST's four files are")
    parser.add_argument("--workers", type=int, help="pretrain's data-loading --workers")
    parser.add_argument(
        "--wait",
        action="store_true",
        help="a run that starts from another's weights waits for it to finish (another "
        "worker trains it) instead of being skipped",
    )
    args = parser.parse_args()
    if args.progress_md:
        args.progress_md.write_text(progress_table(args.results))
        return 0
    if args.list or not args.queue:
        for queue, runs in QUEUES.items():
            for name, options in runs.items():
                done = progress(args.results / name)
                print(f"{queue:9s} {name:28s} {done}/{epochs_of(options)}")
        return 0
    extra = [
        word
        for flag, value in (("--device", args.device), ("--data-dir", args.data_dir))
        if value is not None
        for word in (flag, value)
    ]
    if args.workers is not None:
        extra += ["--workers", str(args.workers)]
    launch = Launch(
        tuple(shlex.split(args.budget_edge)),
        args.results,
        args.channels_last,
        args.threads,
        tuple(extra),
    )
    return train_queue(args.queue, launch, wait=args.wait)


def train_queue(queue: str, launch: Launch, wait: bool = False, poll_s: float = 30) -> int:
    """Train every unfinished run of the queue that no other worker holds, in order; a run
    that needs another's weights is skipped until that one has finished, or with `wait`
    waited for."""
    every_run = {**QUEUES["zoo"], **QUEUES["sandwich"]}
    for name, options in QUEUES[queue].items():
        if progress(launch.results / name) >= epochs_of(options):
            continue
        needed = NEEDS.get(name)
        if needed and progress(launch.results / needed) < epochs_of(every_run[needed]):
            print(f"{name}: waits for {needed} to finish", flush=True)
            if not wait:
                continue
            while progress(launch.results / needed) < epochs_of(every_run[needed]):
                time.sleep(poll_s)
        with run_lock(launch.results / name) as mine:
            if not mine:
                print(f"{name}: another worker is training it, next run", flush=True)
                continue
            words = command(name, options, launch)
            print(" ".join(words), flush=True)
            subprocess.run(words, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
