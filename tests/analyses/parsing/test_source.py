"""analyses.parsing.source: each bad file (encoding, binary, NUL, syntax, depth) is one error."""

from __future__ import annotations

import pytest

from analyses.parsing import parse_module, parse_tree
from tests.analyses.parsing.support import write


class TestBadInput:
    """Every bad file becomes one error with a reason code; the good file beside it still parses."""

    @pytest.mark.parametrize(
        ("name", "content", "code", "line"),
        [
            pytest.param("syntax.py", "x = 1\ndef broken(:\n", "syntax_error", 2, id="syntax"),
            pytest.param("nul.py", b"x = 1\ny = '\x00'\n", "null_bytes", 2, id="null-bytes"),
            pytest.param(
                "image.py",
                b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8,
                "binary",
                None,
                id="binary",
            ),
            pytest.param("latin.py", b"x = 1\ny = '\xe9t\xe9'\n", "not_utf8", 2, id="not-utf8"),
            pytest.param("first.py", b"s = '\xff'\n", "not_utf8", None, id="not-utf8-first-line"),
            pytest.param(
                "cookie.py", b"# coding: klingon\nx = 1\n", "bad_encoding", None, id="bad-cookie"
            ),
            pytest.param(
                "parens.py", "x = " + "(" * 5000 + ")" * 5000 + "\n", "too_deep", 1, id="parens"
            ),
            pytest.param(
                "chain.py", "x = a" + ".a" * 100_000 + "\n", "too_deep", None, id="recursion"
            ),
            pytest.param("unary.py", "x = " + "-" * 100_000 + "1\n", "too_deep", None, id="memory"),
            pytest.param(
                "indent.py",
                "".join(" " * level + "if x:\n" for level in range(101)) + " " * 101 + "pass\n",
                "too_deep",
                None,
                id="indentation",
            ),
        ],
    )
    def test_bad_file__reported_and_others_still_parse(self, tmp_path, name, content, code, line):
        write(tmp_path, "good.py", "def ok():\n    return 1\n")
        write(tmp_path, name, content)
        result = parse_tree(tmp_path)
        assert [(error.path, error.code) for error in result.errors] == [(name, code)]
        assert result.errors[0].message
        if line is not None:
            assert result.errors[0].line == line
        assert [unit.qualname for unit in result.units] == ["good", "ok"]
        assert (result.files_seen, result.files_parsed) == (2, 1)

    def test_too_large__skipped_without_reading(self, tmp_path):
        write(tmp_path, "good.py", "x = 1\n")
        with (tmp_path / "huge.py").open("wb") as handle:
            handle.truncate(20 * 1024 * 1024)
        result = parse_tree(tmp_path)
        assert [(error.path, error.code) for error in result.errors] == [("huge.py", "too_large")]
        assert "20,971,520 bytes" in result.errors[0].message
        assert [unit.path for unit in result.units] == ["good.py"]

    def test_syntax_error__message_names_line_and_column(self):
        units, errors = parse_module("def f(:\n    pass\n", path="bad.py")
        assert units == []
        assert errors[0].code == "syntax_error"
        assert "line 1, column 7" in errors[0].message
