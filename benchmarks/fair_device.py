"""Train fair_training.py's unfinished runs on a lent GPU, in one call of the device tool.

Once on this machine, put Fashion-MNIST where the call can carry it (runs/ is ignored):

    mkdir -p runs/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz runs/fashion-mnist/

Then one `run` call of the device tool, with carry ["runs/fashion-mnist"] and a
timeout_s a minute above --minutes (checked here with `--device cpu --minutes 0.5
--gpu-workers 1 --loader-workers 0 --out /tmp/x`: it resumed ResNet-32 from the
committed state and stopped it on time; CUDA itself has not run it yet):

    PYTHONPATH=. python benchmarks/fair_device.py --out $OUT/fair-fmnist --minutes 8

It copies each unfinished run's committed state (best.pt, last.pt, history.json)
from benchmarks/results/fair-fmnist/ into OUT (a finished run's history.json only, so
that the workers skip it), starts --gpu-workers `fair_training.py --wait` workers there
on CUDA, one of them on the sandwich queue while it has a run left (the sandwich from
the plain ResNet-56 waits for that run), the others on the zoo queue (each takes the
next run no other worker holds; `--precision auto` is
bf16 on a GPU of compute capability 8 or later, as the recipe says), and after
--minutes stops them. Checkpoints are written whole or not at all, so a run stopped
mid-epoch goes on from its last finished epoch next time. OUT/progress.md says how far
each run got. Back here, copy the returned runs over the committed ones
(`cp -r FILES_AT/fair-fmnist/. benchmarks/results/fair-fmnist/`), then write
progress.md and targets.md and commit, as fair_training.py's docstring says.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from fair_training import QUEUES, RESULTS, epochs_of, progress, progress_table

STATE = ("history.json", "last.pt", "best.pt")


def stage_runs(source: Path, out: Path) -> list[str]:
    """Copy the runs' state from `source` into `out` (only the history of a finished run:
    progress.md shows them all); return the unfinished runs, the zoo's first."""
    unfinished = []
    for name, options in {**QUEUES["zoo"], **QUEUES["sandwich"]}.items():
        (out / name).mkdir(parents=True, exist_ok=True)
        done = progress(source / name) >= epochs_of(options)
        for file in STATE[:1] if done else STATE:
            if (source / name / file).is_file():
                shutil.copy2(source / name / file, out / name / file)
        if not done:
            unfinished.append(name)
    return unfinished


def worker_command(
    out: Path, device: str, data_dir: str | None, loader_workers: int = 2, queue: str = "zoo"
) -> list[str]:
    """One `fair_training.py --queue QUEUE --wait` worker on `device`, its runs in `out`;
    data loading in `loader_workers` processes (one thread decodes too slowly for a GPU).
    It waits for a run whose weights its next run starts from (another worker trains it)."""
    script = str(Path(__file__).with_name("fair_training.py"))
    words = [sys.executable, script, "--queue", queue, "--wait"]
    words += ["--results", str(out), "--device", device, "--workers", str(loader_workers)]
    words += ["--budget-edge", shlex.join([sys.executable, "-m", "budget_edge.cli"])]
    return words + (["--data-dir", data_dir] if data_dir else [])


def worker_queues(unfinished: list[str], gpu_workers: int) -> list[str]:
    """The queue of each worker: one per unfinished zoo run up to `gpu_workers`, and one
    of them for the sandwich queue where it has a run left (it waits for the plain
    ResNet-56 its run starts from)."""
    zoo = [name for name in unfinished if name in QUEUES["zoo"]]
    sandwich = ["sandwich"] if any(n in QUEUES["sandwich"] for n in unfinished) else []
    return (["zoo"] * min(len(zoo), gpu_workers - len(sandwich)) + sandwich)[:gpu_workers]


def stop(workers: list[subprocess.Popen[bytes]], grace_s: float = 20.0) -> None:
    """SIGTERM each worker's process group (the worker and its pretrain), then SIGKILL."""
    for worker in workers:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for worker in workers:
        try:
            worker.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where the runs train")
    parser.add_argument("--minutes", type=float, required=True, help="stop the workers after")
    parser.add_argument("--gpu-workers", type=int, default=4, help="runs trained at once")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--data-dir", default="runs/fashion-mnist")
    parser.add_argument("--source", type=Path, default=RESULTS, help="the committed runs")
    parser.add_argument("--loader-workers", type=int, default=2, help="pretrain's --workers")
    args = parser.parse_args()
    unfinished = stage_runs(args.source, args.out)
    print(f"unfinished: {', '.join(unfinished) or 'none'}", flush=True)
    deadline = time.monotonic() + 60 * args.minutes
    with contextlib.ExitStack() as logs:
        workers = []
        for i, queue in enumerate(worker_queues(unfinished, args.gpu_workers)):
            command = worker_command(
                args.out, args.device, args.data_dir, args.loader_workers, queue
            )
            log = logs.enter_context(open(args.out / f"worker{i}.log", "ab"))
            workers.append(
                subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
            time.sleep(5)  # each worker locks its run before the next one looks
        while time.monotonic() < deadline and any(w.poll() is None for w in workers):
            time.sleep(5)
        stop(workers)
    (args.out / "progress.md").write_text(progress_table(args.out))
    print(progress_table(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
