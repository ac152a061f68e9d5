"""The dashboard over HTTP (Starlette's TestClient and a served app with
httpx): every page renders from a seeded database, links honour the mount
prefix, the auth hook and the CSRF guard refuse, bad input is a 400 and
unknown objects a 404, actions change the database, and the event stream
sends engine events and heartbeats from one LISTEN connection."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from catbird.dashboard import create_dashboard
from catbird.dashboard.dag import layers, layout
from catbird.dashboard.events import LISTENER_NAME, RunEvent, parse_event
from catbird.models import StepInfo
from dashboardhelpers import TRACEBACK, Seeded, seed, serve
from sqlhelpers import J, fn, scalar


@pytest.fixture
def seeded(conn: psycopg.Connection) -> Seeded:
    return seed(conn)


@pytest.fixture
def client(dsn: str, seeded: Seeded) -> Iterator[TestClient]:
    with TestClient(create_dashboard(dsn)) as test_client:
        yield test_client


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


def _status(conn: psycopg.Connection, run_id: int) -> str:
    return str(scalar(conn, "SELECT status FROM catbird.cb_task_runs WHERE id = %s", (run_id,)))


def test_every_page_renders_the_seeded_state(client: TestClient, seeded: Seeded) -> None:
    page = client.get("/").text
    for text in (
        "orders_dlq",
        "send_email",
        "checkout",
        "*/5 * * * *",
        "send_email, checkout.fetch",
    ):
        assert text in page
    assert str(seeded.worker)[:12] in page
    queue = client.get("/queues/orders_dlq")
    assert queue.status_code == 200
    assert "poison" in queue.text and "Redrive dead letters" in queue.text
    emails = client.get("/queues/emails").text
    # message bodies are escaped, never markup
    assert "<script>alert(1)</script>" not in emails
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in emails
    runs = client.get("/tasks/send_email", params={"status": "failed"}).text
    assert f'data-run="{seeded.failed_run}"' in runs
    assert f'data-run="{seeded.completed_run}"' not in runs
    failed = client.get(f"/tasks/send_email/runs/{seeded.failed_run}").text
    assert "SMTP 550: mailbox unavailable" in failed
    assert "SMTPRecipientsRefused: 550 mailbox &lt;user1@example.com&gt; unavailable" in failed
    assert TRACEBACK.splitlines()[0] in failed and ">Retry</button>" in failed
    flow = client.get(f"/flows/checkout/runs/{seeded.flow_run}").text
    assert '<svg class="dag"' in flow
    assert re.search(r'data-step="items" data-status="waiting_for_map_tasks"', flow)
    assert "1/3" in flow and 'data-step="price" data-status="completed"' in flow
    assert client.get("/flows/checkout").status_code == 200
    assert client.get("/queues/orders/purge").status_code == 200


def test_links_honour_the_mount_prefix(dsn: str, seeded: Seeded) -> None:
    host = Starlette(routes=[Mount("/ops", app=create_dashboard(dsn))])
    with TestClient(host) as test_client:
        page = test_client.get("/ops/").text
        links = re.findall(r'(?:href|src|action|data-events)="([^"#]+)"', page)
        assert links and all(link.startswith("/ops/") for link in links), links
        assert "/ops/static/dashboard.css" in links and "/ops/events" in links
        assert test_client.get("/ops/static/dashboard.css").status_code == 200
        run = test_client.get(f"/ops/tasks/send_email/runs/{seeded.queued_run}").text
        assert f'action="/ops/tasks/send_email/runs/{seeded.queued_run}/cancel"' in run
        response = test_client.post(
            f"/ops/tasks/send_email/runs/{seeded.queued_run}/cancel",
            data={"csrf": _csrf(run)},
            follow_redirects=False,
        )
        assert response.status_code == 303
        assert response.headers["location"].startswith(
            f"/ops/tasks/send_email/runs/{seeded.queued_run}?"
        )


def test_the_auth_hook_denies(dsn: str, conn: psycopg.Connection, seeded: Seeded) -> None:
    def auth(request: Request) -> bool:
        if "authorization" not in request.headers:
            raise HTTPException(401, "log in", headers={"WWW-Authenticate": "Basic"})
        return request.headers["authorization"] == "Basic b3BzOm9wcw=="

    async def deny_async(request: Request) -> bool:
        return False

    def metrics(request: Request) -> PlainTextResponse:
        return PlainTextResponse("runs_total 3\n")

    extra = [Route("/metrics", metrics)]
    with TestClient(create_dashboard(dsn, auth=auth, routes=extra)) as test_client:
        response = test_client.get("/")
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Basic"
        wrong = {"Authorization": "Basic bm86bm8="}
        assert test_client.get("/", headers=wrong).status_code == 403
        post = test_client.post(f"/tasks/send_email/runs/{seeded.queued_run}/cancel", headers=wrong)
        assert post.status_code == 403
        assert _status(conn, seeded.queued_run) == "queued"
        assert test_client.get("/events", headers=wrong).status_code == 403
        ok = {"Authorization": "Basic b3BzOm9wcw=="}
        assert test_client.get("/", headers=ok).status_code == 200
        # routes added to the dashboard sit behind the same hook
        assert test_client.get("/metrics", headers=wrong).status_code == 403
        assert test_client.get("/metrics", headers=ok).text == "runs_total 3\n"
    with TestClient(create_dashboard(dsn, auth=deny_async)) as test_client:
        assert test_client.get("/queues/orders").status_code == 403


def test_csrf_guard_rejects_and_changes_nothing(
    client: TestClient, conn: psycopg.Connection, seeded: Seeded
) -> None:
    path = f"/tasks/send_email/runs/{seeded.queued_run}/cancel"
    token = _csrf(client.get(f"/tasks/send_email/runs/{seeded.queued_run}").text)
    assert client.post(path).status_code == 403
    missing = client.post(path, data={"csrf": "forged"})
    assert missing.status_code == 403 and "CSRF" in missing.text
    foreign = client.post(path, data={"csrf": token}, headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403 and "evil.example" in foreign.text
    purge = client.post("/queues/orders/purge", data={"csrf": "x", "confirm": "orders"})
    assert purge.status_code == 403
    assert _status(conn, seeded.queued_run) == "queued"
    assert scalar(conn, "SELECT count(*) FROM catbird.cb_messages") == 5
    # the token of another dashboard does not open this one
    other = create_dashboard("postgresql://unused")
    assert other.state.dashboard.csrf_token != token


def test_unknown_objects_are_404(client: TestClient, seeded: Seeded) -> None:
    for path in (
        "/tasks/nope",
        "/tasks/send_email/runs/999999",
        "/flows/nope",
        "/flows/checkout/runs/999999",
        "/flows/nope/runs/1",
        "/queues/nope",
        "/queues/nope/purge",
        "/tasks/send_email/runs/abc",
        "/tasks/Bad%20Name",
        "/no/such/page",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
    assert "has no run 999999" in client.get("/tasks/send_email/runs/999999").text


def test_bad_query_parameters_are_400(client: TestClient) -> None:
    cases = {
        "/tasks/send_email?status=done": "invalid status &#39;done&#39;: a task run is one of",
        "/flows/checkout?status=queued": "a flow run is one of started, canceling",
        "/tasks/send_email?before=x": "invalid before &#39;x&#39;: expected a positive integer",
        "/queues/orders?quantity=0": "expected a positive integer",
        "/queues/orders?quantity=5000": "peek at 1 to 1000 messages",
    }
    for path, message in cases.items():
        response = client.get(path)
        assert response.status_code == 400, path
        assert message in response.text, (path, response.text)


def test_cancel_retry_purge_and_redrive_change_the_database(
    client: TestClient, conn: psycopg.Connection, seeded: Seeded
) -> None:
    token = _csrf(client.get(f"/tasks/send_email/runs/{seeded.queued_run}").text)
    response = client.post(
        f"/tasks/send_email/runs/{seeded.queued_run}/cancel", data={"csrf": token}
    )
    assert response.status_code == 200 and "Cancel requested." in response.text
    assert _status(conn, seeded.queued_run) == "canceled"
    ended = client.post(
        f"/tasks/send_email/runs/{seeded.completed_run}/cancel", data={"csrf": token}
    )
    assert "Nothing to cancel" in ended.text
    assert _status(conn, seeded.completed_run) == "completed"
    retried = client.post(f"/tasks/send_email/runs/{seeded.failed_run}/retry", data={"csrf": token})
    assert "The run is queued again." in retried.text
    assert _status(conn, seeded.failed_run) == "queued"
    flow = client.post(f"/flows/checkout/runs/{seeded.failed_flow_run}/retry", data={"csrf": token})
    assert "The run is queued again." in flow.text
    assert (
        scalar(
            conn, "SELECT status FROM catbird.cb_flow_runs WHERE id = %s", (seeded.failed_flow_run,)
        )
        == "started"
    )
    client.post(f"/flows/checkout/runs/{seeded.flow_run}/cancel", data={"csrf": token})
    assert scalar(
        conn, "SELECT status FROM catbird.cb_flow_runs WHERE id = %s", (seeded.flow_run,)
    ) in ("canceling", "canceled")
    # purge needs the typed confirmation
    unconfirmed = client.post("/queues/orders/purge", data={"csrf": token, "confirm": "x"})
    assert unconfirmed.status_code == 400
    assert scalar(conn, "SELECT count(*) FROM catbird.cb_messages") == 5
    purged = client.post("/queues/orders/purge", data={"csrf": token, "confirm": "orders"})
    assert "Deleted 3 message(s)." in purged.text
    redriven = client.post("/queues/orders_dlq/redrive", data={"csrf": token})
    assert "Moved 1 dead letter(s)" in redriven.text
    bodies = conn.execute(
        "SELECT m.body FROM catbird.cb_messages m JOIN catbird.cb_queues q ON q.id = m.queue_id"
        " WHERE q.name = 'orders'"
    ).fetchall()
    assert bodies == [({"order": "poison"},)]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            json.dumps({"topic": "catbird.task.created", "data": '{"task": "send"}'}),
            ("task", "send", ()),
        ),
        (
            json.dumps({"topic": "catbird.task.completed", "data": '{"task": "x", "run_id": 5}'}),
            ("task", "x", (5,)),
        ),
        (
            json.dumps({"topic": "catbird.flow.failed", "data": '{"flow": "f", "run_ids": [1,2]}'}),
            ("flow", "f", (1, 2)),
        ),
        ('{"topic": "catbird.flow.started", "data": null}', ("flow", None, ())),
    ],
)
def test_engine_events_are_parsed(payload: str, expected: tuple[Any, ...]) -> None:
    event = parse_event(payload)
    assert event is not None
    assert (event.kind, event.name, event.run_ids) == expected


def test_other_notifications_are_ignored() -> None:
    assert parse_event('{"topic": "app.ping", "data": "x"}') is None
    assert parse_event("not json") is None
    assert parse_event("[1]") is None


def _read_events(stream: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event name, data) per server-sent event; comments as ("comment", text)."""
    name, data = "message", ""
    for line in stream:
        if line.startswith(":"):
            yield "comment", line[1:].strip()
        elif line.startswith("event:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data = line.split(":", 1)[1].strip()
        elif line == "" and data:
            yield name, data
            name, data = "message", ""


def test_event_streams_share_one_listen_connection(
    dsn: str, conn: psycopg.Connection, seeded: Seeded
) -> None:
    def listeners() -> int:
        return int(
            scalar(
                conn,
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                (LISTENER_NAME,),
            )
        )

    with serve(create_dashboard(dsn, heartbeat=0.2)) as base, httpx.Client(timeout=30) as http:
        with (
            http.stream("GET", base + "/events") as first,
            http.stream("GET", base + "/events") as second,
        ):
            assert first.headers["content-type"].startswith("text/event-stream")
            streams = [_read_events(first.iter_lines()), _read_events(second.iter_lines())]
            for events in streams:
                assert next(e for e in events if e[0] != "comment") == ("ready", "{}")
            assert listeners() == 1
            fn(
                conn,
                "cb_complete_task",
                name="send_email",
                run_id=seeded.started_run,
                output=J({"sent": True}),
            )
            for events in streams:
                name, data = next(e for e in events if e[0] != "comment")
                assert name == "run"
                event = json.loads(data)
                assert event["topic"] == "catbird.task.completed"
                assert seeded.started_run in event["run_ids"]
                # nothing else happens: the stream keeps alive with comments
                assert next(events) == ("comment", "heartbeat")
        # the last stream gone, the dashboard stops listening
        while listeners():
            pass
    assert RunEvent("t", None, None, ()).to_json() == (
        '{"topic": "t", "kind": null, "name": null, "run_ids": []}'
    )


def test_dag_layers_follow_the_longest_path_from_a_root() -> None:
    steps = [
        StepInfo.from_json(s)
        for s in (
            {"name": "a"},
            {"name": "b", "depends_on": [{"name": "a"}]},
            {"name": "c", "depends_on": [{"name": "a"}, {"name": "b"}]},
            {"name": "d"},
        )
    ]
    assert layers(steps) == {"a": 0, "b": 1, "c": 2, "d": 0}
    dag = layout(steps, {})
    x = {node.name: node.x for node in dag.nodes}
    assert x["a"] == x["d"] < x["b"] < x["c"]
    assert sorted((e.source, e.target) for e in dag.edges) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert all(node.status == "pending" and node.progress is None for node in dag.nodes)
    assert dag.width >= max(x.values()) and dag.height > 0


def test_create_dashboard_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match="takes a DSN or a psycopg_pool"):
        create_dashboard(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="heartbeat must be a positive number of seconds"):
        create_dashboard("postgresql://unused", heartbeat=0)


def test_metrics_are_served_for_prometheus(client: TestClient, seeded: Seeded) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    depths = {s.labels["queue"]: s.value for s in families["catbird_queue_messages"].samples}
    # the poison message went to the dead-letter queue; three orders, one email
    assert depths == {"orders": 3, "orders_dlq": 1, "emails": 1}
