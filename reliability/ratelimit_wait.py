"""Waiting for a reserved slot of a rate-limit budget, and taking back the time that replies
smaller than their estimate give back.

A reservation charges its estimated output tokens as time on the budget's output-token slots.
A reply that uses fewer gives that time back (``ratelimit.reconcile``): the next output slot
moves back by it, the next request and input slots as far as the last slot had waited for
output tokens (``output_slack``), and ``output_seconds_returned`` counts it.
Everyone already waiting was placed behind that estimate: while waiting, a caller looks at the
counter every 1/120 of the window (0.5 s of a minute) and moves its own slot earlier by what
was returned since it was placed, so the capacity goes to the callers in the queue, in their
order, and the callers who reserve next follow them.

A moved slot never comes closer than the request spacing (or the input tokens' slot) after the
requests this process started (``_started_floor``), checked again just before starting. Across
processes, a moved slot is not checked against a request another process has just started:
early on, while estimates still run high, two requests of two processes may start closer than
the spacing (the API's own buckets hold a minute's worth, so this does not earn a 429).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async

from reliability import metrics
from reliability.clock import SYSTEM_CLOCK, Clock
from reliability.models import RateLimitBudget
from reliability.ratelimit import Reservation, release
from reliability.sql import by_name, prepared_select

# A pause that began while a caller slept is honoured only if it still has this long to run.
_PAUSE_EPSILON = 0.001
# How often a waiting caller looks whether replies gave time back (or a 429 paused the budget),
# as a fraction of the budget's window: every 0.5 s of a minute.
RECHECK_FRACTION_OF_WINDOW = 1 / 120

# Per budget: the earliest the next request may start after the requests this process started
# (their request spacing and input tokens), however much output time was given back.
_started_floor: dict[str, float] = {}


def _waiting_state(name: str) -> dict[str, Any]:
    return prepared_select(
        "budget_waiting_state",
        model=RateLimitBudget,
        condition=by_name,
        fields=["paused_until", "output_seconds_returned"],
        params={"name": name},
    ) or {"paused_until": 0.0, "output_seconds_returned": 0.0}


def _after_sleep(name: str, after_waiting: Callable[[], None] | None) -> dict[str, Any]:
    if after_waiting is not None:
        after_waiting()
    return _waiting_state(name)


def moved_earlier(reservation: Reservation, *, returned: float, now: float) -> Reservation:
    """``reservation`` with its slot moved earlier by the output time returned since it was
    placed, never before now or before ``_started_floor``."""
    gained = returned - reservation.output_seconds_returned
    if gained <= 0:
        return reservation
    start_at = max(reservation.start_at - gained, _started_floor.get(reservation.name, 0.0), now)
    start_at = min(start_at, reservation.start_at)
    return dataclasses.replace(reservation, start_at=start_at, output_seconds_returned=returned)


def forget_started_requests() -> None:
    """Forget the requests this process started (tests start from a clean slate)."""
    _started_floor.clear()


def _started(reservation: Reservation, *, at: float) -> None:
    spacing = max(
        reservation.seconds_per_request,
        reservation.input_tokens * reservation.seconds_per_input_token,
    )
    _started_floor[reservation.name] = max(_started_floor.get(reservation.name, 0.0), at + spacing)


async def wait_for_slot(
    reservation: Reservation,
    *,
    reserve_again: Callable[[], Reservation],
    on_wait: Callable[[float], None] | None = None,
    clock: Clock = SYSTEM_CLOCK,
    recheck: float | None = None,
    after_waiting: Callable[[], None] | None = None,
) -> Reservation:
    """Sleep until the reservation's slot (no lock or transaction held); return the slot used.

    Every ``recheck`` seconds of waiting the slot moves earlier by the output time replies gave
    back (see the module). The slot is given back and the caller queues again when a 429
    elsewhere paused the budget while it slept, or when it wakes too late for its slot (a busy
    event loop, a starved process): sent late, it would bunch up with the requests after it
    and a window could hold more than the limit. Half the headroom is allowed for that
    lateness, the other half for the network.

    ``after_waiting`` runs (in the same trip to the database) after each sleep, before the
    lateness check: if it raises, the slot is given back and the exception propagates.
    """
    began = clock.monotonic()
    recheck = recheck or reservation.window_seconds * RECHECK_FRACTION_OF_WINDOW
    if reservation.output_tokens * reservation.seconds_per_output_token <= (
        reservation.seconds_per_request
    ):
        # Output tokens do not space this budget's requests: nothing returned can move the slot,
        # and every wake-up early is a chance to start late (one sleep, as before).
        recheck = math.inf
    reported = None
    while True:
        if (wait := reservation.start_at - clock.now()) > 0:
            if on_wait is not None and reported != reservation.start_at:
                reported = reservation.start_at
                on_wait(reported)
            await clock.sleep(min(wait, recheck))
            try:
                state = await sync_to_async(_after_sleep)(reservation.name, after_waiting)
            except Exception:
                await sync_to_async(release)(reservation)
                raise
            if state["paused_until"] > clock.now() + _PAUSE_EPSILON:
                reservation = await _requeue(reservation, reserve_again, why="paused")
                continue
            reservation = moved_earlier(
                reservation, returned=state["output_seconds_returned"], now=clock.now()
            )
            continue
        if (floor := _started_floor.get(reservation.name, 0.0)) > clock.now() + _PAUSE_EPSILON:
            # Another caller of this process started since this slot was moved: keep its
            # spacing (never later than the slot first granted).
            start_at = min(floor, max(reservation.placed_at, reservation.start_at))
            if start_at > reservation.start_at:
                reservation = dataclasses.replace(reservation, start_at=start_at)
                continue
        if clock.now() - reservation.start_at <= reservation.max_lateness:
            break
        reservation = await _requeue(reservation, reserve_again, why="late")
    _started(reservation, at=clock.now())
    metrics.ratelimit_wait.labels(budget=reservation.name).observe(clock.monotonic() - began)
    return reservation


async def _requeue(
    reservation: Reservation, reserve_again: Callable[[], Reservation], *, why: str
) -> Reservation:
    metrics.ratelimit_requeued.labels(budget=reservation.name, why=why).inc()
    await sync_to_async(release)(reservation)
    return await sync_to_async(reserve_again)()
