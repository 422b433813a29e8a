"""The subcommands of `budget-edge`, one module each (imported lazily by cli.py)."""

from __future__ import annotations

import shlex

import click


def command_line(ctx: click.Context) -> str:
    """The command with every option's value, so that a report says how to run it again."""
    words = ["budget-edge", str(ctx.command.name)]
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if value is None:
            continue
        if isinstance(param, click.Argument):
            words.append(str(value))
        elif isinstance(param, click.Option) and param.is_flag and isinstance(value, bool):
            # A flag takes no value: it is there or not (or its --no- form is).
            if param.secondary_opts:
                words.append(param.opts[0] if value else param.secondary_opts[0])
            elif value:
                words.append(param.opts[0])
        else:
            words += [param.opts[0], str(getattr(value, "text", value))]
    return shlex.join(words)
