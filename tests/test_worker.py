"""catbird.Worker in this process, end to end against a real PostgreSQL.

Each test starts a worker on the test's own database with short intervals
(poll 50 ms, heartbeat 0.2 s), enqueues runs with the async client and waits
for their outcomes through handles, with bounded waits only. Engine-time
semantics (backoff delays, expiry) are covered at the SQL level; here retry
backoffs are a few milliseconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from typing import Any

import psycopg
import pytest

import catbird
from catbird import (
    AsyncClient,
    InvalidArgument,
    NoRunContext,
    RunCanceled,
    RunFailed,
    RunSkipped,
    Task,
    TaskFailure,
    Worker,
    _sql,
)
from workerhelpers import eventually, running


@dataclasses.dataclass
class Job:
    n: int


@dataclasses.dataclass
class Result:
    doubled: int
    run_id: int


FAST = {"max_retries": 0}


@pytest.fixture
async def client(aconn: psycopg.AsyncConnection[Any]) -> AsyncClient:
    return AsyncClient(aconn)


# ---------------------------------------------------------------- completing runs


async def test_worker_completes_runs_with_typed_input_and_output(
    dsn: str, client: AsyncClient
) -> None:
    seen_threads: set[str] = set()

    @catbird.task("double", concurrency=16, batch_size=8)
    async def double(job: Job) -> Result:
        seen_threads.add(threading.current_thread().name)
        return Result(job.n * 2, catbird.current_run_id())

    async with running(dsn, double):
        handles = await client.run_tasks(double, [Job(i) for i in range(100)])
        outputs = [await h.wait_for_output(timeout=10) for h in handles]
    assert outputs == [Result(i * 2, h.id) for i, h in enumerate(handles)]
    assert seen_threads == {threading.main_thread().name}
    runs = await client.list_task_runs("double", limit=200)
    assert {r.status for r in runs} == {"completed"}
    assert {r.attempts for r in runs} == {1}


async def test_sync_handlers_run_in_threads(dsn: str, client: AsyncClient) -> None:
    threads: set[str] = set()

    @catbird.task("sync_square", concurrency=4)
    def square(n: int) -> int:
        threads.add(threading.current_thread().name)
        time.sleep(0.01)
        return n * n

    async with running(dsn, square):
        handles = await client.run_tasks(square, list(range(12)))
        assert [await h.wait_for_output(timeout=10) for h in handles] == [i * i for i in range(12)]
    assert threads and threading.main_thread().name not in threads


async def test_worker_stores_definitions_and_registers(dsn: str, client: AsyncClient) -> None:
    @catbird.task("registered", description="d", retention_period=60)
    async def registered(x: Any) -> None:
        return None

    @registered.on_fail
    async def registered_failed(x: Any, failure: TaskFailure) -> None:
        return None

    async with running(dsn, registered) as worker:
        info = await client.get_task("registered")
        assert (info.description, info.on_fail) == ("d", True)
        [w] = await client.list_workers()
        assert w.id == worker.id and w.task_handlers == [{"task_name": "registered"}]
        first_beat = w.last_heartbeat_at
        await eventually(
            lambda: _heartbeat_after(client, first_beat),
        )
        # removed from the registry (as gc does with stale workers): it registers again
        await client.execute(_sql.worker_stopped(worker.id))
        await eventually(lambda: _registered(client, worker.id))
    assert await client.list_workers() == []


async def _heartbeat_after(client: AsyncClient, ts: Any) -> bool:
    workers = await client.list_workers()
    return bool(workers) and workers[0].last_heartbeat_at > ts


async def _registered(client: AsyncClient, worker_id: Any) -> bool:
    return any(w.id == worker_id for w in await client.list_workers())


async def test_notifications_wake_an_idle_worker(dsn: str, client: AsyncClient) -> None:
    @catbird.task("wake")
    async def wake(x: int) -> int:
        return x

    async with running(dsn, wake, poll_interval=30.0):
        await asyncio.sleep(0.3)  # idle: the claim loop waits for an event
        t0 = time.monotonic()
        handle = await client.run_task(wake, 5)
        assert await handle.wait_for_output(timeout=5, poll_interval=0.01) == 5
        assert time.monotonic() - t0 < 2.0  # not the 30 s poll


# ---------------------------------------------------------------- failures


async def test_retries_then_fails_with_the_error_message(dsn: str, client: AsyncClient) -> None:
    calls: list[int] = []

    @catbird.task("flaky", max_retries=2, backoff=(0.01, 0.02))
    async def flaky(x: Any) -> None:
        calls.append(catbird.current_run().attempt)
        raise RuntimeError("boom")

    async with running(dsn, flaky):
        handle = await client.run_task(flaky, {})
        with pytest.raises(RunFailed, match="RuntimeError: boom") as exc_info:
            await handle.wait_for_output(timeout=10)
    assert exc_info.value.error_message == "RuntimeError: boom"
    assert calls == [1, 2, 3]
    info = await handle.info()
    assert (info.status, info.attempts, info.error_message) == ("failed", 3, "RuntimeError: boom")


async def test_a_retry_can_succeed(dsn: str, client: AsyncClient) -> None:
    @catbird.task("second_time", max_retries=1, backoff=(0.01, 0.01))
    def second_time(x: Any) -> str:
        if catbird.current_run().attempt == 1:
            raise ValueError("not yet")
        return "ok"

    async with running(dsn, second_time):
        handle = await client.run_task(second_time, {})
        assert await handle.wait_for_output(timeout=10) == "ok"
    assert (await handle.info()).attempts == 2


async def test_timeouts_fail_the_call(dsn: str, client: AsyncClient) -> None:
    @catbird.task("slow_async", timeout=0.2, **FAST)
    async def slow_async(x: Any) -> None:
        await asyncio.sleep(30)

    @catbird.task("slow_sync", timeout=0.2, **FAST)
    def slow_sync(x: Any) -> None:
        time.sleep(1.0)

    async with running(dsn, slow_async, slow_sync):
        t0 = time.monotonic()
        a = await client.run_task(slow_async, {})
        s = await client.run_task(slow_sync, {})
        with pytest.raises(RunFailed, match=r"timed out after 0\.2 s"):
            await a.wait_for_output(timeout=10)
        with pytest.raises(RunFailed, match=r"timed out after 0\.2 s"):
            await s.wait_for_output(timeout=10)
        assert time.monotonic() - t0 < 5


async def test_calls_claimed_together_time_out_alone(dsn: str, client: AsyncClient) -> None:
    # The calls of one claim batch share one timeout timer: it fails only the
    # calls still running, and a handler that swallows the cancellation of its
    # timeout and returns has its output recorded.
    @catbird.task("timeout_mix", timeout=0.3, batch_size=10, **FAST)
    async def timeout_mix(x: str) -> str:
        if x == "slow":
            await asyncio.sleep(30)
        if x == "stubborn":
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                return "cancelled, but returned"
        return x

    names = ["fast", "slow", "stubborn", "fast"]
    await client.create_task(timeout_mix)
    handles = await client.run_tasks(timeout_mix, names)
    async with running(dsn, timeout_mix):
        outcomes = []
        for handle in handles:
            try:
                outcomes.append(await handle.wait_for_output(timeout=10))
            except RunFailed as exc:
                outcomes.append(str(exc))
    assert outcomes[0] == outcomes[3] == "fast"
    assert "timed out after 0.3 s" in outcomes[1]
    assert outcomes[2] == "cancelled, but returned"


async def test_timeout_is_retried_by_the_policy(dsn: str, client: AsyncClient) -> None:
    @catbird.task("slow_then_fast", timeout=0.2, max_retries=1, backoff=(0.01, 0.01))
    async def slow_then_fast(x: Any) -> str:
        if catbird.current_run().attempt == 1:
            await asyncio.sleep(30)
        return "fast"

    async with running(dsn, slow_then_fast):
        handle = await client.run_task(slow_then_fast, {})
        assert await handle.wait_for_output(timeout=10) == "fast"
    assert (await handle.info()).attempts == 2


async def test_invalid_input_fails_the_run(dsn: str, client: AsyncClient) -> None:
    @catbird.task("typed", **FAST)
    async def typed(job: Job) -> int:
        return job.n

    async with running(dsn, typed):
        bad = await client.run_task(typed, {"m": 1})
        with pytest.raises(RunFailed, match="invalid input: TypeError"):
            await bad.wait_for_output(timeout=10)
        good = await client.run_task(typed, {"n": 4})
        assert await good.wait_for_output(timeout=10) == 4


async def test_non_serialisable_output_fails_only_that_run(dsn: str, client: AsyncClient) -> None:
    @catbird.task("outputs", **FAST)
    async def outputs(kind: str) -> Any:
        return {"object": object(), "nan": float("nan"), "nul": "a\x00b", "ok": [1, "two"]}[kind]

    async with running(dsn, outputs):
        handles = await client.run_tasks(outputs, ["object", "nan", "nul", "ok"])
        for h in handles[:3]:
            with pytest.raises(RunFailed, match="the output is not JSON-serialisable"):
                await h.wait_for_output(timeout=10)
        assert await handles[3].wait_for_output(timeout=10) == [1, "two"]


@pytest.mark.parametrize("sync", [False, True])
async def test_base_exceptions_are_failures_not_crashes(
    dsn: str, client: AsyncClient, sync: bool
) -> None:
    def pick(kind: str) -> BaseException:
        return {
            "exit": SystemExit(3),
            "interrupt": KeyboardInterrupt(),
            "cancelled": asyncio.CancelledError("by handler"),
            "generator": GeneratorExit(),
        }[kind]

    if sync:

        def raiser(kind: str) -> None:
            raise pick(kind)

    else:

        async def raiser(kind: str) -> None:  # type: ignore[misc]
            raise pick(kind)

    t = Task("raiser", raiser, **FAST)
    async with running(dsn, t) as worker:
        handles = await client.run_tasks(t, ["exit", "interrupt", "cancelled", "generator"])
        messages = []
        for h in handles:
            with pytest.raises(RunFailed) as exc_info:
                await h.wait_for_output(timeout=10)
            messages.append(exc_info.value.error_message)
        assert worker.running
    assert messages == [
        "SystemExit: 3",
        "KeyboardInterrupt",
        "CancelledError: by handler",
        "GeneratorExit",
    ]


async def test_condition_false_is_skipped_without_a_handler_call(
    dsn: str, client: AsyncClient
) -> None:
    calls: list[int] = []

    @catbird.task("conditional", condition="input.n gt 5")
    async def conditional(job: Job) -> int:
        calls.append(job.n)
        return job.n

    async with running(dsn, conditional):
        skipped = await client.run_task(conditional, Job(1))
        ran = await client.run_task(conditional, Job(10))
        with pytest.raises(RunSkipped):
            await skipped.wait_for_output(timeout=10)
        assert await ran.wait_for_output(timeout=10) == 10
    assert calls == [10]
    assert (await skipped.info()).skipped_at is not None


# ---------------------------------------------------------------- on-fail


async def test_on_fail_handler_receives_the_failure(dsn: str, client: AsyncClient) -> None:
    failures: list[tuple[Job, TaskFailure]] = []
    on_fail_calls: list[int] = []

    @catbird.task("charge", max_retries=1, backoff=(0.01, 0.01))
    async def charge(job: Job) -> None:
        raise ValueError(f"card declined for {job.n}")

    @charge.on_fail(max_retries=1, backoff=(0.01, 0.01))
    def refund(job: Job, failure: TaskFailure) -> None:
        on_fail_calls.append(failure.on_fail_attempts)
        if failure.on_fail_attempts == 1:
            raise RuntimeError("refund service down")
        failures.append((job, failure))

    async with running(dsn, charge):
        handle = await client.run_task(charge, Job(7), concurrency_key="order-7")
        with pytest.raises(RunFailed, match="card declined for 7"):
            await handle.wait_for_output(timeout=10)
        info = await eventually(lambda: _on_fail_done(client, handle.id))
    assert on_fail_calls == [1, 2]
    [(job, failure)] = failures
    assert job == Job(7)
    assert failure.task_name == "charge" and failure.task_run_id == handle.id
    assert failure.error_message == "ValueError: card declined for 7"
    assert failure.attempts == 2 and failure.on_fail_attempts == 2
    assert failure.concurrency_key == "order-7"
    assert failure.failed_at is not None and failure.started_at is not None
    assert info.on_fail_status == "completed" and info.on_fail_attempts == 2


async def _on_fail_done(client: AsyncClient, run_id: int) -> Any:
    info = await client.get_task_run("charge", run_id)
    return info if info.on_fail_status == "completed" else None


async def test_on_fail_gives_up_after_its_retries(dsn: str, client: AsyncClient) -> None:
    @catbird.task("doomed", **FAST)
    async def doomed(x: Any) -> None:
        raise RuntimeError("first")

    @doomed.on_fail(max_retries=1, backoff=(0.01, 0.01))
    async def doomed_failed(x: Any, failure: TaskFailure) -> None:
        raise RuntimeError("also broken")

    async with running(dsn, doomed):
        handle = await client.run_task(doomed, {})

        async def failed_for_good() -> Any:
            info = await handle.info()
            return info if info.on_fail_status == "failed" else None

        info = await eventually(failed_for_good)
    assert info.on_fail_attempts == 2
    assert info.on_fail_error_message == "RuntimeError: also broken"


# ---------------------------------------------------------------- cancellation


async def test_cancel_stops_a_running_async_handler(dsn: str, client: AsyncClient) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    @catbird.task("long_async", timeout=60)
    async def long_async(x: int) -> int:
        if x == 0:
            started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return x

    async with running(dsn, long_async) as worker:
        handle = await client.run_task(long_async, 0)
        await asyncio.wait_for(started.wait(), 10)
        assert await client.cancel_task_run(long_async, handle.id, reason="changed my mind")
        await asyncio.wait_for(cancelled.wait(), 10)
        with pytest.raises(RunCanceled):
            await handle.wait_for_output(timeout=10)
        # the worker goes on
        other = await client.run_task(long_async, 3)
        assert await other.wait_for_output(timeout=10) == 3
        assert worker.running
    info = await handle.info()
    assert (info.status, info.cancel_reason, info.attempts) == ("canceled", "changed my mind", 1)


async def test_cancel_is_visible_to_a_sync_handler(dsn: str, client: AsyncClient) -> None:
    started = threading.Event()
    saw_cancel = threading.Event()

    @catbird.task("long_sync", timeout=60)
    def long_sync(x: Any) -> str:
        started.set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if catbird.cancel_requested():
                saw_cancel.set()
                return "stopped early"
            time.sleep(0.01)
        return "ran out"

    async with running(dsn, long_sync):
        handle = await client.run_task(long_sync, {})
        await asyncio.to_thread(started.wait, 10)
        assert await handle.cancel()
        assert await asyncio.to_thread(saw_cancel.wait, 10)
        with pytest.raises(RunCanceled):
            await handle.wait_for_output(timeout=10)


async def test_handler_cancels_its_own_run(dsn: str, client: AsyncClient) -> None:
    @catbird.task("self_cancel")
    def self_cancel(x: int) -> int:
        if x < 0:
            try:
                catbird.cancel("negative input")
            except Exception:  # catbird.cancel() is not an Exception: this does not catch it
                return -1
        return x

    async with running(dsn, self_cancel):
        handle = await client.run_task(self_cancel, -1)
        with pytest.raises(RunCanceled):
            await handle.wait_for_output(timeout=10)
        assert await (await client.run_task(self_cancel, 2)).wait_for_output(timeout=10) == 2
    info = await handle.info()
    assert (info.status, info.cancel_reason, info.attempts) == ("canceled", "negative input", 1)


# ---------------------------------------------------------------- circuit breaker


async def test_circuit_breaker_pauses_claims(dsn: str, client: AsyncClient) -> None:
    calls: list[float] = []

    @catbird.task("breaker", concurrency=1, batch_size=1, max_retries=0, circuit_breaker=(2, 0.6))
    async def breaker(x: int) -> int:
        calls.append(time.monotonic())
        if x < 100:
            raise RuntimeError("down")
        return x

    async with running(dsn, breaker):
        failing = await client.run_tasks(breaker, [1, 2, 3, 4])
        for h in failing[:2]:
            with pytest.raises(RunFailed):
                await h.wait_for_output(timeout=10)
        # open: nothing is claimed for 0.6 s
        await asyncio.sleep(0.3)
        assert len(calls) == 2
        assert (await failing[2].info()).status == "queued"
        # half-open: one probe (fails: open again), then after another pause one more
        with pytest.raises(RunFailed):
            await failing[2].wait_for_output(timeout=10)
        with pytest.raises(RunFailed):
            await failing[3].wait_for_output(timeout=10)
        # a success closes it: following runs flow without pauses
        ok = await client.run_tasks(breaker, [100, 101, 102])
        assert [await h.wait_for_output(timeout=10) for h in ok] == [100, 101, 102]
    assert calls[2] - calls[1] >= 0.55
    assert calls[3] - calls[2] >= 0.55
    assert calls[6] - calls[5] < 0.5


# ---------------------------------------------------------------- context helpers


async def test_context_helpers(
    dsn: str, client: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="catbird.task.ctx")

    @catbird.task("ctx")
    async def ctx(x: Any) -> dict[str, Any]:
        run = catbird.current_run()
        catbird.logger().info("hello %s", x)
        return {
            "id": catbird.current_run_id(),
            "attempt": run.attempt,
            "headers": run.headers,
            "key": run.concurrency_key,
            "task": run.task_name,
            "canceled": catbird.cancel_requested(),
        }

    async with running(dsn, ctx):
        handle = await client.run_task(ctx, "world", headers={"trace": "t"}, concurrency_key="k")
        out = await handle.wait_for_output(timeout=10)
    assert out == {
        "id": handle.id,
        "attempt": 1,
        "headers": {"trace": "t"},
        "key": "k",
        "task": "ctx",
        "canceled": False,
    }
    [record] = [r for r in caplog.records if r.name == "catbird.task.ctx"]
    assert record.getMessage() == f"[ctx run {handle.id}] hello world"
    assert record.catbird_run_id == handle.id  # type: ignore[attr-defined]
    for helper in (catbird.current_run_id, catbird.logger, catbird.cancel_requested):
        with pytest.raises(NoRunContext, match="only inside a handler"):
            helper()
    with pytest.raises(NoRunContext):
        catbird.cancel("x")


# ---------------------------------------------------------------- leases and shutdown


async def test_leases_are_renewed_for_long_handlers(dsn: str, client: AsyncClient) -> None:
    calls: list[int] = []

    @catbird.task("long_lease", timeout=10)
    async def long_lease(x: Any) -> str:
        calls.append(catbird.current_run_id())
        await asyncio.sleep(1.2)
        return "done"

    # Two workers with a 0.3 s lease: without renewal the second would take
    # the run over after 0.3 s.
    async with running(dsn, long_lease, lease=0.3), running(dsn, long_lease, lease=0.3):
        handle = await client.run_task(long_lease, {})
        assert await handle.wait_for_output(timeout=10) == "done"
    assert calls == [handle.id]
    assert (await handle.info()).attempts == 1


async def test_graceful_shutdown_waits_for_in_flight_handlers(
    dsn: str, client: AsyncClient
) -> None:
    started = asyncio.Event()

    @catbird.task("finishing")
    async def finishing(x: Any) -> str:
        started.set()
        await asyncio.sleep(0.3)
        return "finished"

    worker = Worker(dsn, tasks=[finishing], poll_interval=0.05, shutdown_timeout=5)
    await worker.start()
    handle = await client.run_task(finishing, {})
    await asyncio.wait_for(started.wait(), 10)
    queued = await client.run_task(finishing, {})  # claimed? maybe; done either way
    t0 = time.monotonic()
    await worker.stop()
    assert time.monotonic() - t0 < 4
    assert not worker.running
    assert await handle.wait_for_output(timeout=1) == "finished"
    assert (await queued.info()).status in ("queued", "completed")
    assert await client.list_workers() == []


async def test_shutdown_cuts_off_handlers_after_the_grace_period(
    dsn: str, client: AsyncClient
) -> None:
    started = asyncio.Event()
    sync_started = threading.Event()

    @catbird.task("stuck_async", timeout=60)
    async def stuck_async(x: Any) -> str:
        started.set()
        await asyncio.sleep(60)
        return "never"

    @catbird.task("stuck_sync", timeout=60)
    def stuck_sync(x: Any) -> str:
        sync_started.set()
        time.sleep(3)
        return "too late"

    worker = Worker(
        dsn, tasks=[stuck_async, stuck_sync], poll_interval=0.05, shutdown_timeout=0.3, lease=20
    )
    await worker.start()
    a = await client.run_task(stuck_async, {})
    s = await client.run_task(stuck_sync, {})
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.to_thread(sync_started.wait, 10)
    t0 = time.monotonic()
    await worker.stop()
    assert time.monotonic() - t0 < 3
    # Both runs were handed back at once (the thread runs on, but its run is
    # claimable by another worker now, not when its lease passes).
    a_info, s_info = await a.info(), await s.info()
    assert a_info.status == "started" and s_info.status == "started"
    row = await (
        await client.connection.execute(  # type: ignore[union-attr]
            "SELECT visible_at <= now(), visible_at > now() + interval '10 s'"
            " FROM catbird.cb_task_runs WHERE id = %s",
            [a.id],
        )
    ).fetchone()
    assert row == (True, False)
    row = await (
        await client.connection.execute(  # type: ignore[union-attr]
            "SELECT visible_at <= now() FROM catbird.cb_task_runs WHERE id = %s",
            [s.id],
        )
    ).fetchone()
    assert row == (True,)

    # Another worker picks the released run up right away.
    @catbird.task("stuck_async")
    async def unstuck(x: Any) -> str:
        return "rescued"

    async with running(dsn, unstuck):
        assert await a.wait_for_output(timeout=10) == "rescued"
    assert (await a.info()).attempts == 2


async def test_second_stop_and_serve(dsn: str, client: AsyncClient) -> None:
    @catbird.task("served")
    async def served(x: int) -> int:
        return x + 1

    await client.create_task(served)
    worker = Worker(dsn, tasks=[served], poll_interval=0.05)
    serving = asyncio.create_task(worker.serve())
    handle = await client.run_task(served, 1)
    assert await handle.wait_for_output(timeout=10) == 2
    worker.request_stop()
    await asyncio.wait_for(serving, 10)
    await worker.stop()  # idempotent
    with pytest.raises(RuntimeError, match="already started"):
        await worker.start()


async def test_worker_runs_the_garbage_collector(dsn: str, client: AsyncClient) -> None:
    @catbird.task("short_lived", retention_period=0.05)
    async def short_lived(x: int) -> int:
        return x

    async with running(dsn, short_lived, gc_interval=0.2):
        handle = await client.run_task(short_lived, 1)
        assert await handle.wait_for_output(timeout=10) == 1

        async def purged() -> bool:
            return await client.list_task_runs(short_lived) == []

        await eventually(purged)


# ---------------------------------------------------------------- validation


def test_worker_arguments_are_checked(dsn: str) -> None:
    ok = Task("ok", lambda x: x)
    with pytest.raises(InvalidArgument, match="has no handler"):
        Worker(dsn, tasks=[Task("bare")])
    with pytest.raises(InvalidArgument, match="given twice"):
        Worker(dsn, tasks=[ok, Task("ok", lambda x: x)])
    with pytest.raises(TypeError, match=r"catbird\.Task"):
        Worker(dsn, tasks=[lambda x: x])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="DSN string"):
        Worker(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="lease"):
        Worker(dsn, tasks=[ok], lease=0)
    with pytest.raises(InvalidArgument, match="concurrency"):
        Worker(dsn, tasks=[ok], concurrency=0)
    with pytest.raises(TypeError, match=r"catbird\.Flow"):
        Worker(dsn, tasks=[ok], flows=["not a flow"])  # type: ignore[list-item]
    assert not Worker(dsn, tasks=[ok]).running


async def test_worker_on_a_pool_with_concurrency_override(dsn: str, client: AsyncClient) -> None:
    from psycopg_pool import AsyncConnectionPool

    peak = 0
    current = 0

    @catbird.task("pooled", concurrency=1)
    async def pooled(x: int) -> int:
        nonlocal peak, current
        current += 1
        peak = max(peak, current)
        await asyncio.sleep(0.05)
        current -= 1
        return x

    async with AsyncConnectionPool(
        dsn, min_size=1, max_size=4, kwargs={"autocommit": True}
    ) as pool:
        async with running(pool, pooled, concurrency=5, durable_claims=True):  # type: ignore[arg-type]
            handles = await client.run_tasks(pooled, list(range(10)))
            assert [await h.wait_for_output(timeout=10) for h in handles] == list(range(10))
        assert not pool.closed  # not the worker's to close
    assert peak == 5
