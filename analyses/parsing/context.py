"""The call graph between function units and the callers/callees shown beside a unit.

Resolution is best-effort, by name, over the units of one tree: no imports are followed and no
types are inferred (see ``build_call_graph`` for the preferences that decide between namesakes).
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from analyses.parsing.units import Unit, content_hash

ContextRole = Literal["caller", "callee"]

_SELF_NAMES = frozenset({"self", "cls"})


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
    """Cache key for "this unit with this context": changes when either text sent changes,
    except the unit's own name (``own_text_hash``): a function renamed, its body and context
    unchanged, is a hit."""
    digest = hashlib.sha256(own_text_hash(unit).encode())
    for snippet in context:
        for part in (snippet.role, snippet.path, snippet.qualname, snippet.source):
            digest.update(b"\0")
            digest.update(part.encode())
    return digest.hexdigest()


def own_text_hash(unit: Unit) -> str:
    """sha256 of the unit's source with the name on its own ``def``/``class`` line blanked."""
    if unit.kind == "module":
        return unit.content_hash
    pattern = rf"(\b(?:def|class)\s+){re.escape(unit.name)}\b"
    return content_hash(re.sub(pattern, r"\1_", unit.source, count=1))


# --------------------------------------------------------------------------------------------
# Call resolution and snippets
# --------------------------------------------------------------------------------------------


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
