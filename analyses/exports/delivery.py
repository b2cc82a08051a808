"""What ``manage.py analyze`` was asked to export, checked before the analysis runs (bad input
costs nothing), and the writing of the export to a file."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from analyses.exports import EXPORT_FORMATS as FORMATS
from analyses.findings import SEVERITIES

STDOUT = "-"


@dataclass(frozen=True)
class ExportPlan:
    format: str | None = None  # None: no export
    output: Path | None = None  # None with a format: stdout
    fail_on: str | None = None  # the gate's severity, or None for no gate

    @property
    def to_stdout(self) -> bool:
        return self.format is not None and self.output is None


def export_plan(
    *, format: str | None, output: str | None, fail_on: str | None, as_json: bool
) -> ExportPlan:
    """The plan, or ValueError with a one-line reason for a combination that cannot work."""
    if format is not None and format not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, not {format!r}")
    if fail_on is not None and fail_on not in SEVERITIES:
        raise ValueError(f"--fail-on must be one of {', '.join(SEVERITIES)}, not {fail_on!r}")
    if output is not None and format is None:
        raise ValueError("--output needs --format (json, sarif or markdown)")
    path = None if output in (None, STDOUT) else Path(output)
    if format is not None and path is None and as_json:
        raise ValueError(
            "--json and --format both write to stdout: give --output FILE for the export"
        )
    if path is not None:
        _check_writable(path)
    return ExportPlan(format=format, output=path, fail_on=fail_on)


def _check_writable(path: Path) -> None:
    if path.is_dir():
        raise ValueError(f"--output {path} is a directory, not a file")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"--output {path}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"--output {path} is not writable")


def write_export(text: str, *, path: Path) -> None:
    """Write ``text`` to ``path`` whole or not at all (a temporary file renamed over it)."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
