"""The entry points: ``parse_module`` (one file's source -> units) and ``parse_tree`` (a directory
-> ``ParseResult``), composing discovery, reading, decoding and the walk."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from analyses.parsing.listing import list_python_files
from analyses.parsing.reading import read_files
from analyses.parsing.source import decode, parse_text
from analyses.parsing.units import DEFAULT_LIMITS, FileError, ParseLimits, ParseResult, Unit
from analyses.parsing.walker import ModuleWalker, TooDeepError


def parse_module(
    source: bytes | str, *, path: str, limits: ParseLimits = DEFAULT_LIMITS
) -> tuple[list[Unit], list[FileError]]:
    """Units of one module (module unit first, then source order) and the file's errors.

    ``path`` is the module's path relative to the analysed root, POSIX style. Never raises for
    bad input: problems come back as ``FileError``s and, when fatal, no units.
    """
    text_or_error = decode(source, path=path, limits=limits)
    if isinstance(text_or_error, FileError):
        return [], [text_or_error]
    with _cyclic_gc_paused():
        return _units_of_text(text_or_error, path=path, limits=limits)


def parse_tree(root: Path | str, *, limits: ParseLimits = DEFAULT_LIMITS) -> ParseResult:
    """Parse every Python file under ``root`` (see ``iter_python_files``) within ``limits``.

    Never hangs on a file: a read that takes longer than ``limits.file_io_timeout`` fails that
    file (code ``io_timeout``) and the others are parsed; see ``reading`` for a hung filesystem,
    and ``listing`` for a directory that cannot be listed within that time.
    """
    root_path = Path(root).resolve()
    if not root_path.is_dir():
        raise NotADirectoryError(f"not a directory: {root_path}")
    result = ParseResult()
    files = list_python_files(root_path, limits=limits, skipped=result.errors)
    result.files_seen = len(files)
    if len(files) > limits.max_modules:
        skipped_count = len(files) - limits.max_modules
        result.errors.append(
            FileError(
                path=".",
                code="too_many_modules",
                message=(
                    f"{len(files)} Python files exceed the limit of {limits.max_modules}; "
                    f"the last {skipped_count} in path order were skipped"
                ),
            )
        )
        files = files[: limits.max_modules]
    for relative, data in read_files(files, root=root_path, limits=limits):
        if isinstance(data, FileError):
            result.errors.append(data)
            continue
        units, errors = parse_module(data, path=relative, limits=limits)
        result.units.extend(units)
        result.errors.extend(errors)
        if units:
            result.files_parsed += 1
    return result


def _units_of_text(
    text: str, *, path: str, limits: ParseLimits
) -> tuple[list[Unit], list[FileError]]:
    # The syntax tree lives only in this frame, so it is freed before the caller resumes the GC.
    tree_or_error = parse_text(text, path=path)
    if isinstance(tree_or_error, FileError):
        return [], [tree_or_error]
    walker = ModuleWalker(text=text, path=path, limits=limits)
    try:
        walker.walk(tree_or_error)
    except TooDeepError as exc:
        message = f"blocks nested deeper than {limits.max_nesting_depth} levels; file skipped"
        return [], [FileError(path=path, code="too_deep", message=message, line=exc.line)]
    return walker.units()


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while one module is parsed and walked.

    A module's syntax tree is thousands of container objects alive at once; every collection
    triggered meanwhile rescans them, which measured ~20 % of parse_tree's time on Django.
    Nothing built here forms a cycle, so reference counting frees all of it anyway. The
    previous state is restored, so a caller that disabled the collector keeps it disabled.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
