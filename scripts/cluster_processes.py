"""The processes of `scripts/cluster`: started detached (each in its own session, its output in
a log file), recorded in the state directory, probed for health and stopped by process group.
Standard library only.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from cluster_setup import HAPROXY_CONFIG, ROOT, Cluster, dev

WEB, LOAD_BALANCER, WORKER, MONITOR, FAKE_API = "web", "haproxy", "worker", "monitor", "fake-api"
WORKERS = 3
PROBE_TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class Service:
    """One recorded process: ``started`` is its start time in clock ticks since boot (from
    /proc), so that a pid the kernel has since given to another process is not taken for it."""

    name: str
    role: str
    pid: int
    started: str
    log: str
    port: int | None = None


def start_ticks(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[19]


def is_alive(service: Service) -> bool:
    try:
        os.kill(service.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{service.pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return True  # no /proc here: the signal test is all there is
    if state in ("Z", "X"):
        return False
    return not service.started or start_ticks(service.pid) == service.started


def service_commands(
    cluster: Cluster, *, haproxy: str, fake_api: bool
) -> list[tuple[str, str, list[str], int | None]]:
    """(name, role, command, port) of every process, in starting order."""
    python = str(dev.venv_python())
    specs: list[tuple[str, str, list[str], int | None]] = []
    if fake_api:
        fake = [python, "manage.py", "fake_anthropic", "--host", "127.0.0.1"]
        fake += ["--port", str(cluster.fake_port), "--responder", "review"]
        specs.append(("fake-api", FAKE_API, fake, cluster.fake_port))
    for index, port in enumerate(cluster.web_ports, start=1):
        web = dev.service_commands(host="127.0.0.1", port=port)["web"]
        specs.append((f"web{index}", WEB, web, port))
    specs.append(("haproxy", LOAD_BALANCER, [haproxy, "-db", "-f", str(HAPROXY_CONFIG)], None))
    commands = dev.service_commands(host="127.0.0.1", port=cluster.web_ports[0])
    for index in range(1, WORKERS + 1):
        specs.append((f"worker{index}", WORKER, commands["worker"], None))
    specs.append(("health-monitor", MONITOR, commands["health_monitor"], None))
    return specs


def start(
    cluster: Cluster, name: str, role: str, command: list[str], *, env: dict[str, str], port=None
) -> Service:
    """``command`` detached from us: its own session (so its group can be signalled as one and
    it outlives this script), output appended to its log."""
    log = cluster.log(name)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as output:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Service(name, role, process.pid, start_ticks(process.pid), str(log), port)


def save_state(cluster: Cluster, services: list[Service], **facts: object) -> None:
    cluster.state_dir.mkdir(parents=True, exist_ok=True)
    state = {**facts, "services": [asdict(service) for service in services]}
    temporary = cluster.state_file.with_suffix(".tmp")
    temporary.write_text(json.dumps(state, indent=2) + "\n")
    temporary.replace(cluster.state_file)


def load_state(cluster: Cluster) -> tuple[list[Service], dict]:
    """The recorded services and facts (URLs, Host header); none when nothing was started."""
    try:
        state = json.loads(cluster.state_file.read_text())
    except FileNotFoundError:
        return [], {}
    services = [Service(**entry) for entry in state.pop("services", [])]
    return services, state


def signal_group(service: Service, sig: int) -> None:
    if not is_alive(service):
        return
    try:
        os.killpg(service.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(service.pid, sig)


def stop(services: list[Service], *, timeout: float) -> list[str]:
    """SIGTERM to every process group, SIGKILL to those still alive after ``timeout``; the
    names of those that had to be killed."""
    for service in services:
        signal_group(service, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(map(is_alive, services)):
        time.sleep(0.1)
    stragglers = [service for service in services if is_alive(service)]
    for service in stragglers:
        signal_group(service, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(map(is_alive, stragglers)):
        time.sleep(0.05)
    return [service.name for service in stragglers]


def log_tail(service: Service, lines: int = 15) -> str:
    try:
        text = Path(service.log).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# Probes -----------------------------------------------------------------------------------------


def http_get(url: str, *, host: str) -> tuple[int | None, bytes]:
    """(status, body) of a GET, or (None, reason) when nothing answered in time."""
    request = urllib.request.Request(url, headers={"Host": host, "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_SECONDS) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (OSError, ValueError) as error:
        return None, str(error).encode()


def is_listening(port: int | None) -> bool:
    with socket.socket() as sock:
        sock.settimeout(PROBE_TIMEOUT_SECONDS)
        return port is not None and sock.connect_ex(("127.0.0.1", port)) == 0


def haproxy_servers(cluster: Cluster) -> dict[str, str]:
    """HAProxy's view of each web server (``{"web1": "UP", ...}``), from its stats CSV."""
    status, body = http_get(f"{cluster.stats_url};csv", host="127.0.0.1")
    if status != 200:
        return {}
    rows = csv.DictReader(io.StringIO(body.decode().removeprefix("# ")))
    return {
        row["svname"]: row["status"]
        for row in rows
        if row.get("pxname") == "web" and row.get("svname") not in ("FRONTEND", "BACKEND")
    }


def workers_heartbeat(cluster: Cluster, *, host: str) -> str:
    """What /health (through the load balancer) says of the workers' heartbeats."""
    status, body = http_get(f"{cluster.lb_url}/health", host=host)
    try:
        workers = json.loads(body)["components"]["workers"]
    except (ValueError, KeyError, TypeError):
        return f"/health answered {status}"
    return f"{workers['status']}: {workers['message']}"


def service_report(
    cluster: Cluster, service: Service, *, host: str, probes: dict[str, object]
) -> dict[str, object]:
    """Role, pid, alive and health of one service; ``healthy`` says whether it is fine."""
    alive = is_alive(service)
    report: dict[str, object] = {**asdict(service), "alive": alive, "health": "", "healthy": alive}
    if not alive:
        report["health"] = "dead"
    elif service.role == WEB:
        code, _ = http_get(f"http://127.0.0.1:{service.port}/health/ready", host=host)
        report["health"] = f"/health/ready {code or 'no answer'}"
        report["healthy"] = code == 200
    elif service.role == LOAD_BALANCER:
        servers = probes["haproxy"]
        assert isinstance(servers, dict)
        report["health"] = ", ".join(f"{name} {state}" for name, state in servers.items())
        report["health"] = report["health"] or "no stats"
        report["servers"] = servers
        report["healthy"] = len(servers) == len(cluster.web_ports) and all(
            state == "UP" for state in servers.values()
        )
    elif service.role == WORKER:
        report["health"] = probes["workers"]
    elif service.role == FAKE_API:
        listening = is_listening(service.port)
        report["health"] = f"{'listening' if listening else 'not listening'} on :{service.port}"
        report["healthy"] = listening
    return report


def status_report(cluster: Cluster) -> dict[str, object]:
    services, facts = load_state(cluster)
    host = str(facts.get("lb_host", "127.0.0.1"))
    probes: dict[str, object] = {}
    if services:
        probes = {
            "haproxy": haproxy_servers(cluster),
            "workers": workers_heartbeat(cluster, host=host),
        }
    reports = [service_report(cluster, s, host=host, probes=probes) for s in services]
    return {
        **facts,
        "running": any(report["alive"] for report in reports),
        "healthy": bool(reports) and all(report["healthy"] for report in reports),
        "state_dir": str(cluster.state_dir),
        "services": reports,
    }
