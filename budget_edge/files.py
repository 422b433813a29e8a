"""Files a user names, read with bounds, and files we write, written atomically.

Every file a user points us at (a manifest, a key, a token, a checkpoint) is opened
here: a regular file only (a FIFO would block forever, /dev/zero would read until
memory runs out), its size checked before a byte is read, and the read itself capped
in case the file grows meanwhile. Every file we write goes through a temporary file
beside the target with a unique name, fsync, then a rename, so readers see the old
file or the new one and two writers never share a temporary. Torch-free: the runtime
uses this on the device.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from budget_edge.errors import BudgetEdgeError, ConfigError

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

PathLike = str | os.PathLike[str]


def os_error_message(exc: OSError, path: PathLike, doing: str = "read") -> str:
    """One line naming the file and what to do, for the errors a user can fix."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"cannot {doing} {path}: permission denied (run as a user who may "
            f"{doing} it, or fix its mode with chmod)"
        )
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"cannot {doing} {path}: the disk is full; free some space and run again"
    if exc.errno == errno.EROFS:
        return f"cannot {doing} {path}: the file system is read-only; copy it somewhere writable"
    if exc.errno == errno.ENOENT:
        return f"cannot {doing} {path}: no such file or folder; check the path"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"cannot {doing} {path}: a file is in the way where a folder belongs"
    if exc.errno == errno.EISDIR:
        return f"cannot {doing} {path}: it is a folder, not a file"
    return f"cannot {doing} {path}: {exc.strerror or exc}"


@contextlib.contextmanager
def open_user_file(
    path: PathLike, *, what: str, limit: int, error: type[BudgetEdgeError] = ConfigError
) -> Iterator[IO[bytes]]:
    """Open a user-named file for reading: a regular file of at most ``limit`` bytes.

    ``what`` names the file in errors ("the public key", "checkpoint"). Opening is
    non-blocking, so a FIFO is refused instead of waiting for a writer that never comes.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise error(f"{what}: {os_error_message(exc, path)}") from exc
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise error(f"{what}: {path} is a folder; give the file inside it")
        if not stat.S_ISREG(info.st_mode):
            raise error(
                f"{what}: {path} is not a regular file (a pipe, device or socket); "
                "give a file on disk"
            )
        if info.st_size > limit:
            raise error(
                f"{what}: {path} is {_size(info.st_size)}, more than the "
                f"{_size(limit)} such a file can be; is it the right file?"
            )
        _clear_nonblocking(fd)
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        yield handle


def read_user_file(
    path: PathLike, *, what: str, limit: int, error: type[BudgetEdgeError] = ConfigError
) -> bytes:
    """The bytes of a user-named regular file of at most ``limit`` bytes."""
    with open_user_file(path, what=what, limit=limit, error=error) as handle:
        try:
            data = handle.read(limit + 1)  # one more: a file that grew after the check
        except OSError as exc:
            raise error(f"{what}: {os_error_message(exc, path)}") from exc
    if len(data) > limit:
        raise error(f"{what}: {path} grew past {_size(limit)} while it was read")
    return data


def read_user_text(
    path: PathLike, *, what: str, limit: int, error: type[BudgetEdgeError] = ConfigError
) -> str:
    """A user-named text file (UTF-8), read as :func:`read_user_file` reads bytes."""
    data = read_user_file(path, what=what, limit=limit, error=error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what}: {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


@contextlib.contextmanager
def atomic_writer(
    path: PathLike, *, error: type[BudgetEdgeError] = ConfigError
) -> Iterator[IO[bytes]]:
    """Yield a binary file that becomes ``path`` only when the block ends without error.

    The temporary file has a unique name beside the target (same file system, so the
    rename is atomic) and the mode a plain ``open`` would give (0666 less the umask),
    so a service account reads an exported artifact as it reads any other file.
    On any failure the temporary is removed and the old ``path`` stays as it was.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise error(os_error_message(exc, target, "write")) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise error(os_error_message(exc, target, "write")) from exc
    except BaseException:
        _unlink_quietly(tmp)
        raise


def check_writable_file(path: PathLike, *, error: type[BudgetEdgeError] = ConfigError) -> Path:
    """Check, before long work, that ``path`` can be written as a file: its folder exists
    and takes new files, and nothing that is not a regular file (a folder, /proc/version,
    a device) is in its place. The check writes and removes an empty temporary file."""
    target = Path(path)
    if target.is_dir():
        raise error(f"{target} is a folder: give a file name")
    if target.exists() and not target.is_file():
        raise error(f"cannot write {target}: it is not a regular file; give a file name")
    if not target.parent.is_dir():
        raise error(f"cannot write {target}: the folder {target.parent} does not exist")
    probe = target.with_name(f".{target.name}.{secrets.token_hex(4)}.probe")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as exc:
        if exc.errno == errno.ENOENT:  # the folder exists but makes no files: /proc, /sys
            raise error(
                f"cannot write {target}: {target.parent} takes no new files; "
                "give a path in an ordinary folder"
            ) from exc
        raise error(os_error_message(exc, target, "write")) from exc
    _unlink_quietly(probe)
    return target


def atomic_write_bytes(
    path: PathLike, data: bytes, *, error: type[BudgetEdgeError] = ConfigError
) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_writer`)."""
    with atomic_writer(path, error=error) as handle:
        handle.write(data)


def atomic_write_text(
    path: PathLike, text: str, *, error: type[BudgetEdgeError] = ConfigError
) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_writer`)."""
    atomic_write_bytes(path, text.encode("utf-8"), error=error)


def _clear_nonblocking(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # not POSIX: O_NONBLOCK was never set
        return
    flags: Any = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _size(n: int) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
