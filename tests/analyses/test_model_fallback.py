"""Issue 15's acceptance: when one Claude model is overloaded, reviews go on with the next.

Through the real worker path (``run_analysis`` building the model chain from settings, or
``manage.py analyze`` processes) and the real SDK against the fake with model-specific faults on
loopback. The issue's windows are scaled down: a 30 s outage to 8 s, a breaker's recovery to
1-2.5 s; every bound the issue states is asserted. ``-s`` shows the counts per model.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.test import override_settings

import reliability.guard
from analyses.models import Analysis, AnalysisStatus, Card, CodeUnit, LLMCall, UnitStatus
from analyses.orchestrator import run_analysis
from analyses.providers.anthropic import model_target
from analyses.review_responder import review_responder
from analyses.services import analysis_create
from reliability.fake_anthropic import FakeAnthropic, FakeConfig, RequestRecord
from reliability.models import BreakerState, BreakerTransition, CircuitBreaker, RateLimitBudget
from tests.processes import ROOT, subprocess_environment

pytestmark = pytest.mark.django_db(transaction=True)

PRIMARY, FALLBACK = "claude-sonnet-5-5", "claude-haiku-4-5"
MODELS = [PRIMARY, FALLBACK]
API_KEY = "test-key"
THRESHOLD = 3  # consecutive failures that open a model's breaker
PROBES = 1  # half_open_max_calls
CONCURRENCY = 2
OVERLOADED = {"overloaded": 1.0}
# The product's retry policy and budget, their delays and window scaled down.
RETRY = {"max_attempts": 4, "base_delay": 0.05, "max_delay": 0.5}
RETRY_BUDGET = {"ratio": 0.2, "window": 3.0, "min_retries": 3}


def tune_models(*, recovery: float, probes: int = PROBES) -> None:
    """Each model's breaker (threshold, recovery, probes as the test says) and a roomy budget."""
    now = time.time()
    for model in MODELS:
        CircuitBreaker.objects.update_or_create(
            name=model_target(model),
            defaults={
                "failure_threshold": THRESHOLD,
                "recovery_timeout": recovery,
                "half_open_max_calls": probes,
                "half_open_success_threshold": 1,
                "state": BreakerState.CLOSED,
                "state_changed_at": now,
                "window_started_at": now,
            },
        )
        RateLimitBudget.objects.update_or_create(
            name=model_target(model),
            defaults={
                "requests_per_window": 100_000,
                "input_tokens_per_window": 10**8,
                "output_tokens_per_window": 10**8,
                "requests_per_day": 10**6,
            },
        )


def write_undocumented_project(root: Path, *, functions: int, salt: int = 0) -> Path:
    """``functions`` functions without docstrings (the static rules flag each one), ten per
    module; ``salt`` makes their code, and so their cache keys, differ from other projects'."""
    root.mkdir(parents=True, exist_ok=True)
    for module in range((functions + 9) // 10):
        lines = []
        for index in range(module * 10, min(functions, (module + 1) * 10)):
            lines.append(
                f"def function_{index}(value, limit={index + 1000 * salt}):\n"
                f"    if value > limit:\n"
                f"        return value - limit\n"
                f"    return value + {index}\n\n\n"
            )
        (root / f"module_{module}.py").write_text("".join(lines))
    return root


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    # Roomy token limits: what the fake advertises becomes the budget's limit.
    config = FakeConfig(seed=11, input_tokens_limit=10**8, output_tokens_limit=10**8)
    with FakeAnthropic(config=config, responder=review_responder).running() as server:
        yield server


@pytest.fixture
def chain_settings(fake: FakeAnthropic) -> Iterator[None]:
    """The product's model chain against the fake, with fresh per-model guards (a process keeps
    one per target, configured when first used)."""
    with override_settings(
        ANTHROPIC_API_KEY=API_KEY,
        ANTHROPIC_BASE_URL=fake.base_url,
        EIDOLON_AI_MODELS=MODELS,
        EIDOLON_AI_MODEL=PRIMARY,
        EIDOLON_TARGET_FAMILIES={"anthropic": MODELS},
        EIDOLON_RETRY=RETRY,
        EIDOLON_RETRY_BUDGET=RETRY_BUDGET,
    ):
        _forget_model_guards()
        yield
        _forget_model_guards()


def _forget_model_guards() -> None:
    for model in MODELS:
        reliability.guard._guards.pop(model_target(model), None)


async def new_analysis(root: Path, **options) -> Analysis:
    return await sync_to_async(analysis_create)(
        source=str(root),
        provider="anthropic",
        allow_any_path=True,
        concurrency=CONCURRENCY,
        **options,
    )


def review_requests(fake: FakeAnthropic, model: str | None = None) -> list[RequestRecord]:
    return [
        r for r in fake.requests if r.path == "/v1/messages" and (model is None or r.model == model)
    ]


def transitions(model: str) -> list[tuple[str, str, datetime]]:
    return list(
        BreakerTransition.objects.filter(breaker__name=model_target(model))
        .order_by("created_at", "id")
        .values_list("from_state", "to_state", "created_at")
    )


def half_open_windows(
    history: list[tuple[str, str, datetime]], *, until: datetime
) -> list[tuple[datetime, datetime]]:
    """From each move to half-open to the next one (the last: to ``until``): a probe admitted
    while half-open reaches the API before the breaker moves on, so it falls in its window."""
    starts = [at for _, to_state, at in history if to_state == BreakerState.HALF_OPEN]
    return list(zip(starts, [*starts[1:], until], strict=True))


def received_in(
    requests: list[RequestRecord], start: datetime, end: datetime
) -> list[RequestRecord]:
    return [r for r in requests if start <= r.received_at < end]


def answered(fake: FakeAnthropic, qualname: str, model: str, *, before: datetime) -> bool:
    """``model`` answered a review request of ``qualname`` received before ``before``."""
    return any(
        r.model == model
        and r.fault == "ok"
        and r.received_at < before
        and f"def {qualname}(" in r.prompt_text
        for r in review_requests(fake)
    )


def per_model_counts(analysis_id: int) -> dict[str, Counter]:
    """LLMCall rows, CodeUnit.model and Card.model, counted per model."""
    units = CodeUnit.objects.filter(analysis_id=analysis_id, reviewable=True)
    return {
        "llm_calls": Counter(
            LLMCall.objects.filter(analysis_id=analysis_id).values_list("model", flat=True)
        ),
        "llm_calls_ok": Counter(
            LLMCall.objects.filter(analysis_id=analysis_id, status="ok").values_list(
                "model", flat=True
            )
        ),
        "units": Counter(units.values_list("model", flat=True)),
        "cards": Counter(
            Card.objects.filter(analysis_id=analysis_id).values_list("model", flat=True)
        ),
    }


def cards_disagreeing_with_their_unit(analysis_id: int) -> list[tuple[str, str, str]]:
    return [
        (card.unit.qualname, card.model, card.unit.model)
        for card in Card.objects.filter(analysis_id=analysis_id).select_related("unit")
        if card.model != card.unit.model
    ]


def print_counts(title: str, fake: FakeAnthropic, counts: dict[str, Counter]) -> None:
    print(f"\n{title}")
    print(f"  requests at the fake (per model, per outcome): {fake.stats()}")
    for name, counter in counts.items():
        print(f"  {name}: {dict(counter)}")


class TestPrimaryOverloaded:
    FUNCTIONS = 110  # at 2 concurrent reviews of 0.3 s: at least 16 s, beyond the outage
    LATENCY = 0.3
    RECOVERY = 2.5
    OUTAGE = 8.0  # the 30 s

    @pytest.mark.slow
    async def test_primary_529s__the_fallback_serves_then_the_primary_takes_units_back(
        self, fake, chain_settings, tmp_path
    ):
        await sync_to_async(tune_models)(recovery=self.RECOVERY)
        fake.configure(latency_s=self.LATENCY)
        analysis = await new_analysis(
            write_undocumented_project(tmp_path, functions=self.FUNCTIONS)
        )
        # The outage starts with the run: a success of the primary in flight when it began
        # would reset the breaker's count of consecutive failures, and blur its bound.
        fake.configure(model_fault_rates={PRIMARY: OVERLOADED})
        began = datetime.now(UTC)  # every request the fake receives from now gets a 529
        run = asyncio.create_task(run_analysis(analysis.pk))
        await asyncio.sleep(self.OUTAGE)
        ended = datetime.now(UTC)  # and every one before this did
        fake.configure(model_fault_rates={})
        status = await asyncio.wait_for(run, timeout=90)
        finished_at = datetime.now(UTC)
        analysis = await sync_to_async(Analysis.objects.get)(pk=analysis.pk)
        counts = await sync_to_async(per_model_counts)(analysis.pk)
        print_counts(
            f"primary overloaded for {self.OUTAGE:g} s: {analysis.functions_total} functions",
            fake,
            counts,
        )

        # Every function reviewed, none failed.
        assert status == AnalysisStatus.COMPLETED, analysis.status_reason
        assert analysis.functions_analyzed == analysis.functions_total == self.FUNCTIONS
        units = await sync_to_async(list)(
            CodeUnit.objects.filter(analysis=analysis, reviewable=True).values(
                "qualname", "status", "model", "finished_at"
            )
        )
        assert {u["status"] for u in units} == {UnitStatus.ANALYZED}

        # The primary's breaker opened once, and closed again only after the outage.
        history = await sync_to_async(transitions)(PRIMARY)
        print(f"  {PRIMARY} breaker: {[(f, t, at.time().isoformat()) for f, t, at in history]}")
        opened = [at for f, t, at in history if (f, t) == ("closed", "open")]
        assert len(opened) == 1, history
        opened_at = opened[0]
        closed = [at for f, t, at in history if t == BreakerState.CLOSED and at > opened_at]
        assert closed, f"the primary's breaker never closed again: {history}"
        closed_at = closed[0]
        assert began < opened_at < ended < closed_at
        assert not await sync_to_async(transitions)(FALLBACK), "the fallback's breaker moved"

        # At most threshold (and what the other concurrent unit had in flight) requests reach
        # the primary before its breaker opens; then its probes per half-open window, no more.
        primary = review_requests(fake, PRIMARY)
        windows = half_open_windows(history, until=closed_at)
        first_window = received_in(primary, began, windows[0][0])
        print(
            f"  {len(first_window)} requests reached {PRIMARY} before its first half-open; "
            f"per half-open window: {[len(received_in(primary, *w)) for w in windows]}"
        )
        assert len(first_window) <= THRESHOLD + CONCURRENCY - 1
        assert all(len(received_in(primary, *window)) <= PROBES for window in windows)
        assert len(windows) >= int(self.OUTAGE / self.RECOVERY) - 1
        # (A request received just before ``ended`` may have read the config after it.)
        outage = received_in(primary, began, ended - timedelta(milliseconds=50))
        assert {r.fault for r in outage} == {"overloaded"}

        # During the outage, once the primary's breaker was open, every review went to the
        # fallback.
        during = [u for u in units if opened_at < u["finished_at"] < ended]
        assert len(during) >= 5, f"{len(during)} units reviewed during the outage: too few to tell"
        assert {u["model"] for u in during} == {FALLBACK}
        ok_requests = [r for r in review_requests(fake) if r.fault == "ok"]
        assert {r.model for r in received_in(ok_requests, opened_at, ended)} == {FALLBACK}

        # After recovery new units went back to the primary: the fallback only finished what it
        # had been asked before the primary's breaker closed.
        after = [u for u in units if u["finished_at"] > closed_at]
        late = [u for u in after if u["model"] != PRIMARY]
        assert all(answered(fake, u["qualname"], FALLBACK, before=closed_at) for u in late), late
        assert len(late) <= CONCURRENCY
        assert len(after) - len(late) >= 5, f"{len(after)} units after recovery: too few to tell"
        fallback_after = received_in(review_requests(fake, FALLBACK), closed_at, finished_at)
        assert len(fallback_after) <= CONCURRENCY

        # The counts per model agree: requests, LLMCall rows, units and cards.
        stats = fake.stats()
        for model in MODELS:
            assert counts["llm_calls"][model] == sum(stats[model].values()), model
            assert counts["llm_calls_ok"][model] == stats[model].get("ok", 0), model
        assert counts["units"][PRIMARY] > 0 and counts["units"][FALLBACK] > 0
        assert sum(counts["units"].values()) == self.FUNCTIONS
        assert counts["units"][FALLBACK] >= len(during)
        assert set(counts["cards"]) == set(MODELS)
        assert not await sync_to_async(cards_disagreeing_with_their_unit)(analysis.pk)
        assert analysis.llm_requests == len(review_requests(fake))


class TestBothOverloaded:
    RECOVERY = 1.5
    OUTAGE = 4.0

    @pytest.mark.slow
    async def test_both_529__units_wait_for_the_breakers_and_complete_after_recovery(
        self, fake, chain_settings, tmp_path
    ):
        await sync_to_async(tune_models)(recovery=self.RECOVERY)
        fake.configure(model_fault_rates={model: OVERLOADED for model in MODELS})
        analysis = await new_analysis(write_undocumented_project(tmp_path, functions=12))
        reasons: list[str] = []
        waiting = asyncio.Event()

        def watch(progress: dict) -> None:
            reasons.append(progress["waiting_reason"])
            if all(model in progress["waiting_reason"] for model in MODELS):
                waiting.set()

        began = datetime.now(UTC)
        run = asyncio.create_task(run_analysis(analysis.pk, on_progress=watch))
        await asyncio.wait_for(waiting.wait(), timeout=30)
        stored_reason = await sync_to_async(
            lambda: Analysis.objects.values_list("waiting_reason", flat=True).get(pk=analysis.pk)
        )()
        await asyncio.sleep(max(0.0, self.OUTAGE - (datetime.now(UTC) - began).total_seconds()))
        fake.configure(model_fault_rates={})
        ended = datetime.now(UTC)
        status = await asyncio.wait_for(run, timeout=60)
        analysis = await sync_to_async(Analysis.objects.get)(pk=analysis.pk)
        counts = await sync_to_async(per_model_counts)(analysis.pk)
        waits = sorted({reason for reason in reasons if reason})
        print_counts("both models overloaded, then recovered", fake, counts)
        print(f"  waiting reasons: {waits}; stored while waiting: {stored_reason!r}")

        # The units waited for the breakers, and the analysis said so, naming them.
        named = [r for r in waits if "circuit open" in r and all(m in r for m in MODELS)]
        assert named, waits
        assert stored_reason, "the analysis did not store what it waited for"
        for model in MODELS:
            history = await sync_to_async(transitions)(model)
            assert [(f, t) for f, t, _ in history].count(("closed", "open")) == 1, history
        # Nothing failed: with no deadline, the bad-day rules fail a unit only on a permanent
        # error, and a 529 is transient.
        assert status == AnalysisStatus.COMPLETED, analysis.status_reason
        assert analysis.functions_failed == 0
        assert analysis.functions_analyzed == analysis.functions_total == 12
        assert analysis.waiting_reason == ""
        assert set(counts["units"]) <= set(MODELS)
        assert sum(counts["units"].values()) == 12
        # While both were open, only probes reached them.
        for model in MODELS:
            requests = received_in(review_requests(fake, model), began, ended)
            history = await sync_to_async(transitions)(model)
            windows = half_open_windows([h for h in history if h[2] < ended], until=ended)
            assert len(requests) <= THRESHOLD + CONCURRENCY - 1 + PROBES * len(windows), (
                model,
                len(requests),
                len(windows),
            )

    @pytest.mark.slow
    async def test_both_529_past_the_deadline__units_fail_only_as_the_bad_day_rules_say(
        self, fake, chain_settings, tmp_path
    ):
        # As tests/analyses/test_bad_day.py's deadline test: an outage that outlasts the
        # analysis's deadline fails the units that could not be reviewed before it, no sooner.
        await sync_to_async(tune_models)(recovery=1.0)
        fake.configure(model_fault_rates={model: OVERLOADED for model in MODELS})
        analysis = await new_analysis(
            write_undocumented_project(tmp_path, functions=4), max_duration=4
        )
        status = await asyncio.wait_for(run_analysis(analysis.pk), timeout=60)
        analysis = await sync_to_async(Analysis.objects.get)(pk=analysis.pk)
        units = await sync_to_async(list)(
            CodeUnit.objects.filter(analysis=analysis, reviewable=True).values(
                "status", "failure_reason", "finished_at"
            )
        )
        print(f"\nboth overloaded past the deadline: {status}; {fake.stats()}")
        for unit in units:
            print(f"  {unit['status']}: {unit['failure_reason']}")

        assert status in (AnalysisStatus.FAILED, AnalysisStatus.TIMED_OUT)
        assert {u["status"] for u in units} == {UnitStatus.FAILED}
        deadline = analysis.started_at + timedelta(seconds=4)
        for unit in units:
            # Failed once no probe of either breaker could come before the deadline.
            assert unit["finished_at"] >= deadline - timedelta(seconds=1.0), unit
            reason = unit["failure_reason"]
            assert "deadline" in reason or "is open" in reason, reason

    @pytest.mark.slow
    async def test_both_529_with_static_fallback__units_go_to_the_rules_while_both_are_open(
        self, fake, chain_settings, tmp_path
    ):
        await sync_to_async(tune_models)(recovery=30.0)
        fake.configure(model_fault_rates={model: OVERLOADED for model in MODELS})
        analysis = await new_analysis(
            write_undocumented_project(tmp_path, functions=12), fallback_to_static=True
        )
        status = await asyncio.wait_for(run_analysis(analysis.pk), timeout=60)
        analysis = await sync_to_async(Analysis.objects.get)(pk=analysis.pk)
        counts = await sync_to_async(per_model_counts)(analysis.pk)
        print_counts("both models overloaded, static fallback on", fake, counts)

        assert status == AnalysisStatus.COMPLETED, analysis.status_reason
        assert analysis.functions_failed == 0
        assert analysis.functions_analyzed == analysis.functions_total == 12
        # Both breakers opened; every unit reviewed after that went to the rules.
        histories = {model: await sync_to_async(transitions)(model) for model in MODELS}
        both_open_at = max(
            next(at for _, to_state, at in histories[model] if to_state == "open")
            for model in MODELS
        )
        units = await sync_to_async(list)(
            CodeUnit.objects.filter(analysis=analysis, reviewable=True).values(
                "pk", "model", "finished_at"
            )
        )
        static = [u for u in units if u["model"] == "rules"]
        assert static, "no unit went to the rules"
        assert all(u["finished_at"] >= both_open_at for u in static)
        assert {u["model"] for u in units if u["finished_at"] > both_open_at} == {"rules"}
        # The breakers never let a probe through (recovery 30 s): no AI review succeeded.
        assert len(static) == 12
        assert not [r for r in review_requests(fake) if r.fault == "ok"]
        cards = await sync_to_async(list)(
            Card.objects.filter(analysis=analysis).values_list("unit_id", "source", "model")
        )
        assert {unit_id for unit_id, _, _ in cards} == {u["pk"] for u in static}
        assert {(source, model) for _, source, model in cards} == {("static", "rules")}


@pytest.mark.postgres
class TestFourProcesses:
    PROCESSES = 4
    FUNCTIONS = 30
    RECOVERY = 1.0
    PROBES = 2

    @pytest.mark.slow
    def test_four_analyze_processes__share_the_primary_breaker_and_its_probes(self, fake, tmp_path):
        tune_models(recovery=self.RECOVERY, probes=self.PROBES)
        fake.configure(latency_s=0.15, model_fault_rates={PRIMARY: OVERLOADED})
        env = subprocess_environment(
            ANTHROPIC_API_KEY=API_KEY,
            ANTHROPIC_BASE_URL=fake.base_url,
            EIDOLON_AI_MODELS=",".join(MODELS),
            EIDOLON_RETRY_BASE_DELAY=str(RETRY["base_delay"]),
            EIDOLON_RETRY_MAX_DELAY=str(RETRY["max_delay"]),
            EIDOLON_RETRY_BUDGET_WINDOW=str(RETRY_BUDGET["window"]),
            EIDOLON_LOG_LEVEL="WARNING",
        )
        roots = [
            write_undocumented_project(tmp_path / f"p{n}", functions=self.FUNCTIONS, salt=n)
            for n in range(self.PROCESSES)
        ]
        logs = [(tmp_path / f"p{n}.log").open("w") for n in range(self.PROCESSES)]
        began = datetime.now(UTC)
        processes = [
            subprocess.Popen(
                [
                    sys.executable,
                    "manage.py",
                    "analyze",
                    str(root),
                    "--provider=anthropic",
                    f"--concurrency={CONCURRENCY}",
                    "--json",
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
            for root, log in zip(roots, logs, strict=True)
        ]
        try:
            outputs = [process.communicate(timeout=90) for process in processes]
        finally:
            for process, log in zip(processes, logs, strict=True):
                if process.poll() is None:
                    process.kill()
                    process.wait()
                log.close()
        ended = datetime.now(UTC)
        summaries = []
        for n, (process, (stdout, _)) in enumerate(zip(processes, outputs, strict=True)):
            assert process.returncode == 0, (tmp_path / f"p{n}.log").read_text()[-3000:]
            summaries.append(json.loads(stdout.strip().splitlines()[-1]))
        history = transitions(PRIMARY)
        windows = half_open_windows(history, until=ended)
        primary = review_requests(fake, PRIMARY)
        per_window = [len(received_in(primary, *window)) for window in windows]
        counts: dict[str, Counter] = {}
        for summary in summaries:
            for name, counter in per_model_counts(summary["id"]).items():
                counts[name] = counts.get(name, Counter()) + counter
        before = received_in(primary, began, windows[0][0]) if windows else primary
        print_counts(f"{self.PROCESSES} analyze processes, the primary overloaded", fake, counts)
        print(
            f"  {PRIMARY} breaker: {[(f, t) for f, t, _ in history]}\n"
            f"  {len(before)} requests reached {PRIMARY} before its first half-open; per "
            f"half-open window (probes {self.PROBES}): {per_window}"
        )

        # Every analysis completed, the fallback reviewing every unit.
        for summary in summaries:
            assert summary["status"] == AnalysisStatus.COMPLETED, summary
            assert summary["functions_analyzed"] == summary["functions_total"] == self.FUNCTIONS
            assert summary["functions_failed"] == 0
        reviewed = self.PROCESSES * self.FUNCTIONS
        assert counts["units"] == {FALLBACK: reviewed}
        assert (
            counts["llm_calls_ok"]
            == {FALLBACK: reviewed}
            == {FALLBACK: fake.stats()[FALLBACK]["ok"]}
        )
        assert set(counts["cards"]) == {FALLBACK}
        # The primary opened once for all four processes...
        assert [(f, t) for f, t, _ in history].count(("closed", "open")) == 1, history
        assert not [h for h in history if h[1] == BreakerState.CLOSED]
        # ... and its probes, across the processes, stayed at the configured number.
        assert len(windows) >= 2, f"too few half-open windows to tell: {history}"
        assert all(n <= self.PROBES for n in per_window), per_window
        assert sum(per_window) >= 1, "no probe reached the primary: the test proves nothing"
        # Before it opened: its threshold, and what the other units had in flight.
        assert len(before) <= THRESHOLD + self.PROCESSES * CONCURRENCY - 1
        assert not transitions(FALLBACK), "the fallback's breaker moved"
