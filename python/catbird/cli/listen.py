"""``catbird listen``: print events as they come.

::

    catbird listen 'catbird.task.*' 'orders.#'
    catbird listen 'catbird.#' --json --count 10

One line per event whose topic matches one of the patterns (binding syntax:
``*`` one token, a trailing ``#`` any number), ``TOPIC  DATA``; with
``--json`` one JSON object per line: topic, data (decoded when it is JSON),
node_id and received_at. Runs until Ctrl-C, or until ``--count`` events were
printed.
"""

from __future__ import annotations

import sys
from contextlib import closing
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from .. import _sql
from ..client import Client
from ..events import Event, parse_event, topic_matcher
from ._common import DsnOption, open_connection, usage_error
from .output import print_json

__all__ = ["listen_command"]


def _json_data(event: Event) -> Any:
    try:
        return event.json()
    except ValueError:
        return event.data


def listen_command(
    patterns: Annotated[
        list[str],
        typer.Argument(
            help="Topic patterns: tokens separated by '.', '*' matches one token, a trailing"
            " '#' any number (e.g. 'catbird.task.*', 'orders.#', '#' for everything).",
            show_default=False,
        ),
    ],
    count: Annotated[
        int | None, typer.Option("--count", min=1, help="Exit after printing this many events.")
    ] = None,
    dsn: DsnOption = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="One JSON object per event and line, not 'TOPIC  DATA'."),
    ] = False,
) -> None:
    """Print events (engine and application topics) as they are committed, until Ctrl-C."""
    matchers = []
    for pattern in patterns:
        try:
            matchers.append(topic_matcher(pattern))
        except ValueError as exc:
            usage_error(str(exc))
    printed = 0
    with open_connection(dsn) as conn:
        Client(conn).execute(_sql.listen_events())
        try:
            with closing(conn.notifies()) as notes:
                for note in notes:
                    event = parse_event(note.payload)
                    if event is None or not any(match(event.topic) for match in matchers):
                        continue
                    if as_json:
                        print_json(
                            {
                                "topic": event.topic,
                                "data": _json_data(event),
                                "node_id": event.node_id,
                                "received_at": datetime.now(UTC).isoformat(),
                            }
                        )
                    else:
                        line = event.topic if event.data is None else f"{event.topic}  {event.data}"
                        sys.stdout.write(line + "\n")
                        sys.stdout.flush()
                    printed += 1
                    if count is not None and printed >= count:
                        break
        except KeyboardInterrupt:
            pass  # Ctrl-C is how one stops listening
