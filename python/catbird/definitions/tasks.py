"""Task definitions: :class:`Task` and the :func:`task` decorator.

::

    @catbird.task("send_email", max_retries=3, concurrency=5, timeout=30.0,
                  backoff=(0.1, 2.0), circuit_breaker=(5, 30.0))
    async def send_email(req: EmailRequest) -> EmailResult: ...

    @send_email.on_fail
    def report(req: EmailRequest, failure: catbird.TaskFailure) -> None: ...

A :class:`Task` is a named definition (description, condition, retention
period: what :meth:`catbird.Client.create_task` stores) plus, optionally, a
:class:`Handler` the :class:`catbird.Worker` runs and an on-fail handler.
Handlers are checked when they are attached, so a wrong signature fails at
import time rather than in a worker: a task handler takes exactly one
parameter (the run input), an on-fail handler two (the input and a
:class:`catbird.TaskFailure`); either may be ``async def`` or a plain function
(run in a thread by the worker). The input parameter's annotation and the
return annotation select the JSON codecs (:mod:`catbird.codec`): a dataclass,
``TypedDict`` or pydantic model is built from the JSON input, and outputs are
turned back into JSON.

Handlers and their options are not task-specific: flow steps use the same
(:mod:`catbird.definitions.handlers`).
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Generic, Protocol, TypeVar, overload

from ..codec import Codec, codec_for, is_passthrough, to_json_value
from ..models import TaskFailure
from .handlers import (
    CircuitBreakerSpec,
    DefinitionError,
    Handler,
    HandlerOptions,
    _options,
    _retention,
    check_name,
    make_handler,
    make_on_fail_handler,
)
from .schedules import Schedule, make_schedule

__all__ = ["Task", "definition_args", "output_decoder", "task", "task_name"]

I = TypeVar("I")  # noqa: E741 - the conventional name of an input type
O = TypeVar("O")  # noqa: E741
I_contra = TypeVar("I_contra", contravariant=True)

_PASSTHROUGH = codec_for(Any)


class Task(Generic[I, O]):
    """A task: a named definition and, optionally, its handler.

    ``Task("resize")`` alone is a definition-only task (enough to create it and
    run it from a client); ``Task("resize", fn, ...)``, :func:`catbird.task`
    or :meth:`do` attach the handler a worker runs. Handler options
    (``concurrency``, ``batch_size``, ``timeout``, ``max_retries``,
    ``backoff``, ``circuit_breaker``) are described in :class:`HandlerOptions`.

    ``schedule`` is a cron spec (``"0 9 * * 1-5"``, ``"@hourly"``; UTC): a
    :class:`catbird.Worker` serving the task creates (upserts) that schedule
    when it starts, each tick enqueueing a run with ``schedule_input``
    (default ``{}``); ``catch_up`` (``skip``, ``one``, ``all``) is what ticks
    missed during downtime get (see :meth:`catbird.Client.create_task_schedule`).

    Calling the task (``send_email(req)``) calls the handler directly, which
    is handy in unit tests.
    """

    def __init__(
        self,
        name: str,
        fn: Callable[[I], Awaitable[O]] | Callable[[I], O] | None = None,
        *,
        description: str | None = None,
        condition: str | None = None,
        retention_period: float | timedelta | None = None,
        concurrency: int = 4,
        batch_size: int = 64,
        timeout: float | None = 30.0,
        max_retries: int = 2,
        backoff: tuple[float, float] = (0.1, 2.0),
        circuit_breaker: CircuitBreakerSpec = None,
        schedule: str | None = None,
        schedule_input: Any = None,
        catch_up: str = "one",
    ) -> None:
        self.name = check_name("task", name)
        #: The cron schedule a worker serving this task creates at start-up.
        self.schedule: Schedule | None = make_schedule(
            f"task {self.name!r}", schedule, schedule_input, catch_up
        )
        self.description = description
        self.condition = condition
        self.retention_period = _retention(retention_period)
        self.options = HandlerOptions(
            concurrency=concurrency,
            batch_size=batch_size,
            timeout=timeout,
            max_retries=max_retries,
            backoff=backoff,
            circuit_breaker=circuit_breaker,  # type: ignore[arg-type]  # normalised in __post_init__
        )
        self.handler: Handler | None = None
        self.on_fail_handler: Handler | None = None
        if fn is not None:
            self.do(fn)

    def __repr__(self) -> str:
        parts = [repr(self.name)]
        if self.handler is not None:
            parts.append(f"handler={self.handler.name}")
        if self.on_fail_handler is not None:
            parts.append(f"on_fail={self.on_fail_handler.name}")
        return f"Task({', '.join(parts)})"

    def do(self, fn: Callable[[I], Awaitable[O]] | Callable[[I], O], **options: Any) -> Task[I, O]:
        """Attach the handler (options given here override the task's). Returns the task."""
        opts = _options(self.options, options)
        self.handler = make_handler(
            fn, opts, what=f"task {self.name!r}", arity=1, param_roles=("the run input",)
        )
        self.options = opts
        functools.update_wrapper(self, fn, assigned=("__module__", "__doc__"), updated=())
        return self

    @overload
    def on_fail(self, fn: Callable[[I, TaskFailure], Any], /, **options: Any) -> Task[I, O]: ...
    @overload
    def on_fail(
        self, fn: None = None, /, **options: Any
    ) -> Callable[[Callable[[I, TaskFailure], Any]], Task[I, O]]: ...
    def on_fail(
        self, fn: Callable[[I, TaskFailure], Any] | None = None, /, **options: Any
    ) -> Task[I, O] | Callable[[Callable[[I, TaskFailure], Any]], Task[I, O]]:
        """Attach the on-fail handler, called with ``(input, TaskFailure)`` once a
        run has failed for good (after its retries).

        Usable as ``task.on_fail(fn, max_retries=5)``, ``@task.on_fail`` or
        ``@task.on_fail(timeout=10)``; returns the task. Its options default to
        the standard ones (not the task handler's).
        """
        if fn is None:

            def decorator(f: Callable[[I, TaskFailure], Any]) -> Task[I, O]:
                return self._set_on_fail(f, options)

            return decorator
        return self._set_on_fail(fn, options)

    def _set_on_fail(self, fn: Callable[..., Any], options: dict[str, Any]) -> Task[I, O]:
        self.on_fail_handler = make_on_fail_handler(
            fn,
            options,
            what=f"task {self.name!r} on-fail",
            input_role="the run input",
            failure_type=TaskFailure,
        )
        return self

    def __call__(self, input: I) -> Any:
        """Call the handler directly (no worker, no database)."""
        if self.handler is None:
            raise DefinitionError(f"task {self.name!r} has no handler")
        return self.handler.fn(input)

    # -- codecs ---------------------------------------------------------------

    @property
    def input_codec(self) -> Codec:
        """The codec of the handler's input annotation (JSON as is without a handler)."""
        return self.handler.params[0].codec if self.handler is not None else _PASSTHROUGH

    @property
    def output_codec(self) -> Codec:
        """The codec of the handler's return annotation (JSON as is without a handler)."""
        return self.handler.output if self.handler is not None else _PASSTHROUGH

    def encode_input(self, value: I) -> Any:
        """``value`` as a JSON value (dataclasses, pydantic models, ... converted)."""
        return to_json_value(value)

    def decode_output(self, value: Any) -> O:
        """A completed run's JSON output as the handler's annotated return type."""
        return typing.cast(O, self.output_codec.decode(value))


class _TaskDecorator(Protocol):
    @overload
    def __call__(self, fn: Callable[[I_contra], Awaitable[O]], /) -> Task[I_contra, O]: ...
    @overload
    def __call__(self, fn: Callable[[I_contra], O], /) -> Task[I_contra, O]: ...


def task(
    name: str,
    *,
    description: str | None = None,
    condition: str | None = None,
    retention_period: float | timedelta | None = None,
    concurrency: int = 4,
    batch_size: int = 64,
    timeout: float | None = 30.0,
    max_retries: int = 2,
    backoff: tuple[float, float] = (0.1, 2.0),
    circuit_breaker: CircuitBreakerSpec = None,
    schedule: str | None = None,
    schedule_input: Any = None,
    catch_up: str = "one",
) -> _TaskDecorator:
    """Decorator: turn a handler function into a :class:`Task` named ``name``.

    ::

        @catbird.task("send_email", max_retries=3, timeout=10.0)
        async def send_email(req: EmailRequest) -> EmailResult: ...

        @catbird.task("daily_report", schedule="0 9 * * 1-5")   # run by the worker's scheduler
        def daily_report(input: dict) -> None: ...
    """
    # Fail on bad options where the decorator is written, not where it is applied.
    Task(
        name,
        description=description,
        condition=condition,
        retention_period=retention_period,
        concurrency=concurrency,
        batch_size=batch_size,
        timeout=timeout,
        max_retries=max_retries,
        backoff=backoff,
        circuit_breaker=circuit_breaker,
        schedule=schedule,
        schedule_input=schedule_input,
        catch_up=catch_up,
    )

    def decorator(fn: Callable[[Any], Any]) -> Task[Any, Any]:
        return Task(
            name,
            fn,
            description=description,
            condition=condition,
            retention_period=retention_period,
            concurrency=concurrency,
            batch_size=batch_size,
            timeout=timeout,
            max_retries=max_retries,
            backoff=backoff,
            circuit_breaker=circuit_breaker,
            schedule=schedule,
            schedule_input=schedule_input,
            catch_up=catch_up,
        )

    return typing.cast(_TaskDecorator, decorator)


# ---------------------------------------------------------------- client helpers


def task_name(task: Task[Any, Any] | str) -> str:
    """The name of a task given as a :class:`Task` or a name."""
    return task.name if isinstance(task, Task) else task


def output_decoder(task: Task[Any, O] | str) -> Callable[[Any], O] | None:
    """How a handle decodes the output of ``task`` (``None``: plain JSON)."""
    if isinstance(task, Task) and not is_passthrough(task.output_codec):
        return typing.cast(Callable[[Any], O], task.output_codec.decode)
    return None


def definition_args(
    task: Task[Any, Any] | str,
    *,
    description: str | None,
    condition: str | None,
    retention_period: float | timedelta | None,
    on_fail: bool | None,
    max_retries: int | None = None,
    backoff: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Arguments of ``cb_create_task``: the task's own (its retry policy
    included), overridden by those given."""
    if isinstance(task, Task):
        options = task.options
        if max_retries is not None or backoff is not None:
            changes: dict[str, Any] = {"max_retries": max_retries, "backoff": backoff}
            options = options.replace(**{k: v for k, v in changes.items() if v is not None})
        low, high = options.backoff
        return {
            "description": task.description if description is None else description,
            "condition": task.condition if condition is None else condition,
            "retention_period": (
                task.retention_period if retention_period is None else retention_period
            ),
            "on_fail": (task.on_fail_handler is not None) if on_fail is None else on_fail,
            # the retry policy lives on the definition: the engine applies it
            "max_retries": options.max_retries,
            "backoff_min": low,
            "backoff_max": high,
        }
    if max_retries is not None or backoff is not None:
        # checked as a handler's options are
        options = HandlerOptions(
            max_retries=2 if max_retries is None else max_retries,
            backoff=(0.1, 2.0) if backoff is None else backoff,
        )
        policy: dict[str, Any] = {
            "max_retries": None if max_retries is None else options.max_retries,
            "backoff_min": None if backoff is None else options.backoff[0],
            "backoff_max": None if backoff is None else options.backoff[1],
        }
    else:
        policy = {}
    return {
        "description": description,
        "condition": condition,
        "retention_period": retention_period,
        "on_fail": bool(on_fail),
        **policy,
    }
