"""Circuit breaker semantics over the real database, with an injectable clock."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from reliability.breaker import admit, get_or_create_breaker, record, window_stats
from reliability.controls import (
    BreakerActionError,
    breaker_disable,
    breaker_enable,
    breaker_force_open,
    breaker_reset,
)
from reliability.exceptions import CircuitOpenError
from reliability.models import BreakerState, BreakerTransition, CircuitBreaker, WindowType
from reliability.outcomes import BreakerVerdict
from tests.clocks import FakeClock

S, F, IGN = BreakerVerdict.SUCCESS, BreakerVerdict.FAILURE, BreakerVerdict.IGNORED

pytestmark = pytest.mark.django_db


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def make_breaker(clock):
    def make(name: str = "svc", **config) -> CircuitBreaker:
        config.setdefault("failure_threshold", 3)
        config.setdefault("recovery_timeout", 60.0)
        return CircuitBreaker.objects.create(
            name=name, state_changed_at=clock.now(), window_started_at=clock.now(), **config
        )

    return make


def call(name: str, verdict: BreakerVerdict, clock: FakeClock, *, duration: float = 0.01):
    permit = admit(name, clock=clock)
    record(permit, verdict, duration=duration, reason="test", clock=clock)
    return permit


def state_of(name: str = "svc") -> CircuitBreaker:
    return CircuitBreaker.objects.get(name=name)


class TestCreation:
    def test_breakers_are_created_on_first_use__with_the_seed_defaults(self, clock):
        admit("anthropic", clock=clock)
        admit("git", clock=clock)
        anthropic, git = state_of("anthropic"), state_of("git")
        assert (anthropic.failure_threshold, anthropic.recovery_timeout) == (3, 120.0)
        assert (git.failure_threshold, git.recovery_timeout) == (5, 60.0)
        assert anthropic.state == git.state == BreakerState.CLOSED

    def test_get_or_create__returns_the_existing_row(self, make_breaker, clock):
        existing = make_breaker("svc", failure_threshold=9)
        assert get_or_create_breaker("svc", clock=clock).pk == existing.pk
        assert CircuitBreaker.objects.filter(name="svc").count() == 1


class TestClosed:
    def test_opens_after_the_consecutive_failure_threshold(self, make_breaker, clock):
        make_breaker(failure_threshold=3)
        call("svc", F, clock)
        call("svc", F, clock)
        assert state_of().state == BreakerState.CLOSED
        call("svc", F, clock)
        breaker = state_of()
        assert breaker.state == BreakerState.OPEN
        assert breaker.open_until == pytest.approx(clock.now() + 60.0)

    def test_a_success_resets_the_consecutive_count__seed_bug_1(self, make_breaker, clock):
        # The seed never reset failure_count on success in closed: F F S F F opened it.
        make_breaker(failure_threshold=3)
        for verdict in (F, F, S, F, F):
            call("svc", verdict, clock)
        breaker = state_of()
        assert breaker.state == BreakerState.CLOSED
        assert breaker.consecutive_failures == 2

    def test_caller_errors_neither_fail_nor_succeed(self, make_breaker, clock):
        make_breaker(failure_threshold=2)
        for verdict in (F, IGN, IGN, IGN):
            call("svc", verdict, clock)
        breaker = state_of()
        assert breaker.consecutive_failures == 1  # ignored outcomes did not reset it
        assert breaker.total_ignored == 3
        call("svc", F, clock)
        assert state_of().state == BreakerState.OPEN

    def test_totals_count_every_outcome(self, make_breaker, clock):
        make_breaker(failure_threshold=10)
        for verdict in (S, S, F, IGN, S):
            call("svc", verdict, clock)
        breaker = state_of()
        assert (breaker.total_successes, breaker.total_failures, breaker.total_ignored) == (3, 1, 1)
        assert breaker.total_calls == 5


class TestFailureRate:
    def test_count_window_opens_at_the_rate_once_minimum_calls_are_in(self, make_breaker, clock):
        make_breaker(
            failure_threshold=100,
            failure_rate_threshold=50,
            window_type=WindowType.COUNT,
            window_size=10,
            minimum_calls=10,
        )
        for verdict in (S, F) * 4 + (S,):  # 9 calls, 4 failures: below minimum_calls
            call("svc", verdict, clock)
        assert state_of().state == BreakerState.CLOSED
        call("svc", F, clock)  # 10 calls, 5 failures: 50 %
        breaker = state_of()
        assert breaker.state == BreakerState.OPEN
        assert "failure rate 50% over 10 calls" in breaker.transitions.first().reason

    def test_count_window_forgets_old_calls(self, make_breaker, clock):
        make_breaker(
            failure_threshold=100,
            failure_rate_threshold=50,
            window_type=WindowType.COUNT,
            window_size=4,
            minimum_calls=4,
        )
        for verdict in (F, S, S, S, S, S, S, S, S, F, S):
            call("svc", verdict, clock)
        stats = window_stats(state_of(), now=clock.now())
        assert stats.calls == pytest.approx(4.0)
        assert stats.failure_rate < 50
        assert state_of().state == BreakerState.CLOSED

    def test_time_window_forgets_failures_older_than_the_window(self, make_breaker, clock):
        make_breaker(
            failure_threshold=100,
            failure_rate_threshold=50,
            window_type=WindowType.TIME,
            window_size=10,
            minimum_calls=4,
        )
        for verdict in (F, F, F):
            call("svc", verdict, clock)
        clock.advance(25)  # two windows later: those failures are gone
        for verdict in (S, S, F, S):
            call("svc", verdict, clock)
        stats = window_stats(state_of(), now=clock.now())
        assert stats.calls == pytest.approx(4.0)
        assert stats.failure_rate == pytest.approx(25.0)
        assert state_of().state == BreakerState.CLOSED

    def test_time_window_weights_the_previous_bucket(self, make_breaker, clock):
        make_breaker(
            failure_threshold=100,
            failure_rate_threshold=60,
            window_type=WindowType.TIME,
            window_size=10,
            minimum_calls=3,
        )
        for verdict in (F, F, S, S):  # bucket [0, 10): 2 of 4 failed
            call("svc", verdict, clock)
        clock.advance(15)  # now in bucket [10, 20), half-way: previous bucket weighs 0.5
        before = window_stats(state_of(), now=clock.now())
        assert before.calls == pytest.approx(4 * 0.5)
        call("svc", F, clock)  # (2 * 0.5 + 1) failures of (4 * 0.5 + 1) calls: 66.7 % >= 60 %
        breaker = state_of()
        assert breaker.state == BreakerState.OPEN
        assert "failure rate 67% over 3 calls" in breaker.transitions.first().reason


class TestSlowCalls:
    def test_slow_successes_open_at_the_slow_call_rate(self, make_breaker, clock):
        make_breaker(
            failure_threshold=100,
            slow_call_duration=1.0,
            slow_call_rate_threshold=50,
            window_size=4,
            minimum_calls=4,
        )
        call("svc", S, clock, duration=0.1)
        call("svc", S, clock, duration=2.0)
        call("svc", S, clock, duration=0.2)
        assert state_of().state == BreakerState.CLOSED
        call("svc", S, clock, duration=1.5)
        breaker = state_of()
        assert breaker.state == BreakerState.OPEN
        assert "slow-call rate 50%" in breaker.transitions.first().reason


class TestOpen:
    def test_rejects_at_once__saying_when_it_will_retry(self, make_breaker, clock):
        make_breaker(failure_threshold=1, recovery_timeout=120)
        call("svc", F, clock)
        with pytest.raises(CircuitOpenError) as raised:
            admit("svc", clock=clock)
        assert raised.value.retry_at == pytest.approx(clock.now() + 120)
        assert "circuit 'svc' is open" in str(raised.value)
        assert "will retry after 2027-" in str(raised.value)
        assert state_of().total_rejected == 1

    def test_turns_half_open_on_the_first_call_after_the_recovery_timeout(
        self, make_breaker, clock
    ):
        make_breaker(failure_threshold=1, recovery_timeout=60)
        call("svc", F, clock)
        clock.advance(59.9)
        with pytest.raises(CircuitOpenError):
            admit("svc", clock=clock)
        assert state_of().state == BreakerState.OPEN  # time alone changes nothing
        clock.advance(0.2)
        permit = admit("svc", clock=clock)
        assert permit.is_probe
        assert state_of().state == BreakerState.HALF_OPEN
        assert state_of().transitions.first().reason == "recovery timeout of 60 s elapsed"


class TestHalfOpen:
    @pytest.fixture
    def half_open(self, make_breaker, clock):
        def make(**config):
            make_breaker(failure_threshold=1, recovery_timeout=10, **config)
            call("svc", F, clock)
            clock.advance(10)

        return make

    def test_admits_exactly_the_permitted_probes__seed_bug_2(self, half_open, clock):
        # The seed let every call through while half-open.
        half_open(half_open_max_calls=2, half_open_success_threshold=3)
        first, second = admit("svc", clock=clock), admit("svc", clock=clock)
        with pytest.raises(CircuitOpenError, match="2 probe"):
            admit("svc", clock=clock)
        assert first.is_probe and second.is_probe
        assert state_of().half_open_in_flight == 2
        record(first, S, duration=0.1, clock=clock)  # a slot frees, not yet closed
        assert admit("svc", clock=clock).is_probe
        assert state_of().state == BreakerState.HALF_OPEN

    def test_a_probe_failure_reopens(self, half_open, clock):
        half_open(half_open_max_calls=3)
        probe = admit("svc", clock=clock)
        record(probe, F, duration=0.1, reason="http_529", clock=clock)
        breaker = state_of()
        assert breaker.state == BreakerState.OPEN
        assert breaker.state_changed_at == clock.now()
        assert breaker.transitions.first().reason == "probe failed: http_529"

    def test_the_configured_successes_close(self, half_open, clock):
        half_open(half_open_max_calls=1, half_open_success_threshold=2)
        call("svc", S, clock)
        assert state_of().state == BreakerState.HALF_OPEN
        call("svc", S, clock)
        breaker = state_of()
        assert breaker.state == BreakerState.CLOSED
        assert (breaker.consecutive_failures, breaker.half_open_in_flight) == (0, 0)

    def test_an_ignored_probe_outcome_frees_its_slot(self, half_open, clock):
        half_open(half_open_max_calls=1)
        call("svc", IGN, clock)
        assert state_of().half_open_in_flight == 0
        assert admit("svc", clock=clock).is_probe

    def test_a_probe_that_never_returns_cannot_wedge_the_breaker(self, half_open, clock):
        half_open(half_open_max_calls=1, half_open_max_duration=30)
        admit("svc", clock=clock)  # this probe's process dies; it never records
        with pytest.raises(CircuitOpenError):
            admit("svc", clock=clock)
        clock.advance(31)
        with pytest.raises(CircuitOpenError):
            admit("svc", clock=clock)
        assert state_of().state == BreakerState.OPEN
        assert "no probe settled within 30 s" in state_of().transitions.first().reason
        clock.advance(10)
        assert admit("svc", clock=clock).is_probe

    def test_a_late_outcome_of_an_old_generation_decides_nothing(self, make_breaker, clock):
        make_breaker(failure_threshold=2)
        slow_caller = admit("svc", clock=clock)  # admitted while closed
        call("svc", F, clock)
        call("svc", F, clock)  # opens
        generation = state_of().generation
        record(slow_caller, F, duration=0.1, clock=clock)
        breaker = state_of()
        assert breaker.generation == generation
        assert breaker.transitions.count() == 1
        assert breaker.consecutive_failures == 0  # the open state's counts are untouched
        assert breaker.total_failures == 3  # but the outcome is still counted


class TestOperatorModes:
    def test_forced_open_rejects_everything_until_enabled(self, make_breaker, clock):
        make_breaker()
        breaker_force_open(name="svc", actor="alice", clock=clock)
        clock.advance(10_000)
        with pytest.raises(CircuitOpenError, match="until an operator enables it") as raised:
            admit("svc", clock=clock)
        assert raised.value.retry_at is None
        breaker_enable(name="svc", actor="alice", clock=clock)
        assert not admit("svc", clock=clock).is_probe

    def test_disabled_admits_everything_and_still_records(self, make_breaker, clock):
        make_breaker(failure_threshold=1)
        breaker_disable(name="svc", actor="bob", clock=clock)
        for _ in range(5):
            call("svc", F, clock)
        breaker = state_of()
        assert breaker.state == BreakerState.DISABLED
        assert breaker.total_failures == 5
        assert breaker.window_failures == 5

    def test_reset_closes_and_clears_the_counts(self, make_breaker, clock):
        make_breaker(failure_threshold=1)
        call("svc", F, clock)
        breaker_reset(name="svc", actor="carol", clock=clock)
        breaker = state_of()
        assert breaker.state == BreakerState.CLOSED
        assert (breaker.consecutive_failures, breaker.window_calls) == (0, 0)
        assert breaker.total_failures == 1  # lifetime totals survive a reset
        assert not admit("svc", clock=clock).is_probe

    def test_enable__refuses_a_breaker_that_is_not_forced_or_disabled(self, make_breaker, clock):
        make_breaker()
        with pytest.raises(BreakerActionError, match="nothing to enable"):
            breaker_enable(name="svc", actor="dave", clock=clock)
        assert not BreakerTransition.objects.exists()


class TestTransitionRecords:
    def test_each_transition_is_a_row_an_event_and_a_metric(self, make_breaker, clock):
        make_breaker(failure_threshold=1, recovery_timeout=5)
        labels = {"breaker": "svc", "from_state": "closed", "to_state": "open"}
        before = REGISTRY.get_sample_value("eidolon_breaker_transitions_total", labels) or 0
        with capture_logs() as logs:
            call("svc", F, clock)
            clock.advance(5)
            call("svc", S, clock)
            breaker_force_open(name="svc", actor="erin", reason="maintenance", clock=clock)
        rows = list(BreakerTransition.objects.order_by("id"))
        assert [(r.from_state, r.to_state, r.actor) for r in rows] == [
            ("closed", "open", "system"),
            ("open", "half_open", "system"),
            ("half_open", "closed", "system"),
            ("closed", "forced_open", "erin"),
        ]
        assert rows[0].reason == "1 consecutive failures; last: test"
        assert rows[-1].reason == "maintenance"
        assert rows[0].created_at.timestamp() == pytest.approx(clock.now() - 5)
        events = [log["event"] for log in logs if log["event"].startswith("breaker_")]
        assert events == [
            "breaker_opened",
            "breaker_half_opened",
            "breaker_closed",
            "breaker_forced_open",
        ]
        assert REGISTRY.get_sample_value("eidolon_breaker_transitions_total", labels) == before + 1


class TestLiveTuning:
    def test_a_threshold_changed_in_the_database_applies_to_the_next_call(
        self, make_breaker, clock
    ):
        make_breaker(failure_threshold=5)
        call("svc", F, clock)
        call("svc", F, clock)
        CircuitBreaker.objects.filter(name="svc").update(failure_threshold=3)  # as the admin does
        call("svc", F, clock)
        assert state_of().state == BreakerState.OPEN
