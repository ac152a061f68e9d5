"""Statements of flows: definitions, the run lifecycle, signals and
introspection (``50_flows.sql``); the worker's step protocol is in
:mod:`.steps`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, LiteralString

from ..models import FlowInfo, FlowOnFailClaim, FlowRunInfo, RunOutcome, StepInfo, StepRunInfo
from ._call import (
    OUTCOME_COLUMNS,
    POLL_ARGS,
    Call,
    Duration,
    Query,
    Row,
    Rows,
    boolean,
    each,
    interval_or_null,
    jsonb,
    jsonb_value,
    list_or_null,
    poll_params,
    run_outcome,
    void,
)
from .runs import Kind, RunStatements

FLOW_COLUMNS: LiteralString = (
    "name, description, steps, output_priority, retention_period, on_fail, created_at"
)

FLOW_RUN_COLUMNS: LiteralString = (
    "id, flow_name, status, priority, concurrency_key, input, headers, output, error_message,"
    " cancel_reason, failed_step_name, created_at, visible_at, expires_at, started_at,"
    " completed_at, failed_at, cancel_requested_at, canceled_at, on_fail_status,"
    " on_fail_attempts, on_fail_error_message"
)

FLOW_ON_FAIL_COLUMNS: LiteralString = (
    "id, input, error_message, on_fail_attempts, started_at, failed_at, concurrency_key,"
    " failed_step_name, failed_step_input, failed_step_signal_input, failed_step_attempts"
)

STEP_RUN_COLUMNS: LiteralString = (
    "id, flow_run_id, step_name, status, priority, attempts, output, error_message,"
    " signal_input, map_total, map_done, created_at, visible_at, started_at, completed_at,"
    " failed_at, skipped_at, canceled_at, error_detail"
)


def _flow_info(row: Row) -> FlowInfo:
    name, description, steps, output_priority, retention, on_fail, created_at = row
    return FlowInfo(
        name,
        description,
        tuple(StepInfo.from_json(s) for s in steps or ()),
        tuple(output_priority or ()),
        retention,
        bool(on_fail),
        created_at,
    )


FLOWS = RunStatements(
    Kind(
        "flow",
        FLOW_COLUMNS,
        _flow_info,
        FLOW_RUN_COLUMNS,
        FlowRunInfo,
        FLOW_ON_FAIL_COLUMNS,
        FlowOnFailClaim,
        wait_arg="flow_name",
    )
)

# ------------------------------------------------------------- definitions

_CREATE_FLOW = Call(
    "cb_create_flow",
    name="text",
    description="text",
    steps="jsonb",
    output_priority="text[]",
    retention_period="interval",
    on_fail="boolean",
)


def create_flow(
    name: str,
    *,
    steps: Sequence[Mapping[str, Any]],
    description: str | None = None,
    output_priority: Sequence[str] | None = None,
    retention_period: Duration | None = None,
    on_fail: bool = False,
) -> Query[None]:
    params = {
        "name": name,
        "description": description,
        "steps": jsonb([dict(s) for s in steps]),
        "output_priority": list_or_null(output_priority),
        "retention_period": interval_or_null(retention_period),
        "on_fail": on_fail,
    }
    return _CREATE_FLOW.query(params, void)


delete_flow = FLOWS.delete
get_flow = FLOWS.get
list_flows = FLOWS.list_all

# --------------------------------------------------------------------- runs

run_flow = FLOWS.run
run_flows = FLOWS.run_many
bind_flow = FLOWS.bind
unbind_flow = FLOWS.unbind
cancel_flow = FLOWS.cancel
wait_flow_output = FLOWS.wait_output
purge_flow_runs = FLOWS.purge_runs
clear_flow_runs = FLOWS.clear_runs
get_flow_run = FLOWS.get_run
list_flow_runs = FLOWS.list_runs
claim_flow_on_fail = FLOWS.claim_on_fail
complete_flow_on_fail = FLOWS.complete_on_fail
fail_flow_on_fail = FLOWS.fail_on_fail
retry_flow_run = FLOWS.retry_run

# ------------------------------------------------------ signals and steps

#: The arguments naming a step of a flow run.
_RUN_STEP_ARGS = {"flow_name": "text", "run_id": "bigint", "step_name": "text"}

_SIGNAL_FLOW = Call("cb_signal_flow", **_RUN_STEP_ARGS, input="jsonb")
_GET_FLOW_STEP_STATUS = Call("cb_get_flow_step_status", returns=STEP_RUN_COLUMNS, **_RUN_STEP_ARGS)
_GET_FLOW_STEP_OUTPUT = Call("cb_get_flow_step_output", **_RUN_STEP_ARGS)
_WAIT_FLOW_STEP_OUTPUT = Call(
    "cb_wait_flow_step_output", returns=OUTCOME_COLUMNS, **_RUN_STEP_ARGS, **POLL_ARGS
)
_GET_FLOW_RUN_STEPS = Call(
    "cb_get_flow_run_steps", returns=STEP_RUN_COLUMNS, flow_name="text", run_id="bigint"
)

_step_runs = each(StepRunInfo)


def _step_run_or_none(rows: Rows) -> StepRunInfo | None:
    return StepRunInfo(*rows[0]) if rows else None


def signal_flow(name: str, run_id: int, step_name: str, input: Any) -> Query[bool]:
    params = {"flow_name": name, "run_id": run_id, "step_name": step_name, "input": jsonb(input)}
    return _SIGNAL_FLOW.query(params, boolean)


def get_flow_step_status(name: str, run_id: int, step_name: str) -> Query[StepRunInfo | None]:
    """One step of a run; ``None`` when the run does not exist (42704 for an unknown step)."""
    params = {"flow_name": name, "run_id": run_id, "step_name": step_name}
    return _GET_FLOW_STEP_STATUS.query(params, _step_run_or_none)


def get_flow_step_output(name: str, run_id: int, step_name: str) -> Query[Any]:
    """A completed step's output (JSON null when it is not completed)."""
    params = {"flow_name": name, "run_id": run_id, "step_name": step_name}
    return _GET_FLOW_STEP_OUTPUT.query(params, jsonb_value)


def wait_flow_step_output(
    name: str,
    run_id: int,
    step_name: str,
    *,
    poll_for: Duration = 5.0,
    poll_interval: Duration = 0.2,
) -> Query[RunOutcome | None]:
    params = {"flow_name": name, "run_id": run_id, "step_name": step_name}
    return _WAIT_FLOW_STEP_OUTPUT.query(poll_params(params, poll_for, poll_interval), run_outcome)


def get_flow_run_steps(name: str, run_id: int) -> Query[list[StepRunInfo]]:
    return _GET_FLOW_RUN_STEPS.query({"flow_name": name, "run_id": run_id}, _step_runs)
