"""What drills 3 and 5 break and measure: a TCP proxy in front of PostgreSQL that can be
partitioned (connections hang) or stopped hard (refused, sessions terminated; the proxy lives in
tests/tcp_proxy.py, which the health URL tests share), projects whose
functions name their analysis, and the fake API's request log counted per function."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

from django.db import connection

from reliability.fake_anthropic.messages import prompt_text


def write_tagged_project(root: Path, *, tag: str, functions: int) -> Path:
    """A codebase whose functions are named after ``tag`` (``<tag>_f<i>``), so that neither
    the result cache nor a request's header confuses one analysis's functions with another's."""
    root.mkdir(parents=True, exist_ok=True)
    per_module = 8
    for module in range((functions + per_module - 1) // per_module):
        lines = [f'"""Module {module} of {tag}."""\n']
        for index in range(module * per_module, min(functions, (module + 1) * per_module)):
            lines.append(
                f"\n\ndef {tag}_f{index}(value, limit={index}):\n"
                f'    """{tag}: function {index}."""\n'
                f"    if value > limit:\n"
                f"        return value - limit * {len(tag)}\n"
                f"    return value + {index}\n"
            )
        (root / f"{tag}_m{module}.py").write_text("".join(lines))
    return root


_FUNCTION_HEADER = re.compile(r"^Function: (?:\S+\.)?(\w+_f\d+) \(", re.MULTILINE)


def fake_log(base_url: str, *, since: int = 0) -> list[dict]:
    """The request log of a fake API running in another process (``GET /_fake/log``)."""
    with urllib.request.urlopen(f"{base_url}/_fake/log?since={since}", timeout=10) as response:
        return json.loads(response.read())


def requests_per_function(records: list[dict]) -> Counter[str]:
    """Review requests the fake received, per function name (``<tag>_f<i>``)."""
    counts: Counter[str] = Counter()
    for record in records:
        if match := _FUNCTION_HEADER.search(prompt_text(record.get("body"))):
            counts[match.group(1)] += 1
    return counts


class ReadinessPoller:
    """Polls ``/health/ready`` and ``/health/live`` every 100 ms in a thread, as a load
    balancer would (so the server's cached report is always fresh when an outage begins:
    the worst case), and keeps every answer with the time it was asked."""

    def __init__(self, base: str, *, every: float = 0.1) -> None:
        self.base = base
        self.every = every
        # (asked at, readiness answered at, ready status, live status)
        self.answers: list[tuple[float, float, int, int]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            asked = time.monotonic()
            ready = _status(self.base + "/health/ready")
            answered = time.monotonic()
            live = _status(self.base + "/health/live")
            with self._lock:
                self.answers.append((asked, answered, ready, live))
            self._stop.wait(max(0.0, self.every - (time.monotonic() - asked)))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def since(self, started: float) -> list[tuple[float, float, int, int]]:
        with self._lock:
            return [answer for answer in self.answers if answer[0] >= started]

    def wait_for_ready(self, status: int, *, after: float, within: float) -> float:
        """Seconds from ``after`` to the first readiness answer ``status`` (to a probe asked
        after it), counted to when the answer came."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if seen := [at for _, at, ready, _ in self.since(after) if ready == status]:
                return seen[0] - after
            time.sleep(0.05)
        raise AssertionError(f"/health/ready never answered {status} within {within} s")


def wait_for_a_fresh_report(base: str, *, within: float = 10.0) -> None:
    """Return just after the server has cached a new healthy readiness report (its
    ``timestamp`` changed): an outage starting now is noticed last, once that report expires."""
    deadline = time.monotonic() + within
    first = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/health/ready", timeout=5) as response:
                stamp = json.loads(response.read())["timestamp"]
        except OSError:
            stamp = None
        if first is None:
            first = stamp
        elif stamp is not None and stamp != first:
            return
        time.sleep(0.02)
    raise AssertionError(f"no new readiness report within {within} s")


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def other_sessions_of_test_database() -> list[tuple]:
    """(pid, state, query) of every other session on the test database."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, state, left(query, 80) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchall()
