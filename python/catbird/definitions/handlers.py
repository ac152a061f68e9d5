"""Handlers and their options, shared by tasks and flow steps.

:class:`HandlerOptions` (concurrency, batch size, timeout, retries, backoff,
circuit breaker), :class:`Handler` and :func:`make_handler`, which checks a
handler's signature when it is attached, so that a wrong signature fails at
import time rather than in a worker. The annotations of the handler's
parameters and return value select the JSON codecs (:mod:`catbird.codec`).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import re
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from ..codec import Codec, codec_for
from ..errors import CatbirdError, InvalidArgument

__all__ = [
    "CircuitBreaker",
    "DefinitionError",
    "Handler",
    "HandlerOptions",
    "Param",
    "check_name",
    "make_handler",
    "make_on_fail_handler",
]

I = TypeVar("I")  # noqa: E741 - the conventional name of an input type
O = TypeVar("O")  # noqa: E741
I_contra = TypeVar("I_contra", contravariant=True)

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_NAME_MAX = 58


class DefinitionError(CatbirdError, TypeError):
    """A handler or definition is unusable (wrong signature, bad option, ...)."""


def check_name(kind: str, name: str) -> str:
    """``name`` if it is a valid task/flow/step name, else :class:`InvalidArgument`.

    The engine checks the same rule; checking here reports it at definition time.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name) or len(name) > _NAME_MAX:
        raise InvalidArgument(
            f"invalid {kind} name {name!r}: expected lowercase letters, digits and underscores,"
            f" starting with a letter, at most {_NAME_MAX} characters"
        )
    return name


def _seconds(value: float | timedelta, what: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgument(f"{what} must be a finite number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise InvalidArgument(
            f"{what} must be {'>= 0' if allow_zero else '> 0'} seconds, got {value!r}"
        )
    return float(value)


def _positive_int(value: int, what: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidArgument(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


# ---------------------------------------------------------------- options


@dataclass(frozen=True, slots=True)
class CircuitBreaker:
    """Stop claiming work for ``open_timeout`` seconds after
    ``failure_threshold`` consecutive failures of a handler.

    After the pause one run is let through (half-open): its success closes
    the breaker, its failure opens it again.
    """

    failure_threshold: int
    open_timeout: float

    def __post_init__(self) -> None:
        _positive_int(self.failure_threshold, "circuit_breaker failure_threshold")
        object.__setattr__(
            self, "open_timeout", _seconds(self.open_timeout, "circuit_breaker open_timeout")
        )


CircuitBreakerSpec = CircuitBreaker | tuple[int, float | timedelta] | None
"""A :class:`CircuitBreaker`, a ``(failure_threshold, open_timeout)`` pair, or none."""


def _ms(seconds: float) -> int:
    return math.ceil(round(seconds * 1000, 6))


@dataclass(frozen=True, slots=True)
class HandlerOptions:
    """How the worker runs one handler (the Go library's ``HandlerOpt``).

    * ``concurrency``: handler calls running at once in one worker;
    * ``batch_size``: most runs claimed per claim statement;
    * ``timeout``: seconds per call (``None``: no limit); a call that takes
      longer is failed with "timed out after X s" and retried by the policy;
    * ``max_retries``: retries after the first attempt;
    * ``backoff``: ``(min, max)`` seconds of full-jitter retry delay: retry
      *n* waits uniformly in ``[min, min(max, min * 2**(n-1))]``;

    ``max_retries`` and ``backoff`` of a task or step are its retry policy:
    they are stored with the definition (``cb_create_task``, the step
    objects of ``cb_create_flow``) and the engine applies them to every
    failure and lapsed lease, whatever worker (or language) ran the handler.
    * ``circuit_breaker``: see :class:`CircuitBreaker`.
    """

    concurrency: int = 4
    batch_size: int = 64
    timeout: float | None = 30.0
    max_retries: int = 2
    backoff: tuple[float, float] = (0.1, 2.0)
    circuit_breaker: CircuitBreaker | None = None

    def __post_init__(self) -> None:
        _positive_int(self.concurrency, "concurrency")
        _positive_int(self.batch_size, "batch_size")
        _positive_int(self.max_retries, "max_retries", minimum=0)
        if self.timeout is not None:
            object.__setattr__(self, "timeout", _seconds(self.timeout, "timeout"))
        try:
            low, high = self.backoff
        except (TypeError, ValueError):
            raise InvalidArgument(
                f"backoff must be a (min, max) pair of seconds, got {self.backoff!r}"
            ) from None
        low = _seconds(low, "backoff min", allow_zero=True)
        high = _seconds(high, "backoff max", allow_zero=True)
        if high < low:
            raise InvalidArgument(f"backoff max ({high!r} s) must not be less than min ({low!r} s)")
        object.__setattr__(self, "backoff", (low, high))
        cb: Any = self.circuit_breaker
        if cb is not None and not isinstance(cb, CircuitBreaker):
            try:
                threshold, open_timeout = cb
            except (TypeError, ValueError):
                raise InvalidArgument(
                    "circuit_breaker must be a CircuitBreaker or a"
                    f" (failure_threshold, open_timeout) pair, got {cb!r}"
                ) from None
            object.__setattr__(self, "circuit_breaker", CircuitBreaker(threshold, open_timeout))

    def replace(self, **changes: Any) -> HandlerOptions:
        """A copy with some options changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @property
    def backoff_ms(self) -> tuple[int, int]:
        """``backoff`` in whole milliseconds, as the engine takes it."""
        return _ms(self.backoff[0]), _ms(self.backoff[1])


_OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(HandlerOptions))


def _options(base: HandlerOptions, overrides: dict[str, Any]) -> HandlerOptions:
    unknown = sorted(set(overrides) - _OPTION_NAMES)
    if unknown:
        raise InvalidArgument(
            f"unknown handler option(s): {', '.join(unknown)}"
            f" (expected {', '.join(sorted(_OPTION_NAMES))})"
        )
    return base.replace(**overrides) if overrides else base


# ---------------------------------------------------------------- handlers


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of a handler."""

    name: str
    annotation: Any
    codec: Codec
    has_default: bool
    optional: bool
    """The annotation admits ``None`` (``X | None``)."""


@dataclass(frozen=True, slots=True)
class Handler:
    """A checked handler function with its options and codecs.

    ``params`` are the parameters the worker passes positionally, in order;
    ``output`` is the codec of the return annotation.
    """

    fn: Callable[..., Any]
    options: HandlerOptions
    params: tuple[Param, ...]
    output: Codec
    is_async: bool

    @property
    def name(self) -> str:
        return _callable_name(self.fn)


def _callable_name(fn: Any) -> str:
    target = fn
    while isinstance(target, functools.partial):
        target = target.func
    return str(getattr(target, "__qualname__", None) or type(target).__qualname__)


def _is_async(fn: Any) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - callable objects
    return (
        not inspect.isfunction(fn)
        and not inspect.ismethod(fn)
        and call is not None
        and inspect.iscoroutinefunction(call)
    )


def _hints(fn: Any, what: str) -> dict[str, Any]:
    target = fn
    while isinstance(target, functools.partial):
        target = target.func
    if not (inspect.isfunction(target) or inspect.ismethod(target)) and not isinstance(
        target, type
    ):
        target = getattr(type(target), "__call__", target)  # noqa: B004
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception as first:
        # Types defined next to the handler inside a function (common in
        # tests): resolve with the defining scope's locals, as pydantic does.
        try:
            return typing.get_type_hints(target, localns=_caller_locals(), include_extras=True)
        except Exception:
            exc = first
        raise DefinitionError(
            f"{what}: cannot resolve the annotations of {_callable_name(fn)}: {exc}"
            " (define annotated types at module level, not inside a function)"
        ) from exc


def _caller_locals() -> dict[str, Any]:
    """The local variables of the innermost frame outside this package."""
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module != "catbird" and not module.startswith("catbird."):
            return dict(frame.f_locals)
        frame = frame.f_back  # type: ignore[assignment]
    return {}


def _admits_none(annotation: Any) -> bool:
    if annotation is None or annotation is type(None):
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _admits_none(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return any(a is type(None) for a in typing.get_args(annotation))
    return False


def make_handler(
    fn: Callable[..., Any],
    options: HandlerOptions,
    *,
    what: str,
    arity: int,
    param_roles: tuple[str, ...] = (),
) -> Handler:
    """Check ``fn`` and wrap it as a :class:`Handler`.

    ``fn`` must be callable with exactly ``arity`` positional arguments (more
    parameters are allowed only with defaults); ``param_roles`` names them for
    error messages (e.g. ``("the run input",)``). ``what`` names the owner in
    error messages (``"task 'send_email'"``). Raises :class:`DefinitionError`.
    """
    if not callable(fn):
        raise DefinitionError(f"{what}: the handler must be callable, got {fn!r}")
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise DefinitionError(
            f"{what}: handler {_callable_name(fn)} is a generator; a handler must return its"
            " output, not yield it"
        )
    sig = _signature(fn, what)
    roles = ", ".join(param_roles) if param_roles else f"{arity} argument(s)"
    expected = (
        f"{what}: handler {_callable_name(fn)}{sig} must take exactly {arity}"
        f" parameter{'s' if arity != 1 else ''} ({roles})"
    )
    positional = [
        p
        for p in sig.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    var_positional = any(
        p.kind is inspect.Parameter.VAR_POSITIONAL for p in sig.parameters.values()
    )
    required = [p for p in positional if p.default is inspect.Parameter.empty]
    required_kwonly = [
        p.name
        for p in sig.parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty
    ]
    if required_kwonly:
        raise DefinitionError(
            f"{expected}; it has required keyword-only parameter(s) {', '.join(required_kwonly)}"
        )
    if len(required) > arity:
        raise DefinitionError(f"{expected}; it requires {len(required)}")
    if len(positional) < arity and not var_positional:
        raise DefinitionError(f"{expected}; it takes {len(positional)}")
    hints = _hints(fn, what)
    params: list[Param] = []
    for i in range(arity):
        if i < len(positional):
            p = positional[i]
            name, has_default = p.name, p.default is not inspect.Parameter.empty
        else:
            name, has_default = f"arg{i}", False
        annotation = hints.get(name, inspect.Parameter.empty)
        try:
            codec = codec_for(annotation)
        except TypeError as exc:
            raise DefinitionError(
                f"{what}: parameter {name!r} of {_callable_name(fn)}: {exc}"
            ) from exc
        params.append(Param(name, annotation, codec, has_default, _admits_none(annotation)))
    ret = hints.get("return", inspect.Parameter.empty)
    try:
        output = codec_for(ret)
    except TypeError as exc:
        raise DefinitionError(f"{what}: return annotation of {_callable_name(fn)}: {exc}") from exc
    return Handler(fn, options, tuple(params), output, _is_async(fn))


def _signature(fn: Callable[..., Any], what: str) -> inspect.Signature:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise DefinitionError(f"{what}: cannot inspect the handler {fn!r}: {exc}") from exc


def make_on_fail_handler(
    fn: Callable[..., Any],
    options: dict[str, Any],
    *,
    what: str,
    input_role: str,
    failure_type: type,
) -> Handler:
    """Check ``fn`` as an on-fail handler called with ``(input, failure)``: a
    :class:`Handler` with the standard options overridden by ``options``; the
    failure parameter, if annotated, must take ``failure_type``."""
    failure_name = f"catbird.{failure_type.__name__}"
    handler = make_handler(
        fn,
        _options(HandlerOptions(), options),
        what=what,
        arity=2,
        param_roles=(input_role, f"a {failure_name}"),
    )
    failure = handler.params[1]
    if failure.annotation not in (inspect.Parameter.empty, Any, object, failure_type):
        raise DefinitionError(
            f"{what}: parameter {failure.name!r} of {handler.name} receives a"
            f" {failure_name}, not {failure.annotation!r}"
        )
    return handler


# ---------------------------------------------------------------- tasks


def _retention(value: float | timedelta | None) -> timedelta | None:
    if value is None:
        return None
    return timedelta(seconds=_seconds(value, "retention_period", allow_zero=True))
