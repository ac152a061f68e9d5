"""What waiting on a run needs without doing I/O, shared by the sync and async handles.

A handle waits on the server (``cb_wait_task_output``/``cb_wait_flow_output``)
in slices of at most :data:`SLICE` seconds, so that a long ``timeout`` never
holds one statement open for long, and turns the terminal outcome into the
output or the :class:`catbird.RunError` subclass it deserves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .._sql import Duration
from ..errors import RunCanceled, RunError, RunExpired, RunFailed, RunSkipped
from ..models import RunOutcome

__all__ = ["SLICE", "Deadline", "outcome_value"]

#: Longest single server-side wait; a longer timeout waits in several slices.
SLICE = 5.0

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


class Deadline:
    """The end of a wait of ``timeout`` seconds (``None``: no end)."""

    __slots__ = ("_at", "limit")

    def __init__(self, timeout: Duration | None) -> None:
        if timeout is not None and not isinstance(timeout, int | float):
            timeout = timeout.total_seconds()
        self.limit = timeout
        self._at = None if timeout is None else time.monotonic() + timeout

    def next_slice(self) -> float:
        """How long the next server-side wait may last."""
        if self._at is None:
            return SLICE
        return max(0.0, min(SLICE, self._at - time.monotonic()))

    def check(self, kind: str, name: str, run_id: int) -> None:
        """Raise :class:`TimeoutError` once the deadline has passed."""
        if self._at is not None and time.monotonic() >= self._at:
            raise TimeoutError(
                f'run {run_id} of {kind} "{name}" is not done after {self.limit:g} s'
            )
