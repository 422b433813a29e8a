"""`budget-edge demo`: the whole pipeline on Fashion-MNIST, offline.

Each stage is the real subcommand, called in-process with the arguments a user
would type, so the demo shows exactly what the tool does. A stage whose output
already exists is skipped, and a stage that stopped half-way resumes: running
`make demo` again after a crash loses nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import click

from budget_edge.errors import BudgetEdgeError, ConfigError

DEMO_BUDGETS = "0.25,0.5,0.75,1.0"


@dataclass(frozen=True)
class Preset:
    """How much work each stage does."""

    pretrain_epochs: int
    limit_train: int | None  # pretraining images (None: all 60000)
    val_size: int  # the validation split, held out of all 60000 before the limit
    drop_prob: float
    train_preset: str
    bench_iterations: int
    train_extra: tuple[str, ...] = ()
    allocate_extra: tuple[str, ...] = ()
    evaluate_extra: tuple[str, ...] = ()
    export_extra: tuple[str, ...] = ()
    quantize_extra: tuple[str, ...] = ()
    bench_extra: tuple[str, ...] = ()


PRESETS = {
    # Sized to finish in about 15 minutes on a 2-core CPU.
    # The light extractor: resnet8 costs 30% of ResNet-20 and made the runtime slower
    # than the static graph at c >= 0.5 (benchmarks/results/bench-resnet20-light/).
    "demo": Preset(
        pretrain_epochs=3,
        limit_train=20000,
        val_size=2000,
        drop_prob=0.1,
        train_preset="demo",
        bench_iterations=50,
        train_extra=("--extractor", "light"),
        allocate_extra=("--limit-train", "20000", "--calib-images", "2000"),
        evaluate_extra=("--val-size", "2000"),
        # The defaults make the artifact run mode allocate with the allocator's count
        # masks as whole graphs: one image is two graph calls (runtime/count_plan.py).
        export_extra=("--static-masks", "fashion-mnist", "--static-search-images", "2000"),
    ),
    # The full schedule: the committed results under benchmarks/results/.
    "paper": Preset(
        pretrain_epochs=15,
        limit_train=None,
        val_size=5000,
        drop_prob=0.1,
        train_preset="paper",
        bench_iterations=200,
    ),
    # Seconds per stage: checks that the stages fit together (used by the tests).
    "smoke": Preset(
        pretrain_epochs=1,
        limit_train=256,
        val_size=128,
        drop_prob=0.1,
        train_preset="demo",
        bench_iterations=3,
        train_extra=(
            "--limit-train",
            "256",
            "--eval-images",
            "128",
            "--curriculum-epochs",
            "1",
            "--finetune-epochs",
            "1",
            "--extractor",
            "light",
        ),
        allocate_extra=("--limit-train", "256", "--calib-images", "64", "--epochs", "1"),
        export_extra=("--static-masks", "fashion-mnist", "--static-search-images", "64"),
        quantize_extra=("--calib-images", "64"),
        evaluate_extra=("--limit", "128", "--val-size", "256", "--latency-images", "2"),
        bench_extra=("--eval-images", "128", "--warmup", "1"),
    ),
}


@dataclass(frozen=True)
class Stage:
    name: str
    done_marker: Path  # the stage's final output; present means done
    resume_marker: Path | None  # present means a half-done run to resume
    args: list[str]


def plan(out: Path, data_dir: str | None, preset: Preset, backbone: str) -> list[Stage]:
    """The stages, in order, with the exact command-line arguments of each."""
    data = ["--data", "fashion-mnist"] + (["--data-dir", data_dir] if data_dir else [])
    pre, agent, art, bench = out / "pretrain", out / "budgetnet", out / "artifact", out / "bench"
    allocated = agent / "allocated.pt"
    sweep = out / "evaluate"
    limit = ["--limit-train", str(preset.limit_train)] if preset.limit_train else []
    return [
        Stage(
            "pretrain",
            pre / "done.json",
            pre / "last.pt",
            [
                "pretrain",
                "--backbone",
                backbone,
                *data,
                "--epochs",
                str(preset.pretrain_epochs),
                "--drop-prob",
                str(preset.drop_prob),
                "--val-size",
                str(preset.val_size),
                *limit,
                "--out",
                str(pre),
            ],
        ),
        Stage(
            "train",
            agent / "budgetnet.pt",
            agent / "last.pt",
            [
                "train",
                "--checkpoint",
                str(pre / "best.pt"),
                *data,
                "--preset",
                preset.train_preset,
                *preset.train_extra,
                "--out",
                str(agent),
            ],
        ),
        # How many of the agent's components each image runs (mode allocate).
        Stage(
            "allocate",
            allocated,
            None,
            [
                "allocate",
                str(agent / "budgetnet.pt"),
                *data,
                *preset.allocate_extra,
                "--out",
                str(allocated),
            ],
        ),
        # The agent against random masks, static orders and the static front, in PyTorch.
        Stage(
            "evaluate",
            sweep / "sweep.json",
            None,
            [
                "evaluate",
                str(allocated),
                *data,
                "--budgets",
                DEMO_BUDGETS,
                *preset.evaluate_extra,
                "--out",
                str(sweep),
            ],
        ),
        Stage(
            "export",
            art / "manifest.json",
            None,
            ["export", str(allocated), "--out", str(art), *preset.export_extra],
        ),
        # int8 beside fp32, calibrated on the paths the agent takes (docs/quantize.md).
        Stage(
            "quantize",
            out / "quantize.json",
            None,
            [
                "quantize",
                str(art),
                "--precision",
                "int8",
                "--calib-data",
                "fashion-mnist",
                *preset.quantize_extra,
            ],
        ),
        Stage(
            "bench",
            bench / "bench.json",
            None,
            [
                "bench",
                str(art),
                *data,
                "--budgets",
                DEMO_BUDGETS,
                "--batch",
                "1",
                "--precision",
                "fp32,int8",
                "--iterations",
                str(preset.bench_iterations),
                *preset.bench_extra,
                "--json",
                str(bench / "bench.json"),
                "--md",
                str(bench / "bench.md"),
                "--csv",
                str(bench / "bench.csv"),
                "--plot",
                str(bench / "bench.png"),
            ],
        ),
    ]


def _still_done(stage: Stage) -> bool:
    """A re-export drops the artifact's int8 set, so quantize's marker alone is not enough."""
    if stage.name != "quantize":
        return True
    from budget_edge.runtime.manifest import Manifest

    try:
        return "int8" in Manifest.load(Path(stage.args[1])).precisions
    except BudgetEdgeError:
        return False


def run_stage(stage: Stage) -> None:
    """Run one subcommand in-process; user errors propagate to the CLI's handler."""
    from budget_edge.cli import cli

    args = list(stage.args)
    if stage.resume_marker is not None and stage.resume_marker.exists():
        args.append("--resume")
    click.secho(f"\n== {stage.name}: budget-edge {' '.join(args)}", bold=True)
    start = time.perf_counter()
    cli.main(args=args, prog_name="budget-edge", standalone_mode=False)
    click.echo(f"== {stage.name} took {time.perf_counter() - start:.0f} s")


@click.command("demo")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("runs/demo"),
    show_default=True,
    help="Folder for every stage's output.",
)
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    default="demo",
    show_default=True,
    help="demo: about 15 minutes on 2 cores; paper: the full schedule; "
    "smoke: tiny stages (minutes in all), to check the wiring.",
)
@click.option(
    "--backbone",
    default="resnet20",
    show_default=True,
    help="Backbone to pretrain (any CIFAR ResNet or ResNeXt name).",
)
@click.option(
    "--data-dir", help="Fashion-MNIST folder (default /usr/share/datasets/fashion-mnist)."
)
@click.option("--fresh", is_flag=True, help="Start over: ignore what earlier runs left in --out.")
def command(out: Path, preset: str, backbone: str, data_dir: str | None, fresh: bool) -> None:
    """The whole pipeline on Fashion-MNIST with no network: pretrain (with a validation
    split), train the agent, allocate (the depth router), evaluate, export, quantize to
    int8, and bench.

    Finished stages are skipped and a stage that was interrupted resumes, so
    running the demo again continues where it stopped. The last stage prints
    accuracy, usage, FLOPs share and latency per budget next to the static
    model, and writes OUT/bench/bench.png.

    \b
    Example:
      budget-edge demo --out runs/demo
      budget-edge demo --preset paper --out runs/paper
    """
    stages = plan(out, data_dir, PRESETS[preset], backbone)
    if fresh and out.exists():
        if not (out / "demo.json").exists() and any(out.iterdir()):
            raise ConfigError(f"{out} is not a demo folder (no demo.json); choose another --out")
        import shutil

        shutil.rmtree(out)
    (out / "bench").mkdir(parents=True, exist_ok=True)  # bench writes its reports here
    (out / "demo.json").write_text(f'{{"preset": "{preset}", "backbone": "{backbone}"}}\n')
    start = time.perf_counter()
    for stage in stages:
        if stage.done_marker.exists() and _still_done(stage):
            click.echo(f"== {stage.name}: done already ({stage.done_marker}), skipped")
            continue
        run_stage(stage)
        if stage.name in ("pretrain", "quantize"):  # their outputs do not say "done"
            stage.done_marker.write_text('{"done": true}\n')
    click.echo(
        f"\ndemo finished in {time.perf_counter() - start:.0f} s; "
        f"plot: {out / 'bench' / 'bench.png'}, table: {out / 'bench' / 'bench.md'}"
    )
