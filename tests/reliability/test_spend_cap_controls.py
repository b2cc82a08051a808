"""Spend caps as operators set and read them: the CLI flags, `reliability show`, the admin's
budget list and the index strip, and the history of the change."""

from __future__ import annotations

import json
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from eidolon_site.status_strip import status_strip
from reliability.families import members
from reliability.models import ControlChange, RateLimitBudget
from reliability.ratelimit import charge_spend, get_or_create_budget

# The primary model's breaker and budget: "anthropic" now names every model's.
PRIMARY = members("anthropic")[0]

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command("reliability", *args, stdout=out)
    return out.getvalue()


class TestSpendCapControls:
    def test_cli__sets_both_caps__history_keeps_exact_dollars(self):
        run("budget", PRIMARY, "--usd-per-day", "5", "--usd-per-analysis", "0.05")

        budget = RateLimitBudget.objects.get(name=PRIMARY)
        assert (budget.usd_per_day, budget.usd_per_analysis) == (Decimal(5), Decimal("0.05"))
        change = ControlChange.objects.get(name=PRIMARY, action="edit")
        assert change.changes["usd_per_analysis"] == [None, "0.05"]

        run("budget", PRIMARY, "--usd-per-day", "0")
        assert RateLimitBudget.objects.get(name=PRIMARY).usd_per_day is None

    def test_cli__refuses_a_negative_cap(self):
        get_or_create_budget(PRIMARY)
        with pytest.raises(CommandError, match="usd_per_day"):
            run("budget", PRIMARY, "--usd-per-day", "-1")

    def test_show__spend_against_the_caps(self):
        run("budget", PRIMARY, "--usd-per-day", "5", "--usd-per-analysis", "0.05")
        charge_spend(PRIMARY, cost_usd=Decimal("1.2345"))

        text = run("show")
        snapshot = json.loads(run("show", "--json"))

        assert "$1.2345 of $5.00 spent (cap $0.05 per analysis) today" in text
        (budget,) = snapshot["budgets"]
        assert budget["limits"]["usd_per_day"] == 5.0
        assert budget["limits"]["usd_per_analysis"] == 0.05
        assert budget["today"]["cost_usd"] == pytest.approx(1.2345)

    def test_admin_and_strip__spend_of_the_cap_today(self, client):
        run("budget", PRIMARY, "--usd-per-day", "5")
        charge_spend(PRIMARY, cost_usd=Decimal("1.5"))
        admin = User.objects.create_superuser("root", "root@example.com", "pw")
        client.force_login(admin)

        listing = client.get("/admin/reliability/ratelimitbudget/").content.decode()
        index = client.get("/admin/").content.decode()

        assert "$1.5000 of $5.0000" in listing
        assert "$1.5000 of $5.00 today" in index
        (day,) = status_strip(public=False).budgets
        assert day.usd_per_day == Decimal(5)
