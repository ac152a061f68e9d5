"""Schedules at the SQL level: the cron parser and cb_next_cron_tick (fixed cases,
a differential test against croniter, time zones, every invalid form), and task
and flow schedules (upsert, delete, enable/disable, list, catch-up after
downtime, concurrent executors, events, gc, cascade on definition delete).

Time is the engine clock (``SET catbird.fake_now``): downtime is simulated by
moving it, never by sleeping.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from croniter import croniter
from psycopg import errors

from sqlhelpers import T0, Clock, J, call, connections, engine_state, fn, rejected, scalar

MINUTE = dt.timedelta(minutes=1)
UTC = dt.UTC


def at(text: str) -> dt.datetime:
    """A UTC instant from 'YYYY-MM-DD HH:MM[:SS]'."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def next_tick(conn: psycopg.Connection, spec: str, when: dt.datetime) -> dt.datetime:
    return fn(conn, "cb_next_cron_tick", cron_spec=spec, from_time=when)


# =========================================================================== fixed cases

FIXED = [
    # minute
    ("* * * * *", "2030-01-01 00:00:00", "2030-01-01 00:01"),
    ("* * * * *", "2030-01-01 00:00:59.999", "2030-01-01 00:01"),
    ("5 * * * *", "2030-01-01 00:05", "2030-01-01 01:05"),  # strictly after
    ("5 * * * *", "2030-01-01 00:04:59", "2030-01-01 00:05"),
    ("*/15 * * * *", "2030-01-01 00:14:59", "2030-01-01 00:15"),
    ("*/15 * * * *", "2030-01-01 00:45", "2030-01-01 01:00"),
    ("0-10/5,30 * * * *", "2030-01-01 00:10", "2030-01-01 00:30"),
    ("50/4 * * * *", "2030-01-01 00:59", "2030-01-01 01:50"),  # N/S = N-59/S: 50 54 58
    ("50/4 * * * *", "2030-01-01 00:55", "2030-01-01 00:58"),
    ("10-12 * * * *", "2030-01-01 00:12", "2030-01-01 01:10"),
    ("7-7 * * * *", "2030-01-01 00:07", "2030-01-01 01:07"),  # an equal range is the value
    ("59 23 31 12 *", "2030-12-31 23:59", "2031-12-31 23:59"),
    # hour
    ("0 */6 * * *", "2030-01-01 06:00", "2030-01-01 12:00"),
    ("30 23 * * *", "2030-01-31 23:30", "2030-02-01 23:30"),
    ("0 9-17/4 * * *", "2030-01-01 17:00", "2030-01-02 09:00"),
    ("15 3,4 * * *", "2030-01-01 04:15", "2030-01-02 03:15"),
    # day of month
    ("0 0 31 * *", "2030-01-31 00:00", "2030-03-31 00:00"),
    ("0 0 30 * *", "2030-01-30 00:00", "2030-03-30 00:00"),
    ("0 0 29 * *", "2030-01-29 00:00", "2030-03-29 00:00"),
    ("0 0 29 * *", "2032-01-29 00:00", "2032-02-29 00:00"),  # leap year
    ("0 0 29 2 *", "2028-02-29 00:00", "2032-02-29 00:00"),
    ("0 0 29 2 *", "2097-01-01 00:00", "2104-02-29 00:00"),  # 2100 is not a leap year
    ("0 0 29 2 *", "2000-01-01 00:00", "2000-02-29 00:00"),  # 2000 is
    ("0 0 1,15 * *", "2030-01-15 00:00", "2030-02-01 00:00"),
    ("0 0 */10 * *", "2030-01-21 00:00", "2030-01-31 00:00"),
    ("0 12 1 * *", "2030-01-01 12:00", "2030-02-01 12:00"),
    # month
    ("0 0 1 jan,JUL *", "2030-01-01 00:00", "2030-07-01 00:00"),
    ("0 0 1 */3 *", "2030-01-01 00:00", "2030-04-01 00:00"),
    ("0 0 1 12/5 *", "2030-01-01 00:00", "2030-12-01 00:00"),  # 12-12/5
    ("0 0 1 Feb-Apr *", "2030-04-01 00:00", "2031-02-01 00:00"),
    ("0 0 31 1-3 *", "2030-01-31 00:00", "2030-03-31 00:00"),
    # day of week (2030-01-01 is a Tuesday)
    ("0 0 * * 0", "2030-01-01 00:00", "2030-01-06 00:00"),
    ("0 0 * * 7", "2030-01-01 00:00", "2030-01-06 00:00"),
    ("0 0 * * sun", "2030-01-01 00:00", "2030-01-06 00:00"),
    ("0 0 * * 5-7", "2030-01-04 00:00", "2030-01-05 00:00"),
    ("0 0 * * 5-7", "2030-01-06 00:00", "2030-01-11 00:00"),
    ("0 0 * * FRI-SUN", "2030-01-06 00:00", "2030-01-11 00:00"),
    ("0 0 * * mon-fri", "2030-01-04 00:00", "2030-01-07 00:00"),
    ("0 0 * * 1-7/2", "2030-01-05 00:00", "2030-01-06 00:00"),  # 1 3 5 7: Sunday
    ("0 0 * * */2", "2030-01-01 00:00", "2030-01-03 00:00"),  # 0 2 4 6
    ("0 0 * * 1/2", "2030-01-05 00:00", "2030-01-07 00:00"),  # 1-6/2: not Sunday
    ("0 9 * * 1-5", "2030-01-04 09:00", "2030-01-07 09:00"),
    # both day fields restricted: either matches
    ("0 0 13 * 5", "2030-01-01 00:00", "2030-01-04 00:00"),  # a Friday before the 13th
    ("0 0 13 * 5", "2030-01-11 00:00", "2030-01-13 00:00"),  # the 13th, a Sunday
    ("0 0 1 * 1", "2030-01-28 00:00", "2030-02-01 00:00"),
    # one day field unrestricted: the other alone decides
    ("0 0 */2 * 1-7", "2030-01-01 00:00", "2030-01-03 00:00"),  # croniter: weekdays field ignored
    ("0 0 1-31 * */2", "2030-01-01 00:00", "2030-01-03 00:00"),  # croniter: days field ignored
    ("0 0 *,5 * 1", "2030-01-01 00:00", "2030-01-07 00:00"),
    # descriptors
    ("@yearly", "2030-06-01 00:00", "2031-01-01 00:00"),
    ("@annually", "2030-01-01 00:00", "2031-01-01 00:00"),
    ("@monthly", "2030-01-31 23:59", "2030-02-01 00:00"),
    ("@weekly", "2030-01-01 00:00", "2030-01-06 00:00"),
    ("@daily", "2030-01-01 00:00", "2030-01-02 00:00"),
    ("@midnight", "2030-12-31 23:59:59", "2031-01-01 00:00"),
    ("@hourly", "2030-01-01 00:00", "2030-01-01 01:00"),
    ("@HOURLY", "2030-01-01 00:30", "2030-01-01 01:00"),
    # spacing and case
    ("  0   0 *\t* *  ", "2030-01-01 00:00", "2030-01-02 00:00"),
    ("0 0 1 JAN MON", "2030-01-01 00:00", "2030-01-07 00:00"),
]


@pytest.mark.parametrize(("spec", "start", "expected"), FIXED)
def test_next_cron_tick_fixed_cases(conn, spec, start, expected):
    assert next_tick(conn, spec, at(start)) == at(expected)
    # croniter agrees with every fixed case but the equal range (it reads N-N
    # as the whole cycle)
    if "7-7" not in spec:
        assert croniter(spec, at(start)).get_next(dt.datetime) == at(expected)


def test_next_cron_ticks_lists_the_following_ticks(conn):
    got = [
        r["cb_next_cron_ticks"]
        for r in call(
            conn,
            "cb_next_cron_ticks",
            cron_spec="0 9 * * 1-5",
            from_time=at("2030-01-03 10:00"),
            quantity=4,
        )
    ]
    assert got == [
        at("2030-01-04 09:00"),
        at("2030-01-07 09:00"),
        at("2030-01-08 09:00"),
        at("2030-01-09 09:00"),
    ]
    with rejected(conn, errors.InvalidParameterValue):
        call(conn, "cb_next_cron_ticks", cron_spec="* * * * *", from_time=T0, quantity=0)
    with rejected(conn, errors.InvalidParameterValue):
        call(conn, "cb_next_cron_ticks", cron_spec="* * * * *", from_time=T0, quantity=100_000)


@pytest.mark.parametrize(
    "zone", ["UTC", "America/New_York", "Asia/Kolkata", "Pacific/Chatham", "Australia/Lord_Howe"]
)
def test_the_session_time_zone_is_ignored(conn, zone):
    conn.execute(f"SET TimeZone = '{zone}'")
    # DST changes in New York (2030-03-10, 2030-11-03) and Lord Howe (half an hour)
    for spec, start, expected in [
        ("30 2 * * *", "2030-03-10 01:00", "2030-03-10 02:30"),
        ("0 0 * * *", "2030-11-02 23:59", "2030-11-03 00:00"),
        ("0 9 * * 1-5", "2030-01-04 09:00", "2030-01-07 09:00"),
        ("@monthly", "2030-01-31 23:00", "2030-02-01 00:00"),
    ]:
        assert next_tick(conn, spec, at(start)) == at(expected)
    # a time given with an offset is the same instant (23:30 UTC)
    assert scalar(
        conn, "SELECT catbird.cb_next_cron_tick('0 0 * * *', '2030-01-01 18:30-05')"
    ) == at("2030-01-02 00:00")
    assert scalar(
        conn,
        "SELECT catbird.cb_next_cron_tick('0 0 * * *', '2030-01-01 18:30-05')"
        " = '2030-01-02 00:00+00'",
    )


# =========================================================================== croniter differential

MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DOW_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


def _value(rng: random.Random, v: int, kind: str, *, range_end: bool = False) -> str:
    if kind == "month" and rng.random() < 0.3:
        name = MONTH_NAMES[v - 1]
        return name.upper() if rng.random() < 0.5 else name
    # SUN only where it means 0 for croniter (SUN closing a range is 7 for us, 0 for it)
    if kind == "dow" and v <= 6 and rng.random() < 0.3 and not (range_end and v == 0):
        name = DOW_NAMES[v]
        return name.capitalize() if rng.random() < 0.5 else name
    return str(v)


def _element(rng: random.Random, lo: int, hi: int, kind: str) -> str:
    top = 7 if kind == "dow" else hi
    r = rng.random()
    if r < 0.15:
        return "*"
    if r < 0.45:
        return _value(rng, rng.randint(lo, top), kind)
    if r < 0.65 or r >= 0.78:
        # ranges, never equal ends (croniter reads N-N as the whole cycle)
        a = rng.randint(lo, top - 1)
        b = rng.randint(a + 1, top)
        step = f"/{rng.randint(1, hi - lo + 1)}" if r >= 0.78 and rng.random() < 0.6 else ""
        return f"{_value(rng, a, kind)}-{_value(rng, b, kind, range_end=True)}{step}"
    if r < 0.72:
        return f"*/{rng.randint(1, hi - lo + 2)}"
    # N/S, never 7/S (croniter's reading of it is an accident)
    return f"{_value(rng, rng.randint(lo, hi), kind)}/{rng.randint(1, hi - lo + 1)}"


def _field(rng: random.Random, lo: int, hi: int, kind: str) -> str:
    if rng.random() < 0.3:
        return "*"
    n = 1 if rng.random() < 0.6 else rng.randint(2, 4)
    return ",".join(_element(rng, lo, hi, kind) for _ in range(n))


def random_spec(rng: random.Random) -> str:
    if rng.random() < 0.03:
        return rng.choice(
            ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"]
        )
    return " ".join(
        [
            _field(rng, 0, 59, "minute"),
            _field(rng, 0, 23, "hour"),
            _field(rng, 1, 31, "dom"),
            _field(rng, 1, 12, "month"),
            _field(rng, 0, 6, "dow"),
        ]
    )


def _is_leap(y: int) -> bool:
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


def random_start(rng: random.Random) -> dt.datetime:
    """Random instants, a good share of them at month ends, in leap years, on Feb 29
    and around the non-leap 2100."""
    if rng.random() < 0.5:
        y = rng.choice([1999, 2000, 2023, 2024, 2028, 2095, 2096, 2099, 2100, 2104])
    else:
        y = rng.randint(1990, 2110)
    mo = rng.randint(1, 12)
    days = (dt.date(y + mo // 12, mo % 12 + 1, 1) - dt.timedelta(days=1)).day
    r = rng.random()
    if r < 0.35:
        d = rng.choice([days, days - 1])
    elif r < 0.45:
        mo = 2
        d = 29 if _is_leap(y) else 28
    else:
        d = rng.randint(1, 28)
    h = rng.choice([0, 23, rng.randint(0, 23)])
    mi = rng.choice([0, 59, rng.randint(0, 59)])
    return dt.datetime(y, mo, d, h, mi, rng.choice([0, 0, 30, 59]), tzinfo=UTC)


def assert_agrees_with_croniter(
    conn: Any,
    rng: random.Random,
    count: int,
    tick_sql: str,
    croniter_tick: str,
    start_of: Callable[[random.Random], dt.datetime] = lambda rng: random_start(rng),
) -> None:
    """``count`` random specs and starts: ``tick_sql`` (of ``u.s``, the spec, and
    ``u.f``, the start) agrees with croniter's ``croniter_tick`` (get_next/get_prev)."""
    specs: list[str] = []
    starts: list[dt.datetime] = []
    expected: list[dt.datetime] = []
    while len(specs) < count:
        spec, start = random_spec(rng), start_of(rng)
        try:
            tick = getattr(croniter(spec, start), croniter_tick)(dt.datetime)
        except Exception:  # croniter finds no date: covered by the invalid-spec tests
            continue
        specs.append(spec)
        starts.append(start)
        expected.append(tick)
    with conn.cursor() as cur:
        got = [
            r[0]
            for r in cur.execute(
                f"SELECT {tick_sql}"
                " FROM unnest(%s::text[], %s::timestamptz[]) WITH ORDINALITY AS u(s, f, o)"
                " ORDER BY u.o",
                (specs, starts),
            ).fetchall()
        ]
    mismatches = [
        (s, f, e, g) for s, f, e, g in zip(specs, starts, expected, got, strict=True) if e != g
    ]
    assert not mismatches, f"{len(mismatches)} of {len(specs)} differ, e.g. {mismatches[:5]}"


def test_next_cron_tick_agrees_with_croniter(conn):
    assert_agrees_with_croniter(
        conn, random.Random(20300101), 4000, "catbird.cb_next_cron_tick(u.s, u.f)", "get_next"
    )


def test_previous_tick_agrees_with_croniter(conn):
    """_cb_cron_prev (the skip policy's latest due tick) against croniter's get_prev."""
    assert_agrees_with_croniter(
        conn,
        random.Random(7),
        2000,
        "catbird._cb_cron_prev(catbird._cb_parse_cron(u.s), u.f)",
        "get_prev",
        start_of=lambda rng: random_start(rng).replace(second=30),
    )


def test_specs_croniter_finds_no_date_for_are_rejected(conn):
    rng = random.Random(3)
    never = [f"0 0 {d} {m} *" for d, m in [(30, 2), (31, 2), (31, 4), (31, 6), (31, 9), (31, 11)]]
    while len(never) < 40:
        months = rng.sample([2, 4, 6, 9, 11], rng.randint(1, 3))
        days = rng.sample([30, 31], rng.randint(1, 2)) if months == [2] else [31]
        never.append(f"0 0 {','.join(map(str, days))} {','.join(map(str, months))} *")
    for spec in never:
        with pytest.raises(Exception):  # noqa: B017 - the oracle's own error type
            croniter(spec, T0).get_next(dt.datetime)
        with pytest.raises(
            errors.InvalidParameterValue, match="matches no minute in the next 8 years"
        ):
            next_tick(conn, spec, T0)


# =========================================================================== invalid specs

INVALID = [
    ("", "5 fields"),
    ("   ", "5 fields"),
    ("* * * *", "5 fields"),
    ("* * * * * *", "5 fields"),
    ("0 0 1 1 * 2030", "5 fields"),
    ("60 * * * *", "minute"),
    ("-1 * * * *", "minute"),
    ("* 24 * * *", "hour"),
    ("* * 0 * *", "day-of-month"),
    ("* * 32 * *", "day-of-month"),
    ("* * * 0 *", "month"),
    ("* * * 13 *", "month"),
    ("* * * * 8", "day-of-week"),
    ("*/0 * * * *", "minute"),
    ("5/0 * * * *", "minute"),
    ("* */x * * *", "hour"),
    ("* */ * * *", "hour"),
    ("* * */-1 * *", "day-of-month"),
    ("1,,2 * * * *", "minute"),
    (",1 * * * *", "minute"),
    ("1, * * * *", "minute"),
    ("10-5 * * * *", "minute"),
    ("* 20-4 * * *", "hour"),
    ("* * * dec-jan *", "month"),
    ("* * * * sat-mon", "day-of-week"),
    ("* * * * 7-1", "day-of-week"),
    ("1-2-3 * * * *", "minute"),
    ("a * * * *", "minute"),
    ("* * * foo *", "month"),
    ("* * * * mon/0", "day-of-week"),
    ("* * * jan/0 *", "month"),
    ("* * * * funday", "day-of-week"),
    ("* * mon * *", "day-of-month"),
    ("* * * * 1#2", "day-of-week"),
    ("* * L * *", "day-of-month"),
    ("* * ? * *", "day-of-month"),
    ("* * 15W * *", "day-of-month"),
    ("*/99999 * * * *", "minute"),
    ("@reboot", "descriptor"),
    ("@every 5m", "descriptor"),
    ("@every", "descriptor"),
    ("@foo", "descriptor"),
    ("0 0 30 2 *", "8 years"),
    ("0 0 31 4,6,9,11 *", "8 years"),
    ("0 0 30,31 feb *", "8 years"),
]


@pytest.mark.parametrize(("spec", "named"), INVALID)
def test_invalid_specs_are_rejected_naming_the_bad_field_and_write_nothing(conn, spec, named):
    fn(conn, "cb_create_task", name="work")
    with pytest.raises(errors.InvalidParameterValue, match=named):
        next_tick(conn, spec, T0)
    with rejected(conn, errors.InvalidParameterValue) as info:
        fn(conn, "cb_create_task_schedule", task_name="work", cron_spec=spec)
    assert named in str(info.value)
    fn(conn, "cb_create_task_schedule", task_name="work", cron_spec="* * * * *")
    with rejected(conn, errors.InvalidParameterValue):  # an update is refused as well
        fn(conn, "cb_create_task_schedule", task_name="work", cron_spec=spec)


def test_absurd_specs_are_rejected_without_quoting_them_in_full(conn):
    fn(conn, "cb_create_task", name="work")
    for spec in ["1," * 5000 + "1 * * * *", "*" * 100_000, "x" * 2000]:
        with rejected(conn, errors.InvalidParameterValue) as info:
            fn(conn, "cb_create_task_schedule", task_name="work", cron_spec=spec)
        message = info.value.diag.message_primary or ""
        assert "longer than 1000 characters" in message or "cannot be read" in message
        assert len(message) < 400


def test_null_arguments_are_rejected(conn):
    fn(conn, "cb_create_task", name="work")
    with rejected(conn, errors.InvalidParameterValue):
        fn(conn, "cb_create_task_schedule", task_name="work", cron_spec=None)
    with rejected(conn, errors.InvalidParameterValue):
        fn(conn, "cb_create_task_schedule", task_name="work", cron_spec="* * * * *", input=None)
    with rejected(conn, errors.InvalidParameterValue):
        next_tick(conn, "* * * * *", None)  # type: ignore[arg-type]
    with rejected(conn, errors.InvalidParameterValue):
        scalar(conn, "SELECT catbird.cb_next_cron_tick('* * * * *', 'infinity')")


# =========================================================================== schedules


def create_task_schedule(
    conn: psycopg.Connection, spec: str, task: str = "work", **kw: Any
) -> None:
    if "input" in kw:
        kw["input"] = J(kw["input"])
    fn(conn, "cb_create_task_schedule", task_name=task, cron_spec=spec, **kw)


def task_schedules(conn: psycopg.Connection) -> dict[str, dict[str, Any]]:
    return {r["task_name"]: r for r in call(conn, "cb_list_task_schedules")}


def execute(conn: psycopg.Connection, **kw: Any) -> int:
    return fn(conn, "cb_execute_due_task_schedules", **kw)


def runs(conn: psycopg.Connection, task: str = "work") -> list[dict[str, Any]]:
    """The task's runs, oldest first."""
    return sorted(call(conn, "cb_list_task_runs", name=task, lim=10_000), key=lambda r: r["id"])


def keys(conn: psycopg.Connection, task: str = "work") -> list[str]:
    return [r["concurrency_key"] for r in runs(conn, task)]


def key(name: str, tick: str) -> str:
    return f"sched:{name}:{at(tick).strftime('%Y-%m-%dT%H:%M:%SZ')}"


@pytest.fixture
def clock(conn) -> Clock:
    return Clock(conn, T0)  # 2030-01-01 00:00 UTC


@pytest.fixture
def work(conn) -> str:
    fn(conn, "cb_create_task", name="work")
    return "work"


def test_create_list_and_the_info_fields(conn, clock, work):
    fn(conn, "cb_create_task", name="report")
    clock.set(at("2030-01-01 00:00:30"))
    create_task_schedule(conn, "*/10 * * * *", input={"kind": "daily"}, catch_up="all")
    create_task_schedule(conn, "@daily", task="report")
    rows = call(conn, "cb_list_task_schedules")
    assert [r["task_name"] for r in rows] == ["work", "report"]  # by next_run_at
    assert rows[0] == {
        "task_name": "work",
        "cron_spec": "*/10 * * * *",
        "next_run_at": at("2030-01-01 00:10"),
        "last_run_at": None,
        "last_enqueued_at": None,
        "enabled": True,
        "catch_up": "all",
        "created_at": at("2030-01-01 00:00:30"),
        "updated_at": at("2030-01-01 00:00:30"),
        "input": {"kind": "daily"},
    }
    assert rows[1]["catch_up"] == "one"  # the default
    assert rows[1]["input"] == {}
    assert call(conn, "cb_list_flow_schedules") == []


def test_unknown_targets_and_bad_arguments_are_rejected(conn, work):
    with rejected(conn, errors.UndefinedObject):
        create_task_schedule(conn, "* * * * *", task="nope")
    with rejected(conn, errors.UndefinedObject):
        fn(conn, "cb_create_flow_schedule", flow_name="nope", cron_spec="* * * * *")
    with rejected(conn, errors.InvalidParameterValue):
        create_task_schedule(conn, "* * * * *", task="Bad Name")
    with rejected(conn, errors.InvalidParameterValue):
        fn(conn, "cb_create_flow_schedule", flow_name="x" * 100, cron_spec="* * * * *")
    for catch_up in ["", "ALL", "none", "two", None]:
        with rejected(conn, errors.InvalidParameterValue):
            create_task_schedule(conn, "* * * * *", catch_up=catch_up)
    with rejected(conn, errors.InvalidParameterValue):
        execute(conn, batch_size=0)
    with rejected(conn, errors.InvalidParameterValue):
        execute(conn, max_schedules=0)
    with rejected(conn, errors.InvalidParameterValue):
        fn(conn, "cb_delete_task_schedule", task_name="Bad Name")
    assert fn(conn, "cb_delete_task_schedule", task_name="nope") is False
    assert fn(conn, "cb_enable_task_schedule", task_name="work") is False
    assert fn(conn, "cb_disable_flow_schedule", flow_name="nope") is False


def test_a_schedule_fires_each_tick_once_with_its_input_and_key(conn, clock, work):
    create_task_schedule(conn, "*/5 * * * *", input={"n": 1})
    assert execute(conn) == 0  # not due yet
    clock.set(at("2030-01-01 00:05:00"))
    assert execute(conn) == 1
    assert execute(conn) == 0  # the same tick never again
    clock.set(at("2030-01-01 00:09:59"))
    assert execute(conn) == 0
    clock.set(at("2030-01-01 00:10:01"))
    assert execute(conn) == 1
    got = runs(conn)
    assert [r["concurrency_key"] for r in got] == [
        key("work", "2030-01-01 00:05"),
        key("work", "2030-01-01 00:10"),
    ]
    assert [r["input"] for r in got] == [{"n": 1}, {"n": 1}]
    assert [r["status"] for r in got] == ["queued", "queued"]
    info = task_schedules(conn)["work"]
    assert info["last_run_at"] == at("2030-01-01 00:10")
    assert info["last_enqueued_at"] == at("2030-01-01 00:10:01")
    assert info["next_run_at"] == at("2030-01-01 00:15")


# ten-minute ticks from 00:10; the clock comes back at 00:55 after downtime
MISSED = [
    "2030-01-01 00:10",
    "2030-01-01 00:20",
    "2030-01-01 00:30",
    "2030-01-01 00:40",
    "2030-01-01 00:50",
]


@pytest.mark.parametrize(
    ("catch_up", "fired"),
    [("skip", MISSED[-1:]), ("one", MISSED[:1]), ("all", MISSED)],
)
def test_catch_up_after_downtime(conn, clock, work, catch_up, fired):
    create_task_schedule(conn, "*/10 * * * *", catch_up=catch_up)
    clock.set(at("2030-01-01 00:55"))
    assert execute(conn) == len(fired)
    assert keys(conn) == [key("work", t) for t in fired]
    assert task_schedules(conn)["work"]["next_run_at"] == at("2030-01-01 01:00")
    assert task_schedules(conn)["work"]["last_run_at"] == at(fired[-1])
    assert execute(conn) == 0
    clock.set(at("2030-01-01 01:00:02"))  # back to normal: the next tick fires
    assert execute(conn) == 1
    assert keys(conn)[-1] == key("work", "2030-01-01 01:00")


@pytest.mark.parametrize("catch_up", ["skip", "one", "all"])
def test_a_tick_that_just_passed_fires_under_every_policy(conn, clock, work, catch_up):
    create_task_schedule(conn, "0 * * * *", catch_up=catch_up)
    clock.set(at("2030-01-01 01:00:00.5"))
    assert execute(conn) == 1
    clock.set(at("2030-01-01 01:59:59"))
    assert execute(conn) == 0
    clock.set(at("2030-01-01 02:00:10"))
    assert execute(conn) == 1
    assert keys(conn) == [key("work", "2030-01-01 01:00"), key("work", "2030-01-01 02:00")]


def test_catch_up_all_is_batched_per_call(conn, clock, work):
    create_task_schedule(conn, "*/10 * * * *", catch_up="all")
    clock.set(at("2030-01-01 00:55"))
    assert execute(conn, batch_size=2) == 2
    assert task_schedules(conn)["work"]["next_run_at"] == at("2030-01-01 00:30")  # still due
    assert execute(conn, batch_size=2) == 2
    assert execute(conn, batch_size=2) == 1
    assert execute(conn, batch_size=2) == 0
    assert keys(conn) == [key("work", t) for t in MISSED]


def test_catch_up_all_over_a_long_downtime(conn, clock, work):
    create_task_schedule(conn, "* * * * *", catch_up="all")
    clock.set(T0 + dt.timedelta(days=1, seconds=30))  # 1440 missed minutes
    total = 0
    while n := execute(conn, batch_size=500):
        total += n
    assert total == 1440
    assert len(set(keys(conn))) == 1440


def test_max_schedules_limits_one_call_oldest_tick_first(conn, clock):
    for i in range(5):
        fn(conn, "cb_create_task", name=f"t{i}")
        clock.set(T0 + i * MINUTE)
        create_task_schedule(conn, "* * * * *", task=f"t{i}")
    clock.set(T0 + dt.timedelta(minutes=10))
    assert execute(conn, max_schedules=2) == 2
    assert {n: len(runs(conn, n)) for n in ["t0", "t1", "t2", "t3", "t4"]} == {
        "t0": 1,
        "t1": 1,
        "t2": 0,
        "t3": 0,
        "t4": 0,
    }
    assert execute(conn) == 3


def test_task_names_filter_which_schedules_fire(conn, clock):
    for name in ["a", "b", "c"]:
        fn(conn, "cb_create_task", name=name)
        create_task_schedule(conn, "* * * * *", task=name)
    clock.advance(seconds=61)
    assert execute(conn, task_names=["a", "c", "unknown"]) == 2
    assert [len(runs(conn, n)) for n in "abc"] == [1, 0, 1]
    assert execute(conn, task_names=[]) == 0
    assert execute(conn) == 1


def test_upsert_keeps_the_backlog_when_the_spec_is_unchanged(conn, clock, work):
    create_task_schedule(conn, "*/10 * * * *", input={"v": 1})
    created = task_schedules(conn)["work"]
    clock.set(at("2030-01-01 00:35"))  # 00:10 00:20 00:30 missed
    create_task_schedule(conn, "*/10 * * * *", input={"v": 1})  # identical: nothing written
    assert task_schedules(conn)["work"] == created
    create_task_schedule(conn, "*/10  *  *  *  *", input={"v": 2}, catch_up="all")
    updated = task_schedules(conn)["work"]
    assert updated["next_run_at"] == at("2030-01-01 00:10")  # the backlog is kept
    assert updated["updated_at"] == at("2030-01-01 00:35")
    assert updated["created_at"] == created["created_at"]
    assert execute(conn) == 3
    assert [r["input"] for r in runs(conn)] == [{"v": 2}] * 3


def test_upsert_recomputes_next_run_at_when_the_spec_changes(conn, clock, work):
    create_task_schedule(conn, "0 * * * *")
    clock.set(at("2030-01-01 03:20"))
    create_task_schedule(conn, "@hourly")  # the same ticks in other words: backlog kept
    assert task_schedules(conn)["work"]["next_run_at"] == at("2030-01-01 01:00")
    assert task_schedules(conn)["work"]["cron_spec"] == "@hourly"
    create_task_schedule(conn, "*/15 * * * *")
    assert task_schedules(conn)["work"]["next_run_at"] == at("2030-01-01 03:30")
    assert execute(conn) == 0


def test_a_deleted_schedule_never_fires(conn, clock, work):
    create_task_schedule(conn, "* * * * *")
    clock.advance(seconds=600)
    assert fn(conn, "cb_delete_task_schedule", task_name="work") is True
    assert fn(conn, "cb_delete_task_schedule", task_name="work") is False
    assert execute(conn) == 0
    clock.advance(seconds=6000)
    assert execute(conn) == 0
    assert runs(conn) == []
    assert task_schedules(conn) == {}


def test_disabled_schedules_do_not_fire_and_resume_at_the_next_tick(conn, clock, work):
    create_task_schedule(conn, "*/10 * * * *", catch_up="all")
    assert fn(conn, "cb_disable_task_schedule", task_name="work") is True
    assert fn(conn, "cb_disable_task_schedule", task_name="work") is True  # idempotent
    assert task_schedules(conn)["work"]["enabled"] is False
    clock.set(at("2030-01-01 01:05"))
    assert execute(conn) == 0
    create_task_schedule(conn, "*/10 * * * *", input={"x": 1}, catch_up="all")  # stays disabled
    assert task_schedules(conn)["work"]["enabled"] is False
    assert execute(conn) == 0
    assert fn(conn, "cb_enable_task_schedule", task_name="work") is True
    info = task_schedules(conn)["work"]
    assert info["enabled"] is True
    assert info["next_run_at"] == at("2030-01-01 01:10")  # ticks missed while disabled are dropped
    assert execute(conn) == 0
    clock.set(at("2030-01-01 01:10"))
    assert execute(conn) == 1
    assert keys(conn) == [key("work", "2030-01-01 01:10")]


def test_a_replayed_tick_never_enqueues_twice(conn, clock, work):
    create_task_schedule(conn, "*/5 * * * *")
    clock.set(at("2030-01-01 00:05"))
    assert execute(conn) == 1
    # Something (a restore, an operator) moves the schedule back: the live run
    # still holds the tick's concurrency key, so nothing new is enqueued.
    conn.execute("UPDATE catbird.cb_schedules SET next_run_at = '2030-01-01 00:05+00'")
    assert execute(conn) == 0
    assert len(runs(conn)) == 1


def test_a_false_condition_makes_scheduled_runs_skipped(conn, clock):
    fn(conn, "cb_create_task", name="work", condition="input.go eq true")
    create_task_schedule(conn, "* * * * *", input={"go": False})
    clock.advance(seconds=60)
    assert execute(conn) == 1
    assert [r["status"] for r in runs(conn)] == ["skipped"]


def test_flow_schedules(conn, clock):
    fn(
        conn,
        "cb_create_flow",
        name="nightly",
        steps=J([{"name": "extract"}, {"name": "load", "depends_on": [{"name": "extract"}]}]),
    )
    fn(
        conn,
        "cb_create_flow_schedule",
        flow_name="nightly",
        cron_spec="30 2 * * *",
        input=J({"day": "x"}),
        catch_up="skip",
    )
    (info,) = call(conn, "cb_list_flow_schedules")
    assert info["flow_name"] == "nightly"
    assert info["next_run_at"] == at("2030-01-01 02:30")
    assert info["catch_up"] == "skip"
    clock.set(at("2030-01-04 03:00"))  # four nights missed: skip fires the last
    assert fn(conn, "cb_execute_due_task_schedules") == 0  # task schedules only
    assert fn(conn, "cb_execute_due_flow_schedules") == 1
    assert fn(conn, "cb_execute_due_flow_schedules") == 0
    (run,) = call(conn, "cb_list_flow_runs", name="nightly")
    assert run["concurrency_key"] == key("nightly", "2030-01-04 02:30")
    assert run["input"] == {"day": "x"}
    assert run["status"] == "started"
    steps = {
        s["step_name"]: s["status"]
        for s in call(conn, "cb_get_flow_run_steps", flow_name="nightly", run_id=run["id"])
    }
    assert steps == {"extract": "queued", "load": "waiting_for_dependencies"}
    assert fn(conn, "cb_disable_flow_schedule", flow_name="nightly") is True
    assert fn(conn, "cb_enable_flow_schedule", flow_name="nightly") is True
    assert fn(conn, "cb_delete_flow_schedule", flow_name="nightly") is True
    assert call(conn, "cb_list_flow_schedules") == []


def test_deleting_a_definition_deletes_its_schedule(conn, clock, work):
    create_task_schedule(conn, "* * * * *")
    fn(conn, "cb_create_flow", name="f", steps=J([{"name": "s"}]))
    fn(conn, "cb_create_flow_schedule", flow_name="f", cron_spec="* * * * *")
    assert fn(conn, "cb_delete_task", name="work") is True
    assert fn(conn, "cb_delete_flow", name="f") is True
    assert scalar(conn, "SELECT count(*) FROM catbird.cb_schedules") == 0
    # re-created definitions start without a schedule
    fn(conn, "cb_create_task", name="work")
    clock.advance(seconds=600)
    assert execute(conn) == 0
    # redefining a task (no runs) keeps its schedule
    create_task_schedule(conn, "* * * * *")
    fn(conn, "cb_create_task", name="work", description="changed")
    assert list(task_schedules(conn)) == ["work"]


def test_gc_leaves_schedules_alone(conn, clock, work):
    create_task_schedule(conn, "0 0 1 1 *")
    fn(conn, "cb_disable_task_schedule", task_name="work")
    before = engine_state(conn)["cb_schedules"]
    clock.set(T0 + dt.timedelta(days=3000))
    fn(conn, "cb_gc")
    assert engine_state(conn)["cb_schedules"] == before


# =========================================================================== events


@pytest.fixture
def listener(dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("LISTEN catbird")
        yield c


def schedule_events(listener: psycopg.Connection, expected: int) -> list[tuple[str, Any]]:
    got = []
    for n in listener.notifies(timeout=2.0, stop_after=expected):
        payload = json.loads(n.payload)
        if payload["topic"].startswith("catbird.schedule."):
            got.append((payload["topic"], json.loads(payload["data"])))
    for n in listener.notifies(timeout=0.1):
        payload = json.loads(n.payload)
        if payload["topic"].startswith("catbird.schedule."):
            got.append((payload["topic"], json.loads(payload["data"])))
    return got


def test_schedule_events(conn, listener, work):
    fn(conn, "cb_create_flow", name="f", steps=J([{"name": "s"}]))
    list(listener.notifies(timeout=0.2))  # the definitions' own events
    create_task_schedule(conn, "* * * * *")
    create_task_schedule(conn, "* * * * *")  # unchanged: no event
    create_task_schedule(conn, "*/2 * * * *")
    fn(conn, "cb_disable_task_schedule", task_name="work")
    fn(conn, "cb_disable_task_schedule", task_name="work")  # unchanged: no event
    fn(conn, "cb_enable_task_schedule", task_name="work")
    fn(conn, "cb_delete_task_schedule", task_name="work")
    fn(conn, "cb_create_flow_schedule", flow_name="f", cron_spec="@daily")
    assert schedule_events(listener, 6) == [
        ("catbird.schedule.created", {"task": "work"}),
        ("catbird.schedule.updated", {"task": "work"}),
        ("catbird.schedule.disabled", {"task": "work"}),
        ("catbird.schedule.enabled", {"task": "work"}),
        ("catbird.schedule.deleted", {"task": "work"}),
        ("catbird.schedule.created", {"flow": "f"}),
    ]


# =========================================================================== concurrency


def test_eight_concurrent_executors_fire_each_tick_exactly_once(conn, dsn):
    """Eight sessions call the executors at the same engine instants, minute after
    minute; every tick of every schedule fires exactly once. The counts returned
    prove it even where a concurrency key would have hidden a second firing."""
    tasks = [f"t{i}" for i in range(12)]
    Clock(conn, T0)
    for i, name in enumerate(tasks):
        fn(conn, "cb_create_task", name=name)
        create_task_schedule(
            conn,
            "* * * * *" if i % 2 else "*/2 * * * *",
            task=name,
            catch_up=["skip", "one", "all"][i % 3],
        )
    fn(conn, "cb_create_flow", name="f", steps=J([{"name": "s"}]))
    fn(conn, "cb_create_flow_schedule", flow_name="f", cron_spec="* * * * *", catch_up="all")
    minutes = 30
    barrier = threading.Barrier(8)
    fired: list[int] = []
    lock = threading.Lock()

    def executor(c: psycopg.Connection, index: int) -> None:
        clock = Clock(c, T0)
        for m in range(1, minutes + 1):
            clock.set(T0 + m * MINUTE + dt.timedelta(seconds=index))
            barrier.wait(timeout=60)
            n = fn(c, "cb_execute_due_task_schedules") + fn(
                c, "cb_execute_due_flow_schedules", batch_size=1
            )
            with lock:
                fired.append(n)
            barrier.wait(timeout=60)

    with connections(dsn, 8) as conns, ThreadPoolExecutor(8) as pool:
        for f in [pool.submit(executor, c, i) for i, c in enumerate(conns)]:
            f.result(timeout=120)

    every_minute = len([t for i, t in enumerate(tasks) if i % 2])
    every_other = len(tasks) - every_minute
    flow_ticks = minutes
    assert sum(fired) == every_minute * minutes + every_other * (minutes // 2) + flow_ticks
    all_keys = [k for t in tasks for k in keys(conn, t)]
    assert len(all_keys) == sum(fired) - flow_ticks
    assert Counter(all_keys).most_common(1)[0][1] == 1
    flow_keys = [r["concurrency_key"] for r in call(conn, "cb_list_flow_runs", name="f", lim=1000)]
    assert sorted(flow_keys) == [
        key("f", (T0 + m * MINUTE).strftime("%Y-%m-%d %H:%M")) for m in range(1, minutes + 1)
    ]


def test_concurrent_executors_after_downtime_split_the_backlog(conn, dsn):
    """With catch-up 'all' and a small batch, eight sessions draining a day of
    missed ticks together enqueue each of them once."""
    Clock(conn, T0)
    for i in range(4):
        fn(conn, "cb_create_task", name=f"t{i}")
        create_task_schedule(conn, "*/5 * * * *", task=f"t{i}", catch_up="all")
    later = T0 + dt.timedelta(days=1, seconds=1)
    total = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def drain(c: psycopg.Connection) -> None:
        Clock(c, later)
        barrier.wait(timeout=60)
        while True:
            n = fn(c, "cb_execute_due_task_schedules", batch_size=7)
            with lock:
                total[0] += n
            if (
                n == 0
                and scalar(
                    c,
                    "SELECT count(*) FROM catbird.cb_schedules"
                    " WHERE next_run_at <= catbird.cb_now()",
                )
                == 0
            ):
                return

    with connections(dsn, 8) as conns, ThreadPoolExecutor(8) as pool:
        for f in [pool.submit(drain, c) for c in conns]:
            f.result(timeout=120)
    assert total[0] == 4 * 288
    for i in range(4):
        ks = keys(conn, f"t{i}")
        assert len(ks) == 288 and len(set(ks)) == 288


def test_delete_task_waits_for_an_open_executor_and_removes_its_runs(conn, dsn):
    """An executor holding a schedule (uncommitted) and cb_delete_task on the same
    task: the delete waits for it, then removes the schedule and the new runs."""
    Clock(conn, T0)
    fn(conn, "cb_create_task", name="work")
    create_task_schedule(conn, "* * * * *")
    with connections(dsn, 2) as (executor, deleter), ThreadPoolExecutor(1) as pool:
        Clock(executor, T0 + 5 * MINUTE)
        executor.execute("BEGIN")
        assert fn(executor, "cb_execute_due_task_schedules") == 1
        pid = scalar(deleter, "SELECT pg_backend_pid()")
        future = pool.submit(fn, deleter, "cb_delete_task", name="work")
        deadline = time.monotonic() + 60
        while not scalar(
            conn,
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'",
            (pid,),
        ):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        executor.execute("COMMIT")
        assert future.result(timeout=60) is True
    assert scalar(conn, "SELECT count(*) FROM catbird.cb_schedules") == 0
    assert scalar(conn, "SELECT count(*) FROM catbird.cb_task_runs") == 0
