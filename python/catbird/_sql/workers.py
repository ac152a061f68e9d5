"""Statements of the worker registry and garbage collection
(``70_maintenance.sql``), engine events (``80_events.sql``) and the session
statements of a worker's connections."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, LiteralString
from uuid import UUID

from ..models import HealthCheck, HealthReport, MetricSample, WorkerInfo
from ._call import (
    Call,
    Duration,
    Query,
    Rows,
    boolean,
    each,
    interval_or_null,
    jsonb,
    jsonb_object,
    void,
)

_WORKER_STARTED = Call("cb_worker_started", id="uuid", task_handlers="jsonb", step_handlers="jsonb")
_WORKER_HEARTBEAT = Call("cb_worker_heartbeat", id="uuid")
_WORKER_STOPPED = Call("cb_worker_stopped", id="uuid")
_LIST_WORKERS = Call(
    "cb_list_workers", returns="id, task_handlers, step_handlers, started_at, last_heartbeat_at"
)
_GC = Call("cb_gc", batch_size="int", stale_worker_after="interval")
_HEALTH = Call(
    "cb_health",
    dead_tuple_ratio="double precision",
    dead_tuple_min="bigint",
    xmin_age="interval",
    queued_age="interval",
    lease_overdue="interval",
    heartbeat_age="interval",
    critical_factor="double precision",
)
_METRICS = Call("cb_metrics", returns="metric, labels, value")


def worker_started(
    id: UUID,
    *,
    task_handlers: Sequence[Mapping[str, Any]],
    step_handlers: Sequence[Mapping[str, Any]],
) -> Query[None]:
    params = {
        "id": id,
        "task_handlers": jsonb(list(task_handlers)),
        "step_handlers": jsonb(list(step_handlers)),
    }
    return _WORKER_STARTED.query(params, void)


def _registered(rows: Rows) -> bool:
    value = rows[0][0] if rows else None
    return bool(value.get("registered", False)) if isinstance(value, dict) else False


def worker_heartbeat(id: UUID) -> Query[bool]:
    """True while the worker is registered; False means: register again."""
    return _WORKER_HEARTBEAT.query({"id": id}, _registered)


def worker_stopped(id: UUID) -> Query[bool]:
    return _WORKER_STOPPED.query({"id": id}, boolean)


_worker_infos = each(WorkerInfo)


def list_workers() -> Query[list[WorkerInfo]]:
    return _LIST_WORKERS.query({}, _worker_infos)


def gc(*, batch_size: int = 10000, stale_worker_after: Duration = 300.0) -> Query[dict[str, Any]]:
    """Bounded garbage collection (``cb_gc``); returns its counters."""
    params = {"batch_size": batch_size, "stale_worker_after": interval_or_null(stale_worker_after)}
    return _GC.query(params, jsonb_object)


def _health_report(rows: Rows) -> HealthReport:
    doc = jsonb_object(rows)
    return HealthReport(
        healthy=bool(doc["healthy"]),
        status=doc["status"],
        checked_at=datetime.fromisoformat(doc["checked_at"]),
        thresholds=doc["thresholds"],
        checks=tuple(HealthCheck(**c) for c in doc["checks"]),
    )


def health(
    *,
    dead_tuple_ratio: float = 0.2,
    dead_tuple_min: int = 1000,
    xmin_age: Duration = 300.0,
    queued_age: Duration = 300.0,
    lease_overdue: Duration = 60.0,
    heartbeat_age: Duration = 60.0,
    critical_factor: float = 3.0,
) -> Query[HealthReport]:
    """The health report (``cb_health``) under these thresholds (durations in seconds)."""
    params = {
        "dead_tuple_ratio": dead_tuple_ratio,
        "dead_tuple_min": dead_tuple_min,
        "xmin_age": interval_or_null(xmin_age),
        "queued_age": interval_or_null(queued_age),
        "lease_overdue": interval_or_null(lease_overdue),
        "heartbeat_age": interval_or_null(heartbeat_age),
        "critical_factor": critical_factor,
    }
    return _HEALTH.query(params, _health_report)


def metrics() -> Query[list[MetricSample]]:
    """The database's gauges (``cb_metrics``): queues, active runs, health."""
    return _METRICS.query({}, each(MetricSample))


# -------------------------------------------------------------------- events

#: The channel every engine event is sent on (payload: {"topic", "data", "node_id"}).
EVENTS_CHANNEL: LiteralString = "catbird"


def async_commit() -> Query[None]:
    """Session setting of the worker's claim connections: commits do not wait
    for the WAL flush. A claim or lease renewal lost in a server crash only
    makes its run claimable again, which the at-least-once contract allows."""
    return Query("async_commit", "SET synchronous_commit TO off", {}, void)


def listen_events() -> Query[None]:
    return Query("listen_events", "LISTEN " + EVENTS_CHANNEL, {}, void)


def ping() -> Query[None]:
    return Query("ping", "SELECT 1", {}, void)
