"""Python source -> units (modules, classes, functions, methods). Pure: no Django, no I/O but reads.

The package, along its seams: ``units`` (data types, limits, hashing), ``files`` (which files
are walked), ``reading`` (reading them within a time limit), ``source`` (bytes -> text -> syntax
tree), ``walker`` and ``expressions`` (the single walk), ``parser`` (the entry points),
``context`` (call graph and prompt context). Import from the package itself; the submodules are
its implementation.

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
* **Reading** never hangs: a read that takes longer than ``file_io_timeout`` fails that file
  (``io_timeout``) and the others are parsed; a tree whose filesystem looks hung fails at once
  after a few such reads (see ``reading``). Named pipes, sockets and devices are never opened.
* **Encoding**: PEP 263 cookies and BOMs are honoured (``tokenize.detect_encoding``); line endings
  are normalised to ``\\n`` before anything is sliced or hashed.
* **Speed**: the walk is iterative (no recursion limit to hit) and visits each node once;
  ``benchmarks/parse_django.py`` measures it against a bare ``ast.parse``. The cyclic GC is
  paused while one module's tree is alive (see ``parser._cyclic_gc_paused``).
"""

from analyses.parsing.context import (
    CallContext,
    ContextRole,
    ContextSnippet,
    build_call_graph,
    context_for,
    context_hash,
)
from analyses.parsing.files import SKIPPED_DIR_NAMES, iter_python_files
from analyses.parsing.parser import parse_module, parse_tree
from analyses.parsing.reading import read_files
from analyses.parsing.units import (
    DEFAULT_LIMITS,
    FUNCTION_KINDS,
    Argument,
    ArgumentKind,
    ErrorCode,
    FileError,
    ParseLimits,
    ParseResult,
    Unit,
    UnitKind,
    content_hash,
    module_name,
)

__all__ = [
    "DEFAULT_LIMITS",
    "FUNCTION_KINDS",
    "SKIPPED_DIR_NAMES",
    "Argument",
    "ArgumentKind",
    "CallContext",
    "ContextRole",
    "ContextSnippet",
    "ErrorCode",
    "FileError",
    "ParseLimits",
    "ParseResult",
    "Unit",
    "UnitKind",
    "build_call_graph",
    "content_hash",
    "context_for",
    "context_hash",
    "iter_python_files",
    "module_name",
    "parse_module",
    "parse_tree",
    "read_files",
]
