"""``catbird dashboard``: serve the web dashboard.

::

    catbird dashboard                           # http://127.0.0.1:8080, CATBIRD_DSN
    catbird dashboard --host 0.0.0.0 --port 9000 --dsn postgresql://...

The dashboard (:mod:`catbird.dashboard`) needs the ``web`` extra
(Starlette, Jinja2, uvicorn). It has no authentication of its own: bind it
to localhost, or mount it in an application with an ``auth`` hook.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import DsnOption, out, require_dsn, usage_error

__all__ = ["dashboard_command"]


def dashboard_command(
    dsn: DsnOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8080,
    title: Annotated[str, typer.Option(help="Title shown in the page header.")] = "catbird",
) -> None:
    """Serve the web dashboard: queues, runs, flow graphs, workers, schedules."""
    database = require_dsn(dsn)
    try:
        import uvicorn

        from ..dashboard import create_dashboard
    except ImportError as exc:
        usage_error(f"the dashboard needs the web extra: pip install 'catbird[web]' ({exc})")
    app = create_dashboard(database, title=title)
    out.print(f"catbird dashboard on http://{host}:{port}/ (Ctrl+C stops it)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
