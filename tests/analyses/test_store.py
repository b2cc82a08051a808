"""What the store keeps of a card's code: the cited lines with a little context."""

from __future__ import annotations

import pytest

from analyses.parsing import parse_module
from analyses.store import EXCERPT_MAX_LINES, excerpt_of

MODULE = (
    "import os\n\n\ndef long(value):\n"
    + "".join(f"    value += {n}\n" for n in range(1, 60))
    + "    return value\n"
)


@pytest.fixture
def function():
    units, _ = parse_module(MODULE, path="pkg/mod.py")
    return next(unit for unit in units if unit.qualname == "long")


class TestExcerpt:
    def test_the_cited_lines_with_two_lines_of_context(self, function):
        text, first = excerpt_of(function, line_start=10, line_end=11)
        assert first == 8
        assert text.splitlines() == [f"    value += {n}" for n in range(4, 10)]

    def test_clamped_to_the_unit__a_model_citing_line_1_gets_the_unit_s_first_lines(self, function):
        text, first = excerpt_of(function, line_start=1, line_end=1)
        assert first == function.lineno == 4
        assert text.splitlines() == ["def long(value):", "    value += 1", "    value += 2"]

    def test_at_most_forty_lines__even_for_a_finding_about_the_whole_unit(self, function):
        text, first = excerpt_of(function, line_start=4, line_end=function.end_lineno)
        assert first == 4
        assert len(text.splitlines()) == EXCERPT_MAX_LINES

    def test_lines_past_the_unit__the_unit_s_first_lines(self, function):
        text, first = excerpt_of(function, line_start=500, line_end=510)
        assert first == 4 and text.startswith("def long(value):")
