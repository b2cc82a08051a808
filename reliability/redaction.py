"""Secrets never leave the process: one redaction for log lines, error messages shown to users,
git's stderr and health details.

It lives at the bottom of the dependency graph (it imports nothing of the project), so the
logging configuration, the resilience layer and the analyses may all use it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "[REDACTED]"

# Keys whose values are secrets wherever they appear in an event.
SECRET_KEY_PATTERN = re.compile(
    r"(^|[_\-])(pass(word|wd)?|secret(_key)?|token|api[_\-]?key|apikey|authorization"
    r"|cookies?|sessionid|session_key|csrf(token)?|credentials?)$",
    re.IGNORECASE,
)
# Secrets embedded in free text (messages, exception text, tracebacks, git's stderr):
# (pattern, replacement).
_SECRET_TEXT_PATTERNS = (
    (re.compile(r"sk-ant-[A-Za-z0-9_\-]{8,}"), REDACTED),
    (
        re.compile(r"(?i)\b((?:proxy-)?authorization)(['\"]?\s*[:=]\s*['\"]?)([^'\"\r\n,}]+)"),
        rf"\1\2{REDACTED}",
    ),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{8,}"), rf"\1 {REDACTED}"),
    (
        re.compile(
            r"(?i)\b(x-api-key|api[_-]?key|password|passwd|secret|token|cookie|sessionid|csrftoken)"
            r"(['\"]?\s*[:=]\s*['\"]?)([^'\"\s,;&}]+)"
        ),
        rf"\1\2{REDACTED}",
    ),
    (re.compile(r"(://[^:/@\s]+:)([^@/\s]+)(@)"), rf"\1{REDACTED}\3"),
    # Git hosts' personal access tokens.
    (
        re.compile(
            r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_-]{20,})"
        ),
        REDACTED,
    ),
)
# Text that none of the patterns above can match skips them (most log values): every pattern
# needs one of these.
_MIGHT_HOLD_A_SECRET = re.compile(
    r"(?i)sk-ant-|authoriz|bearer|basic|key|passw|secret|token|cookie|session|csrf|://"
    r"|gh[pousr]_|github_pat_|glpat-"
)
# A URL's whole user info ("https://x-access-token:...@host", "https://TOKEN@host"): in free
# text whose URLs may carry a token as the user name (git's stderr).
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@]+@")
_SCHEME_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")

# Environment variables whose values never reach a log line or a message.
SECRET_ENVIRONMENT_VARIABLES = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "EIDOLON_SECRET_KEY",
)
_MIN_SECRET_LENGTH = 6


def secret_values() -> list[str]:
    """The configured secrets' values, read at each call: a key set after start-up is still
    redacted."""
    return [
        value
        for name in SECRET_ENVIRONMENT_VARIABLES
        if len(value := os.environ.get(name, "")) >= _MIN_SECRET_LENGTH
    ]


def redact_text(
    text: str, secrets: Iterable[str] | None = None, *, url_userinfo: bool = False
) -> str:
    """``text`` without the configured secrets (or ``secrets``) and token-looking strings.

    ``url_userinfo`` also removes every URL's user name (git's stderr: a token often stands
    there); log lines keep user names such as ``ssh://git@host``.
    """
    for value in secret_values() if secrets is None else secrets:
        if value:
            text = text.replace(value, REDACTED)
    if url_userinfo:
        text = _URL_USERINFO.sub(rf"\1{REDACTED}@", text)
    if not _MIGHT_HOLD_A_SECRET.search(text):
        return text
    for pattern, replacement in _SECRET_TEXT_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_value(value: Any, secrets: list[str], depth: int = 0) -> Any:
    """A logged value with secrets removed: strings, and mappings and sequences of them."""
    if depth > 8:
        return value
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, Mapping):
        return {
            key: (
                REDACTED
                if isinstance(key, str) and SECRET_KEY_PATTERN.search(key)
                else redact_value(item, secrets, depth + 1)
            )
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(item, secrets, depth + 1) for item in value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    # Anything else is rendered with str() or repr() later: redact that text now.
    return redact_text(str(value), secrets)


def redact_url(url: str) -> str:
    """``url`` without its password, and for http(s) without any user info (often a token)."""
    scheme = _SCHEME_URL.match(url)
    if not scheme:
        return url  # scp-like "git@host:" carries a user name, never a secret
    start = scheme.end()
    end = min((i for i in (url.find(c, start) for c in "/?#") if i != -1), default=len(url))
    userinfo, at, hostport = url[start:end].rpartition("@")
    if not at:
        return url
    user, has_password, _ = userinfo.partition(":")
    if scheme["scheme"].lower() in {"http", "https"}:
        redacted = REDACTED
    else:
        redacted = f"{user}:{REDACTED}" if has_password else user
    return f"{url[:start]}{redacted}@{hostport}{url[end:]}"
