"""``scripts/audit_dependencies.py``: real pip-audit runs, each against an OSV-compatible endpoint
on loopback (the network edge), so the script's three verdicts are shown without depending on
``api.osv.dev``: a vulnerable pin fails, an unreachable service is said loudly and never passes
as "no known vulnerabilities", and a clean answer says how many packages were audited. One more
run takes its answer from PyPI's project JSON (reachable here; skipped when it is not), for a
package whose latest release carries known advisories."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "audit_dependencies.py"
# PyPI's advisories for pycrypto 2.6.1 (its last release), as https://pypi.org/pypi/pycrypto/json
# listed them on 2026-11-30, in OSV's form.
PYCRYPTO_ADVISORIES = [
    ("PYSEC-2017-94", ["CVE-2013-7459", "GHSA-cq27-v7xp-c356"]),
    ("PYSEC-2018-97", ["CVE-2018-6594", "GHSA-6528-wvf6-f6qg"]),
]

Lookup = Callable[[str, str], list[dict]]  # (name, version) -> OSV vulns


def osv_vuln(name: str, vuln_id: str, aliases: list[str], fixed: list[str]) -> dict:
    events = [{"introduced": "0"}, *({"fixed": version} for version in fixed)]
    return {
        "id": vuln_id,
        "aliases": aliases,
        "summary": f"advisory {vuln_id}",
        "affected": [
            {
                "package": {"name": name, "ecosystem": "PyPI"},
                "ranges": [{"type": "ECOSYSTEM", "events": events}],
            }
        ],
    }


def recorded(name: str, version: str) -> list[dict]:
    if (name, version) != ("pycrypto", "2.6.1"):
        return []
    return [osv_vuln(name, vuln_id, aliases, []) for vuln_id, aliases in PYCRYPTO_ADVISORIES]


def from_pypi_project_json(name: str, version: str) -> list[dict]:
    """PyPI's project JSON lists the advisories of the latest release only: answer for it."""
    with urllib.request.urlopen(f"https://pypi.org/pypi/{name}/json", timeout=15) as answer:
        project = json.load(answer)
    if project["info"]["version"] != version:
        raise LookupError(f"{name} {version} is not the latest release")
    return [
        osv_vuln(name, vuln["id"], vuln.get("aliases", []), vuln.get("fixed_in", []))
        for vuln in project.get("vulnerabilities", [])
    ]


@contextmanager
def osv_endpoint(lookup: Lookup) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            try:
                vulns = lookup(query["package"]["name"], query["version"])
            except LookupError:
                self.send_error(404)
                return
            body = json.dumps({"vulns": vulns} if vulns else {}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/query"
    finally:
        server.shutdown()
        server.server_close()


def audit(tmp_path: Path, pins: list[str], *extra: str) -> subprocess.CompletedProcess:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("".join(f"{pin}\n" for pin in pins))
    command = [sys.executable, str(SCRIPT), "-r", str(requirements), "--service", "osv", *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_a_vulnerable_pin_fails_the_audit(tmp_path):
    with osv_endpoint(recorded) as url:
        run = audit(tmp_path, ["pycrypto==2.6.1", "six==1.17.0"], "--osv-url", url)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "pip-audit: VULNERABLE pycrypto 2.6.1: PYSEC-2017-94" in run.stdout
    assert "CVE-2018-6594" in run.stdout
    assert "1 of 2 packages have known vulnerabilities" in run.stdout


def test_clean_pins_say_how_many_were_audited(tmp_path):
    with osv_endpoint(recorded) as url:
        run = audit(tmp_path, ["six==1.17.0", "Django==5.2.19"], "--osv-url", url)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip() == "pip-audit: 2 packages audited, no known vulnerabilities"


@pytest.mark.parametrize("require_complete", [False, True])
def test_an_unreachable_service_is_said_loudly_and_never_passes_as_clean(
    tmp_path, require_complete
):
    closed = free_port()  # nothing listens there
    extra = ["--osv-url", f"http://127.0.0.1:{closed}/v1/query", "--timeout", "5"]
    run = audit(
        tmp_path,
        ["six==1.17.0", "Django==5.2.19"],
        *extra,
        *(["--require-complete"] if require_complete else []),
    )
    assert run.returncode == (2 if require_complete else 0), run.stdout + run.stderr
    assert "pip-audit: could not audit 2 of 2 packages: vulnerability service unreachable" in (
        run.stdout
    )
    assert "no known vulnerabilities" not in run.stdout.lower()


@pytest.fixture
def pypi_reachable():
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
    except OSError:
        pytest.skip("pypi.org is not reachable from here")


def test_pypi_advisories_of_a_latest_release_fail_the_audit(tmp_path, pypi_reachable):
    with osv_endpoint(from_pypi_project_json) as url:
        run = audit(tmp_path, ["pycrypto==2.6.1"], "--osv-url", url)
    print(run.stdout)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "pip-audit: VULNERABLE pycrypto 2.6.1" in run.stdout
    assert "CVE-2013-7459" in run.stdout
