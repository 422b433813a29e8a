"""Run a command under torchrun with two CPU processes (gloo), as the training tests do.

A plain module (not a fixture) so that tests in several folders share it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path


def run_two_ranks(command: Sequence[str], out: Path) -> subprocess.CompletedProcess[str]:
    """`python -m torch.distributed.run --standalone --nproc_per_node 2 *command`.

    gloo's TCP transport can abort a rank natively (SIGABRT from a C++ exception in
    its connection thread, pytorch/pytorch#188266) on a loaded machine; one CI run
    of this suite saw it. That abort, when no rank raised a Python exception (which
    can abort its peer the same way), is retried once with `out` emptied; the first
    attempt's report is kept as a warning. Every other failure is returned as it is.
    Python's fault handler is on, so an abort prints the Python stack it happened under.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    args += ["--nproc_per_node", "2", *command]
    # Two attempts fit in pytest-timeout's 600 s, so a slow one still reports.
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=280)
    if not native_abort(proc):
        return proc
    warnings.warn(f"a rank aborted natively; retrying once:\n{failure_report(proc)}", stacklevel=2)
    shutil.rmtree(out, ignore_errors=True)
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=280)


# How a native abort shows: the launcher names SIGABRT, or, when Python's fault
# handler itself crashes while printing the aborting process's threads (one CI run
# saw "Fatal Python error: Aborted" followed by a SIGSEGV), the abort's own lines.
ABORT_MARKS = ("(SIGABRT)", "Fatal Python error: Aborted", "terminate called")


def native_abort(proc: subprocess.CompletedProcess[str]) -> bool:
    """A rank aborted natively and no rank raised a Python exception: the only Python
    tracebacks are the launcher's own ChildFailedError, one per failed launch."""
    tracebacks = proc.stderr.count("Traceback (most recent call last)")
    launcher = len(re.findall(r"errors\.ChildFailedError:", proc.stderr))
    aborted = any(mark in proc.stderr for mark in ABORT_MARKS)
    return proc.returncode != 0 and aborted and tracebacks <= launcher


FATAL = re.compile(r"Fatal Python error|terminate called|what\(\)|Traceback|Error|^\s+File ")


def failure_report(proc: subprocess.CompletedProcess[str]) -> str:
    """The lines that say why a rank died (errors, fault-handler stacks), then the tail."""
    lines = proc.stderr.splitlines()
    fatal = [line for line in lines if FATAL.search(line)][:60]
    return "\n".join([*fatal, "-- last lines --", *lines[-30:], proc.stdout[-1000:]])
