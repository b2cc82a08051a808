"""What the web drills share: HAProxy over the repository's deploy/haproxy.cfg, a redis-server
of the test's own, WebSocket clients that record every event and reconnect with ``after=``, and
the comparison of what each client saw with the stored events."""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from django.contrib.auth.models import User
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from analyses.models import Analysis, AnalysisEvent
from analyses.services import analysis_create, analysis_enqueue
from eidolon_site.accounts import token_create
from tests.anthropic_support import MODEL, generous_anthropic_limits, write_project
from tests.processes import ROOT, ManagedProcess, free_port, wait_for_port, wait_until

HAPROXY_CONFIG = ROOT / "deploy" / "haproxy.cfg"
CLOSE_FINISHED = 1000
CLOSE_GOING_AWAY = 1001


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or shutil.which("/usr/sbin/haproxy")


class Haproxy:
    """HAProxy started with deploy/haproxy.cfg unchanged, every address from the environment."""

    def __init__(self, *, web1: str, web2: str, env: dict[str, str]) -> None:
        self.port = free_port()
        self.stats_port = free_port()
        environment = {
            **env,
            "EIDOLON_LB_BIND": f"127.0.0.1:{self.port}",
            "EIDOLON_LB_STATS_BIND": f"127.0.0.1:{self.stats_port}",
            "EIDOLON_WEB1": web1,
            "EIDOLON_WEB2": web2,
            "EIDOLON_LB_HOST": "127.0.0.1",
        }
        binary = haproxy_binary()
        assert binary, "haproxy is not installed"
        # -db: stay in the foreground, so the process is ours to stop.
        self.process = ManagedProcess(
            [binary, "-db", "-f", str(HAPROXY_CONFIG)], env=environment, name="haproxy"
        )
        try:
            wait_for_port(self.port)
            wait_for_port(self.stats_port)
        except BaseException:
            self.process.stop()
            raise

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, dict[str, str]]:
        """The backend's servers from the stats CSV: {server name: row}."""
        url = f"http://127.0.0.1:{self.stats_port}/;csv"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode().removeprefix("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {
            row["svname"]: row
            for row in rows
            if row["pxname"] == "web" and row["svname"] not in {"FRONTEND", "BACKEND"}
        }

    def server_status(self, server: str) -> str:
        return self.stats()[server]["status"]

    def stop(self) -> None:
        self.process.stop()


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


class RedisServer:
    """A redis-server of the test's own (no persistence): stopped and started on one port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = redis_server_binary()
        assert binary, "redis-server is not installed"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_port(self.port)

    def kill(self) -> None:
        """Gone at once, with everything it held (groups, queued messages)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None


@dataclass
class RecordingClient:
    """A token client of one analysis's socket that records every event with its arrival time
    and, when its socket is lost, reconnects with ``after=<the last seq it saw>``."""

    name: str
    base_url: str
    analysis_id: int
    token: str
    seqs: list[int] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() of each event
    connections: int = 0
    opened: list[float] = field(default_factory=list)  # when each socket was opened
    lost: list[float] = field(default_factory=list)  # when a socket was lost
    failed_attempts: int = 0
    close_code: int | None = None

    @property
    def reconnects(self) -> int:
        return max(0, self.connections - 1)

    def events_between(self, start: float, end: float) -> int:
        return sum(1 for at in self.arrivals if start <= at < end)

    def longest_silence(self, start: float, end: float) -> float:
        """The longest time without an event between ``start`` and ``end``."""
        marks = [start, *(at for at in self.arrivals if start <= at < end), end]
        return max(later - earlier for earlier, later in itertools.pairwise(marks))

    async def run(self, *, within: float) -> None:
        deadline = time.monotonic() + within
        while self.close_code is None and time.monotonic() < deadline:
            after = self.seqs[-1] if self.seqs else 0
            url = f"{self.base_url}/ws/analyses/{self.analysis_id}/?after={after}"
            try:
                async with connect(
                    url,
                    additional_headers={"Authorization": f"Bearer {self.token}"},
                    open_timeout=5,
                ) as socket:
                    self.connections += 1
                    self.opened.append(time.monotonic())
                    async for text in socket:
                        self._record(json.loads(text))
                    self.close_code = socket.close_code
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
                if code is None or code == CLOSE_GOING_AWAY:
                    self.lost.append(time.monotonic())
                    await asyncio.sleep(0.1)
                else:
                    self.close_code = code
            except (OSError, InvalidHandshake, TimeoutError):
                self.failed_attempts += 1
                await asyncio.sleep(0.2)

    def _record(self, message: dict) -> None:
        if "seq" not in message:
            return  # the snapshot and keep-alives
        self.seqs.append(message["seq"])
        self.types.append(message["type"])
        self.arrivals.append(time.monotonic())

    def reconnect_delays(self) -> list[float]:
        """For each lost socket, the seconds until the next one was open."""
        return [
            min((at for at in self.opened if at > lost), default=float("nan")) - lost
            for lost in self.lost
        ]

    def summary(self) -> str:
        delays = ", ".join(f"{delay:.2f} s" for delay in self.reconnect_delays())
        return (
            f"{self.name}: {len(self.seqs)} events, {self.connections} connection(s), "
            f"{len(self.lost)} lost" + (f" (reopened after {delays})" if delays else "") + ", "
            f"{self.failed_attempts} failed attempt(s), close {self.close_code}"
        )


def stored_events(analysis_id: int) -> list[tuple[int, str]]:
    return list(
        AnalysisEvent.objects.filter(analysis_id=analysis_id)
        .order_by("seq")
        .values_list("seq", "type")
    )


def assert_saw_every_event_once(client: RecordingClient, stored: list[tuple[int, str]]) -> None:
    """Every stored event exactly once, in order, then the close of a finished analysis."""
    assert client.close_code == CLOSE_FINISHED, client.summary()
    seen = list(zip(client.seqs, client.types, strict=True))
    differs = [i for i, (a, b) in enumerate(zip(seen, stored, strict=False)) if a != b]
    first = differs[0] if differs else min(len(seen), len(stored))
    assert seen == stored, f"{client.summary()}; {len(stored)} stored; first difference at {first}"


def wait_for_status(
    lb: Haproxy, server: str, prefix: str, *, timeout: float, every: float = 0.05
) -> float:
    """Seconds until ``server``'s status in the stats CSV starts with ``prefix``."""
    started = time.monotonic()
    wait_until(lambda: lb.server_status(server).startswith(prefix), timeout=timeout, every=every)
    return time.monotonic() - started


def read_json(url: str) -> tuple[int, dict]:
    """(status, JSON body) of a GET, 5xx answers included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def log_events(process: ManagedProcess, event: str) -> list[dict]:
    """The JSON log lines of ``process`` whose ``event`` is ``event``."""
    found = []
    for line in process.output():
        if f'"{event}"' not in line:
            continue
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return [entry for entry in found if entry.get("event") == event]


def watcher_with_token(username: str) -> tuple[User, str]:
    """A user and a personal API token of theirs (the clients' credentials)."""
    user = User.objects.create_user(username, password="not-used-1")
    _, token = token_create(user=user, name="chaos-drill")
    return user, token


def slow_analysis(root: Path, owner: User, *, functions: int, concurrency: int) -> Analysis:
    """A queued AI analysis of ``functions`` generated functions (reviewed by the fake API)."""
    generous_anthropic_limits()
    analysis = analysis_create(
        source=str(write_project(root, functions=functions)),
        provider="static",
        concurrency=concurrency,
        allow_any_path=True,
        created_by=owner,
    )
    # Created as static (no API key in the test's own environment); the worker has one.
    Analysis.objects.filter(pk=analysis.pk).update(provider="anthropic", model=MODEL)
    analysis_enqueue(analysis)
    return analysis


def analysis_state(analysis_id: int) -> tuple[int, bool]:
    """(its last event's seq, whether it has finished)."""
    analysis = Analysis.objects.get(pk=analysis_id)
    return analysis.event_seq, analysis.is_finished
