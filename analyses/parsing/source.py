"""From a file's bytes to a syntax tree: size, binary and null-byte checks, PEP 263 decoding,
and ``ast.parse`` failures turned into ``FileError``s with stable codes."""

from __future__ import annotations

import ast
import io
import tokenize

from analyses.parsing.units import FileError, ParseLimits, normalise_newlines

_BINARY_SNIFF_BYTES = 8192
_TEXT_CONTROL_BYTES = frozenset(b"\t\n\r\f\b\x1b")
_NESTING_SYNTAX_MESSAGES = ("too many nested parentheses", "too many levels of indentation")


def decode(source: bytes | str, *, path: str, limits: ParseLimits) -> str | FileError:
    """The source as text with ``\\n`` line endings, or why it cannot be Python source."""
    if isinstance(source, str):
        data = source.encode("utf-8", errors="surrogatepass")
        if len(data) > limits.max_file_bytes:
            return too_large(path, size=len(data), limits=limits)
        if "\0" in source:
            return _null_bytes(path, data)
        return normalise_newlines(source)
    if len(source) > limits.max_file_bytes:
        return too_large(path, size=len(source), limits=limits)
    if _looks_binary(source):
        return FileError(path=path, code="binary", message="binary data, not Python source")
    if b"\0" in source:
        return _null_bytes(path, source)
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(source).readline)
    except SyntaxError as exc:  # raised for a bad cookie, or non-UTF-8 bytes in the first lines
        message = str(exc.msg or exc)
        if message.startswith("invalid or missing encoding declaration"):
            return FileError(
                path=path, code="not_utf8", message="not valid UTF-8 and no encoding declared"
            )
        return FileError(path=path, code="bad_encoding", message=message)
    try:
        text = source.decode(encoding)
    except UnicodeDecodeError as exc:
        line = source.count(b"\n", 0, exc.start) + 1
        if encoding in ("utf-8", "utf-8-sig"):
            message = f"not valid UTF-8 (byte {exc.start}, line {line}) and no encoding declared"
            return FileError(path=path, code="not_utf8", message=message, line=line)
        message = f"not valid {encoding} as its encoding declaration says (line {line})"
        return FileError(path=path, code="bad_encoding", message=message, line=line)
    return normalise_newlines(text)


def parse_text(text: str, *, path: str) -> ast.Module | FileError:
    try:
        return ast.parse(text, filename=path)
    except SyntaxError as exc:  # includes IndentationError, TabError
        message = exc.msg or "invalid syntax"
        if message in _NESTING_SYNTAX_MESSAGES:
            return FileError(path=path, code="too_deep", message=message, line=exc.lineno)
        where = f"line {exc.lineno}" + (f", column {exc.offset}" if exc.offset else "")
        return FileError(
            path=path, code="syntax_error", message=f"{message} ({where})", line=exc.lineno
        )
    except (RecursionError, MemoryError):
        return FileError(
            path=path,
            code="too_deep",
            message="expressions nested too deeply for the Python parser",
        )
    except ValueError as exc:  # null bytes slipping through a str source
        return FileError(path=path, code="null_bytes", message=str(exc))


def too_large(path: str, *, size: int, limits: ParseLimits) -> FileError:
    return FileError(
        path=path,
        code="too_large",
        message=f"file is {size:,} bytes, over the {limits.max_file_bytes:,}-byte limit; skipped",
    )


def _looks_binary(data: bytes) -> bool:
    """Mostly non-text bytes at the start (images, archives, compiled files renamed .py)."""
    head = data[:_BINARY_SNIFF_BYTES]
    if not head or b"\0" not in head:
        return False
    control = sum(1 for byte in head if byte < 32 and byte not in _TEXT_CONTROL_BYTES)
    # A stray NUL in text is one byte; binary data has control bytes all over.
    return control >= 8 and control * 20 > len(head)


def _null_bytes(path: str, data: bytes) -> FileError:
    line = data.count(b"\n", 0, data.index(b"\0")) + 1
    return FileError(path=path, code="null_bytes", message="source contains a null byte", line=line)
