"""The named controls exist from the first start: every breaker in ``EIDOLON_BREAKER_DEFAULTS``
and the rate budget of each guarded target that has one, so operators can see, tune or force
them open before the first call.

Created after ``migrate`` (a ``post_migrate`` handler, not a data migration: the defaults come
from settings) with the very functions that would otherwise create them on first use, so the
values are the same either way. Rows that exist are left as the operators set them.
"""

from __future__ import annotations

from typing import Any

from django.apps.registry import Apps
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS

from reliability.breaker import get_or_create_breaker
from reliability.families import controlled_names, family_of
from reliability.models import CircuitBreaker, RateLimitBudget
from reliability.ratelimit import get_or_create_budget


def named_breakers() -> list[str]:
    """Every breaker of the defaults; a family's (``anthropic``) one per configured member."""
    return controlled_names(settings.EIDOLON_BREAKER_DEFAULTS)


def named_budgets() -> list[str]:
    """The budgets guarded targets count against (``guard_for``: a target's budget shares its
    name); per-user families such as ``submissions:<id>`` are made when a user first acts."""
    return [
        name for name in named_breakers() if family_of(name) in settings.EIDOLON_BUDGET_DEFAULTS
    ]


def ensure_named_controls() -> tuple[list[str], list[str]]:
    """Create the named breakers and budgets that are missing; returns the names created."""
    breakers = _missing(CircuitBreaker, named_breakers())
    budgets = _missing(RateLimitBudget, named_budgets())
    for name in breakers:
        get_or_create_breaker(name)
    for name in budgets:
        get_or_create_budget(name)
    return breakers, budgets


def _missing(model: type[CircuitBreaker] | type[RateLimitBudget], names: list[str]) -> list[str]:
    existing = set(model.objects.filter(name__in=names).values_list("name", flat=True))
    return [name for name in names if name not in existing]


def create_named_controls_after_migrate(
    sender: Any, *, using: str = DEFAULT_DB_ALIAS, apps: Apps | None = None, **kwargs: Any
) -> None:
    """The ``post_migrate`` receiver. Does nothing when ``EIDOLON_CREATE_CONTROLS_ON_MIGRATE`` is
    off, for another database than the default, or while the tables are not yet migrated to the
    models' current fields (``migrate reliability 0001``, say)."""
    if not settings.EIDOLON_CREATE_CONTROLS_ON_MIGRATE or using != DEFAULT_DB_ALIAS:
        return
    if apps is not None and not all(
        _migrated(apps, model) for model in (CircuitBreaker, RateLimitBudget)
    ):
        return
    ensure_named_controls()


def _migrated(apps: Apps, model: type) -> bool:
    try:
        historical = apps.get_model(model._meta.app_label, model._meta.model_name)
    except LookupError:
        return False
    have = {field.column for field in historical._meta.concrete_fields}
    return all(field.column in have for field in model._meta.concrete_fields)
