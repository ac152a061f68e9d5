"""Flows run end to end by catbird.Worker in this process, against a real PostgreSQL.

Each test declares a flow, starts a worker on the test's own database with
short intervals and waits for outcomes through handles, with bounded waits
only. The engine's dispatch rules themselves are covered at the SQL level
(tests/test_flows_sql.py); here the point is that the Python runtime drives
them: handler parameters, map/generator/reduce lanes, signals, early
completion, cooperative cancellation, on-fail handlers and two workers
sharing a map step.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import catbird
from catbird import (
    AsyncClient,
    Flow,
    FlowFailure,
    RunCanceled,
    RunFailed,
    StepRunInfo,
    Worker,
)
from workerhelpers import eventually, running


@dataclasses.dataclass
class Order:
    id: int
    amount: int = 0


@dataclasses.dataclass
class Priced:
    total: int


FAST = {"max_retries": 0}


@pytest.fixture
async def client(aconn: psycopg.AsyncConnection[Any]) -> AsyncClient:
    return AsyncClient(aconn)


async def statuses(client: AsyncClient, flow: Flow, run_id: int) -> dict[str, str]:
    return {s.step_name: s.status for s in await client.get_flow_run_steps(flow, run_id)}


# ------------------------------------------------------------------ DAGs and outputs


async def test_a_diamond_runs_every_step_once_with_its_dependencies_outputs(dsn, client):
    flow = Flow("diamond")
    calls: Counter[str] = Counter()

    @flow.step()
    def a(input: Order) -> int:
        calls["a"] += 1
        return input.amount + 1

    @flow.step(depends_on=["a"])
    async def b(a: int) -> int:
        calls["b"] += 1
        return a * 2

    @flow.step(depends_on=["a"])
    def c(input: Order, a: int) -> int:
        calls["c"] += 1
        return a * 3 + input.id

    @flow.step(depends_on=["b", "c"])
    def d(c: int, b: int) -> Priced:  # parameters are matched by name, not position
        calls["d"] += 1
        return Priced(total=b + c)

    async with running(dsn, flow):  # the worker creates the definition
        handle = await client.run_flow(flow, Order(id=10, amount=1))
        assert await handle.wait_for_output(timeout=10) == Priced(total=4 + 16)
    assert calls == {"a": 1, "b": 1, "c": 1, "d": 1}
    info = await handle.info()
    assert (info.status, info.output, info.flow_name) == ("completed", {"total": 20}, "diamond")
    assert [(s.step_name, s.status, s.output) for s in await handle.steps()] == [
        ("a", "completed", 2),
        ("b", "completed", 4),
        ("c", "completed", 16),
        ("d", "completed", {"total": 20}),
    ]
    workers = await client.list_workers()
    assert workers == []  # unregistered on stop


async def test_the_output_belongs_to_the_first_completed_candidate(dsn, client):
    flow = Flow("route", output_priority=["express", "standard"])

    @flow.step()
    def quote(input: Order) -> dict[str, Any]:
        return {"fast": input.amount > 100}

    @flow.step(depends_on=["quote"], condition="quote.fast eq true")
    def express(quote: dict[str, Any]) -> str:
        return "express"

    @flow.step(depends_on=["quote"], condition="not quote.fast eq true")
    def standard(quote: dict[str, Any]) -> str:
        return "standard"

    @flow.step(depends_on=["express", "standard"])
    def audit(express: str | None, standard: str | None) -> list[str | None]:
        return [express, standard]

    async with running(dsn, flow):
        big = await client.run_flow(flow, Order(id=1, amount=500))
        small = await client.run_flow(flow, Order(id=2, amount=5))
        assert await big.wait_for_output(timeout=10) == "express"
        assert await small.wait_for_output(timeout=10) == "standard"
    assert await statuses(client, flow, small.id) == {
        "quote": "completed",
        "express": "skipped",
        "standard": "completed",
        "audit": "completed",
    }
    steps = {s.step_name: s for s in await small.steps()}
    assert steps["audit"].output == [None, "standard"]  # the skipped branch arrives as None


async def test_ignore_output_keeps_a_dependency_out_of_the_handler(dsn, client):
    flow = Flow("ignored")

    @flow.step()
    def big(input: Any) -> str:
        return "x" * 1000

    @flow.step(depends_on=["big"], ignore_output=["big"])
    def after(input: Any, **rest: Any) -> dict[str, Any]:
        return {"got": sorted(rest)}

    async with running(dsn, flow):
        handle = await client.run_flow(flow, {})
        assert await handle.wait_for_output(timeout=10) == {"got": []}


async def test_a_failing_step_retries_then_fails_the_flow(dsn, client):
    flow = Flow("flaky")
    attempts: list[int] = []

    @flow.step(max_retries=2, backoff=(0.001, 0.002))
    def shaky(input: Any) -> str:
        attempts.append(catbird.current_run().attempt)
        if len(attempts) < 3:
            raise RuntimeError(f"boom {len(attempts)}")
        return "ok"

    @flow.step(**FAST)
    def broken(input: Any) -> str:
        raise ValueError("no way")

    async with running(dsn, flow):
        handle = await client.run_flow(flow, {})
        with pytest.raises(RunFailed) as failed:
            await handle.wait_for_output(timeout=10)
    assert failed.value.error_message == "ValueError: no way"
    info = await handle.info()
    assert (info.status, info.failed_step_name) == ("failed", "broken")


# ------------------------------------------------------------------ signals


async def test_signal_steps_with_and_without_dependencies(dsn, client):
    flow = Flow("approval")

    @flow.step(signal=True)
    def approve(signal: dict[str, Any]) -> bool:
        return bool(signal["ok"])

    @flow.step()
    def prepare(input: Order) -> int:
        return input.id

    @flow.step(depends_on=["prepare", "approve"], signal=True)
    async def ship(signal: str, prepare: int, approve: bool) -> str:
        return f"{prepare}:{approve}:{signal}"

    async with running(dsn, flow):
        handle = await client.run_flow(flow, Order(id=7))
        # Delivered before its dependencies completed: kept until they do.
        assert await client.signal_flow(flow, handle.id, "ship", "door") is True
        assert await client.signal_flow(flow, handle.id, "ship", "again") is False
        await eventually(
            lambda: _status_is(client, flow, handle.id, "approve", "waiting_for_signal")
        )
        assert await handle.signal("approve", {"ok": True}) is True
        assert await handle.wait_for_output(timeout=10) == "7:True:door"
        assert await client.signal_flow(flow, handle.id, "approve", {"ok": False}) is False
    steps = {s.step_name: s for s in await handle.steps()}
    assert steps["approve"].signal_input == {"ok": True}


async def _status_is(client: AsyncClient, flow: Flow, run_id: int, step: str, status: str) -> bool:
    return (await statuses(client, flow, run_id)).get(step) == status


# ------------------------------------------------------------------ map, generate, reduce


async def test_map_over_the_input_and_over_a_step_output(dsn, client):
    flow = Flow("mapped")
    seen: list[tuple[int, int]] = []
    failed_once: set[int] = set()

    @flow.step(map="input", batch_size=3, backoff=(0.001, 0.002))
    async def double(item: int) -> int:
        if item == 3 and item not in failed_once:  # each item retries on its own
            failed_once.add(item)
            raise RuntimeError("transient")
        return item * 2

    @flow.step(depends_on=["double"])
    def offsets(double: list[int]) -> list[dict[str, int]]:
        return [{"value": v, "pos": i} for i, v in enumerate(double)]

    @flow.step(map="offsets", depends_on=["double"])
    def shifted(item: dict[str, int], double: list[int], input: list[int]) -> int:
        seen.append((item["pos"], len(double)))
        return item["value"] + item["pos"] + len(input)

    async with running(dsn, flow):
        handle = await client.run_flow(flow, [1, 2, 3, 4, 5])
        assert await handle.wait_for_output(timeout=10) == [7, 10, 13, 16, 19]
        empty = await client.run_flow(flow, [])
        assert await empty.wait_for_output(timeout=10) == []
    assert sorted(seen) == [(i, 5) for i in range(5)]
    steps = {s.step_name: s for s in await handle.steps()}
    assert (steps["double"].output, steps["double"].map_total, steps["double"].map_done) == (
        [2, 4, 6, 8, 10],
        5,
        5,
    )


async def test_a_generator_with_a_reducer_and_one_without(dsn, client):
    flow = Flow("generated")

    @flow.step(generator=True, batch_size=4)
    def numbers(input: dict[str, int]) -> Iterator[int]:
        yield from range(input["n"])

    @numbers.item(concurrency=8)
    async def square(item: int, input: dict[str, int]) -> int:
        return item * item + input["offset"]

    @flow.step(reduce="numbers", initial=0)
    def total(acc: int, item: int) -> int:
        return acc + item

    @flow.step(reduce="numbers", initial=[])
    async def collect(acc: list[int], item: int, input: dict[str, int]) -> list[int]:
        acc.append(item - input["offset"])
        return acc

    other = Flow("generated_plain")

    @other.step(generator=True)
    async def words(input: str) -> Any:
        for word in input.split():
            await asyncio.sleep(0)
            yield word

    async with running(dsn, flow, other):
        handle = await client.run_flow(flow, {"n": 25, "offset": 1})
        plain = await client.run_flow(other, "a b c")
        again = await client.run_flow(flow, {"n": 3, "offset": 0})
        steps = None
        assert await plain.wait_for_output(timeout=10) == ["a", "b", "c"]  # items as outputs
        await handle.wait_for_output(timeout=10)
        await again.wait_for_output(timeout=10)
    steps = {s.step_name: s for s in await handle.steps()}
    squares = [i * i + 1 for i in range(25)]
    assert steps["numbers"].output == squares
    assert steps["numbers"].map_total == 25
    assert steps["total"].output == sum(squares)
    assert steps["collect"].output == [i * i for i in range(25)]
    # initial is copied per run: the second run's list starts empty
    again_steps = {s.step_name: s for s in await again.steps()}
    assert again_steps["collect"].output == [0, 1, 4]


# ------------------------------------------------------------------ early completion, cancel


async def test_early_completion_wins_over_a_slow_sibling(dsn, client):
    flow = Flow("race", output_priority=["slow"])
    slow_started = asyncio.Event()
    slow_stopped: list[str] = []

    @flow.step()
    async def slow(input: Any) -> str:
        slow_started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            slow_stopped.append("cancelled")
            raise
        return "slow"

    @flow.step()
    async def fast(input: Any) -> str:
        await slow_started.wait()
        catbird.complete_early({"winner": "fast"}, reason="found it")
        return "unreachable"

    async with running(dsn, flow):
        handle = await client.run_flow(flow, {})
        t0 = time.monotonic()
        assert await handle.wait_for_output(timeout=10) == {"winner": "fast"}
        await eventually(lambda: slow_stopped)
        assert time.monotonic() - t0 < 5
    info = await handle.info()
    assert (info.status, info.cancel_reason) == ("completed", "found it")
    assert await statuses(client, flow, handle.id) == {"slow": "canceled", "fast": "completed"}


async def test_cancel_stops_running_steps_and_finishes_the_cancel(dsn, client):
    flow = Flow("cancelable")
    started = threading.Event()
    stopped: list[str] = []

    @flow.step()
    async def waits(input: Any) -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            stopped.append("async")
            raise
        return "done"

    @flow.step()
    def polls(input: Any) -> str:
        started.set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if catbird.cancel_requested():
                stopped.append("sync")
                return "stopped"
            time.sleep(0.01)
        return "done"

    @flow.step(depends_on=["waits", "polls"])
    def never(waits: str, polls: str) -> str:
        return "never"

    async with running(dsn, flow, lease=30.0):
        handle = await client.run_flow(flow, {})
        await eventually(lambda: _status_is(client, flow, handle.id, "waits", "started"))
        await eventually(started.is_set)
        assert await handle.cancel(reason="user asked") is True
        with pytest.raises(RunCanceled):
            await handle.wait_for_output(timeout=5)  # not after the 30 s lease
        await eventually(lambda: len(stopped) == 2)
    info = await handle.info()
    assert (info.status, info.cancel_reason) == ("canceled", "user asked")
    assert await statuses(client, flow, handle.id) == {
        "waits": "canceled",
        "polls": "canceled",
        "never": "canceled",
    }


# ------------------------------------------------------------------ context helpers, on-fail


async def test_steps_can_look_at_and_wait_for_their_siblings(dsn, client):
    flow = Flow("siblings", output_priority=["watcher"])

    @flow.step()
    async def producer(input: Any) -> int:
        await asyncio.sleep(0.2)
        return 42

    @flow.step()
    def watcher(input: Any) -> dict[str, Any]:
        early = catbird.get_step("producer")
        final = catbird.wait_for_step("producer", timeout=5)
        assert isinstance(final, StepRunInfo)
        return {"early": early.status, "final": final.status, "output": final.output}

    @flow.step()
    async def async_watcher(input: Any) -> Any:
        with pytest.raises(RuntimeError, match="async def"):
            catbird.get_step("producer")  # would block the loop
        info = await catbird.wait_for_step_async("producer", timeout=5)
        return (await catbird.get_step_async("producer")).output == info.output

    async with running(dsn, flow):
        handle = await client.run_flow(flow, {})
        out = await handle.wait_for_output(timeout=10)
    assert out["early"] in ("queued", "started")
    assert (out["final"], out["output"]) == ("completed", 42)
    steps = {s.step_name: s.output for s in await handle.steps()}
    assert steps["async_watcher"] is True
    with pytest.raises(catbird.NoRunContext):
        catbird.current_flow_run_id()


async def test_the_on_fail_handler_gets_the_failure_context(dsn, client):
    flow = Flow("fragile")
    failures: list[tuple[Order, FlowFailure, Any, Any]] = []

    @flow.step()
    def load(input: Order) -> dict[str, int]:
        return {"loaded": input.id}

    @flow.step(signal=True)
    def gate(signal: str) -> str:
        return signal

    @flow.step(depends_on=["load", "gate"], max_retries=1, backoff=(0.001, 0.002))
    def charge(load: dict[str, int], gate: str) -> None:
        raise RuntimeError("card declined")

    @flow.on_fail(max_retries=0)
    def report(input: Order, failure: FlowFailure) -> None:
        failures.append((input, failure, failure.output("load"), _missing(failure)))

    async with running(dsn, flow):
        handle = await client.run_flow(flow, Order(id=5, amount=9))
        await handle.signal("gate", "open")
        with pytest.raises(RunFailed, match="card declined"):
            await handle.wait_for_output(timeout=10)
        await eventually(lambda: failures)
        await eventually(lambda: _on_fail_done(client, flow, handle.id))
    [(inp, failure, loaded, missing)] = failures
    assert inp == Order(id=5, amount=9)
    assert (failure.flow_name, failure.flow_run_id, failure.failed_step_name) == (
        "fragile",
        handle.id,
        "charge",
    )
    assert (failure.error_message, failure.attempts, failure.on_fail_attempts) == (
        "RuntimeError: card declined",
        2,
        1,
    )
    assert failure.failed_step_input == {"id": 5, "amount": 9}
    assert failure.failed_step_signal_input is None  # charge has no signal of its own
    assert loaded == {"loaded": 5}
    assert missing == "NotFound"


def _missing(failure: FlowFailure) -> str:
    try:
        failure.output("charge")
    except catbird.NotFound:
        return "NotFound"
    return "found"


async def _on_fail_done(client: AsyncClient, flow: Flow, run_id: int) -> bool:
    return (await client.get_flow_run(flow, run_id)).on_fail_status == "completed"


# ------------------------------------------------------------------ two workers, one map step


async def test_two_workers_complete_each_of_1000_items_exactly_once(dsn, client):
    calls: Counter[int] = Counter()
    by_worker: Counter[str] = Counter()

    def declare(tag: str) -> Flow:
        # The same definition twice, with handlers that tell the workers apart.
        flow = Flow("shared_map")

        @flow.step(map="input", concurrency=16, batch_size=32)
        async def work(item: int) -> int:
            calls[item] += 1
            by_worker[tag] += 1
            await asyncio.sleep(0.005)
            return item + 1

        return flow

    first, second = declare("first"), declare("second")
    await client.create_flow(first)
    # Both workers are up before the items exist, so both compete for them.
    async with running(dsn, first, poll_interval=0.02), running(dsn, second, poll_interval=0.02):
        handle = await client.run_flow(first, list(range(1000)))
        output = await handle.wait_for_output(timeout=60)
    assert output == [i + 1 for i in range(1000)]
    assert len(calls) == 1000
    assert set(calls.values()) == {1}
    assert by_worker["first"] > 0 and by_worker["second"] > 0


async def test_a_retried_generator_adds_each_item_once(dsn, client):
    flow = Flow("regenerated")
    attempts: list[int] = []

    @flow.step(generator=True, batch_size=2, max_retries=1, backoff=(0.001, 0.002))
    def numbers(input: int) -> Iterator[int]:
        attempts.append(catbird.current_run().attempt)
        for i in range(input):
            if i == 6 and len(attempts) == 1:
                raise RuntimeError("source hiccup")
            yield i

    @numbers.item()
    def tenfold(item: int) -> int:
        return item * 10

    async with running(dsn, flow):
        handle = await client.run_flow(flow, 10)
        assert await handle.wait_for_output(timeout=10) == [i * 10 for i in range(10)]
    assert attempts == [1, 2]
    [step] = await handle.steps()
    assert (step.map_total, step.map_done, step.attempts) == (10, 10, 2)


async def test_a_worker_takes_only_flows_with_steps(dsn):
    with pytest.raises(TypeError, match=r"catbird\.Flow"):
        Worker(dsn, flows=["not a flow"])  # type: ignore[list-item]
    with pytest.raises(catbird.DefinitionError, match="no steps"):
        Worker(dsn, flows=[Flow("empty")])
    flow = Flow("twice")
    flow.step("only")(lambda input: input)
    with pytest.raises(catbird.InvalidArgument, match="twice"):
        Worker(dsn, flows=[flow, flow])


async def test_the_worker_registers_its_step_handlers(dsn, client):
    flow = Flow("registered")

    @flow.step()
    def only(input: Any) -> Any:
        return input

    async with running(dsn, flow):
        [info] = await client.list_workers()
        assert info.step_handlers == [{"flow_name": "registered", "step_name": "only"}]
        stored = await client.get_flow(flow)
        assert [s.name for s in stored.steps] == ["only"]


async def test_a_step_interrupted_by_shutdown_is_handed_back_at_once(dsn, client):
    flow = Flow("handover")
    started = asyncio.Event()

    @flow.step()
    async def slow(input: Any) -> str:
        started.set()
        await asyncio.sleep(30)
        return "first worker"

    other = Flow("handover")

    @other.step(name="slow")
    async def quick(input: Any) -> str:
        return "second worker"

    first = Worker(dsn, flows=[flow], poll_interval=0.05, shutdown_timeout=0.1, lease=30.0)
    await first.start()
    try:
        handle = await client.run_flow(flow, {})
        await asyncio.wait_for(started.wait(), 10)
    finally:
        await first.stop()
    async with running(dsn, other):
        # Claimable again right away, not after the 30 s lease.
        assert await handle.wait_for_output(timeout=5) == "second worker"
    [step] = await handle.steps()
    assert step.attempts == 2
