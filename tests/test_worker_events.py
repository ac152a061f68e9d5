"""The worker wakes on engine events, not on its poll.

Each worker here polls once an hour (``poll_interval=3600``), so only the
events can make it claim new work, start on-fail handling or stop a canceled
handler within the test's timeouts: catbird.task.started (new runs),
catbird.step.queued (ready steps), catbird.task.failed (on-fail handling) and
catbird.task.canceled (a running handler stopped).
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

import catbird
from catbird import AsyncClient, Flow, RunCanceled, RunFailed, TaskFailure
from workerhelpers import eventually, running

HOUR = 3600.0


@pytest.fixture
async def client(aconn: psycopg.AsyncConnection[Any]) -> AsyncClient:
    return AsyncClient(aconn)


async def test_an_idle_worker_claims_new_runs_on_their_started_event(dsn, client):
    @catbird.task("echo")
    async def echo(x: int) -> int:
        return x

    async with running(dsn, echo, poll_interval=HOUR):
        await asyncio.sleep(0.3)  # idle: the claim loop waits for an event
        one = await client.run_task(echo, 1)
        assert await one.wait_for_output(timeout=30) == 1
        batch = await client.run_tasks(echo, [2, 3, 4])  # one event with run_ids
        assert [await h.wait_for_output(timeout=30) for h in batch] == [2, 3, 4]


async def test_an_idle_worker_runs_each_ready_step_on_its_queued_event(dsn, client):
    flow = Flow("chain")

    @flow.step()
    def first(input: int) -> int:
        return input + 1

    @flow.step(depends_on=["first"])
    def second(first: int) -> int:
        return first * 10

    async with running(dsn, flow, poll_interval=HOUR):
        await asyncio.sleep(0.3)
        handle = await client.run_flow(flow, 4)
        assert await handle.wait_for_output(timeout=30) == 50


async def test_a_final_failure_wakes_the_on_fail_handler(dsn, client):
    handled: list[int] = []

    @catbird.task("charge", max_retries=0)
    async def charge(n: int) -> None:
        raise ValueError("declined")

    @charge.on_fail()
    def refund(n: int, failure: TaskFailure) -> None:
        handled.append(n)

    async with running(dsn, charge, poll_interval=HOUR):
        await asyncio.sleep(0.3)
        handle = await client.run_task(charge, 7)
        with pytest.raises(RunFailed):
            await handle.wait_for_output(timeout=30)
        await eventually(lambda: handled, timeout=30)
    assert handled == [7]


async def test_a_canceled_event_stops_the_running_handler(dsn, client):
    started, cancelled = asyncio.Event(), asyncio.Event()

    @catbird.task("long", timeout=120)
    async def long(x: int) -> int:
        started.set()
        try:
            await asyncio.sleep(120)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return x

    async with running(dsn, long, poll_interval=HOUR, lease=120):
        handle = await client.run_task(long, 0)
        await asyncio.wait_for(started.wait(), 30)
        assert await client.cancel_task_run(long, handle.id)
        await asyncio.wait_for(cancelled.wait(), 30)
        with pytest.raises(RunCanceled):
            await handle.wait_for_output(timeout=30)
