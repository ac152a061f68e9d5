"""catbird.Flow definitions and the flow calls of Client/AsyncClient.

Definition checks need no database; the client tests run against the test's
own database and drive steps by hand through the worker-protocol queries
(the Worker itself is tested in tests/test_flow_worker.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, Optional

import psycopg
import pytest

import catbird
from catbird import (
    AsyncClient,
    Client,
    DefinitionError,
    Flow,
    FlowFailure,
    FlowHandle,
    InvalidArgument,
    NotFound,
    RunCanceled,
    RunFailed,
    _sql,
)


@dataclasses.dataclass
class Order:
    id: int


@dataclasses.dataclass
class Charge:
    amount: int


# ------------------------------------------------------------------ definitions


def order_flow() -> Flow:
    flow = Flow("order_processing", output_priority=["ship"], description="orders")

    @flow.step()
    def validate(input: Order) -> dict[str, bool]:
        return {"ok": input.id > 0}

    @flow.step(depends_on=["validate"], condition="validate.ok eq true")
    def charge(input: Order, validate: dict[str, bool]) -> Charge:
        return Charge(input.id * 10)

    @flow.step(depends_on=["charge"], signal=True)
    def ship(input: Order, signal: dict[str, Any], charge: Charge | None) -> str:
        return "shipped"

    return flow


def test_a_flow_definition_is_the_steps_json_of_cb_create_flow() -> None:
    flow = order_flow()
    assert list(flow.steps) == ["validate", "charge", "ship"]
    assert flow.output_priority == ("ship",)
    assert flow.definition()[2] == {
        "name": "ship",
        "description": None,
        "step_type": "normal",
        "signal": True,
        "condition": None,
        "depends_on": [{"name": "charge"}],
        "map_source_step_name": None,
        "reduce_source_step_name": None,
        "ignore_output": [],
        # the handler's retry policy is stored with the step (backoffs in ms)
        "max_retries": 2,
        "backoff_min": 100,
        "backoff_max": 2000,
    }
    assert flow.definition()[1]["condition"] == "validate.ok eq true"
    args = flow.create_args()
    assert (args["description"], args["output_priority"], args["on_fail"]) == (
        "orders",
        ["ship"],
        False,
    )
    # A step is still its function.
    assert flow.steps["validate"](Order(3)) == {"ok": True}
    assert flow.steps["charge"].output_codec.decode({"amount": 5}) == Charge(5)


def test_map_generator_and_reduce_steps_are_described() -> None:
    flow = Flow("kinds")

    @flow.step()
    def source(input: Any) -> list[int]:
        return [1, 2]

    @flow.step(map="source")
    def each(item: int) -> int:
        return item

    @flow.step(map="input", depends_on=["source"])
    def over_input(item: int, source: list[int]) -> int:
        return item

    @flow.step(generator=True)
    async def gen(input: Any) -> Any:
        yield 1

    @flow.step(reduce="gen", initial=0)
    def fold(acc: int, item: int) -> int:
        return acc + item

    steps = {s["name"]: s for s in flow.definition()}
    assert (steps["each"]["step_type"], steps["each"]["map_source_step_name"]) == (
        "mapper",
        "source",
    )
    assert steps["each"]["depends_on"] == [{"name": "source"}]  # the map source is a dependency
    assert (steps["over_input"]["step_type"], steps["over_input"]["map_source_step_name"]) == (
        "mapper",
        None,
    )
    assert steps["gen"]["step_type"] == "generator"
    assert (steps["fold"]["step_type"], steps["fold"]["reduce_source_step_name"]) == (
        "reducer",
        "gen",
    )
    assert flow.output_priority == ("each", "over_input", "fold")
    assert flow.steps["each"].output_codec.decode([1]) == [1]


def test_a_conditional_dependency_must_be_optional() -> None:
    flow = order_flow()
    with pytest.raises(DefinitionError, match=r"'charge'.*must be annotated Optional.*condition"):

        @flow.step(depends_on=["charge"])
        def invoice(charge: Charge) -> None: ...

    # Optional[...], X | None and no annotation are all fine.
    @flow.step(depends_on=["charge"])
    def a(charge: Optional[Charge]) -> None: ...  # noqa: UP045 - the typing spelling on purpose

    @flow.step(depends_on=["charge"])
    def b(charge: Charge | None) -> None: ...

    @flow.step(depends_on=["charge"])
    def c(charge) -> None: ...  # type: ignore[no-untyped-def]


def test_unknown_dependencies_are_rejected() -> None:
    flow = Flow("deps")
    with pytest.raises(DefinitionError, match=r"unknown dependency 'later'.*before"):

        @flow.step(depends_on=["later"])
        def first(later: int) -> None: ...

    @flow.step()
    def a(input: Any) -> int:
        return 1

    with pytest.raises(DefinitionError, match="listed twice"):
        flow.step("b", depends_on=["a", "a"])(lambda a: a)
    with pytest.raises(DefinitionError, match="not a dependency"):
        flow.step("b", ignore_output=["a"])(lambda input: input)
    with pytest.raises(DefinitionError, match="already has a step"):
        flow.step("a")(lambda input: input)
    with pytest.raises(DefinitionError, match="reserved"):
        flow.step("input")(lambda input: input)
    with pytest.raises(InvalidArgument, match="invalid step name"):
        flow.step("Bad-Name")(lambda input: input)
    with pytest.raises(InvalidArgument):
        Flow("Bad Flow")


def test_handler_parameters_must_match_what_the_step_receives() -> None:
    flow = Flow("params")

    @flow.step()
    def a(input: Any) -> int:
        return 1

    with pytest.raises(DefinitionError, match=r"no parameter 'a'.*ignore_output"):
        flow.step("missing", depends_on=["a"])(lambda input: input)
    with pytest.raises(DefinitionError, match=r"parameter 'typo' that receives nothing.*input, a"):

        @flow.step(depends_on=["a"])
        def typo(a: int, typo: int) -> None: ...

    with pytest.raises(DefinitionError, match="'signal' that receives nothing"):

        @flow.step()
        def no_signal(signal: Any) -> None: ...

    with pytest.raises(DefinitionError, match="must take a parameter named 'item'"):

        @flow.step(map="input")
        def no_item(input: Any) -> None: ...

    with pytest.raises(DefinitionError, match="positional-only"):

        @flow.step()
        def positional(input: Any, /) -> None: ...

    with pytest.raises(DefinitionError, match="is a generator"):

        @flow.step()
        def yields(input: Any) -> Iterator[int]:
            yield 1

    with pytest.raises(DefinitionError, match="must be a generator function"):

        @flow.step(generator=True)
        def returns(input: Any) -> list[int]:
            return [1]

    # Ignored dependencies, defaults and **kwargs are fine.
    @flow.step(depends_on=["a"], ignore_output=["a"])
    def ignores(input: Any, extra: int = 3) -> None: ...

    @flow.step(depends_on=["a"])
    def catch_all(**deps: Any) -> None: ...

    assert [arg.name for arg in catch_all.handler.args] == ["a"]


def test_map_generate_and_reduce_options_are_checked() -> None:
    flow = Flow("kinds")

    @flow.step()
    def plain(input: Any) -> list[int]:
        return []

    @flow.step(generator=True, depends_on=["plain"])
    def gen(plain: list[int]) -> Iterator[int]:
        yield 1

    with pytest.raises(DefinitionError, match="at most one of map, generator and reduce"):
        flow.step("both", map="input", generator=True)
    with pytest.raises(DefinitionError, match="initial= is only for reducer"):
        flow.step("init", initial=0)
    with pytest.raises(DefinitionError, match="must name a mapper or generator"):
        flow.step("r", reduce="plain")(lambda acc, item: acc)
    with pytest.raises(DefinitionError, match=r"must take \(acc, item\)"):
        flow.step("r", reduce="gen")(lambda acc: acc)
    with pytest.raises(DefinitionError, match="only a generator step has an item handler"):
        plain.item(lambda item: item)
    with pytest.raises(DefinitionError, match="must take a parameter named 'item'"):
        gen.item(lambda input, plain: input)
    with pytest.raises(InvalidArgument, match="unknown handler option"):
        flow.step("opt", concurrenc=3)

    @gen.item(concurrency=9)
    def handle(item: int, plain: list[int]) -> str:
        return str(item)

    assert gen.item_options.concurrency == 9
    assert gen.item_handler is not None and gen.item_handler.output.annotation is str


def test_on_fail_handlers_are_checked() -> None:
    flow = Flow("failing")
    with pytest.raises(DefinitionError, match="exactly 2"):
        flow.on_fail(lambda input: None)
    with pytest.raises(DefinitionError, match=r"receives a catbird\.FlowFailure"):

        @flow.on_fail
        def wrong(input: Any, failure: int) -> None: ...

    @flow.on_fail(max_retries=4)
    def report(input: Any, failure: FlowFailure) -> None: ...

    assert flow.on_fail_handler is not None
    assert flow.on_fail_handler.options.max_retries == 4
    with pytest.raises(DefinitionError, match="no steps"):
        flow.definition()


def test_context_helpers_need_a_flow_step() -> None:
    with pytest.raises(catbird.NoRunContext):
        catbird.current_flow_run_id()
    with pytest.raises(catbird.NoRunContext):
        catbird.complete_early(1)
    with pytest.raises(catbird.NoRunContext):
        catbird.get_step("a")


# ------------------------------------------------------------------ client (sync)


@pytest.fixture
def client(conn: psycopg.Connection[Any]) -> Client:
    return Client(conn)


def claim(client: Client, flow: str, step: str) -> Any:
    [claimed] = client.execute(_sql.claim_steps(flow, step, quantity=1, hide_for=30))
    return claimed


def complete(client: Client, flow: str, step: str, output: Any) -> None:
    claimed = claim(client, flow, step)
    done = client.execute(
        _sql.complete_step_json(
            flow, step, claimed.id, catbird.codec.dumps(output), attempt=claimed.attempts
        )
    )
    assert done is True


def test_create_get_list_and_delete_flows(client: Client) -> None:
    flow = order_flow()
    client.create_flow(flow)
    client.create_flow(flow)  # the same definition again: a no-op
    info = client.get_flow("order_processing")
    assert (info.name, info.description, info.output_priority, info.on_fail) == (
        "order_processing",
        "orders",
        ("ship",),
        False,
    )
    ship = info.step("ship")
    assert (ship.step_type, ship.signal, ship.depends_on, ship.condition) == (
        "normal",
        True,
        ("charge",),
        None,
    )
    assert info.step("charge").condition == "validate.ok eq true"
    assert [f.name for f in client.list_flows()] == ["order_processing"]
    assert client.delete_flow(flow) is True
    assert client.delete_flow(flow) is False
    with pytest.raises(NotFound):
        client.get_flow(flow)


def test_a_definition_the_engine_rejects_raises_invalid_argument(client: Client) -> None:
    flow = Flow("bad")

    @flow.step(condition="input.x between 1")
    def a(input: Any) -> None: ...

    with pytest.raises(InvalidArgument):
        client.create_flow(flow)
    assert client.list_flows() == []


def test_run_a_flow_by_hand_and_wait_for_its_typed_output(client: Client) -> None:
    flow = order_flow()
    client.create_flow(flow)
    handle = client.run_flow(flow, Order(4), headers={"trace": "t1"})
    assert isinstance(handle, FlowHandle)
    info = handle.info()
    assert (info.status, info.input, info.headers) == ("started", {"id": 4}, {"trace": "t1"})
    assert [s.status for s in handle.steps()] == [
        "queued",
        "waiting_for_dependencies",
        "waiting_for_dependencies",
    ]
    with pytest.raises(TimeoutError):
        handle.wait_for_output(timeout=0.2)
    complete(client, "order_processing", "validate", {"ok": True})
    complete(client, "order_processing", "charge", {"amount": 40})
    assert handle.step("ship").status == "waiting_for_signal"
    assert client.signal_flow(flow, handle.id, "ship", {"go": True}) is True
    assert handle.signal("ship", {"go": False}) is False
    shipping = claim(client, "order_processing", "ship")
    assert (shipping.signal_input, shipping.step_outputs) == (
        {"go": True},
        {"charge": {"amount": 40}},
    )
    client.execute(_sql.complete_step_json("order_processing", "ship", shipping.id, '"shipped"'))
    assert handle.wait_for_output(timeout=5) == "shipped"
    assert client.wait_flow_output(flow, handle.id).status == "completed"  # type: ignore[union-attr]
    assert client.get_flow_run(flow, handle.id).output == "shipped"


def test_signal_errors(client: Client) -> None:
    flow = order_flow()
    client.create_flow(flow)
    handle = client.run_flow(flow, Order(1))
    with pytest.raises(InvalidArgument, match="does not take a signal"):
        client.signal_flow(flow, handle.id, "validate", 1)
    with pytest.raises(NotFound):
        client.signal_flow(flow, handle.id, "nope", 1)
    with pytest.raises(NotFound):
        client.signal_flow(flow, handle.id + 100, "ship", 1)


def test_failed_and_canceled_runs_raise_from_wait_for_output(client: Client) -> None:
    flow = order_flow()
    client.create_flow(flow)
    failing = client.run_flow(flow, Order(1))
    claimed = claim(client, "order_processing", "validate")
    status = client.execute(
        _sql.fail_step(
            "order_processing",
            "validate",
            claimed.id,
            "bad order",
            attempt=claimed.attempts,
            max_retries=0,  # overrides the stored policy (2 retries)
        )
    )
    assert status == "failed"
    with pytest.raises(RunFailed, match="bad order") as failed:
        failing.wait_for_output(timeout=5)
    assert (failed.value.status, failed.value.run_id) == ("failed", failing.id)
    assert failing.info().failed_step_name == "validate"

    canceled = client.run_flow(flow, Order(2))
    assert client.cancel_flow_run(flow, canceled.id, reason="no longer needed") is True
    assert canceled.cancel() is True  # idempotent
    with pytest.raises(RunCanceled):
        canceled.wait_for_output(timeout=5)
    assert canceled.info().cancel_reason == "no longer needed"
    assert client.cancel_flow_run(flow, failing.id) is False
    missing = client.flow_handle(flow, canceled.id + 100)
    with pytest.raises(NotFound):
        missing.wait_for_output(timeout=1)
    with pytest.raises(NotFound):
        client.get_flow_run(flow, canceled.id + 100)
    assert client.get_flow_run_steps(flow, canceled.id + 100) == []


def test_runs_are_listed_deduplicated_purged_and_cleared(client: Client) -> None:
    flow = order_flow()
    client.create_flow(flow)
    handles = client.run_flows(flow, [Order(1), Order(2), Order(3)])
    assert [h.info().input for h in handles] == [{"id": 1}, {"id": 2}, {"id": 3}]
    ids = [h.id for h in handles]
    assert [r.id for r in client.list_flow_runs(flow)] == ids[::-1]
    assert [r.id for r in client.list_flow_runs(flow, limit=1, before_id=ids[2])] == [ids[1]]
    first = client.run_flow(flow, Order(9), concurrency_key="k")
    again = client.run_flow(flow, Order(10), concurrency_key="k")
    assert again.id == first.id
    client.cancel_flow_run(flow, handles[0].id)
    assert client.purge_flow_runs(flow, 0) == 1  # only the finished run
    assert client.clear_flow_runs(flow) == 3


def test_bound_flows_start_from_published_messages(client: Client) -> None:
    flow = order_flow()
    client.create_flow(flow)
    client.bind_flow(flow, "orders.*")
    assert client.publish("orders.created", {"id": 77}) == 1
    [run] = client.list_flow_runs(flow)
    assert run.input == {"id": 77}
    assert client.unbind_flow(flow, "orders.*") is True
    assert client.unbind_flow(flow, "orders.*") is False
    assert client.publish("orders.created", {"id": 78}) == 0


# ------------------------------------------------------------------ client (async)


async def test_the_async_client_has_the_same_flow_calls(
    aconn: psycopg.AsyncConnection[Any],
) -> None:
    client = AsyncClient(aconn)
    flow = order_flow()
    await client.create_flow(flow)
    assert [f.name for f in await client.list_flows()] == ["order_processing"]
    handle = await client.run_flow(flow, Order(5))
    assert (await handle.info()).status == "started"
    assert [s.step_name for s in await handle.steps()] == ["validate", "charge", "ship"]
    assert (await handle.step("validate")).status == "queued"
    [claimed] = await client.execute(
        _sql.claim_steps("order_processing", "validate", quantity=1, hide_for=30)
    )
    await client.execute(
        _sql.complete_step_json("order_processing", "validate", claimed.id, '{"ok": false}')
    )
    # charge is skipped, ship waits for its signal
    assert await handle.signal("ship", None) is True
    assert await client.signal_flow(flow, handle.id, "ship", 1) is False
    [shipping] = await client.execute(
        _sql.claim_steps("order_processing", "ship", quantity=1, hide_for=30)
    )
    assert shipping.step_outputs == {}  # the skipped charge is absent
    await client.execute(_sql.complete_step_json("order_processing", "ship", shipping.id, '"x"'))
    assert await handle.wait_for_output(timeout=5) == "x"
    assert (await client.get_flow_run(flow, handle.id)).status == "completed"
    assert len(await client.list_flow_runs(flow)) == 1
    assert len(await client.get_flow_run_steps(flow, handle.id)) == 3
    other = await client.run_flow("order_processing", Order(6))
    assert await other.cancel() is True
    with pytest.raises(RunCanceled):
        await client.flow_handle(flow, other.id).wait_for_output(timeout=5)
    assert (await client.wait_flow_output(flow, other.id)).status == "canceled"  # type: ignore[union-attr]
    await client.bind_flow(flow, "a.b")
    assert await client.unbind_flow(flow, "a.b") is True
    assert await client.purge_flow_runs(flow, 0) == 2
    assert await client.clear_flow_runs(flow) == 0
    handles = await client.run_flows(flow, [Order(1), Order(2)])
    assert await client.cancel_flow_run(flow, handles[0].id) is True
    assert (await client.get_flow(flow)).name == "order_processing"
    assert await client.delete_flow(flow) is True
