"""Flow dispatch under real concurrency: several connections, one per thread.

Every transition of a flow run (a step or item completing, a signal arriving)
first locks the flow run row, so concurrent transitions of one run serialize
and exactly one of them sees the run advance or finish. Claims never lock
flow runs and skip rows other workers hold, so concurrent workers never get
the same step or item. These tests race real transactions (threads released
together by a barrier) and check the outcome, and count the
``catbird.flow.completed`` notifications to prove a run finishes once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from sqlhelpers import HIDE, J, call, claim_steps, connections, fn, scalar, step
from sqlhelpers import complete_step as complete

TIMEOUT = 30  # s: a thread that takes longer than this is stuck


def claim(conn, flow: str, step_name: str, quantity: int = 100) -> list[dict[str, Any]]:
    return claim_steps(conn, flow, step_name, quantity)


def run_threads(*targets: Callable[[], None]) -> None:
    """Run each target in its own thread and re-raise the first error."""
    errors: list[BaseException] = []

    def wrap(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
        assert not t.is_alive(), "a worker thread is stuck"
    if errors:
        raise errors[0]


class Completions:
    """Counts catbird.flow.completed notifications per run id, on a listening connection."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.counts: dict[int, int] = {}
        self.conn.add_notify_handler(self._on_notify)
        self.conn.execute("LISTEN catbird")

    def _on_notify(self, notify: psycopg.Notify) -> None:
        payload = json.loads(notify.payload)
        if payload["topic"] == "catbird.flow.completed":
            run_id = json.loads(payload["data"])["run_id"]
            self.counts[run_id] = self.counts.get(run_id, 0) + 1

    def collect(self) -> dict[int, int]:
        # Notifications committed before this round trip are delivered with its result.
        self.conn.execute("SELECT 1")
        return self.counts

    def close(self) -> None:
        self.conn.close()


def wait_until_blocked(monitor, *pids: int) -> None:
    """Wait until every backend in pids is waiting on a heavyweight lock."""
    deadline = time.monotonic() + TIMEOUT
    while scalar(
        monitor,
        "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s) AND wait_event_type = 'Lock'",
        (list(pids),),
    ) != len(pids):
        assert time.monotonic() < deadline, f"backends {pids} never blocked"
        time.sleep(0.01)


# --------------------------------------------------------------------------- joins


def race_branches(dsn: str, conn, flow: str, runs: int) -> tuple[list[int], list[bool]]:
    """Start ``runs`` runs, claim their b and c steps, then complete each run's b and c
    at the same moment from two connections, each in its own transaction."""
    run_ids = [fn(conn, "cb_run_flow", name=flow, input=J({"i": i})) for i in range(runs)]
    for run_id in run_ids:
        [a] = [c for c in claim(conn, flow, "a", 1)]
        assert a["flow_run_id"] == run_id
        assert complete(conn, flow, "a", a, "A") is True
    b_claims = {c["flow_run_id"]: c for c in claim(conn, flow, "b")}
    c_claims = {c["flow_run_id"]: c for c in claim(conn, flow, "c")}
    assert set(b_claims) == set(c_claims) == set(run_ids)

    barrier = threading.Barrier(2, timeout=TIMEOUT)
    results: list[bool] = []

    def worker(step_name: str, claims: dict[int, dict[str, Any]]) -> Callable[[], None]:
        def work() -> None:
            with psycopg.connect(
                dsn
            ) as own:  # not autocommit: one explicit transaction per completion
                for run_id in run_ids:
                    barrier.wait()
                    with own.transaction():
                        results.append(
                            complete(own, flow, step_name, claims[run_id], step_name.upper())
                        )

        return work

    run_threads(worker("b", b_claims), worker("c", c_claims))
    return run_ids, results


def test_concurrent_branch_completions_queue_the_join_step_exactly_once(dsn, conn):
    fn(
        conn,
        "cb_create_flow",
        name="diamond",
        steps=J([step("a"), step("b", "a"), step("c", "a"), step("d", "b", "c")]),
    )
    completions = Completions(dsn)
    try:
        run_ids, results = race_branches(dsn, conn, "diamond", runs=25)
        assert results == [True] * 50

        for run_id in run_ids:
            rows = call(
                conn, "cb_get_flow_step_status", flow_name="diamond", run_id=run_id, step_name="d"
            )
            assert [r["status"] for r in rows] == ["queued"]
        assert scalar(conn, "SELECT count(*) FROM catbird.cb_step_runs WHERE step_name = 'd'") == 25
        assert (
            scalar(
                conn,
                "SELECT bool_and(deps_remaining = 0) FROM catbird.cb_step_runs"
                " WHERE step_name = 'd'",
            )
            is True
        )

        joins = claim(conn, "diamond", "d")
        assert sorted(j["flow_run_id"] for j in joins) == sorted(run_ids)  # one join per run
        assert claim(conn, "diamond", "d") == []
        for join in joins:
            assert join["step_outputs"] == {"b": "B", "c": "C"}
            assert complete(conn, "diamond", "d", join, "D") is True
        assert completions.collect() == {run_id: 1 for run_id in run_ids}
        for run_id in run_ids:
            [info] = call(conn, "cb_get_flow_run", name="diamond", run_id=run_id)
            assert (info["status"], info["output"]) == ("completed", "D")
    finally:
        completions.close()


def test_concurrent_completions_of_the_last_two_steps_finish_the_run_once(dsn, conn):
    # b and c are both terminal: whichever commits second finishes the run.
    fn(conn, "cb_create_flow", name="fork", steps=J([step("a"), step("b", "a"), step("c", "a")]))
    completions = Completions(dsn)
    try:
        run_ids, results = race_branches(dsn, conn, "fork", runs=25)
        assert results == [True] * 50
        assert completions.collect() == {run_id: 1 for run_id in run_ids}
        for run_id in run_ids:
            [info] = call(conn, "cb_get_flow_run", name="fork", run_id=run_id)
            assert (info["status"], info["output"]) == ("completed", "B")  # output_priority: b, c
    finally:
        completions.close()


def test_a_signal_racing_the_last_dependency_queues_the_step_exactly_once(dsn, conn):
    fn(conn, "cb_create_flow", name="sig", steps=J([step("a"), step("b", "a", signal=True)]))
    run_ids = [fn(conn, "cb_run_flow", name="sig", input=J({})) for _ in range(25)]
    a_claims = {c["flow_run_id"]: c for c in claim(conn, "sig", "a")}
    barrier = threading.Barrier(2, timeout=TIMEOUT)
    results: dict[str, list[bool]] = {"complete": [], "signal": []}

    def completer() -> None:
        with psycopg.connect(dsn, autocommit=True) as own:
            for run_id in run_ids:
                barrier.wait()
                results["complete"].append(complete(own, "sig", "a", a_claims[run_id], "A"))

    def signaler() -> None:
        with psycopg.connect(dsn, autocommit=True) as own:
            for run_id in run_ids:
                barrier.wait()
                results["signal"].append(
                    fn(
                        own,
                        "cb_signal_flow",
                        flow_name="sig",
                        run_id=run_id,
                        step_name="b",
                        input=J("go"),
                    )
                )

    run_threads(completer, signaler)
    assert results == {"complete": [True] * 25, "signal": [True] * 25}
    claims = claim(conn, "sig", "b")
    assert sorted(c["flow_run_id"] for c in claims) == sorted(run_ids)
    assert all((c["signal_input"], c["step_outputs"]) == ("go", {"a": "A"}) for c in claims)


def test_cancel_racing_the_last_completion_ends_the_run_one_way(dsn, conn):
    fn(conn, "cb_create_flow", name="solo", steps=J([step("a")]))
    run_ids = [fn(conn, "cb_run_flow", name="solo", input=J({})) for _ in range(25)]
    claims = {c["flow_run_id"]: c for c in claim(conn, "solo", "a")}
    barrier = threading.Barrier(2, timeout=TIMEOUT)
    completed: dict[int, bool] = {}
    canceled: dict[int, bool] = {}

    def completer() -> None:
        with psycopg.connect(dsn, autocommit=True) as own:
            for run_id in run_ids:
                barrier.wait()
                completed[run_id] = complete(own, "solo", "a", claims[run_id], "A")

    def canceler() -> None:
        with psycopg.connect(dsn, autocommit=True) as own:
            for run_id in run_ids:
                barrier.wait()
                canceled[run_id] = fn(own, "cb_cancel_flow", name="solo", run_id=run_id)

    run_threads(completer, canceler)
    for run_id in run_ids:
        [info] = call(conn, "cb_get_flow_run", name="solo", run_id=run_id)
        if completed[run_id]:  # the completion came first: nothing left to cancel
            assert (canceled[run_id], info["status"], info["output"]) == (False, "completed", "A")
        else:  # the cancel came first: the started step's report finished the cancel
            assert (canceled[run_id], info["status"], info["output"]) == (True, "canceled", None)


def test_early_completion_racing_a_sibling_completion_completes_the_run_once(dsn, conn):
    fn(conn, "cb_create_flow", name="race", steps=J([step("a"), step("b")]))
    run_ids = [fn(conn, "cb_run_flow", name="race", input=J({})) for _ in range(25)]
    a_claims = {c["flow_run_id"]: c for c in claim(conn, "race", "a")}
    b_claims = {c["flow_run_id"]: c for c in claim(conn, "race", "b")}
    completions = Completions(dsn)
    barrier = threading.Barrier(2, timeout=TIMEOUT)
    early: dict[int, bool] = {}
    sibling: dict[int, bool] = {}

    def early_worker() -> None:
        with psycopg.connect(dsn, autocommit=True) as own:
            for run_id in run_ids:
                barrier.wait()
                early[run_id] = fn(
                    own,
                    "cb_complete_flow_early",
                    flow_name="race",
                    run_id=run_id,
                    step_name="a",
                    output=J("early"),
                )

    def sibling_worker() -> None:
        with psycopg.connect(dsn, autocommit=True) as own:
            for run_id in run_ids:
                barrier.wait()
                sibling[run_id] = complete(own, "race", "b", b_claims[run_id], "B")

    try:
        run_threads(early_worker, sibling_worker)
        # A was still started, so it always wins.
        assert early == {run_id: True for run_id in run_ids}
        for run_id in run_ids:
            [info] = call(conn, "cb_get_flow_run", name="race", run_id=run_id)
            assert (info["status"], info["output"]) == ("completed", "early")
            [b] = call(
                conn, "cb_get_flow_step_status", flow_name="race", run_id=run_id, step_name="b"
            )
            assert b["status"] == ("completed" if sibling[run_id] else "canceled")
            assert complete(conn, "race", "a", a_claims[run_id], "late") is False
        assert completions.collect() == {run_id: 1 for run_id in run_ids}
    finally:
        completions.close()


def test_concurrent_claims_never_hand_out_the_same_step(dsn, conn):
    fn(conn, "cb_create_flow", name="solo", steps=J([step("a")]))
    fn(conn, "cb_run_flow", name="solo", inputs=[J(i) for i in range(200)])
    barrier = threading.Barrier(4, timeout=TIMEOUT)
    claimed: list[list[int]] = [[] for _ in range(4)]

    def worker(n: int) -> Callable[[], None]:
        def work() -> None:
            with psycopg.connect(dsn, autocommit=True) as own:
                barrier.wait()
                while batch := claim(own, "solo", "a", 7):
                    claimed[n].extend(c["id"] for c in batch)

        return work

    run_threads(*(worker(n) for n in range(4)))
    every = [i for ids in claimed for i in ids]
    assert len(every) == len(set(every)) == 200


def test_runs_waiting_on_an_uncommitted_concurrency_key_holder_return_its_id(dsn, conn):
    # A cb_run_flow blocked on the unique key of a run that is not committed yet must,
    # once that run commits, return its id (as cb_send does), not fail.
    fn(conn, "cb_create_flow", name="solo", steps=J([step("a")]))
    with connections(dsn, 3) as (holder, w1, w2), ThreadPoolExecutor(2) as pool:
        with holder.transaction():
            held = fn(holder, "cb_run_flow", name="solo", input=J("holder"), concurrency_key="k")
            futures = [
                pool.submit(fn, w, "cb_run_flow", name="solo", input=J("w"), concurrency_key="k")
                for w in (w1, w2)
            ]
            wait_until_blocked(conn, w1.info.backend_pid, w2.info.backend_pid)
        assert [f.result(timeout=TIMEOUT) for f in futures] == [held, held]
    assert [r["id"] for r in call(conn, "cb_list_flow_runs", name="solo")] == [held]


def test_runs_waiting_on_a_concurrency_key_holder_that_rolls_back_share_one_new_run(dsn, conn):
    fn(conn, "cb_create_flow", name="solo", steps=J([step("a")]))
    with connections(dsn, 3) as (holder, w1, w2), ThreadPoolExecutor(2) as pool:
        holder.execute("BEGIN")
        fn(holder, "cb_run_flow", name="solo", input=J("holder"), concurrency_key="k")
        futures = [
            pool.submit(fn, w, "cb_run_flow", name="solo", input=J("w"), concurrency_key="k")
            for w in (w1, w2)
        ]
        wait_until_blocked(conn, w1.info.backend_pid, w2.info.backend_pid)
        holder.execute("ROLLBACK")
        ids = {f.result(timeout=TIMEOUT) for f in futures}
    [run] = call(conn, "cb_list_flow_runs", name="solo")
    assert ids == {run["id"]}


# --------------------------------------------------------------------------- a large map step


def test_two_workers_complete_a_thousand_item_map_step_exactly_once(dsn, conn):
    fn(
        conn,
        "cb_create_flow",
        name="big",
        steps=J([step("each", step_type="mapper"), step("after", "each")]),
    )
    run_id = fn(conn, "cb_run_flow", name="big", input=J(list(range(1000))))
    completions = Completions(dsn)
    barrier = threading.Barrier(2, timeout=TIMEOUT)
    seen: list[list[int]] = [[], []]

    def worker(n: int) -> Callable[[], None]:
        def work() -> None:
            with psycopg.connect(dsn, autocommit=True) as own:
                barrier.wait()
                while batch := call(
                    own,
                    "cb_claim_map_tasks",
                    flow_name="big",
                    step_name="each",
                    quantity=20,
                    hide_for=HIDE,
                ):
                    assert all(i["attempts"] == 1 for i in batch)
                    seen[n].extend(i["item"] for i in batch)
                    fn(
                        own,
                        "cb_complete_map_tasks",
                        flow_name="big",
                        step_name="each",
                        ids=[i["id"] for i in batch],
                        outputs=[J({"double": i["item"] * 2}) for i in batch],
                        attempts=[i["attempts"] for i in batch],
                    )

        return work

    try:
        run_threads(worker(0), worker(1))
        # Every item was handed out exactly once, and both workers took part.
        assert sorted(seen[0] + seen[1]) == list(range(1000))
        assert seen[0] and seen[1]
        assert (
            scalar(
                conn,
                "SELECT count(*) FILTER (WHERE status = 'completed' AND attempts = 1)"
                " FROM catbird.cb_map_tasks WHERE flow_run_id = %s",
                (run_id,),
            )
            == 1000
        )

        [each] = call(
            conn, "cb_get_flow_step_status", flow_name="big", run_id=run_id, step_name="each"
        )
        assert (each["status"], each["map_total"], each["map_done"]) == ("completed", 1000, 1000)
        expected = [{"double": 2 * i} for i in range(1000)]
        assert each["output"] == expected

        [after] = claim(conn, "big", "after")  # the dependent was queued once
        assert after["step_outputs"] == {"each": expected}
        assert complete(conn, "big", "after", after, "done") is True
        assert completions.collect() == {run_id: 1}
    finally:
        completions.close()
