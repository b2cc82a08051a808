"""Structured logging: structlog for our events, and the same formatter for every
stdlib record (Django, daphne, the task worker), so each line has one format.

``EIDOLON_LOG_FORMAT=json`` prints one JSON object a line with ``timestamp``,
``level``, ``event`` and ``logger``; ``console`` prints the same fields for humans.
Secrets are redacted by the last processor before rendering, whatever the level.
"""

from __future__ import annotations

from typing import Any

import structlog

from reliability.redaction import REDACTED, SECRET_KEY_PATTERN, redact_value, secret_values


def redact_event(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: strip secrets from every key and value of the event."""
    secrets = secret_values()
    redacted: dict[str, Any] = {}
    for key, value in event_dict.items():
        if key.startswith("_"):  # structlog internals (_record, _from_structlog)
            redacted[key] = value
        elif key not in {"event", "exception"} and SECRET_KEY_PATTERN.search(key):
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
            redact_event,
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
            # django-health-check logs every failing check of every round with a traceback; the
            # health runner logs each status change once instead.
            "health_check": {**quiet, "level": "ERROR"},
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
