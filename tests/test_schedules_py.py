"""Schedules in Python: declared with definitions, fired by workers, the CLI.

The engine's cron grammar, catch-up policies and exactly-once firing are
tested in test_schedules_sql.py and the client calls in test_client*.py.
Here:

* ``schedule=`` on :func:`catbird.task`, :class:`catbird.Task` and
  :class:`catbird.Flow`, checked when written;
* a :class:`catbird.Worker` in this process creating the declared schedules
  and firing due ones for the tasks and flows it serves only;
* ``catbird worker`` processes running a scheduled task end to end;
* ``catbird schedule ...`` and ``catbird worker ls``, tables at 80 columns.

Nothing waits for the wall clock to reach a tick: a schedule is made due by
moving its ``next_run_at`` into the past (an engine-clock tick the worker's
own clock has passed), and previews use fixed start times.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

import catbird
from catbird import AsyncClient, Client, DefinitionError, InvalidArgument, Worker, _sql
from catbird.cli import app
from catbird.definitions import Schedule
from clihelpers import assert_error, cb, cbj
from workerhelpers import EFFECTS, WorkerProcess, eventually, wait_for

runner = CliRunner()

#: A tick long gone: a schedule moved there is due now, whatever the time.
PAST = datetime(2000, 1, 3, 4, 5, tzinfo=UTC)
PAST_KEY = "2000-01-03T04:05:00Z"


def make_due(conn: psycopg.Connection[Any], kind: str, name: str) -> None:
    """Move the schedule of task/flow ``name`` back to the tick ``PAST``."""
    table = "cb_tasks" if kind == "task" else "cb_flows"
    updated = conn.execute(
        f"UPDATE catbird.cb_schedules s SET next_run_at = %s FROM catbird.{table} d"
        f" WHERE d.id = s.{kind}_id AND d.name = %s",
        [PAST, name],
    )
    assert updated.rowcount == 1


# ---------------------------------------------------------------- declarations


def test_a_task_declares_its_schedule() -> None:
    @catbird.task("digest", schedule="0 9 * * 1-5", schedule_input={"kind": "daily"})
    def digest(input: dict[str, Any]) -> None: ...

    assert digest.schedule == Schedule("0 9 * * 1-5", {"kind": "daily"}, "one")
    assert catbird.Task("plain").schedule is None
    skip = catbird.Task("hourly", schedule="@hourly", catch_up="skip")
    assert skip.schedule == Schedule("@hourly", None, "skip")
    flow = catbird.Flow("cleanup", schedule="*/15 * * * *", catch_up="all")
    assert flow.schedule == Schedule("*/15 * * * *", None, "all")
    assert catbird.Flow("unscheduled").schedule is None


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"schedule": 5}, DefinitionError, "cron spec string"),
        ({"schedule": ["0 9 * * *"]}, DefinitionError, "not list"),
        ({"schedule": "0 9 * *"}, InvalidArgument, "five fields"),
        ({"schedule": "0 0 9 * * *"}, InvalidArgument, "five fields"),
        ({"schedule": ""}, InvalidArgument, "five fields"),
        ({"schedule": "@daily", "catch_up": "most"}, InvalidArgument, "catch_up 'most'"),
        ({"schedule_input": {"a": 1}}, DefinitionError, "needs a schedule="),
        ({"catch_up": "all"}, DefinitionError, "needs a schedule="),
        ({"schedule": "@daily", "schedule_input": object()}, DefinitionError, "JSON"),
    ],
)
def test_bad_schedules_fail_where_they_are_written(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        catbird.task("job", **options)  # before any function is decorated
    with pytest.raises(error, match=message):
        catbird.Task("job", **options)
    with pytest.raises(error, match=message):
        catbird.Flow("job", **options)


# ---------------------------------------------------------------- worker (in process)

reports = catbird.Flow("reports", schedule="0 3 * * *", schedule_input={"scope": "all"})


@reports.step()
def build(input: dict[str, Any]) -> dict[str, Any]:
    return {"built": input["scope"]}


@catbird.task("tick", schedule="*/10 * * * *", schedule_input={"n": 1}, catch_up="skip")
async def tick(input: dict[str, Any]) -> int:
    return int(input["n"]) + 1


@catbird.task("unscheduled")
async def unscheduled(input: Any) -> Any:
    return input


@contextlib.asynccontextmanager
async def running(dsn: str, **options: Any) -> AsyncIterator[Worker]:
    options.setdefault("poll_interval", 0.05)
    options.setdefault("heartbeat_interval", 0.2)
    options.setdefault("schedule_interval", 0.05)
    worker = Worker(dsn, **options)
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


async def test_the_worker_creates_declared_schedules_and_fires_due_ones(
    dsn: str,
    conn: psycopg.Connection[Any],
    aconn: psycopg.AsyncConnection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = AsyncClient(aconn)
    caplog.set_level(logging.INFO, logger="catbird.worker")
    async with running(dsn, tasks=[tick, unscheduled], flows=[reports]):
        [task_schedule] = await eventually(client.list_task_schedules)
        assert (task_schedule.name, task_schedule.cron_spec) == ("tick", "*/10 * * * *")
        assert (task_schedule.input, task_schedule.catch_up) == ({"n": 1}, "skip")
        [flow_schedule] = await client.list_flow_schedules()
        assert (flow_schedule.name, flow_schedule.input) == ("reports", {"scope": "all"})
        assert flow_schedule.catch_up == "one"
        # due now: the worker fires both on its next tick, and their runs complete
        make_due(conn, "task", "tick")
        make_due(conn, "flow", "reports")
        [task_run] = await eventually(lambda: client.list_task_runs("tick"))
        [flow_run] = await eventually(lambda: client.list_flow_runs("reports"))
        assert await client.task_handle("tick", task_run.id).wait_for_output(timeout=10) == 2
        output = await client.flow_handle("reports", flow_run.id).wait_for_output(timeout=10)
        assert output == {"built": "all"}
    # skip: the latest due tick is the one fired; next_run_at moved past now
    [fired] = await client.list_task_schedules()
    assert fired.last_run_at is not None and fired.next_run_at > datetime.now(UTC)
    assert task_run.concurrency_key == f"sched:tick:{fired.last_run_at:%Y-%m-%dT%H:%M:%SZ}"
    assert flow_run.concurrency_key == f"sched:reports:{PAST_KEY}"  # one: the oldest due tick
    assert flow_run.input == {"scope": "all"}
    fired_lines = [r.getMessage() for r in caplog.records if "fired" in r.getMessage()]
    assert any("task schedule 'tick'" in line for line in fired_lines), fired_lines
    assert any("flow schedule 'reports'" in line for line in fired_lines), fired_lines


async def test_a_worker_fires_only_the_schedules_of_what_it_serves(
    dsn: str, conn: psycopg.Connection[Any], aconn: psycopg.AsyncConnection[Any]
) -> None:
    client = AsyncClient(aconn)
    await client.create_task("elsewhere")
    await client.create_task_schedule("elsewhere", "* * * * *")
    make_due(conn, "task", "elsewhere")
    async with running(dsn, tasks=[tick]):
        await eventually(
            lambda: len(conn.execute("SELECT 1 FROM catbird.cb_schedules").fetchall()) == 2
        )
        make_due(conn, "task", "tick")
        await eventually(lambda: client.list_task_runs("tick"))
    assert await client.list_task_runs("elsewhere") == []  # not served: left for its workers
    assert [s.next_run_at for s in await client.list_task_schedules() if s.name == "elsewhere"] == [
        PAST
    ]


async def test_without_create_definitions_or_schedule_interval_nothing_is_scheduled(
    dsn: str, conn: psycopg.Connection[Any], aconn: psycopg.AsyncConnection[Any]
) -> None:
    client = AsyncClient(aconn)
    await client.create_task(tick)
    async with running(dsn, tasks=[tick], create_definitions=False):
        await eventually(client.list_workers)
    assert await client.list_task_schedules() == []  # the declaration was not stored
    await client.create_task_schedule(tick, "* * * * *")
    make_due(conn, "task", "tick")
    async with running(dsn, tasks=[tick], schedule_interval=None):
        await eventually(client.list_workers)
        await client.run_task(tick, {"n": 5})  # the worker runs tasks as usual...
        await eventually(lambda: client.list_task_runs(tick))
    runs = await client.list_task_runs(tick)
    assert [r.concurrency_key for r in runs] == [None]  # ...but fired no schedule
    with pytest.raises(InvalidArgument, match="schedule_interval"):
        Worker(dsn, tasks=[tick], schedule_interval=0)


async def test_a_spec_the_engine_rejects_fails_the_worker_start(dsn: str) -> None:
    bad = catbird.Task("bad_spec", schedule="0 25 * * *")  # the shape is fine, the hour is not
    bad.do(lambda x: x)
    worker = Worker(dsn, tasks=[bad], schedule_interval=0.05)
    with pytest.raises(InvalidArgument, match="hour"):
        await worker.start()
    await worker.stop()


# ---------------------------------------------------------------- worker processes


def test_worker_processes_run_a_scheduled_task_once_per_tick(
    dsn: str, conn: psycopg.Connection[Any], workers: list[WorkerProcess]
) -> None:
    conn.execute(EFFECTS)
    client = Client(conn)
    args = ("--schedule-interval", "0.1", "--log-level", "DEBUG")
    for _ in range(2):
        workers.append(WorkerProcess(dsn, "tests.workers.scheduled:tasks", *args))
    wait_for(lambda: len(client.list_workers()) == 2, 30, "two registered workers")
    [schedule] = client.list_task_schedules()  # created by the workers at start-up
    assert (schedule.name, schedule.cron_spec, schedule.input) == (
        "scheduled_job",
        "* * * * *",
        {"from": "schedule"},
    )
    make_due(conn, "task", "scheduled_job")
    key = f"sched:scheduled_job:{PAST_KEY}"

    def past_tick_runs() -> list[catbird.TaskRunInfo]:
        return [r for r in client.list_task_runs("scheduled_job") if r.concurrency_key == key]

    [run] = wait_for(past_tick_runs, 30, "the due tick to be fired")
    handle = client.task_handle("scheduled_job", run.id)
    assert handle.wait_for_output(timeout=30) == {"from": "schedule"}
    time.sleep(0.5)  # both workers ticked several times since: still one run of that tick
    assert len(past_tick_runs()) == 1
    effects = conn.execute("SELECT count(*) FROM effects WHERE run_id = %s", [run.id]).fetchone()
    assert effects == (1,)
    [schedule] = client.list_task_schedules()
    assert schedule.last_run_at == PAST and schedule.next_run_at > datetime.now(UTC)
    logs = "".join(p.output() for p in workers)
    assert f"task schedule 'scheduled_job' (* * * * *) fired: tick {PAST.isoformat()}" in logs
    assert all(p.terminate() == 0 for p in workers)


# ---------------------------------------------------------------- CLI


@pytest.fixture(autouse=True)
def _no_env_dsn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CATBIRD_DSN", raising=False)


def assert_fits(text: str, width: int = 80) -> None:
    assert text.strip()
    for line in text.splitlines():
        assert len(line) <= width, f"{len(line)} > {width}: {line!r}"


@pytest.fixture
def defined(conn: psycopg.Connection[Any]) -> Client:
    client = Client(conn)
    client.create_task("nightly_report")
    client.create_flow(reports)
    return client


def test_cli_schedule_create_ls_enable_disable_delete(dsn: str, defined: Client) -> None:
    result = cb(dsn, "schedule", "create", "nightly_report", "30 2 * * *", "--input", '{"k": 1}')
    assert result.exit_code == 0, result.output
    assert "Scheduled task nightly_report at 30 2 * * * (catch-up one)" in result.stdout
    doc = cbj(dsn, "schedule", "create", "reports", "@hourly", "--flow", "--catch-up", "skip")
    assert (doc["kind"], doc["name"], doc["catch_up"], doc["input"]) == (
        "flow",
        "reports",
        "skip",
        {},
    )
    listed = cbj(dsn, "schedule", "ls")
    assert [(d["kind"], d["name"], d["cron_spec"]) for d in listed] == [
        ("flow", "reports", "@hourly"),  # the next tick first
        ("task", "nightly_report", "30 2 * * *"),
    ]
    assert listed[1]["input"] == {"k": 1} and listed[1]["enabled"] is True
    datetime.fromisoformat(listed[1]["next_run_at"])
    table = cb(dsn, "schedule", "ls").stdout
    assert "nightly_report" in table and "reports" in table and "30 2 * * *" in table
    assert_fits(table)

    disabled = cbj(dsn, "schedule", "disable", "nightly_report")
    assert disabled["enabled"] is False
    assert (
        "Disabled the schedule of flow reports"
        in cb(dsn, "schedule", "disable", "reports", "--flow").stdout
    )
    assert "no" in cb(dsn, "schedule", "ls").stdout
    assert cbj(dsn, "schedule", "enable", "nightly_report")["enabled"] is True
    assert defined.list_flow_schedules()[0].enabled is False
    assert cbj(dsn, "schedule", "delete", "reports", "--flow") == {
        "kind": "flow",
        "name": "reports",
        "deleted": True,
    }
    assert (
        "Deleted the schedule of task nightly_report"
        in cb(dsn, "schedule", "delete", "nightly_report").stdout
    )
    assert cbj(dsn, "schedule", "ls") == []
    assert "No schedules" in cb(dsn, "schedule", "ls").stdout


def test_cli_schedule_errors(dsn: str, defined: Client) -> None:
    assert_error(cb(dsn, "schedule", "create", "nightly_report", "0 24 * * *"), 1, "hour")
    assert_error(cb(dsn, "schedule", "create", "missing", "@daily"), 1, "missing")
    assert_error(
        cb(dsn, "schedule", "create", "nightly_report", "@daily", "--catch-up", "x"),
        2,
        "--catch-up",
    )
    assert_error(
        cb(dsn, "schedule", "create", "nightly_report", "@daily", "--input", "{nope"),
        2,
        "--input is not valid JSON",
    )
    for verb in ("delete", "enable", "disable"):
        assert_error(cb(dsn, "schedule", verb, "nightly_report"), 1, "has no schedule")
    assert_error(cb(dsn, "schedule", "delete", "nightly_report", "--flow"), 1, "flow")
    assert defined.list_task_schedules() == []


def test_cli_schedule_next(dsn: str) -> None:
    doc = cbj(dsn, "schedule", "next", "0 9 * * 1-5", "-n", "3", "--after", "2030-01-04T12:00Z")
    assert doc == {
        "spec": "0 9 * * 1-5",
        "ticks": [
            "2030-01-07T09:00:00+00:00",
            "2030-01-08T09:00:00+00:00",
            "2030-01-09T09:00:00+00:00",
        ],
    }
    result = cb(dsn, "schedule", "next", "@monthly", "--after", "2030-01-31T00:00Z", "-n", "2")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line[:24] for line in lines] == ["2030-02-01 00:00 Fri UTC", "2030-03-01 00:00 Fri UTC"]
    assert len(cbj(dsn, "schedule", "next", "*/5 * * * *")["ticks"]) == 5  # from now
    assert_error(cb(dsn, "schedule", "next", "0 0 30 2 *"), 1, "day-of-month")
    assert_error(cb(dsn, "schedule", "next", "@daily", "-n", "0"), 2)


def test_cli_tables_fit_80_columns(dsn: str, defined: Client) -> None:
    long_input = {"recipients": [f"user{i}@example.com" for i in range(20)]}
    defined.create_task_schedule("nightly_report", "0 9 * * 1-5", input=long_input)
    defined.create_flow_schedule(reports, "*/15 8-18 * * MON-FRI", catch_up="all")
    narrow = cb(dsn, "schedule", "ls").stdout
    assert_fits(narrow)
    assert "…" in narrow or "not shown at this width" in narrow
    wide = cb(dsn, "schedule", "ls", "--full", columns=200).stdout
    assert "user19@example.com" in wide

    handlers = [{"task_name": f"task_number_{i}"} for i in range(12)]
    steps = [{"flow_name": "reports", "step_name": "build"}]
    worker_id = uuid.uuid4()
    defined.execute(_sql.worker_started(worker_id, task_handlers=handlers, step_handlers=steps))
    [doc] = cbj(dsn, "worker", "ls")
    assert doc["id"] == str(worker_id) and doc["step_handlers"] == steps
    table = cb(dsn, "worker", "ls").stdout
    assert_fits(table)
    assert str(worker_id) in table and "task_number_0" in table
    full = cb(dsn, "worker", "ls", "--full", columns=300).stdout
    assert "reports.build" in full
    defined.execute(_sql.worker_stopped(worker_id))
    assert "No workers registered" in cb(dsn, "worker", "ls").stdout


def test_cli_worker_group_keeps_the_short_form(dsn: str) -> None:
    # "catbird worker TARGET" is "catbird worker run TARGET"
    for argv in (("worker", "no_such_module_xyz:w"), ("worker", "run", "no_such_module_xyz:w")):
        assert_error(cb(dsn, *argv), 2, "cannot import")
    assert re.search(r"\bls\b", runner.invoke(app, ["worker", "--help"]).stdout)
    assert "--schedule-interval" in runner.invoke(app, ["worker", "run", "--help"]).stdout
