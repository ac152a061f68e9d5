"""Flow definitions: DAGs of steps, their handlers and signature checks.

::

    order = catbird.Flow("order_processing", output_priority=["ship"])

    @order.step()
    def validate(input: Order) -> Validation: ...

    @order.step(depends_on=["validate"], condition="validate.ok eq true")
    def charge(input: Order, validate: Validation) -> Charge: ...

    @order.step(depends_on=["charge"], signal=True)
    def ship(input: Order, signal: Approval, charge: Charge | None) -> Shipment: ...

A :class:`Flow` is a named list of :class:`Step` objects; :meth:`Flow.definition`
is the ``steps`` JSON that ``cb_create_flow`` stores, and the engine decides
everything at run time (which step is ready, conditions, fan-out, retries).

**Handler parameters are matched by name**, so their order is free:

* ``input`` — the flow input (optional);
* ``signal`` — the signal input of a ``signal=True`` step (optional; a
  signal step may use its signal as a gate only);
* one parameter per dependency, named after the step, receiving its output
  (required for every dependency, except those listed in ``ignore_output``,
  whose outputs are not even fetched; a handler with ``**kwargs`` receives
  the dependencies it does not name there, as plain JSON). A dependency that has a condition is
  skipped when the condition is false, and the handler then receives
  ``None``: its parameter must be annotated ``X | None`` (``Optional[X]``),
  which is checked here, when the step is declared. In this engine only a
  step with a condition can be skipped (a step whose dependency was skipped
  still runs), so that is the whole rule;
* ``item`` — for mapper items and generator items, the item.

Annotations choose the JSON codecs exactly as for tasks (dataclasses,
``TypedDict``, pydantic models, ...). Dependencies must be declared before the
steps that use them (decorators run top to bottom), which also rules out
cycles.

**Step kinds**

* ``@flow.step()`` — a normal step; its return value is its output.
* ``@flow.step(map="input")`` / ``map="other_step"`` — a *mapper*: the
  decorated function handles one ``item`` of the flow input (or of the named
  dependency's output, which must be an array); the step's output is the list
  of item outputs in item order. Each item retries on its own.
* ``@flow.step(generator=True)`` — a *generator*: the decorated function is
  a (sync or async) generator that yields items while it runs; the worker
  adds them to the step in chunks as they come. Each item is then handled by
  the function given with ``@that_step.item`` (by default the item itself is
  its output), and the step's output is the list of item outputs. A retried
  generator skips the items its earlier attempts already added, so a
  generator must yield the same sequence each time it runs (deterministic).
* ``@flow.step(reduce="mapper_or_generator", initial=0)`` — a *reducer*: the
  decorated function folds the source's item outputs one by one,
  ``(acc, item) -> acc`` (its first two parameters, any names, passed
  positionally), starting from a copy of ``initial``; the final accumulator is
  its output. Items are read page by page, never as one array.

The handler options of tasks apply to each step (``concurrency``,
``batch_size``, ``timeout``, ``max_retries``, ``backoff``,
``circuit_breaker``; see :class:`catbird.HandlerOptions`); for a mapper they
apply to its items, for a generator to the generator function (the items get
their own with ``@step.item(...)``; by default the step's).

:meth:`Flow.on_fail` attaches a handler called with ``(input, FlowFailure)``
once a run has failed for good.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, overload

from ..codec import Codec, codec_for, is_passthrough
from ..context import FlowFailure
from ..errors import InvalidArgument
from .handlers import (
    DefinitionError,
    Handler,
    HandlerOptions,
    _admits_none,
    _callable_name,
    _hints,
    _is_async,
    _options,
    _retention,
    _signature,
    check_name,
    make_on_fail_handler,
)
from .schedules import Schedule, make_schedule

__all__ = [
    "Flow",
    "Step",
    "StepHandler",
    "flow_name",
]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

RESERVED_STEP_NAMES = frozenset({"input", "signal"})

_PASSTHROUGH = codec_for(Any)


# ---------------------------------------------------------------- handlers


@dataclass(frozen=True, slots=True)
class Arg:
    """One parameter of a step handler: where its value comes from.

    ``role`` is ``input``, ``signal``, ``item`` or ``dep`` (then ``source``
    names the dependency).
    """

    name: str
    role: str
    source: str
    codec: Codec


@dataclass(frozen=True, slots=True)
class StepHandler:
    """A checked step handler.

    ``positional`` are the leading parameters passed positionally (a
    reducer's ``acc`` and ``item``); ``args`` are passed by keyword.
    """

    fn: Callable[..., Any]
    options: HandlerOptions
    positional: tuple[Arg, ...]
    args: tuple[Arg, ...]
    output: Codec
    is_async: bool
    is_generator: bool

    @property
    def name(self) -> str:
        return _callable_name(self.fn)

    @property
    def wants_input(self) -> bool:
        """The handler takes the flow input (a claim can leave it out otherwise)."""
        return any(arg.role == "input" for arg in self.args)

    @property
    def wants_outputs(self) -> bool:
        """The handler takes dependency outputs."""
        return any(arg.role == "dep" for arg in self.args)

    def kwargs(
        self, input: Any, step_outputs: dict[str, Any], signal_input: Any, item: Any = None
    ) -> dict[str, Any]:
        """The keyword arguments of one call, decoded from the claim's JSON."""
        values: dict[str, Any] = {}
        for arg in self.args:
            if arg.role == "input":
                raw = input
            elif arg.role == "signal":
                raw = signal_input
            elif arg.role == "item":
                raw = item
            else:
                raw = step_outputs.get(arg.source)
            values[arg.name] = arg.codec.decode(raw)
        return values


def _bind(
    fn: Callable[..., Any],
    options: HandlerOptions,
    *,
    what: str,
    accepted: dict[str, tuple[str, str]],
    required: Sequence[str],
    nullable: Iterable[str],
    positional: Sequence[str] = (),
    generator: bool = False,
) -> StepHandler:
    """Check ``fn`` against the values a step handler can receive.

    ``accepted`` maps parameter names to ``(role, source)``; ``required``
    names parameters that must be present; ``nullable`` those whose
    annotation must admit ``None``; ``positional`` names the roles of the
    leading positional parameters (a reducer's ``("acc", "item")``).
    """
    if not callable(fn):
        raise DefinitionError(f"{what}: the handler must be callable, got {fn!r}")
    is_gen = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
    if generator and not is_gen:
        raise DefinitionError(
            f"{what}: handler {_callable_name(fn)} must be a generator function (sync or"
            " async) that yields the step's items"
        )
    if not generator and is_gen:
        raise DefinitionError(
            f"{what}: handler {_callable_name(fn)} is a generator; only a step declared with"
            " generator=True yields items (other handlers return their output)"
        )
    sig = _signature(fn, what)
    hints = _hints(fn, what)
    shown = f"{_callable_name(fn)}{sig}"
    names = ", ".join(accepted) or "none"
    params = list(sig.parameters.values())

    def codec(name: str) -> Codec:
        annotation = hints.get(name, inspect.Parameter.empty)
        try:
            return codec_for(annotation)
        except TypeError as exc:
            raise DefinitionError(f"{what}: parameter {name!r} of {shown}: {exc}") from exc

    lead: list[Arg] = []
    for role in positional:
        if not params or params[0].kind not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            raise DefinitionError(
                f"{what}: handler {shown} must take ({', '.join(positional)}) as its first"
                f" {len(positional)} positional parameters"
            )
        p = params.pop(0)
        lead.append(Arg(p.name, role, "", codec(p.name)))

    bound: list[Arg] = []
    for p in params:
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        has_default = p.default is not inspect.Parameter.empty
        if p.kind is inspect.Parameter.POSITIONAL_ONLY:
            if has_default:
                continue
            raise DefinitionError(
                f"{what}: parameter {p.name!r} of {shown} is positional-only; step handlers"
                " receive their values by name"
            )
        if p.name not in accepted:
            if has_default:
                continue
            raise DefinitionError(
                f"{what}: handler {shown} has a parameter {p.name!r} that receives nothing;"
                f" a step handler's parameters are named after what they receive: {names}"
            )
        role, source = accepted[p.name]
        bound.append(Arg(p.name, role, source, codec(p.name)))
    present = {a.name for a in bound}
    var_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    for name in required:
        if name in present:
            continue
        role, source = accepted[name]
        if role == "dep" and var_keyword:  # **kwargs receives the dependencies not named
            bound.append(Arg(name, role, source, _PASSTHROUGH))
            continue
        if role == "dep":
            raise DefinitionError(
                f"{what}: handler {shown} takes no parameter {name!r} for the output of"
                f" dependency {source!r}; add one, or list {source!r} in ignore_output"
            )
        raise DefinitionError(f"{what}: handler {shown} must take a parameter named {name!r}")
    for name in nullable:
        if name not in present:
            continue
        annotation = hints.get(name, inspect.Parameter.empty)
        if annotation in (inspect.Parameter.empty, Any, object) or _admits_none(annotation):
            continue
        _, source = accepted[name]
        raise DefinitionError(
            f"{what}: parameter {name!r} of {shown} must be annotated Optional"
            f" (e.g. `{name}: {_annotation_name(annotation)} | None`): step {source!r} has a"
            " condition, and when it is skipped the handler receives None"
        )
    ret = hints.get("return", inspect.Parameter.empty)
    if generator:
        ret = inspect.Parameter.empty  # a generator's return annotation is its iterator type
    try:
        output = codec_for(ret)
    except TypeError as exc:
        raise DefinitionError(f"{what}: return annotation of {shown}: {exc}") from exc
    return StepHandler(
        fn,
        options,
        tuple(lead),
        tuple(bound),
        output,
        _is_async(fn) or inspect.isasyncgenfunction(fn),
        is_gen,
    )


def _annotation_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return repr(annotation).replace("typing.", "")


def _list_codec(item: Codec) -> Codec:
    if is_passthrough(item):
        return _PASSTHROUGH
    try:
        return codec_for(list[item.annotation])  # type: ignore[name-defined]
    except TypeError:
        return _PASSTHROUGH


# ---------------------------------------------------------------- steps


class Step:
    """One step of a :class:`Flow` (made by :meth:`Flow.step`).

    Calling the step calls its handler directly (handy in unit tests).
    """

    def __init__(
        self,
        flow: Flow,
        name: str,
        fn: Callable[..., Any],
        *,
        step_type: str,
        depends_on: Sequence[str],
        condition: str | None,
        signal: bool,
        map_source: str | None,
        reduce_source: str | None,
        initial: Any,
        ignore_output: Sequence[str],
        description: str | None,
        options: HandlerOptions,
    ) -> None:
        self.flow = flow
        self.name = name
        self.fn = fn
        self.step_type = step_type
        self.depends_on = tuple(depends_on)
        self.condition = condition
        self.signal = signal
        self.map_source = map_source
        """The dependency a mapper maps over; ``None``: the flow input."""
        self.reduce_source = reduce_source
        self.initial = initial
        self.ignore_output = tuple(ignore_output)
        self.description = description
        self.options = options
        self.item_handler: StepHandler | None = None
        """A generator's item handler (``None``: each item is its own output)."""
        self.handler = self._bind(fn, options, items=False)
        functools.update_wrapper(self, fn, assigned=("__module__", "__doc__"), updated=())

    def __repr__(self) -> str:
        return f"Step({self.flow.name!r}/{self.name!r}, {self.step_type})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the handler directly (no worker, no database)."""
        return self.fn(*args, **kwargs)

    @property
    def what(self) -> str:
        return f"step {self.name!r} of flow {self.flow.name!r}"

    def _bind(self, fn: Callable[..., Any], options: HandlerOptions, *, items: bool) -> StepHandler:
        """Check a handler of this step (``items``: a generator's item handler)."""
        flow = self.flow
        accepted: dict[str, tuple[str, str]] = {"input": ("input", "")}
        if self.signal:
            accepted["signal"] = ("signal", "")
        deps = [
            d
            for d in self.depends_on
            if d not in self.ignore_output and d != self.map_source and d != self.reduce_source
        ]
        for d in deps:
            accepted[d] = ("dep", d)
        per_item = self.step_type == "mapper" or items
        if per_item:
            accepted["item"] = ("item", "")
        required = [*deps, *(["item"] if per_item else [])]
        nullable = [d for d in deps if flow.steps[d].condition is not None]
        what = f"{self.what}{' item' if items else ''}"
        return _bind(
            fn,
            options,
            what=what,
            accepted=accepted,
            required=required,
            nullable=nullable,
            positional=("acc", "item") if self.step_type == "reducer" else (),
            generator=self.step_type == "generator" and not items,
        )

    @overload
    def item(self, fn: F, /, **options: Any) -> F: ...
    @overload
    def item(self, fn: None = None, /, **options: Any) -> Callable[[F], F]: ...
    def item(self, fn: F | None = None, /, **options: Any) -> F | Callable[[F], F]:
        """Attach a generator step's item handler (``@step.item`` or ``@step.item(...)``).

        It receives ``item`` (plus ``input``, ``signal`` and dependency
        outputs, by name, like any step handler) and returns the item's
        output. Options default to the generator step's own.
        """
        if self.step_type != "generator":
            raise DefinitionError(f"{self.what}: only a generator step has an item handler")

        def attach(f: F) -> F:
            self.item_handler = self._bind(f, _options(self.options, options), items=True)
            return f

        return attach if fn is None else attach(fn)

    @property
    def item_options(self) -> HandlerOptions:
        """Options of a generator's items (the item handler's, else the step's)."""
        return self.item_handler.options if self.item_handler is not None else self.options

    @property
    def output_codec(self) -> Codec:
        """How the step's stored output decodes (a list for mappers and generators)."""
        if self.step_type == "mapper":
            return _list_codec(self.handler.output)
        if self.step_type == "generator":
            item = self.item_handler.output if self.item_handler is not None else _PASSTHROUGH
            return _list_codec(item)
        return self.handler.output

    def definition(self) -> dict[str, Any]:
        """This step as an element of ``cb_create_flow``'s ``steps``."""
        return {
            "name": self.name,
            "description": self.description,
            "step_type": self.step_type,
            "signal": self.signal,
            "condition": self.condition,
            "depends_on": [{"name": d} for d in self.depends_on],
            "map_source_step_name": self.map_source,
            "reduce_source_step_name": self.reduce_source,
            "ignore_output": list(self.ignore_output),
            # the retry policy lives on the definition: the engine applies it
            # to the step run and its items (milliseconds)
            "max_retries": self.options.max_retries,
            "backoff_min": self.options.backoff_ms[0],
            "backoff_max": self.options.backoff_ms[1],
        }


# ---------------------------------------------------------------- flows


class Flow:
    """A flow: a named DAG of steps, plus an optional on-fail handler.

    ``output_priority`` lists the steps whose output becomes the flow's (the
    first that completed wins; default: the steps nothing depends on, in
    definition order). ``retention_period`` (seconds or a timedelta) is how
    long finished runs are kept before ``cb_gc`` deletes them. ``schedule``
    (a cron spec, UTC), ``schedule_input`` and ``catch_up`` declare the
    flow's schedule, which a :class:`catbird.Worker` serving the flow creates
    when it starts (as for :class:`catbird.Task`).
    """

    def __init__(
        self,
        name: str,
        *,
        description: str | None = None,
        output_priority: Sequence[str] | None = None,
        retention_period: float | timedelta | None = None,
        schedule: str | None = None,
        schedule_input: Any = None,
        catch_up: str = "one",
    ) -> None:
        self.name = check_name("flow", name)
        #: The cron schedule a worker serving this flow creates at start-up.
        self.schedule: Schedule | None = make_schedule(
            f"flow {self.name!r}", schedule, schedule_input, catch_up
        )
        self.description = description
        if isinstance(output_priority, str):
            raise InvalidArgument("output_priority must be a list of step names, not a string")
        self._output_priority = None if output_priority is None else tuple(output_priority)
        self.retention_period = _retention(retention_period)
        self.steps: dict[str, Step] = {}
        self.on_fail_handler: Handler | None = None

    def __repr__(self) -> str:
        return f"Flow({self.name!r}, steps={list(self.steps)})"

    # -- declaring steps ---------------------------------------------------------

    def step(
        self,
        name: str | None = None,
        *,
        depends_on: Sequence[str] = (),
        condition: str | None = None,
        signal: bool = False,
        map: str | None = None,
        generator: bool = False,
        reduce: str | None = None,
        initial: Any = None,
        ignore_output: Sequence[str] = (),
        description: str | None = None,
        **options: Any,
    ) -> Callable[[Callable[..., Any]], Step]:
        """Decorator: declare a step whose handler is the decorated function.

        ``name`` defaults to the function's name. See the module documentation
        for ``map``, ``generator``, ``reduce``/``initial`` and the handler's
        parameters; other keyword arguments are handler options.
        """
        if isinstance(depends_on, str) or isinstance(ignore_output, str):
            raise InvalidArgument("depends_on and ignore_output take lists of step names")
        opts = _options(HandlerOptions(), options)
        flags = (("map", map is not None), ("generator", generator), ("reduce", reduce is not None))
        kinds = [k for k, on in flags if on]
        if len(kinds) > 1:
            raise DefinitionError(
                f"flow {self.name!r}: a step is at most one of map, generator and reduce"
                f" (got {' and '.join(kinds)})"
            )
        if initial is not None and reduce is None:
            raise DefinitionError(f"flow {self.name!r}: initial= is only for reducer steps")

        def decorator(fn: Callable[..., Any]) -> Step:
            step_name = name if name is not None else getattr(fn, "__name__", None)
            if not isinstance(step_name, str):
                raise DefinitionError(f"flow {self.name!r}: cannot name a step after {fn!r}")
            step = self._make_step(
                step_name,
                fn,
                depends_on=depends_on,
                condition=condition,
                signal=signal,
                map=map,
                generator=generator,
                reduce=reduce,
                initial=initial,
                ignore_output=ignore_output,
                description=description,
                options=opts,
            )
            self.steps[step.name] = step
            return step

        return decorator

    def _make_step(
        self,
        name: str,
        fn: Callable[..., Any],
        *,
        depends_on: Sequence[str],
        condition: str | None,
        signal: bool,
        map: str | None,
        generator: bool,
        reduce: str | None,
        initial: Any,
        ignore_output: Sequence[str],
        description: str | None,
        options: HandlerOptions,
    ) -> Step:
        check_name("step", name)
        what = f"step {name!r} of flow {self.name!r}"
        if name in RESERVED_STEP_NAMES:
            raise DefinitionError(f"{what}: 'input' and 'signal' are reserved names")
        if name in self.steps:
            raise DefinitionError(f"{what}: the flow already has a step {name!r}")
        deps = list(depends_on)
        for extra in (map if map not in (None, "input") else None, reduce):
            if extra is not None and extra not in deps:
                deps.append(extra)  # a map/reduce source is a dependency
        seen: set[str] = set()
        for d in deps:
            if d in seen:
                raise DefinitionError(f"{what}: dependency {d!r} is listed twice")
            seen.add(d)
            if d not in self.steps:
                known = ", ".join(self.steps) or "none yet"
                raise DefinitionError(
                    f"{what}: unknown dependency {d!r} (steps declared so far: {known});"
                    " declare a step before the steps that depend on it"
                )
        for i in ignore_output:
            if i not in seen:
                raise DefinitionError(
                    f"{what}: ignore_output names {i!r}, which is not a dependency"
                )
        step_type = "normal"
        map_source: str | None = None
        if map is not None:
            step_type = "mapper"
            map_source = None if map == "input" else map
        elif generator:
            step_type = "generator"
        elif reduce is not None:
            step_type = "reducer"
            if self.steps[reduce].step_type not in ("mapper", "generator"):
                raise DefinitionError(
                    f"{what}: reduce={reduce!r} must name a mapper or generator step,"
                    f" and {reduce!r} is a {self.steps[reduce].step_type} step"
                )
        if condition is not None and (not isinstance(condition, str) or not condition.strip()):
            raise DefinitionError(f"{what}: condition must be a non-empty string")
        return Step(
            self,
            name,
            fn,
            step_type=step_type,
            depends_on=deps,
            condition=condition,
            signal=bool(signal),
            map_source=map_source,
            reduce_source=reduce,
            initial=initial,
            ignore_output=ignore_output,
            description=description,
            options=options,
        )

    # -- on-fail -----------------------------------------------------------------

    @overload
    def on_fail(self, fn: F, /, **options: Any) -> F: ...
    @overload
    def on_fail(self, fn: None = None, /, **options: Any) -> Callable[[F], F]: ...
    def on_fail(self, fn: F | None = None, /, **options: Any) -> F | Callable[[F], F]:
        """Attach the on-fail handler, called with ``(input, FlowFailure)`` once a run
        failed for good. ``flow.on_fail(fn, max_retries=5)`` or ``@flow.on_fail``/
        ``@flow.on_fail(timeout=10)``; returns the function."""

        def attach(f: F) -> F:
            self.on_fail_handler = make_on_fail_handler(
                f,
                options,
                what=f"flow {self.name!r} on-fail",
                input_role="the flow input",
                failure_type=FlowFailure,
            )
            return f

        return attach if fn is None else attach(fn)

    # -- what the engine stores ----------------------------------------------------

    @property
    def output_priority(self) -> tuple[str, ...]:
        """The output candidates: as given, else the steps nothing depends on."""
        if self._output_priority is not None:
            return self._output_priority
        used = {d for s in self.steps.values() for d in s.depends_on}
        return tuple(n for n in self.steps if n not in used)

    def definition(self) -> list[dict[str, Any]]:
        """The ``steps`` JSON of ``cb_create_flow`` (raises when the flow has no step)."""
        if not self.steps:
            raise DefinitionError(f"flow {self.name!r} has no steps; declare at least one")
        if self._output_priority is not None:
            unknown = [n for n in self._output_priority if n not in self.steps]
            if unknown or not self._output_priority:
                raise DefinitionError(
                    f"flow {self.name!r}: output_priority must name steps of the flow"
                    f" (unknown: {', '.join(unknown) or 'it is empty'})"
                )
        return [s.definition() for s in self.steps.values()]

    def create_args(self) -> dict[str, Any]:
        """Keyword arguments of :func:`catbird._sql.create_flow` for this flow."""
        return {
            "steps": self.definition(),
            "description": self.description,
            "output_priority": None
            if self._output_priority is None
            else list(self._output_priority),
            "retention_period": self.retention_period,
            "on_fail": self.on_fail_handler is not None,
        }

    @property
    def input_codec(self) -> Codec:
        """The codec of the first ``input`` annotation found among the steps."""
        for s in self.steps.values():
            for arg in s.handler.args:
                if arg.role == "input" and not is_passthrough(arg.codec):
                    return arg.codec
        return _PASSTHROUGH

    @property
    def output_codec(self) -> Codec:
        """How the flow's output decodes: the output step's codec when every
        candidate decodes the same way, else plain JSON."""
        codecs = [self.steps[n].output_codec for n in self.output_priority if n in self.steps]
        if codecs and all(c.annotation == codecs[0].annotation for c in codecs):
            return codecs[0]
        return _PASSTHROUGH

    def decode_output(self, value: Any) -> Any:
        return self.output_codec.decode(value)


def flow_name(flow: Flow | str) -> str:
    """The name of a flow given as a :class:`Flow` or a name."""
    return flow.name if isinstance(flow, Flow) else flow


def output_decoder(flow: Flow | str) -> Callable[[Any], Any] | None:
    """How a handle decodes a flow's output (``None``: plain JSON)."""
    if isinstance(flow, Flow):
        codec = flow.output_codec
        if not is_passthrough(codec):
            return codec.decode
    return None


def copy_initial(value: Any) -> Any:
    """A reducer's starting accumulator: a deep copy of ``initial`` per run."""
    return copy.deepcopy(value)
