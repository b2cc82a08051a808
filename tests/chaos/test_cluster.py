"""`scripts/cluster up|status|down` as a user runs it: real processes behind Debian's HAProxy,
on the test's PostgreSQL database and Redis."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from analyses.models import Analysis
from tests.anthropic_support import write_project
from tests.api_support import caller
from tests.processes import ROOT, free_port, subprocess_environment, wait_until

SCRIPT = ROOT / "scripts" / "cluster"
ROLES = {"web": 2, "haproxy": 1, "worker": 3, "monitor": 1, "fake-api": 1}


def cluster(*args: str, env: dict[str, str], timeout: float = 150) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def request(url: str, *, data: object = None, token: str = "") -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = None if data is None else json.dumps(data).encode()
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, data=body, headers=headers), timeout=10
        ) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def sessions_per_web_server(stats_port: int) -> dict[str, int]:
    """HAProxy's count of the sessions it sent to each web server (health checks excluded)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{stats_port}/;csv", timeout=5) as response:
        rows = csv.DictReader(io.StringIO(response.read().decode().removeprefix("# ")))
        return {
            row["svname"]: int(row["stot"])
            for row in rows
            if row["pxname"] == "web" and row["svname"] in ("web1", "web2")
        }


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def process_environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(entry.split("=", 1) for entry in raw.decode().split("\0") if "=" in entry)


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def cluster_env(tmp_path):
    source_root = tmp_path / "sources"
    (source_root / "project").mkdir(parents=True)
    ports = {
        "EIDOLON_CLUSTER_PORT": free_port(),
        "EIDOLON_CLUSTER_WEB1_PORT": free_port(),
        "EIDOLON_CLUSTER_WEB2_PORT": free_port(),
        "EIDOLON_CLUSTER_STATS_PORT": free_port(),
        "EIDOLON_CLUSTER_FAKE_PORT": free_port(),
    }
    env = subprocess_environment(
        EIDOLON_SECRET_KEY="",  # the script generates one for all its processes
        EIDOLON_VENV=sys.prefix,  # the virtualenv running the tests: set up already
        EIDOLON_CLUSTER_DIR=str(tmp_path / "cluster"),
        EIDOLON_SOURCE_ROOTS=str(source_root),
        EIDOLON_WORKER_HEARTBEAT_SECONDS="1",
        **{name: str(port) for name, port in ports.items()},
    )
    yield env, ports, source_root / "project"
    # Whatever happened above, nothing started here outlives the test.
    cluster("down", env=env, timeout=60)


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.haproxy
@pytest.mark.timeout(180)
class TestClusterScript:
    def test_up_status_down__serves_through_haproxy_and_runs_analyses(self, cluster_env):
        env, ports, project = cluster_env
        lb = f"http://127.0.0.1:{ports['EIDOLON_CLUSTER_PORT']}"

        clock = time.monotonic()
        started = cluster("up", "--fake-api", env=env)
        figures = {"up": time.monotonic() - clock}
        assert started.returncode == 0, started.stdout + started.stderr
        assert lb in started.stdout

        status = cluster("status", "--json", env=env)
        report = json.loads(status.stdout)
        assert status.returncode == 0, status.stdout
        services = {service["name"]: service for service in report["services"]}
        roles = {role: sum(s["role"] == role for s in services.values()) for role in ROLES}
        assert roles == ROLES
        assert all(s["alive"] and s["pid"] > 0 for s in services.values())
        assert services["haproxy"]["servers"] == {"web1": "UP", "web2": "UP"}
        assert services["fake-api"]["health"].startswith("listening")

        # One generated secret for all; Claude's provider pointed at the fake API.
        secret = (Path(env["EIDOLON_CLUSTER_DIR"]) / "secret_key").read_text().strip()
        environments = [process_environment(s["pid"]) for s in services.values()]
        assert {e["EIDOLON_SECRET_KEY"] for e in environments} == {secret}
        fake_url = f"http://127.0.0.1:{ports['EIDOLON_CLUSTER_FAKE_PORT']}"
        assert {e["ANTHROPIC_BASE_URL"] for e in environments} == {fake_url}

        again = cluster("up", env=env)
        assert again.returncode == 0 and "already up" in again.stdout
        unchanged = json.loads(cluster("status", "--json", env=env).stdout)["services"]
        assert [s["pid"] for s in unchanged] == [s["pid"] for s in report["services"]]

        # Through the load balancer: ready, and both web processes serve (round robin).
        before = sessions_per_web_server(ports["EIDOLON_CLUSTER_STATS_PORT"])
        assert [request(f"{lb}/health/ready")[0] for _ in range(6)] == [200] * 6
        after = sessions_per_web_server(ports["EIDOLON_CLUSTER_STATS_PORT"])
        assert all(after[name] > before[name] for name in ("web1", "web2")), (before, after)
        # /metrics is scraped from each web process, never through the balancer.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{lb}/metrics", timeout=10)
        assert refused.value.code == 404

        # An analysis submitted through the JSON API is run by the cluster's workers.
        write_project(project, functions=12)
        token = caller("cluster-user").token
        clock = time.monotonic()
        code, submitted = request(
            f"{lb}/api/analyses", data={"source": str(project), "provider": "static"}, token=token
        )
        assert code == 202, submitted
        finished = wait_until(
            lambda: (a := Analysis.objects.get(pk=submitted["id"])).is_finished and a,
            timeout=90,
            every=0.5,
        )
        figures["analysis of 12 functions"] = time.monotonic() - clock
        code, seen = request(f"{lb}/api/analyses/{submitted['id']}", token=token)
        assert (code, seen["status"]) == (200, "completed"), seen
        assert finished.functions_analyzed == finished.functions_total > 0

        # A killed worker: status names it dead and fails.
        os.kill(services["worker2"]["pid"], signal.SIGKILL)
        wait_until(lambda: not pid_alive(services["worker2"]["pid"]), timeout=10)
        status = cluster("status", env=env)
        assert status.returncode == 1, status.stdout
        worker2_line = next(line for line in status.stdout.splitlines() if "worker2" in line)
        assert "dead" in worker2_line

        clock = time.monotonic()
        stopped = cluster("down", env=env, timeout=60)
        figures["down"] = time.monotonic() - clock
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert [name for name, s in services.items() if pid_alive(s["pid"])] == []
        assert [port for port in ports.values() if listening(port)] == []
        assert not (Path(env["EIDOLON_CLUSTER_DIR"]) / "processes.json").exists()

        again = cluster("down", env=env)
        assert (again.returncode, again.stdout.strip()) == (0, "not running")
        print("scripts/cluster:", ", ".join(f"{name} {s:.1f} s" for name, s in figures.items()))


@pytest.mark.timeout(60)
class TestRefusals:
    def test_up_on_sqlite__refused_with_a_clear_message(self, tmp_path):
        env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "EIDOLON_CLUSTER_DIR": str(tmp_path / "cluster"),
        }
        refused = cluster("up", env=env, timeout=30)
        assert refused.returncode == 2
        assert "needs PostgreSQL" in refused.stderr
        assert not (tmp_path / "cluster" / "processes.json").exists()

    def test_up_without_redis__refused_with_a_clear_message(self, tmp_path):
        env = {
            **os.environ,
            "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/unused",
            "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            "EIDOLON_CLUSTER_DIR": str(tmp_path / "cluster"),
        }
        refused = cluster("up", env=env, timeout=30)
        assert refused.returncode == 2
        assert "needs Redis" in refused.stderr
