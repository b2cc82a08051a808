"""The single walk over a module's syntax tree that turns it into units.

Statements are walked iteratively (no recursion limit to hit), each node once. Every def or class
opens a ``_Scope``; blocks add nesting and complexity to the scope they are in; the expression
trees a scope evaluates are collected and scanned at the end (see ``expressions``). Then the
scopes, sorted by position, become ``Unit``s, within the per-module function limit.
"""

from __future__ import annotations

import ast
import inspect
from collections import defaultdict
from collections.abc import Callable

from analyses.parsing.expressions import (
    IGNORED_FIELDS,
    LEAF_TYPES,
    FieldTable,
    arguments_of,
    header_expressions,
    ordered_calls,
    scan_expressions,
)
from analyses.parsing.units import (
    FUNCTION_KINDS,
    FileError,
    ParseLimits,
    Unit,
    UnitKind,
    content_hash,
    module_name,
)

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
# Statement fields walked as blocks rather than as expressions.
_BLOCK_FIELDS = frozenset({"body", "orelse", "finalbody", "handlers", "cases"})
_STATEMENT_FIELDS = FieldTable(excluded=IGNORED_FIELDS | _BLOCK_FIELDS, leaves=LEAF_TYPES)


class TooDeepError(Exception):
    """Blocks nested deeper than ``max_nesting_depth``: the whole file is refused."""

    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


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


class ModuleWalker:
    """Walks one module once (``walk``), then hands out its units (``units``)."""

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
                    raise TooDeepError(node.lineno)
                scope.expressions.extend(header_expressions(node))
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
                    raise TooDeepError(node.lineno)
                self._enter_block(node, scope=scope, depth=depth, push=push)
        for scope in self.scopes:
            scope.complexity += scan_expressions(scope.expressions, calls=scope.calls)

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
            arguments=arguments_of(node.args) if is_function else (),
            decorators=tuple(self._segment(item) for item in getattr(node, "decorator_list", ())),
            docstring=_docstring(node),
            calls=ordered_calls(scope.calls),
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


def _is_elif(node: ast.If) -> bool:
    orelse = node.orelse
    return (
        len(orelse) == 1
        and orelse[0].__class__ is ast.If
        and orelse[0].col_offset == node.col_offset
    )


def _docstring(node: ast.AST) -> str | None:
    """``ast.get_docstring``, minus its generality, for the hot path."""
    body = node.body
    if not body or body[0].__class__ is not ast.Expr:
        return None
    value = body[0].value
    if value.__class__ is not ast.Constant or value.value.__class__ is not str:
        return None
    return inspect.cleandoc(value.value)


def _slice_utf8(line: str, start: int, end: int | None) -> str:
    if line.isascii():
        return line[start:end]
    return line.encode()[start:end].decode(errors="replace")


def _is_public_part(part: str) -> bool:
    if part == "<locals>":
        return False
    is_dunder = len(part) > 4 and part.startswith("__") and part.endswith("__")
    return is_dunder or not part.startswith("_")
