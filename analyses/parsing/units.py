"""The data types parsing produces, its limits, and the two names everything derives from a path
or a source text: ``content_hash`` and ``module_name``."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field, fields
from typing import Literal

UnitKind = Literal["module", "class", "function", "async_function", "method"]
ArgumentKind = Literal["posonly", "regular", "vararg", "kwonly", "kwarg"]
ErrorCode = Literal[
    "too_large",
    "binary",
    "null_bytes",
    "not_utf8",
    "bad_encoding",
    "syntax_error",
    "too_deep",
    "too_many_functions",
    "too_many_modules",
    "outside_root",
    "special_file",
    "unreadable",
    "io_timeout",
]

FUNCTION_KINDS: frozenset[UnitKind] = frozenset({"function", "async_function", "method"})


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Hard limits; the defaults are the original Eidolon's numbers and the seed's file I/O
    timeout (seconds one file's read may take; see ``reading``)."""

    max_file_bytes: int = 10 * 1024 * 1024
    max_modules: int = 1000
    max_functions_per_module: int = 500
    max_function_lines: int = 1000
    max_nesting_depth: int = 100
    file_io_timeout: float = 10.0

    def __post_init__(self) -> None:
        for limit in fields(self):
            if limit.name != "file_io_timeout" and getattr(self, limit.name) < 1:
                raise ValueError(f"{limit.name} must be at least 1")
        if not 0 < self.file_io_timeout <= threading.TIMEOUT_MAX:  # also refuses NaN
            raise ValueError("file_io_timeout must be a positive number of seconds")


DEFAULT_LIMITS = ParseLimits()


@dataclass(frozen=True, slots=True)
class Argument:
    """One parameter of a function, in signature order."""

    name: str
    kind: ArgumentKind
    has_default: bool
    # Line of a mutable default (``[]``, ``{}``, ``set()``, ``dict()``...), None otherwise.
    mutable_default_line: int | None = None


@dataclass(frozen=True, slots=True)
class Unit:
    """A module, class, function or method, with what reviewing it needs (see the package doc)."""

    id: str
    kind: UnitKind
    qualname: str
    path: str
    lineno: int
    end_lineno: int
    source: str
    content_hash: str
    parent: str | None  # the parent unit's qualname; None for modules
    parent_id: str | None
    is_public: bool
    is_async: bool = False
    arguments: tuple[Argument, ...] = ()
    decorators: tuple[str, ...] = ()
    docstring: str | None = None
    calls: tuple[str, ...] = ()  # dotted names as written, first occurrence order, no repeats
    complexity: int = 1
    nesting_depth: int = 0
    too_long: bool = False
    method_count: int = 0  # classes only
    bare_except_lines: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        return self.qualname.rpartition(".")[2]

    @property
    def line_count(self) -> int:
        return self.end_lineno - self.lineno + 1

    @property
    def is_function(self) -> bool:
        """A function, async function or method: what AI reviewers review on its own."""
        return self.kind in FUNCTION_KINDS


@dataclass(frozen=True, slots=True)
class FileError:
    """Why a file, or part of it, was not parsed. ``code`` is stable; ``message`` is for people.

    Refused for its size or content: ``too_large``, ``binary``, ``null_bytes``, ``not_utf8``,
    ``bad_encoding``, ``syntax_error``, ``too_deep``; part of it dropped: ``too_many_functions``.
    Found but not read: ``outside_root``, ``special_file``, ``unreadable``, ``io_timeout`` (the
    read took longer than ``file_io_timeout``, or was not tried because the filesystem looked
    hung). ``too_many_modules`` (path ``.``) is the tree's.
    """

    path: str
    code: ErrorCode
    message: str
    line: int | None = None


@dataclass(slots=True)
class ParseResult:
    """Units in path then source order; ``files_parsed`` counts files that produced units."""

    units: list[Unit] = field(default_factory=list)
    errors: list[FileError] = field(default_factory=list)
    files_seen: int = 0
    files_parsed: int = 0


def content_hash(text: str) -> str:
    """sha256 of ``text`` with line endings normalised to ``\\n``."""
    return hashlib.sha256(
        normalise_newlines(text).encode("utf-8", errors="surrogatepass")
    ).hexdigest()


def normalise_newlines(text: str) -> str:
    if "\r" not in text:
        return text
    return text.replace("\r\n", "\n").replace("\r", "\n")


def module_name(path: str) -> str:
    """``pkg/sub/mod.py`` -> ``pkg.sub.mod``; ``pkg/__init__.py`` -> ``pkg``."""
    parts = path.removesuffix(".py").split("/")
    if len(parts) > 1 and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)
