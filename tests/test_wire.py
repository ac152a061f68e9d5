"""catbird.Wire: the LISTEN relay between nodes, listeners, tokens, the node's
registry row, and recovery after the LISTEN connection is killed.

Two Wire instances on one database stand for two application processes.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import catbird
from catbird.wire import GAP_TOPIC, InvalidToken, SSEEvent, Wire, WireRequest
from catbird.wire.sse import encode_event
from sqlhelpers import Clock, fn, scalar

SECRET = bytes(range(32))


class Inbox:
    """What a listener received, with a way to wait for it."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str | None]] = []
        self._changed = asyncio.Event()

    def __call__(self, topic: str, data: str | None) -> None:
        self.got.append((topic, data))
        self._changed.set()

    async def until(self, count: int, timeout: float = 10.0) -> list[tuple[str, str | None]]:
        async with asyncio.timeout(timeout):
            while len(self.got) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.got


@pytest.fixture
async def wires(dsn: str) -> AsyncIterator[tuple[Wire, Wire]]:
    a, b = Wire(dsn, SECRET), Wire(dsn, SECRET)
    async with a, b:
        yield a, b


async def settle() -> None:
    """Lets a notification that should not arrive have its chance to (a round
    trip through the server)."""
    await asyncio.sleep(0.3)


async def test_two_nodes_see_each_others_notifications_once_and_not_their_own_echo(wires):
    a, b = wires
    at_a, at_b = Inbox(), Inbox()
    a.listen("chat.#", at_a)
    b.listen("chat.#", at_b)
    await a.notify("chat.room1", "hello")
    await b.notify("chat.room2", {"n": 2})
    both = [("chat.room1", "hello"), ("chat.room2", '{"n": 2}')]
    assert sorted(await at_b.until(2)) == both
    assert sorted(await at_a.until(2)) == both
    await settle()
    assert len(at_a.got) == 2 and len(at_b.got) == 2  # no echo delivered twice


async def test_listen_patterns_pick_topics_and_async_handlers_run(wires, dsn):
    a, b = wires
    star, hashed, exact = Inbox(), Inbox(), Inbox()
    async_seen: list[str] = []

    async def handler(topic: str, data: str | None) -> None:
        await asyncio.sleep(0)
        async_seen.append(topic)

    b.listen("orders.*", star).listen("orders.#", hashed).listen("orders.eu", exact)
    b.listen("orders.#", handler)
    for topic in ("orders.eu", "orders.eu.created", "orders", "invoices.eu"):
        await a.notify(topic)
    # A plain cb_notify (no node id) from any connection reaches every node.
    with psycopg.connect(dsn, autocommit=True) as conn:
        fn(conn, "cb_notify", topic="orders.us", data="x")
    await hashed.until(4)
    assert [t for t, _ in hashed.got] == ["orders.eu", "orders.eu.created", "orders", "orders.us"]
    assert [t for t, _ in star.got] == ["orders.eu", "orders.us"]
    assert exact.got == [("orders.eu", None)]
    await settle()  # the async handler's task runs after the relay
    assert sorted(async_seen) == sorted(t for t, _ in hashed.got)


async def test_engine_events_reach_listeners(wires, dsn):
    a, _ = wires
    seen = Inbox()
    a.listen("catbird.queue.#", seen)
    a.listen("catbird.worker.#", seen)
    with psycopg.connect(dsn, autocommit=True) as conn:
        fn(
            conn,
            "cb_worker_started",
            id="00000000-0000-0000-0000-000000000001",
            task_handlers=psycopg.types.json.Jsonb([]),
            step_handlers=psycopg.types.json.Jsonb([]),
        )
    topic, _ = (await seen.until(1))[0]
    assert topic == "catbird.worker.started"


async def test_notify_refuses_bad_and_reserved_topics_and_big_data_delivering_nothing(wires):
    a, b = wires
    seen_a, seen_b = Inbox(), Inbox()
    a.listen("#", seen_a)
    b.listen("#", seen_b)
    with pytest.raises(ValueError, match="invalid topic"):
        await a.notify("chat.*")
    with pytest.raises(catbird.InvalidArgument, match="catbird"):
        await a.notify("catbird.task.completed", "forged")
    with pytest.raises(catbird.InvalidArgument, match=r"\d+ bytes"):
        await a.notify("chat.big", "x" * 8000)
    await settle()
    assert seen_a.got == [] and [t for t, _ in seen_b.got] == []


async def test_a_failing_listener_does_not_stop_the_others(wires):
    a, b = wires
    seen = Inbox()

    def broken(topic: str, data: str | None) -> None:
        raise RuntimeError("boom")

    b.listen("x.#", broken).listen("x.#", seen)
    await a.notify("x.1")
    await a.notify("x.2")
    assert [t for t, _ in await seen.until(2)] == ["x.1", "x.2"]


async def test_the_node_registers_beats_and_unregisters_on_stop(dsn, conn):
    wire = Wire(dsn, SECRET, heartbeat_interval=0.2)
    async with wire:
        assert wire.id == str(wire._uuid)
        first = scalar(
            conn, "SELECT last_heartbeat_at FROM catbird.cb_wire_nodes WHERE id = %s", (wire.id,)
        )
        await asyncio.sleep(0.5)
        later = scalar(
            conn, "SELECT last_heartbeat_at FROM catbird.cb_wire_nodes WHERE id = %s", (wire.id,)
        )
        assert later > first
    assert scalar(conn, "SELECT count(*) FROM catbird.cb_wire_nodes") == 0


async def test_gc_removes_a_node_that_stopped_beating_by_the_engine_clock(dsn, conn):
    wire = Wire(dsn, SECRET)
    await wire.start()
    try:
        claims = wire.verify(wire.token(["room.1"], identity="ann"))
        request = WireRequest("/", {}, {}, "ann", claims.topics, {})
        sub = await wire.subscribe(claims, request)
        assert await wire.presence("room.1") == ["ann"]
        Clock(conn, dt.datetime.now(dt.UTC) + dt.timedelta(seconds=16))
        assert fn(conn, "cb_gc")["stale_wire_nodes_deleted"] == 1
        assert scalar(conn, "SELECT count(*) FROM catbird.cb_wire_presence") == 0
        assert await wire.presence("room.1") == []
        # The node's next beat registers it again and brings its connection back.
        await wire._heartbeat_once()
        assert await wire.presence("room.1") == ["ann"]
        await wire.unsubscribe(sub)
        assert await wire.presence("room.1") == []
    finally:
        await wire.stop()


async def test_after_the_listen_backend_is_killed_a_gap_event_comes_then_delivery_resumes(
    wires, conn
):
    a, b = wires
    seen = Inbox()
    b.listen("chat.#", seen)
    b.listen(GAP_TOPIC, seen)
    killed = scalar(
        conn,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND query = 'LISTEN catbird'"
        " AND pid <> pg_backend_pid()",
    )
    assert killed == 2  # both nodes' LISTEN connections
    got = await seen.until(1)
    assert got[0][0] == GAP_TOPIC and json.loads(got[0][1] or "") == {"node_id": b.id}
    await a.notify("chat.after", "back")
    assert (await seen.until(2))[1] == ("chat.after", "back")


# ----------------------------------------------------------------------- tokens


def test_tokens_carry_their_claims_and_nobody_can_read_them():
    wire = Wire("postgresql://unused", SECRET)
    token = wire.token(["room.1", "chat.#"], identity="ann", raw=True)
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert b"ann" not in base64.urlsafe_b64decode(token + "==")
    claims = wire.verify(token)
    assert (claims.topics, claims.identity, claims.raw, claims.inbox) == (
        ("room.1", "chat.#"),
        "ann",
        True,
        False,
    )
    assert claims.allows("chat.lobby.x") and claims.allows("room.1")
    assert not claims.allows("room.2")
    assert wire.token(["a"]) != wire.token(["a"])  # a fresh nonce each time


@pytest.mark.parametrize("secret", [b"", b"short", bytes(33), "x" * 32])
def test_a_secret_that_is_not_32_bytes_is_a_clear_error(secret: Any):
    with pytest.raises(ValueError, match="exactly 32 bytes"):
        Wire("postgresql://unused", secret)


def test_tampered_foreign_and_expired_tokens_do_not_open():
    wire = Wire("postgresql://unused", SECRET)
    other = Wire("postgresql://unused", bytes(32))
    token = wire.token(["room.1"], identity="ann")
    raw = bytearray(base64.urlsafe_b64decode(token + "=="))
    raw[20] ^= 1
    tampered = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    expired = wire.token(["room.1"], valid_for=dt.timedelta(seconds=-1))
    for bad in (tampered, other.token(["room.1"]), expired, "", "!!", token[:10], token + "A"):
        with pytest.raises(InvalidToken):
            wire.verify(bad)
    assert wire.verify(wire.token(["room.1"], valid_for=None)).expires_at is None


@pytest.mark.parametrize(
    ("topics", "options", "message"),
    [
        ([], {}, "1 to 100"),
        ([f"t.{i}" for i in range(101)], {}, "1 to 100"),
        ("room.1", {}, "list of topics"),
        (["room..1"], {}, "invalid pattern"),
        (["room.1"], {"identity": ""}, "identity"),
        (["room.1"], {"inbox": True}, "needs an identity"),
    ],
)
def test_token_arguments_are_checked(topics: Any, options: dict[str, Any], message: str):
    wire = Wire("postgresql://unused", SECRET)
    with pytest.raises(ValueError, match=message):
        wire.token(topics, **options)


def test_wire_is_exported_lazily_from_catbird():
    assert catbird.Wire is Wire
    assert catbird.SSEEvent(data="x").data == "x"
    with pytest.raises(AttributeError):
        catbird.NoSuchThing  # noqa: B018


async def test_a_slow_connection_is_closed_instead_of_queueing_without_bound(dsn):
    async with Wire(dsn, SECRET, queue_size=3) as wire:
        claims = wire.verify(wire.token(["t.#"]))
        sub = await wire.subscribe(claims, WireRequest("/", {}, {}, None, claims.topics, {}))
        for i in range(3):
            wire.deliver(f"t.{i}", None)
        assert not sub.closed and sub.queue.qsize() == 3
        wire.deliver("t.3", None)  # one too many
        assert sub.closed and sub.queue.qsize() == 1  # only the end-of-stream marker
        wire.deliver("t.4", None)
        assert sub.queue.qsize() == 1
        await wire.unsubscribe(sub)
        assert wire.subscribers == set()


def test_sse_encoding_splits_lines_and_keeps_fields_on_one_line():
    assert encode_event(SSEEvent(data="a\nb\r\nc\rd"), "t.x") == (
        b"event: t.x\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
    )
    assert encode_event(SSEEvent(event="n\nx", data="", id="7"), "t") == (
        b"event: n x\nid: 7\ndata:\n\n"
    )


def test_import_catbird_works_without_the_web_extra_and_wire_says_what_to_install():
    script = (
        "import sys; sys.modules['cryptography'] = None\n"  # as if not installed
        "import catbird\n"
        "try:\n"
        "    catbird.Wire\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(catbird.__file__).parent.parent)}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    assert "pip install 'catbird[web]'" in out.stdout


async def test_rendering_fans_out_drops_and_passes_raw_events_through():
    wire = Wire("postgresql://unused", SECRET)

    async def loud(request: WireRequest, topic: str, data: str | None) -> SSEEvent:
        return SSEEvent(event="loud", data=(data or "").upper())

    def broken(request: WireRequest, topic: str, data: str | None) -> SSEEvent:
        raise RuntimeError("boom")

    wire.render("a.*", lambda request, topic, data: SSEEvent(data=f"{request.identity}:{data}"))
    wire.render("a.#", loud).render("a.x", broken).render("a.y", lambda r, t, d: None)
    claims = wire.verify(wire.token(["#"], identity="ann"))
    request = WireRequest("/", {}, {}, "ann", claims.topics, {})

    async def render(topic: str, data: str | None, **kw: Any) -> list[tuple[Any, ...]]:
        pairs = await wire.rendered(request, kw.get("claims", claims), topic, data, kw.get("id"))
        return [(e.event, e.data, e.id, t) for e, t in pairs]

    assert await render("a.x", "hi") == [
        (None, "ann:hi", None, "a.x"),
        ("loud", "HI", None, "a.x"),
    ]
    assert await render("a.y", "hi", id="7") == [
        (None, "ann:hi", "7", "a.y"),
        ("loud", "HI", "7", "a.y"),
    ]
    assert await render("b.x", "hi") == []  # no renderer: not for browsers
    raw = wire.verify(wire.token(["#"], raw=True))
    assert await render("b.x", "hi", claims=raw) == [(None, "hi", None, "b.x")]
    wire.raw = True
    assert await render("b.x", None) == [(None, "", None, "b.x")]
