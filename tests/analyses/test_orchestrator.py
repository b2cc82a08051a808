"""Whole analyses with the offline provider, on the real database."""

from __future__ import annotations

import ast
import asyncio
import json
import subprocess
import threading
import time
from pathlib import Path

import django
import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connections, transaction

from analyses import store
from analyses.events import analysis_group
from analyses.models import Analysis, AnalysisEvent, AnalysisStatus, Card, CodeUnit, UnitStatus
from analyses.orchestrator import run_analysis
from analyses.progress import FLUSH_SECONDS
from analyses.providers.static import StaticProvider
from analyses.selectors import events_after
from analyses.services import InvalidAnalysisRequest, analysis_cancel, analysis_create
from tests.processes import run_manage, subprocess_environment

pytestmark = pytest.mark.django_db(transaction=True)

DJANGO_ROOT = Path(django.__file__).parent


def count_functions_independently(root: Path) -> int:
    """Every def and async def in every .py file under root, by ast.walk."""
    total = 0
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_bytes(), filename=str(path))
        total += sum(
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) for node in ast.walk(tree)
        )
    return total


async def create(**options) -> Analysis:
    options.setdefault("provider", "static")
    options.setdefault("allow_any_path", True)
    return await sync_to_async(analysis_create)(**options)


async def reload(analysis: Analysis) -> Analysis:
    return await sync_to_async(Analysis.objects.get)(pk=analysis.pk)


class TestStaticAnalysisOfDjango:
    async def test_completes__and_counts_every_function_and_method(self):
        expected = count_functions_independently(DJANGO_ROOT)
        analysis = await create(source=str(DJANGO_ROOT))
        status = await run_analysis(analysis.pk)
        analysis = await reload(analysis)
        assert status == AnalysisStatus.COMPLETED, analysis.status_reason
        assert analysis.functions_total == expected
        assert analysis.functions_analyzed == expected
        pending = await sync_to_async(
            CodeUnit.objects.filter(analysis=analysis, status=UnitStatus.PENDING).count
        )()
        assert pending == 0
        assert analysis.cards_count > 1000
        assert 0 <= analysis.health_score <= 100
        assert analysis.summary["units"] >= expected


def write_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


GOOD = '''"""A tidy module."""


def add(a, b):
    """Add."""
    return a + b


def risky(items=[]):
    try:
        return items[0]
    except:
        return None
'''


class TestBadInput:
    async def test_each_bad_file_gets_its_error__and_the_rest_is_analysed(self, tmp_path):
        outside = tmp_path / "outside"
        write_tree(outside, {"secret.py": "def leaked():\n    pass\n"})
        root = write_tree(
            tmp_path / "project",
            {
                "good.py": GOOD,
                "huge.py": "x = 1\n" * (20 * 1024 * 1024 // 6 + 1),
                "nulls.py": b"\x00" * 4096,
                "broken.py": "def broken(:\n    pass\n",
                "deep.py": "x = " + "(" * 5000 + ")" * 5000 + "\n",
            },
        )
        (root / "escape").symlink_to(outside, target_is_directory=True)
        analysis = await create(source=str(root))
        status = await run_analysis(analysis.pk)
        analysis = await reload(analysis)

        codes = {error["path"]: error["code"] for error in analysis.file_errors}
        assert codes["huge.py"] == "too_large"
        assert codes["nulls.py"] in {"null_bytes", "binary"}
        assert codes["broken.py"] == "syntax_error"
        assert codes["deep.py"] == "too_deep"
        assert any(path.startswith("escape") for path in codes), codes
        assert status == AnalysisStatus.COMPLETED_WITH_ERRORS
        assert "file(s) could not be parsed" in analysis.status_reason
        assert (analysis.functions_total, analysis.functions_analyzed) == (2, 2)
        titles = await sync_to_async(
            lambda: set(Card.objects.filter(analysis=analysis).values_list("rule", flat=True))
        )()
        assert {"bare-except", "mutable-default"} <= titles
        assert not await sync_to_async(
            CodeUnit.objects.filter(analysis=analysis, qualname="leaked").exists
        )()

    @pytest.mark.parametrize(
        ("source", "message"),
        [
            ("file:///etc", "'file://' URLs are not allowed"),
            ("ext::sh -c touch% /tmp/pwned", "not allowed"),
            ("--upload-pack=touch /tmp/x", "looks like a command-line option"),
            ("https://user:token@example.com/repo.git", "credential"),
        ],
    )
    async def test_refused_urls_create_nothing(self, source, message):
        with pytest.raises(InvalidAnalysisRequest, match=message) as refused:
            await create(source=source)
        assert "token" not in str(refused.value) or "credential" in str(refused.value)
        assert not await sync_to_async(Analysis.objects.exists)()

    async def test_a_path_outside_the_allowed_roots_is_refused(self, tmp_path, settings):
        settings.EIDOLON_SOURCE_ROOTS = [str(tmp_path / "allowed")]
        (tmp_path / "allowed").mkdir()
        (tmp_path / "elsewhere").mkdir()
        with pytest.raises(InvalidAnalysisRequest, match="outside"):
            await create(source=str(tmp_path / "elsewhere"), allow_any_path=False)
        (tmp_path / "allowed" / "link").symlink_to(tmp_path / "elsewhere")
        with pytest.raises(InvalidAnalysisRequest, match="symbolic link"):
            await create(source=str(tmp_path / "allowed" / "link"), allow_any_path=False)
        assert not await sync_to_async(Analysis.objects.exists)()

    async def test_the_anthropic_provider_without_a_key_is_refused(self, tmp_path, settings):
        settings.ANTHROPIC_API_KEY = ""
        with pytest.raises(InvalidAnalysisRequest, match="needs ANTHROPIC_API_KEY"):
            await create(source=str(tmp_path), provider="anthropic")


class TestEvents:
    async def test_events_are_stored_in_order_then_sent_to_watchers(self, tmp_path):
        root = write_tree(tmp_path, {"good.py": GOOD})
        analysis = await create(source=str(root))
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(analysis_group(analysis.pk), channel)
        await run_analysis(analysis.pk)

        stored = await sync_to_async(events_after)(analysis.pk, 0)
        assert [event["seq"] for event in stored] == list(range(1, len(stored) + 1))
        types = [event["type"] for event in stored]
        assert types[0] == "analysis.started" and types[-1] == "analysis.finished"
        assert (
            types.count("unit.finished")
            == await sync_to_async(CodeUnit.objects.filter(analysis=analysis).count)()
        )
        assert "card.created" in types and "analysis.progress" in types
        received = []
        while True:
            try:
                message = await asyncio.wait_for(layer.receive(channel), 0.2)
            except TimeoutError:
                break
            received.extend(message["events"])
        assert [event["seq"] for event in received] == [event["seq"] for event in stored]
        assert stored[-1]["data"]["status"] == AnalysisStatus.COMPLETED

    async def test_a_batch_being_written_when_the_reviews_end_is_still_announced(self, tmp_path):
        root = write_tree(tmp_path, {"m.py": "def first():\n    pass\n\n\ndef last():\n    pass\n"})
        analysis = await create(source=str(root), concurrency=1)
        provider = LastReviewWhileTheRowIsHeld(analysis_id=analysis.pk, last_qualname="last")
        await run_analysis(analysis.pk, provider=provider)

        assert provider.held_during_the_last_review
        stored = await sync_to_async(events_after)(analysis.pk, 0)
        announced = {e["data"]["qualname"] for e in stored if e["type"] == "unit.finished"}
        units = CodeUnit.objects.filter(analysis=analysis).values_list("qualname", flat=True)
        assert announced == set(await sync_to_async(list)(units))  # none without its event


class LastReviewWhileTheRowIsHeld(StaticProvider):
    """The offline rules; during the last review another transaction holds the analysis's row,
    so the flusher is in the middle of writing a batch when the reviews end."""

    def __init__(self, *, analysis_id: int, last_qualname: str) -> None:
        self.analysis_id = analysis_id
        self.last_qualname = last_qualname
        self.held_during_the_last_review = False

    async def review(self, request, **callbacks):
        if request.unit.qualname == self.last_qualname:
            held, release = threading.Event(), threading.Event()
            holder = threading.Thread(
                target=hold_the_analysis_row, args=(self.analysis_id, held, release)
            )
            holder.start()
            self.held_during_the_last_review = held.wait(timeout=5)
            await asyncio.sleep(3 * FLUSH_SECONDS)  # a flush starts and waits for the row
            threading.Timer(0.5, release.set).start()  # after the reviews have ended
        return await super().review(request, **callbacks)


def hold_the_analysis_row(analysis_id: int, held: threading.Event, release: threading.Event):
    try:
        with transaction.atomic():
            Analysis.objects.select_for_update().get(pk=analysis_id)
            held.set()
            release.wait(timeout=10)
    finally:
        connections.close_all()


class TestRerunsAndResumes:
    async def test_a_finished_analysis_is_not_run_again(self, tmp_path):
        analysis = await create(source=str(write_tree(tmp_path, {"good.py": GOOD})))
        await run_analysis(analysis.pk)
        cards = await sync_to_async(Card.objects.count)()
        assert await run_analysis(analysis.pk) == AnalysisStatus.COMPLETED
        assert await sync_to_async(Card.objects.count)() == cards
        assert (await reload(analysis)).runs == 1

    async def test_a_live_lease_keeps_other_workers_out(self, tmp_path):
        analysis = await create(source=str(write_tree(tmp_path, {"good.py": GOOD})))
        await sync_to_async(store.claim_lease)(
            analysis.pk, worker_id="someone-else", now=time.time(), lease_seconds=60
        )
        assert await run_analysis(analysis.pk, worker_id="me") == AnalysisStatus.RUNNING
        assert (await reload(analysis)).lease_owner == "someone-else"

    async def test_a_queued_analysis_cancelled_before_it_starts(self, tmp_path):
        analysis = await create(source=str(write_tree(tmp_path, {"good.py": GOOD})))
        await sync_to_async(analysis_cancel)(analysis_id=analysis.pk, actor="alice")
        analysis = await reload(analysis)
        assert analysis.status == AnalysisStatus.CANCELLED
        assert "alice" in analysis.status_reason
        assert await run_analysis(analysis.pk) == AnalysisStatus.CANCELLED
        assert not await sync_to_async(AnalysisEvent.objects.exists)()


class TestAnalyzeCommand:
    def run_command(self, *args: str) -> subprocess.CompletedProcess:
        environment = subprocess_environment()
        environment.pop("ANTHROPIC_API_KEY", None)
        return run_manage("analyze", *args, env=environment, timeout=120)

    def test_json__one_object_on_stdout(self, tmp_path):
        result = self.run_command(str(write_tree(tmp_path, {"good.py": GOOD})), "--json")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert set(report) == {
            "id",
            "status",
            "functions_total",
            "functions_analyzed",
            "functions_cached",
            "functions_failed",
            "cards",
            "llm_requests",
            "input_tokens",
            "output_tokens",
            "cost_usd",
            "duration_s",
            "diff_base",
            "functions_selected",
            "diff_files",
        }
        assert report["status"] == "completed" and report["functions_total"] == 2
        assert report["llm_requests"] == 0 and report["cost_usd"] == 0

    @pytest.mark.parametrize(
        ("args", "reason"),
        [
            (["/no/such/dir"], "does not exist"),
            (["file:///etc"], "not allowed"),
            (["{tmp}", "--concurrency", "0"], "concurrency must be between 1 and"),
            (["{tmp}", "--provider", "anthropic"], "needs ANTHROPIC_API_KEY"),
        ],
    )
    def test_bad_input__exit_2_with_a_one_line_reason(self, tmp_path, args, reason):
        result = self.run_command(*(arg.format(tmp=tmp_path) for arg in args))
        assert result.returncode == 2
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and reason in lines[0], result.stderr
        assert result.stdout == ""
