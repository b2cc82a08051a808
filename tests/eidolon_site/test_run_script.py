"""The README's run command serves the web app, runs a worker that executes tasks (and reports
a heartbeat) and the health monitor that records the health history."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from reliability.models import HealthSample, WorkerHeartbeat
from tests.processes import (
    ROOT,
    ManagedProcess,
    free_port,
    run_manage,
    subprocess_environment,
    wait_for_port,
)

ENQUEUE_AND_WAIT = """
import time
from django_tasks import TaskResultStatus
from eidolon_site.tasks import ping
result = ping.enqueue("hello-from-shell")
deadline = time.monotonic() + 30
while result.status != TaskResultStatus.SUCCESSFUL and time.monotonic() < deadline:
    time.sleep(0.1)
    result.refresh()
print("TASK", result.status, result.return_value)
"""


@pytest.mark.django_db(transaction=True)
class TestServe:
    def test_serve__web_answers_and_worker_runs_a_task_enqueued_from_the_shell(self):
        port = free_port()
        env = subprocess_environment(EIDOLON_VENV=sys.prefix)
        server = ManagedProcess(
            [sys.executable, "scripts/dev.py", "serve", "--port", str(port)], env=env, name="serve"
        )
        try:
            wait_for_port(port)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
                home = response.read().decode()
            url = f"http://127.0.0.1:{port}/health/ready"
            with urllib.request.urlopen(url, timeout=10) as response:
                ready = json.loads(response.read())
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not (
                HealthSample.objects.filter(component__name="database").exists()
                and WorkerHeartbeat.objects.filter(stopped_at__isnull=True).exists()
            ):
                time.sleep(0.2)
            monitored = HealthSample.objects.filter(component__name="database").exists()
            beating = WorkerHeartbeat.objects.filter(stopped_at__isnull=True).count()
            shell = run_manage("shell", "-c", ENQUEUE_AND_WAIT, env=env)
        finally:
            server.process.send_signal(signal.SIGTERM)
            exit_code = server.process.wait(timeout=30)
            server.stop()

        assert "Eidolon" in home and "/admin/" in home
        assert ready["ready"] is True, ready
        assert monitored, "the health monitor recorded no sample"
        assert beating == 1, "the worker sent no heartbeat"
        assert WorkerHeartbeat.objects.get().stopped_at is not None  # stopped cleanly
        assert "TASK SUCCESSFUL" in shell.stdout, shell.stdout + shell.stderr
        assert "hello-from-shell" in shell.stdout
        assert any("Eidolon is running" in line for line in server.output())
        assert exit_code == 0
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, "web server still listening"


class TestManage:
    def test_manage__runs_manage_py_in_the_development_environment(self, tmp_path):
        env = {
            key: value
            for key, value in subprocess_environment(EIDOLON_VENV=sys.prefix).items()
            if key not in ("EIDOLON_SECRET_KEY", "EIDOLON_DEBUG")
        }
        env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'dev.sqlite3'}"
        bare = run_manage("check", env=env)
        through_dev = subprocess.run(
            [sys.executable, "scripts/dev.py", "manage", "check"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bare.returncode != 0 and "EIDOLON_SECRET_KEY must be set" in bare.stderr
        assert through_dev.returncode == 0, through_dev.stderr
        assert "no issues" in through_dev.stdout
