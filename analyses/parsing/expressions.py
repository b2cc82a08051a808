"""What a unit's expression trees hold: the calls it makes, its boolean-operator complexity, and
its parameters with their (possibly mutable) defaults.

Expressions are not walked during the statement walk: each scope collects the expression trees
evaluated in it and ``scan_expressions`` goes through them once at the end, iteratively.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

from analyses.parsing.units import Argument, ArgumentKind

# Fields that never hold nodes we need: identifiers, flags, and operator/context singletons.
IGNORED_FIELDS = frozenset(
    {
        "ctx", "id", "arg", "attr", "name", "names", "module", "level", "type_comment", "kind",
        "conversion", "is_async", "simple", "rest", "kwd_attrs", "tag", "op", "ops", "asname",
    }
)  # fmt: skip
LEAF_TYPES = frozenset(
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


class FieldTable(dict[type, tuple[str, ...]]):
    """Node class -> names of its fields worth walking, computed on first use."""

    def __init__(self, *, excluded: frozenset[str], leaves: Iterable[type]) -> None:
        super().__init__(dict.fromkeys(leaves, ()))
        self._excluded = excluded

    def __missing__(self, cls: type) -> tuple[str, ...]:
        fields = tuple(name for name in getattr(cls, "_fields", ()) if name not in self._excluded)
        self[cls] = fields
        return fields


_EXPRESSION_FIELDS = FieldTable(excluded=IGNORED_FIELDS, leaves=LEAF_TYPES)


def scan_expressions(stack: list, *, calls: list[tuple[int, int, str]]) -> int:
    """Append the calls in the expression trees of ``stack`` (which it empties) to ``calls`` as
    ``(line, column, dotted name)``; return the complexity their boolean operators add."""
    pop, push, extend = stack.pop, stack.append, stack.extend
    add_call = calls.append
    fields_of = _EXPRESSION_FIELDS
    leaves = LEAF_TYPES
    complexity = 0
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
            name = dotted_name(node.func)
            if name is None:
                push(node.func)
            else:  # a plain dotted name holds nothing else to find
                add_call((node.lineno, node.col_offset, name))
            extend(node.args)
            extend(node.keywords)
            continue
        if cls is list:
            extend(node)
            continue
        if cls is ast.BoolOp:
            complexity += len(node.values) - 1
        for name in fields_of[cls]:
            value = getattr(node, name)
            value_cls = value.__class__
            if value_cls is list:
                extend(value)
            elif value_cls not in leaves:
                push(value)
    return complexity


def header_expressions(node: ast.AST) -> list:
    """Parts of a def/class evaluated in the enclosing scope."""
    if node.__class__ is ast.ClassDef:
        return [node.decorator_list, node.bases, node.keywords]
    expressions = [node.decorator_list, node.args]
    if node.returns is not None:
        expressions.append(node.returns)
    return expressions


def dotted_name(node: ast.AST) -> str | None:
    parts = []
    while node.__class__ is ast.Attribute:
        parts.append(node.attr)
        node = node.value
    if node.__class__ is not ast.Name:
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def ordered_calls(calls: list[tuple[int, int, str]]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(name for _line, _col, name in sorted(calls)))


def arguments_of(args: ast.arguments) -> tuple[Argument, ...]:
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


def _is_mutable(node: ast.expr) -> bool:
    if isinstance(node, _MUTABLE_LITERAL_TYPES):
        return True
    return isinstance(node, ast.Call) and dotted_name(node.func) in _MUTABLE_FACTORIES
