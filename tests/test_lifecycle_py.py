"""The run lifecycle from Python (issue 8, SPEC 7.1): policy stored at
definition time, non-retryable errors and tracebacks, manual retry, dead
letters and redrive, queue receipts, shutdown releasing every run, retries
sooner than the poll interval, and fencing with two real worker processes.

The engine's half is tested in SQL by tests/test_lifecycle_sql.py; these
tests drive it through the client, the worker, the Reader and the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

import catbird
from catbird import AsyncClient, Client, PermanentError, RunFailed, Worker
from catbird.cli import app
from sqlhelpers import Clock
from workerhelpers import EFFECTS, WorkerProcess, eventually, running, scalar, wait_for
from workers import lifecycle

runner = CliRunner()


def cli(dsn: str, *args: str, columns: int = 100) -> str:
    result = runner.invoke(
        app, [*args, "--dsn", dsn], env={"COLUMNS": str(columns)}, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result.output


def cli_json(dsn: str, *args: str) -> Any:
    return json.loads(cli(dsn, *args, "--json"))


@pytest.fixture
async def client(aconn: psycopg.AsyncConnection[Any]) -> AsyncClient:
    return AsyncClient(aconn)


# ------------------------------------------------------------ stored policy


def test_the_retry_policy_is_stored_with_the_definition(conn: psycopg.Connection[Any]) -> None:
    client = Client(conn)

    @catbird.task("policy", max_retries=4, backoff=(0.25, 3.0))
    def policy(x: int) -> int:
        return x

    client.create_task(policy)
    info = client.get_task("policy")
    assert (info.max_retries, info.backoff_min, info.backoff_max) == (4, 250, 3000)
    # overridden at create time, for a task given by name too
    client.create_task("by_name", max_retries=1, backoff=(0.1, 0.1))
    info = client.get_task("by_name")
    assert (info.max_retries, info.backoff_min, info.backoff_max) == (1, 100, 100)
    client.create_task("no_policy")
    assert client.get_task("no_policy").max_retries is None

    flow = catbird.Flow("policied")

    @flow.step(max_retries=5, backoff=(0.5, 1.0))
    def first(input: int) -> int:
        return input

    client.create_flow(flow)
    step = client.get_flow("policied").step("first")
    assert (step.max_retries, step.backoff_min, step.backoff_max) == (5, 500, 1000)


async def test_the_engine_applies_the_stored_policy(dsn: str, client: AsyncClient) -> None:
    calls: list[int] = []

    @catbird.task("flaky", max_retries=2, backoff=(0.01, 0.02))
    async def flaky(x: int) -> int:
        calls.append(catbird.current_run().attempt)
        raise RuntimeError("down")

    async with running(dsn, flaky):
        handle = await client.run_task(flaky, 1)
        with pytest.raises(RunFailed, match="RuntimeError: down"):
            await handle.wait_for_output(timeout=10)
    assert calls == [1, 2, 3]


# ------------------------------------------------- non-retryable, tracebacks


async def test_a_permanent_error_fails_at_once_with_its_traceback(
    dsn: str, client: AsyncClient
) -> None:
    calls: list[int] = []

    @catbird.task("strict", max_retries=5, backoff=(0.01, 0.01))
    def strict(x: int) -> int:
        calls.append(x)
        raise PermanentError(f"cannot use {x}")

    async with running(dsn, strict):
        handle = await client.run_task(strict, 7)
        with pytest.raises(RunFailed, match="PermanentError: cannot use 7"):
            await handle.wait_for_output(timeout=10)
    assert calls == [7]
    run = await client.get_task_run(strict, handle.id)
    assert (run.status, run.attempts) == ("failed", 1)
    assert run.error_detail is not None
    assert run.error_detail.startswith("Traceback (most recent call last):")
    assert "in strict" in run.error_detail
    assert "PermanentError: cannot use 7" in run.error_detail
    assert "catbird/worker" not in run.error_detail  # the worker's own frames left out
    assert (await client.list_task_runs(strict))[0].error_detail == run.error_detail
    # the CLI shows it with the run
    shown = cli(dsn, "task", "show", "strict", "--run", str(handle.id))
    assert "error_detail" in shown and "in strict" in shown
    doc = cli_json(dsn, "task", "show", "strict", "--run", str(handle.id))
    assert doc["error_detail"] == run.error_detail


@dataclass
class Job:
    n: int


async def test_undecodable_input_is_not_retried(dsn: str, client: AsyncClient) -> None:
    @catbird.task("typed", max_retries=5, backoff=(0.01, 0.01))
    async def typed(job: Job) -> int:
        return job.n

    async with running(dsn, typed):
        bad = await client.run_task(typed, {"m": 1})
        with pytest.raises(RunFailed, match="invalid input"):
            await bad.wait_for_output(timeout=10)
    run = await client.get_task_run(typed, bad.id)
    assert run.attempts == 1
    assert run.error_detail is not None and "Traceback" in run.error_detail


async def test_a_failed_step_keeps_its_traceback(dsn: str, client: AsyncClient) -> None:
    flow = catbird.Flow("tracing")

    @flow.step(max_retries=0)
    def explode(input: int) -> int:
        raise ValueError("no good")

    async with running(dsn, flow):
        handle = await client.run_flow(flow, 1)
        with pytest.raises(RunFailed):
            await handle.wait_for_output(timeout=10)
    (step,) = await client.get_flow_run_steps(flow, handle.id)
    assert step.status == "failed"
    assert step.error_detail is not None and "in explode" in step.error_detail
    shown = cli(dsn, "flow", "steps", "tracing", str(handle.id))
    assert "explode failed:" in shown and "ValueError: no good" in shown


# ------------------------------------------------------------- manual retry


async def test_retry_of_a_failed_task_run_from_the_client_and_the_cli(
    dsn: str, client: AsyncClient
) -> None:
    healthy = threading.Event()

    @catbird.task("fragile", max_retries=0)
    def fragile(x: int) -> int:
        if not healthy.is_set():
            raise RuntimeError("not yet")
        return x * 2

    async with running(dsn, fragile):
        first = await client.run_task(fragile, 1)
        second = await client.run_task(fragile, 2)
        for handle in (first, second):
            with pytest.raises(RunFailed):
                await handle.wait_for_output(timeout=10)
        healthy.set()
        assert await client.retry_task_run(fragile, first.id)
        assert await first.wait_for_output(timeout=10) == 2
        doc = await asyncio.to_thread(cli_json, dsn, "task", "retry", "fragile", str(second.id))
        assert doc["retried"] is True
        assert await second.wait_for_output(timeout=10) == 4
    # a completed run cannot be retried
    assert not await client.retry_task_run(fragile, first.id)
    result = runner.invoke(app, ["task", "retry", "fragile", str(first.id), "--dsn", dsn])
    assert result.exit_code != 0


async def test_retry_of_a_failed_flow_keeps_completed_steps(dsn: str, client: AsyncClient) -> None:
    healthy = threading.Event()
    calls: list[str] = []
    flow = catbird.Flow("resumable")

    @flow.step()
    def fetch(input: int) -> int:
        calls.append("fetch")
        return input + 1

    @flow.step(depends_on=["fetch"], max_retries=0)
    def store(input: int, fetch: int) -> int:
        calls.append("store")
        if not healthy.is_set():
            raise RuntimeError("disk full")
        return fetch * 10

    async with running(dsn, flow):
        first = await client.run_flow(flow, 1)
        second = await client.run_flow(flow, 2)
        for handle in (first, second):
            with pytest.raises(RunFailed, match="disk full"):
                await handle.wait_for_output(timeout=10)
        assert calls.count("fetch") == 2
        healthy.set()
        assert await client.retry_flow_run(flow, first.id)
        assert await first.wait_for_output(timeout=10) == 20
        doc = await asyncio.to_thread(cli_json, dsn, "flow", "retry", "resumable", str(second.id))
        assert doc["retried"] is True
        assert await second.wait_for_output(timeout=10) == 30
    assert calls.count("fetch") == 2  # completed steps kept their outputs
    steps = {s.step_name: s for s in await client.get_flow_run_steps(flow, first.id)}
    assert steps["fetch"].attempts == 1 and steps["store"].status == "completed"


# --------------------------------------------------- dead letters, receipts


def test_dead_letters_and_redrive_with_the_client(conn: psycopg.Connection[Any]) -> None:
    client = Client(conn)
    clock = Clock(conn)
    client.create_queue("dead")
    client.create_queue("jobs", max_deliveries=2, dead_letter_queue="dead")
    info = client.get_queue("jobs")
    assert (info.max_deliveries, info.dead_letter_queue) == (2, "dead")
    sent = client.send("jobs", {"poison": True}, headers={"h": 1})
    for delivery in (1, 2):
        (msg,) = client.read("jobs", hide_for=10)
        assert (msg.id, msg.deliveries) == (sent, delivery)
        clock.advance(seconds=11)
    assert client.read("jobs", hide_for=10) == []  # the third delivery dead-letters it
    (dead,) = client.read("dead", hide_for=10)
    assert dead.body == {"poison": True} and dead.headers == {"h": 1}
    assert (dead.source_queue, dead.source_deliveries) == ("jobs", 2)
    clock.advance(seconds=11)
    assert client.redrive("dead") == 1
    (back,) = client.read("jobs", hide_for=10)
    assert back.body == {"poison": True} and back.deliveries == 1
    assert client.get_queue("dead").depth == 0


def test_dead_letters_and_redrive_with_the_cli(dsn: str, conn: psycopg.Connection[Any]) -> None:
    client = Client(conn)
    cli(dsn, "queue", "create", "dlq")
    doc = cli_json(
        dsn, "queue", "create", "work", "--max-deliveries", "1", "--dead-letter-queue", "dlq"
    )
    assert doc["queue"]["max_deliveries"] == 1 and doc["queue"]["dead_letter_queue"] == "dlq"
    assert "after 1 to dlq" in cli(dsn, "queue", "ls", columns=200)
    client.send("work", 1)
    client.send("work", 2)
    assert len(client.read("work", quantity=2, hide_for=0.001)) == 2
    time.sleep(0.01)  # the real clock: the CLI opens its own connections
    assert client.read("work", quantity=2, hide_for=10) == []
    assert client.get_queue("dlq").depth == 2
    assert cli_json(dsn, "queue", "redrive", "dlq", "--limit", "1")["redriven"] == 1
    assert cli_json(dsn, "queue", "redrive", "dlq")["redriven"] == 1
    assert client.get_queue("work").visible == 2


def test_acks_and_nacks_carry_receipts(conn: psycopg.Connection[Any]) -> None:
    client = Client(conn)
    clock = Clock(conn)
    client.create_queue("receipts")
    sent = client.send("receipts", "x")
    (first,) = client.read("receipts", hide_for=1)
    clock.advance(seconds=2)  # the first consumer's window lapsed
    (second,) = client.read("receipts", hide_for=30)
    assert second.deliveries == first.deliveries + 1
    # the first consumer's late ack and nack leave the message alone
    assert not client.delete("receipts", sent, deliveries=first.deliveries)
    assert client.delete("receipts", [sent], deliveries=[first.deliveries]) == []
    assert not client.hide("receipts", sent, hide_for=0.001, deliveries=first.deliveries)
    assert client.hide("receipts", [sent], hide_for=60, deliveries=[second.deliveries]) == [sent]
    assert client.delete("receipts", sent, deliveries=second.deliveries)


def test_two_readers_never_ack_each_others_deliveries(dsn: str) -> None:
    with Client.connect(dsn) as setup:
        setup.create_queue("shared")
        sent = setup.send("shared", "job")
    second_has_it = threading.Event()
    first_done = threading.Event()
    handled: list[tuple[str, int]] = []

    def slow_first(msg: catbird.Message) -> None:
        handled.append(("first", msg.deliveries))
        assert second_has_it.wait(10)  # its window lapsed: the second reader got it
        first_done.set()

    def second(msg: catbird.Message) -> None:
        handled.append(("second", msg.deliveries))
        second_has_it.set()
        assert first_done.wait(10)
        time.sleep(0.2)  # the first reader's stale ack is sent meanwhile
        with Client.connect(dsn) as probe:
            assert probe.get_queue("shared").depth == 1  # not deleted by the stale ack

    with Client.connect(dsn) as c1, Client.connect(dsn) as c2:
        r1 = c1.reader("shared", slow_first, hide_for=0.2, poll_for=0.1)
        r2 = c2.reader("shared", second, hide_for=30, poll_for=0.1)
        threads = [threading.Thread(target=r.run) for r in (r1, r2)]
        threads[0].start()
        wait_for(lambda: handled, 10, "the first reader to take the message")
        threads[1].start()
        wait_for(lambda: r2.acked == 1, 10, "the second reader's ack")
        r1.stop()
        r2.stop()
        for t in threads:
            t.join(10)
        assert handled == [("first", 1), ("second", 2)]
        assert (r1.acked, r2.acked) == (1, 1)  # both handlers returned...
        assert c1.get_queue("shared").depth == 0  # ...and the message is gone once
        assert sent


def test_a_reader_dead_letters_a_poison_message_at_once(dsn: str) -> None:
    with Client.connect(dsn) as client:
        client.create_queue("poison_dlq")
        client.create_queue("poisoned", max_deliveries=1, dead_letter_queue="poison_dlq")
        client.send("poisoned", "bad")

        def handler(msg: catbird.Message) -> None:
            raise ValueError("cannot handle")

        reader = client.reader("poisoned", handler, hide_for=30, poll_for=0.05)
        thread = threading.Thread(target=reader.run)
        thread.start()
        try:
            # released after its last delivery, not hidden for 30 s
            wait_for(lambda: client.get_queue("poison_dlq").depth == 1, 5, "the dead letter")
        finally:
            reader.stop()
            thread.join(10)
        assert reader.max_deliveries == 1 and reader.nacked == 1
        assert client.get_queue("poisoned").depth == 0


# ------------------------------------------------------------- the worker


async def test_a_retry_sooner_than_the_poll_interval_is_on_time(
    dsn: str, client: AsyncClient
) -> None:
    started: list[float] = []

    @catbird.task("quick_retry", max_retries=3, backoff=(0.1, 0.1))
    async def quick_retry(x: int) -> int:
        started.append(time.monotonic())
        if len(started) < 4:
            raise RuntimeError("again")
        return x

    # a poll interval of 5 s: only the scheduled wake-ups can make it on time
    async with running(dsn, quick_retry, poll_interval=5.0):
        handle = await client.run_task(quick_retry, 3)
        assert await handle.wait_for_output(timeout=10) == 3
    gaps = [b - a for a, b in itertools.pairwise(started)]
    assert len(gaps) == 3
    assert all(0.09 <= gap < 0.5 for gap in gaps), gaps


@pytest.mark.parametrize("kind", ["task", "flow"])
async def test_shutdown_releases_plain_handlers_runs_at_once(
    dsn: str, client: AsyncClient, kind: str
) -> None:
    starts: list[tuple[int, float]] = []
    release = threading.Event()

    def body() -> str:
        starts.append((catbird.current_run().attempt, time.monotonic()))
        if len(starts) == 1:
            release.wait(30)  # the first attempt runs past the grace period
        return "done"

    if kind == "task":
        definition: Any = catbird.Task("slow_sync", lambda x: body(), max_retries=2)
    else:
        definition = catbird.Flow("slow_flow")
        definition.step(max_retries=2)(_named("slow_step", lambda input: body()))

    first = Worker(
        dsn,
        tasks=[definition] if kind == "task" else [],
        flows=[definition] if kind == "flow" else [],
        lease=30.0,
        poll_interval=0.05,
        shutdown_timeout=0.1,
    )
    await first.start()
    try:
        if kind == "task":
            handle: Any = await client.run_task(definition, 1)
        else:
            handle = await client.run_flow(definition, 1)
        await eventually(lambda: starts)
        async with running(dsn, definition, lease=30.0):
            # the first worker stops; its plain handler runs on (it ignores
            # cancel_requested()), but its run is handed back at once
            stop_at = time.monotonic()
            stopping = asyncio.create_task(first.stop())
            assert await handle.wait_for_output(timeout=10) == "done"
            release.set()
            await stopping
    finally:
        release.set()
        await first.stop()
    assert [a for a, _ in starts] == [1, 2]
    # claimed by the other worker at once, not after the 30 s lease
    assert starts[1][1] - stop_at < 1.0


def _named(name: str, fn: Any) -> Any:
    def step(input: int) -> str:
        return fn(input)

    step.__name__ = step.__qualname__ = name
    return step


async def test_shutdown_says_what_it_released(
    dsn: str, client: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    @catbird.task("sleeper", max_retries=1)
    async def sleeper(x: int) -> int:
        await asyncio.sleep(60)
        return x

    worker = Worker(dsn, tasks=[sleeper], poll_interval=0.05, shutdown_timeout=0.05)
    await worker.start()
    handle = await client.run_task(sleeper, 1)
    await eventually(lambda: _started(client, handle.id))
    with caplog.at_level("INFO", logger="catbird.worker"):
        await worker.stop()
    assert any(
        "released 1 run(s) this worker will not finish" in r.getMessage() for r in caplog.records
    )
    run = await client.get_task_run(sleeper, handle.id)
    assert run.status == "started" and run.started_at is not None
    # visible again at once (the lease was cut), not 30 s after the claim
    assert (run.visible_at - run.started_at).total_seconds() < 5


async def _started(client: AsyncClient, run_id: int) -> bool:
    return (await client.get_task_run("sleeper", run_id)).status == "started"


def test_task_and_flow_bind_and_unbind_from_the_cli(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    client = Client(conn)
    client.create_task("on_order")
    flow = catbird.Flow("order_flow")

    @flow.step()
    def handle(input: Any) -> Any:
        return input

    client.create_flow(flow)
    for noun, name in (("task", "on_order"), ("flow", "order_flow")):
        assert cli_json(dsn, noun, "bind", name, "shop.order.*")["bound"] is True
    assert client.publish("shop.order.created", {"id": 1}) == 2
    for noun, name in (("task", "on_order"), ("flow", "order_flow")):
        assert cli_json(dsn, noun, "unbind", name, "shop.order.*")["unbound"] is True
        assert cli_json(dsn, noun, "unbind", name, "shop.order.*")["unbound"] is False
    assert client.publish("shop.order.created", {"id": 2}) == 0
    assert len(client.list_task_runs("on_order")) == 1


# ------------------------------------------- two real processes, one paused


@contextlib.contextmanager
def paused(proc: WorkerProcess) -> Iterator[None]:
    proc.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        proc.proc.send_signal(signal.SIGCONT)


def test_a_paused_generator_never_adds_an_item_twice(
    dsn: str, conn: psycopg.Connection[Any], workers: list[WorkerProcess]
) -> None:
    conn.execute(EFFECTS)
    client = Client(conn)
    client.create_flow(lifecycle.generated)
    first = WorkerProcess(dsn, "tests.workers.lifecycle:definitions", "--lease", "1")
    workers.append(first)
    handle = client.run_flow("generated", {"n": 20, "pause": 0.1})
    wait_for(
        lambda: scalar(conn, "SELECT count(*) FROM effects WHERE kind = 'item'") >= 3,
        30,
        "the first items",
    )
    with paused(first):
        second = WorkerProcess(dsn, "tests.workers.lifecycle:definitions", "--lease", "1")
        workers.append(second)
        # the second worker takes the generator over once the lease lapsed
        wait_for(
            lambda: scalar(
                conn, "SELECT count(*) FROM effects WHERE kind = 'generator' AND attempt = 2"
            ),
            30,
            "the second attempt of the generator",
        )
        time.sleep(0.5)  # the second attempt yields some items while the first is paused
    output = handle.wait_for_output(timeout=60)
    assert output == [i * 10 for i in range(20)]
    (step,) = client.get_flow_run_steps("generated", handle.id)
    assert (step.map_total, step.map_done) == (20, 20)
    items = scalar(
        conn,
        "SELECT count(*) FROM catbird.cb_map_tasks m JOIN catbird.cb_step_runs s"
        " ON s.id = m.step_run_id WHERE s.flow_run_id = %s",
        handle.id,
    )
    assert items == 20


def test_a_paused_worker_cannot_overwrite_the_newer_attempt(
    dsn: str, conn: psycopg.Connection[Any], workers: list[WorkerProcess]
) -> None:
    conn.execute(EFFECTS)
    client = Client(conn)
    client.create_task(lifecycle.stall)
    first = WorkerProcess(dsn, "tests.workers.lifecycle:definitions", "--lease", "1")
    workers.append(first)
    handle = client.run_task("stall", 1.0)
    wait_for(
        lambda: scalar(conn, "SELECT count(*) FROM effects WHERE kind = 'stall'"),
        30,
        "the first attempt",
    )
    with paused(first):  # past its lease: its run is claimed again
        second = WorkerProcess(dsn, "tests.workers.lifecycle:definitions", "--lease", "1")
        workers.append(second)
        wait_for(
            lambda: scalar(conn, "SELECT count(*) FROM effects WHERE kind = 'stall' AND n = 2"),
            30,
            "the second attempt",
        )
    # the first worker wakes up and reports attempt 1: refused
    assert handle.wait_for_output(timeout=30) == 2
    time.sleep(1.5)
    run = client.get_task_run("stall", handle.id)
    assert (run.status, run.output, run.attempts) == ("completed", 2, 2)


async def test_an_item_can_complete_its_flow_early(dsn: str, client: AsyncClient) -> None:
    flow = catbird.Flow("search")

    @flow.step(map="input")
    def look(item: int) -> int:
        if item == 3:
            catbird.complete_early({"found": item})
        return item

    async with running(dsn, flow):
        handle = await client.run_flow(flow, [1, 2, 3, 4])
        assert await handle.wait_for_output(timeout=10) == {"found": 3}


async def test_a_stale_early_completion_changes_nothing(client: AsyncClient) -> None:
    flow = catbird.Flow("early")

    @flow.step()
    def only(input: int) -> int:
        return input

    await client.create_flow(flow)
    handle = await client.run_flow(flow, 1)
    (claim,) = await client.execute(
        catbird._sql.claim_steps("early", "only", quantity=1, hide_for=30)
    )
    stale = catbird._sql.complete_flow_early_json(
        "early", handle.id, "only", "1", attempt=claim.attempts + 1
    )
    assert not await client.execute(stale)
    fresh = catbird._sql.complete_flow_early_json(
        "early", handle.id, "only", "2", attempt=claim.attempts
    )
    assert await client.execute(fresh)
    assert await handle.wait_for_output(timeout=5) == 2


async def test_shutdown_hands_an_on_fail_call_back(dsn: str, client: AsyncClient) -> None:
    entered = threading.Event()
    release = threading.Event()
    calls: list[int] = []

    @catbird.task("doomed", max_retries=0)
    async def doomed(x: int) -> int:
        raise PermanentError("no")

    @doomed.on_fail(max_retries=0)
    def cleanup(x: int, failure: catbird.TaskFailure) -> None:
        calls.append(failure.on_fail_attempts)
        if len(calls) == 1:
            entered.set()
            release.wait(30)

    worker = Worker(dsn, tasks=[doomed], poll_interval=0.05, shutdown_timeout=0.05)
    await worker.start()
    try:
        handle = await client.run_task(doomed, 1)
        await asyncio.to_thread(entered.wait, 10)
        await worker.stop()
    finally:
        release.set()
    run = await client.get_task_run(doomed, handle.id)
    assert run.on_fail_status == "queued"  # handed back, not failed for good
    async with running(dsn, doomed):
        await eventually(lambda: _on_fail_status(client, handle.id, "completed"), timeout=10)
    assert calls == [1, 2]


async def _on_fail_status(client: AsyncClient, run_id: int, status: str) -> bool:
    return (await client.get_task_run("doomed", run_id)).on_fail_status == status
