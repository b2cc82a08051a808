"""Each user's submissions are counted by the budget engine (``submissions:<user id>``): evenly
spaced within the per-minute limit, capped per day, and refused with the time to wait."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from analyses.services import SubmissionRateLimited, submission_admit
from reliability.models import RateLimitBudget
from tests.clocks import FakeClock

pytestmark = pytest.mark.django_db


class TickingClock(FakeClock):
    """Moves on a millisecond each time it is read, as a real clock does between two reads."""

    def now(self) -> float:
        self.advance(0.001)
        return super().now()


@pytest.fixture
def alice() -> User:
    return User.objects.create_user("alice")


class TestSubmissionAdmit:
    def test_the_first_is_admitted__the_next_waits_for_its_slot(self, alice):
        clock = TickingClock()
        submission_admit(user=alice, clock=clock)
        with pytest.raises(SubmissionRateLimited) as refused:
            submission_admit(user=alice, clock=clock)
        # 30 a minute (the default), less the engine's 2 % headroom: a slot every ~2.04 s.
        assert 1.9 < refused.value.retry_after < 2.1
        assert "try again in 3 s" in refused.value.message
        clock.advance(2.1)
        submission_admit(user=alice, clock=clock)

    def test_the_daily_cap__refused_until_the_next_utc_day(self, alice):
        RateLimitBudget.objects.create(
            name=f"submissions:{alice.pk}", requests_per_window=1000, requests_per_day=2
        )
        clock = TickingClock(start=1_800_000_000.0)  # 2027-01-15 08:00 UTC
        submission_admit(user=alice, clock=clock)
        clock.advance(60)
        submission_admit(user=alice, clock=clock)
        clock.advance(60)
        with pytest.raises(SubmissionRateLimited) as refused:
            submission_admit(user=alice, clock=clock)
        assert refused.value.retry_after == pytest.approx(16 * 3600 - 120, abs=1)

    def test_each_user_has_their_own_budget(self, alice):
        bob = User.objects.create_user("bob")
        clock = TickingClock()
        submission_admit(user=alice, clock=clock)
        submission_admit(user=bob, clock=clock)
        assert set(RateLimitBudget.objects.values_list("name", flat=True)) == {
            f"submissions:{alice.pk}",
            f"submissions:{bob.pk}",
        }
