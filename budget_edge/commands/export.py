"""`budget-edge export`: a checkpoint -> ONNX graphs per block plus a manifest."""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from budget_edge.commands.options import CALIBRATION_IMAGES, BoundedInt, Renamed


def check_options(params: Mapping[str, Any], environ: Mapping[str, str]) -> None:
    """The rules between export's options that click cannot state, by their text alone
    (nothing loaded): the command calls it first, and the docs test calls it on every
    documented `budget-edge export` line."""
    if params["static_data"] is not None:
        from budget_edge.bench.measure import check_search_spec

        check_search_spec(
            params["static_data"], params["static_search_images"], data_option="--static-masks"
        )


@click.command("export")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Artifact directory to write (new, empty, or a previous export).",
)
@click.option(
    "--format",
    "fmt",
    default="auto",
    show_default=True,
    help="Checkpoint format: auto, budget-edge, budgetnet, blockdrop, akamaster, torchvision.",
)
@click.option(
    "--opset",
    type=BoundedInt(18),
    default=18,
    show_default=True,
    help="ONNX opset (18 or later: torch's exporter writes 18, and converting "
    "down fails, e.g. ReduceMean at 17).",
)
@click.option(
    "--mode",
    type=click.Choice(["greedy", "sample", "rank", "allocate"]),
    help="The decision mode the artifact is made for; infer, serve and bench use it "
    "unless told otherwise. Default: allocate when the checkpoint has an allocator, "
    "else greedy (the paper's agent).",
)
@click.option(
    "--fuse-top",
    type=BoundedInt(0),
    help="Also export the K masks the policy picks most often as whole graphs "
    "(with an allocator's table of count masks, its rows first). Default: what "
    "the mode runs: every count mask for allocate (one image is then two graph "
    "calls), none otherwise.",
)
@click.option(
    "--own-batchnorm/--shared-batchnorm",
    default=None,
    help="Recompute each whole-mask graph's BatchNorm statistics for its mask on "
    "--calib-data images. Default: on for a sandwich-trained backbone (pretrain "
    "--sandwich), whose sub-networks need statistics of their own.",
)
@click.option(
    "--calib-data",
    help="Data for --fuse-top and --own-batchnorm: fashion-mnist, cifar10:PATH, "
    "cifar100:PATH or folder:PATH (training split).",
)
@click.option(
    "--calib-images",
    "--calib-count",  # the older name, kept for a release
    "calib_count",
    cls=Renamed,
    old=["--calib-count"],
    type=CALIBRATION_IMAGES,
    default=512,
    show_default=True,
    help="Calibration images drawn from --calib-data (as quantize and allocate call it).",
)
@click.option(
    "--static-masks",
    "static_data",
    help="Also search the best static mask per kept count on the model's validation "
    "split of this dataset (fashion-mnist, cifar10:PATH, ...; the end of the training "
    "split for a model trained without one), so the runtime can run policy='static'.",
)
@click.option(
    "--static-search-images",
    type=BoundedInt(1),
    default=5000,
    show_default=True,
    help="Validation images for the search (the split's first N; without a "
    "split, the training split's last N).",
)
@click.option(
    "--sign",
    "sign_key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Sign the manifest with this Ed25519 private key (PEM): see `budget-edge sign`.",
)
def command(
    checkpoint: Path,
    out: Path,
    fmt: str,
    opset: int,
    mode: str | None,
    fuse_top: int | None,
    own_batchnorm: bool | None,
    calib_data: str | None,
    calib_count: int,
    static_data: str | None,
    static_search_images: int,
    sign_key: Path | None,
) -> None:
    """Export a checkpoint to ONNX: stem, one graph per block (per kept-path variant for
    ResNeXt), head, policy, the static full model, and manifest.json with SHA-256s.

    \b
    Example:
      budget-edge export runs/r20/allocated.pt --out artifacts/r20
      budget-edge export runs/r20/budgetnet.pt --out artifacts/r20-greedy \\
          --fuse-top 4 --calib-data fashion-mnist
    """
    from rich.console import Console

    from budget_edge.commands.status import status_line
    from budget_edge.export.exporter import export_checkpoint
    from budget_edge.models.checkpoint import load_checkpoint

    check_options(click.get_current_context().params, os.environ)
    console = Console(stderr=True)
    start = time.perf_counter()
    loaded = load_checkpoint(checkpoint, format=fmt)
    with status_line(console, "exporting") as status:
        manifest = export_checkpoint(
            loaded,
            out,
            opset=opset,
            fuse_top=fuse_top,
            calib_data=calib_data,
            calib_count=calib_count,
            progress=lambda name: status.update(f"exported {name}"),
            mode=mode,
            own_batchnorm=own_batchnorm,
        )
        if static_data is not None:
            from budget_edge.bench.measure import load_search_data
            from budget_edge.runtime import BudgetRuntime
            from budget_edge.runtime.static_masks import attach_static_masks

            with BudgetRuntime.load(out, backend="onnxruntime") as rt:
                search = load_search_data(static_data, rt, None, static_search_images)
            assert search.labels is not None
            status.update(f"searching static masks on {search.name}")
            manifest = attach_static_masks(
                out,
                search.images,
                search.labels,
                search.name,
                progress=lambda msg: status.update(msg),
            )
    if sign_key is not None:
        from budget_edge.runtime.signing import sign_artifact

        sign_artifact(out, sign_key)
    seconds = time.perf_counter() - start
    variants = sum(len(b.variants) for b in manifest.blocks)
    click.echo(
        f"exported {manifest.backbone} ({loaded.format}) to {out}: {len(manifest.graphs)} "
        f"graphs ({len(manifest.blocks)} blocks, {variants} block variants, "
        f"{len(manifest.hot_policies)} hot policies, policy "
        f"{'yes' if manifest.roles.get('policy') else 'no'}"
        + (f", {len(manifest.static_masks.masks)} static masks" if manifest.static_masks else "")
        + f") in {seconds:.1f} s; decision mode: {manifest.decision_mode or 'none (no agent)'}"
    )
    advice = greedy_advice(manifest.decision_mode, mode, checkpoint)
    if advice is not None:
        click.echo(advice)


def greedy_advice(decision_mode: str | None, asked: str | None, checkpoint: Path) -> str | None:
    """One line when the artifact runs the paper's agent only because the checkpoint has
    no allocator: the depth router measured better on the committed checkpoints."""
    if decision_mode != "greedy" or asked is not None:
        return None
    return (
        "note: no allocator in this checkpoint, so the artifact runs the paper's agent "
        "(mode greedy). At c = 0.5 on the committed checkpoints the allocator was as "
        "accurate or more at equal or lower latency (ResNet-20: 94.15% against 91.05%, both "
        "at 0.74x the static graph; ResNet-56: 92.20% at 0.48x against 92.05% at 0.58x; "
        "benchmarks/results/default-path): run "
        f"`budget-edge allocate {shlex.quote(str(checkpoint))} --out CKPT2`, then export CKPT2."
    )
