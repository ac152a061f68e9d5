"""Reader / AsyncReader loops: ack on success, nack on exception, graceful stop."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from catbird import AsyncClient, AsyncReader, Client, Message, NotFound, Reader


def read_later(conn: psycopg.Connection[Any], queue: str, seconds: float) -> list[Message]:
    """Read every message as seen ``seconds`` from now (engine clock pinned on ``conn``)."""
    ts = datetime.now(UTC) + timedelta(seconds=seconds)
    conn.execute("SELECT set_config('catbird.fake_now', %s, false)", [ts.isoformat()])
    try:
        return Client(conn).read(queue, quantity=100, hide_for=3600.0)
    finally:
        conn.execute("SELECT set_config('catbird.fake_now', '', false)")


@pytest.fixture
def client(dsn: str) -> Any:
    with Client.connect(dsn) as c:
        c.create_queue("jobs")
        yield c


def run_in_thread(reader: Reader) -> threading.Thread:
    t = threading.Thread(target=reader.run, daemon=True)
    t.start()
    return t


def test_reader_acks_handled_messages_in_batches(client: Client, dsn: str) -> None:
    ids = client.send_many("jobs", [f"m{i}" for i in range(25)])
    seen: list[int] = []
    done = threading.Event()

    def handler(msg: Message) -> None:
        seen.append(msg.id)
        if len(seen) == 25:
            done.set()

    with Client.connect(dsn) as own:
        reader = own.reader("jobs", handler, quantity=10, hide_for=30.0, poll_for=0.2)
        assert isinstance(reader, Reader)
        t = run_in_thread(reader)
        assert done.wait(10)
        reader.stop()
        t.join(5)
        assert not t.is_alive()
    assert seen == ids  # one reader: priority then age
    assert (reader.acked, reader.nacked) == (25, 0)
    assert client.get_queue("jobs").depth == 0


def test_reader_nack_leaves_message_hidden_until_hide_for(
    client: Client, conn: psycopg.Connection[Any]
) -> None:
    good, bad = client.send_many("jobs", [{"ok": True}, {"ok": False}])
    calls: list[int] = []

    def handler(msg: Message) -> None:
        calls.append(msg.id)
        if len(calls) == 2:
            reader.stop()
        if not msg.body["ok"]:
            raise RuntimeError("boom")

    reader = client.reader("jobs", handler, quantity=10, hide_for=30.0, poll_for=0.2)
    reader.run()  # the handler stops it after the second message
    assert calls == [good, bad]
    assert (reader.acked, reader.nacked) == (1, 1)
    info = client.get_queue("jobs")
    assert (info.depth, info.visible) == (1, 0)  # still hidden
    assert read_later(conn, "jobs", 25.0) == []
    (again,) = read_later(conn, "jobs", 31.0)
    assert (again.id, again.deliveries) == (bad, 2)


def test_reader_nack_delay_retries_sooner(client: Client) -> None:
    mid = client.send("jobs", "flaky")
    deliveries: list[int] = []

    def handler(msg: Message) -> None:
        deliveries.append(msg.deliveries)
        if msg.deliveries == 1:
            raise ValueError("first try fails")
        reader.stop()

    reader = client.reader("jobs", handler, hide_for=3600.0, poll_for=0.2, nack_delay=0.001)
    t = run_in_thread(reader)
    t.join(10)
    assert not t.is_alive()
    assert deliveries == [1, 2]  # without nack_delay the retry would wait an hour
    assert client.delete("jobs", mid) is False  # acked on the second delivery
    assert client.get_queue("jobs").depth == 0


def test_stop_finishes_in_flight_message_and_releases_the_rest(
    client: Client, conn: psycopg.Connection[Any]
) -> None:
    a, b, c = client.send_many("jobs", ["a", "b", "c"])
    handled: list[int] = []

    def handler(msg: Message) -> None:
        reader.stop()  # stop requested while this message is in flight
        time.sleep(0.05)
        handled.append(msg.id)

    reader = client.reader("jobs", handler, quantity=10, hide_for=3600.0, poll_for=0.2)
    reader.run()
    assert handled == [a]
    assert reader.stopping
    # a was acked; b and c were released: readable again right away
    rest = read_later(conn, "jobs", 0.01)
    assert [(m.id, m.deliveries) for m in rest] == [(b, 2), (c, 2)]


def test_stop_before_run_returns_at_once(client: Client) -> None:
    client.send("jobs", 1)
    reader = client.reader("jobs", lambda m: None)
    reader.stop()
    reader.run()
    assert client.get_queue("jobs").visible == 1


def test_stop_latency_is_bounded_by_poll_for(client: Client) -> None:
    reader = client.reader("jobs", lambda m: None, poll_for=0.3)
    t = run_in_thread(reader)
    time.sleep(0.1)
    t0 = time.monotonic()
    reader.stop()
    t.join(5)
    assert not t.is_alive()
    assert time.monotonic() - t0 < 2.0


def test_base_exception_flushes_acks_and_releases_unhandled(
    client: Client, conn: psycopg.Connection[Any]
) -> None:
    class Interrupt(BaseException):
        pass

    a, b, c = client.send_many("jobs", ["a", "b", "c"])

    def handler(msg: Message) -> None:
        if msg.id == b:
            raise Interrupt

    reader = client.reader("jobs", handler, quantity=10, hide_for=3600.0, poll_for=0.2)
    with pytest.raises(Interrupt):
        reader.run()
    assert client.delete("jobs", a) is False  # a was acked before the interrupt
    assert [m.id for m in read_later(conn, "jobs", 0.01)] == [b, c]


def test_database_errors_propagate(client: Client) -> None:
    reader = client.reader("missing", lambda m: None, poll_for=0.1)
    with pytest.raises(NotFound):
        reader.run()


def test_reader_over_a_pool_with_two_readers(dsn: str, client: Client) -> None:
    client.send_many("jobs", list(range(40)))
    seen: list[int] = []
    lock = threading.Lock()
    done = threading.Event()

    def handler(msg: Message) -> None:
        with lock:
            seen.append(msg.body)
            if len(seen) == 40:
                done.set()

    with ConnectionPool(dsn, min_size=2, max_size=4, open=True) as pool:
        pooled = Client(pool)
        readers = [pooled.reader("jobs", handler, quantity=3, poll_for=0.2) for _ in range(2)]
        threads = [run_in_thread(r) for r in readers]
        assert done.wait(10)
        for r in readers:
            r.stop()
        for t in threads:
            t.join(5)
            assert not t.is_alive()
    assert sorted(seen) == list(range(40))  # each exactly once
    assert client.get_queue("jobs").depth == 0


# ---------------------------------------------------------------- async


async def test_async_reader_with_async_handler(dsn: str) -> None:
    async with await AsyncClient.connect(dsn) as client:
        await client.create_queue("jobs")
        ids = await client.send_many("jobs", [{"ok": True}, {"ok": False}, {"ok": True}])
        seen: list[int] = []

        async def handler(msg: Message) -> None:
            await asyncio.sleep(0)
            seen.append(msg.id)
            if not msg.body["ok"]:
                raise RuntimeError("nope")

        async with await AsyncClient.connect(dsn) as own:
            reader = own.reader("jobs", handler, quantity=10, hide_for=30.0, poll_for=0.2)
            assert isinstance(reader, AsyncReader)
            task = asyncio.create_task(reader.run())
            for _ in range(200):
                if len(seen) == 3:
                    break
                await asyncio.sleep(0.05)
            reader.stop()
            await asyncio.wait_for(task, 5)
        assert seen == ids
        assert (reader.acked, reader.nacked) == (2, 1)
        info = await client.get_queue("jobs")
        assert (info.depth, info.visible) == (1, 0)  # the nacked one, still hidden


async def test_async_reader_runs_sync_handler_in_a_thread(dsn: str) -> None:
    async with await AsyncClient.connect(dsn) as client:
        await client.create_queue("jobs")
        mid = await client.send("jobs", "x")
        loop_thread = threading.get_ident()
        threads: list[int] = []

        def handler(msg: Message) -> None:
            threads.append(threading.get_ident())
            reader.stop()

        reader = client.reader("jobs", handler, poll_for=0.2, nack_delay=0.001)
        await asyncio.wait_for(reader.run(), 5)
        assert threads and threads[0] != loop_thread
        assert await client.delete("jobs", mid) is False  # acked


async def test_async_reader_nack_delay_and_stop_releases(dsn: str) -> None:
    async with await AsyncClient.connect(dsn) as client:
        await client.create_queue("jobs")
        a, b = await client.send_many("jobs", ["a", "b"])
        deliveries: list[tuple[int, int]] = []

        async def handler(msg: Message) -> None:
            deliveries.append((msg.id, msg.deliveries))
            if msg.deliveries == 1:
                raise RuntimeError("retry me")
            reader.stop()

        reader = client.reader(
            "jobs", handler, quantity=1, hide_for=3600.0, poll_for=0.2, nack_delay=0.001
        )
        await asyncio.wait_for(reader.run(), 10)
        # one message per round: a fails (visible again 1 ms later), b (older
        # visible_at) fails, then a succeeds and stops the reader
        assert deliveries == [(a, 1), (b, 1), (a, 2)]
        assert (reader.acked, reader.nacked) == (1, 2)
        assert (await client.get_queue("jobs")).depth == 1
