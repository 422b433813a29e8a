"""Numeric options are finite and bounded, whatever command they belong to."""

import click
import pytest
from click.testing import CliRunner

from budget_edge.commands.options import (
    SEED,
    BoundedInt,
    FiniteFloat,
    Renamed,
    parse_batches,
    parse_budgets,
)


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


def test_budget_lists_and_ranges() -> None:
    assert parse_budgets("0.25, 0.5,1") == [0.25, 0.5, 1.0]
    assert parse_budgets("0.5") == [0.5]
    budgets = parse_budgets("0.1:1.0:0.05")  # the stop is included
    assert len(budgets) == 19
    assert budgets[0] == pytest.approx(0.1)
    assert budgets[1] == pytest.approx(0.15)
    assert budgets[-1] == pytest.approx(1.0)
    assert parse_budgets("0.5,0.5,1") == [0.5, 1.0]  # a duplicate would run a row twice


@pytest.mark.parametrize(
    "text", ["", "a,b", "0.5,", "1:0:0.1", "0:1:0", "0:1", "0:1:-1", "0.1:0.5:0.1:2", "0:inf:1"]
)
def test_budget_lists_that_cannot_be_read(text: str) -> None:
    with pytest.raises(ValueError, match="not understood"):
        parse_budgets(text)


@pytest.mark.parametrize("text", ["1.5", "-0.1,0.5", "0.5,nan", "0.5:1.5:0.5"])
def test_budgets_outside_0_1(text: str) -> None:
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        parse_budgets(text)


@pytest.mark.parametrize("text", ["0:1:1e-9", "0:1:5e-324"])
def test_a_range_of_a_billion_budgets_is_refused_without_making_it(text: str) -> None:
    with pytest.raises(ValueError, match="more than 1000 budgets"):
        parse_budgets(text)


def test_batch_lists() -> None:
    assert parse_batches("1,8") == [1, 8]
    assert parse_batches(" 4 ") == [4]
    for bad in ("", "1,,8", "one", "1.5"):
        with pytest.raises(ValueError, match="not understood"):
            parse_batches(bad)
    for bad in ("0", "8,-1"):
        with pytest.raises(ValueError, match="at least 1"):
            parse_batches(bad)
    with pytest.raises(ValueError, match="above 4096"):
        parse_batches("10000000")


def test_every_command_reads_budgets_the_same_way() -> None:
    """bench, evaluate and quantize share the one parser: the same text, the same list."""
    from budget_edge.cli import cli

    for name in ("bench", "evaluate", "quantize"):
        command = cli.get_command(click.Context(cli), name)
        option = next(p for p in command.params if p.name == "budgets")
        assert option.type.convert("0.5,0.5,0.25", option, None) == [0.5, 0.25]


# ---- one vocabulary: renamed options, the old spelling hidden but parsed ---------------

RENAMED = [
    # (command, current name, older name kept for a release, value)
    ("export", "--calib-images", "--calib-count", "64"),
    ("bench", "--static-search-images", "--static-search", "100"),
    ("evaluate", "--eval-images", "--limit", "100"),
    ("pretrain", "--eval-images", "--limit-test", "100"),
]
REQUIRED = {
    "export": ["m.pt", "--out", "a"],
    "bench": ["a"],
    "evaluate": ["m.pt", "--out", "e"],
    "pretrain": ["--out", "r"],
}


@pytest.mark.parametrize(("name", "new", "old", "value"), RENAMED)
def test_a_renamed_option_shows_its_new_name_and_parses_its_old_one(name, new, old, value):
    from budget_edge.cli import cli

    parent = click.Context(cli, info_name="budget-edge")
    command = cli.get_command(parent, name)
    help_text = command.get_help(click.Context(command, info_name=name, parent=parent))
    assert new in help_text
    assert old not in help_text.replace(new, "")  # hidden ('--limit' is in '--limit-train')
    params = [
        command.make_context(name, [*REQUIRED[name], flag, value], parent=parent).params
        for flag in (new, old)
    ]
    assert params[0] == params[1]
    assert str(value) in {str(v) for v in params[0].values()}


def test_every_eval_image_limit_is_called_eval_images():
    """pretrain, train, evaluate and bench limit the test images by one name."""
    from budget_edge.cli import cli

    parent = click.Context(cli, info_name="budget-edge")
    for name in ("pretrain", "train", "evaluate", "bench"):
        command = cli.get_command(parent, name)
        opts = {o for p in command.params for o in getattr(p, "opts", [])}
        assert "--eval-images" in opts, name


@click.command()
@click.option("--new-name", "--old-name", "value", cls=Renamed, old=["--old-name"], type=int)
def renamed_command(value):
    click.echo(f"value {value}")


def test_an_error_about_a_renamed_option_names_the_new_spelling():
    result = CliRunner().invoke(renamed_command, ["--old-name", "x"])
    assert result.exit_code == 2
    assert "'--new-name'" in result.output
    assert "--old-name'" not in result.output
    assert CliRunner().invoke(renamed_command, ["--old-name", "3"]).output == "value 3\n"
    with pytest.raises(TypeError, match="must be among them"):
        Renamed(["--a", "v"], old=["--b"])
