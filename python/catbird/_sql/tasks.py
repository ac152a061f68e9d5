"""Statements of tasks: definitions, the run lifecycle and the worker protocol
(``40_tasks.sql``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, LiteralString

from ..models import OnFailClaim, TaskClaim, TaskInfo, TaskRunInfo
from ._call import (
    CLAIM_ARGS,
    RETRY_ARGS,
    Call,
    Duration,
    Query,
    Row,
    boolean,
    each,
    int_list,
    interval_or_null,
    jsonb,
    list_or_null,
    ms,
    ms_or_null,
    retry_params,
    text_or_none,
    void,
)
from .runs import Kind, RunStatements

TASK_COLUMNS: LiteralString = (
    "name, description, condition, retention_period, on_fail, created_at,"
    " max_retries, backoff_min, backoff_max"
)

TASK_RUN_COLUMNS: LiteralString = (
    "id, task_name, status, priority, attempts, concurrency_key, input, headers, output,"
    " error_message, cancel_reason, created_at, visible_at, expires_at, started_at,"
    " completed_at, failed_at, skipped_at, expired_at, cancel_requested_at, canceled_at,"
    " on_fail_status, on_fail_attempts, on_fail_error_message, error_detail"
)

TASK_ON_FAIL_COLUMNS: LiteralString = (
    "id, input, error_message, attempts, on_fail_attempts, started_at, failed_at, concurrency_key"
)


def _task_info(row: Row) -> TaskInfo:
    return TaskInfo(*row)


TASKS = RunStatements(
    Kind(
        "task",
        TASK_COLUMNS,
        _task_info,
        TASK_RUN_COLUMNS,
        TaskRunInfo,
        TASK_ON_FAIL_COLUMNS,
        OnFailClaim,
    )
)

# ------------------------------------------------------------- definitions

_CREATE_TASK = Call(
    "cb_create_task",
    name="text",
    description="text",
    condition="text",
    retention_period="interval",
    on_fail="boolean",
    max_retries="int",
    backoff_min="int",
    backoff_max="int",
)


def create_task(
    name: str,
    *,
    description: str | None = None,
    condition: str | None = None,
    retention_period: Duration | None = None,
    on_fail: bool = False,
    max_retries: int | None = None,
    backoff_min: Duration | None = None,
    backoff_max: Duration | None = None,
) -> Query[None]:
    """``max_retries``/``backoff_min``/``backoff_max`` (seconds): the retry
    policy stored on the task (``None``: the engine's default)."""
    params = {
        "name": name,
        "description": description,
        "condition": condition,
        "retention_period": interval_or_null(retention_period),
        "on_fail": on_fail,
        "max_retries": max_retries,
        "backoff_min": ms_or_null(backoff_min),
        "backoff_max": ms_or_null(backoff_max),
    }
    return _CREATE_TASK.query(params, void)


delete_task = TASKS.delete
get_task = TASKS.get
list_tasks = TASKS.list_all

# --------------------------------------------------------------------- runs

run_task = TASKS.run
run_tasks = TASKS.run_many
bind_task = TASKS.bind
unbind_task = TASKS.unbind
cancel_task = TASKS.cancel
wait_task_output = TASKS.wait_output
purge_task_runs = TASKS.purge_runs
clear_task_runs = TASKS.clear_runs
get_task_run = TASKS.get_run
list_task_runs = TASKS.list_runs
claim_task_on_fail = TASKS.claim_on_fail
complete_task_on_fail = TASKS.complete_on_fail
fail_task_on_fail = TASKS.fail_on_fail
retry_task_run = TASKS.retry_run

# ---------------------------------------------------------- worker protocol

_CLAIM_TASKS = Call(
    "cb_claim_tasks",
    returns="id, attempts, input, headers, concurrency_key, priority",
    name="text",
    **CLAIM_ARGS,
)
_HIDE_TASKS = Call("cb_hide_tasks", name="text", ids="bigint[]", hide_for="int", attempts="int[]")
_COMPLETE_TASK = Call(
    "cb_complete_task", name="text", run_id="bigint", output="jsonb", attempt="int"
)
_COMPLETE_TASKS = Call(
    "cb_complete_tasks",
    name="text",
    run_ids="bigint[]",
    outputs="text[]::jsonb[]",
    attempts="int[]",
)
_FAIL_TASK = Call("cb_fail_task", name="text", run_id="bigint", **RETRY_ARGS)

_task_claims = each(TaskClaim)


def claim_tasks(name: str, *, quantity: int, hide_for: Duration) -> Query[list[TaskClaim]]:
    return _CLAIM_TASKS.query(
        {"name": name, "quantity": quantity, "hide_for": ms(hide_for)}, _task_claims
    )


def hide_tasks(
    name: str,
    ids: Iterable[int],
    *,
    hide_for: Duration,
    attempts: Sequence[int] | None = None,
) -> Query[None]:
    """Lease renewal; with ``attempts`` (one per id) only claims still held are renewed."""
    params = {
        "name": name,
        "ids": list(ids),
        "hide_for": ms(hide_for),
        "attempts": list_or_null(attempts),
    }
    return _HIDE_TASKS.query(params, void)


def complete_task(
    name: str, run_id: int, output: Any, *, attempt: int | None = None
) -> Query[bool]:
    params = {"name": name, "run_id": run_id, "output": jsonb(output), "attempt": attempt}
    return _COMPLETE_TASK.query(params, boolean)


def complete_tasks_json(
    name: str,
    run_ids: Sequence[int],
    outputs_json: Sequence[str],
    attempts: Sequence[int] | None = None,
) -> Query[list[int]]:
    """Batch completion with outputs already serialised to JSON text.

    The worker serialises each output when its handler returns, so that a
    value JSON cannot represent fails that one run instead of the batch.
    """
    params = {
        "name": name,
        "run_ids": list(run_ids),
        "outputs": list(outputs_json),
        "attempts": list_or_null(attempts),
    }
    return _COMPLETE_TASKS.query(params, int_list)


def fail_task(
    name: str,
    run_id: int,
    error_message: str,
    *,
    attempt: int | None = None,
    max_retries: int | None = None,
    backoff_min: int | None = None,
    backoff_max: int | None = None,
    retryable: bool = True,
    error_detail: str | None = None,
) -> Query[str | None]:
    """``backoff_min``/``backoff_max`` are milliseconds, as the engine takes
    them; a policy argument left ``None`` is the task's stored policy."""
    params = {"name": name, "run_id": run_id, "error_message": error_message, "attempt": attempt}
    return _FAIL_TASK.query(
        retry_params(params, max_retries, backoff_min, backoff_max, retryable, error_detail),
        text_or_none,
    )
