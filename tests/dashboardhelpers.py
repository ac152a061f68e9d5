"""Helpers of the dashboard tests: a seeded database and a served app.

:func:`seed` fills a test database with what every dashboard page shows:
queues with messages (one of them a dead letter), tasks with runs in several
states (a failed one with a traceback), a flow with a diamond graph and a
map step (one run in progress, one failed), schedules and a worker.
:func:`serve` runs an ASGI app with uvicorn in a thread on a free port.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import uvicorn

from sqlhelpers import HIDE, J, call, fn

TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "jobs.py", line 12, in send_email\n'
    "    smtp.send(to)\n"
    "SMTPRecipientsRefused: 550 mailbox <user1@example.com> unavailable"
)

CHECKOUT_STEPS = [
    {"name": "fetch"},
    {"name": "price", "depends_on": [{"name": "fetch"}]},
    {"name": "stock", "depends_on": [{"name": "fetch"}]},
    {
        "name": "items",
        "depends_on": [{"name": "fetch"}],
        "step_type": "mapper",
        "map_source_step_name": "fetch",
    },
    {"name": "confirm", "depends_on": [{"name": "price"}, {"name": "stock"}, {"name": "items"}]},
]


@dataclass(frozen=True)
class Seeded:
    completed_run: int
    failed_run: int
    started_run: int
    queued_run: int
    flow_run: int
    failed_flow_run: int
    worker: uuid.UUID


def _claim_step(conn: psycopg.Connection, step: str) -> dict[str, Any]:
    (claim,) = call(
        conn, "cb_claim_steps", flow_name="checkout", step_name=step, quantity=1, hide_for=HIDE
    )
    return claim


def _complete_step(conn: psycopg.Connection, step: str, output: Any) -> None:
    claim = _claim_step(conn, step)
    fn(
        conn,
        "cb_complete_step",
        flow_name="checkout",
        step_name=step,
        id=claim["id"],
        output=J(output),
        attempt=claim["attempts"],
    )


def seed(conn: psycopg.Connection) -> Seeded:
    # queues: a dead letter, moved after its lease lapsed (sent two minutes
    # ago on the engine clock), then live messages
    fn(conn, "cb_create_queue", name="orders_dlq", description="dead letters of orders")
    fn(conn, "cb_create_queue", name="orders", max_deliveries=1, dead_letter_queue="orders_dlq")
    fn(conn, "cb_create_queue", name="emails")
    conn.execute(
        "SELECT set_config('catbird.fake_now', (now() - interval '2 minutes')::text, false)"
    )
    fn(conn, "cb_send", queue="orders", body=J({"order": "poison"}))
    call(conn, "cb_read", queue="orders", quantity=1, hide_for=1000)
    conn.execute("RESET catbird.fake_now")
    assert call(conn, "cb_read", queue="orders", quantity=1, hide_for=HIDE) == []
    for i in range(3):
        fn(conn, "cb_send", queue="orders", body=J({"order": i, "total": 10 * i}))
    fn(
        conn,
        "cb_send",
        queue="emails",
        body=J({"to": "a@example.com", "html": "<script>alert(1)</script>"}),
    )
    # tasks: completed, failed with a traceback, started, queued
    fn(conn, "cb_create_task", name="send_email", description="Send one email")
    fn(conn, "cb_create_task", name="resize")
    runs = [
        fn(conn, "cb_run_task", name="send_email", input=J({"to": f"user{i}@example.com"}))
        for i in range(4)
    ]
    claims = call(conn, "cb_claim_tasks", name="send_email", quantity=3, hide_for=HIDE)
    assert [c["id"] for c in claims] == runs[:3]
    fn(conn, "cb_complete_task", name="send_email", run_id=runs[0], output=J({"sent": True}))
    fn(
        conn,
        "cb_fail_task",
        name="send_email",
        run_id=runs[1],
        error_message="SMTP 550: mailbox unavailable",
        max_retries=0,
        error_detail=TRACEBACK,
    )
    fn(conn, "cb_run_task", name="resize", input=J({"image": "cat.png"}))
    # a flow: fetch -> (price, stock, items[map]) -> confirm
    fn(
        conn,
        "cb_create_flow",
        name="checkout",
        description="Check an order out",
        steps=J(CHECKOUT_STEPS),
    )
    flow_run = fn(conn, "cb_run_flow", name="checkout", input=J({"order": 7}))
    _complete_step(conn, "fetch", ["apple", "pear", "plum"])
    _complete_step(conn, "price", {"total": 42})
    _claim_step(conn, "stock")  # started, its worker busy
    (item,) = call(
        conn,
        "cb_claim_map_tasks",
        flow_name="checkout",
        step_name="items",
        quantity=1,
        hide_for=HIDE,
    )
    fn(
        conn,
        "cb_complete_map_tasks",
        flow_name="checkout",
        step_name="items",
        ids=[item["id"]],
        outputs=[J("APPLE")],
    )
    failed_flow_run = fn(conn, "cb_run_flow", name="checkout", input=J({"order": 8}))
    _complete_step(conn, "fetch", ["fig"])
    stock = _claim_step(conn, "stock")
    fn(
        conn,
        "cb_fail_step",
        flow_name="checkout",
        step_name="stock",
        id=stock["id"],
        error_message="out of stock",
        attempt=stock["attempts"],
        max_retries=0,
    )
    # schedules and a worker
    fn(conn, "cb_create_task_schedule", task_name="resize", cron_spec="*/5 * * * *")
    fn(conn, "cb_create_flow_schedule", flow_name="checkout", cron_spec="0 9 * * 1-5")
    worker = uuid.uuid4()
    fn(
        conn,
        "cb_worker_started",
        id=worker,
        task_handlers=J([{"task_name": "send_email"}]),
        step_handlers=J([{"flow_name": "checkout", "step_name": "fetch"}]),
    )
    return Seeded(runs[0], runs[1], runs[2], runs[3], flow_run, failed_flow_run, worker)


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        # a condition wait: until uvicorn says it serves, or its thread died
        while not server.started:
            assert thread.is_alive(), "uvicorn did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join()
        sock.close()
