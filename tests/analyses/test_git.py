"""Real shallow clones from git's own smart-HTTP backend served over HTTPS on loopback (no
internet, no mocks of git): hardening, timeouts, size caps, workspaces removed on every path."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from analyses.destinations import HostPolicy, check_destination, parse_trusted_networks
from analyses.git import ClonedRepository, clone_repository, removed_on_exit
from analyses.sources import SourceError
from tests.gitserver import commit_all, git, new_work_tree, publish, serving
from tests.processes import wait_until

TOKEN = "ghp_" + "S3cr3tT0k3n" * 3
# The test servers listen on loopback, which clones refuse unless it is trusted.
LOOPBACK_TRUSTED = HostPolicy(trusted_networks=parse_trusted_networks(["127.0.0.1/32"]))


@contextlib.asynccontextmanager
async def cloned(url: str, **options: object) -> AsyncIterator[ClonedRepository]:
    """A clone, removed when the block exits."""
    async with removed_on_exit(await clone_repository(url, **options)) as repository:
        yield repository


# --------------------------------------------------------------------------------------------
# A git smart-HTTP server over HTTPS on loopback
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GitServer:
    base_url: str
    ca_file: Path
    first_sha: str
    main_sha: str
    feature_sha: str

    def url(self, repository: str, *, stall: bool = False) -> str:
        return f"{self.base_url}{'/stall' if stall else ''}/{repository}"


@pytest.fixture(scope="module")
def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
    root = tmp_path_factory.mktemp("git-server")
    served = root / "served"
    served.mkdir()

    project = new_work_tree(root / "project")
    (project / "app.py").write_text("def first():\n    return 1\n")
    first_sha = commit_all(project, "first")
    (project / "app.py").write_text("def second():\n    return 2\n")
    (project / "escape").symlink_to("/etc")
    main_sha = commit_all(project, "second")
    git("switch", "--quiet", "-c", "feature", cwd=project)
    (project / "feature.py").write_text("FEATURE = True\n")
    feature_sha = commit_all(project, "feature")
    git("switch", "--quiet", "main", cwd=project)
    git("tag", "-a", "v1.0", "-m", "first release", first_sha, cwd=project)
    publish(project, served / "project.git")

    big = new_work_tree(root / "big")
    (big / "random.bin").write_bytes(os.urandom(1024 * 1024))
    commit_all(big, "one incompressible mebibyte")
    publish(big, served / "big.git")

    bomb = new_work_tree(root / "bomb")
    (bomb / "zeros.bin").write_bytes(bytes(5 * 1024 * 1024))
    commit_all(bomb, "five mebibytes that compress to almost nothing")
    publish(bomb, served / "bomb.git")

    with serving(served, certificate_dir=root) as (base_url, ca_file):
        yield GitServer(
            base_url=base_url,
            ca_file=ca_file,
            first_sha=first_sha,
            main_sha=main_sha,
            feature_sha=feature_sha,
        )


@pytest.fixture
def silent_server_url() -> Iterator[str]:
    """A port whose connections the kernel accepts and nobody ever answers."""
    with socket.create_server(("127.0.0.1", 0), backlog=8) as listener:
        yield f"https://127.0.0.1:{listener.getsockname()[1]}/project.git"


@pytest.fixture
def workspace_root(tmp_path: Path) -> Path:
    return tmp_path / "workspaces"


@pytest.fixture
def clone_options(git_server: GitServer, workspace_root: Path) -> dict[str, object]:
    return {
        "workspace_root": workspace_root,
        "extra_git_config": {"http.sslCAInfo": str(git_server.ca_file)},
        "host_policy": LOOPBACK_TRUSTED,
    }


def _processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (zombies have an empty one)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _leftovers(workspace_root: Path) -> list[Path]:
    return list(workspace_root.iterdir()) if workspace_root.exists() else []


class TestCloneRefusesHostileUrls:
    @pytest.mark.parametrize(
        "url", ["ext::sh -c touch% {marker}", "file://{marker_dir}", "fd::17", "--upload-pack=x"]
    )
    async def test_clone__refused_before_git_runs(
        self, url: str, tmp_path: Path, workspace_root: Path
    ) -> None:
        marker, git_ran = tmp_path / "pwned", tmp_path / "git-ran"
        fake_git = tmp_path / "fake-git"
        fake_git.write_text(f'#!/bin/sh\ntouch {git_ran}\nexec git "$@"\n')
        fake_git.chmod(0o755)
        with pytest.raises(SourceError):
            await clone_repository(
                url.format(marker=marker, marker_dir=tmp_path),
                workspace_root=workspace_root,
                git_binary=str(fake_git),
            )
        assert not git_ran.exists()
        assert not marker.exists()
        assert _leftovers(workspace_root) == []


# --------------------------------------------------------------------------------------------
# Real clones over HTTPS on loopback
# --------------------------------------------------------------------------------------------


class TestCloneRepository:
    async def test_clone__default_branch__records_head_sha(
        self, git_server: GitServer, clone_options: dict, workspace_root: Path
    ) -> None:
        url = git_server.url("project.git")
        repository = await clone_repository(url, **clone_options)
        try:
            assert repository.commit_sha == git_server.main_sha
            assert repository.url == url
            assert repository.ref is None
            assert repository.path.is_relative_to(workspace_root)
            assert "def second" in (repository.path / "app.py").read_text()
            assert not (repository.path / "feature.py").exists()
        finally:
            shutil.rmtree(repository.path)

    @pytest.mark.parametrize(
        ("ref", "expected"),
        [("feature", "feature_sha"), ("v1.0", "first_sha"), ("first_sha", "first_sha")],
    )
    async def test_clone__ref__checks_out_that_commit(
        self, git_server: GitServer, clone_options: dict, ref: str, expected: str
    ) -> None:
        ref = getattr(git_server, ref, ref)
        async with cloned(git_server.url("project.git"), ref=ref, **clone_options) as repository:
            assert repository.commit_sha == getattr(git_server, expected)
            assert repository.ref == ref

    async def test_clone__symlink_in_repository__checked_out_as_plain_file(
        self, git_server: GitServer, clone_options: dict
    ) -> None:
        async with cloned(git_server.url("project.git"), **clone_options) as repo:
            escape = repo.path / "escape"
            assert not escape.is_symlink()
            assert escape.read_text() == "/etc"

    @pytest.mark.parametrize("ref", ["no-such-branch", "0123456789" * 4])
    async def test_clone__missing_ref__bad_ref(
        self, git_server: GitServer, clone_options: dict, workspace_root: Path, ref: str
    ) -> None:
        with pytest.raises(SourceError) as refused:
            await clone_repository(git_server.url("project.git"), ref=ref, **clone_options)
        assert refused.value.code == "bad_ref"
        assert ref in refused.value.message
        assert _leftovers(workspace_root) == []

    async def test_clone__missing_repository__clone_failed_with_gits_reason(
        self, git_server: GitServer, clone_options: dict, workspace_root: Path
    ) -> None:
        with pytest.raises(SourceError) as refused:
            await clone_repository(git_server.url("nope.git"), **clone_options)
        assert refused.value.code == "clone_failed"
        assert "not found" in refused.value.message
        assert _leftovers(workspace_root) == []

    async def test_clone__untrusted_certificate__refused_despite_inherited_git_env(
        self, git_server: GitServer, workspace_root: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("GIT_SSL_NO_VERIFY", "1")
        monkeypatch.setenv("GIT_CONFIG_PARAMETERS", "'http.sslVerify'='false'")
        with pytest.raises(SourceError) as refused:
            await clone_repository(
                git_server.url("project.git"),
                workspace_root=workspace_root,
                host_policy=LOOPBACK_TRUSTED,
            )
        assert refused.value.code == "clone_failed"
        assert "certificate" in refused.value.message

    @pytest.mark.parametrize(
        "key", ["protocol.file.allow", "http.sslVerify", "core.hooksPath", "bad=key", "nodot"]
    )
    async def test_clone__extra_config_cannot_undo_hardening(
        self, key: str, workspace_root: Path
    ) -> None:
        with pytest.raises(ValueError, match="git"):
            await clone_repository(
                "https://example.com/r.git",
                workspace_root=workspace_root,
                extra_git_config={key: "x"},
            )
        assert _leftovers(workspace_root) == []

    async def test_clone__silent_server__times_out_and_killsgit(
        self, silent_server_url: str, workspace_root: Path
    ) -> None:
        started = time.monotonic()
        with pytest.raises(SourceError) as refused:
            await clone_repository(
                silent_server_url,
                workspace_root=workspace_root,
                timeout_s=1.5,
                host_policy=LOOPBACK_TRUSTED,
            )
        assert refused.value.code == "clone_timeout"
        assert "timed out after 1.5 s" in refused.value.message
        assert time.monotonic() - started < 10
        wait_until(lambda: not _processes_mentioning(silent_server_url), timeout=2, every=0.02)
        assert _leftovers(workspace_root) == []

    async def test_clone__cancelled__kills_git_and_removes_workspace(
        self, silent_server_url: str, workspace_root: Path
    ) -> None:
        clone = asyncio.create_task(
            clone_repository(
                silent_server_url,
                workspace_root=workspace_root,
                timeout_s=30,
                host_policy=LOOPBACK_TRUSTED,
            )
        )
        for _ in range(250):
            if _processes_mentioning(silent_server_url):
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("git never started")
        clone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await clone
        wait_until(lambda: not _processes_mentioning(silent_server_url), timeout=2, every=0.02)
        assert _leftovers(workspace_root) == []

    async def test_clone__repository_over_cap__clone_too_large(
        self, git_server: GitServer, clone_options: dict, workspace_root: Path
    ) -> None:
        with pytest.raises(SourceError) as refused:
            await clone_repository(git_server.url("big.git"), max_bytes=200 * 1024, **clone_options)
        assert refused.value.code == "clone_too_large"
        assert "over the 200 KiB limit" in refused.value.message
        assert _leftovers(workspace_root) == []

    async def test_clone__checkout_over_cap__refused_before_it_is_written(
        self, git_server: GitServer, clone_options: dict, workspace_root: Path
    ) -> None:
        # The pack is a few KiB; only the sized checkout (5 MiB of zeros) exceeds the cap.
        with pytest.raises(SourceError) as refused:
            await clone_repository(git_server.url("bomb.git"), max_bytes=1024**2, **clone_options)
        assert refused.value.code == "clone_too_large"
        assert refused.value.message.startswith("Checking out the repository would take 5 MiB")
        assert _leftovers(workspace_root) == []

    async def test_clone__cap_exceeded_mid_download__killsgit(
        self, git_server: GitServer, clone_options: dict, workspace_root: Path
    ) -> None:
        # The server sends half the pack and then hangs: only the size watch can end this
        # before the timeout.
        url = git_server.url("big.git", stall=True)
        with pytest.raises(SourceError) as refused:
            await clone_repository(url, max_bytes=200 * 1024, timeout_s=20, **clone_options)
        assert refused.value.code == "clone_too_large"
        wait_until(lambda: not _processes_mentioning(url), timeout=2, every=0.02)
        assert _leftovers(workspace_root) == []


class TestRemovedOnExit:
    async def test_context__removes_workspace_on_exit(
        self, git_server: GitServer, clone_options: dict, workspace_root: Path
    ) -> None:
        repository = await clone_repository(git_server.url("project.git"), **clone_options)
        async with removed_on_exit(repository) as repo:
            assert (repo.path / "app.py").is_file()
        assert not repo.path.exists()
        assert _leftovers(workspace_root) == []

    async def test_context__removes_workspace_when_body_fails(
        self, git_server: GitServer, clone_options: dict, workspace_root: Path
    ) -> None:
        repository = await clone_repository(git_server.url("project.git"), **clone_options)
        with pytest.raises(RuntimeError, match="analysis blew up"):
            async with removed_on_exit(repository):
                raise RuntimeError("analysis blew up")
        assert _leftovers(workspace_root) == []


# --------------------------------------------------------------------------------------------
# Where a clone may connect: the host policy, checked again at clone time, and pinning
# --------------------------------------------------------------------------------------------


def resolving(*answers: str) -> tuple[list[str], object]:
    """A resolver answering each lookup with the next of ``answers`` (the last one repeats), and
    the names it was asked for."""
    asked: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return [answers[min(len(asked), len(answers)) - 1]]

    return asked, resolver


class TestCloneDestination:
    async def test_clone__loopback_without_trust__refused_before_git_runs(
        self, git_server: GitServer, workspace_root: Path
    ) -> None:
        with pytest.raises(SourceError) as refused:
            await clone_repository(git_server.url("project.git"), workspace_root=workspace_root)
        assert refused.value.code == "private_address"
        assert _leftovers(workspace_root) == []

    async def test_clone__name_rebound_to_private_address__refused_at_clone_time(
        self, git_server: GitServer, clone_options: dict, workspace_root: Path
    ) -> None:
        # The submission saw a public address; by clone time the name leads to the metadata
        # service. The test server's loopback is trusted, so only the rebinding is refused.
        asked, resolver = resolving("93.184.216.34", "169.254.169.254")
        url = git_server.url("project.git").replace("127.0.0.1", "localhost")
        submitted = check_destination(
            url, policy=LOOPBACK_TRUSTED, resolver=resolver, at_clone=False
        )
        assert submitted.addresses == ("93.184.216.34",)
        with pytest.raises(SourceError) as refused:
            await clone_repository(url, resolver=resolver, **clone_options)
        assert refused.value.code == "private_address"
        assert asked == ["localhost", "localhost"]
        assert _leftovers(workspace_root) == []

    async def test_clone__connection_pinned_to_the_checked_address(
        self, git_server: GitServer, clone_options: dict, workspace_root: Path
    ) -> None:
        # The server listens on 127.0.0.1 only. git is told "localhost" is 127.0.0.2 (also
        # loopback, nobody listening): if it resolved the name itself it would connect.
        url = git_server.url("project.git").replace("127.0.0.1", "localhost")
        loopback = HostPolicy(trusted_networks=parse_trusted_networks(["127.0.0.0/8"]))
        options = {**clone_options, "host_policy": loopback}
        _, elsewhere = resolving("127.0.0.2")
        with pytest.raises(SourceError) as refused:
            await clone_repository(url, resolver=elsewhere, **options)
        assert refused.value.code == "clone_failed"
        assert "Failed to connect to localhost" in refused.value.message
        assert _leftovers(workspace_root) == []

        _, right = resolving("127.0.0.1")
        async with cloned(url, resolver=right, **options) as repository:
            assert repository.commit_sha == git_server.main_sha

    async def test_clone__ssh_connects_to_the_checked_address_under_the_given_name(
        self, tmp_path: Path, workspace_root: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # An ssh on PATH that records how git runs it (no ssh server needed).
        recorded = tmp_path / "ssh-arguments"
        fake_ssh = tmp_path / "bin" / "ssh"
        fake_ssh.parent.mkdir()
        fake_ssh.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {recorded}\nexit 255\n')
        fake_ssh.chmod(0o755)
        monkeypatch.setenv("PATH", f"{fake_ssh.parent}:{os.environ['PATH']}")
        _, public = resolving("93.184.216.34")
        with pytest.raises(SourceError) as refused:
            await clone_repository(
                "ssh://git@git.example.test:2222/team/project.git",
                workspace_root=workspace_root,
                resolver=public,
            )
        assert refused.value.code == "clone_failed"
        arguments = recorded.read_text().splitlines()
        assert "HostName=93.184.216.34" in arguments
        assert "HostKeyAlias=git.example.test" in arguments
        assert "git@git.example.test" in arguments  # the name, for ~/.ssh/config and the key
        assert _leftovers(workspace_root) == []
