"""Tasks from Python: definitions, signature checks, codecs, client calls and handles.

Definitions and codecs need no database. The client calls run against a real
PostgreSQL (one fresh database per test); outcomes are produced through the
worker protocol's SQL functions (claim/complete/fail), without a worker, and
engine time is pinned with ``catbird.fake_now`` where it matters.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import functools
import threading
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, Optional, TypedDict

import psycopg
import pydantic
import pytest
from typer.testing import Result

import catbird
import clihelpers
from catbird import (
    AsyncClient,
    Client,
    DefinitionError,
    InvalidArgument,
    NotFound,
    ObjectInUse,
    RunCanceled,
    RunExpired,
    RunFailed,
    RunSkipped,
    Task,
    TaskFailure,
    TaskInfo,
    TaskRunInfo,
    _sql,
)
from catbird.codec import codec_for, dumps, to_json_value
from catbird.definitions import HandlerOptions
from clihelpers import cbj

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


# ---------------------------------------------------------------- module-level types


@dataclasses.dataclass
class Address:
    city: str
    zip: str = "00000"


@dataclasses.dataclass
class Person:
    name: str
    address: Address
    tags: list[str] = dataclasses.field(default_factory=list)
    born: date | None = None


@dataclasses.dataclass(frozen=True)
class Node:
    value: int
    children: list[Node] = dataclasses.field(default_factory=list)


class Point(TypedDict):
    x: int
    y: int


class Shape(TypedDict, total=False):
    origin: Point
    label: str


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Order(pydantic.BaseModel):
    id: int
    amount: Decimal
    when: datetime


@dataclasses.dataclass
class EmailRequest:
    to: str


@dataclasses.dataclass
class EmailResult:
    sent_to: str
    size: int


# ---------------------------------------------------------------- definitions


def test_decorator_builds_a_task_with_options() -> None:
    @catbird.task(
        "send_email",
        description="send one email",
        condition="input.to exists",
        retention_period=3600,
        concurrency=5,
        batch_size=10,
        timeout=12.5,
        max_retries=3,
        backoff=(0.5, 4),
        circuit_breaker=(4, 30),
    )
    async def send_email(req: EmailRequest) -> EmailResult:
        return EmailResult(req.to, 1)

    assert isinstance(send_email, Task)
    assert send_email.name == "send_email"
    assert send_email.description == "send one email"
    assert send_email.condition == "input.to exists"
    assert send_email.retention_period == timedelta(hours=1)
    assert send_email.options == HandlerOptions(
        concurrency=5,
        batch_size=10,
        timeout=12.5,
        max_retries=3,
        backoff=(0.5, 4.0),
        circuit_breaker=catbird.CircuitBreaker(4, 30.0),
    )
    assert send_email.options.backoff_ms == (500, 4000)
    handler = send_email.handler
    assert handler is not None and handler.is_async
    assert handler.params[0].name == "req"
    assert handler.params[0].annotation is EmailRequest
    # the input codec builds the dataclass, the output codec decodes the result
    assert send_email.input_codec.decode({"to": "a@b.c"}) == EmailRequest("a@b.c")
    assert send_email.decode_output({"sent_to": "x", "size": 2}) == EmailResult("x", 2)
    assert send_email.encode_input(EmailRequest("q")) == {"to": "q"}
    assert "send_email" in repr(send_email)


async def test_task_is_callable_directly() -> None:
    @catbird.task("add_one")
    def add_one(n: int) -> int:
        return n + 1

    @catbird.task("add_two")
    async def add_two(n: int) -> int:
        return n + 2

    assert add_one(1) == 2
    assert await add_two(1) == 3
    assert add_one.handler is not None and not add_one.handler.is_async


def test_task_constructed_directly_and_definition_only() -> None:
    def handler(x: Any) -> None:
        return None

    t = Task("plain", handler, max_retries=0, timeout=None)
    assert t.handler is not None and t.options.timeout is None and t.options.max_retries == 0
    d = Task("definition_only", description="runs elsewhere")
    assert d.handler is None and d.on_fail_handler is None
    with pytest.raises(DefinitionError, match="has no handler"):
        d(1)
    # do() attaches a handler later, with option overrides
    d.do(handler, concurrency=2)
    assert d.handler is not None and d.options.concurrency == 2


def test_handler_default_options_follow_the_go_library() -> None:
    t = Task("defaults", lambda x: x)
    assert t.options == HandlerOptions(
        concurrency=4, batch_size=64, timeout=30.0, max_retries=2, backoff=(0.1, 2.0)
    )


def test_sync_callable_objects_partials_and_async_call_are_recognised() -> None:
    class Sync:
        def __call__(self, x: int) -> int:
            return x

    class Async:
        async def __call__(self, x: int) -> int:
            return x

    def two(a: int, b: int) -> int:
        return a + b

    assert Task("sync_obj", Sync()).handler.is_async is False  # type: ignore[union-attr]
    assert Task("async_obj", Async()).handler.is_async is True  # type: ignore[union-attr]
    partial_task = Task("partial", functools.partial(two, b=1))
    assert partial_task(1) == 2


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (lambda: None, r"must take exactly 1 parameter \(the run input\); it takes 0"),
        (lambda a, b: None, "it requires 2"),
        (lambda a, *, flag: None, "required keyword-only parameter"),
    ],
)
def test_handler_signature_errors(fn: Any, message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        Task("bad", fn)


def test_handler_signature_accepts_extra_defaults_and_varargs() -> None:
    def extra(a: int, b: int = 2, *, c: int = 3) -> int:
        return a + b + c

    def varargs(*args: Any) -> Any:
        return args

    assert Task("extra", extra)(1) == 6
    assert Task("varargs", varargs)(1) == (1,)


def test_generators_and_non_callables_are_rejected() -> None:
    def gen(x: int) -> Any:
        yield x

    async def agen(x: int) -> Any:
        yield x

    with pytest.raises(DefinitionError, match="generator"):
        Task("gen", gen)
    with pytest.raises(DefinitionError, match="generator"):
        Task("agen", agen)
    with pytest.raises(DefinitionError, match="callable"):
        Task("nope", 42)  # type: ignore[arg-type]


def test_unresolvable_and_unsupported_annotations_fail_at_definition() -> None:
    def unresolved(x: NoSuchType) -> None:  # type: ignore[name-defined]  # noqa: F821
        return None

    class Opaque:
        pass

    def unsupported(x: Opaque) -> None:
        return None

    with pytest.raises(DefinitionError, match="cannot resolve the annotations"):
        Task("unresolved", unresolved)
    with pytest.raises(DefinitionError, match="unsupported annotation"):
        Task("unsupported", unsupported)


def test_decorator_errors_name_the_task() -> None:
    with pytest.raises(DefinitionError, match="task 'two_params'"):

        @catbird.task("two_params")
        def two_params(a: int, b: int) -> None:
            return None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"concurrency": 0}, "concurrency must be an integer >= 1"),
        ({"batch_size": -1}, "batch_size"),
        ({"max_retries": -1}, "max_retries must be an integer >= 0"),
        ({"timeout": 0}, "timeout must be > 0"),
        ({"timeout": float("inf")}, "finite"),
        ({"backoff": (2.0, 1.0)}, "must not be less than min"),
        ({"backoff": (1.0,)}, r"\(min, max\) pair"),
        ({"circuit_breaker": (0, 1.0)}, "failure_threshold"),
        ({"circuit_breaker": (1, 0)}, "open_timeout"),
        ({"circuit_breaker": "x"}, "circuit_breaker must be"),
        ({"retention_period": -1}, "retention_period"),
    ],
)
def test_bad_options_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        Task("opts", lambda x: x, **kwargs)
    with pytest.raises(InvalidArgument, match=message):
        catbird.task("opts", **kwargs)


@pytest.mark.parametrize("name", ["", "Upper", "1abc", "with-dash", "a" * 59, "spa ce"])
def test_invalid_task_names(name: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid task name"):
        Task(name)


def test_unknown_handler_option() -> None:
    t = Task("opts")
    with pytest.raises(InvalidArgument, match="unknown handler option"):
        t.do(lambda x: x, retries=3)


def test_on_fail_forms_and_checks() -> None:
    t = Task("with_on_fail", lambda x: x)

    def report(inp: dict[str, Any], failure: TaskFailure) -> None:
        return None

    assert t.on_fail(report, max_retries=5) is t
    assert t.on_fail_handler is not None and t.on_fail_handler.options.max_retries == 5
    # on-fail options default to the standard ones, not the task handler's
    t2 = Task("with_on_fail2", lambda x: x, max_retries=7)

    @t2.on_fail(timeout=3)
    async def report2(inp: Any, failure: Any) -> None:
        return None

    assert report2 is t2
    assert t2.on_fail_handler is not None
    assert t2.on_fail_handler.options.max_retries == 2
    assert t2.on_fail_handler.options.timeout == 3.0
    assert t2.on_fail_handler.is_async

    @t2.on_fail
    def report3(inp: Any, failure: TaskFailure) -> None:
        return None

    assert t2.on_fail_handler.fn is not report2

    with pytest.raises(DefinitionError, match=r"must take exactly 2 parameters"):
        t.on_fail(lambda inp: None)
    with pytest.raises(DefinitionError, match=r"receives a catbird\.TaskFailure"):

        def wrong(inp: Any, failure: int) -> None:
            return None

        t.on_fail(wrong)


# ---------------------------------------------------------------- codecs


def test_codec_dataclasses_nested_and_recursive() -> None:
    person = codec_for(Person).decode(
        {"name": "Ann", "address": {"city": "Oslo"}, "tags": ["a"], "born": "1990-05-01"}
    )
    assert person == Person("Ann", Address("Oslo"), ["a"], date(1990, 5, 1))
    assert to_json_value(person) == {
        "name": "Ann",
        "address": {"city": "Oslo", "zip": "00000"},
        "tags": ["a"],
        "born": "1990-05-01",
    }
    tree = codec_for(Node).decode({"value": 1, "children": [{"value": 2}]})
    assert tree == Node(1, [Node(2)])
    assert codec_for(list[Node]).decode([{"value": 3}]) == [Node(3)]


def test_codec_typeddict_pydantic_enum_and_scalars() -> None:
    assert codec_for(Shape).decode({"origin": {"x": 1, "y": 2}}) == {"origin": {"x": 1, "y": 2}}
    with pytest.raises(TypeError, match="missing key"):
        codec_for(Point).decode({"x": 1})
    order = codec_for(Order).decode({"id": 1, "amount": "9.50", "when": "2030-01-01T00:00:00Z"})
    assert order == Order(id=1, amount=Decimal("9.50"), when=datetime(2030, 1, 1, tzinfo=UTC))
    assert to_json_value(order) == {"id": 1, "amount": "9.50", "when": "2030-01-01T00:00:00Z"}
    with pytest.raises(ValueError, match="cannot decode Order"):
        codec_for(Order).decode({"id": "x"})
    assert codec_for(Color).decode("red") is Color.RED
    assert to_json_value({Color.BLUE: [Color.RED, (1, 2)]}) == {"blue": ["red", [1, 2]]}
    assert codec_for(float).decode(1) == 1.0 and isinstance(codec_for(float).decode(1), float)
    u = uuid.uuid4()
    assert codec_for(uuid.UUID).decode(str(u)) == u
    assert codec_for(Optional[Address]).decode(None) is None  # noqa: UP045 - the old spelling on purpose
    assert codec_for(Address | None).decode({"city": "x"}) == Address("x")
    assert codec_for(tuple[int, str]).decode([1, "a"]) == (1, "a")
    assert codec_for(tuple[Address, ...]).decode([{"city": "a"}]) == (Address("a"),)
    assert codec_for(dict[str, Address]).decode({"k": {"city": "c"}}) == {"k": Address("c")}
    assert codec_for(set[int]).decode([1, 1, 2]) == {1, 2}
    assert codec_for(Literal["a", "b"]).decode("a") == "a"
    union = codec_for(Address | Point)
    assert union.decode({"city": "z"}) == Address("z")


def test_codec_errors_are_clear() -> None:
    with pytest.raises(TypeError, match="cannot decode Address from list"):
        codec_for(Address).decode([1])
    with pytest.raises(TypeError, match=r"Person.address"):
        codec_for(Person).decode({"name": "x", "address": 3})
    with pytest.raises(TypeError, match="missing 1 required positional argument"):
        codec_for(Person).decode({"name": "x"})
    with pytest.raises(TypeError, match="unresolved annotation"):
        codec_for("Person")


def test_dumps_refuses_what_jsonb_cannot_hold() -> None:
    assert dumps({"a": [1, 2.5, None, True]}) == '{"a": [1, 2.5, null, true]}'
    assert dumps(Address("x")) == '{"city": "x", "zip": "00000"}'
    with pytest.raises(TypeError, match="not JSON serializable"):
        dumps(object())
    with pytest.raises(ValueError, match="NaN"):
        dumps(float("nan"))
    with pytest.raises(ValueError, match="NUL"):
        dumps("a\x00b")


# ---------------------------------------------------------------- client (sync)


def set_now(conn: psycopg.Connection[Any], ts: datetime) -> None:
    conn.execute("SELECT set_config('catbird.fake_now', %s, false)", [ts.isoformat()])


@pytest.fixture
def client(conn: psycopg.Connection[Any]) -> Client:
    set_now(conn, NOW)
    return Client(conn)


@catbird.task("email", description="sends", condition="input.to exists", retention_period=60)
async def email_task(req: EmailRequest) -> EmailResult:
    return EmailResult(req.to, len(req.to))


@email_task.on_fail
def email_failed(req: EmailRequest, failure: TaskFailure) -> None:
    return None


def claim(client: Client, name: str, quantity: int = 10) -> list[catbird.models.TaskClaim]:
    return client.execute(_sql.claim_tasks(name, quantity=quantity, hide_for=30.0))


def test_create_get_list_delete_task(client: Client) -> None:
    client.create_task(email_task)
    client.create_task(email_task)  # identical: no-op
    client.create_task("bare")
    info = client.get_task("email")
    assert info == TaskInfo(
        name="email",
        description="sends",
        condition="input.to exists",
        retention_period=timedelta(seconds=60),
        on_fail=True,
        created_at=NOW,
        # the handler's retry policy, stored with the definition (ms)
        max_retries=2,
        backoff_min=100,
        backoff_max=2000,
    )
    assert client.get_task(email_task) == info
    assert [t.name for t in client.list_tasks()] == ["bare", "email"]
    bare = client.get_task("bare")
    assert (bare.description, bare.condition, bare.on_fail, bare.retention_period) == (
        None,
        None,
        False,
        None,
    )
    # explicit arguments override the Task's settings
    client.create_task(email_task, description="changed", on_fail=False)
    assert client.get_task("email").description == "changed"
    assert client.get_task("email").on_fail is False
    assert client.delete_task(email_task) is True
    assert client.delete_task("email") is False
    with pytest.raises(NotFound, match='task "email" does not exist'):
        client.get_task("email")


def test_create_task_errors(client: Client) -> None:
    with pytest.raises(InvalidArgument):
        client.create_task("Bad-Name")
    with pytest.raises(InvalidArgument):
        client.create_task("cond", condition="input.x ??? 1")
    client.create_task("busy", description="v1")
    client.run_task("busy", {})
    with pytest.raises(ObjectInUse):
        client.create_task("busy", description="v2")
    assert client.get_task("busy").description == "v1"
    with pytest.raises(NotFound):
        client.run_task("missing", {})


def test_run_task_returns_a_handle_and_stores_the_run(client: Client) -> None:
    client.create_task(email_task)
    visible = NOW + timedelta(minutes=5)
    expires = NOW + timedelta(hours=1)
    handle = client.run_task(
        email_task,
        EmailRequest("a@b.c"),
        concurrency_key="k1",
        headers={"trace": "t1"},
        visible_at=visible,
        priority=7,
        expires_at=expires,
    )
    assert isinstance(handle, catbird.TaskHandle)
    assert handle.name == "email" and handle.id > 0
    info = handle.info()
    assert isinstance(info, TaskRunInfo)
    assert (info.id, info.task_name, info.status, info.priority, info.attempts) == (
        handle.id,
        "email",
        "queued",
        7,
        0,
    )
    assert info.input == {"to": "a@b.c"}
    assert info.headers == {"trace": "t1"}
    assert info.concurrency_key == "k1"
    assert (info.visible_at, info.expires_at, info.created_at) == (visible, expires, NOW)
    assert not info.is_done and not info.is_completed
    # the same concurrency key while the run is live: the same run
    again = client.run_task("email", {"to": "x@y.z"}, concurrency_key="k1")
    assert again.id == handle.id
    assert client.get_task_run("email", handle.id) == info


def test_run_tasks_batch(client: Client) -> None:
    client.create_task("batch")
    handles = client.run_tasks(
        "batch",
        [{"n": 1}, Address("x"), 3],
        concurrency_keys=["a", None, "a"],
        headers=[{"h": 1}, None, None],
        priority=2,
    )
    assert len(handles) == 3
    assert handles[0].id == handles[2].id  # deduplicated by key inside the batch
    runs = {r.id: r for r in client.list_task_runs("batch")}
    assert len(runs) == 2
    assert runs[handles[0].id].input == {"n": 1}
    assert runs[handles[0].id].headers == {"h": 1}
    assert runs[handles[1].id].input == {"city": "x", "zip": "00000"}
    assert all(r.priority == 2 for r in runs.values())
    assert client.run_tasks("batch", []) == []


def test_list_task_runs_pages_newest_first(client: Client) -> None:
    client.create_task("paged")
    ids = [h.id for h in client.run_tasks("paged", list(range(5)))]
    assert [r.id for r in client.list_task_runs("paged")] == ids[::-1]
    page = client.list_task_runs("paged", limit=2)
    assert [r.id for r in page] == ids[:-3:-1]
    older = client.list_task_runs("paged", limit=2, before_id=page[-1].id)
    assert [r.id for r in older] == [ids[2], ids[1]]
    with pytest.raises(InvalidArgument):
        client.list_task_runs("paged", limit=0)
    with pytest.raises(NotFound):
        client.get_task_run("paged", 10**9)


def test_handle_waits_for_a_typed_output(client: Client) -> None:
    client.create_task(email_task)
    handle = client.run_task(email_task, EmailRequest("abc"))
    [c] = claim(client, "email")
    assert (c.id, c.attempts, c.input) == (handle.id, 1, {"to": "abc"})
    assert client.execute(
        _sql.complete_task("email", c.id, EmailResult("abc", 3), attempt=c.attempts)
    )
    assert handle.wait_for_output(timeout=5) == EmailResult("abc", 3)
    info = handle.info()
    assert info.is_done and info.is_completed and info.completed_at == NOW
    # a handle made from the name gives the JSON value
    assert client.task_handle("email", handle.id).wait_for_output() == {"sent_to": "abc", "size": 3}
    outcome = client.wait_task_output("email", handle.id, poll_for=0)
    assert outcome == catbird.RunOutcome("completed", {"sent_to": "abc", "size": 3}, None)


def test_handle_raises_for_each_terminal_state(client: Client) -> None:
    client.create_task("outcomes", condition="input.ok eq true")
    client.create_task("plain")
    # failed (after its retries), with the error message
    failed = client.run_task("outcomes", {"ok": True})
    [c] = claim(client, "outcomes")
    status = client.execute(_sql.fail_task("outcomes", c.id, "ValueError: boom", attempt=1))
    assert status == "failed"
    with pytest.raises(RunFailed, match="boom") as exc_info:
        failed.wait_for_output(timeout=5)
    assert exc_info.value.error_message == "ValueError: boom"
    assert exc_info.value.status == "failed" and exc_info.value.run_id == failed.id
    # skipped: the condition is false at creation
    skipped = client.run_task("outcomes", {"ok": False})
    assert skipped.info().status == "skipped"
    with pytest.raises(RunSkipped):
        skipped.wait_for_output(timeout=5)
    # canceled
    canceled = client.run_task("plain", {})
    assert client.cancel_task_run("plain", canceled.id, reason="not needed") is True
    assert client.cancel_task_run("plain", canceled.id) is True  # idempotent
    assert client.cancel_task_run("plain", 10**9) is False
    with pytest.raises(RunCanceled):
        canceled.wait_for_output(timeout=5)
    assert canceled.info().cancel_reason == "not needed"
    # expired: past its expires_at when a claim meets it
    expired = client.run_task("plain", {}, expires_at=NOW - timedelta(seconds=1))
    assert claim(client, "plain") == []
    with pytest.raises(RunExpired):
        expired.wait_for_output(timeout=5)
    assert expired.info().expired_at == NOW
    # missing, and still running
    with pytest.raises(NotFound):
        client.task_handle("plain", 10**9).wait_for_output(timeout=5)
    running = client.run_task("plain", {})
    with pytest.raises(TimeoutError, match=r"not done after 0\.2 s"):
        running.wait_for_output(timeout=0.2, poll_interval=0.05)
    assert client.wait_task_output("plain", running.id, poll_for=0) is None


def test_retry_policy_travels_with_the_failure(client: Client) -> None:
    client.create_task("retry")
    handle = client.run_task("retry", {})
    [c] = claim(client, "retry")
    q = _sql.fail_task(
        "retry", c.id, "e1", attempt=1, max_retries=1, backoff_min=1000, backoff_max=1000
    )
    assert client.execute(q) == "queued"
    info = handle.info()
    assert info.status == "queued" and info.visible_at == NOW + timedelta(seconds=1)
    # a stale outcome (old attempt) is ignored
    assert client.execute(q) is None


def test_purge_and_clear_task_runs(client: Client, conn: psycopg.Connection[Any]) -> None:
    client.create_task("purge")
    done = client.run_task("purge", {})
    [c] = claim(client, "purge")
    client.execute(_sql.complete_task("purge", c.id, 1))
    live = client.run_task("purge", {})
    set_now(conn, NOW + timedelta(hours=2))
    assert client.purge_task_runs("purge", timedelta(hours=3)) == 0
    assert client.purge_task_runs("purge", 3600) == 1
    with pytest.raises(NotFound):
        done.info()
    assert live.info().status == "queued"
    other = client.run_task("purge", {}, concurrency_key=None)
    client.cancel_task_run("purge", other.id)
    with pytest.raises(InvalidArgument):
        client.purge_task_runs("purge", -1)
    # clear removes every run, queued and started ones too (as in the Go library)
    assert client.clear_task_runs("purge") == 2
    assert client.list_task_runs("purge") == []


def test_bind_and_unbind_task(client: Client) -> None:
    client.create_task("on_order")
    client.bind_task("on_order", "shop.order.*")
    assert client.publish("shop.order.created", {"id": 9}) == 1
    [run] = client.list_task_runs("on_order")
    assert run.input == {"id": 9}
    assert client.unbind_task("on_order", "shop.order.*") is True
    assert client.unbind_task("on_order", "shop.order.*") is False
    assert client.publish("shop.order.created", {"id": 10}) == 0
    with pytest.raises(InvalidArgument):
        client.bind_task("on_order", "bad..pattern")
    with pytest.raises(NotFound):
        client.bind_task("missing", "a.b")


def test_run_task_joins_the_callers_transaction(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        client = Client(conn)
        client.create_task("atomic")
        with conn.transaction():
            client.run_task("atomic", {})
            conn.execute("SELECT 1")
        assert len(client.list_task_runs("atomic")) == 1
        with pytest.raises(ZeroDivisionError), conn.transaction():
            client.run_task("atomic", {})
            _ = 1 / 0
        assert len(client.list_task_runs("atomic")) == 1


# ---------------------------------------------------------------- async client


@pytest.fixture
async def aclient(aconn: psycopg.AsyncConnection[Any]) -> AsyncIterator[AsyncClient]:
    await aconn.execute("SELECT set_config('catbird.fake_now', %s, false)", [NOW.isoformat()])
    yield AsyncClient(aconn)


async def test_async_client_task_calls(aclient: AsyncClient) -> None:
    await aclient.create_task(email_task)
    info = await aclient.get_task("email")
    assert info.on_fail is True and info.description == "sends"
    assert [t.name for t in await aclient.list_tasks()] == ["email"]
    handle = await aclient.run_task(email_task, EmailRequest("xyz"), headers={"a": 1})
    assert isinstance(handle, catbird.AsyncTaskHandle)
    handles = await aclient.run_tasks("email", [{"to": "b"}, {"to": "c"}])
    assert [h.id for h in handles] == [handle.id + 1, handle.id + 2]
    claims = await aclient.execute(_sql.claim_tasks("email", quantity=1, hide_for=30.0))
    assert claims[0].id == handle.id and claims[0].headers == {"a": 1}
    done = await aclient.execute(
        _sql.complete_tasks_json("email", [handle.id], ['{"sent_to": "xyz", "size": 3}'], [1])
    )
    assert done == [handle.id]
    assert await handle.wait_for_output(timeout=5) == EmailResult("xyz", 3)
    assert (await handle.info()).status == "completed"
    assert (await aclient.get_task_run(email_task, handle.id)).output == {
        "sent_to": "xyz",
        "size": 3,
    }
    runs = await aclient.list_task_runs("email", limit=2)
    assert [r.id for r in runs] == [handles[1].id, handles[0].id]
    assert await aclient.cancel_task_run("email", handles[0].id, reason="r") is True
    with pytest.raises(RunCanceled):
        await handles[0].wait_for_output(timeout=5)
    assert await handles[1].cancel() is True
    outcome = await aclient.wait_task_output("email", handles[1].id, poll_for=0)
    assert outcome is not None and outcome.status == "canceled"
    assert await aclient.clear_task_runs("email") == 3
    assert await aclient.purge_task_runs("email", 0) == 0
    await aclient.bind_task("email", "mail.#")
    assert await aclient.unbind_task(email_task, "mail.#") is True
    with pytest.raises(TimeoutError):
        pending = await aclient.run_task("email", {"to": "slow"})
        await pending.wait_for_output(timeout=0.1, poll_interval=0.02)
    with pytest.raises(NotFound):
        await aclient.task_handle("email", 10**9).wait_for_output(timeout=1)
    assert await aclient.delete_task("email") is True
    assert await aclient.list_tasks() == []


async def test_async_handle_failed_run(aclient: AsyncClient) -> None:
    await aclient.create_task("afail")
    h = await aclient.run_task("afail", 1)
    [c] = await aclient.execute(_sql.claim_tasks("afail", quantity=1, hide_for=30.0))
    await aclient.execute(_sql.fail_task("afail", c.id, "broken", attempt=c.attempts))
    with pytest.raises(RunFailed, match="broken"):
        await h.wait_for_output(timeout=5)


def test_list_workers_reflects_the_registry(client: Client) -> None:
    wid = uuid.uuid4()
    client.execute(
        _sql.worker_started(wid, task_handlers=[{"task_name": "email"}], step_handlers=[])
    )
    [w] = client.list_workers()
    assert w.id == wid and w.task_handlers == [{"task_name": "email"}] and w.step_handlers == []
    assert client.execute(_sql.worker_heartbeat(wid)) is True
    assert client.execute(_sql.worker_stopped(wid)) is True
    assert client.execute(_sql.worker_heartbeat(wid)) is False
    assert client.list_workers() == []


# ---------------------------------------------------------------- command line


def cb(dsn: str | None, *args: str) -> Result:
    return clihelpers.cb(dsn, *args, columns=120)


@pytest.fixture
def no_env_dsn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CATBIRD_DSN", raising=False)


def test_cli_task_inspection_and_operations(dsn: str, no_env_dsn: None) -> None:
    with Client.connect(dsn) as client:
        client.create_task(email_task)
        client.create_task("plain")
    assert [t["name"] for t in cbj(dsn, "task", "ls")] == ["email", "plain"]
    table = cb(dsn, "task", "ls")
    assert table.exit_code == 0 and "email" in table.stdout and "input.to exists" in table.stdout

    run = cbj(dsn, "task", "run", "plain", '{"n": 1}', "--priority", "3", "--headers", '{"h": 1}')
    run_id = run["run_id"]
    assert run == {"task": "plain", "run_id": run_id}
    shown = cbj(dsn, "task", "show", "plain")
    assert shown["task"]["name"] == "plain" and shown["runs"][0]["id"] == run_id
    one = cbj(dsn, "task", "show", "plain", "--run", str(run_id))
    assert (one["status"], one["priority"], one["input"], one["headers"]) == (
        "queued",
        3,
        {"n": 1},
        {"h": 1},
    )
    assert "Run" in cb(dsn, "task", "show", "plain", "--run", str(run_id)).stdout
    runs = cbj(dsn, "task", "runs", "plain", "--limit", "5")
    assert [r["id"] for r in runs] == [run_id]
    assert "queued" in cb(dsn, "task", "runs", "plain").stdout

    assert cbj(dsn, "task", "cancel", "plain", str(run_id), "--reason", "cli") == {
        "task": "plain",
        "run_id": run_id,
        "canceled": True,
    }
    missing = cb(dsn, "task", "cancel", "plain", "999999")
    assert missing.exit_code == 1 and "does not exist" in missing.stderr
    # a skipped run reports its outcome when waited for
    skipped = cb(dsn, "task", "run", "email", '{"other": 1}', "--wait", "5")
    assert skipped.exit_code == 1 and "skipped" in skipped.stderr
    assert cbj(dsn, "task", "purge", "plain", "--older-than", "0") == {
        "task": "plain",
        "deleted": 1,
    }
    cbj(dsn, "task", "run", "plain", "{}")
    assert cbj(dsn, "task", "purge", "plain", "--all") == {"task": "plain", "deleted": 1}
    both = cb(dsn, "task", "purge", "plain", "--all", "--older-than", "1")
    assert both.exit_code == 2
    unknown = cb(dsn, "task", "show", "nope")
    assert unknown.exit_code == 1 and 'task "nope" does not exist' in unknown.stderr
    bad_json = cb(dsn, "task", "run", "plain", "{oops")
    assert bad_json.exit_code == 2 and "not valid JSON" in bad_json.stderr


def test_cli_task_run_waits_for_the_output(dsn: str, no_env_dsn: None) -> None:
    @catbird.task("cli_double")
    async def cli_double(n: int) -> int:
        return 2 * n

    worker = catbird.Worker(dsn, tasks=[cli_double], poll_interval=0.05)
    thread = threading.Thread(target=lambda: asyncio.run(worker.serve()), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        with Client.connect(dsn) as client:
            while not client.list_workers() and time.monotonic() < deadline:
                time.sleep(0.02)
        done = cbj(dsn, "task", "run", "cli_double", "21", "--wait", "10")
        assert done["output"] == 42 and done["status"] == "completed"
        text = cb(dsn, "task", "run", "cli_double", "4", "--wait", "10")
        assert text.exit_code == 0 and "completed: 8" in text.stdout
    finally:
        worker.request_stop()
        thread.join(10)
    assert not thread.is_alive()


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_colon", "expected MODULE:ATTRIBUTE"),
        ("no_such_module_xyz:worker", "cannot import"),
        ("catbird:no_such_attribute", "has no attribute"),
        ("catbird.cli:EXIT_USAGE", "must be a catbird.Worker, a catbird.Task, a catbird.Flow"),
        ("catbird:__all__", "must be a catbird.Worker, a catbird.Task, a catbird.Flow"),
    ],
)
def test_cli_worker_usage_errors(dsn: str, no_env_dsn: None, target: str, message: str) -> None:
    result = cb(dsn, "worker", target)
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_cli_worker_needs_a_dsn_for_tasks(no_env_dsn: None) -> None:
    result = cb(None, "worker", "tests.workers.reliable:tasks")
    assert result.exit_code == 2 and "no database given" in result.stderr
