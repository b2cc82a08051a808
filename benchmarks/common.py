"""What the benchmark scripts share: scratch databases and the environment of their children."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child_environment(database_url: str, *, log_level: str = "ERROR") -> dict[str, str]:
    """A child process's environment: its own database, production settings, quiet logs."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_SETTINGS_MODULE": "eidolon_site.settings",
        "EIDOLON_SECRET_KEY": os.environ.get("EIDOLON_SECRET_KEY", "benchmark-only-" + "x" * 40),
        "EIDOLON_LOG_LEVEL": log_level,
        "PYTHONPATH": str(ROOT),
    }


def run_json_child(argv: list[str], env: dict[str, str]) -> dict:
    """Run ``argv`` to completion in a child process; return the JSON of its last output line."""
    output = subprocess.run(
        argv, cwd=ROOT, env=env, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


@contextlib.contextmanager
def scratch_database(postgres_server: str | None = None) -> Iterator[str]:
    """The URL of a fresh database, removed afterwards: a SQLite file, or a database created on
    ``postgres_server`` (``postgres://user@host:port/any-existing-database``)."""
    if postgres_server is None:
        with tempfile.TemporaryDirectory() as scratch:
            yield f"sqlite:///{scratch}/bench.sqlite3"
        return
    import psycopg

    admin_url = postgres_server.replace("postgres://", "postgresql://", 1)
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_server.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
