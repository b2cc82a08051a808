"""Which member of a family serves: the first whose breaker admits new calls.

A family's members (``anthropic:claude-sonnet-5-5``, ``anthropic:claude-haiku-4-5``) are tried in
order; a new call goes to the first whose breaker is closed or disabled. An open, half-open
(probes only) or forced-open member is passed over. The health check, ``reliability show``, the
dashboard and the admin all read it from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from reliability.families import member_of, members
from reliability.models import BreakerState, CircuitBreaker

ADMITTING_STATES = frozenset({BreakerState.CLOSED, BreakerState.DISABLED})
MEMBER_FIELDS = (
    "name",
    "state",
    "state_changed_at",
    "recovery_timeout",
    "last_success_at",
    "last_failure_at",
)


@dataclass(frozen=True, kw_only=True)
class MemberState:
    """One member's breaker as a reader sees it; a member without a row yet counts as closed
    (it is created with the family's defaults on first use)."""

    name: str  # the breaker's: anthropic:claude-haiku-4-5
    model: str  # the member: claude-haiku-4-5
    state: str
    exists: bool = True
    state_changed_at: float = 0.0
    recovery_timeout: float = 0.0
    last_success_at: float | None = None
    last_failure_at: float | None = None

    @property
    def admits(self) -> bool:
        return self.state in ADMITTING_STATES

    @property
    def open_until(self) -> float | None:
        if self.state == BreakerState.OPEN:
            return self.state_changed_at + self.recovery_timeout
        return None


@dataclass(frozen=True, kw_only=True)
class Serving:
    """A family's members in order (the primary first) and the one serving, if any."""

    family: str
    members: tuple[MemberState, ...]
    at: float

    @property
    def serving(self) -> MemberState | None:
        return next((member for member in self.members if member.admits), None)

    @property
    def primary(self) -> MemberState | None:
        return self.members[0] if self.members else None

    @property
    def degraded(self) -> bool:
        """A fallback serves because the primary's breaker turns new calls away."""
        serving = self.serving
        return serving is not None and serving is not self.primary

    @property
    def model(self) -> str:
        """The serving model's name, "" when every member refuses (or there are none)."""
        serving = self.serving
        return serving.model if serving else ""

    def as_dict(self) -> dict[str, object]:
        return {
            "family": self.family,
            "serving": self.model or None,
            "degraded": self.degraded,
            "members": [
                {
                    "breaker": member.name,
                    "model": member.model,
                    "state": member.state,
                    "admits": member.admits,
                    "open_until": member.open_until,
                }
                for member in self.members
            ],
        }


def family_serving(family: str = "anthropic", *, now: float) -> Serving:
    """The state of each member of ``family`` (one query) and which one serves at ``now``."""
    names = members(family)
    rows = {
        row["name"]: row
        for row in CircuitBreaker.objects.filter(name__in=names).values(*MEMBER_FIELDS)
    }
    states = []
    for name in names:
        row = rows.get(name)
        if row is None:
            states.append(
                MemberState(name=name, model=member_of(name), state="closed", exists=False)
            )
        else:
            states.append(MemberState(model=member_of(name), **row))
    return Serving(family=family, members=tuple(states), at=now)


def serving_member(family: str = "anthropic", *, now: float) -> MemberState | None:
    """The first member of ``family`` whose breaker admits new calls (closed or disabled);
    None when every one refuses."""
    return family_serving(family, now=now).serving
