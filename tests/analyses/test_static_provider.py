"""analyses.providers.static: each rule fires where it should and stays quiet where it should."""

from __future__ import annotations

import textwrap

import pytest

from analyses.parsing import Unit, parse_module
from analyses.providers.static import review_unit


def unit_named(source: str, qualname: str, *, path: str = "pkg/mod.py") -> Unit:
    units, errors = parse_module(textwrap.dedent(source), path=path)
    assert errors == []
    return next(unit for unit in units if unit.qualname == qualname)


def rules(unit: Unit, **thresholds: int) -> list[str]:
    return [finding.rule for finding in review_unit(unit, **thresholds)]


def function_with_lines(count: int) -> str:
    body = "".join(f"    x{index} = {index}\n" for index in range(count - 2))
    return f'def f():\n    """Doc."""\n{body}'


def function_with_branches(count: int) -> str:
    body = "".join(f"    if x == {index}:\n        return {index}\n" for index in range(count))
    return f'def f(x):\n    """Doc."""\n{body}'


class TestFunctionLength:
    def test_rule__fires_over_fifty_lines_as_medium_smell(self):
        unit = unit_named(function_with_lines(51), "f")
        (finding,) = review_unit(unit)
        assert (finding.rule, finding.kind, finding.severity) == (
            "function-too-long",
            "smell",
            "medium",
        )
        assert (finding.line_start, finding.line_end) == (unit.lineno, unit.end_lineno)
        assert "51 lines" in finding.title

    def test_rule__quiet_at_fifty_lines(self):
        assert rules(unit_named(function_with_lines(50), "f")) == []

    def test_rule__threshold_is_a_keyword(self):
        unit = unit_named(function_with_lines(10), "f")
        assert rules(unit, max_function_lines=9) == ["function-too-long"]


class TestComplexity:
    def test_rule__fires_over_ten_as_high(self):
        unit = unit_named(function_with_branches(10), "f")
        assert unit.complexity == 11
        (finding,) = review_unit(unit)
        assert (finding.rule, finding.severity) == ("high-complexity", "high")
        assert "11" in finding.title

    def test_rule__quiet_at_ten(self):
        assert rules(unit_named(function_with_branches(9), "f")) == []

    def test_rule__threshold_is_a_keyword(self):
        assert rules(unit_named(function_with_branches(3), "f"), max_complexity=3) == [
            "high-complexity"
        ]


class TestMissingDocstring:
    @pytest.mark.parametrize(
        ("source", "qualname"),
        [
            pytest.param("def api(): ...\n", "api", id="function"),
            pytest.param("class Model:\n    pass\n", "Model", id="class"),
            pytest.param(
                'class M:\n    """Doc."""\n    def save(self): ...\n', "M.save", id="method"
            ),
            pytest.param("x = 1\n", "pkg.mod", id="module-with-code"),
        ],
    )
    def test_rule__fires_for_public_code_as_low_docs(self, source, qualname):
        unit = unit_named(source, qualname)
        (finding,) = review_unit(unit)
        assert (finding.rule, finding.kind, finding.severity) == (
            "missing-docstring",
            "docs",
            "low",
        )
        assert finding.line_start == finding.line_end == unit.lineno

    @pytest.mark.parametrize(
        ("source", "qualname", "path"),
        [
            pytest.param('def api():\n    """Doc."""\n', "api", "m.py", id="documented"),
            pytest.param("def _helper(): ...\n", "_helper", "m.py", id="private"),
            pytest.param(
                "def f():\n    def inner(): ...\n", "f.<locals>.inner", "m.py", id="nested"
            ),
            pytest.param(
                'class C:\n    """D."""\n    def __eq__(self, o): ...\n', "C.__eq__", "m.py",
                id="dunder",
            ),
            pytest.param(
                'class C:\n    """D."""\n    @x.setter\n    def x(self, v): ...\n', "C.x", "m.py",
                id="setter",
            ),
            pytest.param("@overload\ndef f(x: int): ...\n", "f", "m.py", id="overload"),
            pytest.param("from .a import b\n", "pkg", "pkg/__init__.py", id="package-init"),
            pytest.param("", "m", "m.py", id="empty-module"),
        ],
    )  # fmt: skip
    def test_rule__quiet_for_documented_private_or_exempt_code(self, source, qualname, path):
        assert "missing-docstring" not in rules(unit_named(source, qualname, path=path))


class TestTooManyMethods:
    def make(self, count: int) -> Unit:
        methods = "".join(f"    def m{index}(self):\n        '''D.'''\n" for index in range(count))
        return unit_named(f'class Big:\n    """Doc."""\n{methods}', "Big")

    def test_rule__fires_over_twenty_as_high(self):
        (finding,) = review_unit(self.make(21))
        assert (finding.rule, finding.severity) == ("too-many-methods", "high")
        assert "21 methods" in finding.title

    def test_rule__quiet_at_twenty(self):
        assert rules(self.make(20)) == []


class TestBareExcept:
    def test_rule__one_finding_per_bare_except_on_its_line(self):
        unit = unit_named(
            """
            def f():
                '''Doc.'''
                try:
                    pass
                except:
                    pass
                try:
                    pass
                except:
                    pass
            """,
            "f",
        )
        findings = review_unit(unit)
        assert [(finding.rule, finding.line_start, finding.line_end) for finding in findings] == [
            ("bare-except", 6, 6),
            ("bare-except", 10, 10),
        ]
        assert findings[0].fix == "except Exception:"

    def test_rule__quiet_for_named_exceptions(self):
        unit = unit_named(
            """
            def f():
                '''Doc.'''
                try:
                    pass
                except Exception:
                    pass
            """,
            "f",
        )
        assert rules(unit) == []

    def test_rule__module_level_bare_except_reported_on_the_module(self):
        unit = unit_named('"""Doc."""\ntry:\n    import x\nexcept:\n    x = None\n', "pkg.mod")
        assert [(f.rule, f.line_start) for f in review_unit(unit)] == [("bare-except", 4)]


class TestMutableDefault:
    def test_rule__one_finding_per_mutable_default_as_bug(self):
        unit = unit_named("def f(a=[],\n      b=None,\n      *, c=dict()):\n    '''Doc.'''\n", "f")
        findings = review_unit(unit)
        assert [(f.rule, f.kind, f.line_start) for f in findings] == [
            ("mutable-default", "bug", 1),
            ("mutable-default", "bug", 3),
        ]
        assert "`a`" in findings[0].title
        assert "`c`" in findings[1].title

    def test_rule__quiet_for_immutable_defaults(self):
        unit = unit_named("def f(a=(), b=None, c='x', d=frozenset()):\n    '''Doc.'''\n", "f")
        assert rules(unit) == []


class TestTooManyParameters:
    def test_rule__fires_over_seven_as_medium_smell(self):
        unit = unit_named("def f(a, b, c, d, e, f, g, h):\n    '''Doc.'''\n", "f")
        (finding,) = review_unit(unit)
        assert (finding.rule, finding.kind, finding.severity) == (
            "too-many-parameters",
            "smell",
            "medium",
        )
        assert "8 parameters" in finding.title

    def test_rule__self_cls_args_and_kwargs_not_counted(self):
        unit = unit_named(
            """
            class C:
                '''Doc.'''
                def m(self, a, b, c, d, e, f, g, *args, **kwargs):
                    '''Doc.'''
                @classmethod
                def k(cls, *, a, b, c, d, e, f, g):
                    '''Doc.'''
            """,
            "C.m",
        )
        assert rules(unit) == []
        assert rules(unit, max_parameters=6) == ["too-many-parameters"]

    def test_rule__self_in_a_plain_function_counts(self):
        unit = unit_named("def f(self, a, b, c, d, e, f, g):\n    '''Doc.'''\n", "f")
        assert rules(unit) == ["too-many-parameters"]


class TestReviewUnit:
    def test_findings__static_source_full_confidence_sorted_by_line(self):
        unit = unit_named(
            "def f(a=[], b=1, c=2, d=3, e=4, f=5, g=6, h=7):\n"
            + "".join(f"    if a == {index}:\n        pass\n" for index in range(30))
            + "    try:\n        pass\n    except:\n        pass\n",
            "f",
        )
        findings = review_unit(unit)
        assert sorted(f.rule for f in findings) == [
            "bare-except",
            "function-too-long",
            "high-complexity",
            "missing-docstring",
            "mutable-default",
            "too-many-parameters",
        ]
        assert {(f.source, f.confidence) for f in findings} == {("static", 1.0)}
        assert [f.line_start for f in findings] == sorted(f.line_start for f in findings)
        assert all(unit.lineno <= f.line_start <= f.line_end <= unit.end_lineno for f in findings)
        assert all(len(f.explanation) > 40 for f in findings)

    def test_findings__clean_function_has_none(self):
        unit = unit_named('def add(a, b):\n    """Sum."""\n    return a + b\n', "add")
        assert review_unit(unit) == []
