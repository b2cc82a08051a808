"""One thread of this process's own for the hot paths' database work: the guard's (twice per
outbound call) and the JSON API's reads (every request).

``sync_to_async`` would do, but its bookkeeping (thread-sensitive contexts, context restoring)
costs about as much as the statements; and under Django's ASGI handler it runs each request's
work in a thread of its own, which opens a database connection of its own, every request. A
plain executor with one long-lived thread, and the caller's context variables copied in (so log
lines keep their ``analysis_id`` and ``request_id``), costs a fraction.

The thread keeps its connection across calls, as a worker process does; one that failed (the
server restarted, say) is checked before the next call and replaced if it no longer works, as
Django does for a request's connection (``CONN_HEALTH_CHECKS``).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from django.db import connections

P = ParamSpec("P")
T = TypeVar("T")

_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eidolon-db")


def _replace_failed_connections() -> None:
    for connection in connections.all(initialized_only=True):
        if connection.connection is not None and connection.errors_occurred:
            if connection.is_usable():
                connection.errors_occurred = False
            else:
                connection.close()


def _call(function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    _replace_failed_connections()
    return function(*args, **kwargs)


async def in_db_thread(function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``function`` in this process's database thread and wait for its result."""
    context = contextvars.copy_context()
    call = functools.partial(context.run, _call, function, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_executor, call)
