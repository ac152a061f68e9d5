"""Handles on runs: :class:`AsyncTaskHandle` and :class:`AsyncFlowHandle`.

::

    handle = await client.run_task(send_email, EmailRequest(to="a@b.c"))
    result = await handle.wait_for_output(timeout=10.0)   # an EmailResult

    handle = await client.run_flow(order, Order(id=3))
    await handle.signal("ship", Approval(ok=True))
    shipment = await handle.wait_for_output(timeout=30.0)
    for step in await handle.steps(): print(step.step_name, step.status)

``wait_for_output`` LISTENs for the run's end on a connection of its own (one
opened like the client's connection or pool) and looks at the run when its
event arrives, and every few seconds besides; without such a connection it
waits on the server (``cb_wait_task_output`` or ``cb_wait_flow_output``, in
slices of at most five seconds). It returns the output of a completed run:
decoded to the task's return annotation when the handle was made from a
:class:`catbird.Task` (for a :class:`catbird.Flow`, when its output candidates
all decode the same way), otherwise the plain JSON value. Any other terminal
state raises: :class:`catbird.RunFailed` (with the handler's error message),
:class:`catbird.RunCanceled`, :class:`catbird.RunSkipped`,
:class:`catbird.RunExpired`; a run that does not exist raises
:class:`catbird.NotFound`, and a run still going when ``timeout`` passes
raises :class:`TimeoutError`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import aclosing
from typing import Any, ClassVar, Generic, TypeVar

from .. import _sql
from .._sql import AsyncExecutor, Duration, Query
from ..errors import NotFound
from ..models import FlowRunInfo, RunOutcome, StepRunInfo, TaskRunInfo
from ._waiting import POLL, SAFETY_POLL, Deadline, ends_run, outcome_value, seconds

__all__ = ["AsyncFlowHandle", "AsyncRunHandle", "AsyncTaskHandle"]

O = TypeVar("O")  # noqa: E741 - the output type


class AsyncRunHandle(ABC, Generic[O]):
    """What task and flow handles share: a run's identity, cancel and wait."""

    __slots__ = ("_client", "_decode", "id", "name")

    #: "task" or "flow", as the engine's messages say it.
    kind: ClassVar[str]

    def __init__(
        self,
        client: AsyncExecutor,
        name: str,
        id: int,
        decode: Callable[[Any], O] | None = None,
    ) -> None:
        self._client = client
        self.name = name
        self.id = id
        self._decode = decode

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, id={self.id})"

    @abstractmethod
    async def info(self) -> TaskRunInfo | FlowRunInfo:
        """The run's current state; :class:`catbird.NotFound` when it does not exist."""

    @abstractmethod
    def _cancel_query(self, reason: str | None) -> Query[bool]: ...

    @abstractmethod
    def _wait_query(self, poll_for: float, poll_interval: Duration) -> Query[RunOutcome | None]: ...

    async def cancel(self, reason: str | None = None) -> bool:
        """Cancel the run (see ``cancel_task_run``/``cancel_flow_run`` of the client)."""
        return await self._client.execute(self._cancel_query(reason))

    async def wait_for_output(
        self, timeout: Duration | None = None, *, poll_interval: Duration | None = None
    ) -> O:
        """Wait until the run is terminal and return its output (see the module doc).

        ``timeout`` is in seconds (``None``: wait as long as it takes);
        ``poll_interval`` is how often the run is looked at without an event
        announcing its end: by default every 5 s while listening (a safety
        net for a missed notification), every 0.1 s when no connection can
        listen.
        """
        deadline = Deadline(timeout)
        async with self._client._listening() as events:
            default = POLL if events is None else SAFETY_POLL
            interval = default if poll_interval is None else seconds(poll_interval)
            while True:
                poll_for = 0.0 if events is not None else deadline.next_slice()
                outcome = await self._client.execute(self._wait_query(poll_for, interval))
                if outcome is not None:
                    value: O = outcome_value(self.kind, self.name, self.id, outcome, self._decode)
                    return value
                await self.info()  # raises NotFound for a missing (or deleted) run
                deadline.check(self.kind, self.name, self.id)
                if events is not None:
                    # aclosing: leaving early releases the connection's lock at once
                    notes = events.notifies(timeout=deadline.next_slice(interval))
                    async with aclosing(notes):
                        async for note in notes:
                            if ends_run(note.payload, self.kind, self.name, self.id):
                                break


class AsyncTaskHandle(AsyncRunHandle[O]):
    """A run of a task, seen through a :class:`catbird.AsyncClient`."""

    __slots__ = ()
    kind = "task"

    async def info(self) -> TaskRunInfo:
        """The run's current state; :class:`catbird.NotFound` when it does not exist."""
        return await self._client.execute(_sql.get_task_run(self.name, self.id))

    def _cancel_query(self, reason: str | None) -> Query[bool]:
        return _sql.cancel_task(self.name, self.id, reason=reason)

    def _wait_query(self, poll_for: float, poll_interval: Duration) -> Query[RunOutcome | None]:
        return _sql.wait_task_output(
            self.name, self.id, poll_for=poll_for, poll_interval=poll_interval
        )


class AsyncFlowHandle(AsyncRunHandle[Any]):
    """A run of a flow, seen through a :class:`catbird.AsyncClient`."""

    __slots__ = ()
    kind = "flow"

    async def info(self) -> FlowRunInfo:
        """The run's current state; :class:`catbird.NotFound` when it does not exist."""
        return await self._client.execute(_sql.get_flow_run(self.name, self.id))

    async def steps(self) -> list[StepRunInfo]:
        """The run's steps, in definition order."""
        return await self._client.execute(_sql.get_flow_run_steps(self.name, self.id))

    async def step(self, step_name: str) -> StepRunInfo:
        """One step of the run (:class:`catbird.NotFound` for an unknown run or step)."""
        query = _sql.get_flow_step_status(self.name, self.id, step_name)
        info = await self._client.execute(query)
        if info is None:
            raise NotFound(f'flow "{self.name}" has no run {self.id}')
        return info

    async def signal(self, step_name: str, input: Any = None) -> bool:
        """Deliver a signal to a step (see :meth:`catbird.AsyncClient.signal_flow`)."""
        return await self._client.execute(_sql.signal_flow(self.name, self.id, step_name, input))

    def _cancel_query(self, reason: str | None) -> Query[bool]:
        return _sql.cancel_flow(self.name, self.id, reason=reason)

    def _wait_query(self, poll_for: float, poll_interval: Duration) -> Query[RunOutcome | None]:
        return _sql.wait_flow_output(
            self.name, self.id, poll_for=poll_for, poll_interval=poll_interval
        )
