"""OpenTelemetry spans around handler calls, when ``opentelemetry`` is installed.

Each handler call runs inside a span named ``catbird.task <task>``,
``catbird.step <flow>/<step>``, ``catbird.item <flow>/<step>`` or
``catbird.on_fail <task or flow>``, with the attributes ``catbird.kind``,
``catbird.run_id``, ``catbird.attempt``, ``catbird.task`` or ``catbird.flow``
and ``catbird.step``, and, once the call is over, ``catbird.outcome`` (``ok``,
``error``, ``cancel``, ``stopped``). A failure records the exception and sets
the span's status to ERROR. The span is current while the handler runs (plain
handlers' threads get a copy of the context), so the handler's own spans nest
under it.

Without the ``opentelemetry`` package (``pip install 'catbird[otel]'``) the
import fails once, here, and :func:`handler_span` does nothing. With the
package but no tracer provider set, the tracer is the API's proxy whose
delegate is its no-op tracer (or a no-op provider is set): a span would
record nothing, so none is made: entering one through the API cost about a
fifth of the worker's CPU per no-op job (py-spy). The delegate is looked up
per call (``ProxyTracer._tracer``; ``get_tracer_provider()`` reads
``os.environ`` each time, 4% of the worker), so a provider set later is used
from then on; a tracer without that attribute always gets spans.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

try:
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - exercised where the package is missing
    _trace = None  # type: ignore[assignment]

__all__ = ["ENABLED", "HandlerSpan", "handler_span"]

#: Whether spans are made (the ``opentelemetry`` API is importable).
ENABLED = _trace is not None

_tracer: Any = _trace.get_tracer("catbird") if _trace is not None else None

#: Span name prefixes by lane kind (generator and reducer steps are steps).
_SPAN_KIND = {"generator": "step", "reducer": "step", "on-fail": "on_fail"}


class HandlerSpan:
    """The span of one handler call (or nothing, without OpenTelemetry)."""

    __slots__ = ("span",)

    def __init__(self, span: Any) -> None:
        self.span = span

    def outcome(self, status: str, message: str | None, exc: BaseException | None) -> None:
        """Record how the call ended (see :data:`catbird.worker.lanes.Outcome`)."""
        span = self.span
        if span is None:
            return
        span.set_attribute("catbird.outcome", status)
        if status == "error":
            if exc is not None:
                span.record_exception(exc)
            span.set_status(_trace.Status(_trace.StatusCode.ERROR, message))


#: The context of a call without a span (reusable: it holds no state).
_NO_SPAN = contextlib.nullcontext(HandlerSpan(None))


def handler_span(
    kind: str, name: str, run_id: int, attempt: int, flow: str | None, step: str | None
) -> AbstractContextManager[HandlerSpan]:
    """A span around one handler call of a lane of ``kind`` (see the module doc)."""
    if _tracer is None or isinstance(getattr(_tracer, "_tracer", _tracer), _trace.NoOpTracer):
        return _NO_SPAN
    return _recording_span(kind, name, run_id, attempt, flow, step)


@contextlib.contextmanager
def _recording_span(
    kind: str, name: str, run_id: int, attempt: int, flow: str | None, step: str | None
) -> Iterator[HandlerSpan]:
    attributes: dict[str, Any] = {
        "catbird.kind": kind,
        "catbird.run_id": run_id,
        "catbird.attempt": attempt,
    }
    if flow is None:
        attributes["catbird.task"] = name
    else:
        attributes["catbird.flow"] = flow
        if step is not None:
            attributes["catbird.step"] = step
    with _tracer.start_as_current_span(
        f"catbird.{_SPAN_KIND.get(kind, kind)} {name}",
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield HandlerSpan(span)
