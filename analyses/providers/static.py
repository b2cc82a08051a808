"""Offline, rule-based review of one unit. Pure and fast: every fact it needs was gathered while
parsing (``Unit.complexity``, ``bare_except_lines``, ``Argument.mutable_default_line``...), so
nothing is parsed again.

Decisions:

* Missing docstrings are reported for public functions, methods and classes, and for public
  modules that have code, except ``__init__.py`` (packages are usually documented elsewhere).
  Dunder methods, ``@overload`` stubs and property setters/deleters are exempt: their meaning
  comes from the protocol or from the documented getter.
* "Too many parameters" counts every named parameter except a method's leading ``self`` /
  ``cls``; ``*args`` and ``**kwargs`` are not counted (callers do not have to juggle them).
* Each rule reports once per unit, except bare ``except:`` and mutable defaults, which report
  once per occurrence, on its line.
"""

from __future__ import annotations

from dataclasses import dataclass

from analyses.findings import Finding, FindingKind, Severity, shorten_title
from analyses.parsing import Unit
from analyses.providers.base import ReviewRequest, ReviewResult

_RECEIVER_NAMES = frozenset({"self", "cls"})
_DOCSTRING_EXEMPT_DECORATORS = ("overload", "typing.overload")
_DOCSTRING_EXEMPT_DECORATOR_SUFFIXES = (".setter", ".deleter")


def review_unit(
    unit: Unit,
    *,
    max_function_lines: int = 50,
    max_complexity: int = 10,
    max_class_methods: int = 20,
    max_parameters: int = 7,
) -> list[Finding]:
    """Findings of the static rules for ``unit``, in line order."""
    findings: list[Finding] = []
    if unit.is_function:
        findings += _long_function(unit, max_lines=max_function_lines)
        findings += _complex_function(unit, max_complexity=max_complexity)
        findings += _too_many_parameters(unit, max_parameters=max_parameters)
        findings += _mutable_defaults(unit)
    if unit.kind == "class":
        findings += _too_many_methods(unit, max_methods=max_class_methods)
    findings += _bare_excepts(unit)
    findings += _missing_docstring(unit)
    return sorted(findings, key=lambda finding: (finding.line_start, finding.rule or ""))


@dataclass(frozen=True)
class _Rule:
    kind: FindingKind
    severity: Severity
    explanation: str  # may name {complexity}


_RULES = {
    "function-too-long": _Rule(
        "smell",
        "medium",
        "Long functions mix several responsibilities, are hard to read in one sitting and hard "
        "to test in isolation. Extract cohesive steps into well-named helpers.",
    ),
    "high-complexity": _Rule(
        "risk",
        "high",
        "{complexity} independent paths run through this function; each needs a test and each "
        "is a place for a bug to hide. Split the branching into smaller functions, use early "
        "returns, or replace condition chains with a lookup table.",
    ),
    "too-many-parameters": _Rule(
        "smell",
        "medium",
        "Callers must get many arguments right, often positionally. Group parameters that "
        "travel together into a dataclass, make the rest keyword-only, or split the function.",
    ),
    "mutable-default": _Rule(
        "bug",
        "medium",
        "The default object is created once, when the function is defined, and shared by every "
        "call: a mutation in one call leaks into the next. Default to None and create the object "
        "inside the function.",
    ),
    "too-many-methods": _Rule(
        "smell",
        "high",
        "A class with this many methods usually carries several responsibilities and grows into "
        "a god object that every change touches. Split it by responsibility or move behaviour "
        "into collaborators.",
    ),
    "bare-except": _Rule(
        "risk",
        "medium",
        "A bare except also swallows programming errors (NameError, AttributeError) and "
        "interpreter exits, hiding bugs and making the process hard to stop. Catch the specific "
        "exceptions expected here, or at least `Exception`.",
    ),
    "missing-docstring": _Rule(
        "docs",
        "low",
        "Public code without a docstring leaves readers to reverse-engineer its purpose, "
        "arguments and return value from the body. Say what it does and what it returns.",
    ),
}


def _long_function(unit: Unit, *, max_lines: int) -> list[Finding]:
    if unit.line_count <= max_lines:
        return []
    title = f"`{unit.name}` is {unit.line_count} lines long (limit {max_lines})"
    return [_finding(unit, "function-too-long", title)]


def _complex_function(unit: Unit, *, max_complexity: int) -> list[Finding]:
    if unit.complexity <= max_complexity:
        return []
    title = f"`{unit.name}` has cyclomatic complexity {unit.complexity} (limit {max_complexity})"
    return [_finding(unit, "high-complexity", title)]


def _too_many_parameters(unit: Unit, *, max_parameters: int) -> list[Finding]:
    parameters = [
        argument.name for argument in unit.arguments if argument.kind not in ("vararg", "kwarg")
    ]
    if unit.kind == "method" and parameters and parameters[0] in _RECEIVER_NAMES:
        parameters = parameters[1:]
    if len(parameters) <= max_parameters:
        return []
    title = f"`{unit.name}` takes {len(parameters)} parameters (limit {max_parameters})"
    return [_finding(unit, "too-many-parameters", title, line_end=unit.lineno)]


def _mutable_defaults(unit: Unit) -> list[Finding]:
    return [
        _finding(
            unit,
            "mutable-default",
            f"Parameter `{argument.name}` of `{unit.name}` has a mutable default",
            line_start=argument.mutable_default_line,
            line_end=argument.mutable_default_line,
        )
        for argument in unit.arguments
        if argument.mutable_default_line is not None
    ]


def _too_many_methods(unit: Unit, *, max_methods: int) -> list[Finding]:
    if unit.method_count <= max_methods:
        return []
    title = f"Class `{unit.name}` has {unit.method_count} methods (limit {max_methods})"
    return [_finding(unit, "too-many-methods", title, line_end=unit.lineno)]


def _bare_excepts(unit: Unit) -> list[Finding]:
    title = "Bare `except:` catches everything, including KeyboardInterrupt and SystemExit"
    return [
        _finding(
            unit, "bare-except", title, line_start=line, line_end=line, fix="except Exception:"
        )
        for line in unit.bare_except_lines
    ]


def _missing_docstring(unit: Unit) -> list[Finding]:
    if unit.docstring or not unit.is_public or _docstring_exempt(unit):
        return []
    what = {"module": "Module", "class": "Class", "method": "Method"}.get(unit.kind, "Function")
    title = f"{what} `{unit.qualname}` has no docstring"
    return [_finding(unit, "missing-docstring", title, line_end=unit.lineno)]


def _docstring_exempt(unit: Unit) -> bool:
    if unit.kind == "module":
        return unit.path.rpartition("/")[2] == "__init__.py" or not unit.source.strip()
    if unit.kind == "method" and unit.name.startswith("__") and unit.name.endswith("__"):
        return True
    return any(
        decorator in _DOCSTRING_EXEMPT_DECORATORS
        or decorator.endswith(_DOCSTRING_EXEMPT_DECORATOR_SUFFIXES)
        for decorator in unit.decorators
    )


def _finding(
    unit: Unit,
    rule: str,
    title: str,
    *,
    line_start: int | None = None,
    line_end: int | None = None,
    fix: str | None = None,
) -> Finding:
    definition = _RULES[rule]
    return Finding(
        kind=definition.kind,
        severity=definition.severity,
        title=shorten_title(title),
        explanation=definition.explanation.format(complexity=unit.complexity),
        line_start=line_start or unit.lineno,
        line_end=line_end or unit.end_lineno,
        confidence=1.0,
        source="static",
        fix=fix,
        rule=rule,
    )


class StaticProvider:
    """The offline reviewer: the rules above, for every kind of unit, with no API call."""

    name = "static"
    model = "rules"
    prompt_version = "static-v1"
    calls_api = False

    def reviews(self, unit: Unit) -> bool:
        return True

    async def review(self, request: ReviewRequest) -> ReviewResult:
        return ReviewResult(
            findings=review_unit(request.unit), provider=self.name, model=self.model
        )
