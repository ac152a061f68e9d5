"""One JSON codec for every JSON value the package sends.

Queue bodies and headers, published messages, task and flow inputs and
signals all go through :func:`catbird.codec.dumps`: a value that works as a
task input works as a queue body, with the same JSON. Round trips run
against the real database.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
import pytest

from catbird import AsyncClient, Client, _sql
from catbird.codec import dumps, to_json_value

AT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
ID = UUID("12345678-1234-5678-1234-567812345678")


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Address:
    city: str
    since: date


@dataclasses.dataclass
class Order:
    id: UUID
    at: datetime
    total: Decimal
    address: Address
    color: Color
    tags: tuple[str, ...] = ()


ORDER = Order(ID, AT, Decimal("12.50"), Address("Oslo", date(2029, 5, 6)), Color.RED, ("a",))
ORDER_JSON = {
    "id": str(ID),
    "at": "2030-01-02T03:04:05+00:00",
    "total": "12.50",
    "address": {"city": "Oslo", "since": "2029-05-06"},
    "color": "red",
    "tags": ["a"],
}


def test_dumps_matches_the_deep_conversion() -> None:
    values: list[Any] = [
        ORDER,
        [ORDER, {"k": ORDER}],
        {ID: 1, Color.RED: AT, date(2029, 1, 1): [1, 2]},  # keys json refuses
        {"plain": [1, 2.5, None, True, "x"]},
        frozenset({3}),
    ]
    for value in values:
        assert json.loads(dumps(value)) == to_json_value(value)
    assert json.loads(dumps(ORDER)) == ORDER_JSON


def test_every_jsonb_statement_uses_the_codec() -> None:
    def texts(query: _sql.Query[Any], *keys: str) -> list[Any]:
        out: list[Any] = []
        for key in keys:
            value = query.params[key]
            items = value if isinstance(value, list) else [value]
            out += [json.loads(dumps(item.obj)) for item in items]
            assert all(item.dumps is dumps for item in items)
        return out

    assert texts(_sql.send("q", ORDER, headers={"at": AT}), "body", "headers") == [
        ORDER_JSON,
        {"at": "2030-01-02T03:04:05+00:00"},
    ]
    assert texts(_sql.send_many("q", [ORDER], headers=[{"o": ORDER}]), "bodies", "headers") == [
        ORDER_JSON,
        {"o": ORDER_JSON},
    ]
    assert texts(_sql.publish("t", ORDER), "body") == [ORDER_JSON]
    assert texts(_sql.publish_many("t", [ORDER]), "bodies") == [ORDER_JSON]
    assert texts(_sql.run_task("t", ORDER), "input") == [ORDER_JSON]
    assert texts(_sql.run_flows("f", [ORDER]), "inputs") == [ORDER_JSON]
    assert texts(_sql.complete_task("t", 1, ORDER), "output") == [ORDER_JSON]
    assert texts(_sql.signal_flow("f", 1, "s", ORDER), "input") == [ORDER_JSON]


@pytest.fixture
def client(conn: psycopg.Connection[Any]) -> Client:
    client = Client(conn)
    client.create_queue("orders")
    return client


def test_queue_bodies_round_trip_through_the_codec(client: Client) -> None:
    client.send("orders", ORDER, headers={"at": AT, "id": ID})
    client.send_many("orders", [ORDER, Address("Rome", date(2030, 1, 1))])
    first, second, third = client.read("orders", quantity=10)
    assert first.body == ORDER_JSON
    assert first.headers == {"at": "2030-01-02T03:04:05+00:00", "id": str(ID)}
    assert second.body == ORDER_JSON
    assert third.body == {"city": "Rome", "since": "2030-01-01"}


def test_published_bodies_round_trip_through_the_codec(client: Client) -> None:
    client.bind("orders", "orders.*")
    assert client.publish("orders.new", ORDER, headers={"o": Address("Oslo", date(2030, 1, 1))})
    assert client.publish_many("orders.new", [ORDER, {"at": AT}]) == 2
    messages = client.read("orders", quantity=10)
    assert [m.body for m in messages] == [
        ORDER_JSON,
        ORDER_JSON,
        {"at": "2030-01-02T03:04:05+00:00"},
    ]
    assert messages[0].headers == {"o": {"city": "Oslo", "since": "2030-01-01"}}


def test_a_task_input_and_a_queue_body_encode_alike(client: Client) -> None:
    client.create_task("ship")
    handle = client.run_task("ship", ORDER)
    client.send("orders", ORDER)
    (message,) = client.read("orders")
    assert client.get_task_run("ship", handle.id).input == message.body == ORDER_JSON


async def test_async_client_sends_through_the_codec(aconn: psycopg.AsyncConnection[Any]) -> None:
    client = AsyncClient(aconn)
    await client.create_queue("orders")
    await client.send("orders", ORDER)
    (message,) = await client.read("orders")
    assert message.body == ORDER_JSON


def test_values_jsonb_cannot_hold_are_refused(client: Client) -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        client.send("orders", {"x": object()})
    with pytest.raises(ValueError, match="NaN"):
        client.send("orders", Address("x", date(2030, 1, 1)).__dict__ | {"n": float("nan")})
