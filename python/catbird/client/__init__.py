"""The typed client: statements run over a psycopg connection or pool.

The asyncio modules (``*_async.py``) are the source; the sync modules beside
them are generated from them by ``tools/async_to_sync.py`` and must not be
edited by hand.
"""

from .client import Client
from .client_async import AsyncClient
from .flow_handles import AsyncFlowHandle, FlowHandle
from .handles import AsyncTaskHandle, TaskHandle
from .reader import AsyncReader, Reader

__all__ = [
    "AsyncClient",
    "AsyncFlowHandle",
    "AsyncReader",
    "AsyncTaskHandle",
    "Client",
    "FlowHandle",
    "Reader",
    "TaskHandle",
]
