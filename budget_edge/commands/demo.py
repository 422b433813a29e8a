"""`budget-edge demo`: the whole pipeline on Fashion-MNIST, offline.

By default it starts from the ResNet-20 committed under benchmarks/results/ (trained
under the fair recipe, with a validation split), so a first run takes minutes, not
the quarter of an hour pretraining would. `--from-scratch` pretrains the backbone and
its zoo member first, as a user with nothing committed would.

Each stage is the real subcommand, called in-process with the arguments a user
would type, so the demo shows exactly what the tool does; the last stage starts
`budget-edge serve` as its own process and sends it one request. A stage whose
output already exists is skipped, and a stage that stopped half-way resumes:
running `make demo` again after a crash loses nothing.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

import budget_edge
from budget_edge.errors import BudgetEdgeError, ConfigError

DEMO_BUDGETS = "0.25,0.5,0.75,1.0"
# The budget of the one request the serve stage sends: some blocks skipped, at an
# accuracy (about 91% in the demo) where one image is usually answered right.
SERVE_BUDGET = 0.75
# A source checkout holds benchmarks/ beside the package; a wheel does not.
REPO = Path(budget_edge.__file__).resolve().parents[1]
COMMITTED = REPO / "benchmarks/results/fair-fmnist/resnet20-s0/best.pt"
# The zoo member the bench compares with (ResNet-8 under the same recipe and split).
COMMITTED_ZOO = REPO / "benchmarks/results/fair-fmnist/resnet8-s0/best.pt"
ZOO_BACKBONE = "resnet8"
# Every stage in run order; the first two only with --from-scratch.
STAGES = (
    "pretrain",
    "pretrain-zoo",
    "train",
    "allocate",
    "evaluate",
    "export",
    "quantize",
    "export-zoo",
    "bench",
    "serve",
)


@dataclass(frozen=True)
class Preset:
    """How much work each stage does."""

    pretrain_epochs: int  # --from-scratch only, for the backbone and its zoo member
    limit_train: int | None  # pretraining images (None: all 60000)
    val_size: int  # the validation split, held out of all 60000 before the limit
    drop_prob: float
    train_preset: str
    bench_iterations: int
    pretrain_extra: tuple[str, ...] = ()
    train_extra: tuple[str, ...] = ()
    allocate_extra: tuple[str, ...] = ()
    evaluate_extra: tuple[str, ...] = ()
    export_extra: tuple[str, ...] = ()
    quantize_extra: tuple[str, ...] = ()
    bench_extra: tuple[str, ...] = ()


PRESETS = {
    # Sized for at most 4.5 minutes of stages on a quiet 2-core CPU from the committed
    # model: 222 s with one thread on a free core (benchmarks/results/demo.md);
    # --from-scratch adds the pretraining.
    # The light extractor: resnet8 costs 30% of ResNet-20 and made the runtime slower
    # than the static graph at c >= 0.5 (benchmarks/results/bench-resnet20-light/).
    "demo": Preset(
        pretrain_epochs=3,
        limit_train=20000,
        val_size=2000,
        drop_prob=0.1,
        train_preset="demo",
        bench_iterations=30,
        train_extra=(
            "--extractor",
            "light",
            "--limit-train",
            "4000",
            "--eval-images",
            "500",
            "--curriculum-epochs",
            "2",
            "--finetune-epochs",
            "2",
        ),
        allocate_extra=("--limit-train", "4000", "--calib-images", "2000", "--epochs", "4"),
        evaluate_extra=("--eval-images", "1000", "--val-size", "1000", "--latency-images", "0"),
        # The defaults make the artifact run mode allocate with the allocator's count
        # masks as whole graphs: one image is two graph calls (runtime/count_plan.py).
        export_extra=("--static-masks", "fashion-mnist", "--static-search-images", "1000"),
        quantize_extra=("--calib-images", "256"),
        bench_extra=("--eval-images", "2000", "--warmup", "5"),
    ),
    # The full schedule: the committed results under benchmarks/results/.
    "paper": Preset(
        pretrain_epochs=15,
        limit_train=None,
        val_size=5000,
        drop_prob=0.1,
        train_preset="paper",
        bench_iterations=200,
    ),
    # Seconds per stage: checks that the stages fit together (used by the tests).
    "smoke": Preset(
        pretrain_epochs=1,
        limit_train=256,
        val_size=128,
        drop_prob=0.1,
        train_preset="demo",
        bench_iterations=3,
        pretrain_extra=("--eval-images", "128"),
        train_extra=(
            "--limit-train",
            "256",
            "--eval-images",
            "128",
            "--curriculum-epochs",
            "1",
            "--finetune-epochs",
            "1",
            "--extractor",
            "light",
            "--prior-images",
            "128",
        ),
        allocate_extra=("--limit-train", "256", "--calib-images", "64", "--epochs", "1"),
        export_extra=("--static-masks", "fashion-mnist", "--static-search-images", "64"),
        quantize_extra=("--calib-images", "64"),
        evaluate_extra=("--eval-images", "64", "--val-size", "64", "--latency-images", "2"),
        bench_extra=("--eval-images", "128", "--warmup", "1"),
    ),
}


@dataclass(frozen=True)
class Stage:
    name: str
    done_marker: Path  # the stage's final output; present means done
    resume_marker: Path | None  # present means a half-done run to resume
    args: list[str]  # budget-edge's arguments (serve: without --port, chosen at start)


def committed_checkpoint() -> Path:
    """The committed ResNet-20, or a one-line error where there is none (a wheel)."""
    if not COMMITTED.is_file():
        raise ConfigError(
            f"the committed ResNet-20 ({COMMITTED}) is not here (an install without "
            "the repository?): pass --checkpoint PATH to start from your own backbone, "
            "or --from-scratch to pretrain one"
        )
    return COMMITTED


def plan(
    out: Path,
    data_dir: str | None,
    preset: Preset,
    backbone: str = "resnet20",
    checkpoint: Path | None = None,
    zoo: Path | None = None,
) -> list[Stage]:
    """The stages, in order, with the exact command-line arguments of each.

    `checkpoint` None means from scratch: pretrain `backbone` and a ResNet-8 zoo
    member first. Otherwise the agent trains on `checkpoint`, and `zoo` (None: no zoo)
    is the backbone the bench compares with.
    """
    data = ["--data", "fashion-mnist"] + (["--data-dir", data_dir] if data_dir else [])
    agent, art, bench = out / "budgetnet", out / "artifact", out / "bench"
    zoo_art = out / "zoo-artifact"
    allocated = agent / "allocated.pt"
    sweep = out / "evaluate"
    stages = []
    if checkpoint is None:
        pre, pre_zoo = out / "pretrain", out / "pretrain-zoo"
        stages += [
            _pretrain("pretrain", backbone, pre, data, preset),
            _pretrain("pretrain-zoo", ZOO_BACKBONE, pre_zoo, data, preset),
        ]
        checkpoint, zoo = pre / "best.pt", pre_zoo / "best.pt"
    stages += [
        Stage(
            "train",
            agent / "budgetnet.pt",
            agent / "last.pt",
            [
                "train",
                "--checkpoint",
                str(checkpoint),
                *data,
                "--preset",
                preset.train_preset,
                *preset.train_extra,
                "--out",
                str(agent),
            ],
        ),
        # How many of the agent's components each image runs (mode allocate).
        Stage(
            "allocate",
            allocated,
            None,
            [
                "allocate",
                str(agent / "budgetnet.pt"),
                *data,
                *preset.allocate_extra,
                "--out",
                str(allocated),
            ],
        ),
        # The agent against random masks, static orders and the static front, in PyTorch.
        Stage(
            "evaluate",
            sweep / "sweep.json",
            None,
            [
                "evaluate",
                str(allocated),
                *data,
                "--budgets",
                DEMO_BUDGETS,
                *preset.evaluate_extra,
                "--out",
                str(sweep),
            ],
        ),
        Stage(
            "export",
            art / "manifest.json",
            None,
            ["export", str(allocated), "--out", str(art), *preset.export_extra],
        ),
        # int8 beside fp32, calibrated on the paths the agent takes (docs/quantize.md).
        Stage(
            "quantize",
            out / "quantize.json",
            None,
            [
                "quantize",
                str(art),
                "--precision",
                "int8",
                "--calib-data",
                "fashion-mnist",
                *preset.quantize_extra,
            ],
        ),
    ]
    if zoo is not None:
        stages.append(
            Stage(
                "export-zoo",
                zoo_art / "manifest.json",
                None,
                ["export", str(zoo), "--out", str(zoo_art)],
            )
        )
    stages += [
        Stage(
            "bench",
            bench / "bench.json",
            None,
            [
                "bench",
                str(art),
                *data,
                "--budgets",
                DEMO_BUDGETS,
                "--batch",
                "1",
                "--precision",
                "fp32,int8",
                "--iterations",
                str(preset.bench_iterations),
                *(["--zoo", str(zoo_art)] if zoo is not None else []),
                *preset.bench_extra,
                "--json",
                str(bench / "bench.json"),
                "--md",
                str(bench / "bench.md"),
                "--csv",
                str(bench / "bench.csv"),
                "--plot",
                str(bench / "bench.png"),
            ],
        ),
        # The served model answers one request, as device software would send it.
        Stage(
            "serve",
            out / "serve" / "answer.json",
            None,
            ["serve", str(art), "--host", "127.0.0.1", "--budget", f"fixed:{SERVE_BUDGET}"],
        ),
    ]
    return stages


def _pretrain(name: str, backbone: str, out: Path, data: list[str], preset: Preset) -> Stage:
    limit = ["--limit-train", str(preset.limit_train)] if preset.limit_train else []
    return Stage(
        name,
        out / "done.json",
        out / "last.pt",
        [
            "pretrain",
            "--backbone",
            backbone,
            *data,
            "--epochs",
            str(preset.pretrain_epochs),
            "--drop-prob",
            str(preset.drop_prob),
            "--val-size",
            str(preset.val_size),
            *limit,
            *preset.pretrain_extra,
            "--out",
            str(out),
        ],
    )


def _still_done(stage: Stage) -> bool:
    """A re-export drops the artifact's int8 set, so quantize's marker alone is not enough."""
    if stage.name != "quantize":
        return True
    from budget_edge.runtime.manifest import Manifest

    try:
        return "int8" in Manifest.load(Path(stage.args[1])).precisions
    except BudgetEdgeError:
        return False


def _stop_after(stages: list[Stage], until: str | None) -> list[Stage]:
    """The stages up to and including `until` (all of them without it)."""
    if until is None:
        return stages
    names = [stage.name for stage in stages]
    if until not in names:
        # Pretraining runs only with --from-scratch; export-zoo only with a zoo member.
        raise ConfigError(f"--until {until}: this demo's stages are {', '.join(names)}")
    return stages[: names.index(until) + 1]


def run_stage(stage: Stage, data_dir: str | None) -> None:
    """Run one stage; user errors propagate to the CLI's handler."""
    from budget_edge.cli import cli

    args = list(stage.args)
    if stage.resume_marker is not None and stage.resume_marker.exists():
        args.append("--resume")
    click.secho(f"\n== {stage.name}: budget-edge {' '.join(args)}", bold=True)
    start, cpu = time.perf_counter(), time.process_time()
    if stage.name == "serve":
        serve_one_request(stage, data_dir)
    else:
        cli.main(args=args, prog_name="budget-edge", standalone_mode=False)
    # CPU time and the load average say whether the time was this machine's or a crowd's.
    took, cpu, load = time.perf_counter() - start, time.process_time() - cpu, os.getloadavg()[0]
    click.echo(f"== {stage.name} took {took:.0f} s (CPU {cpu:.0f} s, load average {load:.1f})")


# How long the server may take to load (every session made and warmed up) on a busy CPU.
READY_TIMEOUT_S = 120.0


def serve_one_request(stage: Stage, data_dir: str | None) -> None:
    """Start `budget-edge serve`, send one test image, print the answer, stop the server."""
    from budget_edge.data.registry import load_arrays
    from budget_edge.runtime.manifest import Manifest

    artifact = Path(stage.args[1])
    manifest = Manifest.load(artifact)
    test = load_arrays("fashion-mnist", data_dir, "test")
    image, label = test.images[0], int(test.labels[0])
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    stage.done_marker.parent.mkdir(parents=True, exist_ok=True)
    log_path = stage.done_marker.parent / "server.log"
    command = [sys.executable, "-m", "budget_edge.cli", *stage.args, "--port", str(port)]
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_ready(server, base, log_path)
        click.echo(f"server ready on {base} (log: {log_path})")
        request = {
            "parameters": {"budget": SERVE_BUDGET},
            "inputs": [
                {
                    "name": "IMAGE",
                    "datatype": "UINT8",
                    "shape": [1, *image.shape],
                    "data": image.ravel().tolist(),
                }
            ],
            "outputs": [{"name": "CLASS"}, {"name": "MASK"}, {"name": "FLOPS"}],
        }
        url = f"{base}/v2/models/{manifest.backbone}/infer"
        click.echo(f"POST {url}: test image 0 (HWC uint8), budget {SERVE_BUDGET}")
        answer = _post_json(url, request)
        click.echo(json.dumps(answer))
        outputs = {o["name"]: o["data"] for o in answer["outputs"]}
        names = test.info.class_names
        predicted = int(outputs["CLASS"][0])
        click.echo(
            f"answer: {names[predicted]} (label: {names[label]}), "
            f"{sum(bool(m) for m in outputs['MASK'])} of {len(outputs['MASK'])} blocks run, "
            f"{outputs['FLOPS'][0] / manifest.full_flops:.0%} of the FLOPs"
        )
    finally:
        _stop(server)
    stage.done_marker.write_text(json.dumps({"request": url, "answer": answer}) + "\n")


def _free_port() -> int:
    """A loopback port nothing listens on now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_ready(server: subprocess.Popen[bytes], base: str, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            last = log_path.read_text().strip().splitlines()[-1:] or ["(nothing)"]
            raise ConfigError(f"the server stopped before it was ready: {last[0]}")
        try:
            with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=2) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass  # not listening yet, or still loading
        time.sleep(0.2)
    raise ConfigError(
        f"the server was not ready after {READY_TIMEOUT_S:.0f} s; its log: {log_path}"
    )


def _post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            answer: dict[str, Any] = json.load(reply)
            return answer
    except urllib.error.HTTPError as exc:
        raise ConfigError(f"the server answered {exc.code}: {exc.read().decode()[:200]}") from exc


def _stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM, the server's own clean shutdown; kill it only if that hangs."""
    if server.poll() is not None:
        return
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    click.echo(f"server stopped (exit {server.returncode})")


@click.command("demo")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("runs/demo"),
    show_default=True,
    help="Folder for every stage's output.",
)
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Backbone to start from [the committed ResNet-20, "
    "benchmarks/results/fair-fmnist/resnet20-s0/best.pt].",
)
@click.option(
    "--from-scratch",
    is_flag=True,
    help="Pretrain the backbone (--backbone) and a ResNet-8 zoo member first, "
    "instead of starting from a committed checkpoint.",
)
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    default="demo",
    show_default=True,
    help="demo: about 4 minutes of stages on 2 cores (plus pretraining with --from-scratch); "
    "paper: the full schedule; smoke: seconds per stage, to check the wiring.",
)
@click.option(
    "--backbone",
    default="resnet20",
    show_default=True,
    help="With --from-scratch: the backbone to pretrain (any CIFAR ResNet or ResNeXt name).",
)
@click.option(
    "--data-dir", help="Fashion-MNIST folder (default /usr/share/datasets/fashion-mnist)."
)
@click.option(
    "--until",
    type=click.Choice(STAGES),
    help="Stop after this stage; a later run without it goes on from there.",
)
@click.option("--fresh", is_flag=True, help="Start over: ignore what earlier runs left in --out.")
def command(
    out: Path,
    checkpoint: Path | None,
    from_scratch: bool,
    preset: str,
    backbone: str,
    data_dir: str | None,
    until: str | None,
    fresh: bool,
) -> None:
    """The whole pipeline on Fashion-MNIST with no network, from the committed
    ResNet-20 (94.9% validation, 94.2% test accuracy) and ResNet-8 zoo member.

    \b
    Stages, each the real subcommand:
      train       the agent, briefly (curriculum, then joint fine-tuning)
      allocate    the depth router: how many components each image runs
      evaluate    budget sweep in PyTorch against random and static masks
      export      ONNX graphs and manifest (mode allocate, count masks fused)
      quantize    int8 graphs beside the fp32 ones
      export-zoo  the zoo member's graphs
      bench       accuracy and latency per budget next to the static graph, the static
                  masks and the zoo; a verdict line and OUT/bench/bench.png
      serve       `budget-edge serve` on a free loopback port answers one test image
    --from-scratch runs two stages first: pretrain (the backbone) and pretrain-zoo
    (a ResNet-8), as a user with nothing committed would.

    Finished stages are skipped and a stage that was interrupted resumes, so
    running the demo again continues where it stopped.

    \b
    Example:
      budget-edge demo --out runs/demo
      budget-edge demo --checkpoint runs/r20/best.pt --out runs/demo-mine
      budget-edge demo --from-scratch --out runs/demo-scratch
    """
    if from_scratch and checkpoint is not None:
        raise ConfigError("--from-scratch pretrains its own backbone: leave out --checkpoint")
    given = click.get_current_context().get_parameter_source("backbone")
    if not from_scratch and given is not click.core.ParameterSource.DEFAULT:
        raise ConfigError("--backbone names what --from-scratch pretrains: add --from-scratch")
    if from_scratch:
        stages = plan(out, data_dir, PRESETS[preset], backbone)
        source = f"from scratch ({backbone})"
    else:
        if checkpoint is None:
            checkpoint = committed_checkpoint()
        elif not checkpoint.is_file():
            raise ConfigError(f"--checkpoint {checkpoint} is not a file")
        zoo = COMMITTED_ZOO if COMMITTED_ZOO.is_file() else None
        if zoo is None:
            click.echo(f"no zoo member at {COMMITTED_ZOO}: the bench runs without a zoo")
        stages = plan(out, data_dir, PRESETS[preset], checkpoint=checkpoint, zoo=zoo)
        source = str(checkpoint.resolve())
    stages = _stop_after(stages, until)
    record = {"preset": preset, "source": source}
    if fresh and out.exists():
        if not (out / "demo.json").exists() and any(out.iterdir()):
            raise ConfigError(f"{out} is not a demo folder (no demo.json); choose another --out")
        import shutil

        shutil.rmtree(out)
    if (out / "demo.json").exists():
        # Skipped stages would mix two runs' outputs.
        earlier = json.loads((out / "demo.json").read_text())
        if earlier != record:
            raise ConfigError(
                f"{out} holds a demo of another start or preset ({earlier}): "
                "pass --fresh to start over, or another --out"
            )
    (out / "bench").mkdir(parents=True, exist_ok=True)  # bench writes its reports here
    (out / "demo.json").write_text(json.dumps(record) + "\n")
    start = time.perf_counter()
    for stage in stages:
        if stage.done_marker.exists() and _still_done(stage):
            click.echo(f"== {stage.name}: done already ({stage.done_marker}), skipped")
            continue
        run_stage(stage, data_dir)
        if stage.name.startswith("pretrain") or stage.name == "quantize":
            stage.done_marker.write_text('{"done": true}\n')  # their outputs do not say "done"
    if until is not None and until != STAGES[-1]:
        click.echo(
            f"\ndemo stopped after {until} (--until) in {time.perf_counter() - start:.0f} s; "
            "run it again without --until to go on"
        )
        return
    click.echo(
        f"\ndemo finished in {time.perf_counter() - start:.0f} s; "
        f"plot: {out / 'bench' / 'bench.png'}, table: {out / 'bench' / 'bench.md'}, "
        f"served answer: {out / 'serve' / 'answer.json'}"
    )
