"""Resident memory of the runtime after every budget at batch 1 and 8, in a fresh process.

Torch-free, shared by runtime_targets.py (target 5) and
investigations/runtime_overhead.py (section 4, with the shared arena on and off).
The child runs with torch made unimportable, so only what the runtime needs is
counted. Run alone, on an artifact with an agent (psutil must be installed):

    python benchmarks/runtime_rss.py ARTIFACT [--threads 1] [--per-session-arena]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

_CHILD = """
import json, sys, numpy as np, psutil
sys.modules['torch'] = None
from budget_edge.runtime.backends import onnxruntime_backend
onnxruntime_backend.SHARED_ARENA = sys.argv[3] == 'shared'
from budget_edge.runtime import BudgetRuntime
rt = BudgetRuntime.load(sys.argv[1], backend='onnxruntime', threads=int(sys.argv[2]))
c, h, w = rt.manifest.preprocessing.input_size
pixels = np.random.default_rng(0).integers(0, 256, (64, h, w, c), dtype=np.uint8)
for budget in (0.25, 0.5, 0.75, 1.0):
    for n in (1, 8):
        for i in range(0, 64, n):
            rt.infer(pixels[i:i + n], budget=budget, cap='components')
print(json.dumps({'rss_mib': psutil.Process().memory_info().rss / 2**20,
                  'sessions': len(getattr(rt.backend, '_sessions', {}))}))
"""


def run_child(code: str, *args: str) -> dict[str, Any]:
    """Run `code` in a fresh interpreter; its last stdout line is a JSON object."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def runtime_rss(artifact: Path, threads: int, shared_arena: bool = True) -> dict[str, Any]:
    """{'rss_mib', 'sessions'} of a runtime that ran every budget at batch 1 and 8."""
    return run_child(
        _CHILD, str(artifact), str(threads), "shared" if shared_arena else "per-session"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("artifact", type=Path, help="an exported artifact directory")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument(
        "--per-session-arena",
        action="store_true",
        help="each session its own memory arena (the runtime shares one)",
    )
    args = parser.parse_args()
    try:
        result = runtime_rss(args.artifact, args.threads, not args.per_session_arena)
    except subprocess.CalledProcessError as exc:
        print((exc.stderr.strip().splitlines() or [str(exc)])[-1], file=sys.stderr)  # the error
        return 1
    arena = "per-session arenas" if args.per_session_arena else "one shared arena"
    print(
        f"{args.artifact}: {result['rss_mib']:.0f} MiB resident after every budget at "
        f"batch 1 and 8 ({result['sessions']} sessions, {args.threads} threads, {arena})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
