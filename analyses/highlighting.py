"""A card's code excerpt as highlighted HTML with line numbers (Pygments, on the server).

Pygments escapes the code it formats, so its output is the one piece of markup the pages mark
safe; the excerpt is source from the analysed repository, never text a model wrote.
"""

from __future__ import annotations

from django.utils.safestring import SafeString, mark_safe
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

CSS_CLASS = "code"
STYLE = "github-dark"


def _formatter(*, first_line: int, cited: list[int]) -> HtmlFormatter:
    return HtmlFormatter(
        cssclass=CSS_CLASS,
        style=STYLE,
        linenos="table",
        linenostart=first_line,
        hl_lines=cited,
        wrapcode=True,
    )


def highlighted_excerpt(
    excerpt: str, *, first_line: int, line_start: int, line_end: int
) -> SafeString:
    """``excerpt`` (its first line is ``first_line`` of the file) with lines ``line_start`` to
    ``line_end`` of the file marked; empty when there is no excerpt."""
    if not excerpt.strip():
        return mark_safe("")
    # Pygments numbers the highlighted lines from the excerpt's first line, whatever linenostart.
    cited = list(range(line_start - first_line + 1, line_end - first_line + 2))
    # stripnl=False: leading blank lines are real lines and must keep their numbers.
    lexer = PythonLexer(stripnl=False, ensurenl=True)
    formatter = _formatter(first_line=first_line, cited=cited)
    return mark_safe(highlight(excerpt, lexer, formatter))  # noqa: S308 (Pygments escapes)


def stylesheet() -> str:
    """The CSS for highlighted excerpts (``analyses/static/analyses/pygments.css``)."""
    return _formatter(first_line=1, cited=[]).get_style_defs(f".{CSS_CLASS}")
