"""``catbird db ...``: install catbird into a database, show the installation."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..db import install as _install
from ._common import App, DsnOption, JsonOption, open_connection, out
from .output import print_json

__all__ = ["app"]

app = App(help="Install catbird into a database and inspect the installation.")


class InstallModeChoice(StrEnum):
    extension = "extension"
    plain = "plain"
    pg_tle_script = "pg-tle-script"


@app.command("install")
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
    with open_connection(dsn) as conn:
        before = _install.status(conn)
        _install.install(conn, mode=mode.value)
        after = _install.status(conn)
        database = conn.info.dbname
    changed = not before["installed"]
    if as_json:
        print_json({"database": database, "changed": changed, **after})
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


@app.command("upgrade")
def db_upgrade(dsn: DsnOption = None, as_json: JsonOption = False) -> None:
    """Upgrade catbird in the database to this package's version, keeping the data
    (ALTER EXTENSION catbird UPDATE; a plain install runs the same update scripts)."""
    with open_connection(dsn) as conn:
        report = _install.upgrade(conn)
        database = conn.info.dbname
    if as_json:
        print_json({"database": database, **report})
        return
    if not report["changed"]:
        out.print(
            f"catbird {report['to_version']} ({report['how']}) is up to date "
            f"in database [bold]{escape(database)}[/]; nothing to do."
        )
        return
    through = " through pg_tle" if report["pg_tle"] else ""
    out.print(
        f"[green]Upgraded[/] catbird {report['from_version']} -> {report['to_version']} "
        f"({report['how']}{through}) in database [bold]{escape(database)}[/]."
    )


@app.command("status")
def db_status(dsn: DsnOption = None, as_json: JsonOption = False) -> None:
    """Show whether and how catbird is installed in the database."""
    with open_connection(dsn) as conn:
        status = _install.status(conn)
        database = conn.info.dbname
    if as_json:
        print_json({"database": database, **status})
        return
    table = Table(show_header=False, title=f"catbird in {escape(database)}", title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    installed = (
        f"[green]yes[/] ({status['how']}, version {status['version']})"
        if status["installed"]
        else "[yellow]no[/] (run 'catbird db install')"
    )
    if status["installed"] and status["version"] != _install.EXTENSION_VERSION:
        installed += " [yellow](run 'catbird db upgrade')[/]"
    table.add_row("installed", installed)
    table.add_row("package version", _install.EXTENSION_VERSION)
    table.add_row("available versions", ", ".join(status["available_versions"]) or "-")
    table.add_row("pg_tle", "yes" if status["pg_tle"] else "no")
    table.add_row("server", f"PostgreSQL {escape(status['server_version'])}")
    out.print(table)


@app.command("roles")
def db_roles(dsn: DsnOption = None, as_json: JsonOption = False) -> None:
    """Create the group roles catbird_admin, catbird_worker, catbird_client and grant them
    their rights (needs CREATEROLE to create them, and the installing role to grant)."""
    with open_connection(dsn) as conn:
        report = _install.roles(conn)
    if as_json:
        print_json(dict(report))
        return
    for role in report["created"]:
        out.print(f"[green]created[/] role {role}")
    for role in report["missing"]:
        out.print(
            f"[yellow]missing[/] role {role}: this role may not create roles; "
            "run 'catbird db roles' as a role with CREATEROLE"
        )
    out.print("granted EXECUTE on catbird's functions to the roles that exist.")
