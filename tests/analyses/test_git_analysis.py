"""Analyses of git repositories, cloned over HTTPS on loopback through the ``git`` breaker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async

from analyses.git import cloned_through_guard
from analyses.models import Analysis, AnalysisStatus
from analyses.orchestrator import run_analysis
from analyses.review_responder import review_responder
from analyses.services import analysis_create
from analyses.sources import SourceError
from reliability.fake_anthropic import FakeAnthropic, FakeConfig
from reliability.models import CircuitBreaker
from tests.anthropic_support import as_anthropic, generous_anthropic_limits, provider_for
from tests.gitserver import commit_all, new_work_tree, publish, serving
from tests.processes import run_manage, subprocess_environment

pytestmark = pytest.mark.django_db(transaction=True)

LIBRARY = "".join(
    f"\n\ndef stable_{index}(value):\n    return value * {index}\n" for index in range(6)
)


@dataclass(frozen=True)
class Repository:
    url: str
    ca_file: Path
    first_sha: str
    second_sha: str


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repository]:
    root = tmp_path_factory.mktemp("git-analysis")
    served = root / "served"
    served.mkdir()
    work = new_work_tree(root / "work")
    (work / "lib.py").write_text(LIBRARY)
    (work / "app.py").write_text("def handler(request):\n    return request\n")
    first = commit_all(work, "first")
    (work / "app.py").write_text(
        "def handler(request):\n    return request.upper()\n\n\ndef added(x):\n    return x\n"
    )
    second = commit_all(work, "second: app.py changes, lib.py does not")
    publish(work, served / "project.git")
    with serving(served, certificate_dir=root) as (base_url, ca_file):
        yield Repository(
            url=f"{base_url}/project.git", ca_file=ca_file, first_sha=first, second_sha=second
        )


@pytest.fixture
def git_settings(settings, repository, tmp_path):
    settings.EIDOLON_GIT_EXTRA_CONFIG = {"http.sslCAInfo": str(repository.ca_file)}
    settings.EIDOLON_GIT_TRUSTED_NETWORKS = ["127.0.0.1/32"]  # the test server's loopback
    settings.EIDOLON_WORKSPACE_ROOT = tmp_path / "workspaces"
    return settings


async def analyse(source: str, *, ref: str | None = None, provider=None) -> Analysis:
    analysis = await sync_to_async(analysis_create)(source=source, ref=ref, provider="static")
    if provider is not None:
        await as_anthropic(analysis)
    await run_analysis(analysis.pk, provider=provider)
    return await sync_to_async(Analysis.objects.get)(pk=analysis.pk)


class TestGitSources:
    async def test_a_clone_is_analysed__its_commit_recorded_and_its_workspace_removed(
        self, repository, git_settings
    ):
        analysis = await analyse(repository.url)
        assert analysis.status == AnalysisStatus.COMPLETED, analysis.status_reason
        assert analysis.commit_sha == repository.second_sha
        assert analysis.functions_total == 8
        assert list(git_settings.EIDOLON_WORKSPACE_ROOT.iterdir()) == []
        breaker = await sync_to_async(CircuitBreaker.objects.get)(name="git")
        assert breaker.total_successes == 1

    async def test_a_ref_selects_the_commit(self, repository, git_settings):
        analysis = await analyse(repository.url, ref=repository.first_sha)
        assert analysis.commit_sha == repository.first_sha
        assert analysis.functions_total == 7

    async def test_a_missing_ref_fails_the_analysis_with_a_reason(self, repository, git_settings):
        analysis = await analyse(repository.url, ref="no-such-branch")
        assert analysis.status == AnalysisStatus.FAILED
        assert "no-such-branch" in analysis.status_reason

    async def test_incremental__the_base_commit_is_recorded_and_unchanged_functions_are_hits(
        self, repository, git_settings
    ):
        await sync_to_async(generous_anthropic_limits)()
        with FakeAnthropic(config=FakeConfig(seed=3), responder=review_responder).running() as fake:
            first = await analyse(
                repository.url, ref=repository.first_sha, provider=provider_for(fake)
            )
            requests_after_first = len(fake.requests)
            second = await analyse(repository.url, provider=provider_for(fake))
            requests_for_second = len(fake.requests) - requests_after_first

        assert first.functions_analyzed == 7
        assert second.base_commit == repository.first_sha
        assert second.commit_sha == repository.second_sha
        assert second.functions_cached == 6  # lib.py did not change
        assert second.functions_analyzed == 2  # handler changed, added is new
        assert requests_for_second == 2


class TestTerminalOptOut:
    """``manage.py analyze`` clones from a private address only when its user says so."""

    def run_analyze(self, repository: Repository, tmp_path: Path, *options: str):
        environment = subprocess_environment(
            EIDOLON_GIT_EXTRA_CONFIG=json.dumps({"http.sslCAInfo": str(repository.ca_file)}),
            EIDOLON_WORKSPACE_ROOT=str(tmp_path / "workspaces"),
            EIDOLON_GIT_TRUSTED_NETWORKS="",
        )
        environment.pop("ANTHROPIC_API_KEY", None)
        return run_manage(
            "analyze",
            repository.url,
            "--provider",
            "static",
            "--json",
            *options,
            env=environment,
            timeout=120,
        )

    def test_loopback_url__refused_without_the_option(self, repository, tmp_path):
        result = self.run_analyze(repository, tmp_path)
        assert result.returncode == 2
        assert "leads to a private, loopback, link-local or reserved address" in result.stderr
        assert not Analysis.objects.exists()

    def test_loopback_url__analysed_with_allow_private_hosts(self, repository, tmp_path):
        result = self.run_analyze(repository, tmp_path, "--allow-private-hosts")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["status"] == AnalysisStatus.COMPLETED
        assert report["functions_total"] == 8
        assert Analysis.objects.get().commit_sha == repository.second_sha
        assert list((tmp_path / "workspaces").iterdir()) == []


class TestWorkspaceRemoval:
    async def test_body_fails__the_guarded_clone_is_removed(self, repository, git_settings):
        with pytest.raises(RuntimeError, match="parsing blew up"):
            async with cloned_through_guard(repository.url, ref=None, deadline=None) as clone:
                assert (clone.path / "app.py").is_file()
                raise RuntimeError("parsing blew up")
        assert list(git_settings.EIDOLON_WORKSPACE_ROOT.iterdir()) == []

    async def test_private_address__refused_at_clone_time_without_a_workspace(
        self, repository, git_settings
    ):
        git_settings.EIDOLON_GIT_TRUSTED_NETWORKS = []
        with pytest.raises(SourceError) as refused:
            async with cloned_through_guard(repository.url, ref=None, deadline=None):
                pytest.fail("cloned from a private address")
        assert refused.value.code == "private_address"
        assert not git_settings.EIDOLON_WORKSPACE_ROOT.exists() or not any(
            git_settings.EIDOLON_WORKSPACE_ROOT.iterdir()
        )
        breaker = await sync_to_async(CircuitBreaker.objects.get)(name="git")
        assert breaker.total_failures == 0  # the URL's fault, not the remote's
