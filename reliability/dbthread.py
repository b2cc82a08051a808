"""One thread of this process's own for the guard's database work.

The guard touches the database twice per call, from async code. ``sync_to_async`` would do,
but its bookkeeping (thread-sensitive contexts, context restoring) costs about as much as the
statements; a plain executor with one thread, and the caller's context variables copied in (so
log lines keep their ``analysis_id``), costs a fraction. The thread has its own database
connection, like any thread Django runs code in.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eidolon-guard-db")


async def in_db_thread(function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``function`` in the guard's database thread and wait for its result."""
    context = contextvars.copy_context()
    call = functools.partial(context.run, function, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_executor, call)
