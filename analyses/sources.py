"""Where code comes from: a local directory under the allowed roots, or a shallow git clone.

A source spec is either

* a local directory, accepted only when its resolved path lies inside one of the allowed roots
  (``allowed_roots=None`` means any readable directory: the terminal command's case), or
* a git URL — ``https://host/...``, ``ssh://[user@]host/...`` or scp-like ``user@host:path`` —
  fetched shallowly into a fresh workspace under a timeout and a size cap, with git hardened
  against hostile URLs, refs, servers and repositories.

Every limit arrives as a keyword argument (callers pass ``settings.EIDOLON_*``); nothing here
reads Django settings. Errors a user can cause are ``SourceError`` with a stable ``code`` and a
message that is safe to show them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import tempfile
import time
import unicodedata
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import structlog

from reliability.redaction import redact_text, redact_url

log = structlog.get_logger(__name__)

SourceKind = Literal["local", "git"]
SourceErrorCode = Literal[
    "invalid_path",
    "not_found",
    "not_a_directory",
    "not_readable",
    "outside_allowed_roots",
    "unsupported_url",
    "option_injection",
    "credentials_in_url",
    "bad_ref",
    "clone_timeout",
    "clone_too_large",
    "clone_failed",
]

DEFAULT_CLONE_TIMEOUT_S = 30.0
DEFAULT_CLONE_MAX_BYTES = 200 * 1024 * 1024

_MAX_URL_LENGTH = 2048
_MAX_REF_LENGTH = 255
_SIZE_POLL_INTERVAL_S = 0.25
_REAP_TIMEOUT_S = 2.0
_STDERR_EXCERPT_LINES = 5
_STDERR_EXCERPT_CHARS = 500


class SourceError(Exception):
    """A source the user asked for cannot be used. ``message`` is safe to show them."""

    def __init__(self, code: SourceErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: SourceErrorCode = code
        self.message = message

    def __repr__(self) -> str:
        return f"SourceError(code={self.code!r}, message={self.message!r})"


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """What the user asked to analyse, classified and syntactically validated."""

    kind: SourceKind
    location: str
    ref: str | None = None

    @property
    def display(self) -> str:
        """The location as it may be shown and logged (credentials removed)."""
        return redact_url(self.location) if self.kind == "git" else self.location


@dataclass(frozen=True, slots=True)
class ClonedRepository:
    path: Path
    commit_sha: str
    url: str  # redacted
    ref: str | None


# --------------------------------------------------------------------------------------------
# Source specs
# --------------------------------------------------------------------------------------------

_SCHEME_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
_REMOTE_HELPER = re.compile(r"^(?P<transport>[A-Za-z][A-Za-z0-9+.-]*)::")
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")


def classify_source(spec: str) -> SourceKind:
    """Tell a git URL from a local path, by syntax alone (never by looking at the disk).

    Anything git itself would treat as a remote is ``"git"``, including the forms
    ``validate_git_url`` refuses (``file://``, ``ext::``), so those are refused as URLs rather
    than looked up as paths. A local directory whose name has a colon before any slash
    (``proj:v2``) must be written ``./proj:v2``, exactly as with git.
    """
    if _SCHEME_URL.match(spec) or _REMOTE_HELPER.match(spec) or _is_scp_like(spec):
        return "git"
    return "local"


def parse_source_spec(
    spec: str, *, ref: str | None = None, allow_insecure_http: bool = False
) -> SourceSpec:
    """Classify ``spec`` and validate its syntax (and ``ref``'s); touches neither disk nor network.

    Callers strip form input themselves: surrounding whitespace is significant in paths.
    """
    if not spec:
        raise SourceError("invalid_path", "No source was given: pass a directory or a git URL.")
    if spec.startswith("-"):
        raise SourceError(
            "option_injection",
            f"{_quote(spec)} looks like a command-line option; "
            "write ./-name for a directory whose name starts with '-'.",
        )
    kind = classify_source(spec)
    if kind == "local":
        if ref is not None:
            raise SourceError("bad_ref", "A ref can only be given with a git URL.")
        return SourceSpec(kind="local", location=spec)
    validate_git_url(spec, allow_insecure_http=allow_insecure_http)
    return SourceSpec(kind="git", location=spec, ref=None if ref is None else validate_ref(ref))


# --------------------------------------------------------------------------------------------
# Local directories
# --------------------------------------------------------------------------------------------


def resolve_local_directory(
    path: str | os.PathLike[str], *, allowed_roots: Sequence[str | os.PathLike[str]] | None
) -> Path:
    """Return the resolved directory ``path`` names, or raise ``SourceError``.

    ``allowed_roots=None`` accepts any readable directory; an empty sequence accepts none.
    Relative paths resolve against the working directory; ``~`` is not expanded.
    """
    given = os.fspath(path)
    if not given:
        raise SourceError("invalid_path", "No directory was given.")
    if "\x00" in given:
        raise SourceError("invalid_path", f"{_quote(given)} is not a valid path.")
    roots = None if allowed_roots is None else [Path(root).resolve() for root in allowed_roots]
    if roots == []:
        raise SourceError(
            "outside_allowed_roots",
            "Local directories cannot be analysed here; give a git URL instead.",
        )
    try:
        resolved = Path(given).resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        # Outside the roots, say only that: callers must not learn what exists there.
        _refuse_outside_roots(given, Path(os.path.realpath(given)), roots)
        raise _unresolvable(given, exc) from None
    _refuse_outside_roots(given, resolved, roots)
    if not resolved.is_dir():
        raise SourceError("not_a_directory", f"{_quote(given)} is not a directory.")
    if not os.access(resolved, os.R_OK | os.X_OK):
        raise SourceError("not_readable", f"Directory {_quote(given)} is not readable.")
    return resolved


def _refuse_outside_roots(given: str, resolved: Path, roots: list[Path] | None) -> None:
    if roots is None or any(resolved.is_relative_to(root) for root in roots):
        return
    allowed = ", ".join(str(root) for root in roots)
    if any(Path(os.path.abspath(given)).is_relative_to(root) for root in roots):
        where = "leads through a symbolic link outside"
    else:
        where = "is outside"
    raise SourceError(
        "outside_allowed_roots",
        f"{_quote(given)} {where} the directories that may be analysed ({allowed}).",
    )


def _unresolvable(given: str, exc: OSError | RuntimeError) -> SourceError:
    if isinstance(exc, PermissionError):
        return SourceError("not_readable", f"{_quote(given)} is not readable.")
    if isinstance(exc, RuntimeError):  # pathlib's report of a symlink loop
        return SourceError("not_found", f"{_quote(given)} is a symbolic link loop.")
    return SourceError("not_found", f"{_quote(given)} does not exist.")


# --------------------------------------------------------------------------------------------
# Git URLs and refs
# --------------------------------------------------------------------------------------------

_SCP_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_SCP_USER = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*")
_SCP_PASSWORD_LOOKALIKE = re.compile(r"^[^/]*@[^/]*:")
_COMMIT_SHA = re.compile(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}")
# git check-ref-format: no control characters, space, ~ ^ : ? * [ \, no "..", "@{" or "//".
_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")


def validate_git_url(url: str, *, allow_insecure_http: bool = False) -> None:
    """Raise ``SourceError`` unless ``url`` is an https, ssh or scp-like git URL safe to fetch.

    ``http://`` is accepted only with ``allow_insecure_http``; ``git://``, ``file://``, remote
    helpers (``ext::``, ``fd::``) and local paths never are. Credentials in the URL are refused
    (and never echoed): private repositories need an operator-configured credential helper.
    """
    if not url:
        raise SourceError("unsupported_url", "No git URL was given.")
    if url.startswith("-"):
        raise SourceError("option_injection", "A git URL cannot start with '-'.")
    if len(url) > _MAX_URL_LENGTH:
        raise SourceError(
            "unsupported_url", f"A git URL can be at most {_MAX_URL_LENGTH} characters long."
        )
    if helper := _REMOTE_HELPER.match(url):
        raise SourceError(
            "unsupported_url",
            f"The '{helper['transport']}::' transport is not allowed; "
            "use an https:// or ssh:// URL.",
        )
    if _has_space_or_control(url):
        raise SourceError(
            "unsupported_url", "A git URL cannot contain spaces or control characters."
        )
    if scheme := _SCHEME_URL.match(url):
        _validate_scheme_url(url, scheme["scheme"].lower(), allow_insecure_http)
    elif _is_scp_like(url):
        _validate_scp_like(url)
    else:
        raise SourceError(
            "unsupported_url",
            f"{_quote(url)} is a local path, not a git URL; "
            "use an https:// or ssh:// URL, or user@host:path.",
        )


def validate_ref(ref: str) -> str:
    """Return ``ref`` (a commit SHA lower-cased) if it is a valid branch, tag or full SHA."""
    if ref.startswith("-"):
        raise SourceError("option_injection", "A ref cannot start with '-'.")
    if _COMMIT_SHA.fullmatch(ref):
        return ref.lower()
    if _ref_format_problem(ref):
        raise SourceError(
            "bad_ref", f"{_quote(ref)} is not a valid branch, tag or full commit SHA."
        )
    return ref


def is_commit_sha(ref: str) -> bool:
    return _COMMIT_SHA.fullmatch(ref) is not None


def _is_scp_like(spec: str) -> bool:
    # git's rule (connect.c): [user@]host:path when a colon comes before any slash. A single
    # letter before the colon is a Windows drive, never a host.
    colon = spec.find(":")
    if colon <= 0 or _DRIVE_LETTER.match(spec):
        return False
    slash = spec.find("/")
    return slash == -1 or colon < slash


def _validate_scheme_url(url: str, scheme: str, allow_insecure_http: bool) -> None:
    allowed = {"https", "ssh"} | ({"http"} if allow_insecure_http else set())
    if scheme not in allowed:
        raise SourceError(
            "unsupported_url", f"'{scheme}://' URLs are not allowed; use https:// or ssh://."
        )
    parts = urlsplit(url)
    # Checked before anything below echoes the URL.
    if parts.password is not None or (scheme != "ssh" and parts.username is not None):
        raise _credentials_refused()
    try:
        host = parts.hostname
        _ = parts.port
    except ValueError:
        raise SourceError(
            "unsupported_url", f"{_quote(url)} has an invalid host or port."
        ) from None
    if not host:
        raise SourceError("unsupported_url", f"{_quote(url)} has no host.")
    if host.startswith("-") or (parts.username or "").startswith("-"):
        raise SourceError("option_injection", "A host or user name cannot start with '-'.")


def _validate_scp_like(url: str) -> None:
    user_host, _, path = url.partition(":")
    user, at, host = user_host.rpartition("@")
    if user.startswith("-") or host.startswith("-"):
        raise SourceError("option_injection", "A host or user name cannot start with '-'.")
    if _SCP_PASSWORD_LOOKALIKE.match(path):
        raise _credentials_refused()
    if not _SCP_HOST.fullmatch(host) or (at and not _SCP_USER.fullmatch(user)) or not path:
        raise SourceError(
            "unsupported_url",
            f"{_quote(url)} is not a valid git URL; expected e.g. git@host:owner/repo.git.",
        )


def _credentials_refused() -> SourceError:
    return SourceError(
        "credentials_in_url",
        "The URL contains credentials; remove them. "
        "Private repositories need a git credential helper or SSH key set up by the operator.",
    )


def _has_space_or_control(text: str) -> bool:
    return any(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in text)


def _ref_format_problem(ref: str) -> bool:
    return (
        not ref
        or len(ref) > _MAX_REF_LENGTH
        or ref == "@"
        or ref.startswith("/")
        or ref.endswith(("/", "."))
        or _REF_FORBIDDEN.search(ref) is not None
        or _has_space_or_control(ref)
        or any(part.startswith(".") or part.endswith(".lock") for part in ref.split("/"))
    )


# --------------------------------------------------------------------------------------------
# Cloning
# --------------------------------------------------------------------------------------------

# Later `-c` options win, so these follow the caller's extra config and cannot be overridden.
_HARDENED_CONFIG = {
    "protocol.allow": "never",
    "protocol.https.allow": "always",
    "protocol.ssh.allow": "always",
    "protocol.file.allow": "never",
    "protocol.ext.allow": "never",
    "core.hooksPath": os.devnull,
    "core.fsmonitor": "false",
    # Checked-out symlinks become plain files holding the target: none can lead outside.
    "core.symlinks": "false",
    "submodule.recurse": "false",
    "fetch.recurseSubmodules": "false",
    "http.followRedirects": "initial",
    # Always index-pack: it streams the download into a pack file the size watch can see,
    # where unpack-objects would inflate each object in memory first.
    "fetch.unpackLimit": "1",
    "transfer.unpackLimit": "1",
    # Automatic gc/maintenance detaches into its own session, out of reach of our kill.
    "gc.auto": "0",
    "maintenance.auto": "false",
    "advice.detachedHead": "false",
    "init.defaultBranch": "main",
}
_UNOVERRIDABLE_CONFIG = frozenset(
    {key.lower() for key in _HARDENED_CONFIG}
    | {"protocol.http.allow", "http.sslverify", "core.sshcommand", "core.gitproxy", "core.askpass"}
)
# Variables git may inherit; everything else (GIT_*, SSL overrides, ...) is dropped.
_INHERITED_ENVIRONMENT = (
    "PATH",
    "HOME",
    "TMPDIR",
    "SSH_AUTH_SOCK",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
)
_MISSING_REF_MARKERS = ("couldn't find remote ref", "not our ref", "unadvertised object")


@contextlib.asynccontextmanager
async def cloned_repository(
    url: str,
    *,
    ref: str | None = None,
    workspace_root: Path,
    timeout_s: float = DEFAULT_CLONE_TIMEOUT_S,
    max_bytes: int = DEFAULT_CLONE_MAX_BYTES,
    git_binary: str = "git",
    allow_insecure_http: bool = False,
    extra_git_config: Mapping[str, str] | None = None,
) -> AsyncIterator[ClonedRepository]:
    """``clone_repository``, removing the workspace when the block exits, however it exits."""
    repository = await clone_repository(
        url,
        ref=ref,
        workspace_root=workspace_root,
        timeout_s=timeout_s,
        max_bytes=max_bytes,
        git_binary=git_binary,
        allow_insecure_http=allow_insecure_http,
        extra_git_config=extra_git_config,
    )
    async with removed_on_exit(repository):
        yield repository


@contextlib.asynccontextmanager
async def removed_on_exit(repository: ClonedRepository) -> AsyncIterator[ClonedRepository]:
    """Hand over ``repository``; remove its workspace when the block exits, however it exits."""
    try:
        yield repository
    finally:
        await _remove_workspace(repository.path)


async def clone_repository(
    url: str,
    *,
    ref: str | None = None,
    workspace_root: Path,
    timeout_s: float = DEFAULT_CLONE_TIMEOUT_S,
    max_bytes: int = DEFAULT_CLONE_MAX_BYTES,
    git_binary: str = "git",
    allow_insecure_http: bool = False,
    extra_git_config: Mapping[str, str] | None = None,
) -> ClonedRepository:
    """Fetch one commit of ``url`` (``ref`` or the default branch) into a new workspace.

    The caller owns the returned workspace (prefer ``cloned_repository``). On any failure,
    timeout or cancellation git's whole process group is killed and the workspace removed.
    ``max_bytes`` caps the workspace on disk (git metadata plus checkout); ``timeout_s`` covers
    the whole operation. ``extra_git_config`` adds ``-c`` options (CA bundle, credential helper)
    but cannot change the hardening.
    """
    validate_git_url(url, allow_insecure_http=allow_insecure_http)
    ref = None if ref is None else validate_ref(ref)
    options = _git_options(allow_insecure_http=allow_insecure_http, extra=extra_git_config or {})
    shown = redact_url(url)
    workspace = _create_workspace(workspace_root)
    git = _Git(
        binary=git_binary,
        options=options,
        env=_git_environment(allow_insecure_http=allow_insecure_http),
        workspace=workspace,
        max_bytes=max_bytes,
    )
    logger = log.bind(url=shown, ref=ref, workspace=str(workspace))
    logger.info("git_clone_started", timeout_s=timeout_s, max_bytes=max_bytes)
    started = time.monotonic()
    try:
        try:
            async with asyncio.timeout(timeout_s):
                commit_sha = await _fetch_and_check_out(git, url=url, ref=ref, shown=shown)
        except TimeoutError:
            raise SourceError(
                "clone_timeout", f"Cloning {shown} timed out after {timeout_s:g} s."
            ) from None
    except BaseException as exc:
        await _remove_workspace(workspace)
        if isinstance(exc, SourceError):
            logger.warning("git_clone_failed", code=exc.code, reason=exc.message)
        else:
            logger.info("git_clone_abandoned", reason=type(exc).__name__)
        raise
    logger.info(
        "git_clone_completed",
        commit_sha=commit_sha,
        duration_ms=round((time.monotonic() - started) * 1000),
    )
    return ClonedRepository(path=workspace, commit_sha=commit_sha, url=shown, ref=ref)


async def _fetch_and_check_out(git: _Git, *, url: str, ref: str | None, shown: str) -> str:
    # init + fetch serves branches, tags and commit SHAs alike, and leaves a window between
    # download and checkout to size the checkout before writing it.
    await git.run("init", "--quiet", "--template=")
    fetched = await git.run(
        "fetch",
        "--quiet",
        "--depth=1",
        "--no-tags",
        "--no-recurse-submodules",
        "--",
        url,
        ref or "HEAD",
        check=False,
    )
    if fetched.returncode != 0:
        raise _fetch_error(fetched.stderr, ref=ref, shown=shown)
    await _refuse_oversized_checkout(git)
    await git.run("checkout", "--quiet", "--detach", "FETCH_HEAD")
    commit_sha = (await git.run("rev-parse", "--verify", "HEAD^{commit}")).stdout.strip()
    if ref is not None and is_commit_sha(ref) and commit_sha != ref:
        raise SourceError("clone_failed", f"{shown} returned {commit_sha} instead of {ref}.")
    await git.refuse_if_too_large()
    return commit_sha


async def _refuse_oversized_checkout(git: _Git) -> None:
    # A few compressed megabytes can expand to gigabytes; sum the blob sizes first.
    listing = await git.run("ls-tree", "-r", "-l", "-z", "--full-tree", "FETCH_HEAD")
    checkout_bytes = sum(_blob_sizes(listing.stdout))
    await git.refuse_if_too_large(checkout_bytes=checkout_bytes)


def _blob_sizes(ls_tree_output: str) -> list[int]:
    # Entries: "<mode> <type> <object> <size>\t<path>", NUL-terminated with -z.
    sizes = []
    for entry in ls_tree_output.split("\0"):
        fields = entry.partition("\t")[0].split()
        if len(fields) == 4 and fields[1] == "blob":
            sizes.append(int(fields[3]))
    return sizes


def _fetch_error(stderr: str, *, ref: str | None, shown: str) -> SourceError:
    lowered = stderr.lower()
    if any(marker in lowered for marker in _MISSING_REF_MARKERS):
        if ref is None:
            return SourceError("clone_failed", f"{shown} has no commits on its default branch.")
        if is_commit_sha(ref):
            return SourceError(
                "bad_ref",
                f"Commit {ref} is not available from {shown} "
                "(it does not exist there, or the server refuses fetching commits by SHA).",
            )
        return SourceError("bad_ref", f"No branch or tag {_quote(ref)} in {shown}.")
    return SourceError("clone_failed", f"git could not fetch {shown}: {_git_excerpt(stderr)}")


def _git_excerpt(stderr: str) -> str:
    lines = [
        line.strip()
        for line in redact_text(stderr, url_userinfo=True).splitlines()
        if line.strip() and not line.startswith("hint:")
    ]
    excerpt = " ".join(lines[-_STDERR_EXCERPT_LINES:]) or "no error output"
    if len(excerpt) > _STDERR_EXCERPT_CHARS:
        excerpt = "…" + excerpt[-_STDERR_EXCERPT_CHARS:]
    return excerpt


def _git_options(*, allow_insecure_http: bool, extra: Mapping[str, str]) -> tuple[str, ...]:
    for key, value in extra.items():
        if "." not in key or "=" in key or _has_space_or_control(key) or "\x00" in value:
            raise ValueError(f"not a git config option: {key!r}")
        if key.lower() in _UNOVERRIDABLE_CONFIG:
            raise ValueError(f"git option {key!r} is part of the clone hardening")
    hardened = {
        **_HARDENED_CONFIG,
        "protocol.http.allow": "always" if allow_insecure_http else "never",
    }
    options: list[str] = []
    for key, value in [*extra.items(), *hardened.items()]:
        options += ["-c", f"{key}={value}"]
    return tuple(options)


def _git_environment(*, allow_insecure_http: bool) -> dict[str, str]:
    env = {name: os.environ[name] for name in _INHERITED_ENVIRONMENT if name in os.environ}
    env.update(
        LC_ALL="C",  # stderr is matched against English messages
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_ALLOW_PROTOCOL="https:ssh" + (":http" if allow_insecure_http else ""),
        GIT_TERMINAL_PROMPT="0",
        GIT_ASKPASS="",  # set but empty: no askpass program, and SSH_ASKPASS is not consulted
        GIT_SSH_COMMAND="ssh -o BatchMode=yes",
        GIT_SSH_VARIANT="ssh",
        GIT_LFS_SKIP_SMUDGE="1",
    )
    return env


def _create_workspace(workspace_root: Path) -> Path:
    workspace_root.mkdir(mode=0o700, parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="clone-", dir=workspace_root)).resolve()


async def _remove_workspace(path: Path) -> None:
    # In a thread: should this await be cancelled, the removal still runs to the end.
    await asyncio.to_thread(_remove_tree, path)


def _remove_tree(path: Path) -> None:
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("workspace_removal_failed", workspace=str(path), error=str(exc))
    else:
        log.debug("workspace_removed", workspace=str(path))


def _directory_size(root: Path) -> int:
    total = 0
    pending = [os.fspath(root)]
    while pending:
        try:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    # git renames and deletes temporary files while we count.
                    with contextlib.suppress(FileNotFoundError):
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(entry.path)
                        else:
                            total += entry.stat(follow_symlinks=False).st_size
        except (FileNotFoundError, NotADirectoryError):
            continue
    return total


def _format_bytes(count: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= size:
            return f"{count / size:.1f}".removesuffix(".0") + f" {unit}"
    return f"{count} bytes"


@dataclass(frozen=True, slots=True)
class _GitResult:
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True, slots=True)
class _Git:
    """Runs hardened git commands in one workspace, enforcing its size cap while they run."""

    binary: str
    options: tuple[str, ...]
    env: Mapping[str, str]
    workspace: Path
    max_bytes: int

    async def run(self, *args: str, check: bool = True) -> _GitResult:
        # A session of its own, so one killpg reaches git's helpers (git-remote-https, ssh).
        process = await asyncio.create_subprocess_exec(
            self.binary,
            *self.options,
            *args,
            cwd=self.workspace,
            env=dict(self.env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        output = asyncio.ensure_future(process.communicate())
        try:
            while not output.done():
                await asyncio.wait({output}, timeout=_SIZE_POLL_INTERVAL_S)
                if not output.done():
                    await self.refuse_if_too_large()
        except BaseException:
            _kill_process_group(process.pid)
            await _reap(process, output)
            raise
        stdout, stderr = output.result()
        result = _GitResult(
            returncode=await process.wait(),
            stdout=stdout.decode(errors="replace"),
            stderr=stderr.decode(errors="replace"),
        )
        if check and result.returncode != 0:
            raise SourceError(
                "clone_failed", f"git {args[0]} failed: {_git_excerpt(result.stderr)}"
            )
        return result

    async def refuse_if_too_large(self, *, checkout_bytes: int = 0) -> None:
        used = await asyncio.to_thread(_directory_size, self.workspace)
        if used + checkout_bytes <= self.max_bytes:
            return
        limit = _format_bytes(self.max_bytes)
        if checkout_bytes:
            needed = _format_bytes(used + checkout_bytes)
            message = f"Checking out the repository would take {needed}, over the {limit} limit."
        else:
            message = f"The repository is over the {limit} limit (at least {_format_bytes(used)})."
        raise SourceError("clone_too_large", message)


async def _reap(
    process: asyncio.subprocess.Process, output: asyncio.Future[tuple[bytes, bytes]]
) -> None:
    # The pipes close once the group is dead, unless a descendant left the group (setsid)
    # and holds them: then stop reading rather than wait for it.
    await asyncio.wait({output}, timeout=_REAP_TIMEOUT_S)
    if not output.done():
        output.cancel()
        log.warning("git_descendant_escaped", pid=process.pid)
    elif not output.cancelled():
        output.exception()  # retrieved: a pipe error after the kill is of no interest
    await process.wait()


def _kill_process_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _quote(text: str) -> str:
    """``text`` quoted for a message, control characters escaped, long values shortened."""
    shown = text if len(text) <= 200 else text[:200] + "…"
    return repr(shown)
