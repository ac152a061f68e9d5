"""What waiting on a run needs without doing I/O, shared by the sync and async handles.

A handle LISTENs for the run's end on a connection of its own and looks at
the run when its completed/failed/canceled/expired event arrives, and every
:data:`SAFETY_POLL` seconds besides (a notification can be missed, e.g. while
a connection is lost). When no connection can listen, it waits on the server
instead (``cb_wait_task_output``/``cb_wait_flow_output``, polling every
:data:`POLL` seconds) in slices of at most :data:`SLICE` seconds, so that a
long ``timeout`` never holds one statement open for long. Either way the
terminal outcome becomes the output or the :class:`catbird.RunError`
subclass it deserves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .._sql import Duration
from ..errors import RunCanceled, RunError, RunExpired, RunFailed, RunSkipped
from ..events import parse_event
from ..models import RunOutcome

__all__ = ["POLL", "SAFETY_POLL", "SLICE", "Deadline", "ends_run", "outcome_value", "seconds"]

#: Longest single server-side wait; a longer timeout waits in several slices.
SLICE = 5.0
#: How often the server looks at the run when no event can be received.
POLL = 0.1
#: How often a listening waiter looks at the run without an event.
SAFETY_POLL = 5.0

_ENDS = ("completed", "failed", "canceled", "expired", "skipped")
_END_TOPICS = {kind: {f"catbird.{kind}.{end}" for end in _ENDS} for kind in ("task", "flow")}

_ERRORS: dict[str, type[RunError]] = {
    "failed": RunFailed,
    "canceled": RunCanceled,
    "skipped": RunSkipped,
    "expired": RunExpired,
}


def outcome_value(
    kind: str, name: str, run_id: int, outcome: RunOutcome, decode: Callable[[Any], Any] | None
) -> Any:
    """The output of a terminal run, or the :class:`catbird.RunError` it deserves."""
    if outcome.status == "completed":
        return outcome.output if decode is None else decode(outcome.output)
    cls = _ERRORS.get(outcome.status, RunError)
    detail = f": {outcome.error_message}" if outcome.error_message else ""
    raise cls(
        f'run {run_id} of {kind} "{name}" {outcome.status}{detail}',
        name=name,
        run_id=run_id,
        status=outcome.status,
        error_message=outcome.error_message,
    )


def seconds(duration: Duration) -> float:
    """A duration in seconds."""
    return float(duration) if isinstance(duration, int | float) else duration.total_seconds()


def ends_run(payload: str, kind: str, name: str, run_id: int) -> bool:
    """Whether a notification payload announces the end of run ``run_id`` of
    the task or flow ``name`` (``kind``)."""
    event = parse_event(payload)
    return (
        event is not None
        and event.topic in _END_TOPICS[kind]
        and run_id in event.run_ids
        and event.field(kind) == name
    )


class Deadline:
    """The end of a wait of ``timeout`` seconds (``None``: no end)."""

    __slots__ = ("_at", "limit")

    def __init__(self, timeout: Duration | None) -> None:
        if timeout is not None:
            timeout = seconds(timeout)
        self.limit = timeout
        self._at = None if timeout is None else time.monotonic() + timeout

    def next_slice(self, longest: float = SLICE) -> float:
        """How long the next wait may last: at most ``longest`` seconds."""
        if self._at is None:
            return longest
        return max(0.0, min(longest, self._at - time.monotonic()))

    def check(self, kind: str, name: str, run_id: int) -> None:
        """Raise :class:`TimeoutError` once the deadline has passed."""
        if self._at is not None and time.monotonic() >= self._at:
            raise TimeoutError(
                f'run {run_id} of {kind} "{name}" is not done after {self.limit:g} s'
            )
