"""``catbird inbox ...``: the durable per-identity inbox (notifications).

::

    catbird inbox send user-42 import.progress "60%" --collapse-key import-7
    catbird inbox read user-42                     # unseen, oldest first
    catbird inbox read user-42 --after-id 17 -n 10 --json
    catbird inbox seen user-42 --until 21          # everything up to id 21
    catbird inbox seen user-42 18 20               # exactly these ids

IDENTITY is whatever names an inbox in the application (a user id, a
session). Reading marks nothing; ``seen`` acknowledges.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer
from rich.console import RenderableType
from rich.markup import escape

from ..models import Notification
from ._common import (
    App,
    DsnOption,
    FullOption,
    JsonOption,
    open_client,
    out,
    parse_timestamp,
    report,
    usage_error,
)
from .output import Column, fmt_ts, print_json, record, table

__all__ = ["app"]

app = App(help="The durable per-identity inbox: send, read, seen.")

IdentityArg = Annotated[
    str,
    typer.Argument(help="The inbox: a user id, a session, ... (any text).", show_default=False),
]


def notifications_table(
    identity: str, notifications: Sequence[Notification], *, width: int, full: bool
) -> RenderableType:
    """id, topic, message; collapse key and expiry give way on a narrow terminal."""
    columns = [
        Column("id", justify="right"),
        Column("topic", style="bold"),
        Column("message", fit="cut"),
        Column("collapse key", hide=2),
        Column("created", stack=True),
        Column("expires", stack=True, hide=1),
    ]
    rows = [
        [
            str(n.id),
            escape(n.topic),
            escape(n.message or ""),
            escape(n.collapse_key or "-"),
            fmt_ts(n.created_at),
            fmt_ts(n.expires_at),
        ]
        for n in notifications
    ]
    return table(
        f"Unseen notifications of {escape(identity)}", columns, rows, width=width, full=full
    )


@app.command("send")
def inbox_send(
    identity: IdentityArg,
    topic: Annotated[
        str, typer.Argument(help="Dot-separated topic, e.g. import.done.", show_default=False)
    ],
    message: Annotated[str | None, typer.Argument(help="Text of the notification.")] = None,
    collapse_key: Annotated[
        str | None,
        typer.Option(
            "--collapse-key",
            help="Earlier unseen notifications of the inbox with this key are marked seen.",
        ),
    ] = None,
    expires_at: Annotated[
        str | None,
        typer.Option(
            "--expires-at",
            help="ISO 8601 timestamp after which it is no longer read and gc deletes it"
            " (no offset: local time).",
        ),
    ] = None,
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> None:
    """Append a notification to IDENTITY's inbox and print its id."""
    expires = parse_timestamp(expires_at, "--expires-at")
    with open_client(dsn) as client:
        id = client.notify_durable(
            identity, topic, message, collapse_key=collapse_key, expires_at=expires
        )
    report(
        as_json,
        {"identity": identity, "id": id},
        f"[green]Sent[/] notification [bold]{id}[/] to [bold]{escape(identity)}[/].",
    )


@app.command("read")
def inbox_read(
    identity: IdentityArg,
    after_id: Annotated[
        int, typer.Option("--after-id", help="Only notifications with a larger id (the cursor).")
    ] = 0,
    quantity: Annotated[
        int, typer.Option("-n", "--quantity", help="At most this many.", min=1, max=1000)
    ] = 100,
    dsn: DsnOption = None,
    as_json: JsonOption = False,
    full: FullOption = False,
) -> None:
    """List IDENTITY's unseen, unexpired notifications, oldest first (marks nothing)."""
    with open_client(dsn) as client:
        notifications = client.unseen_notifications(identity, after_id=after_id, quantity=quantity)
    if as_json:
        print_json([record(n) for n in notifications])
    elif not notifications:
        out.print(f"No unseen notifications for [bold]{escape(identity)}[/].")
    else:
        out.print(notifications_table(identity, notifications, width=out.width, full=full))


@app.command("seen")
def inbox_seen(
    identity: IdentityArg,
    ids: Annotated[
        list[int] | None, typer.Argument(help="Mark exactly these ids seen.", show_default=False)
    ] = None,
    until: Annotated[
        int | None, typer.Option("--until", help="Mark every unseen id up to this one seen.")
    ] = None,
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> None:
    """Mark notifications of IDENTITY seen: the given IDS, or all up to --until."""
    if (until is None) == (not ids):
        usage_error("give either notification ids or --until ID (one of the two)")
    with open_client(dsn) as client:
        if until is not None:
            marked = client.mark_seen_until(identity, until)
        else:
            marked = client.mark_seen(identity, ids or [])
    report(
        as_json,
        {"identity": identity, "marked": marked},
        f"[green]Marked[/] {marked} notification{'' if marked == 1 else 's'} of"
        f" [bold]{escape(identity)}[/] seen.",
    )
