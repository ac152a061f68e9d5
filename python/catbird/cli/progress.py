"""Progress of long commands, drawn on stderr only when it is a terminal.

Piped or redirected output gets nothing extra (stdout stays the data,
stderr stays the errors). Work with a known size (batches of a bulk send)
shows a bar with counts; work done by one SQL statement (a purge) or by
repeated bounded batches of unknown number (gc) shows a spinner with what
is done so far: no percentages that are not known.

The console is made by :func:`console` on every use, so it follows
``sys.stderr`` (which test runners swap); tests replace :func:`console` to
draw on a forced terminal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["Advance", "console", "progress"]

#: Reports work done: ``advance(n)`` adds ``n`` to the count.
Advance = Callable[[int], None]


def console() -> Console:
    """The console progress is drawn on: stderr."""
    return Console(stderr=True)


def _ignore(n: int) -> None:
    pass


@contextmanager
def progress(description: str, total: int | None = None, *, unit: str = "") -> Iterator[Advance]:
    """Show progress of ``description`` while the block runs (on a terminal only).

    ``total`` known: a bar with ``done/total``; ``None``: a spinner and the
    count so far (``unit`` names what is counted; no count without one).
    The display is removed when the block ends, so the command's own
    report follows as it would without it.
    """
    target = console()
    if not target.is_terminal:
        yield _ignore
        return
    columns: list[ProgressColumn | str] = [SpinnerColumn(), TextColumn("{task.description}")]
    if total is None:
        if unit:
            columns.append(TextColumn("{task.completed} " + unit))
        columns.append(TimeElapsedColumn())
    else:
        columns += [BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=target, transient=True) as bar:
        task = bar.add_task(description, total=total)

        def advance(n: int) -> None:
            bar.advance(task, n)

        yield advance
