"""analyses.parsing: ParseLimits and what each limit does to a module or a tree."""

from __future__ import annotations

import pytest

from analyses.parsing import ParseLimits, parse_module, parse_tree
from tests.analyses.parsing.support import write


class TestLimits:
    def test_limits__defaults_are_the_original_numbers(self):
        assert ParseLimits() == ParseLimits(
            max_file_bytes=10 * 1024 * 1024,
            max_modules=1000,
            max_functions_per_module=500,
            max_function_lines=1000,
            max_nesting_depth=100,
        )

    def test_limits__must_be_positive(self):
        with pytest.raises(ValueError, match="max_modules"):
            ParseLimits(max_modules=0)

    def test_functions_per_module__first_ones_kept_and_error_recorded(self):
        source = "".join(f"def f{index}():\n    def inner(): ...\n" for index in range(3))
        units, errors = parse_module(
            source, path="many.py", limits=ParseLimits(max_functions_per_module=3)
        )
        assert [unit.qualname for unit in units] == [
            "many", "f0", "f0.<locals>.inner", "f1"
        ]  # fmt: skip
        assert [(error.code, error.path) for error in errors] == [("too_many_functions", "many.py")]
        assert "6 functions" in errors[0].message

    def test_function_lines__long_function_kept_and_marked_too_long(self):
        source = (
            "class C:\n    def long(self):\n" + "        x = 1\n" * 5 + "def short():\n    pass\n"
        )
        units = {
            unit.qualname: unit
            for unit in parse_module(source, path="m.py", limits=ParseLimits(max_function_lines=4))[
                0
            ]
        }
        assert units["C.long"].too_long is True
        assert units["short"].too_long is False
        assert units["C"].too_long is False

    def test_nesting__deeper_than_limit_is_an_error_for_the_file(self):
        source = "def f():\n    if a:\n        for x in y:\n            pass\n"
        units, errors = parse_module(
            source, path="deep.py", limits=ParseLimits(max_nesting_depth=2)
        )
        assert units == []
        assert [(error.code, error.line) for error in errors] == [("too_deep", 3)]

    def test_nesting__at_the_limit_is_fine(self):
        source = "def f():\n    if a:\n        pass\n"
        units, errors = parse_module(source, path="ok.py", limits=ParseLimits(max_nesting_depth=2))
        assert errors == []
        assert len(units) == 2

    def test_modules__beyond_limit_skipped_with_one_error(self, tmp_path):
        for index in range(5):
            write(tmp_path, f"m{index}.py", "x = 1\n")
        result = parse_tree(tmp_path, limits=ParseLimits(max_modules=2))
        assert [unit.path for unit in result.units] == ["m0.py", "m1.py"]
        assert [error.code for error in result.errors] == ["too_many_modules"]
        assert "last 3" in result.errors[0].message
        assert (result.files_seen, result.files_parsed) == (5, 2)
