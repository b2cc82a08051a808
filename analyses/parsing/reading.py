"""Reading source files within the size limit and the file I/O timeout.

A blocking ``open``/``read`` on a hung network filesystem cannot be interrupted from Python, and
without a limit it stalls the worker that parses the tree forever. So files are read on a helper
thread and the parser waits for each at most ``limits.file_io_timeout`` seconds:

* **One reader thread per ``read_files`` call reads a batch while the parser waits** (up to
  ``_BATCH_FILES`` files or ``_BATCH_BYTES``), then sleeps until the parser asks for the next.
  Two thread switches per batch, not per file, keep the common path as cheap as reading
  inline (``benchmarks/parse_django.py``). Reading ahead while the parser works measured 5-9 %
  slower on Django: the parser holds the GIL, so the reader waits for it after each system call
  and forces a switch. Each call has its own thread, so a stuck read in one analysis
  never delays another's.
* **A daemon thread started by hand**, not a ``ThreadPoolExecutor`` worker: the executor joins
  its workers at interpreter exit, so a read stuck forever would hang the process's exit too.
* **A read (``stat``, ``open``, ``read``) that takes longer than ``file_io_timeout`` fails that
  file** (code ``io_timeout``) and parsing goes on. The stuck thread is abandoned: it stays
  blocked in the kernel and, if the read ever returns, exits without handing anything over; a
  fresh thread carries on with the next file.
* **A hung mount hangs every read under it.** Waiting the full timeout for each of 1,000 files
  would stall the worker for hours and leave 1,000 threads blocked, so after ``MAX_STUCK_READS``
  timeouts in one call the filesystem is taken as hung and the remaining files are failed at
  once with the same code, unread. One call therefore waits at most ``MAX_STUCK_READS`` timeouts
  and leaves at most that many threads behind, while a single stuck file (a FUSE file whose
  backend hangs) costs one timeout and the files after it are read as usual.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from analyses.parsing.files import relative_name
from analyses.parsing.source import too_large
from analyses.parsing.units import FileError, ParseLimits

MAX_STUCK_READS = 3
_BATCH_FILES = 32
_BATCH_BYTES = 1024 * 1024

_Read = tuple[str, bytes | FileError]  # (path relative to the root, the bytes or why not)


def read_files(
    files: Sequence[Path], *, root: Path, limits: ParseLimits
) -> Iterator[tuple[str, bytes | FileError]]:
    """``(relative path, bytes or FileError)`` for each of ``files`` (under ``root``), in order,
    each read given at most ``limits.file_io_timeout`` seconds (see the module doc)."""
    timeout = limits.file_io_timeout
    position = stuck = 0
    while position < len(files) and stuck < MAX_STUCK_READS:
        reader = _Reader(files[position:], root=root, limits=limits)
        try:
            timed_out = False
            while position < len(files) and not timed_out:
                reads, timed_out = reader.next_batch(timeout=timeout)
                position += len(reads)
                yield from reads
        finally:
            reader.abandon()
        if timed_out:  # the read of files[position] took longer than the timeout
            message = f"reading the file took longer than {timeout:g} s; skipped"
            yield _failed(files[position], root=root, message=message)
            position += 1
            stuck += 1
    for path in files[position:]:
        message = (
            f"not read: {stuck} reads in this tree took longer than {timeout:g} s each, "
            "so its filesystem looks hung"
        )
        yield _failed(path, root=root, message=message)


def read_file(file_path: Path, *, relative: str, limits: ParseLimits) -> bytes | FileError:
    """The file's bytes, or why not; blocks as long as the filesystem does.

    It asks for the size ``stat`` gave plus one byte, not for the limit plus one: ``read(n)``
    allocates ``n`` bytes up front, and 10 MB for each small file cost time and, on the reader
    thread's malloc arena, memory that stayed allocated. A file that grew since ``stat`` is read
    on, to one byte over the limit.
    """
    try:
        size = file_path.stat().st_size
        if size > limits.max_file_bytes:
            return too_large(relative, size=size, limits=limits)
        with file_path.open("rb") as handle:
            data = handle.read(size + 1)
            if len(data) > size:
                data += handle.read(limits.max_file_bytes + 1 - len(data))
    except OSError as exc:
        return FileError(path=relative, code="unreadable", message=f"cannot read: {exc.strerror}")
    if len(data) > limits.max_file_bytes:  # grew after stat
        return too_large(relative, size=len(data), limits=limits)
    return data


class _Reader:
    """A daemon thread reading ``files`` in order, one batch per request of the parser."""

    def __init__(self, files: Sequence[Path], *, root: Path, limits: ParseLimits) -> None:
        self._changed = threading.Condition()
        self._ready: list[_Read] = []  # the reads of the batch in progress, in order
        self._wanted = False  # the parser waits for a batch
        self._reading_since: float | None = None  # when the read in progress started
        self._abandoned = False
        self._failure: Exception | None = None
        thread = threading.Thread(
            target=self._run, args=(files, root, limits), name="eidolon-file-reader", daemon=True
        )
        thread.start()

    def next_batch(self, *, timeout: float) -> tuple[list[_Read], bool]:
        """The reads of the next batch, and whether it was cut short by a read (of the file
        after them) that took longer than ``timeout``; after that, the reader is abandoned."""
        with self._changed:
            self._wanted = True
            self._changed.notify()
            while self._wanted and self._failure is None:
                since = self._reading_since
                left = timeout if since is None else since + timeout - time.monotonic()
                if left <= 0:
                    self._abandoned = True
                    break
                self._changed.wait(left)
            if self._failure is not None:
                raise self._failure
            reads, self._ready = self._ready, []
            return reads, self._abandoned

    def abandon(self) -> None:
        """Stop reading; a read in progress is left to finish (or hang) and its result dropped."""
        with self._changed:
            self._abandoned = True
            self._changed.notify()

    def _run(self, files: Sequence[Path], root: Path, limits: ParseLimits) -> None:
        try:
            self._read_batches(files, root=root, limits=limits)
        except Exception as exc:  # a bug, not a bad file: the parser raises it
            with self._changed:
                self._failure = exc
                self._changed.notify()

    def _read_batches(self, files: Sequence[Path], *, root: Path, limits: ParseLimits) -> None:
        position = 0
        while position < len(files):
            with self._changed:
                while not self._wanted and not self._abandoned:
                    self._changed.wait()
                if self._abandoned:
                    return
            batch_end = min(position + _BATCH_FILES, len(files))
            batch_bytes = 0
            while position < batch_end and batch_bytes < _BATCH_BYTES:
                relative = relative_name(files[position], root)
                self._reading_since = time.monotonic()
                data = read_file(files[position], relative=relative, limits=limits)
                with self._changed:
                    if self._abandoned:
                        return
                    self._ready.append((relative, data))
                    self._reading_since = None
                position += 1
                batch_bytes += len(data) if isinstance(data, bytes) else 0
            with self._changed:
                self._wanted = False
                self._changed.notify()


def _failed(path: Path, *, root: Path, message: str) -> _Read:
    relative = relative_name(path, root)
    return relative, FileError(path=relative, code="io_timeout", message=message)
