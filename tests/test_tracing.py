"""OpenTelemetry spans around handler calls, recorded by the SDK's in-memory exporter.

The tracer provider is global and can be set once per process: this module
sets it (if nothing did yet) and clears its exporter before each test.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import catbird
from catbird import RunFailed
from catbird.worker import tracing
from workerhelpers import eventually, running

_exporter = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider), "another tracer provider is set"
    if not getattr(provider, "_catbird_test_exporter", False):
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
        provider._catbird_test_exporter = True  # type: ignore[attr-defined]
    _exporter.clear()
    yield _exporter
    _exporter.clear()


@catbird.task("traced_ok")
async def traced_ok(n: int) -> int:
    with trace.get_tracer("user").start_as_current_span("inside"):
        return n + 1


@catbird.task("traced_sync")
def traced_sync(n: int) -> int:
    with trace.get_tracer("user").start_as_current_span("inside sync"):
        return n


@catbird.task("traced_fail", max_retries=0)
async def traced_fail(n: int) -> int:
    raise ValueError(f"bad {n}")


traced_flow = catbird.Flow("traced_flow")


@traced_flow.step()
async def first(input: int) -> int:
    return input * 2


def by_name(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def test_handler_calls_run_in_spans_with_run_attributes(
    dsn: str, spans: InMemorySpanExporter
) -> None:
    assert tracing.ENABLED
    async with running(dsn, traced_ok, traced_sync, traced_fail, traced_flow) as worker:
        ok = await worker.client.run_task("traced_ok", 1)
        sync = await worker.client.run_task("traced_sync", 5)
        bad = await worker.client.run_task("traced_fail", 2)
        flow = await worker.client.run_flow(traced_flow, 4)
        assert await ok.wait_for_output(timeout=10) == 2
        assert await sync.wait_for_output(timeout=10) == 5
        with pytest.raises(RunFailed):
            await bad.wait_for_output(timeout=10)
        assert await flow.wait_for_output(timeout=10) == 8
        await eventually(lambda: len(by_name(spans, "catbird.task traced_fail")) == 1)
        [step_run] = await worker.client.get_flow_run_steps(traced_flow, flow.id)

    [span] = by_name(spans, "catbird.task traced_ok")
    attributes: dict[str, Any] = dict(span.attributes or {})
    assert attributes == {
        "catbird.kind": "task",
        "catbird.run_id": ok.id,
        "catbird.attempt": 1,
        "catbird.task": "traced_ok",
        "catbird.outcome": "ok",
    }
    assert span.status.status_code == StatusCode.UNSET
    # the handler's own span nests under the worker's, on the loop and in a thread
    [inside] = by_name(spans, "inside")
    assert inside.parent is not None and inside.parent.span_id == span.context.span_id
    [sync_span] = by_name(spans, "catbird.task traced_sync")
    [inside_sync] = by_name(spans, "inside sync")
    assert inside_sync.parent is not None
    assert inside_sync.parent.span_id == sync_span.context.span_id

    [failed] = by_name(spans, "catbird.task traced_fail")
    assert failed.attributes is not None
    assert failed.attributes["catbird.outcome"] == "error"
    assert failed.attributes["catbird.run_id"] == bad.id
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.status.description == "ValueError: bad 2"
    [event] = [e for e in failed.events if e.name == "exception"]
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "ValueError"
    assert event.attributes["exception.message"] == "bad 2"

    [step] = by_name(spans, "catbird.step traced_flow/first")
    assert dict(step.attributes or {}) == {
        "catbird.kind": "step",
        "catbird.run_id": step_run.id,
        "catbird.attempt": 1,
        "catbird.flow": "traced_flow",
        "catbird.step": "first",
        "catbird.outcome": "ok",
    }


def test_without_opentelemetry_spans_are_nothing() -> None:
    # A fresh interpreter in which "import opentelemetry" fails.
    program = """
import sys
sys.modules["opentelemetry"] = None
from catbird.worker import tracing
assert not tracing.ENABLED
with tracing.handler_span("task", "t", 1, 1, None, None) as span:
    span.outcome("error", "boom", ValueError("boom"))
assert span.span is None
print("no spans")
"""
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout.strip()) == (0, "no spans"), done.stderr


def test_without_a_tracer_provider_no_span_is_made_until_one_is_set() -> None:
    # A fresh interpreter: the API's proxy provider records nothing, so no span
    # is entered; a provider set later is used from the next call on.
    program = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from catbird.worker import tracing
with tracing.handler_span("task", "t", 1, 1, None, None) as span:
    pass
assert span.span is None
trace.set_tracer_provider(TracerProvider())
with tracing.handler_span("task", "t", 1, 1, None, None) as span:
    assert span.span.is_recording()
print("spans once set")
"""
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout.strip()) == (0, "spans once set"), done.stderr
