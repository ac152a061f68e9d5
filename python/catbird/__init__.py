"""catbird: a job engine inside PostgreSQL, with a thin Python runtime.

::

    import catbird

    client = catbird.Client.connect(dsn)
    client.create_queue("orders")
    client.send("orders", {"id": 1})
    msgs = client.read("orders", quantity=10, hide_for=30.0)
    client.delete("orders", [m.id for m in msgs])
"""

from __future__ import annotations

from .aio import AsyncClient
from .client import Client
from .errors import (
    AlreadyExists,
    CatbirdError,
    InvalidArgument,
    NotFound,
    ObjectInUse,
    RunCanceled,
    RunError,
    RunExpired,
    RunFailed,
    RunSkipped,
)
from .models import Binding, Message, QueueInfo
from .reader import AsyncReader, Reader

__all__ = [
    "AlreadyExists",
    "AsyncClient",
    "AsyncReader",
    "Binding",
    "CatbirdError",
    "Client",
    "InvalidArgument",
    "Message",
    "NotFound",
    "ObjectInUse",
    "QueueInfo",
    "Reader",
    "RunCanceled",
    "RunError",
    "RunExpired",
    "RunFailed",
    "RunSkipped",
]
