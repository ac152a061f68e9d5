"""What every command group shares: the typer classes, options, errors, the client.

* :class:`App` is a ``typer.Typer`` whose commands and groups show no
  ``<bool>`` type next to flags in ``--help``.
* ``DsnOption``, ``JsonOption``, ``FullOption``: the options every command
  that talks to a database takes.
* :func:`fail` / :func:`usage_error` print one red line on stderr and exit
  with 1 (catbird or database error) or 2 (usage error); :func:`errors`
  turns catbird and psycopg exceptions into such a line.
* :func:`open_client` / :func:`open_connection`: an autocommit connection to
  ``--dsn`` (or ``CATBIRD_DSN``) with that error handling.
* ``parse_*``: JSON, headers and timestamps given on the command line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, NoReturn

import psycopg
import typer
from rich.console import Console, RenderableType
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from ..client import Client
from ..errors import CatbirdError
from .output import print_json

__all__ = [
    "EXIT_ERROR",
    "EXIT_USAGE",
    "App",
    "DsnOption",
    "FullOption",
    "HeadersOption",
    "JsonOption",
    "concurrency_key_option",
    "delay_option",
    "delay_until",
    "delivery_options",
    "err",
    "errors",
    "fail",
    "interactive",
    "one_line",
    "open_client",
    "open_connection",
    "out",
    "parse_headers",
    "parse_json",
    "parse_timestamp",
    "priority_option",
    "report",
    "require_dsn",
    "usage_error",
]

# Resolved on every write, so they follow sys.stdout/sys.stderr (CliRunner swaps them).
out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)

EXIT_ERROR = 1
EXIT_USAGE = 2


# ---------------------------------------------------------------- typer classes


def _untyped_flags(params: list[Any]) -> list[Any]:
    """Flags (``--json``, ``--help``, ...) take no value: show no ``<bool>`` type for them."""
    for param in params:
        if getattr(param, "is_bool_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class Command(TyperCommand):
    """A command whose flags show no value type in ``--help``."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _untyped_flags(super().get_params(ctx))


class Group(TyperGroup):
    """A command group whose flags show no value type in ``--help``."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _untyped_flags(super().get_params(ctx))


class App(typer.Typer):
    """A ``typer.Typer`` that builds :class:`Group` groups and :class:`Command` commands."""

    def __init__(self, *, help: str, **kwargs: Any) -> None:
        kwargs.setdefault("no_args_is_help", True)
        super().__init__(cls=Group, help=help, **kwargs)

    def command(  # type: ignore[override]
        self, name: str | None = None, *, cls: type[TyperCommand] | None = None, **kwargs: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return super().command(name, cls=cls or Command, **kwargs)


# ---------------------------------------------------------------- options

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
HeadersOption = Annotated[str | None, typer.Option("--headers", help="Headers, as a JSON object.")]


def concurrency_key_option(help: str) -> Any:
    return typer.Option("--concurrency-key", help=help)


def priority_option(help: str) -> Any:
    return typer.Option("--priority", help=help)


def delay_option(help: str) -> Any:
    return typer.Option("--delay", help=help, min=0)


FullOption = Annotated[
    bool,
    typer.Option(
        "--full",
        help="Show whole values and every column in tables (by default long values are cut).",
    ),
]


# ---------------------------------------------------------------- errors


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print ``message`` as one red line on stderr and exit with ``code``."""
    err.print(f"[bold red]Error:[/] [red]{escape(message)}[/]")
    raise typer.Exit(code)


def usage_error(message: str) -> NoReturn:
    fail(message, EXIT_USAGE)


def one_line(text: str) -> str:
    return " ".join(text.split())


def _server_hint(exc: BaseException) -> str | None:
    cause = exc.__cause__ if isinstance(exc, CatbirdError) else exc
    if isinstance(cause, psycopg.Error) and cause.diag is not None:
        return cause.diag.message_hint
    return None


def require_dsn(dsn: str | None) -> str:
    if not dsn:
        usage_error(
            "no database given: pass --dsn or set CATBIRD_DSN "
            "(for a local server, run 'catbird dev' and export the CATBIRD_DSN it prints)"
        )
    return dsn


@contextmanager
def errors() -> Iterator[None]:
    """Turn catbird and database errors into a one-line message and an exit code."""
    try:
        yield
    except CatbirdError as exc:
        message = one_line(exc.message or type(exc).__name__)
        hint = _server_hint(exc)
        fail(f"{message} (hint: {one_line(hint)})" if hint else message)
    except (psycopg.errors.InvalidSchemaName, psycopg.errors.UndefinedFunction) as exc:
        fail(
            f"{one_line(str(exc))} — is catbird installed in this database? "
            "Run 'catbird db install' first."
        )
    except psycopg.OperationalError as exc:
        # Only connection failures (no SQLSTATE, or class 08) mean the server
        # was not reached; other operational errors come from the server.
        if exc.sqlstate is None or exc.sqlstate.startswith("08"):
            fail(f"cannot reach the database: {one_line(str(exc))}")
        fail(f"database error: {one_line(str(exc))}")
    except psycopg.Error as exc:
        fail(f"database error: {one_line(str(exc))}")


@contextmanager
def open_connection(dsn: str | None) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to ``dsn`` (or CATBIRD_DSN), with CLI error handling."""
    with errors(), psycopg.connect(require_dsn(dsn), autocommit=True) as conn:
        yield conn


@contextmanager
def open_client(dsn: str | None) -> Iterator[Client]:
    """A :class:`Client` on an autocommit connection, with CLI error handling."""
    with open_connection(dsn) as conn:
        yield Client(conn)


def report(as_json: bool, document: Any, message: RenderableType) -> None:
    """What a command did: ``document`` as JSON with ``--json``, else ``message``."""
    if as_json:
        print_json(document)
    else:
        out.print(message)


def interactive() -> bool:
    """Whether a person can answer a question (stdin and stdout are terminals)."""
    return sys.stdin.isatty() and sys.stdout.isatty()


# ---------------------------------------------------------------- parsing arguments


def parse_json(value: str, what: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        usage_error(f"{what} is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})")


def parse_headers(value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    headers = parse_json(value, "--headers")
    if not isinstance(headers, dict):
        usage_error('--headers must be a JSON object, e.g. \'{"source": "cli"}\'')
    return headers


def parse_timestamp(value: str | None, what: str) -> datetime | None:
    """An ISO 8601 timestamp; one without a UTC offset is taken as local time."""
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        usage_error(f"{what} must be an ISO 8601 timestamp, e.g. 2030-01-31T12:00:00Z: {value!r}")
    return ts if ts.tzinfo is not None else ts.astimezone()


def delay_until(delay: float | None) -> datetime | None:
    """When a message or run given ``--delay`` seconds becomes visible (None: now)."""
    if delay is None or delay == 0:
        return None
    if delay < 0:
        usage_error("--delay must not be negative")
    return datetime.now(UTC) + timedelta(seconds=delay)


def delivery_options(
    *, concurrency_key: str | None, headers: str | None, delay: float | None, priority: int
) -> dict[str, Any]:
    """The keyword arguments of ``send``/``publish``/``run_*`` given on the command line."""
    return {
        "concurrency_key": concurrency_key,
        "headers": parse_headers(headers),
        "visible_at": delay_until(delay),
        "priority": priority,
    }
