"""Reading one source file within the size limit."""

from __future__ import annotations

from pathlib import Path

from analyses.parsing.source import too_large
from analyses.parsing.units import FileError, ParseLimits


def read_file(file_path: Path, *, relative: str, limits: ParseLimits) -> bytes | FileError:
    try:
        size = file_path.stat().st_size
        if size > limits.max_file_bytes:
            return too_large(relative, size=size, limits=limits)
        with file_path.open("rb") as handle:
            data = handle.read(limits.max_file_bytes + 1)
    except OSError as exc:
        return FileError(path=relative, code="unreadable", message=f"cannot read: {exc.strerror}")
    if len(data) > limits.max_file_bytes:  # grew after stat
        return too_large(relative, size=len(data), limits=limits)
    return data
