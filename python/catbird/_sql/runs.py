"""The run lifecycle, written once for tasks and flows.

Tasks and flows share their lifecycle: a definition is deleted, read and
listed; runs are started (one or a batch), bound to topics, canceled, waited
for, purged, cleared, read and listed; and a failed run's on-fail handler is
claimed, completed or failed. The engine spells these ``cb_<verb>_task`` and
``cb_<verb>_flow`` with the same arguments (``40_tasks.sql``,
``50_flows.sql``); a :class:`Kind` says what differs between the two (the
word in the function names, the columns and records of their rows), and
:class:`RunStatements` declares every call of one kind from it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, LiteralString, TypeVar, Unpack

from ..models import RunOutcome
from ._call import (
    CLAIM_ARGS,
    OUTCOME_COLUMNS,
    POLL_ARGS,
    BatchEnqueueOptions,
    Call,
    Duration,
    EnqueueOptions,
    Params,
    Query,
    Row,
    Rows,
    boolean,
    each,
    enqueue_args,
    enqueue_many,
    enqueue_one,
    int_list,
    integer,
    interval_or_null,
    jsonb,
    jsonb_array,
    ms,
    one,
    poll_params,
    run_outcome,
    void,
)

D = TypeVar("D")
R = TypeVar("R")
F = TypeVar("F")


@dataclass(frozen=True, slots=True)
class Kind(Generic[D, R, F]):
    """What differs between the run lifecycles of tasks and flows."""

    #: ``"task"`` or ``"flow"``: the engine's functions are ``cb_<verb>_<word>...``.
    word: str
    #: The columns of ``cb_get_<word>``/``cb_list_<word>s`` and the record of one row.
    columns: LiteralString
    definition: Callable[[Row], D]
    #: The columns of ``cb_get_<word>_run``/``cb_list_<word>_runs``; the record class.
    run_columns: LiteralString
    run: Callable[..., R]
    #: The columns of ``cb_claim_<word>_on_fail``; the record class.
    on_fail_columns: LiteralString
    on_fail_claim: Callable[..., F]
    #: The name of the definition-name argument of ``cb_wait_<word>_output``.
    wait_arg: str = "name"


class RunStatements(Generic[D, R, F]):
    """Every run-lifecycle statement of one :class:`Kind`."""

    def __init__(self, kind: Kind[D, R, F]) -> None:
        k = kind.word
        self.kind = kind
        self._delete = Call(f"cb_delete_{k}", name="text")
        self._get = Call(f"cb_get_{k}", returns=kind.columns, name="text")
        self._list = Call(f"cb_list_{k}s", returns=kind.columns, then="ORDER BY name")
        self._run = Call(f"cb_run_{k}", name="text", input="jsonb", **enqueue_args(many=False))
        self._run_many = Call(
            f"cb_run_{k}",
            statement=f"run_{k}s",
            name="text",
            inputs="jsonb[]",
            **enqueue_args(many=True),
        )
        self._bind = Call(f"cb_bind_{k}", name="text", pattern="text")
        self._unbind = Call(f"cb_unbind_{k}", name="text", pattern="text")
        self._cancel = Call(f"cb_cancel_{k}", name="text", run_id="bigint", reason="text")
        wait_args = {kind.wait_arg: "text", "run_id": "bigint", **POLL_ARGS}
        self._wait = Call(f"cb_wait_{k}_output", returns=OUTCOME_COLUMNS, **wait_args)
        self._purge = Call(f"cb_purge_{k}_runs", name="text", older_than="interval")
        self._clear = Call(f"cb_clear_{k}_runs", name="text")
        self._get_run = Call(
            f"cb_get_{k}_run", returns=kind.run_columns, name="text", run_id="bigint"
        )
        self._list_runs = Call(
            f"cb_list_{k}_runs",
            returns=kind.run_columns,
            name="text",
            lim="int",
            before_id="bigint",
        )
        self._claim_on_fail = Call(
            f"cb_claim_{k}_on_fail", returns=kind.on_fail_columns, name="text", **CLAIM_ARGS
        )
        self._retry_run = Call(f"cb_retry_{k}_run", name="text", run_id="bigint")
        self._complete_on_fail = Call(
            f"cb_complete_{k}_on_fail", name="text", run_id="bigint", on_fail_attempt="int"
        )
        self._fail_on_fail = Call(
            f"cb_fail_{k}_on_fail",
            name="text",
            run_id="bigint",
            error_message="text",
            on_fail_attempt="int",
            max_retries="int",
            backoff_min="int",
            backoff_max="int",
        )
        definition = kind.definition

        def definitions(rows: Rows) -> list[D]:
            return [definition(row) for row in rows]

        self._definitions = definitions
        self._runs = each(kind.run)
        self._on_fail_claims = each(kind.on_fail_claim)

    def _run_record(self, row: Row) -> R:
        return self.kind.run(*row)

    # ------------------------------------------------------------ definitions

    def delete(self, name: str) -> Query[bool]:
        return self._delete.query({"name": name}, boolean)

    def get(self, name: str) -> Query[D]:
        missing = f'{self.kind.word} "{name}" does not exist'
        return self._get.query({"name": name}, one(self.kind.definition, missing))

    def list_all(self) -> Query[list[D]]:
        return self._list.query({}, self._definitions)

    # ------------------------------------------------------------------- runs

    def run(
        self,
        name: str,
        input: Any,
        **options: Unpack[EnqueueOptions],
    ) -> Query[int]:
        params: Params = {"name": name, "input": jsonb(input)}
        return self._run.query(
            enqueue_one(params, options),
            integer,
        )

    def run_many(
        self,
        name: str,
        inputs: Iterable[Any],
        **options: Unpack[BatchEnqueueOptions],
    ) -> Query[list[int]]:
        params: Params = {"name": name, "inputs": jsonb_array(inputs)}
        return self._run_many.query(
            enqueue_many(params, options),
            int_list,
        )

    def bind(self, name: str, pattern: str) -> Query[None]:
        return self._bind.query({"name": name, "pattern": pattern}, void)

    def unbind(self, name: str, pattern: str) -> Query[bool]:
        return self._unbind.query({"name": name, "pattern": pattern}, boolean)

    def cancel(self, name: str, run_id: int, *, reason: str | None = None) -> Query[bool]:
        return self._cancel.query({"name": name, "run_id": run_id, "reason": reason}, boolean)

    def wait_output(
        self, name: str, run_id: int, *, poll_for: Duration = 5.0, poll_interval: Duration = 0.2
    ) -> Query[RunOutcome | None]:
        params: Params = {self.kind.wait_arg: name, "run_id": run_id}
        return self._wait.query(poll_params(params, poll_for, poll_interval), run_outcome)

    def purge_runs(self, name: str, older_than: Duration) -> Query[int]:
        return self._purge.query(
            {"name": name, "older_than": interval_or_null(older_than)}, integer
        )

    def clear_runs(self, name: str) -> Query[int]:
        return self._clear.query({"name": name}, integer)

    def get_run(self, name: str, run_id: int) -> Query[R]:
        missing = f'{self.kind.word} "{name}" has no run {run_id}'
        return self._get_run.query({"name": name, "run_id": run_id}, one(self._run_record, missing))

    def list_runs(
        self, name: str, *, limit: int = 100, before_id: int | None = None
    ) -> Query[list[R]]:
        return self._list_runs.query(
            {"name": name, "lim": limit, "before_id": before_id}, self._runs
        )

    # ---------------------------------------------------------------- on-fail

    def claim_on_fail(
        self, name: str, *, quantity: int, hide_for: Duration = 30.0
    ) -> Query[list[F]]:
        params = {"name": name, "quantity": quantity, "hide_for": ms(hide_for)}
        return self._claim_on_fail.query(params, self._on_fail_claims)

    def complete_on_fail(
        self, name: str, run_id: int, *, on_fail_attempt: int | None = None
    ) -> Query[None]:
        """Records the on-fail handler's success; under ``on_fail_attempt`` (the
        claim's ``on_fail_attempts``) a stale call writes nothing."""
        params = {"name": name, "run_id": run_id, "on_fail_attempt": on_fail_attempt}
        return self._complete_on_fail.query(params, void)

    def fail_on_fail(
        self,
        name: str,
        run_id: int,
        error_message: str,
        *,
        on_fail_attempt: int | None = None,
        max_retries: int | None = None,
        backoff_min: int | None = None,
        backoff_max: int | None = None,
    ) -> Query[None]:
        """Records the on-fail handler's failure; the engine decides whether
        and when it is retried (``backoff_*`` in milliseconds; ``None``: the
        definition's stored policy). A stale ``on_fail_attempt`` writes nothing."""
        params = {
            "name": name,
            "run_id": run_id,
            "error_message": error_message,
            "on_fail_attempt": on_fail_attempt,
            "max_retries": max_retries,
            "backoff_min": backoff_min,
            "backoff_max": backoff_max,
        }
        return self._fail_on_fail.query(params, void)

    # ----------------------------------------------------------- manual retry

    def retry_run(self, name: str, run_id: int) -> Query[bool]:
        """Re-queue a failed, canceled or expired run (for a flow: its failed
        steps and the work canceled with them; completed steps are kept)."""
        return self._retry_run.query({"name": name, "run_id": run_id}, boolean)
