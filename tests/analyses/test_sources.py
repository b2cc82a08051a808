"""Sources as the user writes them: local directories under allowed roots, git URL and ref
validation, redaction of what git prints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from analyses.sources import (
    SourceError,
    classify_source,
    parse_source_spec,
    resolve_local_directory,
    validate_git_url,
    validate_ref,
)
from reliability.redaction import redact_text, redact_url

TOKEN = "ghp_" + "S3cr3tT0k3n" * 3

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
