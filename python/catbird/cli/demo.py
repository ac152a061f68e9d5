"""The README quick start as a runnable demo (``catbird demo``).

:func:`run_demo` drives a real database through :class:`catbird.Client` —
queues, topic bindings, priorities, deduplication by concurrency key,
publishing, reading with a visibility window, acking — and narrates each step
on a rich console, showing the Python call that does it. It works on any
database with catbird installed; it only touches the queues ``demo_orders``
and ``demo_audit`` (recreated from scratch) and leaves them behind so that
``catbird queue ls`` has something to show.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..client.client import Client
from ..models import Message

__all__ = ["AUDIT_QUEUE", "ORDERS_QUEUE", "DemoResult", "run_demo"]

ORDERS_QUEUE = "demo_orders"
AUDIT_QUEUE = "demo_audit"
HIDE_FOR = 30.0


@dataclass
class DemoResult:
    """What the demo did, for tests and ``catbird demo --json``."""

    queues: list[str]
    bindings: dict[str, str]
    """queue → pattern"""
    sent: list[int]
    """ids of the messages sent to ``demo_orders``, in order (the dedup send's id last)"""
    deduplicated: bool
    """whether the second send with the same concurrency key returned the first one's id"""
    deliveries: dict[str, int]
    """topic → number of deliveries of its publish"""
    read: list[int]
    """ids read from ``demo_orders``, in the order they came (priority, then age)"""
    read_while_hidden: int
    """messages a second read got while the first read's window was open (0)"""
    acked: list[int]
    remaining: dict[str, int] = field(default_factory=dict)
    """queue → depth at the end"""


def _call(text: str) -> str:
    return f"[dim]>>>[/] [cyan]{escape(text)}[/]"


def _js(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _messages_table(messages: list[Message]) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("id", justify="right", style="bold")
    table.add_column("priority", justify="right")
    table.add_column("deliveries", justify="right")
    table.add_column("topic")
    table.add_column("key")
    table.add_column("body")
    for m in messages:
        table.add_row(
            str(m.id),
            str(m.priority),
            str(m.deliveries),
            escape(m.topic or "-"),
            escape(m.concurrency_key or "-"),
            escape(_js(m.body)),
        )
    return table


def _depths_table(client: Client, names: list[str]) -> tuple[Table, dict[str, int]]:
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("queue", style="bold")
    table.add_column("depth", justify="right")
    table.add_column("visible", justify="right")
    depths: dict[str, int] = {}
    for name in names:
        info = client.get_queue(name)
        depths[name] = info.depth
        table.add_row(escape(name), str(info.depth), str(info.visible))
    return table, depths


def run_demo(client: Client, out: Console) -> DemoResult:
    """Run the quick start against ``client``'s database, narrating on ``out``."""
    queues = [ORDERS_QUEUE, AUDIT_QUEUE]
    out.print("[bold]catbird demo[/]: queues, topics, priorities, dedup, visibility, acks.")

    removed = [name for name in queues if client.delete_queue(name)]
    if removed:
        out.print(f"[dim](removed the queues of an earlier demo run: {', '.join(removed)})[/]")

    # 1. queues --------------------------------------------------------------
    out.rule("[bold]1. Create two queues")
    client.create_queue(ORDERS_QUEUE, description="orders to fulfil (catbird demo)")
    out.print(_call(f'client.create_queue("{ORDERS_QUEUE}", description=...)'))
    client.create_queue(AUDIT_QUEUE, description="every shop event (catbird demo)")
    out.print(_call(f'client.create_queue("{AUDIT_QUEUE}", description=...)'))
    out.print("Creating a queue that exists is a no-op, so this is safe at every start-up.")

    # 2. bindings ------------------------------------------------------------
    out.rule("[bold]2. Bind them to topic patterns")
    bindings = {ORDERS_QUEUE: "shop.order.*", AUDIT_QUEUE: "shop.#"}
    for name, pattern in bindings.items():
        client.bind(name, pattern)
        out.print(_call(f'client.bind("{name}", "{pattern}")'))
    out.print("'*' matches exactly one token, a trailing '#' any number of tokens.")

    # 3. sends -----------------------------------------------------------------
    out.rule("[bold]3. Send messages (priority, concurrency key)")
    sent: list[int] = []
    body1 = {"order": 1, "item": "coffee beans"}
    sent.append(client.send(ORDERS_QUEUE, body1))
    out.print(_call(f'client.send("{ORDERS_QUEUE}", {_js(body1)})') + f"  → id {sent[-1]}")
    body2 = {"order": 2, "item": "espresso machine", "express": True}
    sent.append(client.send(ORDERS_QUEUE, body2, priority=10))
    out.print(
        _call(f'client.send("{ORDERS_QUEUE}", {_js(body2)}, priority=10)') + f"  → id {sent[-1]}"
    )
    body3 = {"order": 3, "item": "milk frother"}
    sent.append(client.send(ORDERS_QUEUE, body3, concurrency_key="order-3"))
    out.print(
        _call(f'client.send("{ORDERS_QUEUE}", {_js(body3)}, concurrency_key="order-3")')
        + f"  → id {sent[-1]}"
    )
    again = client.send(ORDERS_QUEUE, {**body3, "retry": True}, concurrency_key="order-3")
    out.print(
        _call(f'client.send("{ORDERS_QUEUE}", {{... "retry": true}}, concurrency_key="order-3")')
        + f"  → id {again}"
    )
    deduplicated = again == sent[-1]
    if deduplicated:
        out.print(
            f"[green]Deduplicated:[/] key 'order-3' is held by live message {again}, "
            "so the second send wrote nothing and returned that message's id."
        )
    else:
        out.print(f"[yellow]The second send created message {again} (no dedup?)[/]")
    sent.append(again)

    # 4. publish ---------------------------------------------------------------
    out.rule("[bold]4. Publish to topics")
    deliveries: dict[str, int] = {}
    for topic, body in (
        ("shop.order.created", {"order": 4, "item": "grinder"}),
        ("shop.customer.signup", {"customer": "ada"}),
    ):
        deliveries[topic] = client.publish(topic, body)
        out.print(
            _call(f'client.publish("{topic}", {_js(body)})')
            + f"  → {deliveries[topic]} deliver{'y' if deliveries[topic] == 1 else 'ies'}"
        )
    out.print(
        f"'shop.order.created' matches both patterns; 'shop.customer.signup' only "
        f"{AUDIT_QUEUE}'s 'shop.#'."
    )
    table, _ = _depths_table(client, queues)
    out.print(table)

    # 5. read ------------------------------------------------------------------
    out.rule("[bold]5. Read with a visibility window")
    messages = client.read(ORDERS_QUEUE, quantity=10, hide_for=HIDE_FOR)
    out.print(
        _call(f'client.read("{ORDERS_QUEUE}", quantity=10, hide_for={HIDE_FOR:g})')
        + f"  → {len(messages)} message(s), highest priority first, then oldest:"
    )
    out.print(_messages_table(messages))
    hidden = client.read(ORDERS_QUEUE, quantity=10, hide_for=HIDE_FOR)
    out.print(
        _call(f'client.read("{ORDERS_QUEUE}", quantity=10, hide_for={HIDE_FOR:g})')
        + f"  → {len(hidden)} message(s)"
    )
    out.print(
        f"They are hidden for {HIDE_FOR:g} s: no other reader gets them meanwhile. "
        "Not acked in time, they become visible again (at-least-once delivery)."
    )

    # 6. ack -------------------------------------------------------------------
    out.rule("[bold]6. Ack (delete) what was processed")
    acked = client.delete(ORDERS_QUEUE, [m.id for m in messages])
    out.print(
        _call(f'client.delete("{ORDERS_QUEUE}", [m.id for m in msgs])') + f"  → deleted {acked}"
    )
    table, remaining = _depths_table(client, queues)
    out.print(table)

    out.rule("[bold]Done")
    out.print(
        "Next: [bold]catbird dev[/] for a server that stays up, "
        "[bold]export CATBIRD_DSN=...[/], then [bold]catbird queue ls[/], "
        "[bold]catbird queue read demo_audit --ack[/] …"
    )
    return DemoResult(
        queues=queues,
        bindings=bindings,
        sent=sent,
        deduplicated=deduplicated,
        deliveries=deliveries,
        read=[m.id for m in messages],
        read_while_hidden=len(hidden),
        acked=acked,
        remaining=remaining,
    )
