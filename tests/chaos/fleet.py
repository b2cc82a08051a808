"""A small Eidolon cluster for the chaos drills: the fake Messages API as its own process
(``manage.py fake_anthropic``), task workers (``manage.py worker``) and a web process (daphne),
all sharing the test's database; analyses submitted by several users over the JSON API; and
the figures a drill prints: what reached the fake and when, outcomes, the busiest window,
durations, breaker transitions and each process's peak memory.

A drill builds the ``anthropic`` breaker and budget it wants (``anthropic_controls``), opens a
``Fleet`` with the fake's fault options and the workers' settings, submits, waits, and reads
the fake's request log (``requests_at_fake``) against the database's transitions.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from analyses.models import Analysis, CodeUnit, UnitStatus
from reliability.fake_anthropic import MESSAGES_PATH
from reliability.models import BreakerTransition, CircuitBreaker, RateLimitBudget
from tests.anthropic_support import write_project
from tests.api_support import Caller
from tests.budget_support import busiest_window
from tests.processes import (
    ManagedProcess,
    start_daphne,
    start_fake_anthropic_command,
    start_worker,
    subprocess_environment,
    wait_until,
)

API_KEY = "test-key"
# Token limits the fake advertises: roomy, so that only the budget's request limit spaces calls.
ROOMY_TOKENS = {"input_tokens_limit": 10**9, "output_tokens_limit": 10**9}
# The product's timings scaled down for drills that last tens of seconds, not hours.
SCALED_SETTINGS = {
    "EIDOLON_AI_TIMEOUT": "2",  # 90 s: what ends a hung request
    "EIDOLON_RETRY_BASE_DELAY": "0.25",  # 1 s
    "EIDOLON_RETRY_MAX_DELAY": "2",  # 60 s
    "EIDOLON_RETRY_BUDGET_WINDOW": "3",  # 10 s
    "EIDOLON_ANALYSIS_CONCURRENCY": "4",  # 10 units of one analysis at once
}


# --- what is analysed, and the controls it goes through ------------------------------------------


def write_repository(root: Path, *, functions: int, label: str) -> Path:
    """A generated repository (``write_project``) whose code is its own: ``label`` is in every
    docstring, so no two repositories share a cached review."""
    root.mkdir(parents=True, exist_ok=True)
    write_project(root, functions=functions)
    for module in root.glob("*.py"):
        text = module.read_text()
        text = text.replace('"""Function ', f'"""{label}: function ')
        text = text.replace("    return value * 2\n", f"    return value * 2  # {label}\n")
        module.write_text(text)
    return root


def reviewable_units(functions: int) -> int:
    """Units ``write_project(functions=...)`` yields: the functions and one helper per module."""
    return functions + (functions + 9) // 10


def write_repositories(root: Path, function_counts: Sequence[int]) -> list[Path]:
    """One repository of its own (``write_repository``) under ``root`` per function count."""
    return [
        write_repository(root / f"repo-{index}", functions=count, label=f"repo {index}")
        for index, count in enumerate(function_counts)
    ]


# The drills prove the breakers, budgets and workers of one model (the model chain has tests of its
# own): every process of a drill, the test's included (``tests/chaos/conftest.py``), reviews with
# this model alone.
DRILL_MODEL = "claude-sonnet-5-5"
DRILL_TARGET = f"anthropic:{DRILL_MODEL}"


def anthropic_controls(*, breaker: Mapping[str, Any], budget: Mapping[str, Any]) -> None:
    """The drill model's breaker and budget rows, tuned for a drill (model defaults otherwise;
    tokens roomy unless ``budget`` says)."""
    now = time.time()
    CircuitBreaker.objects.create(
        name=DRILL_TARGET, state_changed_at=now, window_started_at=now, **breaker
    )
    RateLimitBudget.objects.create(
        name=DRILL_TARGET,
        **{
            "input_tokens_per_window": 10**9,
            "output_tokens_per_window": 10**9,
            "requests_per_day": 10**6,
            **budget,
        },
    )


# --- the fake's request log ---------------------------------------------------------------------


@dataclass(frozen=True)
class FakeRequest:
    """One Messages request as the fake logged it."""

    at: float  # wall clock (epoch seconds), when the fake received it
    fault: str  # what the fake did: "ok", "overloaded", "rate_limit", "hang", "reset", ...
    status: int | None


def requests_at_fake(log: Iterable[Mapping[str, Any]]) -> list[FakeRequest]:
    """The Messages requests of the fake's ``/_fake/log``, in arrival order."""
    return [
        FakeRequest(
            at=datetime.fromisoformat(record["received_at"]).timestamp(),
            fault=record["fault"],
            status=record["status"],
        )
        for record in log
        if record["path"] == MESSAGES_PATH
    ]


def http_json(
    url: str, *, method: str = "GET", body: object = None, token: str | None = None
) -> tuple[int, Any]:
    """(status, parsed JSON body) of a request to a server of ours on loopback; a 429 is
    asked again after its ``Retry-After``, as a well-behaved client does."""
    for _ in range(20):
        status, headers, answer = _http_json_once(url, method=method, body=body, token=token)
        if status != 429 or "Retry-After" not in headers:
            break
        time.sleep(float(headers["Retry-After"]))
    return status, answer


def _http_json_once(
    url: str, *, method: str, body: object, token: str | None
) -> tuple[int, Any, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.headers, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read() or b"null")


# --- the processes ------------------------------------------------------------------------------


def peak_resident_kib(pid: int) -> int | None:
    """The process's peak resident set (VmHWM, KiB), or None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


class Fleet:
    """The fake API, ``workers`` task workers and a web process, all on the test's database.

    ``fake_args`` are ``manage.py fake_anthropic`` options (the review responder is always
    on); ``settings`` are environment variables for the web and worker processes.
    """

    def __init__(
        self,
        *,
        source_root: Path,
        workers: int = 3,
        analyses_per_worker: int = 2,
        fake_args: Sequence[str] = (),
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.source_root = source_root
        self.workers_wanted = workers
        self.analyses_per_worker = analyses_per_worker
        self.fake_args = tuple(fake_args)
        self.settings = dict(settings or {})
        self.processes: dict[str, ManagedProcess] = {}
        self.fake_url = self.web_url = ""
        self.started_in = 0.0  # seconds until every process was up

    def __enter__(self) -> Fleet:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        began = time.monotonic()
        fake, self.fake_url = start_fake_anthropic_command(
            "--responder", "review", *self.fake_args, env=subprocess_environment()
        )
        self.processes["fake"] = fake
        self.configure_fake(**ROOMY_TOKENS)
        env = subprocess_environment(
            ANTHROPIC_API_KEY=API_KEY,
            ANTHROPIC_BASE_URL=self.fake_url,
            EIDOLON_AI_MODELS=DRILL_MODEL,
            EIDOLON_SOURCE_ROOTS=str(self.source_root),
            EIDOLON_LOG_LEVEL="WARNING",
            **self.settings,
        )
        for index in range(1, self.workers_wanted + 1):
            name = f"worker-{index}"
            self.processes[name] = start_worker(env, name, threads=self.analyses_per_worker)
        self.processes["web"], self.web_url = start_daphne(env)
        self.started_in = time.monotonic() - began

    def stop(self) -> None:
        for process in reversed(self.processes.values()):  # the fake last
            process.stop()

    # the fake

    def configure_fake(self, **changes: Any) -> dict[str, Any]:
        status, config = http_json(f"{self.fake_url}/_fake/config", method="POST", body=changes)
        assert status == 200, config
        return config

    def fake_log(self) -> list[FakeRequest]:
        status, log = http_json(f"{self.fake_url}/_fake/log")
        assert status == 200, log
        return requests_at_fake(log)

    # analyses

    def submit(self, caller: Caller, source: Path) -> int:
        """Submit ``source`` as ``caller`` over the JSON API; the new analysis's id."""
        status, body = http_json(
            f"{self.web_url}/api/analyses",
            method="POST",
            body={"source": str(source), "provider": "anthropic"},
            token=caller.token,
        )
        assert status == 202, (status, body)
        return body["id"]

    def analysis(self, caller: Caller, analysis_id: int) -> dict[str, Any]:
        status, body = http_json(f"{self.web_url}/api/analyses/{analysis_id}", token=caller.token)
        assert status == 200, (status, body)
        return body

    def events(self, caller: Caller, analysis_id: int) -> list[dict[str, Any]]:
        """Every stored event of the analysis, oldest first, as the API pages them."""
        events: list[dict[str, Any]] = []
        while True:
            after = events[-1]["seq"] if events else 0
            status, body = http_json(
                f"{self.web_url}/api/analyses/{analysis_id}/events?after={after}&limit=500",
                token=caller.token,
            )
            assert status == 200, (status, body)
            if not body["events"]:
                return events
            events.extend(body["events"])

    def wait_finished(self, analysis_ids: Iterable[int], *, timeout: float) -> None:
        ids = list(analysis_ids)

        def all_finished() -> bool:
            return all(analysis.is_finished for analysis in Analysis.objects.filter(pk__in=ids))

        try:
            wait_until(all_finished, timeout=timeout, every=0.25)
        except AssertionError:
            raise AssertionError(
                f"analyses not finished within {timeout} s: "
                + ", ".join(
                    f"#{a.pk} {a.status} {a.functions_done}/{a.functions_total}"
                    for a in Analysis.objects.filter(pk__in=ids)
                )
                + "\n"
                + self.output_tail()
            ) from None

    def peak_memory(self) -> dict[str, int | None]:
        """Each process's peak resident set so far (KiB): call it before ``stop``."""
        return {name: peak_resident_kib(p.process.pid) for name, p in self.processes.items()}

    def output_tail(self, lines: int = 15) -> str:
        """The last lines each process wrote, for a failure's message."""
        return "\n".join(
            f"--- {name}:\n" + "\n".join(process.output()[-lines:])
            for name, process in self.processes.items()
        )


# --- what a drill checks and prints ---------------------------------------------------------------


def units_without_result(analysis_ids: Iterable[int]) -> list[str]:
    """Reviewable units of these analyses that were neither reviewed nor served from the cache."""
    return [
        f"#{analysis_id} {qualname}: {status} {reason}".strip()
        for analysis_id, qualname, status, reason in CodeUnit.objects.filter(
            analysis_id__in=list(analysis_ids), reviewable=True
        )
        .exclude(status__in=[UnitStatus.ANALYZED, UnitStatus.CACHED])
        .values_list("analysis_id", "qualname", "status", "failure_reason")
    ]


def breaker_transitions(name: str = DRILL_TARGET) -> list[tuple[float, str, str, str]]:
    """(epoch seconds, from, to, reason) of each transition of breaker ``name``, in order."""
    return [
        (created_at.timestamp(), from_state, to_state, reason)
        for created_at, from_state, to_state, reason in BreakerTransition.objects.filter(
            breaker__name=name
        )
        .order_by("created_at", "id")
        .values_list("created_at", "from_state", "to_state", "reason")
    ]


def analysis_durations(analysis_ids: Iterable[int]) -> dict[int, float]:
    """Seconds from creation to finish of each analysis."""
    return {
        pk: (finished - created).total_seconds()
        for pk, created, finished in Analysis.objects.filter(pk__in=list(analysis_ids))
        .order_by("pk")
        .values_list("pk", "created_at", "finished_at")
        if finished is not None
    }


@dataclass(frozen=True)
class OpenSpell:
    """The breaker's first spell away from closed, against what reached the fake meanwhile."""

    opened: list[float]  # closed -> open transitions, the whole run
    half_opened: list[float]  # -> half_open transitions after the first opening
    closed_at: float | None  # when it closed again
    in_flight: list[FakeRequest]  # logged within the grace after the opening: sent before it
    while_open: list[FakeRequest]  # logged after that, until it closed: probes, or leaks

    @property
    def seconds(self) -> float:
        return (self.closed_at or time.time()) - self.opened[0] if self.opened else 0.0

    def windows(self, recovery_timeout: float) -> int:
        """Half-open windows the spell allows: one per recovery timeout."""
        return int(self.seconds / recovery_timeout) + 1


def open_spell(
    transitions: Sequence[tuple[float, str, str, str]],
    requests: Sequence[FakeRequest],
    *,
    grace: float,
) -> OpenSpell:
    opened = [at for at, old, new, _ in transitions if (old, new) == ("closed", "open")]
    start = opened[0] if opened else math.inf
    closed_at = next((at for at, _, new, _ in transitions if new == "closed" and at > start), None)
    end = closed_at or math.inf
    return OpenSpell(
        opened=opened,
        half_opened=[at for at, _, new, _ in transitions if new == "half_open" and at > start],
        closed_at=closed_at,
        in_flight=[r for r in requests if start <= r.at < start + grace],
        while_open=[r for r in requests if start + grace <= r.at <= end],
    )


def figure_block(title: str, lines: Iterable[str]) -> str:
    body = "\n".join(f"  {line}" for line in lines)
    return f"\n=== {title} ===\n{body}\n"


def common_figures(
    requests: Sequence[FakeRequest],
    *,
    window: float,
    durations: Mapping[int, float],
    transitions: Sequence[tuple[float, str, str, str]],
    memory: Mapping[str, int | None],
    began: float,
) -> list[str]:
    """Lines every drill prints: requests and outcomes at the fake, the busiest window,
    durations, breaker transitions and peak memory."""
    outcomes = Counter(request.fault for request in requests)
    spans = ", ".join(f"#{pk} {seconds:.1f} s" for pk, seconds in durations.items())
    lines = [
        f"requests at the fake: {len(requests)}",
        "per outcome: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())),
        f"busiest {window:g} s window: "
        f"{busiest_window([request.at for request in requests], window=window)} requests",
        f"analyses (created -> finished): {spans}",
        f"transitions ({len(transitions)}): "
        + (
            ", ".join(f"{at - began:+.1f} s {old}->{new}" for at, old, new, _ in transitions) or "-"
        ),
        "transition reasons: "
        + "; ".join(
            f"{reason} x{count}"
            for reason, count in Counter(reason for *_, reason in transitions).items()
        ),
        "peak resident memory (VmHWM): "
        + ", ".join(
            f"{name} {kib / 1024:.0f} MiB" if kib else f"{name} ?" for name, kib in memory.items()
        ),
    ]
    return lines
