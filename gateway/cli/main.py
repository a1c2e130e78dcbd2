"""Entry point of the ``accord`` console script; sub-commands live in sibling modules."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="accord",
    help="Accord: a secure data-exchange gateway for government departments.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root() -> None:
    """Accord: a secure data-exchange gateway for government departments."""
