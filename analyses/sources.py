"""Where code comes from, as the user wrote it: a source spec, checked by syntax alone.

A source spec is either

* a local directory, accepted only when its resolved path lies inside one of the allowed roots
  (``allowed_roots=None`` means any readable directory: the terminal command's case), or
* a git URL — ``https://host/...``, ``ssh://[user@]host/...`` or scp-like ``user@host:path`` —
  which ``analyses.git`` fetches (shallow, hardened, under a timeout and a size cap).

Every limit arrives as a keyword argument (callers pass ``settings.EIDOLON_*``); nothing here
reads Django settings. Errors a user can cause are ``SourceError`` with a stable ``code`` and a
message that is safe to show them.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from reliability.redaction import redact_url

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
    "host_not_allowed",
    "private_address",
    "unresolvable_host",
    "bad_ref",
    "clone_timeout",
    "clone_too_large",
    "clone_failed",
]

_MAX_URL_LENGTH = 2048
_MAX_REF_LENGTH = 255


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
            f"{quoted_unless_credentials(spec)} looks like a command-line option; "
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
    if "\x00" in given or not _encodable(given):
        raise SourceError("invalid_path", f"{quoted(given)} is not a valid path.")
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
        _refuse_outside_roots(given, _real_path_as_far_as_allowed(given), roots)
        raise _unresolvable(given, exc) from None
    _refuse_outside_roots(given, resolved, roots)
    if not resolved.is_dir():
        raise SourceError("not_a_directory", f"{quoted(given)} is not a directory.")
    if not os.access(resolved, os.R_OK | os.X_OK):
        raise SourceError("not_readable", f"Directory {quoted(given)} is not readable.")
    return resolved


def _encodable(path: str) -> bool:
    """Whether the filesystem can name ``path`` (a lone surrogate from JSON cannot)."""
    try:
        os.fsencode(path)
    except UnicodeEncodeError:
        return False
    return True


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
        f"{quoted(given)} {where} the directories that may be analysed ({allowed}).",
    )


def _real_path_as_far_as_allowed(given: str) -> Path:
    """The real path, or where resolving it was refused (``/proc/1/root`` is not ours to
    follow): outside every root unless that place is inside one."""
    try:
        return Path(os.path.realpath(given))
    except OSError:
        return Path(os.path.abspath(given))


def _unresolvable(given: str, exc: OSError | RuntimeError) -> SourceError:
    if isinstance(exc, PermissionError):
        return SourceError("not_readable", f"{quoted(given)} is not readable.")
    if isinstance(exc, RuntimeError):  # pathlib's report of a symlink loop
        return SourceError("not_found", f"{quoted(given)} is a symbolic link loop.")
    return SourceError("not_found", f"{quoted(given)} does not exist.")


# --------------------------------------------------------------------------------------------
# Git URLs and refs
# --------------------------------------------------------------------------------------------

_SCP_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_SCP_USER = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*")
# "user:secret@host:path", and "user:token@host/path" typed without its scheme.
_SCP_PASSWORD_LOOKALIKE = re.compile(r"^[^/]*@")
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
    if has_space_or_control(url):
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
            f"{quoted_unless_credentials(url)} is a local path, not a git URL; "
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
            "bad_ref", f"{quoted(ref)} is not a valid branch, tag or full commit SHA."
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
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed IPv6 bracket; the URL may hold credentials: not echoed
        raise SourceError("unsupported_url", "The URL has an invalid host.") from None
    # Checked before anything below echoes the URL.
    if parts.password is not None or (scheme != "ssh" and parts.username is not None):
        raise _credentials_refused()
    try:
        host = parts.hostname
        _ = parts.port
    except ValueError:
        raise SourceError(
            "unsupported_url", f"{quoted(url)} has an invalid host or port."
        ) from None
    if not host:
        raise SourceError("unsupported_url", f"{quoted(url)} has no host.")
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
            f"{quoted(url)} is not a valid git URL; expected e.g. git@host:owner/repo.git.",
        )


def _credentials_refused() -> SourceError:
    return SourceError(
        "credentials_in_url",
        "The URL contains credentials; remove them. "
        "Private repositories need a git credential helper or SSH key set up by the operator.",
    )


def has_space_or_control(text: str) -> bool:
    return any(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in text)


def _ref_format_problem(ref: str) -> bool:
    return (
        not ref
        or len(ref) > _MAX_REF_LENGTH
        or ref == "@"
        or ref.startswith("/")
        or ref.endswith(("/", "."))
        or _REF_FORBIDDEN.search(ref) is not None
        or has_space_or_control(ref)
        or any(part.startswith(".") or part.endswith(".lock") for part in ref.split("/"))
    )


def quoted_unless_credentials(text: str) -> str:
    """``quoted(text)``, or "The source" when an '@' in it may follow a password."""
    return "The source" if "@" in text else quoted(text)


def quoted(text: str) -> str:
    """``text`` quoted for a message, control characters escaped, long values shortened."""
    shown = text if len(text) <= 200 else text[:200] + "…"
    return repr(shown)
