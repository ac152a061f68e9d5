"""``catbird gc``: the engine's garbage collection, batch after batch.

``cb_gc`` works in bounded batches and reports what each removed; the
command calls it again while a batch did work (``--once``: one batch), so
a large backlog is cleared without one long transaction. On a terminal a
spinner shows the rows handled so far.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from .. import _sql
from ._common import DsnOption, JsonOption, open_client, report
from .progress import progress

__all__ = ["gc_command"]


def gc_command(
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Rows each kind of work handles per batch.", min=1)
    ] = 10000,
    stale_worker_after: Annotated[
        float,
        typer.Option(
            "--stale-worker-after",
            help="Seconds without heartbeat after which a worker is removed.",
            min=0.001,
        ),
    ] = 300.0,
    once: Annotated[bool, typer.Option("--once", help="Run a single batch.")] = False,
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> None:
    """Expire, fail lapsed leases, remove stale workers and purge retained runs (cb_gc)."""
    totals: dict[str, int] = {}
    batches = 0
    with open_client(dsn) as client, progress("Collecting garbage", unit="rows") as advance:
        while True:
            counters: dict[str, Any] = client.execute(
                _sql.gc(batch_size=batch_size, stale_worker_after=stale_worker_after)
            )
            batches += 1
            done = sum(int(v) for v in counters.values())
            for key, value in counters.items():
                totals[key] = totals.get(key, 0) + int(value)
            advance(done)
            if once or done == 0:
                break
    worked = {k: v for k, v in sorted(totals.items()) if v}
    lines = ", ".join(f"{escape(k)}={v}" for k, v in worked.items()) or "nothing to collect"
    report(
        as_json,
        {**totals, "batches": batches},
        f"gc ({batches} batch{'' if batches == 1 else 'es'}): {lines}",
    )
