"""Numeric options are finite and bounded, whatever command they belong to."""

import click
import pytest
from click.testing import CliRunner

from budget_edge.commands.options import SEED, BoundedInt, FiniteFloat


@click.command()
@click.option("--rate", type=FiniteFloat(min=0, min_open=True))
@click.option("--seed", type=SEED)
@click.option("--count", type=BoundedInt(1, 100))
def command(rate, seed, count):
    click.echo(f"{rate} {seed} {count}")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--rate", "nan"], "not a finite number"),
        (["--rate", "-inf"], "not a finite number"),
        (["--rate", "0"], "not in the range x>0"),
        (["--seed", str(2**70)], "not in the range 0<=x<=4294967295"),
        (["--count", "0"], "not in the range 1<=x<=100"),
        (["--count", "101"], "not in the range 1<=x<=100"),
    ],
)
def test_numbers_a_command_cannot_use_are_refused(args, words):
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 2
    assert words in result.output


def test_numbers_in_range_pass_through():
    result = CliRunner().invoke(command, ["--rate", "1e-3", "--seed", "7", "--count", "100"])
    assert result.exit_code == 0, result.output
    assert result.output.split() == ["0.001", "7", "100"]
