"""Real OS processes for tests: manage.py commands sharing the test database."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url_of_test_database(*, host: str | None = None, port: int | None = None) -> str:
    """A DATABASE_URL that points a subprocess at the database this test is using; on
    PostgreSQL, ``host`` and ``port`` (a proxy's, say) replace the server's own."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = quote(db.get("USER") or "postgres")
    password = f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else ""
    host = host or db.get("HOST") or "127.0.0.1"
    port = port or db.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


def subprocess_environment(**overrides: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTEST_", "DJANGO_SETTINGS_MODULE"))
    }
    env.update(
        DATABASE_URL=database_url_of_test_database(),
        EIDOLON_SECRET_KEY=settings.SECRET_KEY,
        EIDOLON_LOG_FORMAT="json",
        EIDOLON_DEBUG="false",
        PYTHONUNBUFFERED="1",
    )
    if settings.REDIS_URL:
        env["REDIS_URL"] = settings.REDIS_URL
    env.update(overrides)
    return env


def run_manage(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    """``manage.py *args`` run to completion in a child process, its output captured."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_until(predicate: Callable[[], T], *, timeout: float, every: float = 0.1) -> T:
    """Poll ``predicate`` until it returns something true, and return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(every)
    raise AssertionError(f"not within {timeout} s")


class ManagedProcess:
    """A child process whose output lines are collected as they arrive."""

    def __init__(self, args: Sequence[str], *, env: dict[str, str], name: str = "") -> None:
        self.name = name or args[0]
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.process = subprocess.Popen(
            list(args),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @classmethod
    def manage(cls, *args: str, env: dict[str, str]) -> ManagedProcess:
        return cls([sys.executable, "manage.py", *args], env=env, name=args[0])

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def output(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    def json_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.output() if line.strip()]

    def wait_for(self, predicate: Callable[[str], bool], *, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.output():
                if predicate(line):
                    return line
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(
            f"{self.name}: no matching line within {timeout}s; output:\n" + "\n".join(self.output())
        )

    def stop(self, *, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._reader.join(timeout=5)
        return self.process.returncode


def start_worker(env: dict[str, str], name: str, *, threads: int = 1) -> ManagedProcess:
    """``manage.py worker`` (running up to ``threads`` tasks at once, polling fast) under its
    own worker id."""
    return ManagedProcess(
        [
            sys.executable,
            "manage.py",
            "worker",
            "--no-reload",
            "--interval",
            "0.2",
            "--no-startup-delay",
            "--queue-name",
            "*",
            "--threads",
            str(threads),
            "--worker-id",
            name,
        ],
        env=env,
        name=name,
    )


FAKE_ANTHROPIC_LISTENING = "Fake Anthropic API listening on "


def start_fake_anthropic_command(*args: str, env: dict[str, str]) -> tuple[ManagedProcess, str]:
    """``manage.py fake_anthropic`` on a free port; returns it and its base URL once it listens."""
    process = ManagedProcess.manage("fake_anthropic", "--port=0", *args, env=env)
    try:
        line = process.wait_for(lambda line: line.startswith(FAKE_ANTHROPIC_LISTENING))
    except BaseException:
        process.stop()
        raise
    return process, line.removeprefix(FAKE_ANTHROPIC_LISTENING).strip()


def http_get(url: str, *, headers: dict[str, str] | None = None):
    """(status, headers) of a GET to a server of ours on loopback."""
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.headers


def wait_for_port(port: int, *, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def start_daphne(env: dict[str, str]) -> tuple[ManagedProcess, str]:
    """The ASGI server as production runs it; returns it and its base URL once it listens."""
    port = free_port()
    server = ManagedProcess(
        [
            sys.executable,
            "-m",
            "daphne",
            "--verbosity",
            "0",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "eidolon_site.asgi:application",
        ],
        env=env,
        name="web",
    )
    wait_for_port(port)
    return server, f"http://127.0.0.1:{port}"
