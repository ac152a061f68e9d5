"""Helpers usable inside a running handler.

::

    @catbird.task("resize")
    def resize(req: Resize) -> str:
        log = catbird.logger()                 # "[resize run 42] ..." records
        log.info("resizing %s", req.path)
        if not exists(req.path):
            catbird.cancel("source is gone")   # cancels run 42 and stops here
        if catbird.cancel_requested():         # canceled from elsewhere meanwhile
            return "stopped"
        return f"done {catbird.current_run_id()}"

The worker sets the run context (a :mod:`contextvars` variable) before it
calls a handler, in the handler's task for ``async def`` handlers and in the
thread for plain ones, so these helpers know which run they are in. Called
outside a handler they raise :class:`catbird.NoRunContext`.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, NoReturn

from .errors import CancelRun, NoRunContext

__all__ = [
    "RunContext",
    "cancel",
    "cancel_requested",
    "current_run",
    "current_run_id",
    "logger",
]


class _RunLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes messages with the run and adds ``catbird_task``/``catbird_run_id`` extras."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = self.extra or {}
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return f"[{extra.get('catbird_task')} run {extra.get('catbird_run_id')}] {msg}", kwargs


@dataclass(eq=False)
class RunContext:
    """What a handler can know about the run it is handling."""

    kind: str
    """``"task"`` for a task handler, ``"on_fail"`` for an on-fail handler."""
    task_name: str
    run_id: int
    attempt: int
    """1 on the first attempt (for on-fail handlers: the on-fail attempt)."""
    headers: dict[str, Any] | None = None
    concurrency_key: str | None = None
    canceled: bool = field(default=False, repr=False)
    """True once the run was canceled from outside while the handler runs."""
    _logger: _RunLogger | None = field(default=None, repr=False)

    @property
    def logger(self) -> logging.LoggerAdapter:  # type: ignore[type-arg]
        if self._logger is None:
            self._logger = _RunLogger(
                logging.getLogger(f"catbird.task.{self.task_name}"),
                {"catbird_task": self.task_name, "catbird_run_id": self.run_id},
            )
        return self._logger


_current: ContextVar[RunContext | None] = ContextVar("catbird_run", default=None)


def current_run() -> RunContext:
    """The :class:`RunContext` of the running handler."""
    ctx = _current.get()
    if ctx is None:
        raise NoRunContext(
            "no run context: catbird's handler helpers work only inside a handler run by a worker"
        )
    return ctx


def current_run_id() -> int:
    """The id of the run being handled."""
    return current_run().run_id


def cancel(reason: str | None = None) -> NoReturn:
    """Cancel the run being handled and stop the handler.

    Raises :class:`catbird.CancelRun`; the worker then cancels the run in the
    database (``cb_cancel_task``, status ``canceled`` with ``reason``) and
    records no other outcome. Not available in on-fail handlers (the run has
    already failed).
    """
    ctx = current_run()
    if ctx.kind != "task":
        raise NoRunContext("catbird.cancel() cancels a task run; an on-fail handler has none")
    raise CancelRun(reason)


def cancel_requested() -> bool:
    """True once the run was canceled from outside (e.g. ``client.cancel_task_run``).

    ``async def`` handlers are interrupted (``asyncio.CancelledError``) on
    cancellation; plain handlers run in a thread that cannot be interrupted,
    so long ones should check this now and then and return early.
    """
    return current_run().canceled


def logger() -> logging.LoggerAdapter:  # type: ignore[type-arg]
    """A logger bound to the current run (logger ``catbird.task.<name>``)."""
    return current_run().logger
