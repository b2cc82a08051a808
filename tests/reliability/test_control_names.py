"""Control names: a target, or a family's member (``anthropic:<model>``), validated the same
wherever an operator edits a breaker or a budget."""

from __future__ import annotations

import time

import pytest
from django.core.exceptions import ValidationError

from reliability.models import CircuitBreaker, RateLimitBudget

pytestmark = pytest.mark.django_db


class TestControlNames:
    @pytest.mark.parametrize(
        "name", ["git", "anthropic:claude-haiku-4-5", "anthropic:claude-3.5@2024", "submissions:42"]
    )
    def test_a_target_or_a_member__valid(self, name):
        now = time.time()
        CircuitBreaker(name=name, state_changed_at=now, window_started_at=now).full_clean()
        RateLimitBudget(name=name).full_clean()

    @pytest.mark.parametrize(
        "name", ["", "anthropic:", ":haiku", "a b", "anthropic:claude/../x", "a:b:c", "x" * 121]
    )
    def test_anything_else__refused_with_what_a_name_may_hold(self, name):
        now = time.time()
        with pytest.raises(ValidationError) as refused:
            CircuitBreaker(name=name, state_changed_at=now, window_started_at=now).full_clean()
        assert "name" in refused.value.message_dict

    def test_the_longest_model_name_fits(self):
        name = "anthropic:" + "m" * 100
        budget = RateLimitBudget.objects.create(name=name)
        budget.full_clean()
        assert RateLimitBudget.objects.get(pk=budget.pk).name == name
