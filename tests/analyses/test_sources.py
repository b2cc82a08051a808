"""Sources: local directories under allowed roots, URL and ref validation, and real shallow clones
from git's own smart-HTTP backend served over HTTPS on loopback (no internet, no mocks of git)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from analyses.sources import (
    SourceError,
    classify_source,
    clone_repository,
    cloned_repository,
    parse_source_spec,
    resolve_local_directory,
    validate_git_url,
    validate_ref,
)
from reliability.redaction import redact_text, redact_url
from tests.gitserver import commit_all, git, new_work_tree, publish, serving
from tests.processes import wait_until

TOKEN = "ghp_" + "S3cr3tT0k3n" * 3

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


# --------------------------------------------------------------------------------------------
# Specs
# --------------------------------------------------------------------------------------------


class TestClassifySource:
    @pytest.mark.parametrize(
        "spec",
        [
            "https://github.com/owner/repo.git",
            "ssh://git@github.com/owner/repo.git",
            "git@github.com:owner/repo.git",
            "github-work:owner/repo.git",
            "file:///etc",
            "ext::sh -c touch% /tmp/pwned",
            "fd::17",
            "git://example.com/repo.git",
        ],
    )
    def test_classify__url_forms_aregit(self, spec: str) -> None:
        assert classify_source(spec) == "git"

    @pytest.mark.parametrize(
        "spec",
        ["/tmp/repo", "./repo", "repo", "../repo", "C:\\repo", "C:/repo", "./proj:v2", "a/b:c"],
    )
    def test_classify__path_forms_are_local(self, spec: str) -> None:
        assert classify_source(spec) == "local"


class TestParseSourceSpec:
    def test_parse__local_path(self) -> None:
        assert parse_source_spec("./project").kind == "local"

    def test_parse__git_url_with_ref(self) -> None:
        spec = parse_source_spec("https://example.com/r.git", ref="main")
        assert (spec.kind, spec.location, spec.ref) == ("git", "https://example.com/r.git", "main")

    def test_parse__file_url_is_refused_as_a_url_not_looked_up_as_a_path(self) -> None:
        with pytest.raises(SourceError) as refused:
            parse_source_spec("file:///etc")
        assert refused.value.code == "unsupported_url"

    def test_parse__option_like_spec__refused(self) -> None:
        with pytest.raises(SourceError) as refused:
            parse_source_spec("--upload-pack=touch /tmp/x")
        assert refused.value.code == "option_injection"

    def test_parse__ref_with_local_path__refused(self) -> None:
        with pytest.raises(SourceError) as refused:
            parse_source_spec("./project", ref="main")
        assert refused.value.code == "bad_ref"


# --------------------------------------------------------------------------------------------
# Local directories
# --------------------------------------------------------------------------------------------


@pytest.fixture
def allowed_root(tmp_path: Path) -> Path:
    root = tmp_path / "allowed"
    (root / "project").mkdir(parents=True)
    return root


@pytest.fixture
def outside_dir(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    return outside


class TestResolveLocalDirectory:
    def test_resolve__inside_root__returns_resolved_path(self, allowed_root: Path) -> None:
        given = allowed_root / "project" / ".." / "project"
        resolved = resolve_local_directory(given, allowed_roots=[allowed_root])
        assert resolved == (allowed_root / "project").resolve()

    def test_resolve__root_reached_through_symlink__accepted(
        self, allowed_root: Path, tmp_path: Path
    ) -> None:
        alias = tmp_path / "alias"
        alias.symlink_to(allowed_root)
        assert resolve_local_directory(alias / "project", allowed_roots=[alias]).is_dir()

    def test_resolve__outside_root__refused(self, allowed_root: Path, outside_dir: Path) -> None:
        with pytest.raises(SourceError) as refused:
            resolve_local_directory(outside_dir, allowed_roots=[allowed_root])
        assert refused.value.code == "outside_allowed_roots"
        assert str(outside_dir) in refused.value.message

    def test_resolve__dotdot_traversal__refused(
        self, allowed_root: Path, outside_dir: Path
    ) -> None:
        given = f"{allowed_root}/project/../../{outside_dir.name}"
        with pytest.raises(SourceError) as refused:
            resolve_local_directory(given, allowed_roots=[allowed_root])
        assert refused.value.code == "outside_allowed_roots"
        assert given in refused.value.message

    def test_resolve__symlink_leaving_root__refused_without_revealing_target(
        self, allowed_root: Path, outside_dir: Path
    ) -> None:
        link = allowed_root / "link"
        link.symlink_to(outside_dir)
        with pytest.raises(SourceError) as refused:
            resolve_local_directory(link, allowed_roots=[allowed_root])
        assert refused.value.code == "outside_allowed_roots"
        assert "symbolic link" in refused.value.message
        assert str(outside_dir) not in refused.value.message

    def test_resolve__symlink_staying_inside_root__accepted(self, allowed_root: Path) -> None:
        link = allowed_root / "link"
        link.symlink_to(allowed_root / "project")
        resolved = resolve_local_directory(link, allowed_roots=[allowed_root])
        assert resolved == (allowed_root / "project").resolve()

    def test_resolve__missing_inside_root__not_found(self, allowed_root: Path) -> None:
        given = allowed_root / "missing"
        with pytest.raises(SourceError) as refused:
            resolve_local_directory(given, allowed_roots=[allowed_root])
        assert refused.value.code == "not_found"
        assert str(given) in refused.value.message

    def test_resolve__missing_outside_root__does_not_reveal_existence(
        self, allowed_root: Path, outside_dir: Path
    ) -> None:
        for given in (outside_dir, outside_dir / "missing"):
            with pytest.raises(SourceError) as refused:
                resolve_local_directory(given, allowed_roots=[allowed_root])
            assert refused.value.code == "outside_allowed_roots"

    def test_resolve__file__not_a_directory(self, allowed_root: Path) -> None:
        file = allowed_root / "project" / "app.py"
        file.write_text("x = 1\n")
        with pytest.raises(SourceError) as refused:
            resolve_local_directory(file, allowed_roots=[allowed_root])
        assert refused.value.code == "not_a_directory"
        assert str(file) in refused.value.message

    def test_resolve__symlink_loop__not_found(self, allowed_root: Path) -> None:
        loop = allowed_root / "loop"
        loop.symlink_to(loop)
        with pytest.raises(SourceError) as refused:
            resolve_local_directory(loop, allowed_roots=[allowed_root])
        assert refused.value.code == "not_found"

    @pytest.mark.skipif(os.geteuid() == 0, reason="root can read any directory")
    def test_resolve__unreadable__not_readable(self, allowed_root: Path) -> None:
        locked = allowed_root / "locked"
        locked.mkdir(mode=0o000)
        try:
            with pytest.raises(SourceError) as refused:
                resolve_local_directory(locked, allowed_roots=[allowed_root])
            assert refused.value.code == "not_readable"
        finally:
            locked.chmod(0o700)

    def test_resolve__no_allowed_roots__accepts_any_readable_directory(
        self, outside_dir: Path
    ) -> None:
        assert resolve_local_directory(outside_dir, allowed_roots=None) == outside_dir.resolve()

    def test_resolve__empty_allowed_roots__refuses_everything(self, allowed_root: Path) -> None:
        with pytest.raises(SourceError) as refused:
            resolve_local_directory(allowed_root, allowed_roots=[])
        assert refused.value.code == "outside_allowed_roots"

    @pytest.mark.parametrize("given", ["", "bad\x00path"])
    def test_resolve__empty_or_nul__invalid_path(self, given: str) -> None:
        with pytest.raises(SourceError) as refused:
            resolve_local_directory(given, allowed_roots=None)
        assert refused.value.code == "invalid_path"


# --------------------------------------------------------------------------------------------
# URLs and refs
# --------------------------------------------------------------------------------------------


class TestValidateGitUrl:
    @pytest.mark.parametrize(
        "url",
        [
            "https://github.com/owner/repo.git",
            "https://gitlab.example.com:8443/group/sub/repo",
            "ssh://git@github.com/owner/repo.git",
            "ssh://github.com:2222/owner/repo.git",
            "git@github.com:owner/repo.git",
            "github-work:owner/repo.git",
        ],
    )
    def test_validate__accepted_forms(self, url: str) -> None:
        validate_git_url(url)

    @pytest.mark.parametrize(
        ("url", "code"),
        [
            ("file:///etc", "unsupported_url"),
            ("ext::sh -c touch% /tmp/pwned", "unsupported_url"),
            ("fd::17", "unsupported_url"),
            ("git://example.com/repo.git", "unsupported_url"),
            ("http://example.com/repo.git", "unsupported_url"),
            ("ftp://example.com/repo.git", "unsupported_url"),
            ("-uhelp", "option_injection"),
            ("--upload-pack=touch /tmp/x", "option_injection"),
            ("ssh://-oProxyCommand=touch%20x/repo", "option_injection"),
            ("ssh://-oProxyCommand=x@host/repo", "option_injection"),
            ("git@-oProxyCommand=x:repo", "option_injection"),
            ("/tmp/repo", "unsupported_url"),
            ("./repo", "unsupported_url"),
            ("C:\\repo", "unsupported_url"),
            ("https://example.com/repo.git\n--upload-pack=x", "unsupported_url"),
            ("https://example.com/my repo.git", "unsupported_url"),
            ("https://example.com/repo\u202e.git", "unsupported_url"),
            ("https:///repo.git", "unsupported_url"),
            ("https://example.com:99999/repo.git", "unsupported_url"),
            ("git@host:", "unsupported_url"),
            ("", "unsupported_url"),
        ],
    )
    def test_validate__refused_forms(self, url: str, code: str) -> None:
        with pytest.raises(SourceError) as refused:
            validate_git_url(url)
        assert refused.value.code == code

    @pytest.mark.parametrize(
        "url",
        [
            f"https://user:{TOKEN}@github.com/owner/repo.git",
            f"https://{TOKEN}@github.com/owner/repo.git",
            f"https://:{TOKEN}@github.com/owner/repo.git",
            f"ssh://git:{TOKEN}@github.com/owner/repo.git",
            f"git:{TOKEN}@github.com:owner/repo.git",
        ],
    )
    def test_validate__credentials__refused_and_never_echoed(self, url: str) -> None:
        with pytest.raises(SourceError) as refused:
            validate_git_url(url)
        assert refused.value.code == "credentials_in_url"
        assert TOKEN not in refused.value.message
        assert "credential helper" in refused.value.message

    def test_validate__http_only_when_explicitly_allowed(self) -> None:
        validate_git_url("http://example.com/repo.git", allow_insecure_http=True)
        with pytest.raises(SourceError):
            validate_git_url("git://example.com/repo.git", allow_insecure_http=True)

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


class TestValidateRef:
    @pytest.mark.parametrize("ref", ["main", "feature/login", "v1.0", "release-2024.01", "a" * 40])
    def test_validate_ref__accepted(self, ref: str) -> None:
        assert validate_ref(ref) == ref

    def test_validate_ref__uppercase_sha__lowercased(self) -> None:
        assert validate_ref("ABCDEF0123" * 4) == "abcdef0123" * 4

    @pytest.mark.parametrize(
        "ref",
        ["", "..", "a..b", "a b", "a~1", "a^", "a:b", "a?", "a*", "a[b", "a\\b", "x.lock",
         ".hidden", "dir/.hidden", "a//b", "/a", "a/", "a.", "@", "a@{1}", "a\nb", "a\x7fb"],
    )  # fmt: skip
    def test_validate_ref__malformed__bad_ref(self, ref: str) -> None:
        with pytest.raises(SourceError) as refused:
            validate_ref(ref)
        assert refused.value.code == "bad_ref"

    def test_validate_ref__leading_dash__option_injection(self) -> None:
        with pytest.raises(SourceError) as refused:
            validate_ref("--upload-pack=touch /tmp/x")
        assert refused.value.code == "option_injection"


class TestRedaction:
    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            (f"https://user:{TOKEN}@host/r.git", "https://[REDACTED]@host/r.git"),
            (f"https://{TOKEN}@host/r.git", "https://[REDACTED]@host/r.git"),
            (f"ssh://git:{TOKEN}@host/r.git", "ssh://git:[REDACTED]@host/r.git"),
            ("ssh://git@host/r.git", "ssh://git@host/r.git"),
            ("git@host:owner/r.git", "git@host:owner/r.git"),
            ("https://host/a@b", "https://host/a@b"),
        ],
    )
    def test_redact_url(self, url: str, expected: str) -> None:
        assert redact_url(url) == expected

    def test_redact_secrets__git_stderr(self) -> None:
        stderr = (
            f"fatal: unable to access 'https://x-access-token:{TOKEN}@github.com/o/r.git/'\n"
            f"remote: invalid token {TOKEN}\n"
            "Authorization: Basic dXNlcjpwYXNzd29yZA==\n"
        )
        redacted = redact_text(stderr, url_userinfo=True)
        assert TOKEN not in redacted
        assert "dXNlcjpwYXNzd29yZA" not in redacted
        assert "github.com/o/r.git" in redacted


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
        async with cloned_repository(
            git_server.url("project.git"), ref=ref, **clone_options
        ) as repository:
            assert repository.commit_sha == getattr(git_server, expected)
            assert repository.ref == ref

    async def test_clone__symlink_in_repository__checked_out_as_plain_file(
        self, git_server: GitServer, clone_options: dict
    ) -> None:
        async with cloned_repository(git_server.url("project.git"), **clone_options) as repo:
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
            await clone_repository(git_server.url("project.git"), workspace_root=workspace_root)
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
            await clone_repository(silent_server_url, workspace_root=workspace_root, timeout_s=1.5)
        assert refused.value.code == "clone_timeout"
        assert "timed out after 1.5 s" in refused.value.message
        assert time.monotonic() - started < 10
        wait_until(lambda: not _processes_mentioning(silent_server_url), timeout=2, every=0.02)
        assert _leftovers(workspace_root) == []

    async def test_clone__cancelled__kills_git_and_removes_workspace(
        self, silent_server_url: str, workspace_root: Path
    ) -> None:
        clone = asyncio.create_task(
            clone_repository(silent_server_url, workspace_root=workspace_root, timeout_s=30)
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


class TestClonedRepositoryContext:
    async def test_context__removes_workspace_on_exit(
        self, git_server: GitServer, clone_options: dict, workspace_root: Path
    ) -> None:
        async with cloned_repository(git_server.url("project.git"), **clone_options) as repo:
            assert (repo.path / "app.py").is_file()
        assert not repo.path.exists()
        assert _leftovers(workspace_root) == []

    async def test_context__removes_workspace_when_body_fails(
        self, git_server: GitServer, clone_options: dict, workspace_root: Path
    ) -> None:
        with pytest.raises(RuntimeError, match="analysis blew up"):
            async with cloned_repository(git_server.url("project.git"), **clone_options):
                raise RuntimeError("analysis blew up")
        assert _leftovers(workspace_root) == []
