"""Hostile sources (issue 14's table): local paths, git URLs and trees built to hurt the service.

Each gets a clear refusal (a 400 over the web form and the JSON API, with the reason) or a
recorded reason beside the rest of the tree, which is still analysed; nothing is fetched from
where it does not belong, and a refused URL's credentials are never echoed.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import threading
import tracemalloc
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from django.test import Client

from analyses.destinations import HostPolicy, check_destination
from analyses.git import clone_repository
from analyses.models import Analysis, AnalysisStatus, CodeUnit
from analyses.orchestrator import run_analysis
from analyses.parsing import ParseLimits, parse_tree
from analyses.services import analysis_create
from analyses.sources import SourceError
from reliability.models import RateLimitBudget
from tests.analyses.page_support import make_user
from tests.api_support import caller

pytestmark = pytest.mark.django_db(transaction=True)

PRIVATE_ADDRESS_REASON = "leads to a private, loopback, link-local or reserved address"
FUNCTION = "def kept(value):\n    return value\n"


@pytest.fixture
def roots(tmp_path: Path, settings) -> Path:
    """One allowed root holding a small project, and a secret directory beside it."""
    root = tmp_path / "sources"
    (root / "project").mkdir(parents=True)
    (root / "project" / "app.py").write_text(FUNCTION)
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "keys.py").write_text("API_KEY = 'do-not-read'\n")
    settings.EIDOLON_SOURCE_ROOTS = [str(root)]
    settings.EIDOLON_GIT_TRUSTED_NETWORKS = []
    return root


def refused_everywhere(source: str, *, ref: str | None = None) -> tuple[str, str]:
    """Submit ``source`` over the JSON API and the web form; both must refuse it with a 400
    and store nothing. Returns (the API's detail, the page)."""
    api_user = caller("mallory")
    body = {"source": source, "provider": "static", **({"ref": ref} if ref else {})}
    response = async_to_sync(api_user.call)("POST", "/api/analyses", body)
    assert response.status_code == 400, response.content
    detail = response.json()["detail"]
    web = Client()
    web.force_login(make_user("eve"))
    page = web.post("/analyses/new/", {**body, "ref": ref or ""})
    assert page.status_code == 400
    assert not Analysis.objects.exists()
    assert not RateLimitBudget.objects.exists()  # a refused submission costs nothing
    return detail, page.content.decode()


def analysed(directory: Path) -> Analysis:
    """Analyse ``directory`` (inside the roots) with the offline rules, to the end."""
    analysis = analysis_create(source=str(directory), provider="static")
    async_to_sync(run_analysis)(analysis.pk)
    return Analysis.objects.get(pk=analysis.pk)


def errors_by_path(analysis: Analysis) -> dict[str, dict]:
    return {error["path"]: error for error in analysis.file_errors}


def parsed_within(root: Path, *, seconds: float, **limits) -> object:
    """``parse_tree(root)`` on a thread; fails the test instead of hanging it."""
    outcome: list[object] = []
    worker = threading.Thread(
        target=lambda: outcome.append(parse_tree(root, limits=ParseLimits(**limits))),
        daemon=True,
    )
    worker.start()
    worker.join(seconds)
    assert outcome, f"parse_tree did not return within {seconds} s"
    return outcome[0]


# --------------------------------------------------------------------------------------------
# Local paths
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "relative", ["project/../../secret", "../secret", "project/../../../../../../etc"]
)
def test_path_traversal_dotdot_is_refused(roots: Path, relative: str) -> None:
    detail, page = refused_everywhere(f"{roots}/{relative}")
    assert "is outside the directories that may be analysed" in detail
    assert "is outside the directories that may be analysed" in page


@pytest.mark.parametrize("source", ["/etc", "/", "{tmp}/secret", "{tmp}"])
def test_absolute_path_outside_roots_is_refused(roots: Path, source: str) -> None:
    detail, _ = refused_everywhere(source.format(tmp=roots.parent))
    assert "is outside the directories that may be analysed" in detail


def test_symlink_out_of_the_roots_is_refused(roots: Path) -> None:
    # As the source: a link inside the roots to a directory outside them.
    (roots / "door").symlink_to(roots.parent / "secret")
    detail, _ = refused_everywhere(str(roots / "door"))
    assert "leads through a symbolic link outside the directories" in detail

    # Inside the tree: links out are not followed, each recorded; the rest is analysed.
    project = roots / "project"
    (project / "keys.py").symlink_to(roots.parent / "secret" / "keys.py")
    (project / "vault").symlink_to(roots.parent / "secret")
    (project / "passwd.py").symlink_to("/etc/passwd")
    analysis = analysed(project)
    assert analysis.status == AnalysisStatus.COMPLETED_WITH_ERRORS, analysis.status_reason
    errors = errors_by_path(analysis)
    for link in ("keys.py", "vault", "passwd.py"):
        assert errors[link]["code"] == "outside_root"
        assert "symlink leads outside the root; not followed" in errors[link]["message"]
    paths = set(CodeUnit.objects.filter(analysis=analysis).values_list("path", flat=True))
    assert paths == {"app.py"}  # nothing from behind the links


@pytest.mark.parametrize("source", ["/proc/self/root", "/proc/self/cwd", "/proc", "/proc/1/root"])
def test_proc_is_refused(roots: Path, source: str) -> None:
    detail, _ = refused_everywhere(source)
    assert "the directories that may be analysed" in detail


# --------------------------------------------------------------------------------------------
# Git URLs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "ref"),
    [
        ("--upload-pack=touch {marker}", None),
        ("-oProxyCommand=touch {marker}", None),
        ("ssh://-oProxyCommand=touch%20{marker}/repo.git", None),
        ("git@-oProxyCommand=touch {marker}:repo.git", None),
        ("https://git.example.com/team/project.git", "--upload-pack=touch {marker}"),
    ],
)
def test_git_option_injection_is_refused(
    roots: Path, tmp_path: Path, source: str, ref: str | None
) -> None:
    marker = tmp_path / "pwned"
    detail, _ = refused_everywhere(
        source.format(marker=marker), ref=ref and ref.format(marker=marker)
    )
    assert "option" in detail or "cannot start with '-'" in detail or "not a valid" in detail
    assert not marker.exists()


@pytest.mark.parametrize(
    "source", ["ext::sh -c touch% {marker}", "ext::sh", "fd::17", "EXT::sh -c id"]
)
def test_git_ext_transport_is_refused(roots: Path, tmp_path: Path, source: str) -> None:
    marker = tmp_path / "pwned"
    detail, _ = refused_everywhere(source.format(marker=marker))
    assert "transport is not allowed" in detail
    assert not marker.exists()


@pytest.mark.parametrize(
    "source", ["file:///etc", "file:///etc/passwd", "FILE:///etc", "file://localhost/etc"]
)
def test_git_file_url_is_refused(roots: Path, source: str) -> None:
    detail, _ = refused_everywhere(source)
    assert "URLs are not allowed; use https:// or ssh://" in detail


@pytest.mark.parametrize(
    "source",
    [
        "https://localhost/team/project.git",
        "https://127.0.0.1/team/project.git",
        "https://2130706433/team/project.git",  # 127.0.0.1 as one number
        "https://0x7f.1/team/project.git",  # 127.0.0.1, hexadecimal and shortened
        "https://[::1]/team/project.git",
        "https://[::ffff:127.0.0.1]/team/project.git",  # IPv4-mapped IPv6
        "https://169.254.169.254/latest/meta-data/",  # the cloud metadata service
        "https://0.0.0.0/team/project.git",
        "https://10.1.2.3/team/project.git",
        "https://224.0.0.1/team/project.git",
        "ssh://git@127.0.0.1:2222/team/project.git",
        "git@localhost:team/project.git",
    ],
)
def test_git_url_resolving_to_private_address_is_refused(roots: Path, source: str) -> None:
    detail, page = refused_everywhere(source)
    assert PRIVATE_ADDRESS_REASON in detail
    assert PRIVATE_ADDRESS_REASON in page


def test_git_url_resolving_to_private_address_is_refused__credentials_never_echoed(
    roots: Path,
) -> None:
    detail, page = refused_everywhere("https://admin:hunter2@169.254.169.254/latest/meta-data/")
    assert "contains credentials" in detail
    assert "hunter2" not in detail and "hunter2" not in page


def test_git_url_resolving_to_private_address_is_refused__again_at_clone_time(
    tmp_path: Path,
) -> None:
    # DNS rebinding: public when the submission is checked, the metadata service when cloning.
    answers = iter(["93.184.216.34", "169.254.169.254"])
    url = "https://rebinding.example.test/team/project.git"
    fake_git = tmp_path / "git-that-records"
    fake_git.write_text(f'#!/bin/sh\ntouch {tmp_path / "git-ran"}\nexec git "$@"\n')
    fake_git.chmod(0o755)

    def resolver(host: str, port: int) -> list[str]:
        return [next(answers)]

    submitted = check_destination(url, policy=HostPolicy(), resolver=resolver, at_clone=False)
    assert submitted.addresses == ("93.184.216.34",)
    with pytest.raises(SourceError) as refused:
        async_to_sync(clone_repository)(
            url,
            workspace_root=tmp_path / "workspaces",
            git_binary=str(fake_git),
            resolver=resolver,
        )
    assert refused.value.code == "private_address"
    assert not (tmp_path / "git-ran").exists()
    assert not (tmp_path / "workspaces").exists() or not any((tmp_path / "workspaces").iterdir())


# --------------------------------------------------------------------------------------------
# Hostile trees
# --------------------------------------------------------------------------------------------


def test_sparse_gigabyte_file_is_skipped_with_reason(roots: Path) -> None:
    project = roots / "project"
    with (project / "huge.py").open("wb") as huge:
        huge.truncate(1024**3)  # a gigabyte of holes: no disk used, 1 GB if read
    tracemalloc.start()
    try:
        result = parsed_within(project, seconds=60)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    errors = {error.path: error for error in result.errors}
    assert errors["huge.py"].code == "too_large"
    assert (
        "1,073,741,824 bytes, over the 10,485,760-byte limit; skipped" in errors["huge.py"].message
    )
    assert peak < 64 * 1024**2  # never read: reading it would have taken a gigabyte
    assert [unit.qualname for unit in result.units if unit.kind == "function"] == ["kept"]

    analysis = analysed(project)
    assert errors_by_path(analysis)["huge.py"]["code"] == "too_large"
    assert analysis.functions_total == 1


def test_hundred_thousand_files_are_handled(roots: Path) -> None:
    # Hard links: 100,000 directory entries, each a regular .py file, made ~20x faster than
    # writing as many files (ext4 allows 65,000 links to one inode, so one per package).
    tree = roots / "monorepo"
    for package in range(100):
        directory = tree / f"package_{package:03}"
        directory.mkdir(parents=True)
        first = directory / "module_0000.py"
        first.write_text(f"VALUE = {package}\n")
        for module in range(1, 1000):
            os.link(first, directory / f"module_{module:04}.py")
    result = parsed_within(tree, seconds=600, max_modules=1000)
    assert result.files_seen == 100_000
    assert result.files_parsed == 1000
    [cap] = [error for error in result.errors if error.code == "too_many_modules"]
    assert cap.message == (
        "100000 Python files exceed the limit of 1000; the last 99000 in path order were skipped"
    )
    # The first 1,000 in path order were kept, all of the first package.
    assert {unit.path.partition("/")[0] for unit in result.units} == {"package_000"}


def test_deep_directories_are_handled(roots: Path) -> None:
    # 1,000 levels: the deepest paths are longer than PATH_MAX (4,096) and cannot be listed.
    project = roots / "project"
    previous = os.getcwd()
    os.chdir(project)
    try:
        for level in range(1000):
            os.mkdir("deep")
            os.chdir("deep")
            if level == 500:
                Path("middle.py").write_text(FUNCTION.replace("kept", "middle"))
        Path("bottom.py").write_text(FUNCTION)
    finally:
        os.chdir(previous)
    try:
        result = parsed_within(project, seconds=120)
    finally:
        # pytest's own clean-up of old temporary directories (shutil.rmtree, recursive) dies
        # of RecursionError at this depth, failing a later run; rm(1) walks it iteratively.
        subprocess.run(["rm", "-rf", "deep"], cwd=project, check=True)
    functions = [unit.qualname for unit in result.units if unit.kind == "function"]
    assert functions == ["kept", "middle"]
    [unlistable] = [error for error in result.errors if error.code == "unreadable"]
    assert "cannot list: File name too long" in unlistable.message


@pytest.mark.parametrize(
    "expression",
    [
        "(" * 5000 + "1" + ")" * 5000,
        "-" * 5000 + "1",
        "not " * 5000 + "x",
        "x" + "[0]" * 5000,
        "lambda: " * 5000 + "1",
        "1 + " * 5000 + "1",
        "[" * 5000 + "]" * 5000,
    ],
    ids=["parentheses", "unary", "not", "subscripts", "lambdas", "sums", "lists"],
)
def test_deeply_nested_expression_is_skipped_with_reason(roots: Path, expression: str) -> None:
    project = roots / "project"
    (project / "deep.py").write_text(f"def hostile():\n    return {expression}\n")
    result = parsed_within(project, seconds=60)
    [error] = result.errors
    assert (error.path, error.code) == ("deep.py", "too_deep")
    assert "nested too deeply" in error.message or "too many nested" in error.message
    assert [unit.qualname for unit in result.units if unit.kind == "function"] == ["kept"]


def test_non_utf8_file_names_are_handled(roots: Path) -> None:
    project = os.fsencode(roots / "project")
    os.mkdir(project + b"/caf\xe9")
    with open(project + b"/caf\xe9/m\xfcnchen.py", "wb") as latin1_name:
        latin1_name.write(b"def latin(value):\n    return value\n")
    with open(project + b"/\xff\xfe.py", "wb") as not_text:
        not_text.write(b"def binary_name(value):\n    return value\n")
    analysis = analysed(roots / "project")
    assert analysis.status == AnalysisStatus.COMPLETED, analysis.status_reason
    units = dict(
        CodeUnit.objects.filter(analysis=analysis, kind="function").values_list("path", "qualname")
    )
    # Stray bytes are shown as \xNN: storable and readable; the file is read by its real name.
    assert units == {
        "app.py": "kept",
        "caf\\xe9/m\\xfcnchen.py": "latin",
        "\\xff\\xfe.py": "binary_name",
    }


def test_fifo_is_skipped_with_reason(roots: Path) -> None:
    project = roots / "project"
    os.mkfifo(project / "pipe.py")  # opening it for reading would block until a writer came
    (project / "pipe_link.py").symlink_to(project / "pipe.py")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(project / "socket.py"))
    special = {"pipe.py": "a named pipe", "socket.py": "a socket"}
    try:
        os.mknod(project / "device.py", 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero
        special["device.py"] = "a character device"
    except PermissionError:
        pass  # creating devices needs CAP_MKNOD; pipes and sockets make the point
    try:
        result = parsed_within(project, seconds=30, file_io_timeout=20)
        analysis = analysed(project)
    finally:
        listener.close()
    errors = {error.path: error for error in result.errors}
    for name, kind in special.items():
        assert errors[name].code == "special_file"
        assert errors[name].message == f"{kind}, not a regular file; not read"
    assert errors["pipe_link.py"].code == "special_file"
    assert set(errors) == {*special, "pipe_link.py"}
    assert analysis.status == AnalysisStatus.COMPLETED_WITH_ERRORS, analysis.status_reason
    assert analysis.functions_total == 1
    assert {error["code"] for error in analysis.file_errors} == {"special_file"}
