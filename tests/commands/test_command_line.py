"""The command a report records must run again as it ran (issue 22: rebuild from it)."""

import shlex

import click
from click.testing import CliRunner

from budget_edge.commands import command_line


def test_every_value_of_a_repeatable_option_is_recorded_as_typed() -> None:
    seen: list[str] = []

    @click.command("bench")
    @click.argument("artifact")
    @click.option("--also-mode", multiple=True)
    @click.option("--threads", type=int)
    @click.option("--plot/--no-plot", default=True)
    def bench(artifact: str, also_mode: tuple[str, ...], threads: int, plot: bool) -> None:
        seen.append(command_line(click.get_current_context()))

    args = ["runs/art", "--also-mode", "greedy", "--also-mode", "rank", "--threads", "1"]
    assert CliRunner().invoke(bench, args).exit_code == 0
    assert seen[-1] == (
        "budget-edge bench runs/art --also-mode greedy --also-mode rank --threads 1 --plot"
    )
    assert CliRunner().invoke(bench, ["runs/art"]).exit_code == 0
    assert "--also-mode" not in shlex.split(seen[-1])  # none given: left out
