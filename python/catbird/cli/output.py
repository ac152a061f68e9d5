"""Rendering: JSON documents, cell formats and tables that fit the terminal.

:func:`table` lays a table out for a terminal ``width`` columns wide (80 when
stdout is a pipe) so that it reads well there:

* a ``fixed`` column (ids, names, statuses, counts, timestamps) is never cut
  or wrapped: it is as wide as its widest value;
* a ``cut`` column (JSON, messages, descriptions) shares what is left and a
  longer value is cut with ``…`` (``--full`` wraps it instead, whole);
* a ``wrap`` column shares what is left and always wraps (one record's
  details);
* when even that does not fit, columns marked ``hide`` are left out (lowest
  first, named in the caption), then timestamps marked ``stack`` go on two
  lines (date over time).

No column is ever narrower than its header, so no column disappears or loses
its header; a table that still cannot fit (a huge name) is wider than the
terminal rather than squeezed. ``--full`` hides nothing and cuts nothing.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import textwrap
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

__all__ = [
    "Column",
    "fmt_duration",
    "fmt_json",
    "fmt_ts",
    "print_json",
    "record",
    "status",
    "table",
]

# ---------------------------------------------------------------- JSON output


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Path | uuid.UUID):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def print_json(document: Any) -> None:
    """Print ``document`` as one line of JSON on stdout (``--json``)."""
    sys.stdout.write(json.dumps(document, default=_json_default, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def record(value: Any) -> dict[str, Any]:
    """A model record (a dataclass) as a JSON document."""
    doc: dict[str, Any] = dataclasses.asdict(value)
    return doc


# ---------------------------------------------------------------- cell formats

_STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "canceled": "yellow",
    "canceling": "yellow",
    "expired": "yellow",
    "skipped": "dim",
    "started": "cyan",
    "queued": "blue",
}


def status(value: str | None) -> str:
    """A run or step status, coloured (markup)."""
    if value is None:
        return "-"
    style = _STATUS_STYLE.get(value, "")
    return f"[{style}]{value}[/]" if style else value


def status_style(value: str) -> str:
    return _STATUS_STYLE.get(value, "")


def fmt_ts(ts: datetime | None) -> str:
    """A timestamp for a table: local time, to the second (JSON output keeps the offset)."""
    return "-" if ts is None else ts.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def fmt_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def fmt_duration(value: timedelta | None) -> str:
    if value is None:
        return "-"
    seconds = value.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


# ---------------------------------------------------------------- tables

Fit = Literal["fixed", "cut", "wrap"]

CUT_MIN = 14
"""A cut column is not squeezed below this (nor its header) before columns are hidden."""
FULL_MIN = 24
"""With ``--full`` a value column keeps at least this; the table grows past the terminal."""
STACKED = 10
"""The width of a timestamp on two lines (``2030-01-31`` over ``12:00:00``)."""


@dataclass(frozen=True)
class Column:
    """A table column and how it gives way on a narrow terminal (see the module doc)."""

    header: str
    fit: Fit = "fixed"
    justify: Literal["left", "right"] = "left"
    style: str = ""
    hide: int = 0
    """0: always shown; otherwise hidden when the table does not fit, lowest number first."""
    stack: bool = False
    """A timestamp that may go on two lines when the table does not fit."""


Cell = str | Text
"""A cell: rich markup (escape values!) or a Text."""


def _text(cell: Cell, one_line: bool) -> Text:
    text = Text.from_markup(cell) if isinstance(cell, str) else cell
    if one_line and "\n" in text.plain:
        text = Text(" ".join(text.plain.split()), style=text.style)
    return text


def _natural(header: str, cells: Sequence[Text]) -> int:
    lines = [header, *(line for cell in cells for line in cell.plain.splitlines())]
    return max(cell_len(line) for line in lines)


def _chrome(count: int) -> int:
    """Borders and padding of a table with ``count`` columns."""
    return 3 * count + 1


def _layout(
    columns: Sequence[Column], natural: Sequence[int], width: int, full: bool
) -> tuple[list[int], dict[int, int], bool]:
    """The shown columns, their widths, and whether timestamps are stacked."""
    shown = list(range(len(columns)))
    stacked = False

    def least(i: int) -> int:
        column = columns[i]
        header = max((cell_len(word) for word in column.header.split()), default=1)
        if column.fit == "fixed":
            return max(header, STACKED) if stacked and column.stack else natural[i]
        return max(cell_len(column.header), min(natural[i], FULL_MIN if full else CUT_MIN))

    def fits() -> bool:
        return sum(least(i) for i in shown) + _chrome(len(shown)) <= width

    if not full:
        for i in sorted((i for i in shown if columns[i].hide), key=lambda i: columns[i].hide):
            if fits():
                break
            shown.remove(i)
    stacked = not fits() and any(columns[i].stack for i in shown)

    widths = {i: least(i) for i in shown if columns[i].fit == "fixed"}
    room = width - _chrome(len(shown)) - sum(widths.values())
    # Value columns: a short one gets its whole width, the others share the rest evenly.
    sharing = sorted((i for i in shown if columns[i].fit != "fixed"), key=lambda i: natural[i])
    while sharing and natural[sharing[0]] <= room // len(sharing):
        i = sharing.pop(0)
        widths[i] = natural[i]
        room -= natural[i]
    for k, i in enumerate(sharing):
        share = room // len(sharing) + (1 if k < room % len(sharing) else 0)
        # never narrower than its header; with --full, wider than the terminal before too narrow
        floor = least(i) if full else cell_len(columns[i].header)
        widths[i] = max(floor, share)
    return shown, widths, stacked


def _hidden_note(hidden: Sequence[str], width: int) -> str:
    note = f"not shown at this width: {', '.join(hidden)} (--full shows them)"
    return textwrap.fill(note, width=max(width, 20))


def table(
    title: str,
    columns: Sequence[Column],
    rows: Sequence[Sequence[Cell]],
    *,
    width: int,
    full: bool = False,
) -> Table:
    """``rows`` under ``columns``, laid out for a ``width`` wide terminal."""
    cells = [
        [_text(cell, not full and col.fit == "cut") for cell, col in zip(row, columns, strict=True)]
        for row in rows
    ]
    natural = [_natural(col.header, [row[i] for row in cells]) for i, col in enumerate(columns)]
    shown, widths, stacked = _layout(columns, natural, width, full)
    hidden = [columns[i].header for i in range(len(columns)) if i not in shown]
    result = Table(
        title=title,
        title_justify="left",
        caption=_hidden_note(hidden, width) if hidden else None,
        caption_justify="left",
        width=sum(widths.values()) + _chrome(len(shown)),
    )
    for i in shown:
        column = columns[i]
        cut = column.fit == "cut" and not full
        wraps = (column.fit != "fixed" and not cut) or (stacked and column.stack)
        result.add_column(
            column.header,
            justify=column.justify,
            style=column.style or None,
            width=widths[i],
            no_wrap=not wraps,
            overflow="ellipsis" if cut else "fold",
        )
    for row in cells:
        result.add_row(*(row[i] for i in shown))
    return result
