"""The files of an artifact directory: hashes, reading what was checked, writing, locking.

Every file the manifest names (graphs, other precisions, engines) is listed in its
``files`` with a SHA-256. ``write_manifest`` hashes them and writes ``manifest.json``
atomically; ``verify_files`` checks them; ``read_checked`` returns the bytes that were
checked, so the bytes that run are the bytes that were verified; ``read_manifest_json``
reads ``manifest.json`` itself, bounded in size. Torch-free.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from budget_edge.errors import ManifestError
from budget_edge.files import MiB, read_user_file
from budget_edge.files import atomic_write_text as atomic_write_text  # re-exported

if TYPE_CHECKING:
    from budget_edge.runtime.manifest import Manifest

MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".lock"  # held by commands that rewrite an artifact (artifact_lock)
MAX_MANIFEST_BYTES = 16 * MiB  # a real manifest is under 1 MiB; 2 GiB was once read whole


# A listed path stays inside the artifact: relative, no ".." part, no backslash.
INSIDE = r"^(?!/)(?!(.*/)?\.\.(/|$))[^\\]+$"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, read in 1 MiB chunks (engines can be hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_files(directory: str | os.PathLike[str], manifest: Manifest | None = None) -> Manifest:
    """Check the SHA-256 of every file the manifest lists; return the manifest.

    A missing, truncated or edited file raises ManifestError naming the file.
    """
    if manifest is None:
        from budget_edge.runtime.manifest import Manifest  # which imports this module

        manifest = Manifest.load(directory)
    root = Path(directory)
    for name, digest in manifest.files.items():
        if sha256_file(artifact_file(root, name)) != digest:
            raise ManifestError(
                f"{name} in {root} does not match its SHA-256 in the manifest "
                "(corrupted, truncated or edited): copy it again or re-export"
            )
    return manifest


def artifact_file(root: Path, name: str) -> Path:
    """The path of a listed file: a plain file inside the artifact, never a symbolic link
    (one pointing at /etc/hostname was once read and hashed as a graph)."""
    path = root
    linked = False
    for part in Path(name).parts:  # the file and every folder between it and the root
        path = path / part
        linked = linked or path.is_symlink()
    if linked:
        raise ManifestError(
            f"{name} in {root} is a symbolic link: an artifact holds its own "
            "files; copy them in (cp -L) instead of linking"
        )
    if not path.is_file():
        raise ManifestError(
            f"{name} is listed in the manifest but missing from {root}: "
            "copy the whole artifact directory, or export again"
        )
    return path


def read_checked(root: Path, manifest: Manifest, name: str) -> bytes:
    """A listed file's bytes, checked against its SHA-256 as they are read: the bytes that
    run are the bytes that were checked, even if the file changes after loading."""
    data = artifact_file(root, name).read_bytes()
    if hashlib.sha256(data).hexdigest() != manifest.files.get(name):
        raise ManifestError(
            f"{name} in {root} changed since the artifact was loaded (its "
            "SHA-256 no longer matches the manifest): copy it again or "
            "re-export, then load again"
        )
    return data


def read_manifest_json(directory: str | os.PathLike[str]) -> Any:
    """``DIR/manifest.json`` parsed, not yet decoded (``Manifest.load`` does both)."""
    path = Path(directory) / MANIFEST_NAME
    if not Path(directory).is_dir():
        raise ManifestError(
            f"artifact directory {directory} does not exist: "
            "pass the --out directory of `budget-edge export`"
        )
    if not path.exists():  # anything else there is refused as it is read
        raise ManifestError(
            f"{path} is missing: this is not an artifact directory written by `budget-edge export`"
        )
    text = read_user_file(path, what="manifest", limit=MAX_MANIFEST_BYTES, error=ManifestError)
    try:
        return msgspec.json.decode(text)
    except msgspec.MsgspecError as exc:  # bad JSON, or a number past float range
        raise ManifestError(f"{path} is not valid JSON ({exc}): re-export the model") from exc
    except RecursionError as exc:  # "[[[[..." 100,000 deep
        raise ManifestError(
            f"{path} nests JSON too deeply to be a manifest: re-export the model"
        ) from exc


def write_manifest(directory: str | os.PathLike[str], manifest: Manifest) -> Manifest:
    """Hash every referenced file, validate, and write ``DIR/manifest.json`` atomically.

    Files already in ``manifest.files`` that nothing references (a timing cache,
    say) are hashed again too. Returns the manifest with ``files`` filled in.
    """
    root = Path(directory)
    files = {}
    for name in dict.fromkeys([*manifest.referenced_files(), *manifest.files]):
        if not re.match(INSIDE, name):
            raise ManifestError(
                f"manifest field files[{name!r}] must be a relative path inside the "
                "artifact directory: fix the exporter that wrote it"
            )
        if not (root / name).is_file():
            raise ManifestError(
                f"{name} is named in the manifest but missing from {root}: "
                "write every graph and engine before the manifest"
            )
        files[name] = sha256_file(root / name)
    manifest.files = files
    manifest.validate()
    atomic_write_text(root / MANIFEST_NAME, manifest.to_json(), error=ManifestError)
    return manifest


@contextlib.contextmanager
def artifact_lock(directory: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the artifact's lock while a command rewrites it (quantize, build-engines,
    static masks): two writers would each read the manifest, then the last to write
    would drop the other's entries, and one could delete the other's new folder."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        yield
        return
    with open(Path(directory) / LOCK_NAME, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ManifestError(
                f"{directory} is being written by another budget-edge command "
                "(quantize or build-engines): wait for it, then run again"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
