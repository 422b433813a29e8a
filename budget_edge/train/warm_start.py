"""Start a pretraining run from another checkpoint's weights (`pretrain --init`).

The use: a network trained on its own first, then made adaptive by sandwich
training from those weights (Once-for-All's order: the full network first, its
sub-networks after, each distilled from it). Only the weights come over; the
optimizer, schedule and epochs are the new run's.

A run with a validation split makes every later choice on those images, so the
starting weights must not have trained on them: their checkpoint must record the
very same split. One that records none (trained on the whole training set, or from
another project's code) is refused there; with `--val-size 0` the run keeps no
split and may start from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from budget_edge.data.split import ValidationSplit
from budget_edge.errors import CheckpointError, ConfigError
from budget_edge.models import Backbone
from budget_edge.models.checkpoint import load_checkpoint
from budget_edge.runtime.artifact_files import sha256_file


def init_digest(path: Path) -> str:
    """What identifies the starting weights in the run's settings (a path may move)."""
    if path.is_dir():
        raise ConfigError(f"--init {path} is a folder: give the checkpoint in it ({path}/best.pt)")
    if not path.is_file():
        raise ConfigError(f"--init {path}: there is no checkpoint file there; check the path")
    return sha256_file(path)


def check_same_split(theirs: Any, mine: ValidationSplit | None, path: Path) -> None:
    """Refuse starting weights that trained on this run's validation images."""
    if mine is None:
        return  # no split here: no choice is made on held-out images
    if not isinstance(theirs, dict) or "indices_sha256" not in theirs:
        raise ConfigError(
            f"--init {path} records no validation split, so it may have trained on the "
            f"{mine.size} images this run holds out for its choices; start from a "
            f"checkpoint trained with --val-size {mine.size} on this data, or run with "
            "--val-size 0 (no validation split: the best epoch is then the last)"
        )
    content = theirs.get("content_sha256")
    if theirs["indices_sha256"] == mine.digest and (not content or content == mine.content):
        return
    if theirs.get("size") == mine.size:
        raise ConfigError(
            f"--init {path} was trained on another training set: its validation split of "
            f"{mine.size} images does not match this data's; start from a checkpoint "
            "trained on this data"
        )
    raise ConfigError(
        f"--init {path} was trained with another validation split ({theirs.get('size')} "
        f"images) than this run's ({mine.size}): it trained on images this run holds out; "
        f"start from a checkpoint trained with --val-size {mine.size} on this data"
    )


def load_initial_weights(
    path: Path, backbone: Backbone, dataset: str, digest: str, split: ValidationSplit | None
) -> None:
    """Copy the checkpoint's backbone weights into `backbone`, after every check."""
    if init_digest(path) != digest:
        raise ConfigError(f"--init {path} changed since the run recorded its SHA-256 {digest}")
    loaded = load_checkpoint(path)
    theirs, mine = loaded.backbone.config.get("name"), backbone.config.get("name")
    if theirs != mine:
        raise ConfigError(
            f"--init {path} holds a {theirs} backbone, not {mine}: pass --backbone {theirs}"
        )
    trained_on = loaded.meta.get("dataset")
    if trained_on is not None and trained_on != dataset:
        raise ConfigError(f"--init {path} was trained on {trained_on}, this run is on {dataset}")
    check_same_split(loaded.meta.get("validation_split"), split, path)
    try:
        backbone.load_state_dict(loaded.backbone.state_dict())
    except RuntimeError as exc:  # the shapes differ: another number of classes or widths
        first = str(exc).strip().splitlines()[-1].strip()
        raise CheckpointError(f"--init {path} does not fit this {mine}: {first}") from exc
