"""A cron schedule declared with a task or flow definition.

::

    @catbird.task("daily_report", schedule="0 9 * * 1-5", schedule_input={"kind": "daily"})
    def daily_report(input: dict) -> None: ...

    cleanup = catbird.Flow("cleanup", schedule="@hourly", catch_up="skip")

The declaration is checked when it is written (types, the catch-up policy,
the shape of the spec: five fields or an ``@`` descriptor, the input
JSON-representable); the spec itself is parsed by the engine, which names
the bad field when a worker or :meth:`catbird.Client.create_task_schedule`
stores it. A :class:`catbird.Worker` creates (upserts) the schedules of the
tasks and flows it serves when it starts, right after their definitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..codec import dumps
from ..errors import InvalidArgument
from ..models import CATCH_UP_POLICIES
from .handlers import DefinitionError

__all__ = ["Schedule", "make_schedule"]


@dataclass(frozen=True, slots=True)
class Schedule:
    """The schedule of a definition: its cron spec, the runs' input and the
    catch-up policy (``skip``, ``one`` or ``all``)."""

    cron_spec: str
    input: Any = None
    catch_up: str = "one"


def make_schedule(
    what: str, schedule: str | None, schedule_input: Any, catch_up: str
) -> Schedule | None:
    """The checked :class:`Schedule` of a definition (``None`` without ``schedule``).

    ``what`` names the definition in errors (``task 'report'``).
    """
    if schedule is None:
        if schedule_input is not None:
            raise DefinitionError(f"{what}: schedule_input= needs a schedule=")
        if catch_up != "one":
            raise DefinitionError(f"{what}: catch_up= needs a schedule=")
        return None
    if not isinstance(schedule, str):
        raise DefinitionError(
            f"{what}: schedule must be a cron spec string such as '0 9 * * 1-5' or '@daily',"
            f" not {type(schedule).__name__}"
        )
    spec = schedule.strip()
    fields = spec.split()
    if not (len(fields) == 5 or (len(fields) == 1 and spec.startswith("@"))):
        raise InvalidArgument(
            f"{what}: invalid schedule {schedule!r}: expected five fields"
            " (minute hour day-of-month month day-of-week) or a descriptor such as @daily"
        )
    if not isinstance(catch_up, str) or catch_up not in CATCH_UP_POLICIES:
        raise InvalidArgument(
            f"{what}: invalid catch_up {catch_up!r}: expected 'skip' (only the latest missed"
            " tick), 'one' (the oldest missed tick, once) or 'all' (every missed tick)"
        )
    try:
        dumps(schedule_input)
    except (TypeError, ValueError) as exc:
        raise DefinitionError(f"{what}: schedule_input is not JSON-representable: {exc}") from exc
    return Schedule(schedule, schedule_input, catch_up)
