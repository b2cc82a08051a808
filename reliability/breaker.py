"""Circuit breakers over shared database state, in the manner of resilience4j's.

A breaker admits or rejects each call (``admit``) and learns each outcome (``record``). Its
state lives in one ``CircuitBreaker`` row that every process changes with single conditional
``UPDATE`` statements; a ``generation`` number, bumped by every transition, makes each
transition happen exactly once however many processes race for it, and keeps late outcomes of
an earlier state from counting in the current one. No transaction is open while the guarded
call runs: ``admit`` and ``record`` are separate, short statements around it.

States: ``closed`` (admits; opens on N consecutive failures, or a failure-rate or slow-call-rate
threshold over a sliding window holding at least ``minimum_calls``), ``open`` (rejects until the
recovery timeout, then the next call moves it to ``half_open``), ``half_open`` (admits at most
``half_open_max_calls`` probes at once; one failure reopens, ``half_open_success_threshold``
successes close; if no probe settles it within ``half_open_max_duration`` it reopens), and the
operator modes ``forced_open`` (rejects everything) and ``disabled`` (admits everything, still
counts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import (
    BigIntegerField,
    Case,
    CharField,
    F,
    FloatField,
    IntegerField,
    Q,
    Value,
    When,
)
from django.db.models.functions import Greatest

from reliability import metrics
from reliability.clock import SYSTEM_CLOCK, Clock, epoch_datetime
from reliability.exceptions import CircuitOpenError
from reliability.families import family_of
from reliability.models import (
    CONFIG_FIELDS,
    BreakerState,
    BreakerTransition,
    CircuitBreaker,
    WindowType,
)
from reliability.outcomes import BreakerVerdict
from reliability.sql import Param, counter, int_param, named_row, prepared_update

logger = structlog.get_logger(__name__)

SYSTEM_ACTOR = "system"
# How soon a caller turned away by a saturated half-open breaker may try again.
HALF_OPEN_BUSY_RETRY_SECONDS = 1.0

_WINDOW_FIELDS = (
    "window_started_at",
    "window_calls",
    "window_failures",
    "window_slow_calls",
    "previous_window_calls",
    "previous_window_failures",
    "previous_window_slow_calls",
)
ADMISSION_FIELDS = ("id", "name", "state", "generation", "state_changed_at", *CONFIG_FIELDS)


@dataclass(frozen=True, kw_only=True)
class Permit:
    """Permission for one call, to be handed back to ``record`` with its outcome."""

    breaker_id: int
    name: str
    generation: int
    state: str  # the state that admitted the call: closed, half_open or disabled
    window_type: str
    window_size: int
    slow_call_duration: float

    @property
    def is_probe(self) -> bool:
        return self.state == BreakerState.HALF_OPEN

    @property
    def as_admitted(self) -> tuple[str, int]:
        """The breaker's (state, generation) when it admitted the call: what a transition the
        call's outcome makes expects it still to be."""
        return self.state, self.generation


@dataclass(frozen=True)
class WindowStats:
    calls: float
    failure_rate: float  # percent
    slow_rate: float  # percent


def breaker_defaults(name: str) -> dict[str, Any]:
    """Settings' defaults for breaker ``name``; a family's members take the family's."""
    defaults = settings.EIDOLON_BREAKER_DEFAULTS
    return dict(defaults.get(name) or defaults.get(family_of(name), {}))


def get_or_create_breaker(name: str, *, clock: Clock = SYSTEM_CLOCK) -> CircuitBreaker:
    """The named breaker, created on first use with the defaults from settings."""
    now = clock.now()
    breaker, _ = CircuitBreaker.objects.get_or_create(
        name=name,
        defaults={"state_changed_at": now, "window_started_at": now, **breaker_defaults(name)},
    )
    return breaker


ADMISSION_STATEMENT = "breaker_admission"
# States in which admitting a call changes nothing: the only ones the guard's fast path handles.
FREE_STATES = (BreakerState.CLOSED, BreakerState.DISABLED)


def _as_seen(state: str | None = None) -> Q:
    """The breaker is still as the caller saw it: in ``state`` (by default the ``state``
    parameter), at the ``generation`` parameter (no transition since)."""
    return Q(
        state=state or Param("state", CharField()),
        generation=Param("generation", BigIntegerField()),
    )


def _admission_row(name: str, clock: Clock) -> dict[str, Any]:
    return named_row(
        ADMISSION_STATEMENT,
        model=CircuitBreaker,
        name=name,
        fields=ADMISSION_FIELDS,
        create=lambda: get_or_create_breaker(name, clock=clock),
    )


def _count(breaker_id: int, total: str, *, failed_at: float | None = None) -> None:
    """Add one to a lifetime total (and stamp a failure), whatever the breaker's state."""
    stamp = failed_at is not None
    prepared_update(
        ("breaker_count", total, stamp),
        model=CircuitBreaker,
        values=lambda: {
            total: F(total) + 1,
            **({"last_failure_at": Param("now")} if stamp else {}),
        },
        params={"pk": breaker_id, "now": failed_at},
    )


def count_success(permit: Permit) -> None:
    """A success that arrived after its breaker moved on: counted, deciding nothing."""
    _count(permit.breaker_id, "total_successes")


def permit_for(row: dict[str, Any]) -> Permit:
    """The permit of a call admitted by a closed or disabled breaker (read from ``row``)."""
    return _permit(row, state=row["state"], generation=row["generation"])


def _permit(row: dict[str, Any], *, state: str, generation: int) -> Permit:
    return Permit(
        breaker_id=row["id"],
        name=row["name"],
        generation=generation,
        state=state,
        window_type=row["window_type"],
        window_size=row["window_size"],
        slow_call_duration=row["slow_call_duration"],
    )


def admit(name: str, *, clock: Clock = SYSTEM_CLOCK) -> Permit:
    """Admit one call through breaker ``name`` or raise ``CircuitOpenError`` at once."""
    row = _admission_row(name, clock)
    if (
        row["state"] == BreakerState.OPEN
        and clock.now() >= row["state_changed_at"] + row["recovery_timeout"]
    ):
        transition(
            row["id"],
            expected=(BreakerState.OPEN, row["generation"]),
            to_state=BreakerState.HALF_OPEN,
            reason=f"recovery timeout of {row['recovery_timeout']:g} s elapsed",
            clock=clock,
        )
        # Whoever won that race, the breaker has moved on: admit by its state now.
        row = _admission_row(name, clock)
    return _admit_in_state(row, clock=clock)


def confirm(permit: Permit, *, clock: Clock = SYSTEM_CLOCK) -> None:
    """Raise ``CircuitOpenError`` when breaker ``permit.name`` has moved on since it admitted
    ``permit`` to a state that would not admit it now: a call that waited for its rate-budget
    slot must not go out through a breaker that opened meanwhile, nor a probe through one that
    reopened while the probe waited (it no longer holds a probe's place)."""
    row = _admission_row(permit.name, clock)
    if row["generation"] == permit.generation or row["state"] in FREE_STATES:
        return
    if row["state"] == BreakerState.OPEN:
        _reject(row, retry_at=row["state_changed_at"] + row["recovery_timeout"])
    if row["state"] == BreakerState.HALF_OPEN:
        _reject(row, retry_at=clock.now(), detail="probing since this call was admitted")
    _reject(row, retry_at=None, detail="forced open by an operator")


def refuse_if_open(name: str, *, clock: Clock = SYSTEM_CLOCK) -> None:
    """Raise ``CircuitOpenError`` when breaker ``name`` would refuse a call now (open within its
    recovery timeout, or forced open); admits nothing and changes no state otherwise."""
    row = _admission_row(name, clock)
    if row["state"] == BreakerState.FORCED_OPEN:
        _reject(row, retry_at=None, detail="forced open by an operator")
    retry_at = row["state_changed_at"] + row["recovery_timeout"]
    if row["state"] == BreakerState.OPEN and clock.now() < retry_at:
        _reject(row, retry_at=retry_at)


def _admit_in_state(row: dict[str, Any], *, clock: Clock) -> Permit:
    state = row["state"]
    if state in FREE_STATES:
        return permit_for(row)
    if state == BreakerState.HALF_OPEN:
        return _admit_probe(row, clock=clock)
    if state == BreakerState.OPEN:
        _reject(row, retry_at=row["state_changed_at"] + row["recovery_timeout"])
    _reject(row, retry_at=None, detail="forced open by an operator")


def _admit_probe(row: dict[str, Any], *, clock: Clock) -> Permit:
    now = clock.now()
    if now >= row["state_changed_at"] + row["half_open_max_duration"]:
        transition(
            row["id"],
            expected=(BreakerState.HALF_OPEN, row["generation"]),
            to_state=BreakerState.OPEN,
            reason=(f"no probe settled within {row['half_open_max_duration']:g} s of half-open"),
            clock=clock,
        )
        _reject(row, retry_at=now + row["recovery_timeout"])
    slot = prepared_update(
        "breaker_probe_slot",
        model=CircuitBreaker,
        condition=lambda: (
            _as_seen(BreakerState.HALF_OPEN) & Q(half_open_in_flight__lt=F("half_open_max_calls"))
        ),
        values=lambda: {"half_open_in_flight": F("half_open_in_flight") + 1},
        params={"pk": row["id"], "generation": row["generation"]},
        returning=["generation"],
    )
    if slot is None:
        _reject(
            row,
            retry_at=now + HALF_OPEN_BUSY_RETRY_SECONDS,
            detail=f"{row['half_open_max_calls']} probe(s) already in flight",
        )
    return _permit(row, state=BreakerState.HALF_OPEN, generation=slot["generation"])


def _reject(row: dict[str, Any], *, retry_at: float | None, detail: str = "") -> NoReturn:
    _count(row["id"], "total_rejected")
    metrics.breaker_rejections.labels(breaker=row["name"], state=row["state"]).inc()
    raise CircuitOpenError(
        breaker=row["name"], state=row["state"], retry_at=retry_at, detail=detail
    )


def record(
    permit: Permit,
    verdict: BreakerVerdict,
    *,
    duration: float,
    reason: str = "",
    clock: Clock = SYSTEM_CLOCK,
) -> None:
    """Count the outcome of a call admitted by ``permit``; open or close the breaker if due."""
    slow = duration >= permit.slow_call_duration
    metrics.breaker_calls.labels(breaker=permit.name, outcome=verdict.value).inc()
    if permit.is_probe:
        _record_probe(permit, verdict, slow=slow, reason=reason, clock=clock)
    else:
        _record_in_window(permit, verdict, slow=slow, reason=reason, clock=clock)


def _total_field(verdict: BreakerVerdict) -> str:
    return {
        BreakerVerdict.SUCCESS: "total_successes",
        BreakerVerdict.FAILURE: "total_failures",
        BreakerVerdict.IGNORED: "total_ignored",
    }[verdict]


def _record_probe(
    permit: Permit, verdict: BreakerVerdict, *, slow: bool, reason: str, clock: Clock
) -> None:
    total = _total_field(verdict)
    now = clock.now()
    if verdict is BreakerVerdict.FAILURE or (verdict is BreakerVerdict.SUCCESS and slow):
        _count(permit.breaker_id, total, failed_at=now)
        why = "probe was slow" if verdict is BreakerVerdict.SUCCESS else f"probe failed: {reason}"
        _open_after(permit, reason=why, clock=clock)
        return
    succeeded = verdict is BreakerVerdict.SUCCESS

    def release_slot() -> dict[str, Any]:
        values = {
            "half_open_in_flight": Greatest(F("half_open_in_flight") - 1, Value(0)),
            total: F(total) + 1,
        }
        if succeeded:
            values["half_open_successes"] = F("half_open_successes") + 1
            values["last_success_at"] = Param("now")
        return values

    row = prepared_update(
        ("breaker_probe_settled", total),
        model=CircuitBreaker,
        condition=lambda: _as_seen(BreakerState.HALF_OPEN),
        values=release_slot,
        params={"pk": permit.breaker_id, "generation": permit.generation, "now": now},
        returning=["half_open_successes", "half_open_success_threshold"],
    )
    if row is None:  # the breaker moved on while this probe ran; count it, decide nothing
        _count(permit.breaker_id, total)
        return
    if succeeded and row["half_open_successes"] >= row["half_open_success_threshold"]:
        transition(
            permit.breaker_id,
            expected=permit.as_admitted,
            to_state=BreakerState.CLOSED,
            reason=f"{row['half_open_successes']} successful probe(s)",
            clock=clock,
        )


def _window_update(*, window_type: str, failed: bool, slow: bool) -> dict[str, Any]:
    """Column updates that add one call to a two-bucket sliding window, rolling it if due.

    The window keeps the current bucket and the previous one; the estimate weights the previous
    bucket by how much of it still lies inside the window (a sliding-window counter). SQL
    evaluates every right-hand side on the old row, so the roll and the increment are one step.
    Parameters: ``size``, and for time windows ``now``, ``roll_edge`` (now - size) and
    ``stale_edge`` (now - 2 * size).
    """
    increments = {
        ("window_calls", "previous_window_calls"): 1,
        ("window_failures", "previous_window_failures"): int(failed),
        ("window_slow_calls", "previous_window_slow_calls"): int(slow),
    }
    values: dict[str, Any] = {}
    if window_type == WindowType.TIME:
        stale = Q(window_started_at__lte=Param("stale_edge"))
        rolled = Q(window_started_at__lte=Param("roll_edge"))
        values["window_started_at"] = Case(
            When(stale, then=Param("now")),
            When(rolled, then=F("window_started_at") + Param("size")),
            default=F("window_started_at"),
            output_field=FloatField(),
        )
    else:
        stale = None
        rolled = Q(window_calls__gte=int_param("size"))
    for (current, previous), increment in increments.items():
        rolls = [When(stale, then=Value(0))] if stale is not None else []
        values[previous] = Case(
            *rolls,
            When(rolled, then=F(current)),
            default=F(previous),
            output_field=IntegerField(),
        )
        values[current] = counter(current, Value(increment), reset_when=rolled)
    return values


def window_stats(row: dict[str, Any] | CircuitBreaker, *, now: float) -> WindowStats:
    """Estimated calls, failure rate and slow-call rate over the sliding window at ``now``."""
    get = row.__getitem__ if isinstance(row, dict) else lambda key: getattr(row, key)
    size = get("window_size")
    current = (get("window_calls"), get("window_failures"), get("window_slow_calls"))
    previous = (
        get("previous_window_calls"),
        get("previous_window_failures"),
        get("previous_window_slow_calls"),
    )
    if get("window_type") == WindowType.TIME:
        elapsed = now - get("window_started_at")
        if elapsed >= 2 * size:  # both buckets have slid out, though no call has rolled them
            return WindowStats(calls=0.0, failure_rate=0.0, slow_rate=0.0)
        if elapsed >= size:
            previous, current, elapsed = current, (0, 0, 0), elapsed - size
        weight = 1.0 - elapsed / size
    else:
        weight = 1.0 - current[0] / size
    weight = min(1.0, max(0.0, weight))
    calls, failures, slow = (p * weight + c for p, c in zip(previous, current, strict=True))
    if calls <= 0:
        return WindowStats(calls=0.0, failure_rate=0.0, slow_rate=0.0)
    return WindowStats(
        calls=calls, failure_rate=100 * failures / calls, slow_rate=100 * slow / calls
    )


@dataclass(frozen=True)
class RecordStatement:
    """The UPDATE that counts one outcome in a closed (or disabled) breaker's window."""

    key: tuple
    params: dict[str, Any]
    decides: bool  # it must return the window, and may open the breaker


def record_statement(
    permit: Permit, verdict: BreakerVerdict, *, slow: bool, now: float
) -> RecordStatement:
    failed = verdict is BreakerVerdict.FAILURE
    decides = failed or slow
    return RecordStatement(
        key=("breaker_record", permit.window_type, failed, slow, decides),
        params={
            "pk": permit.breaker_id,
            "state": permit.state,
            "generation": permit.generation,
            "now": now,
            "size": permit.window_size,
            "roll_edge": now - permit.window_size,
            "stale_edge": now - 2 * permit.window_size,
        },
        decides=decides,
    )


def _record_in_window(
    permit: Permit, verdict: BreakerVerdict, *, slow: bool, reason: str, clock: Clock
) -> None:
    total = _total_field(verdict)
    if verdict is BreakerVerdict.IGNORED:
        _count(permit.breaker_id, total)
        return
    failed = verdict is BreakerVerdict.FAILURE
    now = clock.now()
    statement = record_statement(permit, verdict, slow=slow, now=now)

    def values() -> dict[str, Any]:
        return {
            "last_failure_at" if failed else "last_success_at": Param("now"),
            **_window_update(window_type=permit.window_type, failed=failed, slow=slow),
            "consecutive_failures": F("consecutive_failures") + 1 if failed else Value(0),
            total: F(total) + 1,
        }

    row = prepared_update(
        statement.key,
        model=CircuitBreaker,
        condition=_as_seen,
        values=values,
        params=statement.params,
        returning=(
            ("consecutive_failures", *_WINDOW_FIELDS, *CONFIG_FIELDS) if statement.decides else ()
        ),
    )
    if not row:  # the breaker moved on while this call ran; count it, decide nothing
        _count(permit.breaker_id, total, failed_at=now if failed else None)
        return
    if not statement.decides or permit.state != BreakerState.CLOSED:
        return  # disabled breakers count but never trip
    if why := _reason_to_open(row, now=now, last_failure=reason if failed else ""):
        _open_after(permit, reason=why, clock=clock)


def _open_after(permit: Permit, *, reason: str, clock: Clock) -> None:
    """Open the breaker for what the call admitted by ``permit`` showed, unless it has moved on
    since (another process's verdict came first)."""
    transition(
        permit.breaker_id,
        expected=permit.as_admitted,
        to_state=BreakerState.OPEN,
        reason=reason,
        clock=clock,
    )


def _reason_to_open(row: dict[str, Any], *, now: float, last_failure: str) -> str:
    suffix = f"; last: {last_failure}" if last_failure else ""
    if row["consecutive_failures"] >= row["failure_threshold"]:
        return f"{row['consecutive_failures']} consecutive failures{suffix}"
    stats = window_stats(row, now=now)
    if stats.calls < row["minimum_calls"]:
        return ""
    if stats.failure_rate >= row["failure_rate_threshold"]:
        return (
            f"failure rate {stats.failure_rate:.0f}% over {stats.calls:.0f} calls "
            f"(threshold {row['failure_rate_threshold']:g}%){suffix}"
        )
    if stats.slow_rate >= row["slow_call_rate_threshold"]:
        return (
            f"slow-call rate {stats.slow_rate:.0f}% over {stats.calls:.0f} calls "
            f"(threshold {row['slow_call_rate_threshold']:g}%, slow = "
            f"{row['slow_call_duration']:g} s or more)"
        )
    return ""


def _fresh_state_values() -> dict[str, Any]:
    return {
        "state": Param("to_state", CharField()),
        "generation": F("generation") + 1,
        "state_changed_at": Param("now"),
        "consecutive_failures": Value(0),
        "window_started_at": Param("now"),
        "window_calls": Value(0),
        "window_failures": Value(0),
        "window_slow_calls": Value(0),
        "previous_window_calls": Value(0),
        "previous_window_failures": Value(0),
        "previous_window_slow_calls": Value(0),
        "half_open_in_flight": Value(0),
        "half_open_successes": Value(0),
    }


# The log event of each transition, by the state it moves to.
_TRANSITION_EVENTS = {
    BreakerState.OPEN: "breaker_opened",
    BreakerState.HALF_OPEN: "breaker_half_opened",
    BreakerState.CLOSED: "breaker_closed",
    BreakerState.FORCED_OPEN: "breaker_forced_open",
    BreakerState.DISABLED: "breaker_disabled",
}


def transition(
    breaker_id: int,
    *,
    expected: tuple[str, int] | None,
    to_state: str,
    reason: str,
    clock: Clock,
    actor: str = SYSTEM_ACTOR,
) -> bool:
    """Move the breaker to ``to_state`` if it is still in ``expected`` (state, generation).

    Exactly one of the processes racing for the same transition wins; the winner writes the
    history row in the same short transaction. ``expected=None`` (operators) always applies.
    """
    now = clock.now()
    with transaction.atomic():
        if expected is None:  # an operator's change: lock the row to know what it replaces
            previous = (
                CircuitBreaker.objects.select_for_update().filter(pk=breaker_id).values("state")
            ).first()
            if previous is None:
                return False
            from_state = previous["state"]
        else:
            from_state = expected[0]
        row = prepared_update(
            ("breaker_transition", expected is not None),
            model=CircuitBreaker,
            condition=_as_seen if expected is not None else None,
            values=_fresh_state_values,
            params={
                "pk": breaker_id,
                "to_state": to_state,
                "now": now,
                "state": expected[0] if expected else None,
                "generation": expected[1] if expected else None,
            },
            returning=["generation", "name"],
        )
        if row is None:
            return False
        BreakerTransition.objects.create(
            breaker_id=breaker_id,
            from_state=from_state,
            to_state=to_state,
            reason=reason,
            actor=actor,
            generation=row["generation"],
            created_at=epoch_datetime(now),
        )
    metrics.breaker_transitions.labels(
        breaker=row["name"], from_state=from_state, to_state=to_state
    ).inc()
    log = (
        logger.warning if to_state in (BreakerState.OPEN, BreakerState.FORCED_OPEN) else logger.info
    )
    log(
        _TRANSITION_EVENTS[to_state],
        breaker=row["name"],
        from_state=from_state,
        to_state=to_state,
        reason=reason,
        actor=actor,
        generation=row["generation"],
    )
    return True
