"""Structured logging: structlog for our events, and the same formatter for every
stdlib record (Django, daphne, the task worker), so each line has one format.

``EIDOLON_LOG_FORMAT=json`` prints one JSON object a line with ``timestamp``,
``level``, ``event`` and ``logger``; ``console`` prints the same fields for humans.
Secrets are redacted by the last processor before rendering, whatever the level.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import structlog

REDACTED = "[REDACTED]"

# Keys whose values are secrets wherever they appear in an event.
_SECRET_KEY_PATTERN = re.compile(
    r"(^|[_\-])(pass(word|wd)?|secret(_key)?|token|api[_\-]?key|apikey|authorization"
    r"|cookies?|sessionid|session_key|csrf(token)?|credentials?)$",
    re.IGNORECASE,
)
# Secrets embedded in free text (messages, exception text, tracebacks): (pattern, replacement).
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
)
# Environment variables whose values never reach a log line.
SECRET_ENVIRONMENT_VARIABLES = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "EIDOLON_SECRET_KEY",
)
_MIN_SECRET_LENGTH = 6


def _secret_values() -> list[str]:
    # Read at each call: a key set after start-up (tests, reloads) is still redacted.
    return [
        value
        for name in SECRET_ENVIRONMENT_VARIABLES
        if len(value := os.environ.get(name, "")) >= _MIN_SECRET_LENGTH
    ]


def redact_text(text: str, secret_values: Iterable[str] | None = None) -> str:
    for value in _secret_values() if secret_values is None else secret_values:
        text = text.replace(value, REDACTED)
    for pattern, replacement in _SECRET_TEXT_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_value(value: Any, secret_values: list[str], depth: int = 0) -> Any:
    if depth > 8:
        return value
    if isinstance(value, str):
        return redact_text(value, secret_values)
    if isinstance(value, Mapping):
        return {
            key: (
                REDACTED
                if isinstance(key, str) and _SECRET_KEY_PATTERN.search(key)
                else redact_value(item, secret_values, depth + 1)
            )
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(item, secret_values, depth + 1) for item in value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    # Anything else is rendered with str() or repr() later: redact that text now.
    return redact_text(str(value), secret_values)


def redact_secrets(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: strip secrets from every key and value of the event."""
    secrets = _secret_values()
    redacted: dict[str, Any] = {}
    for key, value in event_dict.items():
        if key.startswith("_"):  # structlog internals (_record, _from_structlog)
            redacted[key] = value
        elif key not in {"event", "exception"} and _SECRET_KEY_PATTERN.search(key):
            redacted[key] = REDACTED
        else:
            redacted[key] = redact_value(value, secrets)
    return redacted


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        structlog.processors.StackInfoRenderer(),
    ]


def _renderer(log_format: str) -> Any:
    if log_format == "json":
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=False)


def build_logging_config(*, log_format: str, log_level: str) -> dict[str, Any]:
    """The ``LOGGING`` dict: one root handler whose formatter is structlog's."""
    formatter = {
        "()": structlog.stdlib.ProcessorFormatter,
        "foreign_pre_chain": _shared_processors(),
        "processors": [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_secrets,
            _renderer(log_format),
        ],
    }
    quiet = {"handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"structlog": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "structlog",
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"handlers": ["default"], "level": log_level},
        # Django's default config gives these loggers handlers of their own;
        # route them through the root handler instead.
        "loggers": {
            "django": {**quiet, "level": log_level},
            "django.server": quiet,
            "django.channels.server": quiet,
            "daphne": quiet,
            "django.db.backends": {**quiet, "level": "INFO"},
            "asyncio": {**quiet, "level": "WARNING"},
            "httpx": {**quiet, "level": "WARNING"},
            "httpx2": {**quiet, "level": "WARNING"},
            "httpcore": {**quiet, "level": "WARNING"},
            "httpcore2": {**quiet, "level": "WARNING"},
            "anthropic": {**quiet, "level": "WARNING"},
        },
    }


def configure_structlog(*, log_format: str) -> None:
    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def bind_context(**values: Any) -> None:
    """Bind values (``analysis_id``, ``breaker``...) to every later log line of this context."""
    structlog.contextvars.bind_contextvars(**values)


def unbind_context(*keys: str) -> None:
    structlog.contextvars.unbind_contextvars(*keys)


def clear_context() -> None:
    structlog.contextvars.clear_contextvars()


bound_context = structlog.contextvars.bound_contextvars
