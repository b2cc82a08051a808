"""Loaded by pytest before Django (``-p eidolon_site.testing`` in pyproject.toml).

Tests run with production settings (debug off), so they need a secret key and collected
static files; give them throwaway ones unless the environment provides its own.
"""

import os
from pathlib import Path

_VAR = Path(__file__).resolve().parent.parent / "var"

os.environ.setdefault("EIDOLON_SECRET_KEY", "test-only-secret-key-" + "x" * 40)
os.environ.setdefault("EIDOLON_LOG_FORMAT", "console")
os.environ.setdefault("EIDOLON_STATIC_ROOT", str(_VAR / "test-static"))
# Tests start from empty reliability tables and make the rows they need (tests of the first
# start turn it on).
os.environ.setdefault("EIDOLON_CREATE_CONTROLS_ON_MIGRATE", "false")
