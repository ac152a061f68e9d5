"""Exception hierarchy of catbird.

Every error the engine raises in SQL carries a SQLSTATE; the client maps the
ones it knows to the classes below (keeping the psycopg exception as
``__cause__``, the server's message text as ``str(exc)`` and the code as
``exc.sqlstate``). Errors that are not about catbird's contract (a lost
connection, a syntax error in the caller's own SQL, ...) propagate unchanged as
psycopg exceptions.

::

    CatbirdError
    ├── InvalidArgument   22023 invalid_parameter_value (also 22003, 22004, 23514)
    ├── NotFound          42704 undefined_object, or a missing object
    ├── ObjectInUse       55006 object_in_use
    ├── AlreadyExists     23505 unique_violation
    ├── RunError          outcome of a waited-for run
    │   ├── RunFailed
    │   ├── RunCanceled
    │   ├── RunSkipped
    │   └── RunExpired
    └── NoRunContext      a handler helper called outside a handler

    PermanentError        raised by a handler: fail the run at once, no retry

    CancelRun (BaseException) raised by catbird.cancel() to stop a handler
"""

from __future__ import annotations

import psycopg

__all__ = [
    "AlreadyExists",
    "CancelRun",
    "CatbirdError",
    "InvalidArgument",
    "NoRunContext",
    "NotFound",
    "ObjectInUse",
    "PermanentError",
    "RunCanceled",
    "RunError",
    "RunExpired",
    "RunFailed",
    "RunSkipped",
    "map_error",
]


class CatbirdError(Exception):
    """Base class of every error raised by catbird.

    ``sqlstate`` is the five-character SQLSTATE of the server error this was
    mapped from, or ``None`` when the error was raised by the client itself.
    """

    sqlstate: str | None

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate

    @property
    def message(self) -> str:
        """The error message (the server's text for a mapped server error)."""
        return str(self.args[0]) if self.args else ""


class InvalidArgument(CatbirdError, ValueError):
    """A name, topic, pattern, quantity, duration or payload was rejected (22023)."""


class NotFound(CatbirdError, LookupError):
    """An unknown queue, task, flow, step or run (42704), or a missing object."""


class ObjectInUse(CatbirdError):
    """A change was refused because the object is in use (55006)."""


class AlreadyExists(CatbirdError):
    """A duplicate where creating twice is not idempotent (23505)."""


class RunError(CatbirdError):
    """A run reached a terminal state other than ``completed``."""

    def __init__(
        self,
        message: str,
        *,
        name: str | None = None,
        run_id: int | None = None,
        status: str | None = None,
        error_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.name = name
        self.run_id = run_id
        self.status = status
        self.error_message = error_message


class RunFailed(RunError):
    """The run failed; ``error_message`` holds the handler's error."""


class RunCanceled(RunError):
    """The run was canceled."""


class RunSkipped(RunError):
    """The run was skipped (its condition evaluated false)."""


class RunExpired(RunError):
    """The run passed its ``expires_at`` before it started."""


class NoRunContext(CatbirdError, RuntimeError):
    """A handler helper (``catbird.current_run_id()``, ``catbird.cancel()``, ...)
    was called outside a running handler."""


class PermanentError(Exception):
    """Raise it from a handler to fail the run at once, whatever its retry policy.

    For failures a retry cannot fix (a malformed request, a record that does
    not exist)::

        @catbird.task("charge")
        def charge(req: Charge) -> Receipt:
            if req.amount <= 0:
                raise catbird.PermanentError(f"invalid amount {req.amount}")
            ...

    The worker fails the run with ``retryable => false`` (the engine then
    fails it after this attempt, on-fail handling included); the error
    message is ``PermanentError: <message>`` and the traceback is stored as
    the run's ``error_detail``. Subclass it for your own non-retryable
    errors. An input the handler's annotation cannot decode is treated the
    same way.
    """


class CancelRun(BaseException):
    """Raised by :func:`catbird.cancel` to stop the running handler.

    The worker catches it, cancels the run in the database (status ``canceled``,
    with ``reason``) and records no other outcome. It derives from
    ``BaseException`` so that a handler's ``except Exception:`` does not
    swallow it; do not catch it yourself.
    """

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason


_BY_SQLSTATE: dict[str, type[CatbirdError]] = {
    "22023": InvalidArgument,  # invalid_parameter_value
    "22003": InvalidArgument,  # numeric_value_out_of_range (e.g. a duration too large for int)
    "22004": InvalidArgument,  # null_value_not_allowed
    "23514": InvalidArgument,  # check_violation
    "42704": NotFound,  # undefined_object
    "55006": ObjectInUse,  # object_in_use
    "23505": AlreadyExists,  # unique_violation
}


def _server_message(exc: psycopg.Error) -> str:
    diag = exc.diag
    primary = diag.message_primary if diag is not None else None
    return primary if primary else str(exc).strip()


def map_error(exc: psycopg.Error) -> CatbirdError | None:
    """Translate a psycopg error into the matching catbird error, if any.

    Returns ``None`` when the SQLSTATE is not part of catbird's contract; the
    caller then re-raises the original exception. The caller is expected to
    ``raise mapped from exc`` so that the psycopg error stays as ``__cause__``.
    """
    sqlstate = exc.sqlstate
    if sqlstate is None:
        return None
    cls = _BY_SQLSTATE.get(sqlstate)
    if cls is None:
        return None
    return cls(_server_message(exc), sqlstate=sqlstate)


__all__ += ["CompleteEarly"]


class CompleteEarly(CancelRun):
    """Raised by :func:`catbird.complete_early` to stop a flow step handler.

    The worker catches it and completes the whole flow run with ``output``
    (``cb_complete_flow_early``); work still running in the run is told to
    stop. Like :class:`CancelRun` it derives from ``BaseException``: do not
    catch it yourself.
    """

    def __init__(self, output: object = None, reason: str | None = None) -> None:
        super().__init__(reason)
        self.output = output
