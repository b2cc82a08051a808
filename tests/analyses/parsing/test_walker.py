"""analyses.parsing.walker: complexity and nesting, and the walk over a real, large tree."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import django
import pytest

from analyses.parsing import FUNCTION_KINDS, ParseLimits, ParseResult, parse_tree
from tests.analyses.parsing.support import only_function, units_of

DJANGO_ROOT = Path(django.__file__).parent


class TestComplexity:
    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            pytest.param("return 1", 1, id="straight-line"),
            pytest.param("if a:\n    pass\nelif b:\n    pass\nelse:\n    pass", 3, id="if-elif"),
            pytest.param("for x in a:\n    pass\nwhile b:\n    break", 3, id="for-while"),
            pytest.param("async for x in a:\n    pass", 2, id="async-for"),
            pytest.param(
                "try:\n    pass\nexcept A:\n    pass\nexcept B:\n    pass\nfinally:\n    pass",
                3,
                id="two-excepts",
            ),
            pytest.param("return a and b and c", 3, id="boolop-three-values"),
            pytest.param("return a and b or c", 3, id="nested-boolops"),
            pytest.param(
                "return [x for x in y if x] or (a if b else c)", 2, id="no-ifexp-or-comp-if"
            ),
            pytest.param(
                "with a:\n    pass\nmatch x:\n    case 1:\n        pass", 1, id="with-match"
            ),
            pytest.param("f = lambda: a or b", 2, id="lambda-counts-for-enclosing"),
        ],
    )
    def test_complexity__original_eidolon_count(self, body, expected):
        source = "async def f():\n" + textwrap.indent(body, "    ") + "\n"
        assert only_function(source).complexity == expected

    def test_complexity__nested_functions_and_classes_count_separately(self):
        units = units_of(
            """
            def outer():
                if a:
                    pass
                def inner():
                    if b or c:
                        pass
                class Local:
                    if d:
                        pass
            """
        )
        assert units["outer"].complexity == 2
        assert units["outer.<locals>.inner"].complexity == 3
        assert units["outer.<locals>.Local"].complexity == 2

    def test_complexity__module_and_class_bodies_count_their_own_statements(self):
        units = units_of("if a:\n    pass\nclass C:\n    for x in y:\n        pass\n")
        assert units["pkg.mod"].complexity == 2
        assert units["C"].complexity == 2


class TestNestingDepth:
    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            pytest.param("return 1", 0, id="flat"),
            pytest.param(
                "if a:\n    for x in y:\n        while b:\n            pass", 3, id="three"
            ),
            pytest.param(
                "if a:\n    pass\nelif b:\n    pass\nelif c:\n    if d:\n        pass",
                2,
                id="elif-chain-is-flat",
            ),
            pytest.param("try:\n    with a:\n        pass\nexcept E:\n    pass", 2, id="try-with"),
        ],
    )
    def test_nesting_depth__deepest_block_in_own_body(self, body, expected):
        source = "def f():\n" + textwrap.indent(body, "    ") + "\n"
        assert only_function(source).nesting_depth == expected


@pytest.fixture(scope="module")
def django_parsed() -> ParseResult:
    return parse_tree(DJANGO_ROOT)


class TestDjangoTree:
    """The walker must find every def that ``ast.walk`` finds, over a real, large codebase."""

    def test_function_units__equal_an_independent_ast_walk_count(self, django_parsed):
        # Our own discovery (rglob), not iter_python_files, so the check stays independent.
        # Limits: Django has fewer than 1,000 modules and no module with 500 functions today;
        # should that change, the expected count is capped the same way parse_tree caps it.
        limits = ParseLimits()
        files = sorted(
            (path for path in DJANGO_ROOT.rglob("*.py") if "__pycache__" not in path.parts),
            key=lambda path: path.relative_to(DJANGO_ROOT).parts,
        )[: limits.max_modules]
        expected = 0
        for path in files:
            tree = ast.parse(path.read_bytes())
            defs = sum(
                isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) for node in ast.walk(tree)
            )
            expected += min(defs, limits.max_functions_per_module)
        found = sum(unit.kind in FUNCTION_KINDS for unit in django_parsed.units)
        assert found == expected > 5000
        assert django_parsed.errors == []
        assert django_parsed.files_parsed == django_parsed.files_seen == len(files)

    def test_ids__unique_across_the_tree(self, django_parsed):
        ids = [unit.id for unit in django_parsed.units]
        assert len(ids) == len(set(ids))
