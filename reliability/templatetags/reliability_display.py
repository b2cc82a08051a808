"""Template filters for the one time format of the operator pages: ``{{ t|utc_time }}``,
``{{ t|ago }}``."""

from __future__ import annotations

import datetime as dt

from django import template

from reliability.display import format_time, relative_time

register = template.Library()


@register.filter
def utc_time(value: dt.datetime | None) -> str:
    return format_time(value)


@register.filter
def ago(value: dt.datetime | None) -> str:
    return relative_time(value)
