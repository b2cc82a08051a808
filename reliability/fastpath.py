"""The guard's admission and reservation without a thread hop, on PostgreSQL.

Every guarded call is admitted by its breaker and takes a slot of its budget before it goes out.
Through Django's synchronous ORM that means handing the work to a thread and back, which on
PostgreSQL costs more than the statements themselves. Here the very same statements (compiled
once from the ORM by ``reliability.sql``) run on a psycopg ``AsyncConnection`` of the event
loop's own.

Only the common case takes this path: a closed (or disabled) breaker and a budget that has a
slot. Anything else (a breaker to move to half-open, a probe slot to take, a row to create, a
refusal to explain, a statement not compiled yet, a connection problem) returns None and the
guard does it the ordinary way, in a thread. Nothing is written before the reservation itself,
so falling back is always safe.

The connection commits without waiting for the WAL flush (``synchronous_commit=off``): a server
crash can lose the last fraction of a second of reservations, never corrupt them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import weakref
from collections.abc import Mapping
from typing import Any

import structlog
from asgiref.sync import sync_to_async
from django.db import connections

from reliability import breaker, dbmetrics, metrics, ratelimit
from reliability.breaker import Permit
from reliability.clock import Clock
from reliability.models import CircuitBreaker, RateLimitBudget
from reliability.outcomes import BreakerVerdict
from reliability.ratelimit import Ask, Reservation
from reliability.ratelimit_headers import header_signals
from reliability.sql import (
    compiled_select,
    compiled_update,
    row_dict,
    unsynchronised_connection_params,
)

logger = structlog.get_logger(__name__)


class _Channel:
    """A connection and the lock that keeps one operation at a time on it (an operation's
    statements, and its transaction, must not interleave with another task's)."""

    def __init__(self) -> None:
        self.connection: Any = None
        self.lock = asyncio.Lock()

    async def open(self, using: str) -> Any:
        import psycopg

        if self.connection is None or self.connection.closed or self.connection.broken:
            params = unsynchronised_connection_params(connections[using])
            for django_only in ("cursor_factory", "context", "server_side_binding"):
                params.pop(django_only, None)
            self.connection = await psycopg.AsyncConnection.connect(**params, autocommit=True)
        return self.connection

    async def close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()


# Per event loop, two channels: admissions, and the records written in the background, so that
# a call's admission never waits behind the previous call's record.
_channels: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Channel]] = (
    weakref.WeakKeyDictionary()
)


def _channel(purpose: str) -> _Channel:
    loop_channels = _channels.setdefault(asyncio.get_running_loop(), {})
    if purpose not in loop_channels:
        loop_channels[purpose] = _Channel()
    return loop_channels[purpose]


def available(using: str = "default") -> bool:
    return connections[using].vendor == "postgresql"


async def close() -> None:
    """Close this event loop's connections (call before the loop ends)."""
    for channel in _channels.pop(asyncio.get_running_loop(), {}).values():
        await channel.close()


async def admit_and_reserve(
    *,
    breaker_name: str,
    budget_name: str,
    ask: Ask,
    clock: Clock,
    using: str = "default",
) -> tuple[Permit, Reservation] | None:
    """Admit and reserve for one call in the common case, or None to do it in a thread."""
    admission = compiled_select(breaker.ADMISSION_STATEMENT, model=CircuitBreaker, using=using)
    limits = compiled_select(ratelimit.CONFIG_STATEMENT, model=RateLimitBudget, using=using)
    if admission is None or limits is None:
        return None
    import psycopg

    try:
        channel = _channel("admit")
        async with channel.lock:
            cursor = (await channel.open(using)).cursor()
            async with cursor:
                # The breaker's row and the budget's limits in one round trip.
                row = await _fetch(
                    cursor,
                    _both(admission.sql, limits.sql),
                    [*admission.bind({"name": breaker_name}), *limits.bind({"name": budget_name})],
                )
                if row is None:
                    return None
                split = len(breaker.ADMISSION_FIELDS)
                state = row_dict(CircuitBreaker, breaker.ADMISSION_FIELDS, row[:split])
                if state["state"] not in breaker.FREE_STATES:
                    return None
                config = row_dict(RateLimitBudget, ratelimit.CONFIG_COLUMNS, row[split:])
                plan = ratelimit.plan_reservation(config, ask, now=clock.now())
                reserve = plan and compiled_update(
                    plan.statement_key,
                    model=RateLimitBudget,
                    returning=ratelimit.RESERVE_RETURNING,
                    using=using,
                )
                if reserve is None:
                    return None
                row = await _fetch(cursor, reserve.sql, reserve.bind(plan.params))
    except psycopg.Error as error:
        logger.warning("guard_fast_path_failed", error=type(error).__name__)
        await channel.close()
        return None
    if row is None:  # refused: the ordinary way says why
        return None
    metrics.ratelimit_requests.labels(budget=budget_name).inc()
    return breaker.permit_for(state), plan.reservation(*row)


async def record_success(
    *,
    permit: Permit,
    reservation: Reservation | None,
    duration: float,
    input_tokens: int,
    output_tokens: int,
    headers: Mapping[str, str],
    clock: Clock,
    using: str = "default",
) -> bool:
    """Count a quick success in a closed breaker and correct the budget's tokens.

    False (having written nothing) when the ordinary way is needed: a probe, a slow call, rate
    limit headers that pause or tighten the budget, statements not compiled yet.
    """
    if permit.is_probe or duration >= permit.slow_call_duration:
        return False
    now = clock.now()
    statement = breaker.record_statement(permit, BreakerVerdict.SUCCESS, slow=False, now=now)
    record = compiled_update(statement.key, model=CircuitBreaker, using=using)
    adjustment, adjust = None, None
    if reservation is not None:
        if headers and header_signals(headers, now=now).needs_writing(reservation.observed_limits):
            return False
        adjustment = ratelimit.correction(
            reservation, input_tokens=input_tokens, output_tokens=output_tokens
        )
        if adjustment is not None:
            adjust = compiled_update(ratelimit.ADJUST_STATEMENT, model=RateLimitBudget, using=using)
    if record is None or (adjustment is not None and adjust is None):
        return False
    import psycopg

    try:
        channel = _channel("record")
        async with channel.lock:
            connection = await channel.open(using)
            # Both statements or neither: a failure leaves nothing for the ordinary way to redo.
            together = connection.transaction() if adjust is not None else contextlib.nullcontext()
            async with together, connection.cursor() as cursor:
                await _run(cursor, record.sql, record.bind(statement.params))
                counted = cursor.rowcount
                if adjust is not None:
                    params = ratelimit.adjustment_params(reservation, **adjustment)
                    await _run(cursor, adjust.sql, adjust.bind(params))
    except psycopg.Error as error:
        logger.warning("guard_fast_path_failed", error=type(error).__name__)
        await channel.close()
        return False  # a statement that failed wrote nothing; the ordinary way tries again
    if not counted:  # the breaker moved on while the call ran: count it, decide nothing
        await sync_to_async(breaker.count_success)(permit)
    metrics.breaker_calls.labels(breaker=permit.name, outcome="success").inc()
    if reservation is not None:
        ratelimit.count_tokens(reservation, input_tokens=input_tokens, output_tokens=output_tokens)
    return True


@functools.lru_cache(maxsize=8)
def _both(breaker_sql: str, budget_sql: str) -> str:
    """Two one-row selects as one row (both compiled by the ORM, parameters bound)."""
    return f"SELECT * FROM ({breaker_sql}) AS breaker CROSS JOIN ({budget_sql}) AS budget"  # noqa: S608


async def _fetch(cursor: Any, sql: str, params: list[Any]) -> Any:
    await _run(cursor, sql, params)
    return await cursor.fetchone()


async def _run(cursor: Any, sql: str, params: list[Any]) -> None:
    """A prepared statement on the loop's own connection, counted as Django's queries are."""
    began = time.perf_counter()
    await cursor.execute(sql, params, prepare=True)
    dbmetrics.observe_query(sql, time.perf_counter() - began)
