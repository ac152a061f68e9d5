"""Handles on flow runs: :class:`FlowHandle` and :class:`AsyncFlowHandle`.

::

    handle = client.run_flow(order, Order(id=3))
    handle.signal("ship", Approval(ok=True))
    shipment = handle.wait_for_output(timeout=30.0)   # decoded when unambiguous
    for step in handle.steps(): print(step.step_name, step.status)

``wait_for_output`` waits on the server (``cb_wait_flow_output``, in slices
of at most five seconds) and returns the flow's output: decoded to the output
step's return annotation when the handle was made from a :class:`catbird.Flow`
whose output candidates all decode the same way, else the plain JSON value.
Any other terminal state raises :class:`catbird.RunFailed` (with the error
message, e.g. the failed step's), :class:`catbird.RunCanceled` or
:class:`catbird.RunExpired`; a run that does not exist raises
:class:`catbird.NotFound`, and one still going when ``timeout`` passes raises
:class:`TimeoutError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import _sql
from .._sql import Duration
from ..errors import NotFound, RunCanceled, RunError, RunExpired, RunFailed, RunSkipped
from ..models import FlowRunInfo, RunOutcome, StepRunInfo

if TYPE_CHECKING:
    from .client import Client
    from .client_async import AsyncClient

__all__ = ["AsyncFlowHandle", "FlowHandle", "flow_outcome_value"]

#: Longest single server-side wait; a longer timeout waits in several slices.
_SLICE = 5.0

_ERRORS: dict[str, type[RunError]] = {
    "failed": RunFailed,
    "canceled": RunCanceled,
    "skipped": RunSkipped,
    "expired": RunExpired,
}


def flow_outcome_value(
    name: str, run_id: int, outcome: RunOutcome, decode: Callable[[Any], Any] | None
) -> Any:
    """The output of a terminal flow run, or the :class:`catbird.RunError` it deserves."""
    if outcome.status == "completed":
        return outcome.output if decode is None else decode(outcome.output)
    cls = _ERRORS.get(outcome.status, RunError)
    detail = f": {outcome.error_message}" if outcome.error_message else ""
    raise cls(
        f'run {run_id} of flow "{name}" {outcome.status}{detail}',
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


class FlowHandle:
    """A run of a flow, seen through a :class:`catbird.Client`."""

    __slots__ = ("_client", "_decode", "id", "name")

    def __init__(
        self, client: Client, name: str, id: int, decode: Callable[[Any], Any] | None = None
    ) -> None:
        self._client = client
        self.name = name
        self.id = id
        self._decode = decode

    def __repr__(self) -> str:
        return f"FlowHandle(name={self.name!r}, id={self.id})"

    def info(self) -> FlowRunInfo:
        """The run's current state; :class:`catbird.NotFound` when it does not exist."""
        return self._client.execute(_sql.get_flow_run(self.name, self.id))

    def steps(self) -> list[StepRunInfo]:
        """The run's steps, in definition order."""
        return self._client.execute(_sql.get_flow_run_steps(self.name, self.id))

    def step(self, step_name: str) -> StepRunInfo:
        """One step of the run (:class:`catbird.NotFound` for an unknown run or step)."""
        info = self._client.execute(_sql.get_flow_step_status(self.name, self.id, step_name))
        if info is None:
            raise NotFound(f'flow "{self.name}" has no run {self.id}')
        return info

    def signal(self, step_name: str, input: Any = None) -> bool:
        """Deliver a signal to a step (see :meth:`catbird.Client.signal_flow`)."""
        return self._client.execute(_sql.signal_flow(self.name, self.id, step_name, input))

    def cancel(self, reason: str | None = None) -> bool:
        """Cancel the run (see :meth:`catbird.Client.cancel_flow_run`)."""
        return self._client.execute(_sql.cancel_flow(self.name, self.id, reason=reason))

    def wait_for_output(
        self, timeout: Duration | None = None, *, poll_interval: Duration = 0.1
    ) -> Any:
        """Wait until the run is terminal and return its output (see the module doc)."""
        limit = _seconds(timeout)
        deadline = None if limit is None else time.monotonic() + limit
        while True:
            outcome = self._client.execute(
                _sql.wait_flow_output(
                    self.name, self.id, poll_for=_slice(deadline), poll_interval=poll_interval
                )
            )
            if outcome is not None:
                return flow_outcome_value(self.name, self.id, outcome, self._decode)
            self.info()  # raises NotFound for a missing (or deleted) run
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f'run {self.id} of flow "{self.name}" is not done after {limit:g} s'
                )


class AsyncFlowHandle:
    """A run of a flow, seen through a :class:`catbird.AsyncClient`."""

    __slots__ = ("_client", "_decode", "id", "name")

    def __init__(
        self,
        client: AsyncClient,
        name: str,
        id: int,
        decode: Callable[[Any], Any] | None = None,
    ) -> None:
        self._client = client
        self.name = name
        self.id = id
        self._decode = decode

    def __repr__(self) -> str:
        return f"AsyncFlowHandle(name={self.name!r}, id={self.id})"

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

    async def cancel(self, reason: str | None = None) -> bool:
        """Cancel the run (see :meth:`catbird.AsyncClient.cancel_flow_run`)."""
        return await self._client.execute(_sql.cancel_flow(self.name, self.id, reason=reason))

    async def wait_for_output(
        self, timeout: Duration | None = None, *, poll_interval: Duration = 0.1
    ) -> Any:
        """Wait until the run is terminal and return its output (see the module doc)."""
        limit = _seconds(timeout)
        deadline = None if limit is None else time.monotonic() + limit
        while True:
            outcome = await self._client.execute(
                _sql.wait_flow_output(
                    self.name, self.id, poll_for=_slice(deadline), poll_interval=poll_interval
                )
            )
            if outcome is not None:
                return flow_outcome_value(self.name, self.id, outcome, self._decode)
            await self.info()
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f'run {self.id} of flow "{self.name}" is not done after {limit:g} s'
                )
