"""Reading user-named files with bounds, and writing files atomically."""

import os
import stat
import threading

import pytest

from budget_edge.errors import CheckpointError, ConfigError
from budget_edge.files import atomic_write_bytes, atomic_writer, read_user_file, read_user_text


def test_reads_a_regular_file(tmp_path):
    path = tmp_path / "key.pem"
    path.write_bytes(b"abc")
    assert read_user_file(path, what="the key", limit=10) == b"abc"


def test_a_file_over_the_limit_is_refused_before_reading(tmp_path):
    path = tmp_path / "big"
    path.write_bytes(b"x" * 11)
    with pytest.raises(ConfigError, match=r"the key: .*big is 11 bytes, more than the 10 bytes"):
        read_user_file(path, what="the key", limit=10)


def test_a_device_is_refused():
    with pytest.raises(CheckpointError, match="not a regular file"):
        read_user_file("/dev/zero", what="checkpoint", limit=1 << 20, error=CheckpointError)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    result: list[BaseException] = []

    def read() -> None:
        try:
            read_user_file(fifo, what="token", limit=100)
        except ConfigError as exc:
            result.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=30)  # a blocking open would never return: no writer exists
    assert not reader.is_alive()
    assert "not a regular file" in str(result[0])


def test_a_folder_and_a_missing_file_are_named(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        read_user_file(tmp_path, what="token", limit=100)
    with pytest.raises(ConfigError, match="no such file"):
        read_user_file(tmp_path / "nope", what="token", limit=100)


def test_text_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "token"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_user_text(path, what="token", limit=100)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_one_line_naming_it(tmp_path):
    path = tmp_path / "secret"
    path.write_bytes(b"x")
    path.chmod(0)
    with pytest.raises(ConfigError, match=r"secret: permission denied"):
        read_user_file(path, what="token", limit=100)


def test_an_atomic_write_has_the_mode_of_a_plain_write(tmp_path):
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    atomic_write_bytes(tmp_path / "atomic", b"y")
    assert stat.S_IMODE((tmp_path / "atomic").stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    assert (tmp_path / "atomic").read_bytes() == b"y"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_writer(path) as handle:
        handle.write(b"half")
        raise RuntimeError("crash mid-write")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_write_into_a_read_only_folder_is_one_line(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match=r"cannot write .*ro/out: permission denied"):
            atomic_write_bytes(folder / "out", b"x")
    finally:
        folder.chmod(0o700)


@pytest.mark.parametrize(
    ("code", "words"),
    [(13, "permission denied"), (28, "the disk is full"), (30, "read-only")],
)
def test_errors_a_user_can_fix_say_what_to_do(code, words):
    from budget_edge.files import os_error_message

    message = os_error_message(OSError(code, os.strerror(code)), "/a/b", "write")
    assert message.startswith("cannot write /a/b: ")
    assert words in message


def test_a_full_disk_during_an_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "graph.onnx"
    path.write_bytes(b"old")

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(ConfigError, match="graph.onnx: the disk is full"):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graph.onnx"]


def test_a_report_path_is_checked_writable_before_the_work(tmp_path):
    from budget_edge.files import check_writable_file

    assert check_writable_file(tmp_path / "report.csv") == tmp_path / "report.csv"
    assert list(tmp_path.iterdir()) == []  # the probe is gone
    with pytest.raises(ConfigError, match="cannot write /proc/version: /proc takes no new files"):
        check_writable_file("/proc/version")
    with pytest.raises(ConfigError, match="not a regular file"):
        check_writable_file("/dev/null")
    with pytest.raises(ConfigError, match="is a folder"):
        check_writable_file(tmp_path)
    with pytest.raises(ConfigError, match="folder .*missing does not exist"):
        check_writable_file(tmp_path / "missing" / "r.csv")
