"""The operator dashboard's data, apart from its page."""

from __future__ import annotations

import pytest

from reliability.controls import OPERATOR_ACTIONS
from reliability.dashboard import Usage, breaker_actions
from reliability.models import BreakerState


class TestBreakerActions:
    @pytest.mark.parametrize(
        ("state", "slugs"),
        [
            (BreakerState.CLOSED, ["reset", "force-open", "disable"]),
            (BreakerState.OPEN, ["reset", "force-open", "disable"]),
            (BreakerState.HALF_OPEN, ["reset", "force-open", "disable"]),
            (BreakerState.FORCED_OPEN, ["reset", "enable"]),
            (BreakerState.DISABLED, ["reset", "force-open", "enable"]),
        ],
    )
    def test_only_the_actions_that_change_something(self, state, slugs):
        actions = breaker_actions(state)
        assert [action.slug for action in actions] == slugs
        assert all(action.key in OPERATOR_ACTIONS for action in actions)
        assert breaker_actions(BreakerState.CLOSED)[1].label == "Force open"


class TestUsage:
    def test_percent_of_the_limit__capped_at_100(self):
        assert Usage("requests", 45, 50).percent == 90.0
        assert Usage("requests", 80, 50).percent == 100.0

    def test_no_limit__no_percent(self):
        assert Usage("tokens today", 123, None).percent is None
