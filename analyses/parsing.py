"""Python source -> units (modules, classes, functions, methods). Pure: no Django, no I/O but reads.

Each file is decoded and parsed once, then walked once; everything a unit needs (arguments,
calls, complexity, nesting, bare excepts, mutable defaults) is gathered in that single pass.

Conventions (decisions recorded here because callers depend on them):

* **Qualnames** follow Python's own ``__qualname__``: ``Class.method``, ``outer.<locals>.inner``,
  ``f.<locals>.Local.method``. A module unit's qualname is its dotted module name derived from
  the path (``pkg/sub/mod.py`` -> ``pkg.sub.mod``, ``pkg/__init__.py`` -> ``pkg``). Qualnames are
  not unique (``@property`` + ``@x.setter``, conditional definitions), so each unit also has an
  ``id``: ``path`` for modules, ``path::qualname`` otherwise, with ``#2``, ``#3``... appended to
  repeats in source order.
* **Line range** starts at the first decorator (so the source shown to a reviewer includes it)
  and ends at the node's ``end_lineno``. Lines are absolute file lines, 1-based.
* **Kinds**: a ``def`` directly inside a class body (including inside an ``if`` in that body) is a
  ``method`` whether async or not (see ``is_async``); other defs are ``function`` or
  ``async_function``, nested ones included. Lambdas are not units.
* **Complexity** is the original Eidolon count: 1 + one per ``If`` (so each ``elif``), ``For``,
  ``AsyncFor``, ``While`` and ``ExceptHandler``, + ``len(values) - 1`` per ``BoolOp``.
  ``AsyncFor`` is added because it is the same loop; ``IfExp``, comprehension ``if``s and
  ``match`` cases are not counted, to stay comparable with the original's numbers. Nodes inside
  nested functions and classes count for those units only; lambdas and comprehensions count for
  the unit they appear in. Decorators, defaults and annotations are evaluated in the enclosing
  scope, so their calls and branches belong to the enclosing unit.
* **Nesting depth** of a unit is the deepest nesting of blocks (if/for/while/with/try/match) in its
  own body; an ``elif`` chain is flat. The file limit ``max_nesting_depth`` applies to the same
  block nesting counted from the module (defs and classes included). The tokenizer already
  refuses more than 100 indentation levels, so with the default this is a backstop; expression
  nesting the parser cannot handle (thousands of parentheses) is reported as ``too_deep`` too.
* **Limits**: a function longer than ``max_function_lines`` stays a unit with ``too_long=True`` (the
  orchestrator decides not to send it); a module with too many functions keeps the first ones in
  source order, plus an error. ``is_public``: no qualname part starts with ``_`` (dunder names
  such as ``__init__`` are public) and nested functions (``<locals>``) are never public; a
  module is public when no part of its dotted name is private.
* **Encoding**: PEP 263 cookies and BOMs are honoured (``tokenize.detect_encoding``); line endings
  are normalised to ``\\n`` before anything is sliced or hashed.
* **Speed**: the walk is iterative (no recursion limit to hit) and visits each node once;
  ``benchmarks/parse_django.py`` measures it against a bare ``ast.parse``. The cyclic GC is
  paused while one module's tree is alive (see ``_cyclic_gc_paused``).
"""

from __future__ import annotations

import ast
import gc
import hashlib
import inspect
import io
import os
import tokenize
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
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
    "unreadable",
]
ContextRole = Literal["caller", "callee"]

FUNCTION_KINDS: frozenset[UnitKind] = frozenset({"function", "async_function", "method"})
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


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Hard limits; the defaults are the original Eidolon's numbers."""

    max_file_bytes: int = 10 * 1024 * 1024
    max_modules: int = 1000
    max_functions_per_module: int = 500
    max_function_lines: int = 1000
    max_nesting_depth: int = 100

    def __post_init__(self) -> None:
        for limit in fields(self):
            if getattr(self, limit.name) < 1:
                raise ValueError(f"{limit.name} must be at least 1")


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
    """A module, class, function or method, with what reviewing it needs (see module doc)."""

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
    """Why a file, or part of it, was not parsed. ``code`` is stable; ``message`` is for people."""

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


@dataclass(frozen=True, slots=True)
class CallContext:
    """Resolved call edges of one function unit."""

    callers: tuple[str, ...]  # unit ids, deterministic order
    callees: tuple[str, ...]  # unit ids, in the order the calls appear


@dataclass(frozen=True, slots=True)
class ContextSnippet:
    """A caller or callee to show beside a unit in the prompt."""

    role: ContextRole
    unit_id: str
    qualname: str
    path: str
    lineno: int
    end_lineno: int
    source: str  # as it should be sent: possibly trimmed
    truncated: bool


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def parse_module(
    source: bytes | str, *, path: str, limits: ParseLimits = DEFAULT_LIMITS
) -> tuple[list[Unit], list[FileError]]:
    """Units of one module (module unit first, then source order) and the file's errors.

    ``path`` is the module's path relative to the analysed root, POSIX style. Never raises for
    bad input: problems come back as ``FileError``s and, when fatal, no units.
    """
    text_or_error = _decode(source, path=path, limits=limits)
    if isinstance(text_or_error, FileError):
        return [], [text_or_error]
    with _cyclic_gc_paused():
        return _units_of_text(text_or_error, path=path, limits=limits)


def parse_tree(root: Path | str, *, limits: ParseLimits = DEFAULT_LIMITS) -> ParseResult:
    """Parse every Python file under ``root`` (see ``iter_python_files``) within ``limits``."""
    root_path = Path(root).resolve()
    if not root_path.is_dir():
        raise NotADirectoryError(f"not a directory: {root_path}")
    result = ParseResult()
    files = list(iter_python_files(root_path, skipped=result.errors))
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
    for file_path in files:
        relative = file_path.relative_to(root_path).as_posix()
        data = _read_file(file_path, relative=relative, limits=limits)
        if isinstance(data, FileError):
            result.errors.append(data)
            continue
        units, errors = parse_module(data, path=relative, limits=limits)
        result.units.extend(units)
        result.errors.extend(errors)
        if units:
            result.files_parsed += 1
    return result


def iter_python_files(
    root: Path | str, *, skipped: list[FileError] | None = None
) -> Iterator[Path]:
    """``.py`` files under ``root``, sorted by relative path parts, each file once.

    Skips ``SKIPPED_DIR_NAMES`` and any directory holding a ``pyvenv.cfg`` (a virtualenv).
    Symlinked directories are never followed: one pointing inside the root is already walked
    through its real path, one pointing outside is reported. A symlinked ``.py`` file is kept
    only if it resolves inside the root and its target is not already listed. Skipped symlinks
    are appended to ``skipped`` (code ``outside_root``) when a list is given.
    """
    root_path = Path(root).resolve()
    real_files: list[tuple[tuple[str, ...], str]] = []  # (relative parts, path)
    linked_files: list[tuple[tuple[str, ...], str, str]] = []  # (relative parts, path, target)
    prefix_length = len(str(root_path)) + 1
    pending = [str(root_path)]
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as scan:
                entries = list(scan)
        except OSError as exc:
            _note(skipped, root_path, directory, "unreadable", f"cannot list: {exc.strerror}")
            continue
        for entry in entries:
            if entry.is_symlink():
                target = _symlink_target(entry.path, root=root_path, skipped=skipped)
                if target is not None:
                    linked_files.append((_parts(entry.path, prefix_length), entry.path, target))
            elif entry.is_dir(follow_symlinks=False):
                if entry.name not in SKIPPED_DIR_NAMES and not _is_virtualenv(entry.path):
                    pending.append(entry.path)
            elif entry.name.endswith(".py") and entry.is_file(follow_symlinks=False):
                real_files.append((_parts(entry.path, prefix_length), entry.path))
    listed = {path for _, path in real_files}
    files = list(real_files)
    for parts, path, target in sorted(linked_files):
        if target not in listed:  # prefer the real path, then the first link in path order
            listed.add(target)
            files.append((parts, path))
    files.sort()
    for _, path in files:
        yield Path(path)


# --------------------------------------------------------------------------------------------
# Call graph and prompt context
# --------------------------------------------------------------------------------------------


def build_call_graph(units: Iterable[Unit]) -> dict[str, CallContext]:
    """Callers and callees (unit ids) of every function/method unit, resolved best-effort.

    A call resolves by its last name part to function units of that name. ``self.x()`` /
    ``cls.x()`` consider methods only, preferring the caller's class, then its module; a bare
    ``x()`` considers non-methods only, preferring a helper nested in the caller, then the
    caller's module; ``a.b.x()`` prefers a module-level function of a module named like ``a.b``,
    then the caller's module. Ties go to the lowest (path, line). Calls to the caller itself and
    names matching no unit (builtins, libraries) are dropped.
    """
    functions = [unit for unit in units if unit.is_function]
    by_name: dict[str, list[Unit]] = defaultdict(list)
    for unit in functions:
        by_name[unit.name].append(unit)
    callees: dict[str, tuple[str, ...]] = {}
    callers: dict[str, list[str]] = defaultdict(list)
    for caller in functions:
        resolved: dict[str, None] = {}  # insertion-ordered set
        for call in caller.calls:
            target = _resolve_call(call, caller=caller, by_name=by_name)
            if target is not None and target.id != caller.id:
                resolved[target.id] = None
        callees[caller.id] = tuple(resolved)
        for callee_id in resolved:
            callers[callee_id].append(caller.id)
    return {
        unit.id: CallContext(callers=tuple(callers[unit.id]), callees=callees[unit.id])
        for unit in functions
    }


def context_for(
    unit: Unit,
    *,
    graph: Mapping[str, CallContext],
    units_by_id: Mapping[str, Unit],
    max_callers: int = 3,
    max_callees: int = 3,
    max_chars: int = 1500,
) -> list[ContextSnippet]:
    """Callees then callers of ``unit`` to show beside it, each trimmed to ``max_chars``.

    Callees keep call order; callers in the unit's own module come first.
    """
    context = graph.get(unit.id)
    if context is None:
        return []
    caller_units = [units_by_id[caller_id] for caller_id in context.callers]
    caller_units.sort(key=lambda caller: caller.path != unit.path)  # stable: keeps graph order
    callee_units = [units_by_id[callee_id] for callee_id in context.callees]
    return [
        _snippet(callee, role="callee", max_chars=max_chars)
        for callee in callee_units[:max_callees]
    ] + [
        _snippet(caller, role="caller", max_chars=max_chars)
        for caller in caller_units[:max_callers]
    ]


def context_hash(unit: Unit, context: Sequence[ContextSnippet]) -> str:
    """Cache key for "this unit with this context": changes when either text sent changes."""
    digest = hashlib.sha256(unit.content_hash.encode())
    for snippet in context:
        for part in (snippet.role, snippet.path, snippet.qualname, snippet.source):
            digest.update(b"\0")
            digest.update(part.encode())
    return digest.hexdigest()


def content_hash(text: str) -> str:
    """sha256 of ``text`` with line endings normalised to ``\\n``."""
    return hashlib.sha256(
        _normalise_newlines(text).encode("utf-8", errors="surrogatepass")
    ).hexdigest()


# --------------------------------------------------------------------------------------------
# Reading, decoding, parsing
# --------------------------------------------------------------------------------------------

_BINARY_SNIFF_BYTES = 8192
_TEXT_CONTROL_BYTES = frozenset(b"\t\n\r\f\b\x1b")
_NESTING_SYNTAX_MESSAGES = ("too many nested parentheses", "too many levels of indentation")


class _TooDeepError(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


def _units_of_text(
    text: str, *, path: str, limits: ParseLimits
) -> tuple[list[Unit], list[FileError]]:
    # The syntax tree lives only in this frame, so it is freed before the caller resumes the GC.
    tree_or_error = _parse(text, path=path)
    if isinstance(tree_or_error, FileError):
        return [], [tree_or_error]
    walker = _ModuleWalker(text=text, path=path, limits=limits)
    try:
        walker.walk(tree_or_error)
    except _TooDeepError as exc:
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


def _read_file(file_path: Path, *, relative: str, limits: ParseLimits) -> bytes | FileError:
    try:
        size = file_path.stat().st_size
        if size > limits.max_file_bytes:
            return _too_large(relative, size=size, limits=limits)
        with file_path.open("rb") as handle:
            data = handle.read(limits.max_file_bytes + 1)
    except OSError as exc:
        return FileError(path=relative, code="unreadable", message=f"cannot read: {exc.strerror}")
    if len(data) > limits.max_file_bytes:  # grew after stat
        return _too_large(relative, size=len(data), limits=limits)
    return data


def _too_large(path: str, *, size: int, limits: ParseLimits) -> FileError:
    return FileError(
        path=path,
        code="too_large",
        message=f"file is {size:,} bytes, over the {limits.max_file_bytes:,}-byte limit; skipped",
    )


def _decode(source: bytes | str, *, path: str, limits: ParseLimits) -> str | FileError:
    if isinstance(source, str):
        data = source.encode("utf-8", errors="surrogatepass")
        if len(data) > limits.max_file_bytes:
            return _too_large(path, size=len(data), limits=limits)
        if "\0" in source:
            return _null_bytes(path, data)
        return _normalise_newlines(source)
    if len(source) > limits.max_file_bytes:
        return _too_large(path, size=len(source), limits=limits)
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
    return _normalise_newlines(text)


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


def _normalise_newlines(text: str) -> str:
    if "\r" not in text:
        return text
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _parse(text: str, *, path: str) -> ast.Module | FileError:
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


def _symlink_target(path: str, *, root: Path, skipped: list[FileError] | None) -> str | None:
    """The real path of a symlinked .py file inside the root, or None (reported if outside)."""
    target = Path(path).resolve()
    if not target.is_relative_to(root):
        if path.endswith(".py") or target.is_dir():
            _note(
                skipped, root, path, "outside_root", "symlink leads outside the root; not followed"
            )
        return None
    if path.endswith(".py") and target.is_file():
        return str(target)
    return None


def _is_virtualenv(directory: str) -> bool:
    return os.path.exists(os.path.join(directory, "pyvenv.cfg"))


def _parts(path: str, prefix_length: int) -> tuple[str, ...]:
    return tuple(path[prefix_length:].split(os.sep))


def _note(
    skipped: list[FileError] | None, root: Path, path: str, code: ErrorCode, message: str
) -> None:
    if skipped is not None:
        relative = Path(path).relative_to(root).as_posix()
        skipped.append(FileError(path=relative, code=code, message=message))


# --------------------------------------------------------------------------------------------
# The single walk over a module
# --------------------------------------------------------------------------------------------

_DEF_TYPES = frozenset({ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef})
_BLOCK_TYPES = frozenset(
    {
        ast.If,
        ast.For,
        ast.AsyncFor,
        ast.While,
        ast.With,
        ast.AsyncWith,
        ast.Try,
        ast.TryStar,
        ast.Match,
    }
)
_BRANCH_TYPES = frozenset({ast.If, ast.For, ast.AsyncFor, ast.While})
_STATEMENT_LIST_FIELDS = ("body", "orelse", "finalbody")
# Fields that never hold nodes we need: identifiers, flags, and operator/context singletons.
_IGNORED_FIELDS = frozenset(
    {
        "ctx", "id", "arg", "attr", "name", "names", "module", "level", "type_comment", "kind",
        "conversion", "is_async", "simple", "rest", "kwd_attrs", "tag", "op", "ops", "asname",
    }
)  # fmt: skip
# Statement fields walked as blocks rather than as expressions.
_BLOCK_FIELDS = frozenset({*_STATEMENT_LIST_FIELDS, "handlers", "cases"})
_LEAF_TYPES = frozenset(
    {ast.Name, ast.Constant, ast.MatchSingleton, ast.Pass, ast.Break, ast.Continue, ast.Global,
     ast.Nonlocal, ast.Import, ast.ImportFrom, ast.alias, type(None)}
)  # fmt: skip
_MUTABLE_LITERAL_TYPES = (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)
_MUTABLE_FACTORIES = frozenset(
    {
        "list", "dict", "set", "bytearray",
        "defaultdict", "OrderedDict", "deque", "Counter",
        "collections.defaultdict", "collections.OrderedDict", "collections.deque",
        "collections.Counter",
    }
)  # fmt: skip


class _FieldTable(dict[type, tuple[str, ...]]):
    """Node class -> names of its fields worth walking, computed on first use."""

    def __init__(self, *, excluded: frozenset[str], leaves: Iterable[type]) -> None:
        super().__init__(dict.fromkeys(leaves, ()))
        self._excluded = excluded

    def __missing__(self, cls: type) -> tuple[str, ...]:
        fields = tuple(name for name in getattr(cls, "_fields", ()) if name not in self._excluded)
        self[cls] = fields
        return fields


_EXPRESSION_FIELDS = _FieldTable(excluded=_IGNORED_FIELDS, leaves=_LEAF_TYPES)
_STATEMENT_FIELDS = _FieldTable(excluded=_IGNORED_FIELDS | _BLOCK_FIELDS, leaves=_LEAF_TYPES)


class _Scope:
    """A unit being built while its body is walked."""

    __slots__ = (
        "bare_except_lines",
        "calls",
        "child_prefix",
        "complexity",
        "depth",
        "expressions",
        "is_public",
        "kind",
        "method_count",
        "nesting_depth",
        "node",
        "parent",
        "qualname",
    )

    def __init__(
        self,
        *,
        node: ast.AST,
        kind: UnitKind,
        qualname: str,
        parent: _Scope | None,
        depth: int,
    ) -> None:
        self.node = node
        self.kind = kind
        self.qualname = qualname
        self.parent = parent
        self.depth = depth  # absolute block depth of this unit's body
        self.complexity = 1
        self.nesting_depth = 0
        self.calls: list[tuple[int, int, str]] = []
        self.bare_except_lines: list[int] = []
        self.method_count = 0
        self.expressions: list = []  # expression trees evaluated in this scope, walked at the end
        if kind == "module":
            self.child_prefix = ""
            self.is_public = all(_is_public_part(part) for part in qualname.split("."))
        else:
            name = qualname.rpartition(".")[2]
            # Nested in a function means "<locals>": never public. The module's own privacy
            # does not make its functions private.
            inherited = parent is None or parent.kind == "module" or parent.is_public
            self.is_public = (
                inherited and parent.kind not in FUNCTION_KINDS and _is_public_part(name)
            )
            self.child_prefix = f"{qualname}." if kind == "class" else f"{qualname}.<locals>."


_Frame = tuple[ast.AST, _Scope, int]  # a statement, the unit it belongs to, its block depth


class _ModuleWalker:
    def __init__(self, *, text: str, path: str, limits: ParseLimits) -> None:
        self.text = text
        self.path = path
        self.limits = limits
        self.lines = text.split("\n")
        self.scopes: list[_Scope] = []

    def walk(self, tree: ast.Module) -> None:
        module = _Scope(
            node=tree, kind="module", qualname=module_name(self.path), parent=None, depth=0
        )
        self.scopes.append(module)
        stack: list[_Frame] = [(stmt, module, 0) for stmt in reversed(tree.body)]
        pop, push = stack.pop, stack.append
        statement_fields = _STATEMENT_FIELDS
        max_depth = self.limits.max_nesting_depth
        while stack:
            node, scope, depth = pop()
            cls = node.__class__
            if cls in _DEF_TYPES:
                if depth >= max_depth:
                    raise _TooDeepError(node.lineno)
                scope.expressions.extend(_header_expressions(node))
                child = self._open_scope(node, parent=scope, depth=depth + 1)
                for stmt in reversed(node.body):
                    push((stmt, child, depth + 1))
                continue
            fields = statement_fields[cls]
            if fields:
                add = scope.expressions.append
                for name in fields:
                    value = getattr(node, name)
                    if value is not None:
                        add(value)
            if cls in _BLOCK_TYPES:
                if depth >= max_depth:
                    raise _TooDeepError(node.lineno)
                self._enter_block(node, scope=scope, depth=depth, push=push)
        for scope in self.scopes:
            _scan_expressions(scope)

    @staticmethod
    def _enter_block(
        node: ast.AST, *, scope: _Scope, depth: int, push: Callable[[_Frame], None]
    ) -> None:
        inner = depth + 1
        scope.nesting_depth = max(scope.nesting_depth, inner - scope.depth)
        if node.__class__ in _BRANCH_TYPES:
            scope.complexity += 1
        orelse = getattr(node, "orelse", None)
        if orelse and node.__class__ is ast.If and _is_elif(node):
            push((orelse[0], scope, depth))  # an elif chain is flat, not nested
            orelse = None
        for stmts in (getattr(node, "finalbody", None), orelse):
            for stmt in reversed(stmts or ()):
                push((stmt, scope, inner))
        for handler in reversed(getattr(node, "handlers", None) or ()):
            scope.complexity += 1
            if handler.type is None:
                scope.bare_except_lines.append(handler.lineno)
            else:
                scope.expressions.append(handler.type)
            for stmt in reversed(handler.body):
                push((stmt, scope, inner))
        for case in reversed(getattr(node, "cases", None) or ()):
            scope.expressions.append(case.pattern)
            if case.guard is not None:
                scope.expressions.append(case.guard)
            for stmt in reversed(case.body):
                push((stmt, scope, inner))
        for stmt in reversed(getattr(node, "body", ())):
            push((stmt, scope, inner))

    def _open_scope(self, node: ast.AST, *, parent: _Scope, depth: int) -> _Scope:
        qualname = f"{parent.child_prefix}{node.name}"
        if node.__class__ is ast.ClassDef:
            kind: UnitKind = "class"
        elif parent.kind == "class":
            kind = "method"
            parent.method_count += 1
        elif node.__class__ is ast.AsyncFunctionDef:
            kind = "async_function"
        else:
            kind = "function"
        scope = _Scope(node=node, kind=kind, qualname=qualname, parent=parent, depth=depth)
        self.scopes.append(scope)
        return scope

    def units(self) -> tuple[list[Unit], list[FileError]]:
        scopes = sorted(
            self.scopes[1:], key=lambda scope: (scope.node.lineno, scope.node.col_offset)
        )
        kept, errors = self._apply_function_limit([self.scopes[0], *scopes])
        ids: dict[_Scope, str] = {}
        repeats: dict[str, int] = defaultdict(int)
        units = []
        for scope in kept:
            base_id = self.path if scope.kind == "module" else f"{self.path}::{scope.qualname}"
            repeats[base_id] += 1
            ids[scope] = base_id if repeats[base_id] == 1 else f"{base_id}#{repeats[base_id]}"
            units.append(self._unit(scope, unit_id=ids[scope], parent_id=ids.get(scope.parent)))
        return units, errors

    def _apply_function_limit(self, scopes: list[_Scope]) -> tuple[list[_Scope], list[FileError]]:
        limit = self.limits.max_functions_per_module
        total = sum(1 for scope in scopes if scope.kind in FUNCTION_KINDS)
        if total <= limit:
            return scopes, []
        kept: list[_Scope] = []
        kept_set: set[_Scope] = set()
        functions = 0
        for scope in scopes:
            if scope.kind in FUNCTION_KINDS:
                functions += 1
                if functions > limit:
                    continue
            if scope.parent is None or scope.parent in kept_set:
                kept.append(scope)
                kept_set.add(scope)
        error = FileError(
            path=self.path,
            code="too_many_functions",
            message=(
                f"{total} functions exceed the limit of {limit} per module; "
                f"the first {limit} in source order were kept"
            ),
        )
        return kept, [error]

    def _unit(self, scope: _Scope, *, unit_id: str, parent_id: str | None) -> Unit:
        node = scope.node
        if scope.kind == "module":
            source = self.text
            start, end = 1, max(1, len(self.lines) - (1 if self.text.endswith("\n") else 0))
        else:
            start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            end = node.end_lineno
            source = "\n".join(self.lines[start - 1 : end]) + "\n"
        is_function = scope.kind in FUNCTION_KINDS
        return Unit(
            id=unit_id,
            kind=scope.kind,
            qualname=scope.qualname,
            path=self.path,
            lineno=start,
            end_lineno=end,
            source=source,
            content_hash=content_hash(source),
            parent=scope.parent.qualname if scope.parent else None,
            parent_id=parent_id,
            is_public=scope.is_public,
            is_async=node.__class__ is ast.AsyncFunctionDef,
            arguments=_arguments(node.args) if is_function else (),
            decorators=tuple(self._segment(item) for item in getattr(node, "decorator_list", ())),
            docstring=_docstring(node),
            calls=_ordered_calls(scope.calls),
            complexity=scope.complexity,
            nesting_depth=scope.nesting_depth,
            too_long=is_function and end - start + 1 > self.limits.max_function_lines,
            method_count=scope.method_count,
            bare_except_lines=tuple(sorted(scope.bare_except_lines)),
        )

    def _segment(self, node: ast.AST) -> str:
        """Source text of ``node`` (col offsets are UTF-8 byte offsets, as in ``ast``)."""
        first = node.lineno - 1
        last = node.end_lineno - 1
        if first == last:
            return _slice_utf8(self.lines[first], node.col_offset, node.end_col_offset)
        parts = [_slice_utf8(self.lines[first], node.col_offset, None)]
        parts.extend(self.lines[first + 1 : last])
        parts.append(_slice_utf8(self.lines[last], 0, node.end_col_offset))
        return "\n".join(parts)


def _scan_expressions(scope: _Scope) -> None:
    """Collect calls and boolean-operator complexity from the scope's expression trees."""
    stack = scope.expressions
    scope.expressions = []
    pop, push, extend = stack.pop, stack.append, stack.extend
    calls = scope.calls
    fields_of = _EXPRESSION_FIELDS
    leaves = _LEAF_TYPES
    while stack:
        node = pop()
        cls = node.__class__
        if cls is ast.Attribute:  # the commonest node: skip down the chain at once
            node = node.value
            while node.__class__ is ast.Attribute:
                node = node.value
            if node.__class__ not in leaves:
                push(node)
            continue
        if cls is ast.Call:
            name = _dotted_name(node.func)
            if name is None:
                push(node.func)
            else:  # a plain dotted name holds nothing else to find
                calls.append((node.lineno, node.col_offset, name))
            extend(node.args)
            extend(node.keywords)
            continue
        if cls is list:
            extend(node)
            continue
        if cls is ast.BoolOp:
            scope.complexity += len(node.values) - 1
        for name in fields_of[cls]:
            value = getattr(node, name)
            value_cls = value.__class__
            if value_cls is list:
                extend(value)
            elif value_cls not in leaves:
                push(value)


def _header_expressions(node: ast.AST) -> list:
    """Parts of a def/class evaluated in the enclosing scope."""
    if node.__class__ is ast.ClassDef:
        return [node.decorator_list, node.bases, node.keywords]
    expressions = [node.decorator_list, node.args]
    if node.returns is not None:
        expressions.append(node.returns)
    return expressions


def _is_elif(node: ast.If) -> bool:
    orelse = node.orelse
    return (
        len(orelse) == 1
        and orelse[0].__class__ is ast.If
        and orelse[0].col_offset == node.col_offset
    )


def _dotted_name(node: ast.AST) -> str | None:
    parts = []
    while node.__class__ is ast.Attribute:
        parts.append(node.attr)
        node = node.value
    if node.__class__ is not ast.Name:
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _ordered_calls(calls: list[tuple[int, int, str]]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(name for _line, _col, name in sorted(calls)))


def _arguments(args: ast.arguments) -> tuple[Argument, ...]:
    posonly_count = len(args.posonlyargs)
    positional = [*args.posonlyargs, *args.args] if posonly_count else args.args
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
    defaults.extend(args.defaults)
    result = [
        _argument(arg, "posonly" if index < posonly_count else "regular", default)
        for index, (arg, default) in enumerate(zip(positional, defaults, strict=True))
    ]
    if args.vararg is not None:
        result.append(Argument(args.vararg.arg, "vararg", False))
    result.extend(
        _argument(arg, "kwonly", default)
        for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True)
    )
    if args.kwarg is not None:
        result.append(Argument(args.kwarg.arg, "kwarg", False))
    return tuple(result)


def _argument(arg: ast.arg, kind: ArgumentKind, default: ast.expr | None) -> Argument:
    if default is None:
        return Argument(arg.arg, kind, False)
    return Argument(arg.arg, kind, True, default.lineno if _is_mutable(default) else None)


def _docstring(node: ast.AST) -> str | None:
    """``ast.get_docstring``, minus its generality, for the hot path."""
    body = node.body
    if not body or body[0].__class__ is not ast.Expr:
        return None
    value = body[0].value
    if value.__class__ is not ast.Constant or value.value.__class__ is not str:
        return None
    return inspect.cleandoc(value.value)


def _is_mutable(node: ast.expr) -> bool:
    if isinstance(node, _MUTABLE_LITERAL_TYPES):
        return True
    return isinstance(node, ast.Call) and _dotted_name(node.func) in _MUTABLE_FACTORIES


def _slice_utf8(line: str, start: int, end: int | None) -> str:
    if line.isascii():
        return line[start:end]
    return line.encode()[start:end].decode(errors="replace")


def module_name(path: str) -> str:
    """``pkg/sub/mod.py`` -> ``pkg.sub.mod``; ``pkg/__init__.py`` -> ``pkg``."""
    parts = path.removesuffix(".py").split("/")
    if len(parts) > 1 and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_public_part(part: str) -> bool:
    if part == "<locals>":
        return False
    is_dunder = len(part) > 4 and part.startswith("__") and part.endswith("__")
    return is_dunder or not part.startswith("_")


# --------------------------------------------------------------------------------------------
# Call resolution and snippets
# --------------------------------------------------------------------------------------------

_SELF_NAMES = frozenset({"self", "cls"})


def _resolve_call(call: str, *, caller: Unit, by_name: Mapping[str, list[Unit]]) -> Unit | None:
    receiver, _, name = call.rpartition(".")
    options = [unit for unit in by_name.get(name, ()) if _callable_as(unit, receiver=receiver)]
    if not options:
        return None
    return min(
        options,
        key=lambda unit: (
            *_call_rank(unit, caller=caller, receiver=receiver),
            unit.path,
            unit.lineno,
        ),
    )


def _callable_as(unit: Unit, *, receiver: str) -> bool:
    if receiver in _SELF_NAMES:
        return unit.kind == "method"
    if not receiver:  # a bare name cannot reach a method
        return unit.kind != "method"
    return True


def _call_rank(unit: Unit, *, caller: Unit, receiver: str) -> tuple[bool, bool]:
    """Sort key, likeliest first: the expected scope, then the caller's own module."""
    if receiver in _SELF_NAMES:
        expected = caller.kind == "method" and unit.parent_id == caller.parent_id
    elif not receiver:
        expected = unit.parent_id == caller.id  # a helper nested in the caller
    else:
        expected = _is_module_function_of(unit, receiver)
    return not expected, unit.path != caller.path


def _is_module_function_of(unit: Unit, receiver: str) -> bool:
    """``unit`` is a top-level function of a module whose dotted name ends with ``receiver``."""
    if unit.kind == "method" or unit.parent_id != unit.path or unit.parent is None:
        return False
    return unit.parent == receiver or unit.parent.endswith(f".{receiver}")


def _snippet(unit: Unit, *, role: ContextRole, max_chars: int) -> ContextSnippet:
    source, truncated = _trim(unit.source, max_chars=max_chars)
    return ContextSnippet(
        role=role,
        unit_id=unit.id,
        qualname=unit.qualname,
        path=unit.path,
        lineno=unit.lineno,
        end_lineno=unit.end_lineno,
        source=source,
        truncated=truncated,
    )


def _trim(source: str, *, max_chars: int) -> tuple[str, bool]:
    """Keep whole leading lines (signature and docstring first) within ``max_chars``."""
    if len(source) <= max_chars:
        return source, False
    lines = [f"{line}\n" for line in source.rstrip("\n").split("\n")]
    kept: list[str] = []
    used = 0
    for line in lines:
        if used + len(line) > max_chars:
            break
        kept.append(line)
        used += len(line)
    kept.append(f"# ... {len(lines) - len(kept)} more lines not shown\n")
    return "".join(kept), True
