"""Listing a tree within the file I/O timeout.

Listing a directory on a hung network filesystem blocks in the kernel like reading a file does,
and cannot be interrupted from Python either. So the walk (``iter_python_files``) runs on a
daemon thread that reports each directory and link it is about to look at; when one of them
takes longer than ``limits.file_io_timeout``, the tree is taken as hung: nothing of it is
parsed, the stuck path is recorded (code ``io_timeout``) and the thread is abandoned, exactly as
``reading`` abandons a stuck read.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from analyses.parsing.files import ListDirectory, iter_python_files, relative_name, scan_directory
from analyses.parsing.units import FileError, ParseLimits


def list_python_files(
    root: Path,
    *,
    limits: ParseLimits,
    skipped: list[FileError],
    list_directory: ListDirectory = scan_directory,
) -> list[Path]:
    """``iter_python_files(root)`` as a list, or ``[]`` with an ``io_timeout`` in ``skipped``
    when looking at one path took longer than ``limits.file_io_timeout``."""
    listing = _Listing(root, list_directory)
    timeout = limits.file_io_timeout
    while not listing.done.wait(max(0.0, listing.since + timeout - time.monotonic())):
        if time.monotonic() - listing.since >= timeout:
            skipped.extend(list(listing.errors))
            stuck = relative_name(Path(listing.busy_with), root) if listing.busy_with else "."
            message = (
                f"looking at {stuck} took longer than {timeout:g} s; the filesystem looks "
                "hung, so no file of this tree was read"
            )
            skipped.append(FileError(path=stuck or ".", code="io_timeout", message=message))
            return []
    if listing.failure is not None:
        raise listing.failure
    skipped.extend(listing.errors)
    return listing.files


class _Listing:
    """The walk on a daemon thread (see the module doc), and how far it has got."""

    def __init__(self, root: Path, list_directory: ListDirectory) -> None:
        self.files: list[Path] = []
        self.errors: list[FileError] = []
        self.failure: Exception | None = None
        self.busy_with = ""
        self.since = time.monotonic()
        self.done = threading.Event()
        threading.Thread(
            target=self._run,
            args=(root, list_directory),
            name="eidolon-tree-lister",
            daemon=True,
        ).start()

    def _progress(self, path: str) -> None:
        self.busy_with, self.since = path, time.monotonic()

    def _run(self, root: Path, list_directory: ListDirectory) -> None:
        try:
            self.files = list(
                iter_python_files(
                    root,
                    skipped=self.errors,
                    list_directory=list_directory,
                    on_progress=self._progress,
                )
            )
        except Exception as exc:  # a bug, not a bad tree: the caller raises it
            self.failure = exc
        finally:
            self.done.set()
