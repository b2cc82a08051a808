"""Excerpts highlighted on the server: numbered from their first line, cited lines marked,
everything escaped."""

from __future__ import annotations

import re
from pathlib import Path

from analyses.highlighting import highlighted_excerpt, stylesheet

STYLESHEET = Path(__file__).resolve().parents[2] / "analyses/static/analyses/pygments.css"


def numbers(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'<span class="normal">(\d+)</span>', html)]


class TestHighlightedExcerpt:
    def test_numbers_from_the_first_line_and_marks_the_cited_ones(self):
        html = highlighted_excerpt(
            "def f(x):\n    y = x + 1\n    return y\n", first_line=40, line_start=41, line_end=42
        )
        assert numbers(html) == [40, 41, 42]
        assert html.count('<span class="hll">') == 2
        assert '<span class="hll">    <span class="n">y</span>' in html

    def test_leading_blank_lines_keep_their_numbers(self):
        html = highlighted_excerpt("\n\nx = 1\n", first_line=7, line_start=9, line_end=9)
        assert numbers(html) == [7, 8, 9]
        assert '<span class="hll"><span class="n">x</span>' in html

    def test_code_is_escaped(self):
        html = highlighted_excerpt(
            "s = '</pre><script>alert(1)</script>'\n", first_line=1, line_start=1, line_end=1
        )
        assert "<script>" not in html and "</pre><" not in html.split("<code>")[1][:80]
        assert "&lt;script&gt;" in html

    def test_no_excerpt__nothing(self):
        assert highlighted_excerpt("  \n", first_line=1, line_start=1, line_end=1) == ""

    def test_the_committed_stylesheet_is_the_one_pygments_makes(self):
        assert STYLESHEET.read_text() == stylesheet() + "\n"
