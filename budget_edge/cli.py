"""The `budget-edge` command line.

Each subcommand lives in its own module under `budget_edge.commands` and is
imported only when it runs, so `budget-edge --help` and the runtime commands
(`bench`, `serve`) work on a device without torch.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping, Sequence

import click

from budget_edge import __version__
from budget_edge.errors import BudgetEdgeError
from budget_edge.files import os_error_message

# name -> (module under budget_edge.commands, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "pretrain": ("pretrain", "Train a backbone on a dataset (optionally with stochastic depth)."),
    "train": ("train", "Train the BudgetNet agent: curriculum, then joint fine-tuning."),
    "allocate": (
        "allocate",
        "Train the allocator: how many components each image runs (mode allocate).",
    ),
    "evaluate": ("evaluate", "Sweep budgets: accuracy, usage, FLOPs, baselines and plots."),
    "export": ("export", "Export a checkpoint to ONNX graphs per block plus a manifest."),
    "quantize": (
        "quantize",
        "Add fp16 or int8 (Q/DQ) graphs to an artifact, calibrated on its paths.",
    ),
    "sign": ("sign", "Sign an artifact for devices that run only trusted artifacts."),
    "build-engines": ("build_engines", "Build one TensorRT engine per exported graph, on the GPU."),
    "bench": ("bench", "Measure latency, accuracy and compute per budget with the runtime."),
    "serve": ("serve", "Serve an artifact dir over the Open Inference Protocol (v2)."),
    "demo": ("demo", "The whole pipeline on Fashion-MNIST, from the committed model to a request."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, _ = COMMANDS[cmd_name]
        module = importlib.import_module(f"budget_edge.commands.{module_name}")
        command: click.Command = module.command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help comes from the table, so --help imports no subcommand.
        with formatter.section("Commands"):
            formatter.write_dl([(name, desc) for name, (_, desc) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="budget-edge")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """budget-edge: one residual network, many costs, chosen per image by a budget.

    \b
    Example:
      budget-edge pretrain --backbone resnet20 --data fashion-mnist --epochs 10 --out runs/r20
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def check_command(args: Sequence[str], environ: Mapping[str, str] | None = None) -> None:
    """Parse `budget-edge ARGS` as the command line would, then run the command's own
    `check_options`, and nothing else: click.UsageError or a BudgetEdgeError where the
    command would refuse before any work. Scripts and the docs' command lines are held
    to it, so a refused line fails a test, not a run hours later."""
    name, *rest = args
    parent = click.Context(cli, info_name="budget-edge")
    command = cli.get_command(parent, name)
    if command is None:
        raise click.UsageError(f"no subcommand {name!r} (have {', '.join(COMMANDS)})")
    params = command.make_context(name, list(rest), parent=parent).params
    module = importlib.import_module(f"budget_edge.commands.{COMMANDS[name][0]}")
    check = getattr(module, "check_options", None)
    if check is not None:
        check(params, os.environ if environ is None else environ)


# click 8.2+ raises this for a group called without arguments; older click has none.
NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one line and exit 2; --debug shows tracebacks."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="budget-edge", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except NO_ARGS_IS_HELP as exc:  # bare `budget-edge`: the help, as before
        exc.show()
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        # One line like every other user error, and where the options are listed.
        where = exc.ctx.command_path if exc.ctx is not None else "budget-edge"
        click.echo(f"error: {exc.format_message()} (see {where} --help)", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except BudgetEdgeError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except OSError as exc:
        # A file the system refused (permissions, a full disk, a read-only artifact) that
        # no command turned into its own message: still one line naming the file.
        if debug:
            raise
        where = exc.filename if exc.filename is not None else "a file"
        click.echo(f"error: {os_error_message(exc, where, 'use')}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
