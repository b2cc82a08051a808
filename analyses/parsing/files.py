"""Finding the Python files of a tree: which are walked, which are skipped, and why."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from analyses.parsing.units import ErrorCode, FileError

SKIPPED_DIR_NAMES = frozenset(
    {
        "__pycache__",
        ".git",
        ".hg",
        ".svn",
        ".venv",
        "venv",
        "site-packages",
        "node_modules",
        ".tox",
        ".nox",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
    }
)
_SPECIAL_FILE_KINDS = (
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


ListDirectory = Callable[[str], list[os.DirEntry]]


def scan_directory(directory: str) -> list[os.DirEntry]:
    with os.scandir(directory) as scan:
        return list(scan)


def iter_python_files(
    root: Path | str,
    *,
    skipped: list[FileError] | None = None,
    list_directory: ListDirectory = scan_directory,
    on_progress: Callable[[str], None] | None = None,
) -> Iterator[Path]:
    """``.py`` files under ``root``, sorted by relative path parts, each file once.

    Skips ``SKIPPED_DIR_NAMES`` and any directory holding a ``pyvenv.cfg`` (a virtualenv).
    Symlinked directories are never followed: one pointing inside the root is already walked
    through its real path, one pointing outside is reported. A symlinked ``.py`` file is kept
    only if it resolves inside the root and its target is not already listed. A ``.py`` that is
    not a regular file (a named pipe, socket or device) is never opened: a pipe with no writer
    blocks ``open`` forever, a device can stream without end. Skipped symlinks (code
    ``outside_root``) and special files (code ``special_file``) are appended to ``skipped`` when
    a list is given. ``on_progress`` is told each path about to be looked at (see ``listing``).
    """
    root_path = Path(root).resolve()
    progress = on_progress or _no_progress
    real_files: list[tuple[tuple[str, ...], str]] = []  # (relative parts, path)
    linked_files: list[tuple[tuple[str, ...], str, str]] = []  # (relative parts, path, target)
    prefix_length = len(str(root_path)) + 1
    pending = [str(root_path)]
    while pending:
        directory = pending.pop()
        progress(directory)
        try:
            entries = list_directory(directory)
        except OSError as exc:
            _note(skipped, root_path, directory, "unreadable", f"cannot list: {exc.strerror}")
            continue
        for entry in entries:
            if entry.is_symlink():
                progress(entry.path)
                target = _symlink_target(entry.path, root=root_path, skipped=skipped)
                if target is not None:
                    linked_files.append((_parts(entry.path, prefix_length), entry.path, target))
            elif entry.is_dir(follow_symlinks=False):
                if entry.name not in SKIPPED_DIR_NAMES and not _is_virtualenv(entry.path):
                    pending.append(entry.path)
            elif entry.name.endswith(".py"):
                if entry.is_file(follow_symlinks=False):
                    real_files.append((_parts(entry.path, prefix_length), entry.path))
                else:
                    _note(skipped, root_path, entry.path, "special_file", _not_regular(entry))
    listed = {path for _, path in real_files}
    files = list(real_files)
    for parts, path, target in sorted(linked_files):
        if target not in listed:  # prefer the real path, then the first link in path order
            listed.add(target)
            files.append((parts, path))
    files.sort()
    for _, path in files:
        yield Path(path)


def _no_progress(path: str) -> None:
    pass


def _symlink_target(path: str, *, root: Path, skipped: list[FileError] | None) -> str | None:
    """The real path of a symlinked .py file inside the root, or None (reported if outside)."""
    target = Path(path).resolve()
    if not target.is_relative_to(root):
        if path.endswith(".py") or target.is_dir():
            _note(
                skipped, root, path, "outside_root", "symlink leads outside the root; not followed"
            )
        return None
    if not path.endswith(".py") or not target.exists():
        return None
    if not target.is_file():
        if not target.is_dir():
            message = "symlink to a named pipe, socket or device; not read"
            _note(skipped, root, path, "special_file", message)
        return None
    return str(target)


def _not_regular(entry: os.DirEntry) -> str:
    try:
        mode = entry.stat(follow_symlinks=False).st_mode
    except OSError:  # gone since the directory was listed
        mode = 0
    kind = next((name for is_kind, name in _SPECIAL_FILE_KINDS if is_kind(mode)), "a special file")
    return f"{kind}, not a regular file; not read"


def relative_name(path: Path, root: Path) -> str:
    """``path`` relative to ``root``, POSIX style, as units and errors name it.

    A name that is not valid UTF-8 (listed with surrogate escapes) gets its stray bytes
    written as ``\\xNN``: the file is still read through its real name, and the name can be
    stored, logged and shown (a surrogate cannot be encoded, and the database refuses it).
    """
    relative = path.relative_to(root).as_posix()
    if relative.isascii():
        return relative
    return relative.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _is_virtualenv(directory: str) -> bool:
    return os.path.exists(os.path.join(directory, "pyvenv.cfg"))


def _parts(path: str, prefix_length: int) -> tuple[str, ...]:
    return tuple(path[prefix_length:].split(os.sep))


def _note(
    skipped: list[FileError] | None, root: Path, path: str, code: ErrorCode, message: str
) -> None:
    if skipped is not None:
        relative = relative_name(Path(path), root)
        skipped.append(FileError(path=relative, code=code, message=message))
