"""Errors the resilience layer raises to its callers, each saying what happened and until when."""

from __future__ import annotations

from reliability.clock import epoch_datetime


def format_epoch(epoch: float) -> str:
    return epoch_datetime(epoch).isoformat(timespec="seconds")


class ReliabilityError(Exception):
    """Base of the errors the guard raises instead of calling out."""


class CircuitOpenError(ReliabilityError):
    """The breaker rejected the call without making it."""

    def __init__(self, *, breaker: str, state: str, retry_at: float | None, detail: str = ""):
        self.breaker = breaker
        self.state = state
        self.retry_at = retry_at
        when = (
            f"will retry after {format_epoch(retry_at)}"
            if retry_at is not None
            else "until an operator enables it"
        )
        message = f"circuit '{breaker}' is {state.replace('_', '-')}: call rejected, {when}"
        super().__init__(f"{message} ({detail})" if detail else message)


class BudgetExhaustedError(ReliabilityError):
    """The budget cannot admit the call before the caller's deadline, or a cap is reached."""

    def __init__(self, *, budget: str, reason: str, available_at: float | None):
        self.budget = budget
        self.reason = reason
        self.available_at = available_at
        suffix = f"; next capacity at {format_epoch(available_at)}" if available_at else ""
        super().__init__(f"rate budget '{budget}': {reason}{suffix}")


class DeadlineExceededError(ReliabilityError):
    """Waiting (for a retry, a budget or a reply) would run past the caller's deadline."""

    def __init__(self, message: str, *, deadline: float | None = None):
        self.deadline = deadline
        super().__init__(message)


class CallTimeoutError(ReliabilityError):
    """The guarded call did not finish within its timeout; it was cancelled."""

    def __init__(self, *, target: str, timeout: float):
        self.target = target
        self.timeout = timeout
        super().__init__(f"call to '{target}' timed out after {timeout:g} s")
