"""What `scripts/cluster up` needs before it starts anything: the settings of the cluster (ports,
state directory), PostgreSQL, Redis, HAProxy, the virtualenv and the environment every process
shares. Standard library only; the virtualenv is made by scripts/dev.py, loaded, not copied.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
HAPROXY_CONFIG = ROOT / "deploy" / "haproxy.cfg"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/eidolon_cluster"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
FAKE_API_KEY = "fake-anthropic-key"


class SetupError(Exception):
    """Something the cluster needs is missing; the message says what to do."""


def load_dev() -> ModuleType:
    """scripts/dev.py as a module: the virtualenv, the installation and the service commands."""
    spec = importlib.util.spec_from_file_location("eidolon_dev", ROOT / "scripts" / "dev.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dev = load_dev()


@dataclass(frozen=True)
class Cluster:
    """Where the cluster listens and keeps its state (pids, logs, secret, metrics)."""

    state_dir: Path
    host: str
    lb_port: int
    web_ports: tuple[int, int]
    stats_port: int
    fake_port: int

    @property
    def lb_url(self) -> str:
        shown = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{shown}:{self.lb_port}"

    @property
    def stats_url(self) -> str:
        return f"http://127.0.0.1:{self.stats_port}/"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "processes.json"

    @property
    def metrics_dir(self) -> Path:
        return self.state_dir / "prometheus-multiproc"

    def log(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"


def _port(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SetupError(f"{name} must be a port number, not {raw!r}") from None


def cluster_from(env: dict[str, str]) -> Cluster:
    """The cluster's ports (the load balancer's, then web 1, web 2, stats, fake API, each
    overridable) and its state directory, from the environment."""
    base = _port(env, "EIDOLON_CLUSTER_PORT", 8000)
    state_dir = Path(env.get("EIDOLON_CLUSTER_DIR") or ROOT / "var" / "cluster")
    return Cluster(
        state_dir=state_dir.resolve(),
        host=env.get("EIDOLON_CLUSTER_HOST") or "127.0.0.1",
        lb_port=base,
        web_ports=(
            _port(env, "EIDOLON_CLUSTER_WEB1_PORT", base + 1),
            _port(env, "EIDOLON_CLUSTER_WEB2_PORT", base + 2),
        ),
        stats_port=_port(env, "EIDOLON_CLUSTER_STATS_PORT", base + 3),
        fake_port=_port(env, "EIDOLON_CLUSTER_FAKE_PORT", base + 4),
    )


def database_url(env: dict[str, str]) -> str:
    url = env.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    if not url.startswith(("postgres://", "postgresql://")):
        raise SetupError(
            f"the cluster needs PostgreSQL, not {url.split(':', 1)[0]}: its processes share "
            "the task queue, breakers and budgets through the database. Set "
            f"DATABASE_URL=postgres://... (default {DEFAULT_DATABASE_URL})."
        )
    return url


def redis_url(env: dict[str, str]) -> str:
    """REDIS_URL (or the machine's Redis), once it answers a PING."""
    url = env.get("REDIS_URL") or DEFAULT_REDIS_URL
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise SetupError(f"REDIS_URL must be redis://host:port/db, not {url!r}")
    address = (parts.hostname or "127.0.0.1", parts.port or 6379)
    try:
        with socket.create_connection(address, timeout=3) as sock:
            sock.sendall(b"PING\r\n")
            answer = sock.recv(64)
    except OSError as error:
        answer = str(error).encode()
    if not answer.startswith((b"+PONG", b"-NOAUTH")):
        raise SetupError(
            f"the cluster needs Redis (live progress between processes): nothing answers at "
            f"{address[0]}:{address[1]} ({answer.decode(errors='replace').strip()}). Start Redis "
            f"or set REDIS_URL (default {DEFAULT_REDIS_URL})."
        )
    return url


def haproxy_path() -> str | None:
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")


def ensure_haproxy() -> str:
    """Debian's HAProxy, installed with apt-get when missing and we are root."""
    if found := haproxy_path():
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SetupError(
            "HAProxy is not installed: `sudo apt-get install haproxy` (scripts/cluster installs "
            "it itself when run as root on Debian or Ubuntu)."
        )
    dev.say("installing HAProxy (apt-get install haproxy)")
    apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=apt_env)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "haproxy"],
        check=True,
        env=apt_env,
    )
    if found := haproxy_path():
        return found
    raise SetupError("apt-get installed haproxy, but no haproxy command is on the PATH")


# Run by the virtualenv's Python (psycopg is installed there, not here): connect to the server's
# maintenance database and create the cluster's database when it is missing.
_CREATE_DATABASE = """
import sys, psycopg
from psycopg import sql
server_url, name = sys.argv[1], sys.argv[2]
with psycopg.connect(server_url, autocommit=True, connect_timeout=5) as connection:
    if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        print(f"created database {name}")
"""


def ensure_database(url: str) -> None:
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name:
        raise SetupError(f"DATABASE_URL names no database: {url!r}")
    server_url = urlunsplit(parts._replace(path="/postgres", query=""))
    result = subprocess.run(
        [str(dev.venv_python()), "-c", _CREATE_DATABASE, server_url, name],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise SetupError(f"PostgreSQL at {parts.hostname}:{parts.port or 5432}: {reason}")
    if result.stdout.strip():
        dev.say(result.stdout.strip())


def secret_key(cluster: Cluster, env: dict[str, str]) -> str:
    """EIDOLON_SECRET_KEY, or one generated once into the state directory: every process must
    sign and check sessions and tokens with the same key."""
    if key := env.get("EIDOLON_SECRET_KEY", "").strip():
        return key
    path = cluster.state_dir / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(50) + "\n")
    return path.read_text().strip()


def load_balancer_host(env: dict[str, str]) -> str:
    """The Host header of HAProxy's readiness poll: one the web processes accept."""
    if host := env.get("EIDOLON_LB_HOST"):
        return host
    for allowed in env.get("EIDOLON_ALLOWED_HOSTS", "").split(","):
        allowed = allowed.strip().lstrip(".")
        if allowed and allowed != "*":
            return allowed
    return "127.0.0.1"


def process_environment(
    cluster: Cluster, *, base: dict[str, str], fake_api: bool
) -> dict[str, str]:
    """What every process of the cluster is started with (dev.py's development defaults, the
    shared database, Redis, secret and metrics directory, HAProxy's addresses)."""
    env = dict(base)
    env.update(
        DATABASE_URL=database_url(env),
        REDIS_URL=redis_url(env),
        PROMETHEUS_MULTIPROC_DIR=str(cluster.metrics_dir),
        EIDOLON_LB_BIND=f"{cluster.host}:{cluster.lb_port}",
        EIDOLON_LB_STATS_BIND=f"127.0.0.1:{cluster.stats_port}",
        EIDOLON_WEB1=f"127.0.0.1:{cluster.web_ports[0]}",
        EIDOLON_WEB2=f"127.0.0.1:{cluster.web_ports[1]}",
        EIDOLON_LB_HOST=load_balancer_host(env),
    )
    env["EIDOLON_SECRET_KEY"] = secret_key(cluster, env)
    if fake_api:
        env["ANTHROPIC_BASE_URL"] = f"http://127.0.0.1:{cluster.fake_port}"
        env["ANTHROPIC_API_KEY"] = FAKE_API_KEY
    return env


def ports_in_use(cluster: Cluster, *, fake_api: bool) -> list[int]:
    ports = [cluster.lb_port, *cluster.web_ports, cluster.stats_port]
    if fake_api:
        ports.append(cluster.fake_port)
    busy = []
    for port in ports:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                busy.append(port)
    return busy


def migrate_and_collect_static(env: dict[str, str]) -> None:
    """``migrate`` and ``collectstatic`` at once (the second needs no database), keeping their
    metrics to themselves: the metrics directory is the services'."""
    one_off = {key: value for key, value in env.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
    dev.say("applying database migrations and collecting static files")
    running = {
        name: subprocess.Popen(
            [str(dev.venv_python()), "manage.py", name, "--no-input", "--verbosity", "0"],
            cwd=ROOT,
            env=one_off,
        )
        for name in ("migrate", "collectstatic")
    }
    if failed := [name for name, process in running.items() if process.wait() != 0]:
        raise SetupError(f"manage.py {' and '.join(failed)} failed (its output is above)")


def prepare(cluster: Cluster, *, fake_api: bool) -> dict[str, str]:
    """Check and install what the cluster needs, migrate and collect static files once; the
    environment of its processes."""
    base = dev.development_environment()
    env = process_environment(cluster, base=base, fake_api=fake_api)
    if busy := ports_in_use(cluster, fake_api=fake_api):
        raise SetupError(
            f"port(s) {', '.join(map(str, busy))} already in use: choose others with "
            "EIDOLON_CLUSTER_PORT (and EIDOLON_CLUSTER_WEB1_PORT, ..._WEB2_PORT, ..._STATS_PORT, "
            "..._FAKE_PORT)"
        )
    ensure_haproxy()
    dev.install(dev.RUNTIME_REQUIREMENTS)
    ensure_database(env["DATABASE_URL"])
    migrate_and_collect_static(env)
    dev.fresh_metrics_directory(env)
    return env
