"""How ``accord audit`` writes: reports, JSON, progress, and lines of text it did not write.

Split from ``audit.cli``, which holds the commands. Standard output carries
the result (a report, a checkpoint, JSON for machines); standard error carries
warnings, errors and progress, so piping a result never mixes them in.

:func:`literal` is the one rule for showing text from elsewhere on a terminal,
for this CLI and the gateway's (``gateway.cli.render``); it lives here because
the audit package stands alone and the gateway may import it, not the reverse.
"""

from __future__ import annotations

import json
import sys
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.style import StyleType
from rich.text import Text

from audit.report import VerifyReport

__all__ = [
    "NEWLINE",
    "err",
    "line",
    "literal",
    "out",
    "print_json",
    "print_report",
    "show_progress",
]

out = Console(soft_wrap=True, emoji=False, highlight=False)
err = Console(stderr=True, soft_wrap=True, emoji=False, highlight=False)
#: What a newline inside a one-line value is shown as.
NEWLINE = "⏎"
# Control, format (bidirectional overrides, zero-width), surrogate and line or
# paragraph separator characters: they move the cursor, reorder or hide text.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_MARKER_STYLE = "dim"


def print_json(doc: Any) -> None:
    """Plain JSON on stdout: machine-read, so never wrapped or coloured."""
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")


def literal(obj: object, style: StyleType = "", *, multiline: bool = False) -> Text:
    """``obj`` as literal text: on one line unless ``multiline``, with no control characters.

    Details, names, notes and paths come from a log, an export, a server or
    another person. As a ``Text`` they are never read as markup or emoji codes
    (a stray ``[/bold]`` cannot crash a command or draw a fake verdict), and a
    newline (shown as ``⏎``) or another control character (as a dimmed
    ``\\x1b``-style escape) cannot start a line of its own, reorder the text or
    drive the terminal. ``multiline`` keeps newlines and tabs (a Rego file); it
    is for text printed on its own between separators, never beside a label.
    """
    text = "" if obj is None else str(obj)
    result = Text(style=style, end="")
    if text.isprintable():
        result.append(text)
        return result
    start = 0
    for i, ch in enumerate(text):
        if multiline and ch in "\n\t":
            continue
        if ch == "\n":
            shown = NEWLINE
        elif unicodedata.category(ch) in _ESCAPED_CATEGORIES:
            shown = ascii(ch)[1:-1]  # \t, \x1b, \u202e
        else:
            continue
        result.append(text[start:i])
        result.append(shown, _MARKER_STYLE)
        start = i + 1
    result.append(text[start:])
    return result


def line(*parts: object) -> Text:
    """A line of words and values, each part :func:`literal` text: ``(part, style)`` styles one."""
    text = Text()
    for part in parts:
        obj, style = part if isinstance(part, tuple) else (part, "")
        text.append_text(literal(obj, style))
    return text


@contextmanager
def show_progress(total: int | None, label: str) -> Iterator[Callable[[int], None] | None]:
    if not total or not sys.stderr.isatty():
        yield None
        return
    # Redrawn on each update rather than by a thread: a process with no other thread
    # can fork the workers of ``verify --jobs`` (see ``audit._parallel``).
    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        auto_refresh=False,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done: bar.update(task, completed=done, refresh=True)


def print_report(report: VerifyReport, as_json: bool) -> None:
    if as_json:  # one document for machines: its "warnings" carry the warnings
        print_json(report.to_json())
        return
    if report.ok:
        out.print(
            line(
                ("verified", "green"),
                f" entries [{report.start}, {report.size}), root {report.root.hex()}, "
                f"{report.checkpoints_verified} checkpoint(s) match",
            )
        )
        for witness, size in sorted(report.cosigned.items()):
            out.print(line("  witnessed by ", witness, f" up to {size}"))
    else:
        d = report.damage
        assert d is not None
        where = f"seq {d.seq}" if d.seq is not None else "the checkpoints"
        if d.end is not None:
            where += f" (somewhere in [{d.seq}, {d.end}))"
        out.print(line(("DAMAGED", "red"), f" at {where}: ", d.kind, ": ", d.detail))
    for w in report.warnings:
        err.print(line(("warning", "yellow"), ": ", w))
