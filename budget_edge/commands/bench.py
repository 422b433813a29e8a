"""`budget-edge bench`: latency, throughput, usage, FLOPs and accuracy per budget (torch-free)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from budget_edge.commands import command_line
from budget_edge.commands.options import BATCHES, BUDGETS, SEED, BoundedInt, Renamed

if TYPE_CHECKING:
    from budget_edge.bench.measure import BenchSettings


def check_options(params: Mapping[str, Any], environ: Mapping[str, str]) -> None:
    """The rules between bench's options that click cannot state, by their text alone
    (nothing loaded): the command calls it first, and the docs test calls it on every
    documented `budget-edge bench` line."""
    from budget_edge.bench.measure import check_search_spec, parse_precisions
    from budget_edge.errors import ConfigError

    settings_of(params).check()
    parse_precisions(params["precision_text"])
    if params["static_search"]:
        check_search_spec(params["data_spec"], params["static_search"])
        if params["count_table"]:
            raise ConfigError(
                "--count-table compares with the allocator's count masks, "
                "--static-search-images with searched ones: give one of them"
            )


def settings_of(params: Mapping[str, Any]) -> BenchSettings:
    """The BenchSettings of the command's options."""
    from budget_edge.bench.measure import BenchSettings

    return BenchSettings(
        budgets=params["budgets"],
        batches=params["batches"],
        warmup=params["warmup"],
        iterations=params["iterations"],
        mode=params["mode"],
        also_modes=list(params["also_modes"]),
        cap=None if params["cap"] == "none" else params["cap"],
        seed=params["seed"],
    )


@click.command("bench")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option(
    "--budgets",
    type=BUDGETS,
    default="0.25,0.5,0.75,1.0",
    show_default=True,
    help="Comma list, or start:stop:step (stop included).",
)
@click.option(
    "--batch",
    "batches",
    type=BATCHES,
    default="1,8",
    show_default=True,
    help="Batch sizes to time, comma list.",
)
@click.option(
    "--data",
    "data_spec",
    default="random",
    show_default=True,
    help="random (pixels, no accuracy) or a test set: fashion-mnist, cifar10, "
    "cifar100, folder; NAME:PATH or --data-dir for where it lives.",
)
@click.option("--data-dir", help="Folder (or CIFAR .tar.gz) of the dataset.")
@click.option(
    "--eval-images",
    type=BoundedInt(),
    help="Images for usage/FLOPs/accuracy (default: the whole test set; 256 for random).",
)
@click.option(
    "--warmup",
    type=BoundedInt(),
    default=10,
    show_default=True,
    help="Untimed calls per row before timing.",
)
@click.option(
    "--iterations",
    type=BoundedInt(1),
    default=100,
    show_default=True,
    help="Timed calls per row (budget x batch size).",
)
@click.option(
    "--threads",
    type=BoundedInt(1),
    help="Threads per ONNX Runtime session (default: the usable cores).",
)
@click.option(
    "--backend",
    type=click.Choice(["auto", "onnxruntime", "tensorrt"]),
    default="auto",
    show_default=True,
)
@click.option(
    "--mode",
    type=click.Choice(["greedy", "sample", "rank", "allocate"]),
    help="Mask from the probabilities: p >= 0.5, sampled, the round(c K) most "
    "probable components, or allocate (counts per image from the allocator, "
    "c as the mean). Default: the mode the artifact was exported for.",
)
@click.option(
    "--also-mode",
    "also_modes",
    type=click.Choice(["greedy", "sample", "rank", "allocate"]),
    multiple=True,
    help="Also measure this decision mode at every budget, as its own method in the "
    "same run: e.g. the paper's agent (greedy) next to the depth router (allocate). "
    "Repeatable.",
)
@click.option(
    "--cap",
    type=click.Choice(["none", "components", "flops"]),
    default="none",
    show_default=True,
    help="Make the budget a hard ceiling on components or FLOPs.",
)
@click.option(
    "--seed",
    type=SEED,
    default=0,
    show_default=True,
    help="Seed of random pixels and sampled masks.",
)
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write JSON here.")
@click.option("--csv", "csv_path", type=click.Path(path_type=Path), help="Write CSV here.")
@click.option("--md", "md_path", type=click.Path(path_type=Path), help="Write Markdown here.")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(path_type=Path),
    help="Write a PNG plot here (needs matplotlib).",
)
@click.option(
    "--count-table",
    is_flag=True,
    help="Compare with the allocator's count masks run on every image alike (the "
    "same weights and graphs as mode allocate, without the per-image choice): "
    "what the per-image decision is worth, in paired tests.",
)
@click.option(
    "--static-search-images",
    "--static-search",  # the older name, kept for a release
    "static_search",
    cls=Renamed,
    old=["--static-search"],
    type=BoundedInt(0),
    default=0,
    show_default=True,
    help="Search the best static mask per budget on N images of the validation split "
    "(or the training set's last N) and time it next to the policy (0: use the "
    "artifact's own, if exported with --static-masks; as export calls it).",
)
@click.option(
    "--precision",
    "precision_text",
    default="fp32",
    show_default=True,
    help="Graph sets to measure side by side, comma list (fp32, fp16, int8: "
    "`budget-edge quantize` adds the last two); the first is the main one.",
)
@click.option(
    "--zoo",
    "zoo_text",
    default="",
    help="Comma list of other artifact dirs (smaller models of the same task), "
    "each timed and evaluated with its static graph.",
)
def command(
    directory: Path,
    budgets: list[float],
    batches: list[int],
    data_spec: str,
    data_dir: str | None,
    eval_images: int | None,
    warmup: int,
    iterations: int,
    threads: int | None,
    backend: str,
    mode: str | None,
    also_modes: tuple[str, ...],
    cap: str,
    seed: int,
    json_path: Path | None,
    csv_path: Path | None,
    md_path: Path | None,
    plot_path: Path | None,
    count_table: bool,
    static_search: int,
    precision_text: str,
    zoo_text: str,
) -> None:
    """Time the runtime per budget and batch size, next to the static model and the policy.

    Latency is trtexec's min/mean/median/p90/p95/p99 in ms per batch, end to
    end (uint8 pixels in, logits out); throughput in images/s. Usage, executed
    FLOPs share and accuracy are over the evaluation images.

    \b
    Example:
      budget-edge bench artifacts/r20 --data fashion-mnist --budgets 0.25,0.5,0.75,1.0 \\
          --batch 1,8 --static-search-images 5000 --zoo artifacts/r8,artifacts/r14 \\
          --precision fp32,int8 \\
          --json bench.json --md bench.md --plot bench.png
    """
    from rich.console import Console

    from budget_edge.bench import plot, report
    from budget_edge.bench.measure import (
        Baselines,
        load_bench_data,
        load_search_data,
        parse_precisions,
        run_bench,
    )
    from budget_edge.commands.status import no_output_threads, status_line
    from budget_edge.errors import ConfigError
    from budget_edge.runtime import BudgetRuntime
    from budget_edge.runtime.static_masks import (
        from_count_table,
        from_manifest,
        search_static_masks,
    )

    # Every option is checked before the artifact loads: a typo fails in a second.
    ctx = click.get_current_context()
    check_options(ctx.params, os.environ)
    bench_settings = settings_of(ctx.params)
    precisions = parse_precisions(precision_text)
    outputs = (
        (json_path, report.write_json),
        (csv_path, report.write_csv),
        (md_path, report.write_markdown),
        (plot_path, plot.write_plot),
    )
    for path, _ in outputs:
        if path is not None:
            report.check_writable(path)
    if plot_path is not None:
        plot.check_plotting()  # fail now, not after minutes of timing
    zoo_dirs = [Path(p) for p in zoo_text.split(",") if p.strip()]
    for z in zoo_dirs:
        if not z.is_dir():
            raise ConfigError(
                f"--zoo: {z} is not an artifact directory (give the folders "
                "that `budget-edge export` wrote, comma-separated)"
            )
    console = Console(stderr=True)
    rt = BudgetRuntime.load(directory, backend=backend, threads=threads, precision=precisions[0])
    zoo = {}
    others: dict[str, BudgetRuntime] = {}
    try:
        for p in precisions[1:]:
            others[p] = BudgetRuntime.load(directory, backend=backend, threads=threads, precision=p)
        for z in zoo_dirs:
            zoo_rt = BudgetRuntime.load(z, backend=backend, threads=threads)
            name = zoo_rt.manifest.backbone
            zoo[name if name not in zoo else str(z)] = zoo_rt
        data = load_bench_data(data_spec, rt, data_dir, eval_images, seed)
        search = load_search_data(data_spec, rt, data_dir, static_search) if static_search else None
        with status_line(console, "bench") as status:
            # The artifact's own static masks (export --static-masks) unless asked to search.
            baselines = Baselines(static_masks=from_manifest(rt), zoo=zoo, precisions=others)
            if count_table:
                baselines.static_masks = from_count_table(rt)
                baselines.static_masks_name = "count"
            elif search is not None:
                assert search.labels is not None
                status.update(f"searching static masks on {search.name}")
                baselines.static_masks = search_static_masks(
                    rt, search.images, search.labels, progress=lambda msg: status.update(msg)
                )
            result = run_bench(
                rt,
                data,
                bench_settings,
                threads=threads,
                progress=lambda msg: status.update(msg),
                baselines=baselines,
                quiet=lambda: no_output_threads(status),
            )
    finally:
        rt.close()
        for other in [*zoo.values(), *others.values()]:
            other.close()
    result.settings["command"] = command_line(ctx)
    table = report.rich_table(result)
    out = Console()
    if not out.is_terminal:  # piped to a file: the whole table, however wide
        out = Console(width=report.full_width(table))
    out.print(table)
    out.print(report.LEGEND, soft_wrap=True, highlight=False)
    decided = report.verdict(result)
    if decided is not None:
        out.print(decided, soft_wrap=True, highlight=False)
    written = []
    for path, write in outputs:
        if path is not None:
            written.append(str(write(result, path)))
    if written:
        console.print(f"wrote {', '.join(written)}")
