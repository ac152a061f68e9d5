"""The dashboard's ASGI app: pages, actions and the event stream.

:func:`create_dashboard` builds a Starlette app around one :class:`Dashboard`
(its pool, client, event hub and CSRF token: no module-level state, so any
number of dashboards can live in one process). Every link is made from the
request's ``root_path``, so the app works at ``/`` and under
``Mount("/ops", app=...)`` alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import _sql
from ..client import AsyncClient
from ..errors import InvalidArgument, NotFound
from ..metrics import CONTENT_TYPE, render_database_metrics
from ..models import RunCount
from .dag import NODE_HEIGHT, NODE_WIDTH, layout
from .events import EventHub

__all__ = ["AuthHook", "Dashboard", "create_dashboard"]

#: ``auth(request)``: true to let the request in, false for 403; it may also
#: raise ``HTTPException(401, headers={"WWW-Authenticate": ...})`` to ask for
#: credentials. May be a coroutine function.
AuthHook = Callable[[Request], bool | Awaitable[bool]]

TASK_STATUSES = ("queued", "started", "completed", "failed", "skipped", "canceled", "expired")
FLOW_STATUSES = ("started", "canceling", "completed", "failed", "canceled", "expired")
ACTIVE_TASK_STATUSES = frozenset({"queued", "started"})
ACTIVE_FLOW_STATUSES = frozenset({"started", "canceling"})
RETRYABLE_STATUSES = frozenset({"failed", "canceled", "expired"})
RUNS_PER_PAGE = 50
#: The largest form body read (the dashboard's forms carry a token and a name).
MAX_FORM_BYTES = 4096
#: The window of the overview's run counts.
RECENT = timedelta(hours=1)

#: What a redirect after an action tells the user, by the ``notice`` key it carries.
NOTICES = {
    "canceled": "Cancel requested.",
    "not-canceled": "Nothing to cancel: the run had already ended.",
    "retried": "The run is queued again.",
    "not-retried": "Not retried: the run is in no state to retry (it did not fail, or a"
    " flow run has no failed step), or its concurrency key is held by another run.",
    "purged": "Deleted {count} message(s).",
    "redriven": "Moved {count} dead letter(s) back to their queues.",
}


class Dashboard:
    """The state of one dashboard app: database access, events, CSRF token, templates."""

    def __init__(
        self,
        dsn_or_pool: str | AsyncConnectionPool[Any],
        *,
        title: str,
        heartbeat: float,
    ) -> None:
        if isinstance(dsn_or_pool, str):
            self._pool = AsyncConnectionPool(
                dsn_or_pool, min_size=1, max_size=4, open=False, name="catbird-dashboard"
            )
            self._owns_pool = True
        elif isinstance(dsn_or_pool, AsyncConnectionPool):
            self._pool, self._owns_pool = dsn_or_pool, False
        else:
            raise TypeError(
                "create_dashboard() takes a DSN or a psycopg_pool.AsyncConnectionPool,"
                f" not {type(dsn_or_pool).__name__}"
            )
        self._opened = False
        self._open_lock = asyncio.Lock()
        self.client = AsyncClient(self._pool)
        self.events = EventHub(self._conninfo)
        self.title = title
        self.heartbeat = heartbeat
        #: One token per dashboard, in a hidden field of every form: another
        #: site can make a browser post, but cannot read the token.
        self.csrf_token = secrets.token_urlsafe(32)
        self.templates = Environment(
            loader=PackageLoader("catbird.dashboard", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters.update(
            json=_pretty_json, ts=_timestamp, ago=_ago, handlers=_handler_names
        )

    async def db(self) -> AsyncClient:
        """The client, its pool opened on first use (a mounted app gets no
        startup event from the host app)."""
        if self._owns_pool and not self._opened:
            async with self._open_lock:
                if not self._opened:
                    await self._pool.open()
                    self._opened = True
        return self.client

    async def _conninfo(self) -> str:
        """The pool's connection string, for the listening connection."""
        conninfo = self._pool.conninfo
        if not callable(conninfo):
            return conninfo
        made = conninfo()
        return await made if inspect.isawaitable(made) else made

    async def aclose(self) -> None:
        """Stop listening and close the pool when the dashboard made it."""
        await self.events.close()
        if self._owns_pool and self._opened:
            await self._pool.close()
            self._opened = False

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        yield
        await self.aclose()

    # ------------------------------------------------------------- rendering

    def render(
        self, request: Request, template: str, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        root = _root(request)

        def url(path: str, **query: Any) -> str:
            params = {k: v for k, v in query.items() if v is not None and v != ""}
            return root + path + ("?" + urlencode(params) if params else "")

        notice = NOTICES.get(request.query_params.get("notice", ""))
        if notice is not None:
            notice = notice.format(count=_int_or(request.query_params.get("count"), 0))
        html = self.templates.get_template(template).render(
            request=request,
            url=url,
            q=_quote,
            title=self.title,
            csrf_token=self.csrf_token,
            notice=notice,
            now=datetime.now(UTC),
            **context,
        )
        return HTMLResponse(html, status_code=status_code)

    def back(self, request: Request, path: str, notice: str, count: int | None = None) -> Response:
        root = _root(request)
        query = {"notice": notice} | ({"count": str(count)} if count is not None else {})
        return RedirectResponse(root + path + "?" + urlencode(query), status_code=303)

    async def checked_form(self, request: Request) -> dict[str, str]:
        """The posted form, after the CSRF guard: the form's token must be this
        dashboard's, and an ``Origin`` header, when the browser sends one,
        must be this host.

        The dashboard's forms are URL-encoded and small; they are read here
        rather than by Starlette's parser, which needs python-multipart.
        """
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        body = await request.body()
        if content_type != "application/x-www-form-urlencoded" or len(body) > MAX_FORM_BYTES:
            form: dict[str, str] = {}
        else:
            pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
            form = dict(reversed(pairs))  # the first value of a repeated field wins
        token = form.get("csrf", "")
        if not token or not secrets.compare_digest(token, self.csrf_token):
            raise HTTPException(403, "CSRF check failed: the form carries no valid token")
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
            raise HTTPException(403, f"CSRF check failed: origin {origin} is not this site")
        return form

    # ----------------------------------------------------------------- pages

    async def overview(self, request: Request) -> Response:
        db = await self.db()
        now = datetime.now(UTC)
        counts = _counts_by_definition(await db.execute(_sql.list_run_counts(now - RECENT)))
        return self.render(
            request,
            "overview.html",
            live="*",
            queues=await db.list_queues(),
            tasks=await db.list_tasks(),
            flows=await db.list_flows(),
            counts=counts,
            workers=await db.list_workers(),
            task_schedules=await db.list_task_schedules(),
            flow_schedules=await db.list_flow_schedules(),
        )

    async def queue(self, request: Request) -> Response:
        db = await self.db()
        name = request.path_params["name"]
        quantity = _int_param(request, "quantity", 20)
        info = await db.get_queue(name)
        queues = await db.list_queues()
        return self.render(
            request,
            "queue.html",
            live="*",
            queue=info,
            messages=await db.execute(_sql.peek(name, quantity=quantity)),
            quantity=quantity,
            dead_letter_for=[q.name for q in queues if q.dead_letter_queue == name],
        )

    async def purge_confirm(self, request: Request) -> Response:
        db = await self.db()
        return self.render(
            request, "purge.html", queue=await db.get_queue(request.path_params["name"])
        )

    async def purge(self, request: Request) -> Response:
        form = await self.checked_form(request)
        name = request.path_params["name"]
        if form.get("confirm") != name:
            raise HTTPException(400, f"to purge, type the queue name {name!r} to confirm")
        db = await self.db()
        count = await db.purge_queue(name)
        return self.back(request, f"/queues/{_quote(name)}", "purged", count)

    async def redrive(self, request: Request) -> Response:
        await self.checked_form(request)
        name = request.path_params["name"]
        db = await self.db()
        count = await db.redrive(name)
        return self.back(request, f"/queues/{_quote(name)}", "redriven", count)

    async def task(self, request: Request) -> Response:
        db = await self.db()
        name = request.path_params["name"]
        status = request.query_params.get("status") or None
        before = _int_param(request, "before", None)
        info = await db.get_task(name)
        runs = await db.execute(
            _sql.list_task_runs_by_status(
                name, status=status, limit=RUNS_PER_PAGE, before_id=before
            )
        )
        return self.render(
            request,
            "runs.html",
            live=f"task:{name}",
            kind="task",
            definition=info,
            runs=runs,
            status=status,
            statuses=TASK_STATUSES,
            older=runs[-1].id if len(runs) == RUNS_PER_PAGE else None,
        )

    async def flow(self, request: Request) -> Response:
        db = await self.db()
        name = request.path_params["name"]
        status = request.query_params.get("status") or None
        before = _int_param(request, "before", None)
        info = await db.get_flow(name)
        runs = await db.execute(
            _sql.list_flow_runs_by_status(
                name, status=status, limit=RUNS_PER_PAGE, before_id=before
            )
        )
        return self.render(
            request,
            "runs.html",
            live=f"flow:{name}",
            kind="flow",
            definition=info,
            dag=layout(info.steps, {}),
            node_width=NODE_WIDTH,
            node_height=NODE_HEIGHT,
            runs=runs,
            status=status,
            statuses=FLOW_STATUSES,
            older=runs[-1].id if len(runs) == RUNS_PER_PAGE else None,
        )

    async def task_run(self, request: Request) -> Response:
        db = await self.db()
        name, run_id = request.path_params["name"], request.path_params["run_id"]
        run = await db.get_task_run(name, run_id)
        return self.render(
            request,
            "task_run.html",
            live=f"task:{name}",
            run=run,
            can_cancel=run.status in ACTIVE_TASK_STATUSES,
            can_retry=run.status in RETRYABLE_STATUSES,
        )

    async def flow_run(self, request: Request) -> Response:
        db = await self.db()
        name, run_id = request.path_params["name"], request.path_params["run_id"]
        info = await db.get_flow(name)
        run = await db.get_flow_run(name, run_id)
        steps = await db.get_flow_run_steps(name, run_id)
        return self.render(
            request,
            "flow_run.html",
            live=f"flow:{name}",
            flow=info,
            run=run,
            steps=steps,
            dag=layout(info.steps, {s.step_name: s for s in steps}),
            node_width=NODE_WIDTH,
            node_height=NODE_HEIGHT,
            can_cancel=run.status in ACTIVE_FLOW_STATUSES,
            can_retry=run.status == "failed",
        )

    # --------------------------------------------------------------- actions

    async def cancel_task_run(self, request: Request) -> Response:
        await self.checked_form(request)
        name, run_id = request.path_params["name"], request.path_params["run_id"]
        db = await self.db()
        done = await db.cancel_task_run(name, run_id, reason="canceled from the dashboard")
        path = f"/tasks/{_quote(name)}/runs/{run_id}"
        return self.back(request, path, "canceled" if done else "not-canceled")

    async def retry_task_run(self, request: Request) -> Response:
        await self.checked_form(request)
        name, run_id = request.path_params["name"], request.path_params["run_id"]
        db = await self.db()
        done = await db.retry_task_run(name, run_id)
        path = f"/tasks/{_quote(name)}/runs/{run_id}"
        return self.back(request, path, "retried" if done else "not-retried")

    async def cancel_flow_run(self, request: Request) -> Response:
        await self.checked_form(request)
        name, run_id = request.path_params["name"], request.path_params["run_id"]
        db = await self.db()
        done = await db.cancel_flow_run(name, run_id, reason="canceled from the dashboard")
        path = f"/flows/{_quote(name)}/runs/{run_id}"
        return self.back(request, path, "canceled" if done else "not-canceled")

    async def retry_flow_run(self, request: Request) -> Response:
        await self.checked_form(request)
        name, run_id = request.path_params["name"], request.path_params["run_id"]
        db = await self.db()
        done = await db.retry_flow_run(name, run_id)
        path = f"/flows/{_quote(name)}/runs/{run_id}"
        return self.back(request, path, "retried" if done else "not-retried")

    async def metrics(self, request: Request) -> Response:
        """The database's gauges (``cb_metrics()``) for Prometheus."""
        return Response(await render_database_metrics(await self.db()), media_type=CONTENT_TYPE)

    # ---------------------------------------------------------------- events

    async def stream(self, request: Request) -> Response:
        """``text/event-stream`` of engine events: ``ready`` once the
        dashboard listens, ``run`` per event, a comment every ``heartbeat``
        seconds so proxies keep the connection open."""

        async def events() -> AsyncIterator[str]:
            async with self.events.subscribe() as queue:
                yield "retry: 3000\n\n"
                while not self.events.listening.is_set():
                    try:
                        await asyncio.wait_for(self.events.listening.wait(), self.heartbeat)
                    except TimeoutError:
                        yield ": heartbeat\n\n"
                yield "event: ready\ndata: {}\n\n"
                while True:
                    try:
                        event = await asyncio.wait_for(queue.get(), self.heartbeat)
                    except TimeoutError:
                        yield ": heartbeat\n\n"
                        continue
                    yield f"event: run\ndata: {event.to_json()}\n\n"

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    # ---------------------------------------------------------------- errors

    async def not_found(self, request: Request, exc: Exception) -> Response:
        return self.render(request, "error.html", 404, code=404, message=str(exc))

    async def bad_request(self, request: Request, exc: Exception) -> Response:
        return self.render(request, "error.html", 400, code=400, message=str(exc))

    async def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return self.render(
            request,
            "error.html",
            exc.status_code,
            code=exc.status_code,
            message=exc.detail,
        )


class _AuthGuard:
    """Runs the auth hook before every HTTP request reaches the dashboard."""

    def __init__(self, app: ASGIApp, auth: AuthHook) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            response: Response | None = None
            try:
                allowed = self.auth(Request(scope, receive))
                if inspect.isawaitable(allowed):
                    allowed = await allowed
                if not allowed:
                    response = PlainTextResponse("Forbidden", status_code=403)
            except HTTPException as exc:
                response = PlainTextResponse(exc.detail, exc.status_code, headers=exc.headers)
            if response is not None:
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_dashboard(
    dsn_or_pool: str | AsyncConnectionPool[Any],
    *,
    auth: AuthHook | None = None,
    title: str = "catbird",
    heartbeat: float = 15.0,
    routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The dashboard as an ASGI app (Starlette), to serve or mount.

    ``dsn_or_pool``: a connection string (the dashboard opens a small pool
    on first use and closes it at shutdown) or an open
    ``AsyncConnectionPool`` you own. Its role should be a member of
    ``catbird_admin`` (peeking, purging and redriving are the admin's).
    ``auth``: called with every request (see :data:`AuthHook`); without it,
    anyone who reaches the app may cancel runs and purge queues.
    ``heartbeat``: seconds between keep-alive comments on the event stream.
    ``routes``: more routes served by the app, behind the same ``auth`` hook.
    ``/metrics`` serves the database's gauges to Prometheus. The app's ``state.dashboard`` is its
    :class:`Dashboard`.
    """
    if not heartbeat > 0:
        raise ValueError(f"heartbeat must be a positive number of seconds, not {heartbeat!r}")
    d = Dashboard(dsn_or_pool, title=title, heartbeat=heartbeat)
    task_run = "/tasks/{name}/runs/{run_id:int}"
    flow_run = "/flows/{name}/runs/{run_id:int}"
    all_routes = [
        *routes,
        Route("/", d.overview, name="overview"),
        Route("/queues/{name}", d.queue),
        Route("/queues/{name}/purge", d.purge_confirm, methods=["GET"]),
        Route("/queues/{name}/purge", d.purge, methods=["POST"]),
        Route("/queues/{name}/redrive", d.redrive, methods=["POST"]),
        Route("/tasks/{name}", d.task),
        Route(task_run, d.task_run),
        Route(task_run + "/cancel", d.cancel_task_run, methods=["POST"]),
        Route(task_run + "/retry", d.retry_task_run, methods=["POST"]),
        Route("/flows/{name}", d.flow),
        Route(flow_run, d.flow_run),
        Route(flow_run + "/cancel", d.cancel_flow_run, methods=["POST"]),
        Route(flow_run + "/retry", d.retry_flow_run, methods=["POST"]),
        Route("/events", d.stream),
        Route("/metrics", d.metrics),
        Mount("/static", StaticFiles(packages=[("catbird.dashboard", "static")]), name="static"),
    ]
    app = Starlette(
        routes=all_routes,
        middleware=[Middleware(_AuthGuard, auth=auth)] if auth is not None else [],
        exception_handlers={
            NotFound: d.not_found,
            InvalidArgument: d.bad_request,
            HTTPException: d.http_error,
        },
        lifespan=d.lifespan,
    )
    app.state.dashboard = d
    return app


# ------------------------------------------------------------------- helpers


def _root(request: Request) -> str:
    """The path the app is mounted at (``""`` at the root)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _quote(name: str) -> str:
    return quote(name, safe="")


def _int_or(text: str | None, default: int) -> int:
    return int(text) if text is not None and text.isdigit() else default


def _int_param(request: Request, key: str, default: Any) -> Any:
    """A positive integer query parameter; 400 when it is something else."""
    text = request.query_params.get(key)
    if text is None or text == "":
        return default
    if not text.isdigit() or int(text) < 1:
        raise HTTPException(400, f"invalid {key} {text!r}: expected a positive integer")
    return int(text)


def _counts_by_definition(rows: list[RunCount]) -> dict[tuple[str, str], dict[str, int]]:
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for row in rows:
        counts.setdefault((row.kind, row.name), {})[row.status] = row.runs
    return counts


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def _timestamp(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(value: datetime | None, now: datetime | None = None) -> str:
    """``12s ago`` / ``in 3m``: how far ``value`` is from now, roughly."""
    if value is None:
        return ""
    seconds = int(((now or datetime.now(UTC)) - value).total_seconds())
    span = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if span >= size:
            text = f"{span // size}{unit}"
            break
    else:
        text = f"{span}s"
    return f"{text} ago" if seconds >= 0 else f"in {text}"


def _handler_names(handlers: list[dict[str, Any]]) -> str:
    """``send_email, checkout.charge``: a worker's registered task and step handlers."""
    names = []
    for handler in handlers:
        if "task_name" in handler:
            names.append(str(handler["task_name"]))
        elif "flow_name" in handler:
            names.append(f"{handler['flow_name']}.{handler.get('step_name')}")
        else:
            names.append(json.dumps(handler, sort_keys=True))
    return ", ".join(names)
