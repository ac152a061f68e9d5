"""The Wire's HTTP side, over real HTTP: uvicorn on 127.0.0.1 serves one
node's ASGI app, httpx streams from it, and a second node (in the test's own
event loop) notifies and asks for presence, as another process would."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from collections.abc import AsyncIterator, Iterator

import httpx
import psycopg
import pytest

from catbird.wire import SSEEvent, Wire, WireRequest
from sqlhelpers import fn, scalar
from wirehelpers import serve, sse_stream

SECRET = bytes(range(32))


def render_chat(request: WireRequest, topic: str, data: str | None) -> SSEEvent:
    return SSEEvent(event="chat", data=f"{request.identity}<-{topic}:{data}")


@pytest.fixture
def server_wire(dsn: str) -> Wire:
    wire = Wire(dsn, SECRET, sse_heartbeat=0.5)
    wire.render("chat.*", render_chat)
    wire.render("drop.*", lambda request, topic, data: None)
    return wire


@pytest.fixture
def url(server_wire: Wire) -> Iterator[str]:
    with serve(server_wire.asgi_app()) as base:
        yield base + "/events"


@pytest.fixture
async def other(dsn: str) -> AsyncIterator[Wire]:
    async with Wire(dsn, SECRET) as wire:
        yield wire


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=30.0)) as client:
        yield client


async def test_events_are_rendered_per_connection_and_multi_line_data_survives(url, other, http):
    token = other.token(["chat.#"], identity="ann")
    async with sse_stream(http, url, params={"token": token}) as sse:
        assert sse.response.headers["content-type"].startswith("text/event-stream")
        await other.notify("chat.room1", "hello\nsecond line\r\nthird")
        events = await sse.events_until(1)
    assert [(e.event, e.data, e.id) for e in events] == [
        ("chat", "ann<-chat.room1:hello\nsecond line\nthird", None)
    ]


async def test_a_plain_cb_notify_reaches_browsers_and_the_bearer_header_works(
    url, other, http, dsn
):
    token = other.token(["chat.#"])
    async with sse_stream(http, url, headers={"Authorization": f"Bearer {token}"}) as sse:
        with psycopg.connect(dsn, autocommit=True) as conn:
            fn(conn, "cb_notify", topic="chat.lobby", data="from sql")
        events = await sse.events_until(1)
    assert [(e.event, e.data) for e in events] == [("chat", "None<-chat.lobby:from sql")]


async def test_only_the_tokens_topics_with_a_renderer_reach_the_browser(url, other, http):
    token = other.token(["chat.room1", "other.#", "drop.#"])
    raw_token = other.token(["other.#"], raw=True)
    async with (
        sse_stream(http, url, params={"token": token}) as sse,
        sse_stream(http, url, params={"token": raw_token}) as raw,
    ):
        await other.notify("chat.room2", "not in the token")
        await other.notify("other.x", "no renderer")
        await other.notify("drop.x", "renderer says no")
        await other.notify("chat.room1", "last")
        await other.notify("other.y", "raw\ntwo lines")
        events = await sse.events_until(1)
        raw_events = await raw.events_until(2)
        await asyncio.sleep(0.3)
    assert [(e.event, e.data) for e in sse.events] == [("chat", "None<-chat.room1:last")]
    assert [(e.event, e.data) for e in raw_events] == [
        ("other.x", "no renderer"),
        ("other.y", "raw\ntwo lines"),
    ]
    assert len(events) == 1


async def test_idle_streams_get_heartbeat_comments(url, other, http):
    async with sse_stream(http, url, params={"token": other.token(["chat.#"])}) as sse:
        await sse.until(lambda s: s.comments.count("heartbeat") >= 2, timeout=5.0)


def _tampered(token: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(token + "=="))
    raw[-1] ^= 0x80
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


async def test_bad_tokens_get_401_and_no_stream(url, other, http):
    foreign = Wire("postgresql://unused", bytes(32))
    good = other.token(["chat.#"])
    for params, headers in [
        ({"token": _tampered(good)}, {}),
        ({"token": foreign.token(["chat.#"])}, {}),
        ({"token": other.token(["chat.#"], valid_for=dt.timedelta(seconds=-1))}, {}),
        ({"token": "garbage"}, {}),
        ({}, {}),
        ({}, {"Authorization": "Basic abc"}),
    ]:
        response = await http.get(url, params=params, headers=headers)
        assert response.status_code == 401, params
        assert response.text == "invalid or expired token"
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert (await http.post(url, params={"token": good})).status_code == 405


async def test_presence_follows_connections_across_nodes(url, other, http):
    ann = other.token(["room.1", "room.2"], identity="ann")
    bob = other.token(["room.1"], identity="bob")
    anonymous = other.token(["room.1"])
    async with sse_stream(http, url, params={"token": ann}):
        assert await other.presence("room.1") == ["ann"]
        async with (
            sse_stream(http, url, params={"token": bob}),
            sse_stream(http, url, params={"token": anonymous}),
        ):
            assert await other.presence("room.1") == ["ann", "bob"]
            assert await other.presence("room.2") == ["ann"]
        await _until(other, "room.1", ["ann"])
    await _until(other, "room.1", [])
    assert await other.presence("room.2") == []


async def _until(wire: Wire, topic: str, expected: list[str]) -> None:
    async with asyncio.timeout(10.0):
        while await wire.presence(topic) != expected:
            await asyncio.sleep(0.05)


async def test_a_killed_listen_connection_sends_gap_then_events_flow_again(url, other, http, conn):
    async with sse_stream(http, url, params={"token": other.token(["chat.#"])}) as sse:
        killed = scalar(
            conn,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query = 'LISTEN catbird'"
            " AND pid <> pg_backend_pid()",
        )
        assert killed == 2
        await sse.events_until(1)
        assert sse.events[0].event == "gap"

        async def delivered() -> bool:
            await other.notify("chat.back", "again")
            await asyncio.sleep(0.2)
            return any(e.event == "chat" for e in sse.events)

        async with asyncio.timeout(10.0):
            while not await delivered():
                pass
    assert sse.events[1].data == "None<-chat.back:again"


# --------------------------------------------------------------- durable inbox


def render_alert(request: WireRequest, topic: str, data: str | None) -> SSEEvent:
    return SSEEvent(event="alert", data=f"{topic}:{data}")


@pytest.fixture
def inbox_url(dsn: str) -> Iterator[str]:
    wire = Wire(dsn, SECRET, poll_limit=2)  # small pages: the paging is exercised too
    wire.render("alerts.*", render_alert)
    with serve(wire.asgi_app()) as base:
        yield base + "/events"


def durable(conn: psycopg.Connection, identity: str, topic: str, message: str) -> int:
    return int(fn(conn, "cb_notify_durable", identity=identity, topic=topic, message=message))


async def test_an_inbox_stream_replays_unseen_notifications_then_delivers_live_and_resumes(
    inbox_url, other, http, conn
):
    token = other.token(["alerts.*"], identity="ann", inbox=True)
    first = durable(conn, "ann", "alerts.a", "one")
    durable(conn, "bob", "alerts.a", "not ann's")
    durable(conn, "ann", "other.x", "not in the token")
    second = durable(conn, "ann", "alerts.b", "two")
    async with sse_stream(http, inbox_url, params={"token": token}) as sse:
        await sse.events_until(2)
        third = durable(conn, "ann", "alerts.c", "three")  # live, while connected
        events = await sse.events_until(3)
    assert [(e.event, e.data, e.id) for e in events] == [
        ("alert", "alerts.a:one", str(first)),
        ("alert", "alerts.b:two", str(second)),
        ("alert", "alerts.c:three", str(third)),
    ]
    # Offline: two more arrive, and the first one is marked seen by the app.
    fourth = durable(conn, "ann", "alerts.d", "four")
    fifth = durable(conn, "ann", "alerts.e", "five")
    fn(conn, "cb_mark_seen", identity="ann", ids=[fourth])
    headers = {"Last-Event-ID": str(third)}
    async with sse_stream(http, inbox_url, params={"token": token}, headers=headers) as sse:
        resumed = await sse.events_until(1)
        await asyncio.sleep(0.3)
    assert [(e.data, e.id) for e in resumed] == [("alerts.e:five", str(fifth))]


async def test_polling_reads_the_inbox_after_a_cursor(inbox_url, other, http, conn):
    poll = inbox_url + "/poll"
    token = other.token(["alerts.*"], identity="ann", inbox=True)
    ids = [durable(conn, "ann", f"alerts.n{i}", str(i)) for i in range(3)]
    durable(conn, "ann", "other.x", "not in the token")
    page = (await http.get(poll, params={"token": token})).json()
    assert page == {
        "events": [
            {"id": str(ids[0]), "event": "alert", "data": "alerts.n0:0"},
            {"id": str(ids[1]), "event": "alert", "data": "alerts.n1:1"},
        ],
        "cursor": ids[1],
        "more": True,
    }
    page = (await http.get(poll, params={"token": token, "after": page["cursor"]})).json()
    assert [e["data"] for e in page["events"]] == ["alerts.n2:2"]
    assert page["more"] is True  # the page was full: the next one is empty
    page = (await http.get(poll, params={"token": token, "after": page["cursor"]})).json()
    assert page["events"] == [] and page["more"] is False
    last = page["cursor"]
    assert (await http.get(poll, params={"token": token, "after": last})).json() == {
        "events": [],
        "cursor": last,
        "more": False,
    }
    # Nothing was marked seen by polling.
    assert scalar(conn, "SELECT count(*) FROM catbird.cb_notifications WHERE seen_at IS NULL") == 4


async def test_polling_refuses_bad_cursors_tokens_without_an_inbox_and_bad_tokens(
    inbox_url, other, http
):
    poll = inbox_url + "/poll"
    token = other.token(["alerts.*"], identity="ann", inbox=True)
    for after in ("-1", "x", "1.5", "9" * 30):
        response = await http.get(poll, params={"token": token, "after": after})
        assert response.status_code == 400 and "after must be" in response.text
    response = await http.get(poll, params={"token": other.token(["alerts.*"], identity="ann")})
    assert response.status_code == 400 and "inbox=True" in response.text
    assert (await http.get(poll, params={"token": _tampered(token)})).status_code == 401
