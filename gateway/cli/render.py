"""How the CLI puts text it did not write on the terminal: as text, never as markup.

Names, notes, check output, OPA messages, problem details and agreement titles
come from the gateway or from other people. Read as Rich markup, a proposer's
note could draw a fake green check or a fake impact line in front of the
officer who approves it, and a stray ``[/bold]`` would crash the command. So a
value reaches a console only as a :class:`~rich.text.Text` built by
:func:`value` (or a line built by :func:`line`): markup and emoji codes stay
literal, and a value stays on one line, with newlines shown as ``⏎`` and
other control characters (terminal escapes, bidirectional overrides) as
``\\x1b``-style escapes. That rule is the audit CLI's
(:func:`audit.cli_render.literal`, here as :func:`value`): the audit package
stands alone, so the gateway uses its rule rather than lending it one. The CLI
styles its own words with ``(words, style)`` pairs, not markup, so no part of a
line is ever parsed.

Output that is not a terminal (a pipe, a file) is never cut or wrapped: the
people and programs reading it copy values out of it.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console
from rich.panel import Panel
from rich.rule import Rule
from rich.style import StyleType
from rich.table import Table
from rich.text import Text

from audit.cli_render import NEWLINE
from audit.cli_render import literal as value

__all__ = [
    "NEWLINE",
    "fields_panel",
    "line",
    "new_console",
    "row",
    "rule",
    "value",
]

#: The width of output that is not a terminal: wide enough that no value is cut.
UNBOUNDED_WIDTH = 1 << 20
#: A rule in piped output is a separator, not a value; it keeps a terminal's width.
_PIPED_RULE_WIDTH = 80

Part = Text | str | int | tuple[object, StyleType] | None


def new_console(*, stderr: bool = False) -> Console:
    """A console that prints no emoji codes, and does not cut lines unless on a terminal."""
    console = Console(stderr=stderr, emoji=False, highlight=False, soft_wrap=stderr)
    if not console.is_terminal:
        console.width = UNBOUNDED_WIDTH
    return console


def line(*parts: Part) -> Text:
    """One line from parts: ``Text`` as it is, ``(obj, style)`` and anything else as a value.

    The CLI's own words pass through :func:`value` like everything else, so a
    line is literal text whichever part a value lands in.
    """
    out = Text(end="\n")
    for part in parts:
        if isinstance(part, Text):
            out.append_text(part)
        elif isinstance(part, tuple):
            out.append_text(value(part[0], part[1]))
        else:
            out.append_text(value(part))
    return out


def row(table: Table, *cells: Part) -> None:
    """Add a row whose cells are values: no cell is read as markup."""
    table.add_row(*(line(cell) for cell in cells))


def fields_panel(title: Part, fields: Iterable[tuple[str, Text]]) -> Panel:
    """Labelled values in a box; a value that wraps stays in its column, under no label.

    A value cannot start a line of its own: it has no newline, and a long one
    wraps inside the value column, so no value reads as another field.
    """
    grid = Table.grid(padding=(0, 2))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for label, text in fields:
        grid.add_row(Text(label), text)
    return Panel(grid, title=line(title), expand=False)


def rule(console: Console, title: Part) -> None:
    """A separator naming ``title``; as wide as a terminal, and as 80 columns in a pipe."""
    width = None if console.is_terminal else min(console.width, _PIPED_RULE_WIDTH)
    console.print(Rule(line(title)), width=width)
