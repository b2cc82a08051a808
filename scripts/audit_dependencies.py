#!/usr/bin/env python3
"""pip-audit over the pinned requirements, honest about what it could not audit.

    python scripts/audit_dependencies.py           # requirements.txt + requirements-dev.txt
    python scripts/audit_dependencies.py -r requirements.txt --service osv --osv-url URL
    python scripts/audit_dependencies.py --require-complete   # fail when a package is unaudited

pip-audit alone says "No known vulnerabilities found" even when its vulnerability service answered
for none of the packages (PyPI's per-version JSON, ``/pypi/<name>/<version>/json``, answers 404
behind some proxies; ``api.osv.dev`` may be unreachable), and its exit status 1 means both
"vulnerable" and "crashed". So this runs it (``--no-deps --disable-pip``: every pin is audited as
written, nothing is installed) with JSON output, asks each service in turn about the packages the
previous ones could not answer for, and decides itself:

* exit 1: a pinned package has a known vulnerability (each printed with its ids and fixes);
* exit 0: "pip-audit: N packages audited, no known vulnerabilities";
* exit 0, or 2 with ``--require-complete`` (or ``EIDOLON_AUDIT_REQUIRE_COMPLETE=1``): "pip-audit:
  could not audit N of M packages: vulnerability service unreachable ...", and never "no known
  vulnerabilities" while any package is unaudited.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REQUIREMENTS = [ROOT / "requirements.txt", ROOT / "requirements-dev.txt"]
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(?P<version>[^\s;#]+)")
RUN_TIMEOUT_SECONDS = 600


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(paths: list[Path]) -> dict[str, str]:
    """``{canonical name: "name==version"}`` from requirement files, following ``-r`` includes.
    A requirement that is not an exact pin is an error: only pins can be audited as written."""
    pins: dict[str, str] = {}
    for path in paths:
        for raw in path.read_text().splitlines():
            line = raw.split(" #", 1)[0].strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith(("-r ", "--requirement ")):
                pins.update(read_pins([path.parent / line.split(maxsplit=1)[1]]))
                continue
            match = PIN.match(line)
            if match is None:
                sys.exit(f"{path}: {line!r} is not pinned with ==; pin it to audit it")
            pins[canonical(match["name"])] = f"{match['name']}=={match['version']}"
    return pins


@dataclass
class Audit:
    audited: set[str] = field(default_factory=set)
    vulnerable: dict[str, list[str]] = field(default_factory=dict)  # name -> lines to print
    unaudited: dict[str, str] = field(default_factory=dict)  # name -> why


def pip_audit(pins: dict[str, str], *, service: str, osv_url: str | None, timeout: int) -> Audit:
    """One pip-audit run over ``pins`` against ``service``."""
    audit = Audit()
    with tempfile.TemporaryDirectory(prefix="eidolon-audit-") as scratch:
        requirements, report = Path(scratch, "requirements.txt"), Path(scratch, "report.json")
        requirements.write_text("".join(f"{pin}\n" for pin in pins.values()))
        command = [
            sys.executable, "-m", "pip_audit", "-r", str(requirements), "--no-deps",
            "--disable-pip", "--progress-spinner", "off", "-f", "json", "-o", str(report),
            "-s", service, "--timeout", str(timeout),
            *(["--osv-url", osv_url] if osv_url and service == "osv" else []),
        ]  # fmt: skip
        try:
            run = subprocess.run(
                command, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS
            )
            failure = _last_line(run.stderr)
        except subprocess.TimeoutExpired:
            failure = f"no answer within {RUN_TIMEOUT_SECONDS} s"
        document = (
            json.loads(report.read_text()) if report.exists() and report.stat().st_size else None
        )
    if document is None:  # pip-audit stopped before writing a report: the service failed
        audit.unaudited = {name: f"{service}: {failure}" for name in pins}
        return audit
    for dependency in document["dependencies"]:
        name = canonical(dependency["name"])
        if "skip_reason" in dependency:
            audit.unaudited[name] = f"{service}: {dependency['skip_reason']}"
            continue
        audit.audited.add(name)
        if dependency.get("vulns"):
            audit.vulnerable[name] = [
                f"{dependency['name']} {dependency['version']}: {vuln['id']}"
                f" ({', '.join(vuln.get('aliases', [])) or 'no aliases'});"
                f" fixed in {', '.join(vuln.get('fix_versions', [])) or 'no release yet'}"
                for vuln in dependency["vulns"]
            ]
    for name in pins.keys() - audit.audited - audit.unaudited.keys():
        audit.unaudited[name] = f"{service}: not in pip-audit's report"
    return audit


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else "pip-audit failed without a message")[:200]


def audit_pins(pins: dict[str, str], *, services: list[str], osv_url: str | None, timeout: int):
    """Each service in turn, over the packages the services before it could not answer for."""
    total = Audit()
    remaining = dict(pins)
    for service in services:
        if not remaining:
            break
        audit = pip_audit(remaining, service=service, osv_url=osv_url, timeout=timeout)
        total.audited |= audit.audited
        total.vulnerable |= audit.vulnerable
        for name, why in audit.unaudited.items():
            total.unaudited[name] = (
                f"{total.unaudited[name]}; {why}" if name in total.unaudited else why
            )
        remaining = {name: pin for name, pin in remaining.items() if name in audit.unaudited}
    total.unaudited = {name: why for name, why in total.unaudited.items() if name in remaining}
    return total


def report(audit: Audit, *, packages: int, require_complete: bool) -> int:
    for lines in audit.vulnerable.values():
        for line in lines:
            print(f"pip-audit: VULNERABLE {line}")
    if audit.unaudited:
        print(
            f"pip-audit: could not audit {len(audit.unaudited)} of {packages} packages: "
            "vulnerability service unreachable or without an answer for them"
        )
        reasons: dict[str, int] = {}
        for whys in audit.unaudited.values():
            for why in whys.split("; "):
                key = re.sub(r": [^:]*\([^)]*\)$", "", why)  # drop a skip's "name (version)"
                reasons[key] = reasons.get(key, 0) + 1
        for why, count in sorted(reasons.items()):
            print(f"pip-audit:   {count} x {why}")
        print(f"pip-audit: unaudited: {', '.join(sorted(audit.unaudited))}")
    if audit.vulnerable:
        print(
            f"pip-audit: {len(audit.vulnerable)} of {packages} packages have known vulnerabilities"
        )
        return 1
    if audit.unaudited:
        return 2 if require_complete else 0
    print(f"pip-audit: {len(audit.audited)} packages audited, no known vulnerabilities")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("-r", "--requirement", action="append", type=Path, dest="requirements")
    parser.add_argument(
        "--service", action="append", choices=["pypi", "osv", "esms"], dest="services",
        help="vulnerability services to ask, in order (default: pypi, then osv)",
    )  # fmt: skip
    parser.add_argument("--osv-url", help="an OSV-compatible /v1/query endpoint")
    parser.add_argument("--timeout", type=int, default=10, help="seconds per request")
    parser.add_argument(
        "--require-complete", action="store_true",
        default=os.environ.get("EIDOLON_AUDIT_REQUIRE_COMPLETE") == "1",
        help="exit 2 when any package could not be audited",
    )  # fmt: skip
    args = parser.parse_args(argv)
    pins = read_pins(args.requirements or DEFAULT_REQUIREMENTS)
    audit = audit_pins(
        pins, services=args.services or ["pypi", "osv"], osv_url=args.osv_url, timeout=args.timeout
    )
    return report(audit, packages=len(pins), require_complete=args.require_complete)


if __name__ == "__main__":
    sys.exit(main())
