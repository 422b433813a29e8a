"""`budget-edge build-engines`: one TensorRT engine per exported graph, on the target GPU."""

from __future__ import annotations

import time
from pathlib import Path

import click


@click.command("build-engines")
@click.argument("artifact_dir", type=click.Path(path_type=Path))
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp16",
              show_default=True, help="Engine precision (int8 keeps fp16 as its fallback).")
@click.option("--max-batch", type=int, default=8, show_default=True,
              help="Largest batch the engines accept (profile 1..B, optimised for min(8, B)).")
@click.option("--workspace", "workspace_mib", type=int, default=1024, show_default=True,
              help="Builder workspace limit in MiB.")
@click.option("--calib-data", help="INT8 calibration data: fashion-mnist, cifar10:PATH, "
                                   "cifar100:PATH or folder:PATH (training split).")
@click.option("--calib-count", type=int, default=512, show_default=True,
              help="Calibration images drawn from --calib-data.")
def command(artifact_dir: Path, precision: str, max_batch: int, workspace_mib: int,
            calib_data: str | None, calib_count: int) -> None:
    """Build a TensorRT engine for every graph of an exported artifact dir.

    Engines run only on the TensorRT version and GPU model that built them, so
    run this on the device (Jetson) itself. A timing cache in DIR/engines makes
    rebuilds fast; the manifest records the engines, TensorRT and the GPU.

    \b
    Example:
      budget-edge build-engines artifacts/r20 --precision int8 \\
          --calib-data fashion-mnist --max-batch 8
    """
    from budget_edge.export.tensorrt_builder import build_engines

    start = time.perf_counter()
    manifest = build_engines(
        artifact_dir, precision=precision, max_batch=max_batch, workspace_mib=workspace_mib,
        calib_data=calib_data, calib_count=calib_count,
        progress=lambda name: click.echo(f"built {name}", err=True),
    )
    trt = manifest.tensorrt
    assert trt is not None
    click.echo(
        f"built {len(trt.engines)} {trt.precision} engines with TensorRT {trt.version} on "
        f"{trt.gpu} (sm {trt.compute_capability}) in {time.perf_counter() - start:.1f} s"
    )
