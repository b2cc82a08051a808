"""Git sources: a shallow, hardened clone into a fresh workspace, through the resilience layer.

Every clone is admitted by the ``git`` breaker, bounded by the git timeout and retried by the
one retry policy (``cloned_through_guard``); ``clone_repository`` is the clone itself: one
commit, git hardened against hostile URLs, refs, servers and repositories, its whole process
group killed and the workspace removed on any failure, timeout or cancellation.

Before git runs, the URL's host is checked against the host policy (``analyses.destinations``)
and git's connection is pinned to the address that was checked: https through curl's resolve
list (``http.curloptResolve``), ssh through ``-o HostName=<address>`` with the name kept as
``HostKeyAlias`` for host-key checking. Redirects are not followed while private addresses are
refused (a redirect would lead to a host nobody checked).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import shlex
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from django.conf import settings

from analyses.destinations import (
    Destination,
    HostPolicy,
    Resolver,
    check_destination,
    parse_trusted_networks,
)
from analyses.revisions import ChangeError, parse_base
from analyses.sources import (
    SourceError,
    has_space_or_control,
    is_commit_sha,
    quoted,
    validate_git_url,
    validate_ref,
)
from reliability.guard import Attempt, guard_for
from reliability.outcomes import BreakerVerdict, Outcome, classify_exception
from reliability.redaction import redact_text, redact_url

log = structlog.get_logger(__name__)

DEFAULT_CLONE_TIMEOUT_S = 30.0
DEFAULT_CLONE_MAX_BYTES = 200 * 1024 * 1024
_SIZE_POLL_INTERVAL_S = 0.25
_REAP_TIMEOUT_S = 2.0
_STDERR_EXCERPT_LINES = 5
_STDERR_EXCERPT_CHARS = 500


@dataclass(frozen=True, slots=True)
class ClonedRepository:
    path: Path
    commit_sha: str
    url: str  # redacted
    ref: str | None
    base_sha: str | None = None  # a change review's base, fetched too (``diff_base``)


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
    | {"http.curloptresolve", "http.followredirects", "ssh.variant"}
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
    diff_base: str | None = None,
    workspace_root: Path,
    timeout_s: float = DEFAULT_CLONE_TIMEOUT_S,
    max_bytes: int = DEFAULT_CLONE_MAX_BYTES,
    git_binary: str = "git",
    allow_insecure_http: bool = False,
    extra_git_config: Mapping[str, str] | None = None,
    host_policy: HostPolicy | None = None,
    resolver: Resolver | None = None,
) -> ClonedRepository:
    """Fetch one commit of ``url`` (``ref`` or the default branch) into a new workspace.

    The caller owns the returned workspace (``removed_on_exit`` removes it). On any failure,
    timeout or cancellation git's whole process group is killed and the workspace removed.
    ``max_bytes`` caps the workspace on disk (git metadata plus checkout); ``timeout_s`` covers
    the whole operation. ``extra_git_config`` adds ``-c`` options (CA bundle, credential helper)
    but cannot change the hardening. ``host_policy`` (default: public addresses only) is
    checked with ``resolver`` (default: the system's) and git is pinned to the checked address.
    """
    validate_git_url(url, allow_insecure_http=allow_insecure_http)
    ref = None if ref is None else validate_ref(ref)
    _check_extra_config(extra_git_config or {})
    policy = host_policy or HostPolicy()
    destination = await asyncio.to_thread(
        check_destination, url, policy=policy, resolver=resolver, at_clone=True
    )
    options = _git_options(
        allow_insecure_http=allow_insecure_http,
        extra=extra_git_config or {},
        pinned=destination,
        follow_redirects=policy.allow_private_addresses,
    )
    shown = redact_url(url)
    workspace = _create_workspace(workspace_root)
    git = _Git(
        binary=git_binary,
        options=options,
        env=_git_environment(allow_insecure_http=allow_insecure_http, pinned=destination),
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
                base_sha = None
                if diff_base is not None:
                    base_sha = await _fetch_base(git, url=url, ref=ref, base=diff_base, shown=shown)
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
    return ClonedRepository(
        path=workspace, commit_sha=commit_sha, url=shown, ref=ref, base_sha=base_sha
    )


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


async def _fetch_base(git: _Git, *, url: str, ref: str | None, base: str, shown: str) -> str:
    """Fetch a change review's base (deep enough for its ``~N`` to resolve); its commit SHA.
    ``HEAD`` names the analysed ref."""
    revision = parse_base(base)
    name = (ref or "HEAD") if revision.name == "HEAD" else revision.name
    fetched = await git.run(
        "fetch", "--quiet", f"--depth={revision.depth}", "--no-tags", "--no-recurse-submodules",
        "--", url, name, check=False,
    )  # fmt: skip
    if fetched.returncode != 0:
        error = _fetch_error(fetched.stderr, ref=name, shown=shown)
        raise ChangeError(error.code, f"diff_base (--diff): {error.message}")
    found = await git.run(
        "rev-parse", "--verify", "--quiet", "--end-of-options",
        f"FETCH_HEAD{revision.suffix}^{{commit}}", check=False,
    )  # fmt: skip
    if found.returncode != 0:
        raise ChangeError(
            "bad_ref", f"diff_base (--diff) {quoted(base)} is not a commit of {shown}."
        )
    return found.stdout.strip()


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
        return SourceError("bad_ref", f"No branch or tag {quoted(ref)} in {shown}.")
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


def _git_options(
    *,
    allow_insecure_http: bool,
    extra: Mapping[str, str],
    pinned: Destination | None = None,
    follow_redirects: bool = True,
) -> tuple[str, ...]:
    _check_extra_config(extra)
    hardened = {
        **_HARDENED_CONFIG,
        "protocol.http.allow": "always" if allow_insecure_http else "never",
    }
    if not follow_redirects:
        hardened["http.followRedirects"] = "false"
    options: list[str] = []
    for key, value in [*extra.items(), *hardened.items()]:
        options += ["-c", f"{key}={value}"]
    if pinned is not None and pinned.scheme != "ssh" and pinned.pinned_address:
        # curl's CURLOPT_RESOLVE: "host:port:address", an IPv6 address in brackets.
        address = pinned.pinned_address
        shown = f"[{address}]" if ":" in address else address
        # The name with and without a trailing dot: curl looks up the name as written.
        for name in (pinned.host, f"{pinned.host}."):
            options += ["-c", f"http.curloptResolve={name}:{pinned.port}:{shown}"]
    return tuple(options)


def _check_extra_config(extra: Mapping[str, str]) -> None:
    for key, value in extra.items():
        if "." not in key or "=" in key or has_space_or_control(key) or "\x00" in value:
            raise ValueError(f"not a git config option: {key!r}")
        if key.lower() in _UNOVERRIDABLE_CONFIG:
            raise ValueError(f"git option {key!r} is part of the clone hardening")


def _ssh_command(pinned: Destination | None) -> str:
    command = ["ssh", "-o", "BatchMode=yes"]
    if pinned is not None and pinned.scheme == "ssh" and pinned.pinned_address:
        # Connect to the checked address; check the host key under the name the user gave.
        command += ["-o", f"HostName={pinned.pinned_address}"]
        command += ["-o", f"HostKeyAlias={pinned.host}"]
    return shlex.join(command)


def _git_environment(
    *, allow_insecure_http: bool, pinned: Destination | None = None
) -> dict[str, str]:
    env = {name: os.environ[name] for name in _INHERITED_ENVIRONMENT if name in os.environ}
    env.update(
        LC_ALL="C",  # stderr is matched against English messages
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_ALLOW_PROTOCOL="https:ssh" + (":http" if allow_insecure_http else ""),
        GIT_TERMINAL_PROMPT="0",
        GIT_ASKPASS="",  # set but empty: no askpass program, and SSH_ASKPASS is not consulted
        GIT_SSH_COMMAND=_ssh_command(pinned),
        GIT_SSH_VARIANT="ssh",
        GIT_LFS_SKIP_SMUDGE="1",
    )
    return env


def hardened_git() -> tuple[list[str], dict[str, str]]:
    """The clones' hardened git (command and environment), for commands in an existing
    repository: a clone, or a local work tree (whose own config cannot turn hooks on)."""
    command = ["git", "--no-optional-locks", *_git_options(allow_insecure_http=False, extra={})]
    return command, _git_environment(allow_insecure_http=False)


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


# Failures of the remote (or the network) count against the breaker and are retried; a URL,
# ref or repository that cannot work is the caller's problem and is neither.
_REMOTE_FAILURES = {"clone_timeout", "clone_failed", "unresolvable_host"}


def classify_git_error(exc: BaseException, *, now: float) -> Outcome:
    if isinstance(exc, SourceError):
        if exc.code in _REMOTE_FAILURES:
            return Outcome(verdict=BreakerVerdict.FAILURE, retryable=True, reason=exc.code)
        return Outcome(verdict=BreakerVerdict.IGNORED, retryable=False, reason=exc.code)
    return classify_exception(exc, now=now)


_private_addresses_allowed = contextvars.ContextVar("private_addresses_allowed", default=False)


@contextlib.contextmanager
def private_addresses_allowed() -> Iterator[None]:
    """Within this block (and the tasks and threads it starts), git URLs may lead to private
    addresses: the terminal user's opt-out (``manage.py analyze --allow-private-hosts``)."""
    token = _private_addresses_allowed.set(True)
    try:
        yield
    finally:
        _private_addresses_allowed.reset(token)


def configured_host_policy() -> HostPolicy:
    """The hosts clones may reach, as the deployment sets them (``EIDOLON_GIT_*_HOSTS``,
    ``EIDOLON_GIT_TRUSTED_NETWORKS``), with the terminal's opt-out when it is in force."""
    return HostPolicy(
        allowed_hosts=tuple(settings.EIDOLON_GIT_ALLOWED_HOSTS),
        denied_hosts=tuple(settings.EIDOLON_GIT_DENIED_HOSTS),
        trusted_networks=parse_trusted_networks(settings.EIDOLON_GIT_TRUSTED_NETWORKS),
        allow_private_addresses=_private_addresses_allowed.get(),
    )


def _configured_clone_options() -> dict[str, Any]:
    """``clone_repository``'s options as the deployment sets them (``EIDOLON_GIT_*``)."""
    return {
        "workspace_root": settings.EIDOLON_WORKSPACE_ROOT,
        "max_bytes": settings.EIDOLON_GIT_MAX_BYTES,
        "allow_insecure_http": settings.EIDOLON_GIT_ALLOW_INSECURE_HTTP,
        "extra_git_config": settings.EIDOLON_GIT_EXTRA_CONFIG,
        "host_policy": configured_host_policy(),
    }


@contextlib.asynccontextmanager
async def cloned_through_guard(
    url: str, *, ref: str | None, deadline: float | None, diff_base: str | None = None
) -> AsyncIterator[ClonedRepository]:
    """A shallow clone of ``url`` at ``ref``, removed when the block exits.

    Every workspace an attempt made is removed on the way out, including one whose clone
    succeeded but whose caller never got it (cancelled or failed while the guard recorded the
    success, or while draining)."""
    cloned: list[ClonedRepository] = []

    async def clone(attempt: Attempt) -> ClonedRepository:
        repository = await clone_repository(
            url,
            ref=ref,
            diff_base=diff_base,
            timeout_s=attempt.timeout,
            **_configured_clone_options(),
        )
        cloned.append(repository)
        return repository

    guard = guard_for("git", classify=classify_git_error)
    try:
        repository = await guard.call(clone, deadline=deadline)
        await guard.drain()
        yield repository
    finally:
        for repository in cloned:
            await _remove_workspace(repository.path)
