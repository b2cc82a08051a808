"""Breakers and budgets that come in families: one per member, named ``<family>:<member>``
(``anthropic:claude-sonnet-5-5``), each created with the family's defaults.

``EIDOLON_TARGET_FAMILIES`` lists the members. An operator who names the family itself
(``anthropic``, as scripts written before there were several models do) acts on every member.
"""

from __future__ import annotations

from django.conf import settings


def family_of(name: str) -> str:
    """``anthropic`` for ``anthropic:claude-sonnet-5-5``; a name without a member is its own."""
    return name.partition(":")[0]


def member_name(family: str, member: str) -> str:
    return f"{family}:{member}"


def member_of(name: str) -> str:
    """``claude-sonnet-5-5`` for ``anthropic:claude-sonnet-5-5``; "" without a member."""
    return name.partition(":")[2]


def members(family: str) -> list[str]:
    """The configured members' names, in order (the primary first); [] if not a family."""
    return [member_name(family, m) for m in settings.EIDOLON_TARGET_FAMILIES.get(family, ())]


def names_meant(name: str) -> list[str]:
    """What an operator means by ``name``: a family's members, or the name itself."""
    return members(name) or [name]


def controlled_names(defaults: dict[str, object]) -> list[str]:
    """The named controls of ``defaults`` (breaker or budget defaults), a family's members in
    place of the family."""
    return [member for name in defaults for member in names_meant(name)]
