"""The catbird web dashboard: an ASGI app (Starlette and Jinja2, extra ``web``).

Serve it with ``catbird dashboard`` or mount it in an application::

    from starlette.applications import Starlette
    from starlette.routing import Mount
    from catbird.dashboard import create_dashboard

    dashboard = create_dashboard(dsn, auth=lambda request: request.user.is_authenticated)
    app = Starlette(routes=[Mount("/ops", app=dashboard)])

Modules: :mod:`.app` (the app, pages and actions), :mod:`.dag` (the layout
of a flow's graph), :mod:`.events` (one LISTEN connection fanned out to the
browsers' event streams).
"""

from __future__ import annotations

from .app import AuthHook, Dashboard, create_dashboard

__all__ = ["AuthHook", "Dashboard", "create_dashboard"]
