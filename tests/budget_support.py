"""Helpers that tests and benchmarks use to drive and check rate-limit budgets."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from asgiref.sync import sync_to_async

from reliability.clock import SYSTEM_CLOCK, Clock
from reliability.ratelimit import Ask, Reservation, reserve
from reliability.ratelimit_wait import wait_for_slot


async def acquire(
    name: str,
    *,
    input_tokens: int,
    output_tokens: int,
    deadline: float | None = None,
    on_wait: Callable[[float], None] | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> Reservation:
    """Wait until budget ``name`` admits one request, as the guard does; return the reservation."""

    def reserve_slot() -> Reservation:
        return reserve(name, Ask(input_tokens, output_tokens, deadline=deadline), clock=clock)

    reservation = await sync_to_async(reserve_slot)()
    return await wait_for_slot(
        reservation, reserve_again=reserve_slot, on_wait=on_wait, clock=clock
    )


def busiest_window(times: Sequence[float], *, window: float) -> int:
    """How many of ``times`` the busiest window of ``window`` seconds holds: what an API that
    counts requests over a sliding window sees."""
    ordered = sorted(times)
    busiest = first = 0
    for last, moment in enumerate(ordered):
        while moment - ordered[first] >= window:
            first += 1
        busiest = max(busiest, last - first + 1)
    return busiest
