"""Git sources through the resilience layer: every clone is admitted by the ``git`` breaker,
bounded by the git timeout and retried by the one retry policy."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from django.conf import settings

from analyses.sources import ClonedRepository, SourceError, clone_repository, removed_on_exit
from reliability.guard import Attempt, guard_for
from reliability.outcomes import BreakerVerdict, Outcome, classify_exception

# Failures of the remote (or the network) count against the breaker and are retried; a URL,
# ref or repository that cannot work is the caller's problem and is neither.
_REMOTE_FAILURES = {"clone_timeout", "clone_failed"}


def classify_git_error(exc: BaseException, *, now: float) -> Outcome:
    if isinstance(exc, SourceError):
        if exc.code in _REMOTE_FAILURES:
            return Outcome(verdict=BreakerVerdict.FAILURE, retryable=True, reason=exc.code)
        return Outcome(verdict=BreakerVerdict.IGNORED, retryable=False, reason=exc.code)
    return classify_exception(exc, now=now)


@contextlib.asynccontextmanager
async def cloned_through_guard(
    url: str, *, ref: str | None, deadline: float | None
) -> AsyncIterator[ClonedRepository]:
    """A shallow clone of ``url`` at ``ref``, removed when the block exits."""

    async def clone(attempt: Attempt) -> ClonedRepository:
        return await clone_repository(
            url,
            ref=ref,
            workspace_root=settings.EIDOLON_WORKSPACE_ROOT,
            timeout_s=attempt.timeout,
            max_bytes=settings.EIDOLON_GIT_MAX_BYTES,
            allow_insecure_http=settings.EIDOLON_GIT_ALLOW_INSECURE_HTTP,
            extra_git_config=settings.EIDOLON_GIT_EXTRA_CONFIG,
        )

    guard = guard_for("git", classify=classify_git_error)
    repository = await guard.call(clone, deadline=deadline)
    await guard.drain()
    async with removed_on_exit(repository):
        yield repository
