"""Threads for plain (sync) handlers."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["HandlerThreads"]


class HandlerThreads:
    """Daemon threads for plain (sync) handlers.

    Not a ThreadPoolExecutor: its threads are joined at interpreter exit, so
    one stuck handler would keep a stopped worker process alive. These are
    daemon threads, and a result that arrives after its waiter was cancelled
    is dropped.
    """

    def __init__(self, max_threads: int) -> None:
        self._max = max(1, max_threads)
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._busy = 0

    def call(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[tuple[bool, Any]]:
        """Call ``fn(*args)`` in a thread, in a copy of the caller's context.

        The copy carries the run context (:func:`catbird.current_run`) into
        the thread. The future gets ``(True, result)`` or ``(False, exception)``.
        """
        ctx = contextvars.copy_context()
        return self.submit(functools.partial(ctx.run, fn, *args))

    def submit(self, fn: Callable[[], Any]) -> asyncio.Future[tuple[bool, Any]]:
        """Run ``fn`` in a thread; the future gets ``(True, result)`` or ``(False, exception)``."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[bool, Any]] = loop.create_future()

        def settle(outcome: tuple[bool, Any]) -> None:
            if not future.done():
                future.set_result(outcome)

        def job() -> None:
            # The outcome travels as a result, exceptions included: raising a
            # BaseException such as GeneratorExit through an awaited future
            # upsets CPython 3.11.
            try:
                outcome: tuple[bool, Any] = (True, fn())
            except BaseException as exc:  # handler code: everything is an outcome
                outcome = (False, exc)
            with contextlib.suppress(RuntimeError):  # loop closed: nobody waits
                loop.call_soon_threadsafe(settle, outcome)

        with self._lock:
            self._busy += 1
            spawn = self._busy > self._threads and self._threads < self._max
            if spawn:
                self._threads += 1
        if spawn:
            threading.Thread(target=self._work, name="catbird-handler", daemon=True).start()
        self._queue.put(job)
        return future

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                with self._lock:
                    self._threads -= 1
                return
            try:
                job()
            finally:
                with self._lock:
                    self._busy -= 1

    def shutdown(self) -> None:
        """Let idle threads exit (busy ones end with their handler)."""
        with self._lock:
            threads = self._threads
        for _ in range(threads):
            self._queue.put(None)
