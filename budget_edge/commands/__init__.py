"""The subcommands of `budget-edge`, one module each (imported lazily by cli.py).

A command whose options have rules click cannot state (one option needs another, two
exclude each other, a value is refused only beside another, a spec with a syntax of
its own) states them in `check_options(params, environ)`: by the options' text alone,
no file read and nothing loaded, raising a ConfigError. The command calls it first,
with its own parsed parameters; the docs test calls it on every documented command
line, so a line the docs show is a line the command accepts.
"""

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
        elif isinstance(param, click.Option) and param.multiple:
            # A repeatable option is given once per value (a tuple; none: left out).
            for item in value:
                words += [param.opts[0], str(getattr(item, "text", item))]
        else:
            words += [param.opts[0], str(getattr(value, "text", value))]
    return shlex.join(words)
