"""Operator CLI over the same services as the admin.

manage.py reliability show [--json]
manage.py reliability breaker NAME --reset | --force-open | --disable | --enable [--reason R]
manage.py reliability breaker NAME --set FIELD=VALUE [--set FIELD=VALUE ...]
manage.py reliability budget NAME [--rpm N] [--input-tpm N] [--output-tpm N] [--rpd N]
                                  [--window S] [--tokens-per-day N] [--tokens-per-analysis N]
                                  [--usd-per-day X] [--usd-per-analysis X] [--resume]

NAME may be a family (``anthropic``, as before there were several models): the command acts on
each member (``anthropic:<model>``, one per model of EIDOLON_AI_MODELS) and prints one line per
member; a family's settings change for every member or, when one refuses them, for none.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import time
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from reliability import ratelimit
from reliability.breaker import get_or_create_breaker
from reliability.controls import (
    OPERATOR_ACTIONS,
    assign_fields,
    breaker_names_meant,
    budget_names_meant,
    budget_resume,
    operate_breakers,
    save_breaker_settings,
    save_budget_limits,
)
from reliability.exceptions import format_epoch
from reliability.models import CONFIG_FIELDS, PRICE_FIELDS, CircuitBreaker
from reliability.pricing import price_rows, price_table
from reliability.serving import family_serving
from reliability.status import reliability_snapshot, serving_line

BUDGET_OPTIONS = {
    "rpm": "requests_per_window",
    "input_tpm": "input_tokens_per_window",
    "output_tpm": "output_tokens_per_window",
    "rpd": "requests_per_day",
    "window": "window_seconds",
    "tokens_per_day": "tokens_per_day",
    "tokens_per_analysis": "tokens_per_analysis",
    "usd_per_day": "usd_per_day",
    "usd_per_analysis": "usd_per_analysis",
}
# Caps where 0 means "no cap".
OPTIONAL_CAPS = ("tokens_per_day", "tokens_per_analysis", "usd_per_day", "usd_per_analysis")


def operator_name() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def parse_assignments(pairs: list[str]) -> dict[str, str]:
    assignments = {}
    for pair in pairs:
        name, separator, value = pair.partition("=")
        if not separator or not name.strip():
            raise CommandError(f"--set takes FIELD=VALUE, got {pair!r}")
        assignments[name.strip()] = value.strip()
    return assignments


def _is_zero(text: str) -> bool:
    try:
        return float(text) == 0
    except ValueError:
        return False


def spend_against_caps(spent: float, limits: dict[str, Any]) -> str:
    """``$0.0123 of $5.00 spent`` (``$0.0123 spent`` without a daily cap), and the per-analysis
    cap when there is one."""
    text = f"${spent:.4f}"
    if limits.get("usd_per_day") is not None:
        text += f" of ${limits['usd_per_day']:.2f}"
    text += " spent"
    if limits.get("usd_per_analysis") is not None:
        text += f" (cap ${limits['usd_per_analysis']:.2f} per analysis)"
    return text


def validation_message(error: ValidationError) -> str:
    if hasattr(error, "message_dict"):
        return "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in error.message_dict.items())
    return " ".join(error.messages)


@contextlib.contextmanager
def refused_as_command_error(what: str) -> Iterator[None]:
    """A change refused inside (a ``ValidationError``) ends the command: ``what`` not changed, and
    why."""
    try:
        yield
    except ValidationError as error:
        raise CommandError(f"{what} not changed: {validation_message(error)}") from None


class Command(BaseCommand):
    help = "Show and steer circuit breakers and rate-limit budgets."

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="subcommand", required=True)
        show = commands.add_parser("show", help="State of every breaker and budget.")
        show.add_argument(
            "--json", action="store_true", dest="as_json", help="One JSON object on stdout."
        )

        breaker = commands.add_parser("breaker", help="Act on a breaker or tune it.")
        breaker.add_argument("name")
        actions = breaker.add_mutually_exclusive_group(required=True)
        for action in OPERATOR_ACTIONS:
            actions.add_argument(f"--{action.replace('_', '-')}", action="store_true")
        actions.add_argument(
            "--set",
            action="append",
            metavar="FIELD=VALUE",
            help=f"Tune a threshold; fields: {', '.join(CONFIG_FIELDS)}",
        )
        breaker.add_argument("--reason", default="", help="Why (kept in the history).")

        budget = commands.add_parser("budget", help="Set a budget's limits or end its pause.")
        budget.add_argument("name")
        budget.add_argument("--rpm", type=int, help="Requests per window (a minute by default).")
        budget.add_argument("--input-tpm", type=int, help="Input tokens per window.")
        budget.add_argument("--output-tpm", type=int, help="Output tokens per window.")
        budget.add_argument("--rpd", type=int, help="Requests per UTC day.")
        budget.add_argument("--window", type=float, help="Window length in seconds.")
        budget.add_argument("--tokens-per-day", type=int, help="Token cap per day (0: none).")
        budget.add_argument(
            "--tokens-per-analysis", type=int, help="Token cap per analysis (0: none)."
        )
        budget.add_argument(
            "--usd-per-day", help="Spend cap per UTC day in US dollars, e.g. 5.00 (0: none)."
        )
        budget.add_argument(
            "--usd-per-analysis", help="Spend cap per analysis in US dollars (0: none)."
        )
        budget.add_argument("--resume", action="store_true", help="End a pause now.")

    def handle(self, *args: Any, subcommand: str, **options: Any) -> None:
        {"show": self.show, "breaker": self.breaker, "budget": self.budget}[subcommand](**options)

    def show(self, *, as_json: bool = False, **_: Any) -> None:
        now = time.time()
        snapshot = {**reliability_snapshot(now=now), "prices": price_rows(price_table())}
        if as_json:
            self.stdout.write(json.dumps(snapshot, indent=2, sort_keys=True, default=str))
            return
        self.stdout.write(f"AI: {serving_line(family_serving('anthropic', now=now))}")
        self.stdout.write("Breakers")
        for breaker in snapshot["breakers"]:
            until = (
                f", open until {format_epoch(breaker['open_until'])}"
                if breaker["open_until"]
                else ""
            )
            totals = breaker["totals"]
            self.stdout.write(
                f"  {breaker['name']:<28} {breaker['state']:<12} "
                f"{breaker['consecutive_failures']} consecutive failures, "
                f"{breaker['failure_rate_percent']:.0f}% of {breaker['window_calls']:.0f} calls "
                f"failed{until}; {totals['successes']} ok / {totals['failures']} failed / "
                f"{totals['rejected']} rejected"
            )
        if not snapshot["breakers"]:
            self.stdout.write("  (none yet: breakers are created on first use)")
        self.stdout.write("Budgets")
        for budget in snapshot["budgets"]:
            limits, window, today = budget["limits"], budget["window"], budget["today"]
            paused = (
                f", paused until {format_epoch(budget['paused_until'])}"
                if budget["paused_until"]
                else ""
            )
            self.stdout.write(
                f"  {budget['name']:<28} {window['requests']}/{limits['requests_per_window']} req "
                f"per {limits['window_seconds']:g} s, {today['requests']}/"
                f"{limits['requests_per_day']} today, {today['tokens']} tokens and "
                f"{spend_against_caps(today['cost_usd'], limits)} today, next slot in "
                f"{budget['next_slot_in_s']:.1f} s{paused}"
            )
        if not snapshot["budgets"]:
            self.stdout.write("  (none yet: budgets are created on first use)")
        self.show_prices(snapshot["prices"])

    def show_prices(self, prices: list[dict[str, Any]]) -> None:
        self.stdout.write("Prices ($ per million tokens: input, output, cache write, cache read)")
        for price in prices:
            figures = " ".join(f"{price[field]:>8g}" for field in PRICE_FIELDS)
            self.stdout.write(f"  {price['model']:<20} {figures}")
        if not prices:
            self.stdout.write("  (none: every call is unpriced)")

    def breaker(self, *, name: str, reason: str, set: list[str] | None, **flags: Any) -> None:
        names = breaker_names_meant(name)
        if not names:
            known = sorted(
                {
                    *CircuitBreaker.objects.values_list("name", flat=True),
                    *settings.EIDOLON_BREAKER_DEFAULTS,
                }
            )
            raise CommandError(f"no breaker named {name!r}; known: {', '.join(known)}")
        actor = operator_name()
        if set:
            assignments = parse_assignments(set)
            # A family's members change together or not at all.
            with refused_as_command_error(f"breaker {name!r}"), transaction.atomic():
                for member in names:
                    breaker = get_or_create_breaker(member)
                    assign_fields(breaker, assignments, allowed=CONFIG_FIELDS)
                    save_breaker_settings(breaker, actor=actor)
            for member in names:
                self.stdout.write(f"breaker {member}: settings saved")
            return
        action = next(action for action in OPERATOR_ACTIONS if flags[action])
        results = operate_breakers(
            OPERATOR_ACTIONS[action],
            names=names,
            actor=actor,
            reason=reason or f"{action.replace('_', ' ')} by {actor}",
        )
        for result in results:
            if result.breaker is not None:
                self.stdout.write(f"breaker {result.name}: now {result.breaker.state}")
            elif result.already:
                self.stdout.write(f"{result.refusal}: nothing done, nothing recorded")
            elif len(results) > 1:
                self.stdout.write(f"breaker {result.name}: refused: {result.refusal}")
        refused = [result for result in results if result.refusal and not result.already]
        if len(refused) == len(results) == 1:
            raise CommandError(refused[0].refusal)
        if len(refused) == len(results):
            raise CommandError(f"refused for every breaker of {name!r}")

    def budget(self, *, name: str, resume: bool, **options: Any) -> None:
        names = budget_names_meant(name)
        if not names:
            raise CommandError(f"no budget named {name!r}")
        changes = {
            field: str(options[option])
            for option, field in BUDGET_OPTIONS.items()
            if options.get(option) is not None
        }
        for cap in OPTIONAL_CAPS:
            if cap in changes and _is_zero(changes[cap]):
                changes[cap] = "none"
        if not changes and not resume:
            raise CommandError("nothing to do: give a limit to set (--rpm ...) or --resume")
        actor = operator_name()
        if changes:
            with refused_as_command_error(f"budget {name!r}"), transaction.atomic():
                for member in names:
                    budget = ratelimit.get_or_create_budget(member)
                    assign_fields(budget, changes, allowed=BUDGET_OPTIONS.values())
                    save_budget_limits(budget, actor=actor)
            for member in names:
                self.stdout.write(f"budget {member}: limits saved")
        if resume:
            for member in names:
                ratelimit.get_or_create_budget(member)
                budget_resume(name=member, actor=actor)
                self.stdout.write(f"budget {member}: resumed")
