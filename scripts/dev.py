#!/usr/bin/env python3
"""Set up and run Eidolon with nothing but Python 3.11+ and git.

    python3 scripts/dev.py run     # set up, then serve the web app, a worker, the health monitor
    python3 scripts/dev.py test    # set up, then lint and run the whole test suite
    python3 scripts/dev.py setup   # only the set-up: virtualenv, install, migrate, static
    python3 scripts/dev.py serve   # only the serving part of `run` (already set up)
    python3 scripts/dev.py manage ARGS...   # manage.py in the same development environment

Standard library only: this file runs before anything is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("EIDOLON_VENV", ROOT / ".venv"))
RUNTIME_REQUIREMENTS = ROOT / "requirements.txt"
DEV_REQUIREMENTS = ROOT / "requirements-dev.txt"
MINIMUM_PYTHON = (3, 11)
STOP_GRACE_SECONDS = 10.0


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def venv_python() -> Path:
    scripts = "Scripts" if os.name == "nt" else "bin"
    return VENV / scripts / ("python.exe" if os.name == "nt" else "python")


def ensure_python_version() -> None:
    if sys.version_info < MINIMUM_PYTHON:
        wanted = ".".join(map(str, MINIMUM_PYTHON))
        sys.exit(f"Eidolon needs Python {wanted} or newer; this is {sys.version.split()[0]}.")


def ensure_virtualenv() -> None:
    if venv_python().exists():
        return
    say(f"creating virtualenv in {VENV}")
    venv.EnvBuilder(with_pip=True, clear=False).create(VENV)


def requirements_digest(requirements: Path) -> str:
    digest = hashlib.sha256()
    for path in (RUNTIME_REQUIREMENTS, requirements):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def ensure_requirements(requirements: Path) -> None:
    """pip install, skipped when the same requirements were installed before."""
    stamp = VENV / f".installed-{requirements.name}.sha256"
    wanted = requirements_digest(requirements)
    if stamp.exists() and stamp.read_text().strip() == wanted:
        return
    say(f"installing {requirements.name} (pinned)")
    subprocess.run(
        [
            str(venv_python()),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--quiet",
            "-r",
            str(requirements),
        ],
        check=True,
        cwd=ROOT,
    )
    stamp.write_text(wanted + "\n")


def manage(*args: str, env: dict[str, str] | None = None, check: bool = True) -> int:
    command = [str(venv_python()), "manage.py", *args]
    return subprocess.run(command, check=check, cwd=ROOT, env=env).returncode


def development_environment() -> dict[str, str]:
    """The embedded defaults, in development mode unless the caller chose otherwise; the web
    form may analyse the directories beside this checkout (and the checkout itself)."""
    env = dict(os.environ)
    env.setdefault("EIDOLON_DEBUG", "true")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("EIDOLON_SOURCE_ROOTS", str(ROOT.parent))
    return env


def install(requirements: Path) -> None:
    ensure_python_version()
    ensure_virtualenv()
    ensure_requirements(requirements)


def setup(*, requirements: Path, env: dict[str, str]) -> None:
    install(requirements)
    say("applying database migrations")
    manage("migrate", "--no-input", "--verbosity", "0", env=env)
    say("collecting static files")
    manage("collectstatic", "--no-input", "--verbosity", "0", env=env)


def service_commands(*, host: str, port: int) -> dict[str, list[str]]:
    python = str(venv_python())
    return {
        # daphne itself (not runserver) so that every line it prints is a structured log line;
        # requests are logged by django-structlog's middleware, not daphne's access log.
        "web": [
            python,
            "-m",
            "daphne",
            "--verbosity",
            "0",
            "--bind",
            host,
            "--port",
            str(port),
            "eidolon_site.asgi:application",
        ],
        # db_worker plus a heartbeat that the health checks read.
        "worker": [
            python,
            "manage.py",
            "worker",
            "--no-reload",
            "--interval",
            "0.5",
            "--queue-name",
            "*",
        ],
        # Samples every health check and keeps the history the admin shows.
        "health_monitor": [python, "manage.py", "health_monitor"],
    }


def fresh_metrics_directory(env: dict[str, str]) -> Path:
    """Prometheus multiprocess mode: every service process writes its counters and histograms
    into one directory that /metrics reads. Emptied at start, so totals start with the processes
    (files of processes gone since the last start would otherwise be counted forever)."""
    default = Path(env.get("EIDOLON_VAR_DIR") or ROOT / "var") / "prometheus-multiproc"
    directory = Path(env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(default)))
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    return directory


def serve(*, host: str, port: int, env: dict[str, str]) -> int:
    """Run every service process until one exits or we are told to stop; stop them all."""
    processes: dict[str, subprocess.Popen] = {}
    env = dict(env)
    say(f"metrics of every process in {fresh_metrics_directory(env)}")
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        for name, command in service_commands(host=host, port=port).items():
            processes[name] = subprocess.Popen(command, cwd=ROOT, env=env)
        say(f"Eidolon is running: http://{host}:{port}/  (admin: http://{host}:{port}/admin/)")
        say("create a user with: python3 scripts/dev.py manage createsuperuser")
        say(f"the web form may analyse directories under: {env.get('EIDOLON_SOURCE_ROOTS')}")
        say("press Ctrl+C to stop")
        exited: tuple[str, int] | None = None
        while not stopping and exited is None:
            for name, process in processes.items():
                if (code := process.poll()) is not None:
                    exited = (name, code)
                    break
            time.sleep(0.2)
        if exited is None:
            return 0
        say(f"{exited[0]} exited with status {exited[1]}; stopping the others")
        return exited[1] or 1
    finally:
        stop_all(processes)


def stop_all(processes: dict[str, subprocess.Popen]) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for process in processes.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_tests(pytest_args: list[str]) -> int:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    python = str(venv_python())
    say("ruff check")
    lint = subprocess.run([python, "-m", "ruff", "check", "."], cwd=ROOT, env=env)
    if lint.returncode != 0:
        return lint.returncode
    say("pytest")
    return subprocess.run([python, "-m", "pytest", *pytest_args], cwd=ROOT, env=env).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "serve"):
        command = commands.add_parser(name)
        command.add_argument("--host", default=os.environ.get("EIDOLON_HOST", "127.0.0.1"))
        command.add_argument(
            "--port", type=int, default=int(os.environ.get("EIDOLON_PORT", "8000"))
        )
    commands.add_parser("setup")
    test = commands.add_parser("test")
    test.add_argument("pytest_args", nargs=argparse.REMAINDER)
    manage_command = commands.add_parser("manage")
    manage_command.add_argument("manage_args", nargs=argparse.REMAINDER)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["test"]:
        # Everything after ``test`` is pytest's, options first included (``test -k logging``),
        # which argparse's REMAINDER would refuse.
        install(DEV_REQUIREMENTS)
        return run_tests(argv[1:])
    args = parser.parse_args(argv)

    env = development_environment()
    if args.command == "manage":
        if not venv_python().exists():
            sys.exit("No virtualenv yet: run `python3 scripts/dev.py setup` (or `run`) first.")
        return manage(*args.manage_args, env=env, check=False)
    if args.command == "setup":
        setup(requirements=RUNTIME_REQUIREMENTS, env=env)
        return 0
    if args.command == "run":
        setup(requirements=RUNTIME_REQUIREMENTS, env=env)
        return serve(host=args.host, port=args.port, env=env)
    return serve(host=args.host, port=args.port, env=env)  # "serve"


if __name__ == "__main__":
    sys.exit(main())
