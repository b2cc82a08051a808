"""Eidolon's version, as pyproject.toml declares it (the one place it is written)."""

from __future__ import annotations

import tomllib
from functools import cache

from django.conf import settings

UNKNOWN_VERSION = "0+unknown"


@cache
def eidolon_version() -> str:
    """``[project] version`` of pyproject.toml beside manage.py; UNKNOWN_VERSION without it."""
    try:
        project = tomllib.loads((settings.BASE_DIR / "pyproject.toml").read_text())["project"]
        return str(project["version"])
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
        return UNKNOWN_VERSION
