"""The worker's protocol of flow steps: claiming, renewing, completing and
failing step runs and map items, generators' items, early completion
(``50_flows.sql``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

from ..models import ItemClaim, StepClaim
from ._call import (
    CLAIM_ARGS,
    RETRY_ARGS,
    Call,
    Duration,
    Query,
    Rows,
    Statement,
    boolean,
    int_list,
    integer,
    list_or_null,
    ms,
    retry_params,
    text_or_none,
    void,
)

#: The arguments naming a step of a flow.
STEP_ARGS: dict[str, str] = {"flow_name": "text", "step_name": "text"}

C = TypeVar("C")
K = TypeVar("K")


class StepWork(Generic[C, K]):
    """The claim, lease renewal, completion and failure of one kind of step
    work, declared once: step runs (``cb_claim_steps``, ``cb_hide_steps``,
    ``cb_complete_steps``, ``cb_fail_step``) or map items of mappers and
    generators (``cb_claim_map_tasks``, ``cb_hide_map_tasks``,
    ``cb_complete_map_tasks``, ``cb_fail_map_task``).

    Claims with ``with_input``/``with_outputs`` false leave those columns
    NULL (not sent), for handlers that do not take them: for map items the
    engine would otherwise return the whole flow input with every item,
    which for a mapper over the input is the whole array each time.
    Completions take the outputs already serialised to JSON text.
    """

    def __init__(
        self,
        unit: str,
        claim: Call,
        claims: Callable[[Rows], list[C]],
        complete: Statement,
        completed: Callable[[Rows], K],
    ) -> None:
        self._claim, self._claims = claim, claims
        self._complete, self._completed = complete, completed
        self._hide = Call(
            f"cb_hide_{unit}s", **STEP_ARGS, ids="bigint[]", hide_for="int", attempts="int[]"
        )
        self._fail = Call(f"cb_fail_{unit}", **STEP_ARGS, id="bigint", **RETRY_ARGS)

    def claim(
        self,
        name: str,
        step_name: str,
        *,
        quantity: int,
        hide_for: Duration,
        with_input: bool = True,
        with_outputs: bool = True,
    ) -> Query[list[C]]:
        params = {
            "flow_name": name,
            "step_name": step_name,
            "quantity": quantity,
            "hide_for": ms(hide_for),
            "with_input": with_input,
            "with_outputs": with_outputs,
        }
        return self._claim.query(params, self._claims)

    def hide(
        self,
        name: str,
        step_name: str,
        ids: Iterable[int],
        *,
        hide_for: Duration,
        attempts: Sequence[int | None] | None = None,
    ) -> Query[None]:
        """Lease renewal; with ``attempts`` (one per id) only claims still held are renewed."""
        params = {
            "flow_name": name,
            "step_name": step_name,
            "ids": list(ids),
            "hide_for": ms(hide_for),
            "attempts": list_or_null(attempts),
        }
        return self._hide.query(params, void)

    def complete_json(
        self,
        name: str,
        step_name: str,
        ids: Sequence[int],
        outputs_json: Sequence[str],
        attempts: Sequence[int] | None = None,
    ) -> Query[K]:
        params = {
            "flow_name": name,
            "step_name": step_name,
            "ids": list(ids),
            "outputs": list(outputs_json),
            "attempts": list_or_null(attempts),
        }
        return self._complete.query(params, self._completed)

    def fail(
        self,
        name: str,
        step_name: str,
        id: int,
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
        them; a policy argument left ``None`` is the step's stored policy."""
        params = {
            "flow_name": name,
            "step_name": step_name,
            "id": id,
            "error_message": error_message,
            "attempt": attempt,
        }
        return self._fail.query(
            retry_params(params, max_retries, backoff_min, backoff_max, retryable, error_detail),
            text_or_none,
        )


def _step_claims(rows: Rows) -> list[StepClaim]:
    return [StepClaim(r[0], r[1], r[2], r[3], r[4] or {}, r[5]) for r in rows]


def _item_claims(rows: Rows) -> list[ItemClaim]:
    return [ItemClaim(r[0], r[1], r[2], r[3], r[4] or {}, r[5], r[6]) for r in rows]


#: Step runs. Their completion is one ``cb_complete_steps`` call per batch
#: (flow and step resolved once, flow runs locked in id order), returning the
#: ids whose completion was recorded.
STEPS = StepWork(
    "step",
    Call(
        "cb_claim_steps",
        returns="id, flow_run_id, attempts,"
        " CASE WHEN %(with_input)s::boolean THEN input END,"
        " CASE WHEN %(with_outputs)s::boolean THEN step_outputs END, signal_input",
        **STEP_ARGS,
        **CLAIM_ARGS,
    ),
    _step_claims,
    Call(
        "cb_complete_steps",
        **STEP_ARGS,
        ids="bigint[]",
        outputs="text[]::jsonb[]",
        attempts="int[]",
    ),
    int_list,
)
#: Map items of mappers and generators.
ITEMS = StepWork(
    "map_task",
    Call(
        "cb_claim_map_tasks",
        returns="id, flow_run_id, attempts, input, step_outputs, signal_input, item",
        **STEP_ARGS,
        **CLAIM_ARGS,
        with_input="boolean",
        with_outputs="boolean",
    ),
    _item_claims,
    Call(
        "cb_complete_map_tasks",
        **STEP_ARGS,
        ids="bigint[]",
        outputs="text[]::jsonb[]",
        attempts="int[]",
    ),
    void,
)

claim_steps = STEPS.claim
hide_steps = STEPS.hide
complete_steps_json = STEPS.complete_json
fail_step = STEPS.fail
claim_items = ITEMS.claim
hide_items = ITEMS.hide
complete_items_json = ITEMS.complete_json
fail_item = ITEMS.fail

# ------------------------------------------------- single steps, generators

_COMPLETE_STEP = Call(
    "cb_complete_step", **STEP_ARGS, id="bigint", output="text::jsonb", attempt="int"
)
_COMPLETE_FLOW_EARLY = Call(
    "cb_complete_flow_early",
    flow_name="text",
    run_id="bigint",
    step_name="text",
    output="text::jsonb",
    reason="text",
    attempt="int",
)
_SPAWN_GENERATOR_MAP_TASKS = Call(
    "cb_spawn_generator_map_tasks",
    **STEP_ARGS,
    id="bigint",
    items="text::jsonb",
    visible_at="timestamptz",
    attempt="int",
)
_COMPLETE_GENERATOR_STEP = Call(
    "cb_complete_generator_step", **STEP_ARGS, id="bigint", attempt="int"
)
_FAIL_GENERATOR_STEP = Call(
    "cb_fail_generator_step",
    **STEP_ARGS,
    id="bigint",
    error_message="text",
    attempt="int",
    error_detail="text",
)
_READ_MAP_OUTPUTS = Call(
    "cb_read_map_outputs",
    returns="idx, output",
    flow_name="text",
    run_id="bigint",
    step_name="text",
    after_idx="int",
    lim="int",
)


def _idx_outputs(rows: Rows) -> list[tuple[int, Any]]:
    return [(int(r[0]), r[1]) for r in rows]


def complete_step_json(
    name: str, step_name: str, id: int, output_json: str, *, attempt: int | None = None
) -> Query[bool]:
    """Step completion with the output already serialised to JSON text."""
    params = {
        "flow_name": name,
        "step_name": step_name,
        "id": id,
        "output": output_json,
        "attempt": attempt,
    }
    return _COMPLETE_STEP.query(params, boolean)


def complete_flow_early_json(
    name: str,
    run_id: int,
    step_name: str,
    output_json: str,
    *,
    reason: str | None = None,
    attempt: int | None = None,
) -> Query[bool]:
    """Early completion with the output already serialised to JSON text;
    under ``attempt`` (the step's claim) a stale call completes nothing."""
    params = {
        "flow_name": name,
        "run_id": run_id,
        "step_name": step_name,
        "output": output_json,
        "reason": reason,
        "attempt": attempt,
    }
    return _COMPLETE_FLOW_EARLY.query(params, boolean)


def spawn_generator_items_json(
    name: str,
    step_name: str,
    id: int,
    items_json: str,
    *,
    visible_at: datetime | None = None,
    attempt: int | None = None,
) -> Query[int]:
    """Items of a running generator, given as one JSON array text.

    Under ``attempt`` (the step's claim) the engine numbers the items of this
    attempt from 0 and keeps an item it already has, so a resumed generator
    that yields its items again adds none twice; a stale attempt adds nothing
    (returns 0). Returns how many items the call covered."""
    params = {
        "flow_name": name,
        "step_name": step_name,
        "id": id,
        "items": items_json,
        "visible_at": visible_at,
        "attempt": attempt,
    }
    return _SPAWN_GENERATOR_MAP_TASKS.query(params, integer)


def complete_generator_step(
    name: str, step_name: str, id: int, *, attempt: int | None = None
) -> Query[None]:
    params = {"flow_name": name, "step_name": step_name, "id": id, "attempt": attempt}
    return _COMPLETE_GENERATOR_STEP.query(params, void)


def fail_generator_step(
    name: str,
    step_name: str,
    id: int,
    error_message: str,
    *,
    attempt: int | None = None,
    error_detail: str | None = None,
) -> Query[None]:
    params = {
        "flow_name": name,
        "step_name": step_name,
        "id": id,
        "error_message": error_message,
        "attempt": attempt,
        "error_detail": error_detail,
    }
    return _FAIL_GENERATOR_STEP.query(params, void)


def read_map_outputs(
    name: str, run_id: int, step_name: str, *, after_idx: int = -1, limit: int = 1000
) -> Query[list[tuple[int, Any]]]:
    """A page of ``(idx, output)`` of a mapper's or generator's completed items."""
    params = {
        "flow_name": name,
        "run_id": run_id,
        "step_name": step_name,
        "after_idx": after_idx,
        "lim": limit,
    }
    return _READ_MAP_OUTPUTS.query(params, _idx_outputs)
