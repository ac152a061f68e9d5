"""``catbird queue ...`` and ``catbird publish``: queues, messages, topic bindings."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import RenderableType
from rich.markup import escape

from ..client import Client
from ..errors import NotFound
from ..models import Binding, Message, QueueInfo
from ._common import (
    App,
    DsnOption,
    FullOption,
    HeadersOption,
    JsonOption,
    concurrency_key_option,
    delay_option,
    delivery_options,
    fail,
    interactive,
    open_client,
    open_connection,
    out,
    parse_json,
    parse_timestamp,
    priority_option,
    report,
    usage_error,
)
from .output import Column, fmt_json, fmt_ts, print_json, record, table
from .progress import progress

__all__ = ["app", "publish_command"]

app = App(help="Queues: create, inspect, send, read, bind to topics, redrive dead letters.")

QueueArg = Annotated[str, typer.Argument(help="Queue name.", show_default=False)]


def _dead_letters(q: QueueInfo) -> str:
    """Where a queue's messages go after ``max_deliveries`` (``-``: nowhere)."""
    if q.max_deliveries is None:
        return "-"
    return f"after {q.max_deliveries} to {q.dead_letter_queue or '(deleted)'}"


def queues_table(queues: Sequence[QueueInfo], *, width: int, full: bool) -> RenderableType:
    """The queues; on a narrow terminal timestamps go on two lines, descriptions out."""
    columns = [
        Column("name", style="bold"),
        Column("depth", justify="right"),
        Column("visible", justify="right"),
        Column("oldest visible", stack=True),
        Column("created", stack=True),
        Column("expires", stack=True),
        Column("dead letters", fit="cut", hide=1),
        Column("description", fit="cut", hide=1),
    ]
    rows = [
        [
            escape(q.name),
            str(q.depth),
            str(q.visible),
            fmt_ts(q.oldest_visible_at),
            fmt_ts(q.created_at),
            fmt_ts(q.expires_at),
            escape(_dead_letters(q)),
            escape(q.description or ""),
        ]
        for q in queues
    ]
    return table("Queues", columns, rows, width=width, full=full)


def messages_table(
    queue: str, messages: Sequence[Message], *, width: int, full: bool
) -> RenderableType:
    """id, priority, deliveries, body, and topic/key/headers when any message has one."""
    optional = [
        ("topic", [m.topic for m in messages]),
        ("key", [m.concurrency_key for m in messages]),
        ("headers", [fmt_json(m.headers) if m.headers is not None else None for m in messages]),
    ]
    shown = [(title, values) for title, values in optional if any(v is not None for v in values)]
    columns = [
        Column("id", justify="right", style="bold"),
        Column("priority", justify="right"),
        Column("deliveries", justify="right"),
        *(Column(title, fit="cut") for title, _ in shown),
        Column("body", fit="cut"),
    ]
    rows = [
        [
            str(m.id),
            str(m.priority),
            str(m.deliveries),
            *(escape(values[i] or "-") for _, values in shown),
            escape(fmt_json(m.body)),
        ]
        for i, m in enumerate(messages)
    ]
    title = f"Messages read from {escape(queue)}"
    return table(title, columns, rows, width=width, full=full)


def bindings_table(bindings: Sequence[Binding], *, width: int, full: bool) -> RenderableType:
    columns = [Column("queue", style="bold"), Column("pattern"), Column("created")]
    rows = [[escape(b.queue), escape(b.pattern), fmt_ts(b.created_at)] for b in bindings]
    return table("Bindings", columns, rows, width=width, full=full)


@app.command("ls")
def queue_ls(dsn: DsnOption = None, as_json: JsonOption = False, full: FullOption = False) -> None:
    """List the queues with their depth and oldest visible message."""
    with open_client(dsn) as client:
        queues = client.list_queues()
    if as_json:
        print_json([record(q) for q in queues])
    elif not queues:
        out.print("No queues. Create one with: catbird queue create NAME")
    else:
        out.print(queues_table(queues, width=out.width, full=full))


@app.command("create")
def queue_create(
    name: QueueArg,
    description: Annotated[
        str | None, typer.Option("--description", help="Free text shown by 'queue ls'.")
    ] = None,
    expires_at: Annotated[
        str | None,
        typer.Option(
            "--expires-at",
            help="ISO 8601 timestamp after which gc drops the queue (no offset: local time).",
        ),
    ] = None,
    max_deliveries: Annotated[
        int | None,
        typer.Option(
            "--max-deliveries",
            help="A message read this many times and never acked is dead-lettered.",
            min=1,
        ),
    ] = None,
    dead_letter_queue: Annotated[
        str | None,
        typer.Option(
            "--dead-letter-queue",
            help="Existing queue that receives dead letters (none: they are deleted).",
        ),
    ] = None,
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a queue (creating an existing queue changes nothing)."""
    expires = parse_timestamp(expires_at, "--expires-at")
    with open_client(dsn) as client:
        try:
            client.get_queue(name)
            existed = True
        except NotFound:
            existed = False
        client.create_queue(
            name,
            expires_at=expires,
            description=description,
            max_deliveries=max_deliveries,
            dead_letter_queue=dead_letter_queue,
        )
        info = client.get_queue(name)
    if as_json:
        print_json({"created": not existed, "queue": record(info)})
    elif existed:
        out.print(f"Queue [bold]{escape(name)}[/] already exists; unchanged.")
    else:
        out.print(f"[green]Created[/] queue [bold]{escape(name)}[/].")


@app.command("redrive")
def queue_redrive(
    dlq: Annotated[
        str, typer.Argument(metavar="DLQ", help="Dead-letter queue.", show_default=False)
    ],
    limit: Annotated[
        int | None,
        typer.Option("--limit", help="At most this many messages (oldest first).", min=1),
    ] = None,
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> None:
    """Move dead letters back to the queues they came from (deliveries reset)."""
    with open_client(dsn) as client:
        moved = client.redrive(dlq, quantity=limit)
    report(
        as_json,
        {"queue": dlq, "redriven": moved},
        f"Moved {moved} message{'' if moved == 1 else 's'} from [bold]{escape(dlq)}[/] back.",
    )


@app.command("delete")
def queue_delete(name: QueueArg, dsn: DsnOption = None, as_json: JsonOption = False) -> None:
    """Delete a queue with its messages and bindings."""
    with open_client(dsn) as client:
        deleted = client.delete_queue(name)
    if not deleted:
        fail(f'queue "{name}" does not exist')
    report(
        as_json,
        {"queue": name, "deleted": True},
        f"[green]Deleted[/] queue [bold]{escape(name)}[/].",
    )


@app.command("send")
def queue_send(
    name: QueueArg,
    body: Annotated[
        str | None,
        typer.Argument(help="Message body, as JSON (not with --file).", show_default=False),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            help="Send every line of this file (JSON lines; '-' for stdin) as a message.",
            allow_dash=True,
            dir_okay=False,
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Messages per statement with --file.", min=1)
    ] = 1000,
    priority: Annotated[int, priority_option("Higher is read first.")] = 0,
    concurrency_key: Annotated[
        str | None,
        concurrency_key_option(
            "While a message with this key is live, sending another is a no-op."
        ),
    ] = None,
    topic: Annotated[
        str | None, typer.Option("--topic", help="Topic recorded on the message.")
    ] = None,
    headers: HeadersOption = None,
    delay: Annotated[
        float | None, delay_option("Seconds before the message becomes visible.")
    ] = None,
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> None:
    """Send one message to a queue and print its id, or every line of --file.

    With --concurrency-key held by a live message, nothing is written and the
    live message's id is printed. With --file, the lines (blank ones skipped)
    are sent in batches of --batch-size in one transaction: all or none.
    """
    if (body is None) == (file is None):
        usage_error("give either BODY or --file")
    options = delivery_options(
        concurrency_key=concurrency_key, headers=headers, delay=delay, priority=priority
    )
    if file is not None:
        if concurrency_key is not None:
            usage_error("--concurrency-key is for one message, not with --file")
        _send_file(name, file, batch_size, topic, options, dsn, as_json)
        return
    value = parse_json(body or "", "BODY")
    with open_client(dsn) as client:
        message_id = client.send(name, value, topic=topic, **options)
    report(
        as_json,
        {"queue": name, "id": message_id},
        f"Sent message [bold]{message_id}[/] to queue [bold]{escape(name)}[/].",
    )


def _read_json_lines(file: Path) -> list[Any]:
    """The JSON values of the non-blank lines of ``file`` ('-': stdin)."""
    try:
        text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        usage_error(f"cannot read --file {file}: {exc}")
    bodies = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            bodies.append(parse_json(line, f"line {number} of {file}"))
    return bodies


def _send_file(
    name: str,
    file: Path,
    batch_size: int,
    topic: str | None,
    options: dict[str, Any],
    dsn: str | None,
    as_json: bool,
) -> None:
    bodies = _read_json_lines(file)
    headers = options.pop("headers")
    options.pop("concurrency_key")
    sent = 0
    # One transaction: a batch the server refuses leaves nothing sent.
    with open_connection(dsn) as conn, conn.transaction():
        client = Client(conn)
        with progress(f"Sending to {name}", total=len(bodies)) as advance:
            for start in range(0, len(bodies), batch_size):
                batch = bodies[start : start + batch_size]
                sent += len(
                    client.send_many(
                        name,
                        batch,
                        topic=topic,
                        headers=None if headers is None else [headers] * len(batch),
                        **options,
                    )
                )
                advance(len(batch))
    report(
        as_json,
        {"queue": name, "sent": sent},
        f"Sent {sent} message(s) to queue [bold]{escape(name)}[/].",
    )


@app.command("read")
def queue_read(
    name: QueueArg,
    quantity: Annotated[
        int, typer.Option("--quantity", "-n", help="Read up to this many messages.")
    ] = 1,
    hide_for: Annotated[
        float,
        typer.Option("--hide-for", help="Seconds the messages stay hidden from other readers."),
    ] = 30.0,
    ack: Annotated[
        bool, typer.Option("--ack", help="Delete the messages after printing them.")
    ] = False,
    dsn: DsnOption = None,
    as_json: JsonOption = False,
    full: FullOption = False,
) -> None:
    """Read (claim) messages: they stay hidden for --hide-for seconds unless acked."""
    with open_client(dsn) as client:
        messages = client.read(name, quantity=quantity, hide_for=hide_for)
        acked = client.delete(name, [m.id for m in messages]) if ack and messages else []
    if as_json:
        print_json({"queue": name, "messages": [record(m) for m in messages], "acked": acked})
        return
    if not messages:
        out.print(f"No visible messages in queue [bold]{escape(name)}[/].")
        return
    out.print(messages_table(name, messages, width=out.width, full=full))
    if ack:
        out.print(f"[green]Acked[/] (deleted) {len(acked)} message(s).")
    else:
        out.print(
            f"[dim]Hidden for {hide_for:g}s; ack with --ack, or they become visible again.[/]"
        )


@app.command("pop")
def queue_pop(
    name: QueueArg,
    quantity: Annotated[
        int, typer.Option("--quantity", "-n", help="Pop up to this many messages.")
    ] = 1,
    dsn: DsnOption = None,
    as_json: JsonOption = False,
    full: FullOption = False,
) -> None:
    """Pop messages: claim and delete them in one step (nothing to ack)."""
    with open_client(dsn) as client:
        messages = client.pop(name, quantity=quantity)
    if as_json:
        print_json({"queue": name, "messages": [record(m) for m in messages]})
        return
    if not messages:
        out.print(f"No visible messages in queue [bold]{escape(name)}[/].")
        return
    out.print(messages_table(name, messages, width=out.width, full=full))
    out.print(f"[green]Popped[/] (deleted) {len(messages)} message(s).")


@app.command("purge")
def queue_purge(
    name: QueueArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete every message of a queue (asks first on a terminal, unless --yes)."""
    with open_client(dsn) as client:
        info = client.get_queue(name)
        if not yes:
            if not interactive():
                usage_error(f'purging queue "{name}" needs --yes when not run on a terminal')
            if not typer.confirm(
                f"Delete all {info.depth} message(s) of queue {name!r}?", default=False
            ):
                fail("aborted, nothing purged")
        with progress(f"Purging queue {name}"):
            purged = client.purge_queue(name)
    report(
        as_json,
        {"queue": name, "purged": purged},
        f"[green]Purged[/] {purged} message(s) from queue [bold]{escape(name)}[/].",
    )


@app.command("bind")
def queue_bind(
    name: QueueArg,
    pattern: Annotated[
        str,
        typer.Argument(
            help="Topic pattern: '*' matches one token, a trailing '#' any number.",
            show_default=False,
        ),
    ],
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> None:
    """Subscribe a queue to a topic pattern (binding twice changes nothing)."""
    with open_client(dsn) as client:
        client.bind(name, pattern)
    report(
        as_json,
        {"queue": name, "pattern": pattern, "bound": True},
        f"[green]Bound[/] queue [bold]{escape(name)}[/] to [bold]{escape(pattern)}[/].",
    )


@app.command("unbind")
def queue_unbind(
    name: QueueArg,
    pattern: Annotated[str, typer.Argument(help="Topic pattern.", show_default=False)],
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove a queue's subscription to a topic pattern."""
    with open_client(dsn) as client:
        removed = client.unbind(name, pattern)
    if not removed:
        fail(f'queue "{name}" is not bound to "{pattern}"')
    if as_json:
        print_json({"queue": name, "pattern": pattern, "unbound": True})
    else:
        out.print(
            f"[green]Unbound[/] queue [bold]{escape(name)}[/] from [bold]{escape(pattern)}[/]."
        )


@app.command("bindings")
def queue_bindings(
    name: Annotated[
        str | None, typer.Argument(help="Only this queue's bindings.", show_default=False)
    ] = None,
    dsn: DsnOption = None,
    as_json: JsonOption = False,
    full: FullOption = False,
) -> None:
    """List topic bindings, of all queues or of one."""
    with open_client(dsn) as client:
        if name is not None:
            client.get_queue(name)  # an unknown queue is an error, not an empty list
        bindings = client.list_bindings(name)
    if as_json:
        print_json([record(b) for b in bindings])
    elif not bindings:
        out.print("No bindings. Add one with: catbird queue bind QUEUE PATTERN")
    else:
        out.print(bindings_table(bindings, width=out.width, full=full))


def publish_command(
    topic: Annotated[
        str, typer.Argument(help="Topic, e.g. shop.order.created.", show_default=False)
    ],
    body: Annotated[str, typer.Argument(help="Message body, as JSON.", show_default=False)],
    concurrency_key: Annotated[
        str | None, concurrency_key_option("Per target queue: no-op while a live message holds it.")
    ] = None,
    priority: Annotated[int, priority_option("Higher is read first.")] = 0,
    headers: HeadersOption = None,
    delay: Annotated[
        float | None, delay_option("Seconds before the messages become visible.")
    ] = None,
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> None:
    """Publish to a topic: every queue (and task or flow) bound to a matching pattern gets it."""
    value = parse_json(body, "BODY")
    options = delivery_options(
        concurrency_key=concurrency_key, headers=headers, delay=delay, priority=priority
    )
    with open_client(dsn) as client:
        deliveries = client.publish(topic, value, **options)
    if as_json:
        print_json({"topic": topic, "deliveries": deliveries})
    else:
        note = "" if deliveries else " (nothing is bound to a matching pattern)"
        out.print(
            f"Published to [bold]{escape(topic)}[/]: {deliveries} "
            f"deliver{'y' if deliveries == 1 else 'ies'}{note}."
        )
