"""Drill 2, an outage (issue 13): three analyses by three users run on three worker processes
when the fake API, its own process, starts answering nothing but 529 for a while, then
recovers.

The ``anthropic`` breaker, shared by every process through the database, opens once (one
closed -> open transition, not one per process); while it is open, at most its permitted
half-open probes reach the fake per recovery timeout, counted cluster-wide from the fake's
request log against the transitions; every analysis says it is waiting (its status and its
progress events name the open circuit) and finishes after the recovery with every function
reviewed.

Scaled for CI: the outage lasts 12 s (60 s in the issue), the breaker's recovery timeout is
3 s (120 s in production) so the outage spans several half-open windows, and the budget's
window is 6 s; the bounds asserted are the issue's.
"""

from __future__ import annotations

import time

import pytest

from analyses.models import Analysis, AnalysisStatus, UnitStatus
from tests.api_support import caller
from tests.chaos.fleet import (
    SCALED_SETTINGS,
    Fleet,
    OpenSpell,
    analysis_durations,
    anthropic_controls,
    breaker_transitions,
    common_figures,
    figure_block,
    open_spell,
    units_without_result,
    write_repositories,
)
from tests.processes import wait_until

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.chaos,
    pytest.mark.django_db(transaction=True),
]

OUTAGE_SECONDS = 12.0
RECOVERY_TIMEOUT = 3.0
PROBES = 1  # half_open_max_calls: probes admitted at once while half-open, cluster-wide
# A request the fake logs this soon after the breaker opened was sent before it opened.
IN_FLIGHT_GRACE = 0.1
FUNCTIONS = (14, 15, 16)
USERS = ("ada", "grace", "linus")
BUDGET_WINDOW, BUDGET_REQUESTS = 6.0, 30
BREAKER = {
    "failure_threshold": 3,  # the product's default
    "recovery_timeout": RECOVERY_TIMEOUT,
    "half_open_max_calls": PROBES,
    "half_open_success_threshold": 1,
    "half_open_max_duration": 4.0,
    "slow_call_duration": 2.0,  # = the per-call timeout, as the defaults have it
}
CIRCUIT_OPEN = "circuit open"  # what an analysis's waiting reason says (``guard.Wait``)


def analyses_running(ids) -> bool:
    """Every analysis has reviewed a few units: the outage finds them all mid-run."""
    return all(
        analysis.status == AnalysisStatus.RUNNING
        and analysis.units.filter(status=UnitStatus.ANALYZED).count() >= 3
        for analysis in Analysis.objects.filter(pk__in=ids)
    )


def outage(fleet: Fleet, submitted: dict) -> tuple[float, float, dict[int, set[str]]]:
    """Only 529 for ``OUTAGE_SECONDS``, then recovery; meanwhile every analysis's waiting
    reason as the API reports it. Returns (began, ended, reasons seen per analysis)."""
    seen: dict[int, set[str]] = {pk: set() for pk in submitted}
    fleet.configure_fake(fault_rates={"overloaded": 1.0})
    began = time.time()
    while time.time() < began + OUTAGE_SECONDS:
        for pk, who in submitted.items():
            seen[pk].add(fleet.analysis(who, pk)["waiting_reason"])
        time.sleep(0.2)
    fleet.configure_fake(fault_rates={})
    return began, time.time(), seen


def waiting_progress(events: list[dict]) -> list[dict]:
    """The progress events that say the analysis waits for the open circuit."""
    return [
        event
        for event in events
        if event["type"] == "analysis.progress"
        and CIRCUIT_OPEN in event["data"].get("waiting_reason", "")
    ]


def spell_figures(spell: OpenSpell, *, began: float) -> list[str]:
    opened_at = f", at {spell.opened[0] - began:+.1f} s" if spell.opened else ""
    return [
        f"breaker: threshold 3, recovery {RECOVERY_TIMEOUT:g} s, {PROBES} probe(s) at once",
        f"opened (closed->open): {len(spell.opened)} time(s){opened_at}",
        f"while open ({spell.seconds:.1f} s, {len(spell.half_opened)} half-open windows): "
        f"{len(spell.while_open)} requests reached the fake "
        f"({', '.join(r.fault for r in spell.while_open)}); "
        f"{len(spell.in_flight)} in flight at the opening",
    ]


class TestOutage:
    @pytest.mark.timeout(180)
    def test_only_529_for_a_while__breaker_opens_once_probes_only_all_finish(self, tmp_path):
        anthropic_controls(
            breaker=BREAKER,
            budget={"requests_per_window": BUDGET_REQUESTS, "window_seconds": BUDGET_WINDOW},
        )
        callers = [caller(name) for name in USERS]
        repositories = write_repositories(tmp_path, FUNCTIONS)
        with Fleet(
            source_root=tmp_path,
            analyses_per_worker=1,
            fake_args=["--latency=0.05:0.15", "--seed=3"],
            settings=SCALED_SETTINGS,
        ) as fleet:
            began = time.time()
            submitted = {
                fleet.submit(who, repository): who
                for who, repository in zip(callers, repositories, strict=True)
            }
            wait_until(lambda: analyses_running(submitted), timeout=60, every=0.2)
            outage_began, outage_ended, waiting_seen = outage(fleet, submitted)
            try:
                fleet.wait_finished(submitted, timeout=90)
            finally:
                memory = fleet.peak_memory()
                requests = fleet.fake_log()
            events = {pk: fleet.events(who, pk) for pk, who in submitted.items()}

        transitions = breaker_transitions()
        spell = open_spell(transitions, requests, grace=IN_FLIGHT_GRACE)
        waiting_events = {pk: waiting_progress(stream) for pk, stream in events.items()}
        print(
            figure_block(
                "drill 2: outage",
                [
                    f"{len(submitted)} analyses, 3 users, 3 workers "
                    f"(up in {fleet.started_in:.1f} s); only 529 from "
                    f"{outage_began - began:+.1f} s to {outage_ended - began:+.1f} s",
                    *spell_figures(spell, began=began),
                    "waiting reasons seen: "
                    + "; ".join(
                        f"#{pk} {sorted(r for r in reasons if r)[:1]}"
                        for pk, reasons in waiting_seen.items()
                    ),
                    "progress events naming the open circuit: "
                    + ", ".join(f"#{pk} {len(e)}" for pk, e in waiting_events.items()),
                    *common_figures(
                        requests,
                        window=BUDGET_WINDOW,
                        durations=analysis_durations(submitted),
                        transitions=transitions,
                        memory=memory,
                        began=began,
                    ),
                ],
            )
        )

        assert len(spell.opened) == 1, transitions
        assert outage_began <= spell.opened[0] <= outage_ended
        assert spell.closed_at is not None and spell.closed_at > outage_ended
        assert len(spell.half_opened) <= spell.windows(RECOVERY_TIMEOUT)
        assert len(spell.while_open) <= PROBES * len(spell.half_opened), [
            (round(r.at - began, 2), r.fault) for r in spell.while_open
        ]
        for pk, reasons in waiting_seen.items():
            assert any(CIRCUIT_OPEN in reason for reason in reasons), (pk, reasons)
            assert waiting_events[pk], f"#{pk}: no progress event said it was waiting"
        analyses = Analysis.objects.filter(pk__in=submitted)
        assert {a.status for a in analyses} == {AnalysisStatus.COMPLETED}, [
            (a.pk, a.status, a.status_reason) for a in analyses
        ]
        assert all(a.finished_at.timestamp() > outage_ended for a in analyses)
        assert not units_without_result(submitted)
        assert all(a.functions_analyzed == a.functions_total for a in analyses)
