"""Exponential backoff with jitter, for whatever reconnects to the database
(the worker's pools and listener, a Wire node's LISTEN connection)."""

from __future__ import annotations

import logging
import random
from typing import Any

__all__ = ["Backoff"]


class Backoff:
    """Delays for reconnecting: 0.1 s doubling to ``high``, with jitter.
    Failures are logged on ``log`` (the caller's logger)."""

    def __init__(self, log: logging.Logger, low: float = 0.1, high: float = 5.0) -> None:
        self.log = log
        self.low, self.high = low, high
        self.failures = 0

    def next(self) -> float:
        delay = min(self.high, self.low * 2 ** min(self.failures, 16))
        self.failures += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.failures = 0

    def failed(self, message: str, *args: Any) -> float:
        """Count a failure and log it; returns the delay before the next try.

        ``message`` ends with a placeholder for the delay. The first failure
        in a row is a warning, the next ones (an outage goes on) are debug.
        """
        delay = self.next()
        level = logging.WARNING if self.failures == 1 else logging.DEBUG
        self.log.log(level, message, *args, delay)
        return delay
