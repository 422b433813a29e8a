"""`budget-edge quantize`: add an fp16 or int8 graph set to an exported artifact."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from budget_edge.commands.options import BUDGETS, CALIBRATION_IMAGES, SEED, BoundedInt
from budget_edge.export.path_calibration import DEFAULT_BUDGETS, DEFAULT_MAX_ROWS

if TYPE_CHECKING:
    from budget_edge.export.quantize import QuantizeSettings

# The options that make QuantizeSettings, by their parameter names.
SETTINGS = (
    "precision",
    "calib_data",
    "calib_images",
    "budgets",
    "target",
    "activation_type",
    "calibrate_method",
    "max_rows",
    "seed",
    "threads",
)


def settings_of(params: Mapping[str, Any]) -> QuantizeSettings:
    from budget_edge.export.quantize import QuantizeSettings

    return QuantizeSettings(**{name: params[name] for name in SETTINGS})


def check_options(params: Mapping[str, Any], environ: Mapping[str, str]) -> None:
    """The rules between quantize's options that click cannot state, by their text alone
    (a missing --calib-data for int8): the command calls it first, and the docs test
    calls it on every documented `budget-edge quantize` line."""
    settings_of(params).check()


@click.command("quantize")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option(
    "--precision",
    type=click.Choice(["fp16", "int8"]),
    required=True,
    help="The graph set to add (fp32 is the exported one and stays).",
)
@click.option(
    "--calib-data",
    help="int8: the training dataset to calibrate on: "
    "fashion-mnist, cifar10:PATH, cifar100:PATH or folder:PATH.",
)
@click.option(
    "--calib-images",
    type=CALIBRATION_IMAGES,
    default=512,
    show_default=True,
    help="Calibration images drawn from the training split.",
)
@click.option(
    "--budgets",
    type=BUDGETS,
    default=",".join(f"{c:g}" for c in DEFAULT_BUDGETS),
    show_default=True,
    help="Budgets whose masks the calibration follows (besides all blocks kept).",
)
@click.option(
    "--target",
    type=click.Choice(["cpu", "tensorrt"]),
    default="cpu",
    show_default=True,
    help="int8: where the graphs will run (sets the activation type).",
)
@click.option(
    "--activation-type",
    type=click.Choice(["auto", "u8", "s8"]),
    default="auto",
    show_default=True,
    help="int8 activations: auto is u8 (asymmetric) for cpu, s8 (symmetric) for tensorrt.",
)
@click.option(
    "--calibrate-method",
    type=click.Choice(["minmax", "percentile", "entropy"]),
    default="minmax",
    show_default=True,
    help="int8 activation ranges.",
)
@click.option(
    "--max-rows",
    type=BoundedInt(1),
    default=DEFAULT_MAX_ROWS,
    show_default=True,
    help="Calibration rows kept per graph (a uniform sample).",
)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option(
    "--threads",
    type=BoundedInt(1),
    default=None,
    help="ONNX Runtime threads while calibrating [the usable cores].",
)
@click.option(
    "--sign",
    "sign_key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Sign the changed manifest again with this Ed25519 private key (PEM); without "
    "it a signed artifact's signature no longer holds (a warning says so).",
)
def command(
    artifact: Path,
    precision: str,
    calib_data: str | None,
    calib_images: int,
    budgets: list[float],
    target: str,
    activation_type: str,
    calibrate_method: str,
    max_rows: int,
    seed: int,
    threads: int | None,
    sign_key: Path | None,
) -> None:
    """Add an fp16 or int8 copy of every graph to ARTIFACT (its fp32 graphs stay), for
    `bench --precision`, `serve --precision` and BudgetRuntime.load(precision=...).

    \b
    Example:
      budget-edge quantize artifacts/r20 --precision int8 --calib-data fashion-mnist
      budget-edge bench artifacts/r20 --data fashion-mnist --precision fp32,int8
    """
    from rich.console import Console

    from budget_edge.commands.status import status_line
    from budget_edge.export.quantize import quantize_artifact, set_sizes
    from budget_edge.runtime.manifest import Manifest
    from budget_edge.runtime.signing import after_manifest_change, check_signing_key, signed_bytes

    params = click.get_current_context().params
    check_options(params, os.environ)  # before any work: a missing --calib-data is one line
    settings = settings_of(params)
    if sign_key is not None:
        check_signing_key(sign_key)
    console = Console(stderr=True)
    start = time.perf_counter()
    before = signed_bytes(Manifest.load(artifact))
    with status_line(console, f"quantizing to {precision}") as status:
        manifest = quantize_artifact(artifact, settings, progress=status.update)
    sizes = set_sizes(manifest, artifact)
    recipe = manifest.precisions[precision].recipe
    how = f", activations {recipe['activations']}" if precision == "int8" else ""
    click.echo(
        f"added {precision} graphs to {artifact}{how}: {len(manifest.graphs)} graphs, "
        f"{sizes[precision] / 1e6:.2f} MB ({sizes['fp32'] / sizes[precision]:.1f}x "
        f"smaller than fp32's {sizes['fp32'] / 1e6:.2f} MB) in "
        f"{time.perf_counter() - start:.1f} s"
    )
    note = after_manifest_change(artifact, before, sign_key)
    if note is not None:
        click.echo(note, err=note.startswith("warning"))
