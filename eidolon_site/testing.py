"""Loaded by pytest before Django (``-p eidolon_site.testing`` in pyproject.toml).

Tests run with production settings (debug off), so they need a secret key; give them a
throwaway one unless the environment provides its own. Runs before settings are imported.
"""

import os

os.environ.setdefault("EIDOLON_SECRET_KEY", "test-only-secret-key-" + "x" * 40)
os.environ.setdefault("EIDOLON_LOG_FORMAT", "console")
