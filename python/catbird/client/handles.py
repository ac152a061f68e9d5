"""Handles on task runs: :class:`TaskHandle` and :class:`AsyncTaskHandle`.

::

    handle = client.run_task(send_email, EmailRequest(to="a@b.c"))
    result = handle.wait_for_output(timeout=10.0)   # an EmailResult

``wait_for_output`` waits on the server (``cb_wait_task_output``, in slices of
at most five seconds) and returns the output of a completed run, decoded to
the task's return annotation when the handle was made from a
:class:`catbird.Task`; otherwise the plain JSON value. Any other terminal
state raises: :class:`catbird.RunFailed` (with the handler's error message),
:class:`catbird.RunCanceled`, :class:`catbird.RunSkipped`,
:class:`catbird.RunExpired`; a run that does not exist raises
:class:`catbird.NotFound`, and a run still going when ``timeout`` passes
raises :class:`TimeoutError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .. import _sql
from .._sql import Duration
from ..errors import RunCanceled, RunError, RunExpired, RunFailed, RunSkipped
from ..models import RunOutcome, TaskRunInfo

if TYPE_CHECKING:
    from .client import Client
    from .client_async import AsyncClient

__all__ = ["AsyncTaskHandle", "TaskHandle"]

O = TypeVar("O")  # noqa: E741 - the output type

#: Longest single server-side wait; a longer timeout waits in several slices.
_SLICE = 5.0

_ERRORS: dict[str, type[RunError]] = {
    "failed": RunFailed,
    "canceled": RunCanceled,
    "skipped": RunSkipped,
    "expired": RunExpired,
}


def outcome_value(
    name: str, run_id: int, outcome: RunOutcome, decode: Callable[[Any], Any] | None
) -> Any:
    """The output of a terminal run, or the :class:`catbird.RunError` it deserves."""
    if outcome.status == "completed":
        return outcome.output if decode is None else decode(outcome.output)
    cls = _ERRORS.get(outcome.status, RunError)
    detail = f": {outcome.error_message}" if outcome.error_message else ""
    raise cls(
        f'run {run_id} of task "{name}" {outcome.status}{detail}',
        name=name,
        run_id=run_id,
        status=outcome.status,
        error_message=outcome.error_message,
    )


def _slice(deadline: float | None) -> float:
    if deadline is None:
        return _SLICE
    return max(0.0, min(_SLICE, deadline - time.monotonic()))


def _seconds(value: Duration | None) -> float | None:
    if value is None:
        return None
    return value if isinstance(value, int | float) else value.total_seconds()


class TaskHandle(Generic[O]):
    """A run of a task, seen through a :class:`catbird.Client`."""

    __slots__ = ("_client", "_decode", "id", "name")

    def __init__(
        self,
        client: Client,
        name: str,
        id: int,
        decode: Callable[[Any], O] | None = None,
    ) -> None:
        self._client = client
        self.name = name
        self.id = id
        self._decode = decode

    def __repr__(self) -> str:
        return f"TaskHandle(name={self.name!r}, id={self.id})"

    def info(self) -> TaskRunInfo:
        """The run's current state; :class:`catbird.NotFound` when it does not exist."""
        return self._client.execute(_sql.get_task_run(self.name, self.id))

    def cancel(self, reason: str | None = None) -> bool:
        """Cancel the run (see :meth:`catbird.Client.cancel_task_run`)."""
        return self._client.execute(_sql.cancel_task(self.name, self.id, reason=reason))

    def wait_for_output(
        self, timeout: Duration | None = None, *, poll_interval: Duration = 0.1
    ) -> O:
        """Wait until the run is terminal and return its output (see the module doc).

        ``timeout`` is in seconds (``None``: wait as long as it takes);
        ``poll_interval`` is how often the server looks at the run.
        """
        limit = _seconds(timeout)
        deadline = None if limit is None else time.monotonic() + limit
        while True:
            outcome = self._client.execute(
                _sql.wait_task_output(
                    self.name, self.id, poll_for=_slice(deadline), poll_interval=poll_interval
                )
            )
            if outcome is not None:
                return outcome_value(self.name, self.id, outcome, self._decode)  # type: ignore[no-any-return]
            self.info()  # raises NotFound for a missing (or deleted) run
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f'run {self.id} of task "{self.name}" is not done after {limit:g} s'
                )


class AsyncTaskHandle(Generic[O]):
    """A run of a task, seen through a :class:`catbird.AsyncClient`."""

    __slots__ = ("_client", "_decode", "id", "name")

    def __init__(
        self,
        client: AsyncClient,
        name: str,
        id: int,
        decode: Callable[[Any], O] | None = None,
    ) -> None:
        self._client = client
        self.name = name
        self.id = id
        self._decode = decode

    def __repr__(self) -> str:
        return f"AsyncTaskHandle(name={self.name!r}, id={self.id})"

    async def info(self) -> TaskRunInfo:
        """The run's current state; :class:`catbird.NotFound` when it does not exist."""
        return await self._client.execute(_sql.get_task_run(self.name, self.id))

    async def cancel(self, reason: str | None = None) -> bool:
        """Cancel the run (see :meth:`catbird.AsyncClient.cancel_task_run`)."""
        return await self._client.execute(_sql.cancel_task(self.name, self.id, reason=reason))

    async def wait_for_output(
        self, timeout: Duration | None = None, *, poll_interval: Duration = 0.1
    ) -> O:
        """Wait until the run is terminal and return its output (see the module doc)."""
        limit = _seconds(timeout)
        deadline = None if limit is None else time.monotonic() + limit
        while True:
            outcome = await self._client.execute(
                _sql.wait_task_output(
                    self.name, self.id, poll_for=_slice(deadline), poll_interval=poll_interval
                )
            )
            if outcome is not None:
                return outcome_value(self.name, self.id, outcome, self._decode)  # type: ignore[no-any-return]
            await self.info()
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f'run {self.id} of task "{self.name}" is not done after {limit:g} s'
                )
