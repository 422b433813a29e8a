"""Load and save checkpoints: ours, and the formats of the paper's reference code,
BlockDrop, akamaster's CIFAR ResNets and torchvision.

    from budget_edge.models.checkpoint import load_checkpoint, save_checkpoint
    loaded = load_checkpoint("model.pt")            # format="auto"
    loaded.backbone, loaded.agent, loaded.meta, loaded.format
    save_checkpoint("model.pt", backbone, agent, meta={"preprocessing": ...})

Loading never runs code from the file: ``torch.load(..., weights_only=True)``
only rebuilds tensors and plain containers. The architecture comes from the
file (our ``config`` entries, or inferred from tensor shapes and key counts
for foreign files, see ``checkpoint_formats``), every tensor's shape is checked
against it, and any problem is a ``CheckpointError`` naming the file. Loaded
modules are returned in eval mode.
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from budget_edge.agent.allocator import Allocator, build_allocator
from budget_edge.agent.policy import PolicyNet, build_agent
from budget_edge.errors import BudgetEdgeError, CheckpointError, ConfigError
from budget_edge.files import GiB, atomic_writer, open_user_file, os_error_message
from budget_edge.models.backbone import Backbone
from budget_edge.models.checkpoint_formats import (
    FORMATS,
    OWN_FORMAT,
    OWN_VERSION,
    Converted,
    detect,
    known_formats,
    state_digest,
)
from budget_edge.models.registry import build_backbone

PathLike = str | os.PathLike[str]

# The largest checkpoint the toolkit builds (ResNeXt-101) is under 400 MiB; a file past
# this is not one, and reading it whole would take the machine's memory.
CHECKPOINT_LIMIT = 8 * GiB


@dataclass
class LoadedCheckpoint:
    """What ``load_checkpoint`` gives: modules in eval mode, meta, the format read.

    ``train_state`` is what ``save_checkpoint`` stored for resuming (optimizer,
    scheduler, epoch, RNG); None for foreign files.
    """

    backbone: Backbone
    agent: PolicyNet | None
    meta: dict[str, Any]
    format: str
    train_state: dict[str, Any] | None = None
    allocator: Allocator | None = None


def load_checkpoint(path: PathLike, format: str = "auto") -> LoadedCheckpoint:
    """Read ``path`` in ``format`` (``"auto"`` detects it) and build the modules."""
    if format != "auto" and format not in FORMATS:
        raise ConfigError(
            f"unknown checkpoint format {format!r}; use 'auto' or one of: {', '.join(FORMATS)}"
        )
    obj = read_checkpoint_file(path)
    name = _resolve_format(obj, format, path)
    try:
        converted = FORMATS[name].convert(obj)
    except CheckpointError as exc:
        raise CheckpointError(f"cannot load {path} ({name} format): {exc}") from exc
    return _build(converted, name, path)


def read_checkpoint_file(path: PathLike) -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True``; every failure is a CheckpointError."""
    file = Path(path)
    if not file.exists():
        raise CheckpointError(f"checkpoint file not found: {file}; check the path")
    if file.is_dir():
        raise CheckpointError(f"{file} is a directory; give the checkpoint file inside it")
    # A regular file of bounded size, opened once: the bytes checked are the bytes loaded.
    with open_user_file(
        file, what="checkpoint", limit=CHECKPOINT_LIMIT, error=CheckpointError
    ) as handle:
        return _load_open_checkpoint(file, handle)


def _load_open_checkpoint(file: Path, handle: IO[bytes]) -> dict[str, Any]:
    _check_zip_crcs(file, handle)
    handle.seek(0)
    try:
        with warnings.catch_warnings():
            # Plain pickles make torch warn about their protocol; the load refuses them anyway.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(handle, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(_unsafe_message(file, exc)) from exc
    except Exception as exc:  # torch raises many types for damaged files; all mean the same
        raise CheckpointError(
            f"cannot read {file}: the file is truncated, corrupted or not a PyTorch "
            f"checkpoint ({type(exc).__name__}: {str(exc)[:200]}); re-download or re-save it"
        ) from exc
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{file} holds a {type(obj).__name__}, not a dict of weights; budget-edge "
            f"reads these formats: {known_formats()}"
        )
    return obj


def _check_zip_crcs(file: Path, handle: IO[bytes]) -> None:
    """torch.save writes a zip with a CRC-32 per member, which torch.load never checks: a
    flipped byte in a weight loaded silently. Check them (about 1 ms per 1 MB)."""
    if not zipfile.is_zipfile(handle):
        return  # a legacy (plain pickle) file: torch.load decides
    name = ""
    try:
        with zipfile.ZipFile(handle) as archive:
            _check_sizes(file, archive)
            for member in archive.infolist():
                if member.CRC == 0 and member.file_size > 0:
                    continue  # torch's compute_crc32 = False writes no checksum
                name = member.filename
                with archive.open(member) as data:  # raises BadZipFile on a CRC mismatch
                    while data.read(1 << 20):
                        pass
    except zipfile.BadZipFile as exc:
        if "CRC" in str(exc):
            raise CheckpointError(
                f"{file} is corrupted: its member {name} fails its CRC-32 "
                "check (a changed byte); re-download or re-save it"
            ) from exc
        raise CheckpointError(
            f"cannot read {file}: the archive is damaged ({exc}); re-download or re-save it"
        ) from exc
    except Exception as exc:  # zipfile raises several types for damaged archives
        raise CheckpointError(
            f"cannot read {file}: the archive is damaged "
            f"({type(exc).__name__}: {str(exc)[:200]}); re-download or "
            "re-save it"
        ) from exc


def _check_sizes(file: Path, archive: zipfile.ZipFile) -> None:
    """torch.save stores members uncompressed, so together they are no larger than the file.
    A member that claims more is a compressed one (a 7 MiB file once held a 4 GiB member
    that took 18 s to check and would have taken 4 GiB to load): refuse it unread."""
    declared = sum(member.file_size for member in archive.infolist())
    on_disk = os.fstat(archive.fp.fileno()).st_size if archive.fp else file.stat().st_size
    if declared > on_disk:
        raise CheckpointError(
            f"{file} is a {on_disk / 2**20:.1f} MiB archive whose members claim "
            f"{declared / 2**20:.1f} MiB: torch.save does not compress, so this is not a "
            "checkpoint it wrote; re-save it with torch.save"
        )


def _unsafe_message(file: Path, exc: pickle.UnpicklingError) -> str:
    """Why a weights-only load refused the file, in one line."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    detail = text.split(marker, 1)[1] if marker in text else text
    detail = next((line.strip() for line in detail.splitlines() if line.strip()), "")
    # Drop torch's advice to allow-list the global: that is exactly what not to do.
    detail = detail.split(". Please use", 1)[0]
    return (
        f"refusing to load {file}: it contains code/objects other than tensors and plain "
        f"containers, which a safe load (torch.load weights_only=True) does not run "
        f"({detail[:200]}). If the file is not simply damaged, re-save only its state "
        "dicts (torch.save(model.state_dict(), ...)) from a source you trust"
    )


def _resolve_format(obj: dict[str, Any], requested: str, path: PathLike) -> str:
    detected, reasons = detect(obj)
    if requested == "auto":
        if detected is None:
            keys = ", ".join(repr(k) for k in list(obj)[:8])
            raise CheckpointError(
                f"cannot tell the format of {path} (top-level keys: {keys}). "
                f"Known formats: {known_formats()}"
            )
        return detected
    problem = FORMATS[requested].problem(obj)
    if problem is not None:
        hint = f"; it looks like {detected!r}" if detected else ""
        raise CheckpointError(
            f"{path} is not in the {requested} format: {problem}{hint}. "
            "Pass format='auto' (CLI: --format auto) to detect the format"
        )
    return requested


def _build(converted: Converted, name: str, path: PathLike) -> LoadedCheckpoint:
    backbone = _build_module(build_backbone, converted.backbone_config, "backbone", path)
    assert isinstance(backbone, Backbone)
    load_state(backbone, converted.backbone_state, "backbone", path)
    agent: PolicyNet | None = None
    if converted.agent_config is not None and converted.agent_state is not None:
        built = _build_module(build_agent, converted.agent_config, "agent", path)
        assert isinstance(built, PolicyNet)
        agent = built
        load_state(agent, converted.agent_state, "agent", path)
        if agent.num_components != backbone.num_components:
            raise CheckpointError(
                f"{path}: the agent decides {agent.num_components} components but the "
                f"backbone has {backbone.num_components}; the file mixes two models"
            )
        agent.eval()
    backbone.eval()
    return LoadedCheckpoint(
        backbone,
        agent,
        converted.meta,
        name,
        converted.train_state,
        _build_allocator(converted, agent, path),
    )


def _build_allocator(
    converted: Converted, agent: PolicyNet | None, path: PathLike
) -> Allocator | None:
    if converted.allocator_config is None or converted.allocator_state is None:
        return None
    if agent is None:
        raise CheckpointError(
            f"{path}: it has an allocator but no agent to rank components; "
            "the file is damaged or was edited"
        )
    built = _build_module(build_allocator, converted.allocator_config, "allocator", path)
    assert isinstance(built, Allocator)
    load_state(built, converted.allocator_state, "allocator", path)
    if built.num_components != agent.num_components:
        raise CheckpointError(
            f"{path}: the allocator counts {built.num_components} "
            f"components but the agent decides {agent.num_components}; the "
            "file mixes two models"
        )
    return built.eval()


# A model's sizes come from the file: bound them before anything is allocated
# (num_classes = 10**7 once took 2.7 GB before the shape error).
MAX_SIZE = 100_000


def _build_module(builder: Any, config: dict[str, Any], what: str, path: PathLike) -> nn.Module:
    huge = {
        k: v
        for k, v in config.items()
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_SIZE
    }
    if huge:
        raise CheckpointError(
            f"{path}: the {what} config asks for {huge}, beyond any model "
            f"here (at most {MAX_SIZE}); the file is damaged or not ours"
        )
    try:
        return builder(**config)
    except (BudgetEdgeError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: cannot build the {what} it describes ({config}): {exc}"
        ) from exc


def load_state(
    module: nn.Module, state: dict[str, torch.Tensor], what: str, path: PathLike
) -> None:
    """Load ``state`` into ``module`` after checking names and shapes.

    BatchNorm ``num_batches_tracked`` may be absent (older PyTorch, akamaster);
    the module keeps its own. Anything else missing, extra or mis-shaped is an
    error that names the file.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: the {what} weights do not fit the architecture "
            f"{getattr(module, 'config', {}).get('name', type(module).__name__)}: "
            f"missing {_few(missing)}, unexpected {_few(unexpected)}; the file may be "
            "damaged or from a different model"
        )
    wrong = [k for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        key = wrong[0]
        raise CheckpointError(
            f"{path}: {what} tensor {key!r} has shape {tuple(state[key].shape)}, expected "
            f"{tuple(own[key].shape)} ({len(wrong)} tensor(s) mis-shaped); the file may be "
            "damaged or from a different model"
        )
    _check_values(state, own, what, path)
    module.load_state_dict({**own, **state}, strict=True)


def _check_values(
    state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], what: str, path: PathLike
) -> None:
    """Weights of the module's own kind of number, and finite: load_state_dict would cast
    int64 weights silently, and NaN weights make every answer NaN."""
    for key, value in state.items():
        want = own[key]
        if want.is_floating_point() != value.is_floating_point():
            raise CheckpointError(
                f"{path}: {what} tensor {key!r} is {value.dtype}, expected {want.dtype}; the "
                "file is damaged or not a checkpoint of this model"
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(
                f"{path}: {what} tensor {key!r} holds NaN or inf; the training that wrote it "
                "diverged, or the file is damaged"
            )


def _few(keys: list[str], limit: int = 4) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


# -- saving --------------------------------------------------------------------------


def save_checkpoint(
    path: PathLike,
    backbone: Backbone,
    agent: PolicyNet | None = None,
    meta: dict[str, Any] | None = None,
    train_state: dict[str, Any] | None = None,
    allocator: Allocator | None = None,
) -> Path:
    """Write a ``budget-edge`` checkpoint atomically (temp file + ``os.replace``).

    ``meta`` and ``train_state`` may hold tensors, numbers, strings, None and
    lists/tuples/dicts of them: what a weights-only load can read back.
    """
    payload = {
        "format": OWN_FORMAT,
        "version": OWN_VERSION,
        "backbone": _module_entry(backbone, "backbone"),
        "agent": None if agent is None else _module_entry(agent, "agent"),
        "meta": dict(meta or {}),
        "train_state": train_state,
    }
    if allocator is not None:  # absent rather than None: older readers ignore the key
        payload["allocator"] = _module_entry(allocator, "allocator")
    _check_loadable(payload["meta"], "meta")
    _check_loadable(train_state, "train_state")
    target = Path(path)
    atomic_torch_save(payload, target)
    return target


def _module_entry(module: nn.Module, what: str) -> dict[str, Any]:
    config = getattr(module, "config", None)
    if not isinstance(config, dict):
        raise ConfigError(
            f"the {what} has no 'config' dict; build it with build_backbone/build_agent "
            "(unwrap DistributedDataParallel with .module first)"
        )
    state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    return {"config": dict(config), "state_dict": state, "sha256": state_digest(state)}


# Exact types: subclasses such as numpy.float64 pickle as objects a safe load refuses.
_PLAIN_TYPES = (str, int, float, bool, type(None), torch.Size, torch.dtype)


def _check_loadable(value: Any, where: str) -> None:
    """Refuse values a weights-only load could not read back (numpy arrays, objects)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if type(key) not in (str, int):
                raise ConfigError(f"{where} has a key {key!r}; use string or integer keys")
            _check_loadable(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_loadable(item, f"{where}[{index}]")
    elif type(value) not in _PLAIN_TYPES and not isinstance(value, torch.Tensor):
        raise ConfigError(
            f"{where} is a {type(value).__module__}.{type(value).__name__}; checkpoints may "
            "hold only tensors, numbers, strings, None and lists/tuples/dicts of them "
            "(they load with weights_only=True), so convert it first"
        )


def atomic_torch_save(obj: Any, target: Path) -> None:
    """``torch.save`` to a temporary name in the same folder, then rename over ``target``."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(os_error_message(exc, target.parent, "create")) from exc
    with atomic_writer(target, error=CheckpointError) as handle:
        recording = _WriteErrors(handle)
        try:
            torch.save(obj, recording)  # type: ignore[arg-type]  # a write()-only file
        except RuntimeError:
            # torch reports a failed write (a full disk) as its own RuntimeError; the
            # OSError behind it becomes atomic_writer's one line naming the file.
            if recording.error is None:
                raise
            raise recording.error from None


class _WriteErrors:
    """A binary file for torch.save that remembers the OSError a write raised."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.handle.flush()
