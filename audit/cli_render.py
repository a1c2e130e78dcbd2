"""How ``accord audit`` writes: reports, JSON, progress, and lines of text it did not write.

Split from ``audit.cli``, which holds the commands. Standard output carries
the result (a report, a checkpoint, JSON for machines); standard error carries
warnings, errors and progress, so piping a result never mixes them in.
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
from rich.text import Text

from audit.verify import VerifyReport

__all__ = ["err", "line", "out", "print_json", "print_report", "show_progress"]

out = Console(soft_wrap=True, emoji=False, highlight=False)
err = Console(stderr=True, soft_wrap=True, emoji=False, highlight=False)
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def print_json(doc: Any) -> None:
    """Plain JSON on stdout: machine-read, so never wrapped or coloured."""
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")


def line(*parts: object) -> Text:
    """A line of words and values, each part literal text: ``(part, style)`` styles one.

    Details, witness names and paths come from the log, an export or the
    system, not from this CLI: they are never read as markup or emoji codes,
    and a newline (shown as ``⏎``) or a control character (as ``\\x1b``)
    cannot start a line of its own or drive the terminal. The gateway's CLI
    follows the same rule (``gateway.cli.render``); the audit package stands
    alone, so it keeps its own copy.
    """
    line = Text()
    for part in parts:
        obj, style = part if isinstance(part, tuple) else (part, "")
        text = str(obj)
        if not text.isprintable():
            text = "".join(
                "⏎"
                if ch == "\n"
                else ascii(ch)[1:-1]
                if unicodedata.category(ch) in _ESCAPED_CATEGORIES
                else ch
                for ch in text
            )
        line.append(text, style)
    return line


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
