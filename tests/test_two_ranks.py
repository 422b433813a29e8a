"""The torchrun tests' retry rule: only a native abort with no Python exception is retried."""

from __future__ import annotations

import subprocess

from two_ranks import native_abort

LAUNCHER = """Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/torch/distributed/run.py", line 1028, in main
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
"""


def finished(returncode: int, stderr: str) -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess(["torchrun"], returncode, stdout="", stderr=stderr)


def test_an_abort_reported_as_sigabrt_is_retried() -> None:
    assert native_abort(finished(1, "exitcode  : -6 (pid: 1)  (SIGABRT)\n" + LAUNCHER))


def test_an_abort_whose_fault_handler_crashed_is_retried() -> None:
    # What one CI run printed: the abort, then a SIGSEGV from the fault handler.
    stderr = (
        "terminate called without an active exception\nFatal Python error: Aborted\n"
        "Thread 0xFatal Python error: Segmentation fault\n" + LAUNCHER
    )
    assert native_abort(finished(1, stderr + "exitcode  : -11 (pid: 2)  (SIGSEGV)\n"))


def test_a_python_exception_in_a_rank_is_not_retried() -> None:
    rank = 'Traceback (most recent call last):\n  File "train.py"\nValueError: bad\n'
    assert not native_abort(finished(1, rank + "(SIGABRT)\n" + LAUNCHER))


def test_a_segfault_without_an_abort_is_not_retried() -> None:
    assert not native_abort(finished(1, "exitcode  : -11 (pid: 2)  (SIGSEGV)\n" + LAUNCHER))


def test_a_run_that_succeeded_is_not_retried() -> None:
    assert not native_abort(finished(0, "terminate called without an active exception\n"))
