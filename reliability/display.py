"""How the operator pages show times and money: one format with seconds, in UTC, with a relative
time where it helps ("3 min ago"), and dollars to the hundredth of a cent ("—" when unpriced).

Plain functions, shared by the admin pages, the operator dashboard and their templates.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.contrib import admin
from django.utils import timezone
from django.utils.html import format_html

NONE = "—"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S UTC"


def format_time(value: dt.datetime | None) -> str:
    """``2026-11-30 08:41:07 UTC``; ``—`` for no time."""
    if value is None:
        return NONE
    if timezone.is_aware(value):
        value = value.astimezone(dt.UTC)
    return value.strftime(TIME_FORMAT)


def relative_time(value: dt.datetime | None, *, now: dt.datetime | None = None) -> str:
    """How long ago (or from now) ``value`` is, in its largest unit: ``3 min ago``, ``in 40 s``."""
    if value is None:
        return NONE
    now = timezone.now() if now is None else now
    seconds = int((now - value).total_seconds())
    future, seconds = seconds < 0, abs(seconds)
    if seconds < 5:
        return "just now"
    for size, unit in ((86_400, "d"), (3_600, "h"), (60, "min"), (1, "s")):
        if seconds >= size:
            amount = f"{seconds // size} {unit}"
            return f"in {amount}" if future else f"{amount} ago"
    raise AssertionError("unreachable")  # pragma: no cover


def time_with_relative(value: dt.datetime | None, *, now: dt.datetime | None = None) -> str:
    """``2026-11-30 08:41:07 UTC (3 min ago)``."""
    if value is None:
        return NONE
    return f"{format_time(value)} ({relative_time(value, now=now)})"


def format_usd(value: Decimal | float | None) -> str:
    """``$0.0123`` (four decimals: a call often costs less than a cent); ``—`` when unpriced."""
    if value is None:
        return NONE
    return f"${Decimal(value):,.4f}"


def time_column(
    field: str, description: str, *, relative: bool = False
) -> Callable[[Any, Any], str]:
    """An admin column (or read-only field) showing the datetime ``field`` in the one format;
    with ``relative``, the relative time beside it. Assign it to a ``ModelAdmin`` attribute."""

    @admin.display(description=description, ordering=field)
    def show(model_admin: Any, obj: Any) -> str:
        value = getattr(obj, field)
        if not relative or value is None:
            return format_time(value)
        return format_html(
            '<span class="nowrap">{}</span><br><small class="quiet">{}</small>',
            format_time(value),
            relative_time(value),
        )

    show.__name__ = f"{field}_display"
    return show


def usd_column(field: str, description: str = "cost") -> Callable[[Any, Any], str]:
    """An admin column showing the dollar amount in ``field`` (a ``ModelAdmin`` attribute)."""

    @admin.display(description=description, ordering=field)
    def show(model_admin: Any, obj: Any) -> str:
        return format_usd(getattr(obj, field))

    show.__name__ = f"{field}_display"
    return show
