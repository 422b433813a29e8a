"""`budget-edge build-engines`: one TensorRT engine per exported graph, on the target GPU."""

from __future__ import annotations

import time
from pathlib import Path

import click

from budget_edge.commands.options import BoundedInt


@click.command("build-engines")
@click.argument("artifact_dir", type=click.Path(path_type=Path))
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16", "int8"]),
    default="fp16",
    show_default=True,
    help="Engine precision: fp32 builds from the exported graphs, fp16 and int8 from "
    "the sets `budget-edge quantize` adds (int8 with --target tensorrt).",
)
@click.option(
    "--max-batch",
    type=BoundedInt(1),
    default=8,
    show_default=True,
    help="Largest batch the engines accept (profile 1..B).",
)
@click.option(
    "--opt-batch",
    type=BoundedInt(1),
    default=None,
    help="Batch size the kernels are tuned for [1: one camera frame at a time].",
)
@click.option(
    "--workspace",
    "workspace_mib",
    type=BoundedInt(1),
    default=1024,
    show_default=True,
    help="Builder workspace limit in MiB.",
)
def command(
    artifact_dir: Path, precision: str, max_batch: int, opt_batch: int | None, workspace_mib: int
) -> None:
    """Build a TensorRT engine for every graph of an exported artifact dir.

    Engines run only on the TensorRT version and GPU model that built them, so
    run this on the device (Jetson) itself. A timing cache in DIR/engines makes
    rebuilds fast; the manifest records the engines, TensorRT and the GPU.

    \b
    Example:
      budget-edge quantize artifacts/r20 --precision int8 --target tensorrt \\
          --calib-data fashion-mnist        # on the workstation
      budget-edge build-engines artifacts/r20 --precision int8 --max-batch 8
    """
    from budget_edge.export.tensorrt_builder import build_engines

    start = time.perf_counter()
    manifest = build_engines(
        artifact_dir,
        precision=precision,
        max_batch=max_batch,
        workspace_mib=workspace_mib,
        opt_batch=opt_batch,
        progress=lambda name: click.echo(f"built {name}", err=True),
    )
    trt = manifest.tensorrt
    assert trt is not None
    click.echo(
        f"built {len(trt.engines)} {trt.precision} engines with TensorRT {trt.version} on "
        f"{trt.gpu} (sm {trt.compute_capability}) in {time.perf_counter() - start:.1f} s"
    )
