"""Why and until when a guarded call waits: what progress reports tell users."""

from __future__ import annotations

from dataclasses import dataclass

from reliability.exceptions import format_epoch


@dataclass(frozen=True)
class Wait:
    """Why and until when a guarded call is waiting, for progress reports."""

    reason: str  # "breaker", "rate_budget", "retry_backoff" or "retry_budget"
    until: float
    target: str = ""  # who is waited for, as users know it ("AI", "git")

    def describe(self) -> str:
        if self.reason == "breaker":
            return f"{self.target} circuit open until {format_epoch(self.until)}".lstrip()
        what = {
            "rate_budget": "the rate budget",
            "retry_budget": "the retry budget to allow another retry",
        }.get(self.reason, "a retry")
        return f"waiting for {what} until {format_epoch(self.until)}"
