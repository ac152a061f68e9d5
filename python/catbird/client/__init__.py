"""The typed client: statements run over a psycopg connection or pool.

The asyncio modules (``*_async.py``) are the source; the sync modules beside
them are generated from them by ``tools/async_to_sync.py`` and must not be
edited by hand.
"""

from .client import Client
from .client_async import AsyncClient
from .handles import FlowHandle, RunHandle, TaskHandle
from .handles_async import AsyncFlowHandle, AsyncRunHandle, AsyncTaskHandle
from .reader import AsyncReader, Reader

__all__ = [
    "AsyncClient",
    "AsyncFlowHandle",
    "AsyncReader",
    "AsyncRunHandle",
    "AsyncTaskHandle",
    "Client",
    "FlowHandle",
    "Reader",
    "RunHandle",
    "TaskHandle",
]
